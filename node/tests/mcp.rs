#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! `membrane mcp` end to end: a real MCP client session (rmcp's client over a child
//! process) against a real `membrane node`, and `membrane mcp` without a node.

mod common;

use std::future::Future;
use std::process::Stdio;

use common::DEADLINE;
use common::process::NodeProcess;
use membrane_node::api::verbs;
use rmcp::model::{CallToolRequestParams, CallToolResult, ErrorCode, JsonObject};
use rmcp::transport::{ConfigureCommandExt as _, TokioChildProcess};
use rmcp::{ServiceError, ServiceExt as _};
use serde_json::{Value, json};
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_membrane");

/// Awaits `future`, panicking with `what` after [`DEADLINE`].
async fn within<F: Future>(what: &str, future: F) -> F::Output {
    tokio::time::timeout(DEADLINE, future)
        .await
        .unwrap_or_else(|_| panic!("timed out after {DEADLINE:?} waiting for {what}"))
}

fn args(value: Value) -> JsonObject {
    match value {
        Value::Object(object) => object,
        other => panic!("arguments must be an object, got {other}"),
    }
}

fn text_of(result: &CallToolResult) -> String {
    result
        .content
        .iter()
        .filter_map(|block| block.as_text().map(|t| t.text.clone()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `membrane mcp --data-dir <dir>`, with nothing in the environment pointing elsewhere.
fn mcp_command(dir: &std::path::Path) -> Command {
    Command::new(BIN).configure(|cmd| {
        cmd.arg("mcp")
            .arg("--data-dir")
            .arg(dir)
            .env_remove("MEMBRANE_API")
            .env_remove("MEMBRANE_TOKEN")
            .env_remove("MEMBRANE_DATA_DIR")
            .kill_on_drop(true);
    })
}

#[tokio::test]
async fn mcp_session_against_a_running_node() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(dir.path(), &["--space", "mcp-test"]);
    // Blocks this (current-thread) runtime, which has nothing else to run yet.
    let info = node.wait_ready();
    assert!(info["api"].as_str().is_some_and(|a| !a.is_empty()));

    let transport = TokioChildProcess::new(mcp_command(dir.path())).expect("spawn membrane mcp");
    // `()` is rmcp's do-nothing client handler; `serve` performs the initialize handshake.
    let mut client = within("initialize", ().serve(transport))
        .await
        .expect("initialize");

    let peer_info = client.peer_info().expect("server info after initialize");
    let server = peer_info
        .server_info
        .as_ref()
        .expect("serverInfo in the initialize result");
    assert_eq!(server.name, "membrane");
    assert!(peer_info.capabilities.tools.is_some());

    // tools/list: every verb is a tool with an object input schema.
    let tools = within("tools/list", client.list_all_tools())
        .await
        .expect("tools/list");
    for verb in verbs::all() {
        let tool = tools
            .iter()
            .find(|t| t.name == verb.name)
            .unwrap_or_else(|| panic!("no tool for verb {}", verb.name));
        let schema = tool.input_schema.as_ref();
        assert_eq!(schema.get("type"), Some(&json!("object")), "{}", verb.name);
        assert!(
            schema.get("properties").is_some_and(Value::is_object),
            "{} has no properties object",
            verb.name
        );
        assert!(
            tool.description
                .as_deref()
                .is_some_and(|d| d.starts_with(verb.summary)),
            "{}",
            verb.name
        );
    }
    assert_eq!(tools.len(), verbs::all().len());

    // expose, then query finds it, citing the id expose returned.
    let value = "MCP round trip works: Grüße aus der Membran ✓ 膜";
    let exposed = within(
        "tools/call expose",
        client.call_tool(
            CallToolRequestParams::new("expose").with_arguments(args(json!({
                "key": "findings.mcp.works",
                "value": value,
                "tier": "public",
            }))),
        ),
    )
    .await
    .expect("expose");
    assert_ne!(exposed.is_error, Some(true), "{exposed:?}");
    let structured = exposed
        .structured_content
        .as_ref()
        .expect("expose's structured content");
    let id = structured["id"].as_str().expect("an id").to_owned();
    assert_eq!(id.len(), 64, "{id}");
    assert_eq!(structured["tier"], "public", "{structured}");
    let text = text_of(&exposed);
    assert!(text.contains(&format!("id: {id}")), "{text}");

    let found = within(
        "tools/call query",
        client.call_tool(
            CallToolRequestParams::new("query")
                .with_arguments(args(json!({"pattern": "findings.**"}))),
        ),
    )
    .await
    .expect("query");
    assert_ne!(found.is_error, Some(true), "{found:?}");
    let text = text_of(&found);
    assert!(text.contains("findings.mcp.works"), "{text}");
    assert!(text.contains(value), "{text}");
    assert!(text.contains(&format!("[{}]", &id[..8])), "{text}");
    let hits = &found.structured_content.as_ref().expect("structured")["hits"];
    assert_eq!(hits[0]["id"], id.as_str(), "{hits}");
    assert_eq!(hits[0]["value"], value, "{hits}");

    // search ranks it in.
    let searched = within(
        "tools/call search",
        client.call_tool(
            CallToolRequestParams::new("search")
                .with_arguments(args(json!({"text": "round trip works", "max_tokens": 500}))),
        ),
    )
    .await
    .expect("search");
    assert_ne!(searched.is_error, Some(true), "{searched:?}");
    let text = text_of(&searched);
    assert!(text.contains("findings.mcp.works"), "{text}");
    assert!(text.contains(&format!("[{}]", &id[..8])), "{text}");
    let structured = searched.structured_content.as_ref().expect("structured");
    assert_eq!(structured["hits"][0]["entry"]["id"], id.as_str());

    // An API error is a tool result with is_error, carrying the API's message.
    let bad = within(
        "tools/call expose with a bad key",
        client.call_tool(
            CallToolRequestParams::new("expose")
                .with_arguments(args(json!({"key": "Bad Key", "value": "v"}))),
        ),
    )
    .await
    .expect("a tool error is not a protocol error");
    assert_eq!(bad.is_error, Some(true), "{bad:?}");
    let message = text_of(&bad);
    assert!(message.contains("bad_key"), "{message}");
    assert!(message.contains("Bad Key"), "{message}");

    // An unknown tool is a protocol error: invalid params.
    let unknown = within(
        "tools/call of an unknown tool",
        client.call_tool(CallToolRequestParams::new("explode")),
    )
    .await;
    match unknown {
        Err(ServiceError::McpError(error)) => {
            assert_eq!(error.code, ErrorCode::INVALID_PARAMS);
            assert!(error.message.contains("explode"), "{}", error.message);
        }
        other => panic!("expected an invalid-params error, got {other:?}"),
    }

    // Closing closes the child's stdin; the server must exit on its own.
    let closed = client.close_with_timeout(DEADLINE).await.expect("close");
    assert!(closed.is_some(), "the MCP session did not close in time");
}

#[tokio::test]
async fn mcp_without_a_node_fails_fast() {
    let dir = tempfile::tempdir().unwrap();
    let child = mcp_command(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn membrane mcp");
    let output = within("membrane mcp to exit", child.wait_with_output())
        .await
        .expect("wait for membrane mcp");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "exit status {}", output.status);
    assert!(
        stderr.contains("node.json") && stderr.contains(&dir.path().display().to_string()),
        "{stderr}"
    );
    assert!(output.stdout.is_empty(), "stray output on stdout");
}
