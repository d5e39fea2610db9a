//! The agent API over real HTTP on loopback, in front of a real node: the bearer token, bad
//! input of every kind (4xx with a JSON error, never 500, never a panic, nothing applied),
//! unicode, the OpenAPI document against the router and the docs, the token budget, and
//! the event stream with resumption.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;

use futures::StreamExt;
use membrane_crdt::MemoryStorage;
use membrane_node::api::client::Client;
use membrane_node::api::{self, Ctx};
use membrane_node::config::BudgetConfig;
use membrane_node::{Node, NodeHandle, NodeOptions};
use membrane_protocol::cost::{BudgetAction, Tiktoken};
use membrane_protocol::{Keypair, Space};
use serde_json::{Value, json};

use common::DEADLINE;
use common::process::{NodeProcess, bin};

const TOKEN: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

struct Api {
    node: NodeHandle,
    base: String,
    http: reqwest::Client,
    client: Client,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn start(budget: Option<BudgetConfig>) -> Api {
    let space: Space = "api-test".parse().unwrap();
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).unwrap();
    let mut options = NodeOptions::memory(Keypair::from_seed(&seed));
    options.spaces = vec![space.clone()];
    let tokens = Arc::new(Tiktoken::o200k().unwrap());
    let (node, _task) = Node::spawn(options, MemoryStorage::default(), tokens.clone())
        .await
        .unwrap();
    let ctx = Arc::new(Ctx::new(
        node.clone(),
        space,
        tokens,
        TOKEN.to_owned(),
        budget,
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(api::serve(listener, ctx, async move {
        let _ = stopped.await;
    }));
    Api {
        node,
        base: format!("http://{addr}"),
        http: reqwest::Client::new(),
        client: Client::new(&addr, TOKEN).unwrap(),
        _stop: stop,
    }
}

impl Api {
    async fn post_raw(&self, path: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status >= 400 {
            assert!(
                content_type.starts_with("application/json"),
                "{content_type}"
            );
            assert!(
                body["error"].as_str().is_some_and(|e| !e.is_empty()),
                "{path}: {body}"
            );
            assert!(
                body["message"].as_str().is_some_and(|m| m.len() > 10),
                "{path}: {body}"
            );
        }
        (status, body)
    }

    async fn post(&self, verb: &str, body: Value) -> (u16, Value) {
        self.post_raw(&format!("/v1/{verb}"), body.to_string())
            .await
    }

    async fn ok(&self, verb: &str, body: Value) -> Value {
        let (status, answer) = self.post(verb, body).await;
        assert_eq!(status, 200, "{verb}: {answer}");
        answer
    }

    async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.base))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no metric {name} in\n{text}"))
}

