//! The OTLP logs pipeline against a real receiver on 127.0.0.1.

use std::time::SystemTime;

use regent_telemetry::logs::{Logs, LogsConfig, Record};
use regent_telemetry::testkit::{grpc_logs_receiver, hex, string};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_reach_the_collector_by_shutdown_with_their_trace() {
    let (addr, received) = grpc_logs_receiver().await;
    let cfg: LogsConfig = serde_yaml::from_str(&format!(
        "{{exporter: otlp_grpc, endpoint: 'http://{addr}'}}"
    ))
    .expect("section");
    cfg.validate("decision_logs.otlp").expect("valid");
    let logs = Logs::start(&cfg, "test").expect("starts");
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let span = "00f067aa0ba902b7";
    for i in 0..3 {
        logs.emit(Record {
            event_name: "regent.decision",
            timestamp: SystemTime::now(),
            body: format!("{{\"n\":{i}}}"),
            trace: (i == 0).then_some((trace, span)),
            attributes: vec![("regent.decision_id", i.to_string())],
        });
    }
    logs.shutdown().await;
    let records = received.records();
    assert_eq!(records.len(), 3, "{records:#?}");
    assert_eq!(hex(&records[0].trace_id), trace);
    assert_eq!(hex(&records[0].span_id), span);
    assert!(records[1].trace_id.is_empty());
    let body = records[2]
        .body
        .as_ref()
        .and_then(|b| b.value.as_ref())
        .and_then(string);
    assert_eq!(body.as_deref(), Some("{\"n\":2}"));
}
