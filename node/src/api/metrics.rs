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

/// Labels naming a space (one the node joined: at most `config::MAX_SPACES`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct SpaceLabels {
    pub(crate) space: String,
}

/// Labels naming a budget: `agent`, or `space:<name>` for a configured space budget.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct BudgetLabels {
    pub(crate) budget: String,
}

/// The API's metrics, registered in the node's registry.
#[derive(Debug)]
pub(crate) struct Metrics {
    pub(crate) requests: Family<RequestLabels, Counter>,
    pub(crate) latency: Family<VerbLabels, Histogram>,
    pub(crate) unauthorized: Counter,
    pub(crate) tokens_charged: Counter,
    pub(crate) budget_refusals: Counter,
    pub(crate) space_tokens: Family<SpaceLabels, Counter>,
    pub(crate) budget_used: Family<BudgetLabels, Gauge>,
    pub(crate) budget_limit: Family<BudgetLabels, Gauge>,
    pub(crate) budget_warnings: Family<BudgetLabels, Counter>,
    pub(crate) sse_streams: Gauge,
}

impl Metrics {
    pub(crate) fn new(registry: &mut Registry) -> Self {
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
            "Answers refused because a halt budget (the agent's or a space's) was spent",
            budget_refusals.clone(),
        );
        let space_tokens = Family::<SpaceLabels, Counter>::default();
        registry.register(
            "space_tokens_charged",
            "Tokens of answers that crossed into the agent's context, by space",
            space_tokens.clone(),
        );
        let budget_used = Family::<BudgetLabels, Gauge>::default();
        registry.register(
            "budget_used_tokens",
            "Tokens used in the current window, by budget (agent, space:<name>)",
            budget_used.clone(),
        );
        let budget_limit = Family::<BudgetLabels, Gauge>::default();
        registry.register(
            "budget_limit_tokens",
            "Tokens allowed per window, by budget (agent, space:<name>)",
            budget_limit.clone(),
        );
        let budget_warnings = Family::<BudgetLabels, Counter>::default();
        registry.register(
            "budget_warnings",
            "Warn budgets spent in a window (answers still crossed), by budget",
            budget_warnings.clone(),
        );
        let sse_streams = Gauge::default();
        registry.register(
            "api_event_streams",
            "Open Server-Sent Event streams",
            sse_streams.clone(),
        );
        Self {
            requests,
            latency,
            unauthorized,
            tokens_charged,
            budget_refusals,
            space_tokens,
            budget_used,
            budget_limit,
            budget_warnings,
            sse_streams,
        }
    }
}
