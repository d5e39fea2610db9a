//! A real node in this process (libp2p memory transport, in-memory storage) with its real
//! HTTP API served on `127.0.0.1:0`, driven through the agent's client, and a follower of
//! its event stream (`GET /v1/events`) that waits for conditions without sleeping.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use membrane_crdt::MemoryStorage;
use membrane_node::api::client::Client;
use membrane_node::api::types::EventView;
use membrane_node::api::{Ctx, serve};
use membrane_node::{Node, NodeHandle, NodeOptions};
use membrane_protocol::cost::TokenCounter;
use membrane_protocol::{Keypair, Space};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Any 64 hex digits will do: the API only compares the bearer token.
const TOKEN: &str = "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a";

/// The keypair of node `index` in a run with `seed`: the same seed gives the same ids.
pub fn keypair(seed: u64, index: usize) -> Keypair {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    bytes[8..16].copy_from_slice(&(index as u64 + 1).to_le_bytes());
    bytes[16] = 0x6d;
    Keypair::from_seed(&bytes)
}

/// Everything the event stream has delivered so far, and a counter that moves with it.
#[derive(Debug)]
struct Log {
    events: Mutex<Vec<EventView>>,
    count: watch::Sender<usize>,
}

/// A node with its API, the agent's client of it, and a follower of its event stream.
#[derive(Debug)]
pub struct ApiNode {
    /// The node (used for the mesh set-up and metrics only; agents use `client`).
    pub handle: NodeHandle,
    /// The agent's client of the node's HTTP API.
    pub client: Client,
    /// The node's peer id, as the API spells it.
    pub peer: String,
    /// `/memory/…/p2p/…` addresses it listens on.
    pub addrs: Vec<String>,
    log: Arc<Log>,
    task: JoinHandle<()>,
    server: JoinHandle<std::io::Result<()>>,
    follower: JoinHandle<()>,
    stop: oneshot::Sender<()>,
}

impl ApiNode {
    /// Starts a node in `space` (its home space) dialing `bootstrap`, serves its API and
    /// starts following its event stream from the first event.
    pub async fn start(
        keypair: Keypair,
        space: &Space,
        bootstrap: &[String],
        tokens: Arc<dyn TokenCounter>,
    ) -> anyhow::Result<Self> {
        Self::start_with(keypair, space, bootstrap, tokens, |_| {}).await
    }

    /// [`ApiNode::start`], with `configure` adjusting the node's options first.
    pub async fn start_with(
        keypair: Keypair,
        space: &Space,
        bootstrap: &[String],
        tokens: Arc<dyn TokenCounter>,
        configure: impl FnOnce(&mut NodeOptions),
    ) -> anyhow::Result<Self> {
        let mut options = NodeOptions::memory(keypair);
        configure(&mut options);
        options.spaces = vec![space.clone()];
        options.bootstrap = bootstrap
            .iter()
            .map(|a| a.parse())
            .collect::<Result<_, _>>()?;
        let (handle, task) =
            Node::spawn(options, MemoryStorage::new(), Arc::clone(&tokens)).await?;
        let ctx = Arc::new(Ctx::new(
            handle.clone(),
            space.clone(),
            tokens,
            TOKEN.to_owned(),
            None,
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, ctx, async move {
            let _ = stopped.await;
        }));
        let client = Client::new(&addr.to_string(), TOKEN)?;
        let (count, _) = watch::channel(0usize);
        let log = Arc::new(Log {
            events: Mutex::new(Vec::new()),
            count,
        });
        let stream = client.events("since=0", None).await?;
        let follower = {
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                let mut stream = Box::pin(stream);
                while let Some(Ok(event)) = stream.next().await {
                    lock(&log.events).push(event);
                    log.count.send_modify(|n| *n += 1);
                }
            })
        };
        let peer = handle.id().to_string();
        let addrs = handle.listening().await?;
        Ok(Self {
            handle,
            client,
            peer,
            addrs,
            log,
            task,
            server,
            follower,
            stop,
        })
    }

    /// Calls `verb` through the agent API.
    pub async fn call(
        &self,
        verb: &str,
        body: serde_json::Value,
    ) -> Result<serde_json::Value, membrane_node::api::client::ClientError> {
        self.client.call(verb, &body).await
    }

    /// The events the stream has delivered so far.
    pub fn events(&self) -> Vec<EventView> {
        lock(&self.log.events).clone()
    }

    /// How many events so far match `pred`.
    pub fn count_events(&self, pred: impl Fn(&EventView) -> bool) -> usize {
        lock(&self.log.events).iter().filter(|e| pred(e)).count()
    }

    /// Waits until `check` gives a value, re-checking after every event this node's stream
    /// delivers; fails naming `what` after `deadline`. Never sleeps.
    pub async fn until<T, F, Fut>(
        &self,
        what: &str,
        deadline: Duration,
        mut check: F,
    ) -> anyhow::Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = anyhow::Result<Option<T>>>,
    {
        let mut seen = self.log.count.subscribe();
        let end = Instant::now() + deadline;
        loop {
            seen.borrow_and_update();
            if let Some(value) = check().await? {
                return Ok(value);
            }
            match tokio::time::timeout_at(end, seen.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => anyhow::bail!("the event stream closed while waiting for {what}"),
                Err(_) => anyhow::bail!("timed out after {deadline:?} waiting for {what}"),
            }
        }
    }

    /// Waits for an event matching `pred` on this node's stream and returns it.
    pub async fn wait_event(
        &self,
        what: &str,
        deadline: Duration,
        pred: impl Fn(&EventView) -> bool,
    ) -> anyhow::Result<EventView> {
        let pred = &pred;
        self.until(what, deadline, || async move {
            Ok(lock(&self.log.events).iter().find(|e| pred(e)).cloned())
        })
        .await
    }

    /// Waits until the node has at least `n` connected peers, on its own events.
    pub async fn wait_peers(&self, n: usize, deadline: Duration) -> anyhow::Result<()> {
        let mut events = self.handle.subscribe();
        let end = Instant::now() + deadline;
        loop {
            if self.handle.peers().await?.len() >= n {
                return Ok(());
            }
            match tokio::time::timeout_at(end, events.recv()).await {
                Ok(Ok(_) | Err(RecvError::Lagged(_))) => {}
                Ok(Err(RecvError::Closed)) => {
                    anyhow::bail!("node {} stopped while waiting for peers", self.peer)
                }
                Err(_) => {
                    anyhow::bail!(
                        "node {} has fewer than {n} peers after {deadline:?}",
                        self.peer
                    )
                }
            }
        }
    }

    /// Stops the API, the follower and the node.
    pub async fn stop(self) {
        let Self {
            handle,
            client,
            task,
            server,
            follower,
            stop,
            ..
        } = self;
        drop(client);
        let _ = stop.send(());
        follower.abort();
        let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
        handle.shutdown().await;
        drop(handle);
        let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
