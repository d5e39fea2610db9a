//! The HTTP front door: `POST /v1/<verb>` for every verb (and `GET` for read-only ones),
//! `GET /v1/events` as Server-Sent Events, `GET /v1/openapi.json`, `GET /metrics`. Every
//! request carries the bearer token; bodies are read up to [`MAX_BODY_BYTES`] and parsed
//! strictly; every failure is a JSON error.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{RawQuery, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use futures::Stream;
use membrane_protocol::Pattern;
use tokio::sync::broadcast;

use super::error::ApiError;
use super::metrics::{RequestLabels, VerbLabels};
use super::state::{Ctx, matches};
use super::types::EventView;
use super::verbs::{self, VerbSpec, parse_patterns};

/// Largest request body, in bytes: a 16 KiB value with every character escaped as
/// `\uXXXX` still fits.
pub const MAX_BODY_BYTES: usize = 256 * 1024;
/// Events read from the log per step of an event stream.
const SSE_PAGE: usize = 256;

/// The router over `ctx`.
pub fn router(ctx: Arc<Ctx>) -> Router {
    let mut router = Router::new();
    for verb in verbs::all() {
        let path = format!("/v1/{}", verb.name);
        let call = move |State(ctx): State<Arc<Ctx>>, body: Body| call_verb(ctx, verb, body);
        let methods: MethodRouter<Arc<Ctx>> = if verb.name == "events" {
            // GET follows the stream; POST polls the log.
            post(call).get(follow_events)
        } else if verb.read_only {
            post(call).get(call)
        } else {
            post(call)
        };
        router = router.route(&path, methods);
    }
    router
        .route("/v1/openapi.json", get(openapi))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(ctx.clone(), authorize))
        .layer(middleware::from_fn_with_state(ctx.clone(), measure))
        .with_state(ctx)
}

async fn call_verb(ctx: Arc<Ctx>, verb: &'static VerbSpec, body: Body) -> Response {
    let bytes = match to_bytes(body, MAX_BODY_BYTES).await {
        Ok(bytes) => bytes,
        Err(_) => {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("the request body is over {MAX_BODY_BYTES} bytes (expected a smaller JSON object)"),
            )
            .into_response();
        }
    };
    match (verb.dispatch)(&ctx, &bytes).await {
        Ok(value) => axum::Json(value).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn openapi() -> Response {
    axum::Json(super::openapi::document()).into_response()
}

async fn metrics(State(ctx): State<Arc<Ctx>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        ctx.node.metrics().encode(),
    )
        .into_response()
}

async fn not_found(request: Request) -> Response {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "unknown_verb",
        format!(
            "no such endpoint {} (expected /v1/<verb> with one of: {}; see /v1/openapi.json)",
            request.uri().path(),
            verbs::all()
                .iter()
                .map(|v| v.name)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    )
    .into_response()
}

async fn method_not_allowed(request: Request) -> Response {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!(
            "{} is not allowed on {} (expected POST; GET only for read-only verbs)",
            request.method(),
            request.uri().path()
        ),
    )
    .into_response()
}

/// Compares in time independent of where the strings differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn authorize(State(ctx): State<Arc<Ctx>>, request: Request, next: Next) -> Response {
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match given {
        Some(token) if same(token.as_bytes(), ctx.token.as_bytes()) => next.run(request).await,
        Some(_) => {
            ctx.metrics.unauthorized.inc();
            ApiError::unauthorized(
                "wrong bearer token (expected the token in <data-dir>/api-token)",
            )
            .into_response()
        }
        None => {
            ctx.metrics.unauthorized.inc();
            ApiError::unauthorized(
                "no bearer token (expected the header Authorization: Bearer <token>, with the \
                 token from <data-dir>/api-token)",
            )
            .into_response()
        }
    }
}

