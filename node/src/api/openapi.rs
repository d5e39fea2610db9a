//! The OpenAPI 3.1 document, built from the verb list so it cannot drift from the router.
//! `docs/openapi.json` is a copy that a test keeps equal to [`document`], and
//! `docs/api.md` is rendered from it by [`markdown`].

use std::fmt::Write as _;

use serde_json::{Map, Value, json};

use super::http::MAX_BODY_BYTES;
use super::types::{ErrorBody, EventView};
use super::verbs::{self, VerbSpec};

fn error_responses(generator: &mut schemars::SchemaGenerator) -> Value {
    let error = generator.subschema_for::<ErrorBody>().to_value();
    let body = |description: &str| {
        json!({
            "description": description,
            "content": { "application/json": { "schema": error } }
        })
    };
    json!({
        "400": body("Malformed JSON, an unknown field, a bad key, pattern, peer, id or value"),
        "401": body("No bearer token, or a wrong one"),
        "404": body("An unknown space, entry, subscription or endpoint"),
        "413": body(&format!("The body is over {MAX_BODY_BYTES} bytes")),
        "429": body("The agent's halt token budget is spent; `budget` holds its state"),
        "409": body("Refused by a coordination rule (a capability the card lacks, not the creator or winner)"),
        "503": body("The node is shutting down, or its operator paused it (code paused)"),
    })
}

fn operation(
    verb: &VerbSpec,
    method: &str,
    generator: &mut schemars::SchemaGenerator,
    errors: &Value,
) -> Value {
    let request = (verb.openapi_request)(generator).to_value();
    let response = (verb.openapi_response)(generator).to_value();
    let mut responses = json!({
        "200": {
            "description": verb.summary,
            "content": { "application/json": { "schema": response } }
        }
    });
    if let (Some(ok), Some(errs)) = (responses.as_object_mut(), errors.as_object()) {
        ok.extend(errs.clone());
    }
    let mut op = json!({
        "operationId": if method == "get" { format!("{}_get", verb.name) } else { verb.name.to_owned() },
        "summary": verb.summary,
        "description": verb.description,
        "responses": responses,
    });
    if method == "post" {
        op["requestBody"] = json!({
            "required": false,
            "content": { "application/json": { "schema": request } }
        });
    }
    op
}

fn events_stream(generator: &mut schemars::SchemaGenerator, errors: &Value) -> Value {
    let event = generator.subschema_for::<EventView>().to_value();
    let mut responses = json!({
        "200": {
            "description": "A stream of Server-Sent Events: `id:` is the event's seq, \
                `event:` its type, `data:` the event as JSON. Reconnect with Last-Event-ID to \
                resume.",
            "content": { "text/event-stream": { "schema": event } }
        }
    });
    if let (Some(ok), Some(errs)) = (responses.as_object_mut(), errors.as_object()) {
        ok.extend(errs.clone());
    }
    let param = |name: &str, description: &str, schema: Value| {
        json!({ "name": name, "in": "query", "required": false,
                "description": description, "schema": schema })
    };
    json!({
        "operationId": "events_follow",
        "summary": "Follow the node's events as Server-Sent Events.",
        "description": "Entries arriving, retractions, conflicts, broadcasts and threat \
            signals, from the node's event log. Resumable: the Last-Event-ID header (or \
            `since`) gives the last seq seen.",
        "parameters": [
            param("since", "Start after this seq.", json!({"type": "integer", "minimum": 0})),
            param("pattern", "Only events whose key matches (repeatable; broadcasts and threats always pass).",
                  json!({"type": "string"})),
            param("subscription", "Only events matching a subscription's patterns.",
                  json!({"type": "string"})),
            { "name": "Last-Event-ID", "in": "header", "required": false,
              "description": "The last seq received; wins over `since`.",
              "schema": { "type": "integer", "minimum": 0 } }
        ],
        "responses": responses,
    })
}

/// The OpenAPI document of the API.
pub fn document() -> Value {
    let mut generator = schemars::generate::SchemaSettings::draft2020_12()
        .with(|s| {
            s.definitions_path = "/components/schemas".into();
            s.meta_schema = None;
        })
        .into_generator();
    let errors = error_responses(&mut generator);
    let mut paths = Map::new();
    for verb in verbs::all() {
        let mut item = Map::new();
        item.insert(
            "post".into(),
            operation(verb, "post", &mut generator, &errors),
        );
        if verb.name == "events" {
            item.insert("get".into(), events_stream(&mut generator, &errors));
        } else if verb.read_only {
            item.insert(
                "get".into(),
                operation(verb, "get", &mut generator, &errors),
            );
        }
        paths.insert(format!("/v1/{}", verb.name), Value::Object(item));
    }
    paths.insert(
        "/v1/openapi.json".into(),
        json!({ "get": {
            "operationId": "openapi",
            "summary": "This document.",
            "responses": { "200": { "description": "The OpenAPI document",
                "content": { "application/json": { "schema": { "type": "object" } } } } }
        }}),
    );
    paths.insert(
        "/metrics".into(),
        json!({ "get": {
            "operationId": "metrics",
            "summary": "Prometheus metrics (OpenMetrics text).",
            "responses": { "200": { "description": "Metrics",
                "content": { "application/openmetrics-text": { "schema": { "type": "string" } } } } }
        }}),
    );
    let schemas = Value::Object(generator.take_definitions(true));
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "membrane agent API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": format!(
                "The local API of a membrane node, for the one agent beside it. JSON under \
                 /v1/; every request needs `Authorization: Bearer <token>` with the token \
                 from <data-dir>/api-token; bodies up to {MAX_BODY_BYTES} bytes; unknown \
                 fields are refused. Every error is a status code and \
                 {{\"error\": \"<code>\", \"message\": \"...\"}}."
            ),
        },
        "servers": [ { "url": "http://127.0.0.1:7420" } ],
        "security": [ { "bearer": [] } ],
        "paths": Value::Object(paths),
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "schemas": schemas,
        },
    })
}

