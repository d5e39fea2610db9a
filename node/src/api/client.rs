//! A client of the agent API, for the CLI and the MCP server: `call` a verb, or follow the
//! event stream. It finds the node the way a user would expect: `--api`/`MEMBRANE_API`
//! and `--token`/`MEMBRANE_TOKEN` first, then `node.json` and `api-token` in the data dir.

use std::path::Path;
use std::time::Duration;

use futures::{Stream, StreamExt};
use serde_json::Value;

use super::types::{ErrorBody, EventView};

/// Environment variable naming the API address (`127.0.0.1:7420` or a URL).
pub const ENV_API: &str = "MEMBRANE_API";
/// Environment variable holding the bearer token.
pub const ENV_TOKEN: &str = "MEMBRANE_TOKEN";
/// Largest answer the client reads, in bytes.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024 * 1024;
/// Largest single server-sent event the client buffers.
pub const MAX_SSE_EVENT_BYTES: usize = 1024 * 1024;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The API answered with an error.
    #[error("{message} ({code}, HTTP {status})")]
    Api {
        /// HTTP status.
        status: u16,
        /// The API's error code.
        code: String,
        /// The API's message.
        message: String,
    },
    /// The node could not be reached.
    #[error(
        "cannot reach the membrane node at {base}: {detail} (is `membrane node` running? \
         point at it with --data-dir, --api or MEMBRANE_API)"
    )]
    Connect {
        /// Where we looked.
        base: String,
        /// What failed.
        detail: String,
    },
    /// The answer was not what the API promises.
    #[error("unexpected answer from {base}: {detail}")]
    Protocol {
        /// The API.
        base: String,
        /// What was wrong.
        detail: String,
    },
    /// The client could not be set up (no token, bad address).
    #[error("{0}")]
    Setup(String),
}

/// A client of one node's API.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("Client")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

fn base_url(addr: &str) -> String {
    let addr = addr.trim().trim_end_matches('/');
    if addr.starts_with("http://") || addr.starts_with("https://") {
        addr.to_owned()
    } else {
        format!("http://{addr}")
    }
}

impl Client {
    /// A client of the API at `addr` (`127.0.0.1:7420` or `http://…`) with `token`.
    pub fn new(addr: &str, token: &str) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .no_proxy()
            .build()
            .map_err(|e| ClientError::Setup(format!("cannot build an HTTP client: {e}")))?;
        Ok(Self {
            http,
            base: base_url(addr),
            token: token.trim().to_owned(),
        })
    }

    /// Finds the node: `api` and `token` if given (the CLI passes its flags, which clap
    /// fills from `MEMBRANE_API`/`MEMBRANE_TOKEN`), else the data dir's `node.json` and
    /// `api-token`.
    pub fn locate(
        api: Option<&str>,
        token: Option<&str>,
        data_dir: &Path,
    ) -> Result<Self, ClientError> {
        let addr = match api {
            Some(api) => api.to_owned(),
            None => match crate::info::read(data_dir) {
                Ok(info) if !info.api.is_empty() => info.api,
                Ok(_) | Err(_) => {
                    return Err(ClientError::Setup(format!(
                        "no running node found in {} (no node.json with an API address); start \
                         one with `membrane node --data-dir {}`, or pass --api / set {ENV_API}",
                        data_dir.display(),
                        data_dir.display()
                    )));
                }
            },
        };
        let token = match token {
            Some(token) => token.to_owned(),
            None => super::token::read(data_dir).map_err(|e| {
                ClientError::Setup(format!("{e} (or pass --token / set {ENV_TOKEN})"))
            })?,
        };
        Self::new(&addr, &token)
    }

    /// The API's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn connect_error(&self, e: &reqwest::Error) -> ClientError {
        ClientError::Connect {
            base: self.base.clone(),
            detail: e.to_string(),
        }
    }

    async fn error_from(&self, response: reqwest::Response) -> ClientError {
        let status = response.status().as_u16();
        match response.json::<ErrorBody>().await {
            Ok(body) => ClientError::Api {
                status,
                code: body.error,
                message: body.message,
            },
            Err(e) => ClientError::Protocol {
                base: self.base.clone(),
                detail: format!("HTTP {status} without an error body: {e}"),
            },
        }
    }

    /// Calls `verb` with `body`, returning the answer as JSON.
    pub async fn call(&self, verb: &str, body: &Value) -> Result<Value, ClientError> {
        let response = self
            .http
            .post(format!("{}/v1/{verb}", self.base))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await
            .map_err(|e| self.connect_error(&e))?;
        if !response.status().is_success() {
            return Err(self.error_from(response).await);
        }
        if response
            .content_length()
            .is_some_and(|n| n > MAX_ANSWER_BYTES as u64)
        {
            return Err(ClientError::Protocol {
                base: self.base.clone(),
                detail: format!("an answer over {MAX_ANSWER_BYTES} bytes"),
            });
        }
        response.json().await.map_err(|e| ClientError::Protocol {
            base: self.base.clone(),
            detail: e.to_string(),
        })
    }

    /// Follows `GET /v1/events` with `query` (e.g. `subscription=s000001&since=4`),
    /// resuming after `last_event_id` if given.
    pub async fn events(
        &self,
        query: &str,
        last_event_id: Option<u64>,
    ) -> Result<impl Stream<Item = Result<EventView, ClientError>> + use<>, ClientError> {
        let mut request = self
            .http
            .get(format!("{}/v1/events?{query}", self.base))
            .bearer_auth(&self.token)
            .header("accept", "text/event-stream");
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id.to_string());
        }
        let response = request.send().await.map_err(|e| self.connect_error(&e))?;
        if !response.status().is_success() {
            return Err(self.error_from(response).await);
        }
        let base = self.base.clone();
        let bytes = response.bytes_stream();
        let state = (bytes, SseParser::default(), Vec::<EventView>::new(), base);
        Ok(futures::stream::unfold(
            state,
            |(mut bytes, mut parser, mut ready, base)| async move {
                loop {
                    if !ready.is_empty() {
                        let event = ready.remove(0);
                        return Some((Ok(event), (bytes, parser, ready, base)));
                    }
                    let chunk = match bytes.next().await? {
                        Ok(chunk) => chunk,
                        Err(e) => {
                            let err = ClientError::Connect {
                                base: base.clone(),
                                detail: e.to_string(),
                            };
                            return Some((Err(err), (bytes, parser, ready, base)));
                        }
                    };
                    match parser.push(&chunk) {
                        Ok(messages) => {
                            for data in messages {
                                match serde_json::from_str::<EventView>(&data) {
                                    Ok(event) => ready.push(event),
                                    Err(e) => {
                                        let err = ClientError::Protocol {
                                            base: base.clone(),
                                            detail: format!("an event that is not JSON: {e}"),
                                        };
                                        return Some((Err(err), (bytes, parser, ready, base)));
                                    }
                                }
                            }
                        }
                        Err(detail) => {
                            let err = ClientError::Protocol {
                                base: base.clone(),
                                detail,
                            };
                            return Some((Err(err), (bytes, parser, ready, base)));
                        }
                    }
                }
            },
        ))
    }
}