#[tokio::test]
async fn requests_without_the_right_token_get_401_and_are_counted() {
    let api = start(None).await;
    let url = format!("{}/v1/status", api.base);
    let attempts = [
        None,
        Some("Bearer wrong".to_owned()),
        Some(format!("Bearer {}", &TOKEN[..63])),
        Some(format!("Basic {TOKEN}")),
        Some(format!("bearer {TOKEN}")),
    ];
    for header in &attempts {
        let mut request = api.http.post(&url).body("{}");
        if let Some(h) = header {
            request = request.header("authorization", h);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), 401, "{header:?}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "unauthorized");
        assert!(body["message"].as_str().unwrap().contains("api-token"));
    }
    // The docs and metrics need the token too.
    for path in ["/v1/openapi.json", "/metrics", "/v1/events"] {
        let response = api
            .http
            .get(format!("{}{path}", api.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 401, "{path}");
    }
    let metrics = api.metrics().await;
    assert_eq!(
        metric(&metrics, "membrane_api_unauthorized_total"),
        (attempts.len() + 3) as f64
    );
    // The right token works.
    let status = api.ok("status", json!({})).await;
    assert_eq!(status["peer"], api.node.id().to_string());
}

#[tokio::test]
async fn bad_input_gets_a_4xx_with_a_json_error_and_changes_nothing() {
    let api = start(None).await;
    let kept = api
        .ok(
            "expose",
            json!({"key": "kept.entry", "value": "acknowledged", "tier": "public"}),
        )
        .await;
    let me = api.node.id().to_string();
    let long_value = "x".repeat(16 * 1024 + 1);
    let cases: Vec<(&str, Value, u16, &str)> = vec![
        (
            "expose",
            json!({"key": "a.b", "value": "v", "colour": "red"}),
            400,
            "invalid_request",
        ),
        ("expose", json!({"key": "a.b"}), 400, "invalid_request"),
        (
            "expose",
            json!({"key": "a.b", "value": 7}),
            400,
            "invalid_request",
        ),
        (
            "expose",
            json!({"key": "A.B", "value": "v"}),
            400,
            "bad_key",
        ),
        (
            "expose",
            json!({"key": "a..b", "value": "v"}),
            400,
            "bad_key",
        ),
        ("expose", json!({"key": "", "value": "v"}), 400, "bad_key"),
        (
            "expose",
            json!({"key": "a.b", "value": "v", "tier": "secret"}),
            400,
            "invalid_request",
        ),
        (
            "expose",
            json!({"key": "a.b", "value": "v", "kind": "gossip"}),
            400,
            "invalid_request",
        ),
        (
            "expose",
            json!({"key": "a.b", "value": "v", "parents": ["zz"]}),
            400,
            "bad_id",
        ),
        (
            "expose",
            json!({"key": "a.b", "value": "v", "ttl_ms": 0}),
            400,
            "invalid_request",
        ),
        (
            "expose",
            json!({"key": "a.b", "value": "v", "ttl_ms": -5}),
            400,
            "invalid_request",
        ),
        (
            "expose",
            json!({"key": "a.b", "value": long_value}),
            400,
            "invalid_request",
        ),
        (
            "expose",
            json!({"key": "a.b", "value": "v", "space": "Bad Space"}),
            400,
            "bad_space",
        ),
        (
            "expose",
            json!({"key": "a.b", "value": "v", "space": "elsewhere"}),
            404,
            "unknown_space",
        ),
        ("expose", json!([]), 400, "invalid_request"),
        ("expose", json!("text"), 400, "invalid_request"),
        ("expose", Value::Null, 400, "invalid_request"),
        ("query", json!({"pattern": "a.***"}), 400, "bad_pattern"),
        ("query", json!({"pattern": "a b"}), 400, "bad_pattern"),
        ("search", json!({"text": "   "}), 400, "invalid_request"),
        (
            "search",
            json!({"text": "x", "max_tokens": 1e12}),
            400,
            "invalid_request",
        ),
        ("retract", json!({"key": "never.written"}), 404, "not_found"),
        (
            "trust",
            json!({"peer": "not-a-peer", "score": 0.5}),
            400,
            "bad_peer",
        ),
        (
            "trust",
            json!({"peer": me, "score": 0.5}),
            400,
            "invalid_request",
        ),
        (
            "trust",
            json!({"peer": "12D3KooWEu8GYDPyS3bzSTvQbi6kSZibycGvnL7zWHC5Dg8EBjDx", "score": 1.5}),
            400,
            "out_of_range",
        ),
        (
            "trust",
            json!({"peer": "12D3KooWEu8GYDPyS3bzSTvQbi6kSZibycGvnL7zWHC5Dg8EBjDx", "score": -0.1}),
            400,
            "out_of_range",
        ),
        (
            "subscribe",
            json!({"patterns": ["ok.*", "**.bad.**.x y"]}),
            400,
            "bad_pattern",
        ),
        (
            "subscribe",
            json!({"patterns": vec!["a.*"; 33]}),
            400,
            "invalid_request",
        ),
        ("broadcast", json!({"message": ""}), 400, "invalid_request"),
        (
            "broadcast",
            json!({"message": "m".repeat(5000)}),
            400,
            "invalid_request",
        ),
        ("register", json!({"name": ""}), 400, "invalid_request"),
        (
            "register",
            json!({"name": "a", "capabilities": [{"name": "Bad Cap"}]}),
            400,
            "invalid_request",
        ),
        ("events", json!({"patterns": ["x y"]}), 400, "bad_pattern"),
        ("status", json!({"verbose": true}), 400, "invalid_request"),
    ];
    for (verb, body, status, code) in &cases {
        let (got, answer) = api.post(verb, body.clone()).await;
        assert_eq!(
            (got, answer["error"].as_str().unwrap_or("")),
            (*status, *code),
            "{verb} {body}: {answer}"
        );
    }
    // Raw bodies: malformed, not UTF-8, deeply nested, oversized.
    let raw: Vec<(Vec<u8>, u16, &str)> = vec![
        (b"{".to_vec(), 400, "invalid_json"),
        (
            b"{\"key\": \"a.b\", \"value\": \"v\",}".to_vec(),
            400,
            "invalid_json",
        ),
        (vec![0xff, 0xfe, b'{', b'}'], 400, "invalid_json"),
        // Parsing is driven by the request's type, so deep nesting fails at its first level.
        (
            format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)).into_bytes(),
            400,
            "invalid_request",
        ),
        (
            format!(
                "{{\"key\":\"a.b\",\"value\":{}1{}}}",
                "{\"a\":".repeat(5000),
                "}".repeat(5000)
            )
            .into_bytes(),
            400,
            "invalid_request",
        ),
        (
            format!(
                "{{\"name\":\"a\",\"capabilities\":[{}]}}",
                "[".repeat(50_000)
            )
            .into_bytes(),
            400,
            "invalid_request",
        ),
        (vec![b' '; 300 * 1024], 413, "body_too_large"),
        (
            format!(
                "{{\"key\":\"a.b\",\"value\":\"{}\"}}",
                "y".repeat(400 * 1024)
            )
            .into_bytes(),
            413,
            "body_too_large",
        ),
    ];
    for (body, status, code) in raw {
        let (got, answer) = api.post_raw("/v1/expose", body).await;
        assert_eq!(
            (got, answer["error"].as_str().unwrap()),
            (status, code),
            "{answer}"
        );
    }
    // Unknown endpoints and methods.
    let (got, answer) = api.post_raw("/v1/nonsense", "{}").await;
    assert_eq!(
        (got, answer["error"].as_str().unwrap()),
        (404, "unknown_verb")
    );
    let response = api
        .http
        .get(format!("{}/v1/expose", api.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 405);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["error"], "method_not_allowed");
    // Event stream parameters.
    for (query, status) in [
        ("pattern=x%20y", 400),
        ("subscription=s999", 404),
        ("since=abc", 400),
        ("colour=red", 400),
    ] {
        let response = api
            .http
            .get(format!("{}/v1/events?{query}", api.base))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), status, "{query}");
    }
    // Nothing was applied, nothing was lost, and no answer was a 5xx.
    let answer = api.ok("query", json!({"pattern": "**"})).await;
    let hits = answer["hits"].as_array().unwrap();
    assert_eq!(hits.len(), 1, "{answer}");
    assert_eq!(hits[0]["id"], kept["id"]);
    assert_eq!(hits[0]["value"], "acknowledged");
    let metrics = api.metrics().await;
    assert!(!metrics.contains("status=\"5"), "{metrics}");
}

