//! The CLI's verb subcommands, built from the verb list: each request field becomes a flag
//! (`max_tokens` → `--max-tokens`), the verb's positional fields become arguments, and the
//! answer prints as the verb's compact text, or as JSON with `--json`. `membrane events`
//! follows the event stream.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Arg, ArgAction, ArgMatches, Command};
use futures::StreamExt;
use serde_json::{Map, Value};

use crate::api::client::{Client, ClientError, ENV_API, ENV_TOKEN};
use crate::api::types::EventView;
use crate::api::verbs::{self, VerbSpec, render_event};

/// Flags every client subcommand takes.
fn client_args(cmd: Command) -> Command {
    cmd.arg(
        Arg::new("data-dir")
            .long("data-dir")
            .value_name("PATH")
            .env(crate::config::ENV_DATA_DIR)
            .help("Data directory of the node to talk to [default: the platform data dir]"),
    )
    .arg(
        Arg::new("api")
            .long("api")
            .value_name("ADDR")
            .env(ENV_API)
            .help("The node's API address, e.g. 127.0.0.1:7420 [default: from node.json in the data dir]"),
    )
    .arg(
        Arg::new("token")
            .long("token")
            .value_name("TOKEN")
            .env(ENV_TOKEN)
            .hide_env_values(true)
            .help("The API's bearer token [default: <data-dir>/api-token]"),
    )
    .arg(
        Arg::new("json")
            .long("json")
            .action(ArgAction::SetTrue)
            .help("Print the answer as JSON, for scripts"),
    )
}

/// What a schema property takes on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Text,
    Integer,
    Number,
    Bool,
    TextList,
    ObjectList,
}

fn shape(schema: &Value) -> Shape {
    let kind = |s: &Value| -> Option<String> {
        match &s["type"] {
            Value::String(t) => Some(t.clone()),
            Value::Array(ts) => ts
                .iter()
                .filter_map(Value::as_str)
                .find(|t| *t != "null")
                .map(str::to_owned),
            _ if s["enum"].is_array() => Some("string".to_owned()),
            _ => s["anyOf"]
                .as_array()
                .and_then(|any| any.iter().find(|x| x["type"] != "null"))
                .and_then(|x| x["type"].as_str().map(str::to_owned)),
        }
    };
    match kind(schema).as_deref() {
        Some("integer") => Shape::Integer,
        Some("number") => Shape::Number,
        Some("boolean") => Shape::Bool,
        Some("array") => match kind(&schema["items"]).as_deref() {
            Some("object") => Shape::ObjectList,
            _ => Shape::TextList,
        },
        _ => Shape::Text,
    }
}

/// The values an enum schema allows: `enum` lists, or `const`s under `oneOf`/`anyOf`.
fn enum_values(schema: &Value) -> Vec<String> {
    if let Some(values) = schema["enum"].as_array() {
        return values
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect();
    }
    if let Some(value) = schema["const"].as_str() {
        return vec![value.to_owned()];
    }
    ["oneOf", "anyOf"]
        .iter()
        .filter_map(|k| schema[*k].as_array())
        .flatten()
        .flat_map(enum_values)
        .collect()
}

