//! Policy decisions through a real Envoy: method, path and role; identity from a JWT checked
//! against a JWKS in bundle data; headers a policy adds and removes; a policy's own 401 with body;
//! gRPC methods authorized on a field of the decoded request body.

mod common;

use std::time::Duration;

use anyhow::Result;
use regent_e2e::http::{send, Answer};
use regent_e2e::jwt::{Issuer, AUDIENCE};
use regent_e2e::orders::{self, CreateRefundRequest, GetOrderRequest};

fn assert_allowed_for(a: &Answer, subject: &str) {
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(
        a.upstream_header("x-regent-subject").as_deref(),
        Some(subject),
        "the policy's header reaches the upstream: {a:?}"
    );
}

fn assert_forbidden(a: &Answer) {
    assert_eq!(a.status, 403, "{a:?}");
    assert_eq!(a.body, "forbidden by regent e2e policy");
    assert_eq!(
        a.headers.get("x-regent-denied").map(String::as_str),
        Some("policy")
    );
}

fn assert_unauthenticated(a: &Answer) {
    assert_eq!(a.status, 401, "{a:?}");
    assert_eq!(a.body, "authentication required");
    assert_eq!(
        a.headers.get("www-authenticate").map(String::as_str),
        Some("Bearer realm=\"regent-e2e\"")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_decisions_by_method_path_role_and_jwt() -> Result<()> {
    let mut h = common::harness("http_decisions")?;
    let issuer = Issuer::generate()?;
    let stack = common::PolicyStack::start(&h, &issuer).await?;
    let envoy = &stack.envoy;
    let c = common::client();
    let get = |path: &str, user: &str| c.get(envoy.url(path)).header("x-user", user);

    // Role and method.
    let a = send(get("/api/items", "bob").header("x-remove-me", "secret")).await?;
    assert_allowed_for(&a, "bob");
    assert_eq!(a.json()?["method"], "GET");
    assert_eq!(a.json()?["path"], "/api/items");
    assert_eq!(
        a.upstream_header("x-remove-me"),
        None,
        "the policy removed it: {a:?}"
    );
    assert_forbidden(&send(c.delete(envoy.url("/api/items/1")).header("x-user", "bob")).await?);
    assert_forbidden(&send(c.post(envoy.url("/api/items")).header("x-user", "bob")).await?);
    assert_allowed_for(
        &send(
            c.delete(envoy.url("/api/items/1"))
                .header("x-user", "alice"),
        )
        .await?,
        "alice",
    );
    assert_allowed_for(
        &send(
            c.post(envoy.url("/api/items"))
                .header("x-user", "alice")
                .body("{}"),
        )
        .await?,
        "alice",
    );
    // carol has no role; mallory is unknown.
    assert_forbidden(&send(get("/api/items", "carol")).await?);
    assert_forbidden(&send(get("/api/items", "mallory")).await?);
    // Path: an unknown prefix is denied even for an admin; /public needs nobody.
    assert_forbidden(&send(get("/admin/settings", "alice")).await?);
    let a = send(c.get(envoy.url("/public/index.html"))).await?;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.upstream_header("x-regent-subject"), None);
    // %2F cannot forge a path segment: "public%2F..." is one segment, not "public".
    assert_unauthenticated(&send(c.get(envoy.url("/public%2F..%2Fapi/items"))).await?);
    // No identity: the policy's own 401 with its body and challenge reaches the client.
    assert_unauthenticated(&send(c.get(envoy.url("/api/items"))).await?);

    // JWT-protected route: only a valid token counts, x-user is ignored there.
    let bearer = |t: &str| format!("Bearer {t}");
    let jwt_get = |t: String| {
        c.get(envoy.url("/jwt/profile"))
            .header("authorization", bearer(&t))
    };
    assert_allowed_for(
        &send(jwt_get(issuer.token("alice", AUDIENCE, 300)?)).await?,
        "alice",
    );
    assert_allowed_for(
        &send(jwt_get(issuer.token("bob", AUDIENCE, 300)?)).await?,
        "bob",
    );
    assert_forbidden(&send(jwt_get(issuer.token("carol", AUDIENCE, 300)?)).await?);
    assert_unauthenticated(&send(jwt_get(issuer.token("alice", AUDIENCE, -120)?)).await?);
    assert_unauthenticated(&send(jwt_get(issuer.token("alice", "another-service", 300)?)).await?);
    let stranger = Issuer::generate()?;
    assert_unauthenticated(&send(jwt_get(stranger.token("alice", AUDIENCE, 300)?)).await?);
    assert_unauthenticated(&send(jwt_get("not.a.jwt".to_string())).await?);
    assert_unauthenticated(
        &send(c.get(envoy.url("/jwt/profile")).header("x-user", "alice")).await?,
    );

    h.pass();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_methods_authorized_on_role_and_body_field() -> Result<()> {
    let mut h = common::harness("grpc_decisions")?;
    let issuer = Issuer::generate()?;
    let stack = common::PolicyStack::start(&h, &issuer).await?;
    let channel = tonic::transport::Endpoint::from_shared(stack.envoy.url(""))?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(10))
        .connect()
        .await?;

    let get = |user: &'static str| {
        let ch = channel.clone();
        async move {
            let md: Vec<(&'static str, &str)> = if user.is_empty() {
                vec![]
            } else {
                vec![("x-user", user)]
            };
            orders::get_order(
                ch,
                &md,
                GetOrderRequest {
                    order_id: "o-42".into(),
                    tenant_id: "t-1".into(),
                    amount_cents: 1,
                    include_items: true,
                },
            )
            .await
        }
    };
    let refund = |user: &'static str, amount_cents: i64| {
        let ch = channel.clone();
        async move {
            orders::create_refund(
                ch,
                &[("x-user", user)],
                CreateRefundRequest {
                    order_id: "o-42".into(),
                    tenant_id: "t-1".into(),
                    amount_cents,
                    reason: "damaged".into(),
                    expected_status: orders::OrderStatus::Shipped as i32,
                },
            )
            .await
        }
    };

    let order = get("bob").await?;
    assert_eq!(order.order_id, "o-42");
    assert_eq!(order.items, vec!["book", "pen"]);
    let err = get("carol").await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    let err = get("").await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");

    // The decision reads amount_cents from the decoded protobuf body.
    let r = refund("alice", 5_000).await?;
    assert_eq!((r.order_id.as_str(), r.amount_cents), ("o-42", 5_000));
    let r = refund("alice", 10_000).await?;
    assert_eq!(r.amount_cents, 10_000);
    let err = refund("alice", 10_001).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    let err = refund("bob", 100).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");

    h.pass();
    Ok(())
}

