//! API errors: a status code and `{ "error": "<code>", "message": "…" }`. Every bad input
//! maps to a 4xx with a message naming what was wrong and what was expected; 5xx is kept
//! for the node's own failures.

use super::types::{BreakerView, BudgetResponse, ErrorBody};
use crate::budget::{Refusal, Scope};
use crate::node::NodeError;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// Why an API call failed.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// A stable, machine-readable code.
    pub code: &'static str,
    /// What was wrong and what was expected.
    pub message: String,
    /// The budget, for 429.
    pub budget: Option<Box<BudgetResponse>>,
    /// The circuit breaker, for a refused delegation.
    pub breaker: Option<Box<BreakerView>>,
}

impl ApiError {
    /// A 4xx or 5xx with `code` and `message`.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            budget: None,
            breaker: None,
        }
    }

    /// 400 with `code`.
    pub fn bad(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 401.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 429 with the state of the budget that refused (the agent's, or a space's).
    pub fn budget(refusal: &Refusal) -> Self {
        let mut budget = BudgetResponse::from_state(refusal.exceeded.state(), refusal.total);
        if let Scope::Space(space) = &refusal.scope {
            budget.space = Some(space.to_string());
        }
        Self {
            status: StatusCode::TOO_MANY_REQUESTS,
            code: "budget_exhausted",
            message: refusal.to_string(),
            budget: Some(Box::new(budget)),
            breaker: None,
        }
    }

    /// 409 naming the circuit breaker that refused a delegation.
    pub fn breaker(blocked: &membrane_immune::Blocked) -> Self {
        Self {
            status: StatusCode::CONFLICT,
            code: "breaker_open",
            message: blocked.to_string(),
            budget: None,
            breaker: Some(Box::new(BreakerView::new(&blocked.key, &blocked.state))),
        }
    }

    /// The JSON body.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: self.code.to_owned(),
            message: self.message.clone(),
            budget: self.budget.as_deref().cloned(),
            breaker: self.breaker.as_deref().cloned(),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

impl std::error::Error for ApiError {}

impl From<NodeError> for ApiError {
    fn from(e: NodeError) -> Self {
        match &e {
            NodeError::Invalid(_) => Self::bad("invalid_request", e.to_string()),
            NodeError::UnknownSpace(_) => {
                Self::new(StatusCode::NOT_FOUND, "unknown_space", e.to_string())
            }
            NodeError::NotFound(_) => Self::new(StatusCode::NOT_FOUND, "not_found", e.to_string()),
            NodeError::Dial { .. } => Self::bad("invalid_request", e.to_string()),
            NodeError::Stopped => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the node is shutting down",
            ),
            NodeError::Paused => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "paused", e.to_string())
            }
            NodeError::Blocked(blocked) => Self::breaker(blocked),
            NodeError::UnknownAgent(_) => {
                Self::new(StatusCode::NOT_FOUND, "unknown_agent", e.to_string())
            }
            NodeError::Unreachable { .. } => {
                Self::new(StatusCode::BAD_GATEWAY, "unreachable", e.to_string())
            }
            NodeError::Timeout { .. } => {
                Self::new(StatusCode::GATEWAY_TIMEOUT, "timeout", e.to_string())
            }
            _ => Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status;
        (status, axum::Json(self.body())).into_response()
    }
}