/// `docs/api.md`: the verbs, their fields and examples, rendered from [`document`] and
/// the verb list.
pub fn markdown() -> String {
    let doc = document();
    let schemas = &doc["components"]["schemas"];
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# The agent API\n\n<!-- Generated from the OpenAPI document by `cargo run -p membrane-node --bin membrane -- api-docs`; a test keeps it current. -->\n"
    );
    let _ = writeln!(
        out,
        "{}\n\nThe same verbs are MCP tools (`membrane mcp`, see [mcp.md](mcp.md)) and CLI \
         subcommands (`membrane <verb>`). The machine-readable document is \
         [openapi.json](openapi.json), also served at `GET /v1/openapi.json`.\n",
        doc["info"]["description"].as_str().unwrap_or_default()
    );
    let _ = writeln!(out, "| verb | method | summary |\n|---|---|---|");
    for verb in verbs::all() {
        let methods = if verb.read_only { "GET, POST" } else { "POST" };
        let _ = writeln!(
            out,
            "| [`{}`](#{}) | {methods} `/v1/{}` | {} |",
            verb.name, verb.name, verb.name, verb.summary
        );
    }
    let _ = writeln!(
        out,
        "| [`events` stream](#events-stream) | GET `/v1/events` | Follow the node's events as Server-Sent Events. |"
    );
    for verb in verbs::all() {
        let _ = writeln!(
            out,
            "\n## {}\n\n{}\n\n{}\n",
            verb.name, verb.summary, verb.description
        );
        let _ = writeln!(out, "CLI: `{}`\n", verb.example);
        let op = &doc["paths"][format!("/v1/{}", verb.name)]["post"];
        let request = &op["requestBody"]["content"]["application/json"]["schema"];
        let response = &op["responses"]["200"]["content"]["application/json"]["schema"];
        let _ = writeln!(out, "Request fields:\n");
        fields(&mut out, resolve(request, schemas), schemas);
        let _ = writeln!(out, "\nAnswer fields:\n");
        fields(&mut out, resolve(response, schemas), schemas);
    }
    let _ = writeln!(
        out,
        "\n## events stream\n\n`GET /v1/events?since=<seq>&pattern=<p>&subscription=<id>` \
         streams Server-Sent Events: `id:` is the event's seq, `event:` its type, `data:` \
         the event as JSON (the fields of an `events` answer's items). Reconnect with \
         `Last-Event-ID` to resume where you left off. `membrane events` follows it.\n"
    );
    let _ = writeln!(out, "## Errors\n\n| status | when |\n|---|---|");
    if let Some(responses) = doc["paths"]["/v1/expose"]["post"]["responses"].as_object() {
        for (status, response) in responses {
            if status != "200" {
                let _ = writeln!(
                    out,
                    "| {status} | {} |",
                    response["description"].as_str().unwrap_or_default()
                );
            }
        }
    }
    let error = resolve(&doc["components"]["schemas"]["ErrorBody"], schemas);
    let _ = writeln!(out, "\nThe error body:\n");
    fields(&mut out, error, schemas);
    out
}

fn resolve<'a>(schema: &'a Value, schemas: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(r) => &schemas[r.trim_start_matches("#/components/schemas/")],
        None => schema,
    }
}

fn type_text(schema: &Value, schemas: &Value) -> String {
    let schema = resolve(schema, schemas);
    if let Some(values) = schema["enum"].as_array() {
        return values
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(" \\| ");
    }
    if let Some(any) = schema["anyOf"].as_array() {
        return any
            .iter()
            .map(|s| type_text(s, schemas))
            .filter(|t| t != "null")
            .collect::<Vec<_>>()
            .join(" \\| ");
    }
    match &schema["type"] {
        Value::String(t) if t == "array" => format!("{}[]", type_text(&schema["items"], schemas)),
        Value::String(t) => t.clone(),
        Value::Array(ts) => ts
            .iter()
            .filter_map(Value::as_str)
            .filter(|t| *t != "null")
            .collect::<Vec<_>>()
            .join(" \\| "),
        _ => "object".to_owned(),
    }
}

fn fields(out: &mut String, schema: &Value, schemas: &Value) {
    let Some(props) = schema["properties"].as_object() else {
        let _ = writeln!(out, "(none)");
        return;
    };
    let required: Vec<&str> = schema["required"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "| field | type | required | description |\n|---|---|---|---|"
    );
    for (name, prop) in props {
        let description = prop["description"]
            .as_str()
            .or_else(|| resolve(prop, schemas)["description"].as_str())
            .unwrap_or_default()
            .replace('\n', " ")
            .replace('|', "\\|");
        let _ = writeln!(
            out,
            "| `{name}` | {} | {} | {description} |",
            type_text(prop, schemas),
            if required.contains(&name.as_str()) {
                "yes"
            } else {
                "no"
            }
        );
    }
}