fn properties(verb: &VerbSpec) -> (Map<String, Value>, Vec<String>) {
    let schema = (verb.request_schema)();
    let props = schema["properties"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let required = schema["required"]
        .as_array()
        .map(|r| {
            r.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    (props, required)
}

/// The subcommand of `verb`.
pub fn verb_command(verb: &'static VerbSpec) -> Command {
    let (props, required) = properties(verb);
    let mut cmd = Command::new(verb.name)
        .about(verb.summary)
        .long_about(format!(
            "{}\n\n{}\n\nExample: {}",
            verb.summary, verb.description, verb.example
        ));
    for (name, schema) in &props {
        let shape = shape(schema);
        let help = schema["description"]
            .as_str()
            .unwrap_or_default()
            .replace('\n', " ");
        let mut arg = Arg::new(name.clone()).help(help);
        if let Some(index) = verb.positional.iter().position(|p| p == name) {
            arg = arg.index(index + 1).value_name(name.to_uppercase());
            if shape == Shape::TextList || shape == Shape::ObjectList {
                arg = arg.num_args(1..).action(ArgAction::Append);
            }
            arg = arg.required(required.contains(name));
        } else {
            arg = arg.long(name.replace('_', "-"));
            arg = match shape {
                Shape::Bool => arg.action(ArgAction::SetTrue),
                Shape::TextList | Shape::ObjectList => arg
                    .action(ArgAction::Append)
                    .value_name("VALUE")
                    .required(required.contains(name)),
                _ => arg.value_name("VALUE").required(required.contains(name)),
            };
        }
        let values = enum_values(schema);
        if !values.is_empty() {
            arg = arg.value_parser(values);
        }
        cmd = cmd.arg(arg);
    }
    if verb.name == "events" {
        cmd = cmd
            .arg(
                Arg::new("no-follow")
                    .long("no-follow")
                    .action(ArgAction::SetTrue)
                    .help("Print what is in the log and exit, instead of following the stream"),
            )
            .arg(
                Arg::new("count")
                    .long("count")
                    .value_name("N")
                    .value_parser(clap::value_parser!(u64))
                    .help("Exit after N events"),
            )
            .long_about(format!(
                "{}\n\nFollows the node's Server-Sent Event stream (GET /v1/events) until \
                 interrupted, reconnecting with Last-Event-ID; --no-follow reads once.\n\n\
                 Example: membrane events --patterns 'tasks.**'\n         membrane events \
                 --subscription s000001 --json",
                verb.summary
            ));
    }
    client_args(cmd)
}

/// Turns `name=description` (or a JSON object) into an object of the item schema's first
/// two properties.
fn object_item(schema: &Value, raw: &str) -> Result<Value, String> {
    if raw.trim_start().starts_with('{') {
        return serde_json::from_str(raw).map_err(|e| format!("{raw:?} is not JSON: {e}"));
    }
    // Required fields first (`name` before `description`), then the rest.
    let item = &schema["items"];
    let required: Vec<&str> = item["required"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut fields: Vec<&String> = item["properties"]
        .as_object()
        .map(|p| p.keys().collect())
        .unwrap_or_default();
    fields.sort_by_key(|f| !required.contains(&f.as_str()));
    let (first, second) = match fields.as_slice() {
        [a, b, ..] => (a.as_str(), b.as_str()),
        [a] => (a.as_str(), ""),
        [] => return Err(format!("{raw:?}: expected a JSON object")),
    };
    let mut object = Map::new();
    match raw.split_once('=') {
        Some((a, b)) if !second.is_empty() => {
            object.insert(first.into(), Value::String(a.trim().to_owned()));
            object.insert(second.into(), Value::String(b.trim().to_owned()));
        }
        _ => {
            object.insert(first.into(), Value::String(raw.trim().to_owned()));
        }
    }
    Ok(Value::Object(object))
}

/// The request body from the parsed arguments.
pub fn request(verb: &'static VerbSpec, matches: &ArgMatches) -> Result<Value, String> {
    let (props, _) = properties(verb);
    let mut body = Map::new();
    for (name, schema) in &props {
        let value = match shape(schema) {
            Shape::Bool => matches.get_flag(name).then_some(Value::Bool(true)),
            Shape::TextList => matches
                .get_many::<String>(name)
                .map(|values| Value::Array(values.map(|v| Value::String(v.clone())).collect())),
            Shape::ObjectList => match matches.get_many::<String>(name) {
                Some(values) => Some(Value::Array(
                    values
                        .map(|v| object_item(schema, v))
                        .collect::<Result<_, _>>()
                        .map_err(|e| format!("--{}: {e}", name.replace('_', "-")))?,
                )),
                None => None,
            },
            Shape::Text => matches
                .get_one::<String>(name)
                .map(|v| Value::String(v.clone())),
            Shape::Integer => match matches.get_one::<String>(name) {
                Some(v) => Some(Value::Number(
                    v.trim()
                        .parse::<u64>()
                        .map_err(|_| {
                            format!("--{}: {v:?} is not a whole number", name.replace('_', "-"))
                        })?
                        .into(),
                )),
                None => None,
            },
            Shape::Number => match matches.get_one::<String>(name) {
                Some(v) => {
                    let n: f64 = v.trim().parse().map_err(|_| {
                        format!("{name}: {v:?} is not a number (expected e.g. 0.8)")
                    })?;
                    Some(
                        serde_json::Number::from_f64(n)
                            .map(Value::Number)
                            .ok_or_else(|| format!("{name}: {v:?} is not a finite number"))?,
                    )
                }
                None => None,
            },
        };
        if let Some(value) = value {
            body.insert(name.clone(), value);
        }
    }
    Ok(Value::Object(body))
}

fn client(matches: &ArgMatches) -> Result<Client, ClientError> {
    let data_dir = match matches.get_one::<String>("data-dir") {
        Some(dir) => crate::config::expand_home(PathBuf::from(dir)),
        None => crate::config::default_data_dir().map_err(|e| ClientError::Setup(e.to_string()))?,
    };
    Client::locate(
        matches.get_one::<String>("api").map(String::as_str),
        matches.get_one::<String>("token").map(String::as_str),
        &data_dir,
    )
}

/// Runs a verb subcommand: prints the answer, or returns the error to print.
pub async fn run(verb: &'static VerbSpec, matches: &ArgMatches) -> anyhow::Result<()> {
    let body = request(verb, matches).map_err(anyhow::Error::msg)?;
    let client = client(matches)?;
    let json = matches.get_flag("json");
    if verb.name == "events" && !matches.get_flag("no-follow") {
        return follow(&client, &body, matches, json).await;
    }
    let answer = client.call(verb.name, &body).await?;
    print_answer(verb, &answer, json);
    Ok(())
}

#[allow(clippy::print_stdout)]
fn print_answer(verb: &VerbSpec, answer: &Value, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(answer).unwrap_or_else(|_| answer.to_string())
        );
    } else {
        println!("{}", (verb.render)(answer));
    }
}

#[allow(clippy::print_stdout)]
fn print_event(event: &EventView, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::to_string(event).unwrap_or_else(|_| String::new())
        );
    } else {
        println!("{}", render_event(event));
    }
    // Followers are often piped into another program: hand each line over at once.
    let _ = std::io::Write::flush(&mut std::io::stdout());
}