/// Splits a `text/event-stream` into the `data` of each event; comments (keep-alives) and
/// other fields are skipped.
#[derive(Debug, Default)]
pub struct SseParser {
    buffer: Vec<u8>,
}

impl SseParser {
    /// Feeds bytes; returns the data of every event completed by them.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<String>, String> {
        self.buffer.extend_from_slice(chunk);
        let mut out = Vec::new();
        while let Some(end) = find_blank_line(&self.buffer) {
            let block: Vec<u8> = self.buffer.drain(..end.1).collect();
            let text = String::from_utf8_lossy(&block[..end.0]);
            let mut data: Option<String> = None;
            for line in text.lines() {
                if let Some(rest) = line.strip_prefix("data:") {
                    let rest = rest.strip_prefix(' ').unwrap_or(rest);
                    match &mut data {
                        Some(d) => {
                            d.push('\n');
                            d.push_str(rest);
                        }
                        None => data = Some(rest.to_owned()),
                    }
                }
            }
            out.extend(data);
        }
        if self.buffer.len() > MAX_SSE_EVENT_BYTES {
            return Err(format!("an event over {MAX_SSE_EVENT_BYTES} bytes"));
        }
        Ok(out)
    }
}

/// The end of the first event block: (end of its text, end including the blank line).
fn find_blank_line(buffer: &[u8]) -> Option<(usize, usize)> {
    let lf = buffer
        .windows(2)
        .position(|w| w == b"\n\n")
        .map(|i| (i, i + 2));
    let crlf = buffer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, i + 4));
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_events_split_across_chunks() {
        let mut parser = SseParser::default();
        assert!(
            parser
                .push(b": keep-alive\n\nid: 1\nevent: x\nda")
                .unwrap()
                .is_empty()
        );
        let got = parser
            .push(b"ta: {\"a\":1}\n\nid: 2\ndata: b\ndata: c\n\n")
            .unwrap();
        assert_eq!(got, vec!["{\"a\":1}".to_owned(), "b\nc".to_owned()]);
        assert!(parser.push(b"data: crlf\r\n\r\n").unwrap() == vec!["crlf".to_owned()]);
    }

    #[test]
    fn an_endless_event_is_refused() {
        let mut parser = SseParser::default();
        let chunk = vec![b'a'; MAX_SSE_EVENT_BYTES + 1];
        assert!(parser.push(&chunk).is_err());
    }

    #[test]
    fn addresses_become_urls() {
        assert_eq!(base_url("127.0.0.1:7420"), "http://127.0.0.1:7420");
        assert_eq!(base_url("http://localhost:1/"), "http://localhost:1");
    }
}
