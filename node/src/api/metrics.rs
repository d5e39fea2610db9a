//! Prometheus metrics of the agent API, served at `GET /metrics` (with the same bearer
//! token). Label values come from our own verb list and status codes, never from the
//! request, so their number is bounded.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of a request.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RequestLabels {
    /// The verb, or `events`, `openapi`, `metrics`, `unknown`.
    pub(crate) verb: String,
    /// The status code.
    pub(crate) status: u16,
}

/// Labels naming a verb.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct VerbLabels {
    pub(crate) verb: String,
}

/// The API's metrics.
#[derive(Debug)]
pub(crate) struct Metrics {
    pub(crate) registry: Registry,
    pub(crate) requests: Family<RequestLabels, Counter>,
    pub(crate) latency: Family<VerbLabels, Histogram>,
    pub(crate) unauthorized: Counter,
    pub(crate) tokens_charged: Counter,
    pub(crate) budget_refusals: Counter,
    pub(crate) sse_streams: Gauge,
    pub(crate) peers: Gauge,
    pub(crate) last_event: Gauge,
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let mut registry = Registry::with_prefix("membrane");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "api_requests",
            "API requests by verb and status code",
            requests.clone(),
        );
        let latency = Family::<VerbLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0001, 2.0, 18))
        });
        registry.register(
            "api_request_seconds",
            "Time to answer an API request, by verb",
            latency.clone(),
        );
        let unauthorized = Counter::default();
        registry.register(
            "api_unauthorized",
            "Requests refused for a missing or wrong bearer token",
            unauthorized.clone(),
        );
        let tokens_charged = Counter::default();
        registry.register(
            "tokens_charged",
            "Tokens of answers that crossed into the agent's context",
            tokens_charged.clone(),
        );
        let budget_refusals = Counter::default();
        registry.register(
            "budget_refusals",
            "Answers refused because the agent's halt budget was spent",
            budget_refusals.clone(),
        );
        let sse_streams = Gauge::default();
        registry.register(
            "api_event_streams",
            "Open Server-Sent Event streams",
            sse_streams.clone(),
        );
        let peers = Gauge::default();
        registry.register("peers", "Connected peers", peers.clone());
        let last_event = Gauge::default();
        registry.register(
            "last_event",
            "Sequence number of the node's newest event",
            last_event.clone(),
        );
        Self {
            registry,
            requests,
            latency,
            unauthorized,
            tokens_charged,
            budget_refusals,
            sse_streams,
            peers,
            last_event,
        }
    }

    /// The text exposition format.
    pub(crate) fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