/// The demo bundle `make run` serves (policies/envoy), pushed from the repository's own
/// `policies/` tree and answered through Envoy as docs/running-locally.md and `make run` say.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_bundle_from_policies_answers_as_documented() -> Result<()> {
    let mut h = common::harness("demo_policy")?;
    let seed = regent_e2e::bins::repo_root().join("policies");
    let tokens: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(
        seed.join("envoy/demo-tokens.json"),
    )?)?;
    let token =
        |name: &str| -> String { format!("Bearer {}", tokens[name].as_str().unwrap_or_default()) };
    let chain = common::Chain::start_from(&h, &seed, "envoy").await?;
    let mut sidecar =
        regent_e2e::sidecar::Sidecar::start(&h, "sidecar", chain.sidecar_options(&h)?).await?;
    sidecar
        .wait_revision(&chain.seed_commit, Duration::from_secs(60))
        .await?;
    let envoy = common::envoy(&h, "envoy", &sidecar, &chain.ups, false).await?;
    let c = common::client();

    let a = send(c.get(envoy.url("/public/hello"))).await?;
    assert_eq!(a.status, 200, "{a:?}");
    let a = send(
        c.get(envoy.url("/api/orders"))
            .header("authorization", token("alice"))
            .header("x-regent-tenant", "forged"),
    )
    .await?;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(
        a.upstream_header("x-regent-subject").as_deref(),
        Some("alice")
    );
    assert_eq!(
        a.upstream_header("x-regent-tenant").as_deref(),
        Some("acme")
    );
    assert_eq!(a.upstream_header("authorization"), None, "{a:?}");
    assert_eq!(
        a.headers.get("x-regent-decision").map(String::as_str),
        Some("allowed")
    );

    let a = send(
        c.delete(envoy.url("/api/orders/1"))
            .header("authorization", token("alice")),
    )
    .await?;
    assert_eq!(a.status, 403, "{a:?}");
    assert_eq!(
        a.json()?,
        serde_json::json!({"error": "forbidden", "reason": "missing scope orders:admin", "status": 403})
    );
    let a = send(
        c.delete(envoy.url("/api/orders/1"))
            .header("authorization", token("admin")),
    )
    .await?;
    assert_eq!(a.status, 200, "{a:?}");
    for name in ["expired", "wrong_key"] {
        let a = send(
            c.get(envoy.url("/api/orders"))
                .header("authorization", token(name)),
        )
        .await?;
        assert_eq!(a.status, 401, "{name}: {a:?}");
    }
    let a = send(c.get(envoy.url("/api/orders"))).await?;
    assert_eq!(a.status, 401, "{a:?}");
    assert_eq!(a.json()?["error"], "unauthenticated");
    h.pass();
    Ok(())
}
