//! The injector's AdmissionReview handling and JSON patch, checked by applying the returned patch
//! to the pod with an independent RFC 6902 implementation (the `json-patch` crate).

use base64::Engine as _;
use regent_bundle_server::inject::patch::{plan, Plan, SkipReason};
use regent_bundle_server::inject::review::{handle_review, Outcome};
use regent_bundle_server::inject::template::InjectTemplate;
use serde_json::{json, Value};

const TEMPLATE: &str = r#"
container:
  name: regent-sidecar
  image: ghcr.io/regent-dev/regent-sidecar:0.1.0
  args: ["--config", "/etc/regent-sidecar/sidecar.yaml"]
  ports:
    - {name: regent-grpc, containerPort: 9191}
    - {name: regent-http, containerPort: 8181}
  volumeMounts:
    - {name: regent-sidecar-config, mountPath: /etc/regent-sidecar, readOnly: true}
    - {name: regent-sidecar-data, mountPath: /var/lib/regent-sidecar}
volumes:
  - name: regent-sidecar-config
    configMap: {name: regent-sidecar}
  - name: regent-sidecar-data
    emptyDir: {}
podLabels:
  regent.dev/sidecar: injected
"#;

fn template() -> InjectTemplate {
    InjectTemplate::from_yaml(TEMPLATE).expect("test template")
}

fn native_template() -> InjectTemplate {
    InjectTemplate::from_yaml(&format!("{TEMPLATE}\nnativeSidecar: true\n")).expect("test template")
}

fn app_pod() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "shop-7d9f-",
            "namespace": "shop",
            "labels": {"app": "shop"},
            "annotations": {"sidecar.istio.io/status": "{}"}
        },
        "spec": {
            "containers": [
                {"name": "shop", "image": "shop:1", "ports": [{"containerPort": 8080}]},
                {"name": "envoy", "image": "envoyproxy/envoy:v1.40", "ports": [{"containerPort": 10000}]}
            ],
            "volumes": [{"name": "app-config", "configMap": {"name": "shop"}}]
        }
    })
}

fn review(uid: &str, pod: Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "shop",
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": pod,
            "dryRun": false
        }
    })
}

