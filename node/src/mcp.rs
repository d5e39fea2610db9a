//! `membrane mcp`: the node's API as MCP tools, over stdio.
//!
//! An MCP client (Claude Code, an IDE, an agent framework) starts `membrane mcp` as a child
//! process and speaks JSON-RPC on its stdin/stdout. Every tool is generated at runtime from
//! the verb registry ([`verbs::all`]): one tool per verb, its input schema the verb's request
//! schema. A tool call is forwarded unchanged to the local node's HTTP API through
//! [`Client::call`], and the answer comes back as the verb's compact rendering (for the
//! model) plus the raw JSON (as structured content, for programs).
//!
//! stdout belongs to the protocol: nothing here prints, and logs go through `tracing`, whose
//! subscriber must write to stderr.

use std::sync::Arc;

use anyhow::Context as _;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    JsonObject, ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
    ToolAnnotations,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler, ServiceExt as _};
use serde_json::Value;

use crate::api::client::Client;
use crate::api::verbs::{self, VerbSpec};

/// What the client shows the model about this server as a whole.
const INSTRUCTIONS: &str = "membrane is a memory shared between LLM agents: this server talks \
to the local membrane node, which replicates small signed entries (what an agent learned, \
under a key) to the agents its owner trusts. Before researching something, query or search \
membrane for what other agents already found, and expose what you learn so that nobody has to \
find it again. Every answer is counted in tokens, so prefer narrow patterns and small budgets.";

/// Whether tools advertise `outputSchema` (the verb's response schema). Off: clients that
/// validate `structuredContent` against it (the TypeScript SDK does, with a draft-07
/// validator before SEP-2106) fail the whole call on any mismatch, and some clients put
/// the tool list, output schemas included, into the model's context on every turn.
const ADVERTISE_OUTPUT_SCHEMA: bool = false;

/// Serve MCP on stdin/stdout until the client closes the connection.
///
/// # Errors
///
/// Fails if the MCP handshake fails (including the client closing stdin before it), or if
/// the session task panics.
pub async fn serve_stdio(client: Client) -> anyhow::Result<()> {
    let server = MembraneMcp {
        client: Arc::new(client),
    };
    let session = server
        .serve(rmcp::transport::stdio())
        .await
        .context("MCP handshake on stdio failed")?;
    let reason = session.waiting().await.context("MCP session task failed")?;
    tracing::info!(?reason, "MCP session ended");
    Ok(())
}

/// The MCP server: stateless apart from the API client, so every request is independent.
#[derive(Clone)]
struct MembraneMcp {
    client: Arc<Client>,
}

impl std::fmt::Debug for MembraneMcp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The client holds the bearer token; keep it out of any debug output.
        f.debug_struct("MembraneMcp").finish_non_exhaustive()
    }
}

impl MembraneMcp {
    async fn forward(
        &self,
        verb: &'static VerbSpec,
        arguments: Option<JsonObject>,
    ) -> CallToolResult {
        let body = Value::Object(arguments.unwrap_or_default());
        match self.client.call(verb.name, &body).await {
            Ok(response) => {
                let mut result =
                    CallToolResult::success(vec![ContentBlock::text((verb.render)(&response))]);
                // Protocol versions before 2026-07-28 only allow an object here.
                if response.is_object() {
                    result.structured_content = Some(response);
                }
                result
            }
            Err(error) => {
                tracing::debug!(verb = verb.name, %error, "API call failed");
                CallToolResult::error(vec![ContentBlock::text(error.to_string())])
            }
        }
    }
}

impl ServerHandler for MembraneMcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("membrane", env!("CARGO_PKG_VERSION")))
            .with_instructions(INSTRUCTIONS)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let tools = verbs::all()
            .iter()
            .map(tool_for)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|message| McpError::internal_error(message, None))?;
        Ok(ListToolsResult::with_all_items(tools))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        verbs::find(name).and_then(|verb| tool_for(verb).ok())
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let Some(verb) = verbs::find(&request.name) else {
            return Err(McpError::invalid_params(
                format!(
                    "unknown tool `{}`; tools/list names the available tools",
                    request.name
                ),
                None,
            ));
        };
        tokio::select! {
            result = self.forward(verb, request.arguments) => Ok(result.into()),
            () = context.ct.cancelled() => Ok(CallToolResult::error(vec![ContentBlock::text(
                "cancelled by the client",
            )])
            .into()),
        }
    }
}

/// The MCP tool for one verb.
fn tool_for(verb: &VerbSpec) -> Result<Tool, String> {
    let input = schema_object(verb.name, (verb.request_schema)())?;
    let description = format!("{}\n\n{}", verb.summary, verb.description);
    let mut tool = Tool::new(verb.name, description, input)
        .with_annotations(ToolAnnotations::new().read_only(verb.read_only));
    if ADVERTISE_OUTPUT_SCHEMA {
        tool = tool.with_raw_output_schema(Arc::new(schema_object(
            verb.name,
            (verb.response_schema)(),
        )?));
    }
    Ok(tool)
}

/// A schema as the JSON object MCP wants: root `"type": "object"`, with the root keys that
/// only cost tokens dropped: `$schema` (MCP's default dialect is 2020-12 already, which is
/// what schemars writes) and the type's `title` and doc `description` (the tool description
/// says it better). `$defs`, `required` and property descriptions stay.
fn schema_object(verb: &str, schema: Value) -> Result<JsonObject, String> {
    let Value::Object(mut object) = schema else {
        return Err(format!("the schema of verb `{verb}` is not a JSON object"));
    };
    if object.get("type").and_then(Value::as_str) != Some("object") {
        return Err(format!(
            "the schema of verb `{verb}` must have root \"type\": \"object\" for MCP"
        ));
    }
    for key in ["$schema", "title", "description"] {
        object.remove(key);
    }
    // Some clients insist on `properties`, even for a verb without parameters.
    object
        .entry("properties")
        .or_insert_with(|| Value::Object(JsonObject::new()));
    Ok(object)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_verb_makes_a_valid_tool() {
        for verb in verbs::all() {
            let tool = tool_for(verb).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(tool.name, verb.name);
            let schema = tool.input_schema.as_ref();
            assert_eq!(schema.get("type").and_then(Value::as_str), Some("object"));
            assert!(
                schema.get("properties").is_some_and(Value::is_object),
                "{}",
                verb.name
            );
            assert!(!schema.contains_key("$schema") && !schema.contains_key("title"));
            let description = tool.description.as_deref().unwrap_or_default();
            assert!(description.starts_with(verb.summary));
            assert!(description.contains(verb.description));
            let annotations = tool.annotations.as_ref().map(|a| a.read_only_hint);
            assert_eq!(annotations, Some(Some(verb.read_only)));
        }
    }

    #[test]
    fn a_schema_without_root_object_is_refused() {
        let error = schema_object("x", serde_json::json!({"type": "string"}));
        assert!(error.is_err());
        let error = schema_object("x", serde_json::json!(true));
        assert!(error.is_err());
    }
}
