//! Direct messages in the event loop (`/membrane/direct/1`): sending one and routing its
//! acknowledgement back to the caller, and receiving one: the sender's standing and rate
//! (before decoding), the envelope and its signature, the accept rules
//! ([`crate::network::direct::Inbox`]), the agent's token budget, then the agent's event
//! log, and only then the acknowledgement. Refusals are typed and counted by reason.

use std::collections::HashMap;
use std::sync::Arc;

use libp2p::PeerId;
use libp2p::request_response::{self, OutboundFailure, OutboundRequestId, ResponseChannel};
use membrane_crdt::{EventKind, Storage};
use membrane_immune::{Observation, content_hash};
use membrane_protocol::cost::{BudgetExceeded, TokenCounter};
use membrane_protocol::envelope::EnvelopeError;
use membrane_protocol::signals::{DirectMessage, MAX_EVIDENCE_BYTES};
use membrane_protocol::{Envelope, EnvelopeId, PublicKey, Space};
use tracing::{debug, trace, warn};

use super::{Service, ThreatContext, envelope_fault, now_ms};
use crate::budget::{Meter, Scope};
use crate::metrics::DirectLabels;
use crate::network::behaviour::DIRECT_TIMEOUT;
use crate::network::direct::{Admitted, Facts, Inbox, Policy, Standing};
use crate::network::direct_codec::{
    DirectAck, DirectRequest, MAX_DIRECT_REQUEST_BYTES, Reason, Refusal, open_request,
};
use crate::node::{Delivery, EventFilter, NodeError, Outgoing, Reply};

/// Direct messages of this agent waiting for their acknowledgement, at most.
pub(crate) const MAX_PENDING_SENDS: usize = 256;

/// A message sent, waiting for its acknowledgement.
struct Pending {
    reply: Reply<Delivery>,
    id: EnvelopeId,
    message: DirectMessage,
}

/// The event loop's direct-message state.
pub(super) struct Direct {
    inbox: Inbox,
    tokens: Arc<dyn TokenCounter>,
    meter: Meter,
    // Looked up by id only, never iterated: a HashMap is fine (the id is not Ord).
    pending: HashMap<OutboundRequestId, Pending>,
}

impl Direct {
    pub(super) fn new(policy: Policy, tokens: Arc<dyn TokenCounter>, meter: Meter) -> Self {
        Self {
            inbox: Inbox::new(policy),
            tokens,
            meter,
            pending: HashMap::new(),
        }
    }
}

fn malformed(e: &EnvelopeError) -> Refusal {
    match e {
        EnvelopeError::FromTheFuture { .. } => Refusal::new(Reason::Stale, e.to_string()),
        _ => Refusal::new(Reason::Malformed, e.to_string()),
    }
}

fn budget_refusal(refused: &crate::budget::Refusal, now: u64) -> Refusal {
    let exceeded = &refused.exceeded;
    let whose = match &refused.scope {
        Scope::Agent => "the receiving agent's".to_owned(),
        Scope::Space(space) => format!("the receiving agent's space {space}:"),
    };
    let refusal = Refusal::new(Reason::BudgetExhausted, format!("{whose} {exceeded}"));
    match (exceeded, exceeded.state().resets_at_ms) {
        (BudgetExceeded::Exhausted { .. }, Some(at)) => refusal.retry_after(at.saturating_sub(now)),
        _ => refusal,
    }
}