/// Counts requests and their latency by verb and status.
async fn measure(State(ctx): State<Arc<Ctx>>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let verb = match path.strip_prefix("/v1/") {
        Some("openapi.json") => "openapi",
        Some(name) => verbs::find(name).map_or("unknown", |v| v.name),
        None if path == "/metrics" => "metrics",
        None => "unknown",
    };
    let start = Instant::now();
    let response = next.run(request).await;
    ctx.metrics
        .latency
        .get_or_create(&VerbLabels {
            verb: verb.to_owned(),
        })
        .observe(start.elapsed().as_secs_f64());
    ctx.metrics
        .requests
        .get_or_create(&RequestLabels {
            verb: verb.to_owned(),
            status: response.status().as_u16(),
        })
        .inc();
    response
}

/// What `GET /v1/events` accepts.
#[derive(Debug, Default)]
struct StreamParams {
    since: u64,
    patterns: Vec<Pattern>,
}

fn stream_params(
    ctx: &Ctx,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<StreamParams, ApiError> {
    let mut params = StreamParams::default();
    let mut raw_patterns = Vec::new();
    for (name, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match name.as_ref() {
            "since" => {
                params.since = value.parse().map_err(|_| {
                    ApiError::bad(
                        "invalid_request",
                        format!("since {value:?} is not a sequence number (expected e.g. 0)"),
                    )
                })?;
            }
            "pattern" => raw_patterns.push(value.into_owned()),
            "subscription" => {
                let patterns = ctx
                    .subscription(&value)
                    .ok_or_else(|| verbs::unknown_subscription(&value))?;
                params.patterns.extend(patterns);
            }
            other => {
                return Err(ApiError::bad(
                    "invalid_request",
                    format!(
                        "unknown parameter {other:?} (expected since, pattern or subscription)"
                    ),
                ));
            }
        }
    }
    params.patterns.extend(parse_patterns(&raw_patterns)?);
    // Last-Event-ID, sent by a reconnecting client, wins over `since`.
    if let Some(last) = headers.get("last-event-id") {
        let text = last.to_str().unwrap_or_default().trim();
        params.since = text.parse().map_err(|_| {
            ApiError::bad(
                "invalid_request",
                format!("Last-Event-ID {text:?} is not a sequence number (expected e.g. 42)"),
            )
        })?;
    }
    Ok(params)
}

/// Keeps the open-stream gauge right however the stream ends.
struct StreamGuard(Arc<Ctx>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.metrics.sse_streams.dec();
    }
}

struct Follow {
    guard: StreamGuard,
    wake: broadcast::Receiver<crate::node::NodeEvent>,
    since: u64,
    patterns: Vec<Pattern>,
    ready: VecDeque<EventView>,
}

async fn follow_events(
    State(ctx): State<Arc<Ctx>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let params = stream_params(&ctx, &headers, query.as_deref())?;
    // Subscribe before reading the log, so nothing falls between the two.
    let wake = ctx.node.subscribe();
    ctx.metrics.sse_streams.inc();
    let state = Follow {
        guard: StreamGuard(ctx),
        wake,
        since: params.since,
        patterns: params.patterns,
        ready: VecDeque::new(),
    };
    let stream = futures::stream::unfold(state, |mut s| async move {
        loop {
            if let Some(view) = s.ready.pop_front() {
                let event = SseEvent::default()
                    .id(view.seq.to_string())
                    .event(view.kind.clone())
                    .json_data(&view)
                    .unwrap_or_else(|_| SseEvent::default().comment("unencodable event"));
                return Some((Ok(event), s));
            }
            // The log is the source of truth; node events only wake us up.
            let page = s.guard.0.node.events_since(s.since, SSE_PAGE).await.ok()?;
            if let Some(last) = page.last() {
                s.since = last.seq;
                s.ready.extend(
                    page.iter()
                        .map(EventView::from)
                        .filter(|v| matches(&s.patterns, v)),
                );
                continue;
            }
            match s.wake.recv().await {
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