/// Runs a review and returns (response, outcome, patched pod or None).
fn run(pod: Value, tpl: &InjectTemplate) -> (Value, Outcome, Option<Value>) {
    let body = serde_json::to_vec(&review("7f3c-uid", pod.clone())).unwrap();
    let reviewed = handle_review(&body, tpl);
    let r = &reviewed.response;
    assert_eq!(r["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(r["kind"], "AdmissionReview");
    assert_eq!(r["response"]["uid"], "7f3c-uid");
    let patched = r["response"].get("patch").map(|p| {
        assert_eq!(r["response"]["patchType"], "JSONPatch");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(p.as_str().expect("patch is a string"))
            .expect("patch is base64");
        let patch: json_patch::Patch =
            serde_json::from_slice(&bytes).expect("patch is a JSON patch");
        let mut doc = pod;
        json_patch::patch(&mut doc, &patch).expect("patch applies to the pod");
        doc
    });
    (reviewed.response, reviewed.outcome, patched)
}

fn names(list: &Value) -> Vec<&str> {
    list.as_array()
        .map(|a| a.iter().filter_map(|c| c["name"].as_str()).collect())
        .unwrap_or_default()
}

#[test]
fn injects_container_volumes_labels_and_status_into_a_typical_pod() {
    let (resp, outcome, patched) = run(app_pod(), &template());
    assert_eq!(outcome, Outcome::Injected);
    assert_eq!(resp["response"]["allowed"], true);
    let body = serde_json::to_vec(&review("u", app_pod())).unwrap();
    assert_eq!(
        handle_review(&body, &template()).subject,
        "shop/shop-7d9f-*"
    );
    let pod = patched.expect("a patch");
    assert_eq!(
        names(&pod["spec"]["containers"]),
        ["shop", "envoy", "regent-sidecar"]
    );
    let sidecar = &pod["spec"]["containers"][2];
    assert_eq!(sidecar["image"], "ghcr.io/regent-dev/regent-sidecar:0.1.0");
    assert_eq!(
        sidecar["args"],
        json!(["--config", "/etc/regent-sidecar/sidecar.yaml"])
    );
    assert!(sidecar.get("restartPolicy").is_none());
    assert_eq!(
        names(&pod["spec"]["volumes"]),
        ["app-config", "regent-sidecar-config", "regent-sidecar-data"]
    );
    // Existing metadata is kept, ours added next to it.
    assert_eq!(
        pod["metadata"]["labels"],
        json!({"app": "shop", "regent.dev/sidecar": "injected"})
    );
    assert_eq!(
        pod["metadata"]["annotations"]["sidecar.istio.io/status"],
        "{}"
    );
    assert_eq!(
        pod["metadata"]["annotations"]["regent.dev/status"],
        "injected"
    );
    // The application containers are untouched.
    assert_eq!(
        pod["spec"]["containers"][0],
        app_pod()["spec"]["containers"][0]
    );
}

#[test]
fn pod_without_volumes_labels_or_annotations_gets_them_created() {
    let pod = json!({
        "metadata": {"name": "bare"},
        "spec": {"containers": [{"name": "app", "image": "app:1"}]}
    });
    let (_, outcome, patched) = run(pod, &template());
    assert_eq!(outcome, Outcome::Injected);
    let pod = patched.expect("a patch");
    assert_eq!(
        names(&pod["spec"]["volumes"]),
        ["regent-sidecar-config", "regent-sidecar-data"]
    );
    assert_eq!(
        pod["metadata"]["labels"],
        json!({"regent.dev/sidecar": "injected"})
    );
    assert_eq!(
        pod["metadata"]["annotations"],
        json!({"regent.dev/status": "injected"})
    );
    assert_eq!(pod["metadata"]["name"], "bare");
}

#[test]
fn pod_without_containers_array_or_metadata_gets_them_created() {
    let pod = json!({"spec": {}});
    let (_, outcome, patched) = run(pod, &template());
    assert_eq!(outcome, Outcome::Injected);
    let pod = patched.expect("a patch");
    assert_eq!(names(&pod["spec"]["containers"]), ["regent-sidecar"]);
    assert_eq!(
        pod["metadata"]["annotations"]["regent.dev/status"],
        "injected"
    );
    assert_eq!(pod["metadata"]["labels"]["regent.dev/sidecar"], "injected");

    // `null` lists (as some clients send) are replaced too.
    let pod = json!({"metadata": {"labels": null}, "spec": {"containers": null, "volumes": null}});
    let (_, _, patched) = run(pod, &template());
    let pod = patched.expect("a patch");
    assert_eq!(names(&pod["spec"]["containers"]), ["regent-sidecar"]);
    assert_eq!(pod["metadata"]["labels"]["regent.dev/sidecar"], "injected");
}

#[test]
fn already_injected_pod_is_left_alone() {
    let (_, _, patched) = run(app_pod(), &template());
    let injected = patched.expect("first injection");
    // The API server calls again with reinvocationPolicy: IfNeeded.
    let (resp, outcome, patched) = run(injected, &template());
    assert_eq!(outcome, Outcome::Skipped(SkipReason::AlreadyInjected));
    assert_eq!(resp["response"]["allowed"], true);
    assert!(patched.is_none(), "no patch: {resp}");
    assert!(resp["response"].get("patchType").is_none());

    // A sidecar already present as a native sidecar counts too.
    let mut pod = app_pod();
    pod["spec"]["initContainers"] = json!([{"name": "regent-sidecar", "restartPolicy": "Always"}]);
    let (_, outcome, _) = run(pod, &template());
    assert_eq!(outcome, Outcome::Skipped(SkipReason::AlreadyInjected));
}

#[test]
fn opt_out_annotation_or_label_skips_injection() {
    for value in ["false", "False", " FALSE "] {
        let mut pod = app_pod();
        pod["metadata"]["annotations"]["regent.dev/inject"] = json!(value);
        let (resp, outcome, patched) = run(pod, &template());
        assert_eq!(outcome, Outcome::Skipped(SkipReason::OptedOut), "{value:?}");
        assert_eq!(resp["response"]["allowed"], true);
        assert!(patched.is_none());
    }
    let mut pod = app_pod();
    pod["metadata"]["labels"]["regent.dev/inject"] = json!("false");
    assert_eq!(
        run(pod, &template()).1,
        Outcome::Skipped(SkipReason::OptedOut)
    );

    // Any other value (or none) means inject.
    let mut pod = app_pod();
    pod["metadata"]["annotations"]["regent.dev/inject"] = json!("true");
    assert_eq!(run(pod, &template()).1, Outcome::Injected);
}

#[test]
fn native_sidecar_goes_to_init_containers_with_restart_policy_always() {
    let (_, outcome, patched) = run(app_pod(), &native_template());
    assert_eq!(outcome, Outcome::Injected);
    let pod = patched.expect("a patch");
    assert_eq!(names(&pod["spec"]["containers"]), ["shop", "envoy"]);
    assert_eq!(names(&pod["spec"]["initContainers"]), ["regent-sidecar"]);
    assert_eq!(pod["spec"]["initContainers"][0]["restartPolicy"], "Always");

    // Appended after existing init containers (e.g. Istio's own native sidecar).
    let mut pod = app_pod();
    pod["spec"]["initContainers"] =
        json!([{"name": "istio-init"}, {"name": "istio-proxy", "restartPolicy": "Always"}]);
    let (_, _, patched) = run(pod, &native_template());
    let pod = patched.expect("a patch");
    assert_eq!(
        names(&pod["spec"]["initContainers"]),
        ["istio-init", "istio-proxy", "regent-sidecar"]
    );
}

#[test]
fn conflicts_skip_injection_with_a_warning() {
    let mut pod = app_pod();
    pod["spec"]["volumes"] = json!([{"name": "regent-sidecar-data", "emptyDir": {}}]);
    let (resp, outcome, patched) = run(pod, &template());
    assert!(
        matches!(outcome, Outcome::Skipped(SkipReason::Conflict(_))),
        "{outcome:?}"
    );
    assert_eq!(resp["response"]["allowed"], true);
    assert!(patched.is_none());
    let warning = resp["response"]["warnings"][0].as_str().expect("a warning");
    assert!(warning.contains("regent-sidecar-data"), "{warning}");

    let mut pod = app_pod();
    pod["spec"]["containers"][0]["ports"] = json!([{"containerPort": 9191}]);
    let (resp, outcome, _) = run(pod, &template());
    assert!(matches!(outcome, Outcome::Skipped(SkipReason::Conflict(_))));
    assert!(resp["response"]["warnings"][0]
        .as_str()
        .unwrap()
        .contains("9191"));

    let mut pod = app_pod();
    pod["spec"]["hostNetwork"] = json!(true);
    let (resp, outcome, _) = run(pod, &template());
    assert!(matches!(outcome, Outcome::Skipped(SkipReason::Conflict(_))));
    assert!(resp["response"]["warnings"][0]
        .as_str()
        .unwrap()
        .contains("hostNetwork"));

    // A finished (ordinary) init container on the port is no conflict; a native sidecar is.
    let mut pod = app_pod();
    pod["spec"]["initContainers"] = json!([{"name": "init", "ports": [{"containerPort": 8181}]}]);
    assert_eq!(run(pod, &template()).1, Outcome::Injected);
    let mut pod = app_pod();
    pod["spec"]["initContainers"] =
        json!([{"name": "init", "restartPolicy": "Always", "ports": [{"containerPort": 8181}]}]);
    assert!(matches!(
        run(pod, &template()).1,
        Outcome::Skipped(SkipReason::Conflict(_))
    ));
}

#[test]
fn label_keys_with_slashes_and_tildes_are_escaped_in_the_patch() {
    let tpl = InjectTemplate::from_yaml(
        "container: {name: regent-sidecar}\npodLabels: {\"example.com/a~b\": \"x\"}",
    )
    .unwrap();
    let Plan::Inject(ops) = plan(&app_pod(), &tpl).unwrap() else {
        panic!("expected an injection")
    };
    assert!(
        ops.iter()
            .any(|op| op["path"] == "/metadata/labels/example.com~1a~0b"),
        "{ops:?}"
    );
    let (_, _, patched) = run(app_pod(), &tpl);
    assert_eq!(
        patched.unwrap()["metadata"]["labels"]["example.com/a~b"],
        "x"
    );
}

#[test]
fn other_kinds_and_operations_are_admitted_unchanged() {
    let mut r = review("u1", app_pod());
    r["request"]["operation"] = json!("UPDATE");
    let out = handle_review(&serde_json::to_vec(&r).unwrap(), &template());
    assert_eq!(out.outcome, Outcome::NotApplicable);
    assert_eq!(
        out.response["response"],
        json!({"uid": "u1", "allowed": true})
    );

    let mut r = review("u2", json!({}));
    r["request"]["kind"] = json!({"group": "apps", "version": "v1", "kind": "Deployment"});
    let out = handle_review(&serde_json::to_vec(&r).unwrap(), &template());
    assert_eq!(out.outcome, Outcome::NotApplicable);
    assert_eq!(out.response["response"]["uid"], "u2");
}

fn refused(body: &[u8], expect_uid: &str, needle: &str) {
    let out = handle_review(body, &template());
    let r = &out.response;
    assert!(
        matches!(out.outcome, Outcome::Invalid(_)),
        "{:?}",
        out.outcome
    );
    assert_eq!(r["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(r["kind"], "AdmissionReview");
    assert_eq!(r["response"]["uid"], expect_uid);
    assert_eq!(r["response"]["allowed"], false);
    assert_eq!(r["response"]["status"]["code"], 400);
    let msg = r["response"]["status"]["message"].as_str().unwrap();
    assert!(msg.contains(needle), "{msg:?} should mention {needle:?}");
    assert!(r["response"].get("patch").is_none());
}

#[test]
fn malformed_reviews_are_refused_with_the_uid_echoed() {
    refused(b"{not json", "", "not JSON");
    refused(b"", "", "not JSON");

    let mut r = review("u-v1beta1", app_pod());
    r["apiVersion"] = json!("admission.k8s.io/v1beta1");
    refused(
        &serde_json::to_vec(&r).unwrap(),
        "u-v1beta1",
        "admission.k8s.io/v1",
    );

    refused(
        br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#,
        "",
        "no request",
    );
    let mut r = review("", app_pod());
    r["request"].as_object_mut().unwrap().remove("uid");
    refused(&serde_json::to_vec(&r).unwrap(), "", "uid");

    let mut r = review("u-noobj", app_pod());
    r["request"].as_object_mut().unwrap().remove("object");
    refused(
        &serde_json::to_vec(&r).unwrap(),
        "u-noobj",
        "request.object",
    );

    for (pod, needle) in [
        (json!("a pod"), "not a JSON object"),
        (json!({"metadata": {}}), "no spec"),
        (json!({"spec": []}), "spec is not an object"),
        (
            json!({"spec": {"containers": {"name": "x"}}}),
            "spec.containers is not a list",
        ),
        (
            json!({"spec": {"containers": [], "volumes": "v"}}),
            "spec.volumes is not a list",
        ),
        (
            json!({"metadata": {"annotations": []}, "spec": {}}),
            "metadata.annotations is not an object",
        ),
        (
            json!({"metadata": "m", "spec": {}}),
            "metadata is not an object",
        ),
    ] {
        let r = review("u-bad-pod", pod);
        refused(&serde_json::to_vec(&r).unwrap(), "u-bad-pod", needle);
    }
}