impl<S: Storage + Send + 'static> Service<S> {
    /// Seals `out`, sends it and keeps `reply` for the acknowledgement.
    pub(super) fn send_direct(&mut self, out: Outgoing, reply: Reply<Delivery>) {
        match self.dispatch_direct(out) {
            Ok((request, id, message)) => {
                self.direct
                    .pending
                    .insert(request, Pending { reply, id, message });
            }
            Err(e) => {
                if matches!(e, NodeError::UnknownAgent(_)) {
                    self.count_failed("unknown_agent");
                }
                let _ = reply.send(Err(e));
            }
        }
    }

    fn dispatch_direct(
        &mut self,
        out: Outgoing,
    ) -> Result<(OutboundRequestId, EnvelopeId, DirectMessage), NodeError> {
        if out.to == self.me() {
            return Err(NodeError::Invalid(
                "a direct message to yourself (expected another agent's id)".into(),
            ));
        }
        if !self.medium.spaces().any(|s| s == &out.space) {
            return Err(NodeError::UnknownSpace(out.space));
        }
        if self.direct.pending.len() >= MAX_PENDING_SENDS {
            return Err(NodeError::Invalid(format!(
                "{MAX_PENDING_SENDS} direct messages are waiting for their acknowledgements \
                 (expected fewer in flight: wait for some to be answered)"
            )));
        }
        if !self.knows(&out.to) {
            return Err(NodeError::UnknownAgent(out.to));
        }
        let message = DirectMessage {
            space: out.space,
            to: out.to,
            message: out.message,
            reply_to: out.reply_to,
            entry: out.entry,
        };
        let envelope = Envelope::seal(&self.keypair, now_ms(), &message)
            .map_err(|e| NodeError::Invalid(e.to_string()))?;
        let id = envelope.id();
        let request = self.swarm.behaviour_mut().direct.send_request(
            &out.to.to_peer_id(),
            DirectRequest::Frame(envelope.to_bytes()),
        );
        trace!(to = %out.to, %id, "direct message sent");
        Ok((request, id, message))
    }

    /// Whether this node knows `peer` at all: connected, a capability ad or card from it,
    /// or an entry in the DHT's routing table (which gives an address to dial).
    fn knows(&mut self, peer: &PublicKey) -> bool {
        let peer_id = peer.to_peer_id();
        if self.connected.contains(&peer_id) || self.ads.keys().any(|(k, _)| k == peer) {
            return true;
        }
        let spaces: Vec<Space> = self.medium.spaces().cloned().collect();
        let carded = spaces.iter().any(|space| {
            self.medium
                .index(space)
                .is_some_and(|index| membrane_crdt::coord::cards(index).contains_key(peer))
        });
        carded
            || self.swarm.behaviour_mut().kad.as_mut().is_some_and(|kad| {
                kad.kbuckets()
                    .any(|bucket| bucket.iter().any(|e| e.node.key.preimage() == &peer_id))
            })
    }

    /// Every event of the direct-message protocol.
    pub(super) fn on_direct(&mut self, event: request_response::Event<DirectRequest, DirectAck>) {
        match event {
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
                ..
            } => self.on_direct_request(peer, &request, channel),
            request_response::Event::Message {
                message:
                    request_response::Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => self.on_direct_ack(request_id, response),
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => self.on_direct_failure(peer, request_id, &error),
            request_response::Event::InboundFailure { peer, error, .. } => {
                debug!(%peer, %error, "direct message not answered");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    fn on_direct_request(
        &mut self,
        peer: PeerId,
        request: &DirectRequest,
        channel: ResponseChannel<DirectAck>,
    ) {
        let now = now_ms();
        let ack = match self.admit_direct(peer, request, now) {
            Ok((tokens, duplicate)) => {
                if !duplicate {
                    self.metrics.direct_received.inc();
                }
                DirectAck {
                    id: request.id(),
                    tokens,
                    duplicate,
                    refused: None,
                }
            }
            Err(refusal) => {
                debug!(%peer, reason = %refusal.reason, detail = %refusal.detail, "direct message refused");
                self.metrics
                    .direct_refused
                    .get_or_create(&DirectLabels {
                        direction: "in",
                        reason: refusal.reason.name(),
                    })
                    .inc();
                DirectAck {
                    id: request.id(),
                    tokens: 0,
                    duplicate: false,
                    refused: Some(refusal),
                }
            }
        };
        if self
            .swarm
            .behaviour_mut()
            .direct
            .send_response(channel, ack)
            .is_err()
        {
            debug!(%peer, "direct acknowledgement dropped: the peer went away");
        }
    }

    /// Decides on one request; on acceptance the message is on the agent's event log
    /// (durably) before this returns. Answers (tokens, duplicate) or the refusal.
    fn admit_direct(
        &mut self,
        peer: PeerId,
        request: &DirectRequest,
        now: u64,
    ) -> Result<(u64, bool), Refusal> {
        let sender = PublicKey::from_peer_id(&peer).map_err(|e| {
            Refusal::new(
                Reason::Malformed,
                format!("peer {peer} has no usable key: {e}"),
            )
        })?;
        let standing = if self.defences.is_quarantined(&sender) {
            Standing::Quarantined
        } else if !self.defences.admits(&sender, now) {
            Standing::ShutOut
        } else {
            Standing::Good
        };
        let paused = self.defences.paused();
        self.direct.inbox.gate(&sender, paused, standing, now)?;
        let DirectRequest::Frame(bytes) = request else {
            return Err(Refusal::new(
                Reason::TooLarge,
                format!("the request is over {MAX_DIRECT_REQUEST_BYTES} bytes"),
            ));
        };
        let (envelope, message) = match open_request(bytes, &sender, now) {
            Ok(opened) => opened,
            Err(e) => {
                // Forged or undecodable: the sender's doing (the connection is its own).
                if let Some(fault) = envelope_fault(&e) {
                    let content = content_hash(bytes);
                    let mut context = ThreatContext::default();
                    if bytes.len() <= MAX_EVIDENCE_BYTES {
                        context.evidence.insert(content, bytes.clone());
                    }
                    self.observe(
                        Observation::Rejected {
                            peer: sender,
                            author: None,
                            content,
                            fault,
                        },
                        &context,
                    );
                }
                return Err(malformed(&e));
            }
        };
        let id = envelope.id();
        let me = self.me();
        let joined = self.medium.spaces().any(|s| s == &message.space);
        let trust = self.medium.trust(&message.space);
        let facts = Facts {
            me,
            joined,
            trust: trust
                .edges_from(&me)
                .find(|(to, _)| **to == sender)
                .map(|(_, score)| score),
            threshold: trust.threshold(),
        };
        let judged = self.direct.inbox.judge(
            &sender,
            &id,
            envelope.created_at_ms(),
            &message,
            &facts,
            now,
        )?;
        if let Admitted::Duplicate { tokens } = judged {
            return Ok((tokens, true));
        }
        let tokens = self.direct.tokens.count(&message.message) as u64;
        self.direct
            .meter
            .lock()
            .check(&message.space, tokens, now)
            .map_err(|refused| budget_refusal(&refused, now))?;
        let space = message.space.clone();
        self.medium
            .note(EventKind::Direct {
                space: message.space,
                id,
                from: sender,
                to: me,
                reply_to: message.reply_to,
                entry: message.entry,
                message: message.message,
                tokens,
                at_ms: now,
            })
            .map_err(|e| {
                warn!(error = %e, "cannot log a direct message");
                Refusal::new(Reason::Unavailable, "the receiver could not record it")
            })?;
        let charged = self.direct.meter.lock().charge(&space, tokens, now);
        for c in charged.iter().filter(|c| c.warn) {
            warn!(
                budget = %c.scope.label(),
                used = c.state.used,
                limit = c.state.limit,
                "a token budget is spent (warn: direct messages still pass)"
            );
            let scope = match c.scope {
                Scope::Agent => "agent",
                Scope::Space(_) => "space",
            };
            let spent = EventKind::Budget {
                space: space.clone(),
                scope: scope.to_owned(),
                used: c.state.used,
                limit: c.state.limit,
            };
            if let Err(e) = self.medium.note(spent) {
                warn!(error = %e, "cannot log a budget warning");
            }
        }
        self.direct.inbox.remember(id, tokens, now);
        self.observe(
            Observation::BudgetCharged {
                peer: sender,
                tokens,
            },
            &ThreatContext::space(space),
        );
        debug!(from = %sender, %id, tokens, "direct message accepted");
        Ok((tokens, false))
    }

    fn on_direct_ack(&mut self, request: OutboundRequestId, ack: DirectAck) {
        let Some(pending) = self.direct.pending.remove(&request) else {
            return;
        };
        let to = pending.message.to;
        if ack.id != pending.id {
            self.count_failed("unreachable");
            let _ = pending.reply.send(Err(NodeError::Unreachable {
                peer: to,
                detail: format!(
                    "its node acknowledged message {} instead of {}",
                    ack.id.short(),
                    pending.id.short()
                ),
            }));
            return;
        }
        match &ack.refused {
            Some(refusal) => {
                debug!(%to, reason = %refusal.reason, "direct message refused by its receiver");
                self.metrics
                    .direct_refused
                    .get_or_create(&DirectLabels {
                        direction: "out",
                        reason: refusal.reason.name(),
                    })
                    .inc();
            }
            None => {
                self.metrics.direct_sent.inc();
                if !ack.duplicate {
                    let me = self.me();
                    let DirectMessage {
                        space,
                        to,
                        message,
                        reply_to,
                        entry,
                    } = pending.message;
                    self.note(EventKind::Direct {
                        space,
                        id: pending.id,
                        from: me,
                        to,
                        reply_to,
                        entry,
                        message,
                        tokens: ack.tokens,
                        at_ms: now_ms(),
                    });
                }
            }
        }
        let _ = pending.reply.send(Ok(Delivery {
            id: pending.id,
            to,
            tokens: ack.tokens,
            duplicate: ack.duplicate,
            refused: ack.refused,
        }));
    }

    fn on_direct_failure(
        &mut self,
        peer: PeerId,
        request: OutboundRequestId,
        error: &OutboundFailure,
    ) {
        let Some(pending) = self.direct.pending.remove(&request) else {
            return;
        };
        let to = pending.message.to;
        debug!(%peer, %error, "direct message failed");
        let (label, error) = match error {
            OutboundFailure::Timeout => (
                "timeout",
                NodeError::Timeout {
                    peer: to,
                    secs: DIRECT_TIMEOUT.as_secs(),
                },
            ),
            OutboundFailure::DialFailure => (
                "unreachable",
                NodeError::Unreachable {
                    peer: to,
                    detail: "no connection to its node could be made".into(),
                },
            ),
            OutboundFailure::ConnectionClosed => (
                "unreachable",
                NodeError::Unreachable {
                    peer: to,
                    detail: "the connection closed before its node answered".into(),
                },
            ),
            OutboundFailure::UnsupportedProtocols => (
                "unreachable",
                NodeError::Unreachable {
                    peer: to,
                    detail: "its node does not take direct messages (/membrane/direct/1)".into(),
                },
            ),
            OutboundFailure::Io(e) => (
                "unreachable",
                NodeError::Unreachable {
                    peer: to,
                    detail: format!("the stream failed: {e}"),
                },
            ),
        };
        self.count_failed(label);
        let _ = pending.reply.send(Err(error));
    }

    fn count_failed(&self, reason: &'static str) {
        self.metrics
            .direct_failed
            .get_or_create(&DirectLabels {
                direction: "out",
                reason,
            })
            .inc();
    }

    /// Up to `limit` events `filter` selects, newest first.
    pub(super) fn find_events(
        &self,
        filter: &EventFilter,
        limit: usize,
    ) -> Vec<membrane_crdt::Event> {
        self.medium
            .events_since(0)
            .iter()
            .rev()
            .filter(|e| (filter.0)(e))
            .take(limit)
            .cloned()
            .collect()
    }
}