#[tokio::test]
async fn unicode_values_round_trip_and_unicode_keys_are_refused() {
    let api = start(None).await;
    let values = [
        "naïve café — 東京 🌊 مرحبا",
        "zero\u{200d}width\u{200b}joiners and combining e\u{301}",
        "nul \u{0} inside and \u{1F9EA} astral",
        "\u{FEFF}bom first, rtl \u{202E}override",
        "emoji sequence 👩‍🔬👨‍👩‍👧",
    ];
    for (i, value) in values.iter().enumerate() {
        let key = format!("unicode.v{i}");
        api.ok(
            "expose",
            json!({"key": key, "value": value, "tier": "public"}),
        )
        .await;
        let answer = api.ok("query", json!({"pattern": key})).await;
        assert_eq!(answer["hits"][0]["value"].as_str().unwrap(), *value);
    }
    for key in [
        "café.menu",
        "東京.x",
        "a\u{200b}b",
        "a.b\u{0}",
        "emoji.🌊",
        "a.\u{FEFF}b",
    ] {
        let (status, answer) = api.post("expose", json!({"key": key, "value": "v"})).await;
        assert_eq!(
            (status, answer["error"].as_str().unwrap()),
            (400, "bad_key"),
            "{key:?}"
        );
    }
    // A lone surrogate is not Unicode at all.
    let (status, answer) = api
        .post_raw("/v1/expose", r#"{"key":"a.b","value":"\ud800"}"#)
        .await;
    assert_eq!(
        (status, answer["error"].as_str().unwrap()),
        (400, "invalid_json")
    );
    // Search finds unicode text.
    let answer = api.ok("search", json!({"text": "東京 café"})).await;
    assert!(
        answer["hits"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["entry"]["key"] == "unicode.v0"),
        "{answer}"
    );
}

#[tokio::test]
async fn the_openapi_document_matches_the_router_and_the_docs() {
    let api = start(None).await;
    let served: Value = api
        .http
        .get(format!("{}/v1/openapi.json", api.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(served, api::openapi::document());
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/");
    let checked_in: Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{root}openapi.json")).unwrap())
            .unwrap();
    assert!(
        checked_in == served,
        "docs/openapi.json is stale: run `cargo run --bin membrane -- api-docs` from the repo root"
    );
    assert!(
        std::fs::read_to_string(format!("{root}api.md")).unwrap() == api::openapi::markdown(),
        "docs/api.md is stale: run `cargo run --bin membrane -- api-docs` from the repo root"
    );
    // Every operation the document lists is routed (no 404/405), and every verb is listed.
    let paths = served["paths"].as_object().unwrap();
    for verb in api::verbs::all() {
        assert!(
            paths.contains_key(&format!("/v1/{}", verb.name)),
            "{}",
            verb.name
        );
    }
    let mut operations = 0;
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            operations += 1;
            let request = match method.as_str() {
                "get" => api.http.get(format!("{}{path}", api.base)),
                "post" => api.http.post(format!("{}{path}", api.base)).body("{}"),
                other => panic!("unexpected method {other}"),
            };
            let response = request.bearer_auth(TOKEN).send().await.unwrap();
            let status = response.status().as_u16();
            assert!(
                status != 404 && status != 405 && status < 500,
                "{method} {path}: {status}"
            );
            if path == "/v1/events" && method == "get" {
                assert_eq!(
                    response.headers()["content-type"].to_str().unwrap(),
                    "text/event-stream"
                );
            }
        }
    }
    assert!(operations > api::verbs::all().len());
}

#[tokio::test]
async fn a_spent_halt_budget_refuses_answers_with_429() {
    let api = start(Some(BudgetConfig {
        tokens: 50,
        window_secs: 3600,
        action: BudgetAction::Halt,
    }))
    .await;
    api.ok(
        "expose",
        // Long enough that the hit costs over half the budget whatever its random id and
        // owner (their hex digits tokenize to a varying count).
        json!({"key": "budget.one", "value": "a short fact about sea level rise and coastal flooding", "tier": "public"}),
    )
    .await;
    let first = api.ok("query", json!({"pattern": "budget.*"})).await;
    let cost = first["tokens"].as_u64().unwrap();
    assert!(cost > 25 && cost <= 50, "{first}");
    let budget = api.ok("budget", json!({})).await;
    assert_eq!(budget["used"].as_u64(), Some(cost));
    assert_eq!(budget["limit"].as_u64(), Some(50));
    // The same answer again does not fit what is left.
    let (status, refused) = api.post("query", json!({"pattern": "budget.*"})).await;
    assert_eq!(status, 429, "{refused}");
    assert_eq!(refused["error"], "budget_exhausted");
    assert_eq!(refused["budget"]["used"].as_u64(), Some(cost));
    assert_eq!(refused["budget"]["remaining"].as_u64(), Some(50 - cost));
    let (status, _) = api.post("search", json!({"text": "sea level"})).await;
    assert_eq!(status, 429);
    // Writes do not cross into the agent's context and still work.
    api.ok("expose", json!({"key": "budget.two", "value": "more"}))
        .await;
    let metrics = api.metrics().await;
    assert_eq!(metric(&metrics, "membrane_budget_refusals_total"), 2.0);
    assert_eq!(
        metric(&metrics, "membrane_tokens_charged_total"),
        cost as f64
    );
}

#[tokio::test]
async fn the_event_stream_filters_by_subscription_and_resumes_from_last_event_id() {
    let api = start(None).await;
    let sub = api
        .ok("subscribe", json!({"patterns": ["watched.**"]}))
        .await;
    let id = sub["subscription"].as_str().unwrap().to_owned();
    let stream = api
        .client
        .events(&format!("subscription={id}"), None)
        .await
        .unwrap();
    let mut stream = std::pin::pin!(stream);
    let mut exposed = Vec::new();
    for key in ["watched.a", "ignored.b", "watched.c.d"] {
        let answer = api
            .ok(
                "expose",
                json!({"key": key, "value": format!("value of {key}")}),
            )
            .await;
        exposed.push(answer["id"].as_str().unwrap().to_owned());
    }
    api.ok("broadcast", json!({"message": "hello, space"}))
        .await;
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let event = tokio::time::timeout(DEADLINE, stream.next())
            .await
            .expect("an event in time")
            .expect("the stream is open")
            .unwrap();
        seen.push(event);
    }
    assert_eq!(seen[0].kind, "exposed");
    assert_eq!(seen[0].key.as_deref(), Some("watched.a"));
    assert_eq!(seen[0].id.as_deref(), Some(exposed[0].as_str()));
    assert_eq!(seen[1].key.as_deref(), Some("watched.c.d"));
    assert_eq!(seen[2].kind, "broadcast");
    assert_eq!(seen[2].text.as_deref(), Some("hello, space"));
    // Reconnect after the first event: the stream resumes with the second.
    let resumed = api
        .client
        .events(&format!("subscription={id}"), Some(seen[0].seq))
        .await
        .unwrap();
    let mut resumed = std::pin::pin!(resumed);
    let next = tokio::time::timeout(DEADLINE, resumed.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(next.seq, seen[1].seq);
    // Polling gives the same log, with `next` to read on.
    let page = api
        .ok(
            "events",
            json!({"since": 0, "limit": 2, "patterns": ["watched.**"]}),
        )
        .await;
    let events = page["events"].as_array().unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[1]["key"], "watched.c.d");
    let rest = api
        .ok(
            "events",
            json!({"since": page["next"], "patterns": ["watched.**"]}),
        )
        .await;
    let rest = rest["events"].as_array().unwrap();
    assert_eq!(rest.len(), 1, "{rest:?}");
    assert_eq!(rest[0]["type"], "broadcast");
}

#[test]
fn the_api_binds_only_to_loopback_unless_allowed() {
    let root = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(bin())
        .args(["node", "--api", "0.0.0.0:0", "--data-dir"])
        .arg(root.path().join("a"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--api-allow-remote"), "{stderr}");
    assert!(!root.path().join("a/node.json").exists());
    // With the flag it starts, says so in a warning, and still demands the token.
    let node = NodeProcess::start(
        &root.path().join("b"),
        &["--api", "0.0.0.0:0", "--api-allow-remote"],
    );
    node.wait_line("the remote-API warning", |j| {
        j["level"] == "WARN" && common::process::message(j).contains("non-loopback")
    });
    let info = node.wait_ready();
    let port = info["api"]
        .as_str()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .to_owned();
    let status = node.cli(&[
        "status",
        "--api",
        &format!("127.0.0.1:{port}"),
        "--token",
        "bad",
    ]);
    assert!(!status.status.success());
    assert!(String::from_utf8_lossy(&status.stderr).contains("unauthorized"));
    node.cli_ok(&["status", "--api", &format!("127.0.0.1:{port}")]);
}
