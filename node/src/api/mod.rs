//! The agent's interface: one set of verbs ([`verbs`]) behind three front doors: the HTTP
//! API ([`http`], with its OpenAPI document from [`openapi`]), the MCP server
//! (`crate::mcp`) and the CLI (`membrane <verb>`), both clients of the HTTP API through
//! [`client`].

pub mod client;
pub mod coordination;
pub mod error;
pub mod http;
pub(crate) mod metrics;
pub mod openapi;
pub mod state;
pub mod token;
pub mod types;
pub mod verbs;

pub use error::ApiError;
pub use state::Ctx;

use std::future::Future;
use std::sync::Arc;

/// Serves the API on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    ctx: Arc<Ctx>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, http::router(ctx))
        .with_graceful_shutdown(shutdown)
        .await
}