async fn follow(
    client: &Client,
    body: &Value,
    matches: &ArgMatches,
    json: bool,
) -> anyhow::Result<()> {
    let mut query: Vec<(String, String)> = Vec::new();
    if let Some(patterns) = body["patterns"].as_array() {
        for p in patterns.iter().filter_map(Value::as_str) {
            query.push(("pattern".into(), p.to_owned()));
        }
    }
    if let Some(id) = body["subscription"].as_str() {
        query.push(("subscription".into(), id.to_owned()));
    }
    let mut last = body["since"].as_u64().unwrap_or(0);
    let mut left = matches.get_one::<u64>("count").copied();
    let mut failures = 0u32;
    loop {
        let encoded: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(query.iter())
            .finish();
        match client.events(&encoded, Some(last)).await {
            Ok(stream) => {
                let mut stream = std::pin::pin!(stream);
                while let Some(event) = stream.next().await {
                    let event = event?;
                    failures = 0;
                    last = event.seq;
                    print_event(&event, json);
                    if let Some(n) = &mut left {
                        *n = n.saturating_sub(1);
                        if *n == 0 {
                            return Ok(());
                        }
                    }
                }
            }
            // The API refused (bad pattern, unknown subscription): retrying will not help.
            Err(e @ ClientError::Api { .. }) => return Err(e.into()),
            Err(e) => {
                failures += 1;
                if failures >= 5 {
                    return Err(e.into());
                }
            }
        }
        // The stream ended (node restarting?): reconnect after a pause, resuming.
        tokio::time::sleep(Duration::from_millis(500 * u64::from(failures.max(1)))).await;
    }
}

/// Every verb's subcommand.
pub fn verb_commands() -> Vec<Command> {
    verbs::all().iter().map(verb_command).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(verb: &str, args: &[&str]) -> Result<Value, String> {
        let verb = verbs::find(verb).unwrap();
        let mut argv = vec![verb.name];
        argv.extend_from_slice(args);
        let matches = verb_command(verb)
            .try_get_matches_from(argv)
            .map_err(|e| e.to_string())?;
        request(verb, &matches)
    }

    #[test]
    fn every_verb_builds_a_valid_command() {
        for cmd in verb_commands() {
            cmd.debug_assert();
        }
    }

    #[test]
    fn flags_and_positionals_become_the_request() {
        let body = parse(
            "expose",
            &[
                "a.b",
                "the value",
                "--tier",
                "trusted",
                "--tags",
                "x",
                "--tags",
                "y",
                "--ttl-ms",
                "5",
            ],
        )
        .unwrap();
        assert_eq!(
            body,
            serde_json::json!({"key": "a.b", "value": "the value", "tier": "trusted",
                               "tags": ["x", "y"], "ttl_ms": 5})
        );
        let body = parse("trust", &["12D3KooWabc", "0.8"]).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"peer": "12D3KooWabc", "score": 0.8})
        );
        let body = parse("subscribe", &["a.**", "b.*"]).unwrap();
        assert_eq!(body, serde_json::json!({"patterns": ["a.**", "b.*"]}));
        let body = parse(
            "register",
            &[
                "alice",
                "--capabilities",
                "fact_check=Checks claims",
                "--capabilities",
                "search",
            ],
        )
        .unwrap();
        assert_eq!(
            body,
            serde_json::json!({"name": "alice", "capabilities": [
                {"name": "fact_check", "description": "Checks claims"}, {"name": "search"}]})
        );
        let body = parse("query", &["x.**", "--include-expired"]).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"pattern": "x.**", "include_expired": true})
        );
    }

    #[test]
    fn bad_arguments_are_named() {
        assert!(parse("expose", &["a.b"]).unwrap_err().contains("VALUE"));
        assert!(
            parse("expose", &["a", "b", "--tier", "secret"])
                .unwrap_err()
                .contains("secret")
        );
        assert!(
            parse("trust", &["p", "high"])
                .unwrap_err()
                .contains("not a number")
        );
        assert!(
            parse("search", &["x", "--max-tokens", "lots"])
                .unwrap_err()
                .contains("whole number")
        );
    }
}
