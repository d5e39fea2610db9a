//! The agent's interface: one set of verbs ([`verbs`]) behind three front doors: the HTTP
//! API ([`http`], with its OpenAPI document from [`openapi`]), the MCP server
//! (`crate::mcp`) and the CLI (`membrane <verb>`), both clients of the HTTP API through
//! [`client`].

pub mod client;
pub mod coordination;
pub mod direct;
pub mod error;
pub mod governance;
pub mod http;
pub mod intents;
pub mod mesh;
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
    use axum::serve::ListenerExt;
    // The node answers help requests for its agent while the API runs.
    let offers = tokio::spawn(mesh::auto_offer(ctx.clone()));
    // Small writes (event-stream lines) go out at once, not after a delayed ACK.
    let listener = listener.tap_io(|stream| {
        let _ = stream.set_nodelay(true);
    });
    let served = axum::serve(listener, http::router(ctx))
        .with_graceful_shutdown(shutdown)
        .await;
    offers.abort();
    served
}
