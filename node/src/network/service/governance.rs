//! The event loop's governance duties: the API's governance requests (audit records it
//! writes, delegation admissions), and what newly arrived coordination records and
//! conflicts mean (breaker feeds, capability violations, escalations). The rules live in
//! [`crate::governance`]; this carries them out.

use membrane_crdt::coord::{DEFAULT_VERIFIERS, Snapshot};
use membrane_crdt::{Event, Storage};
use membrane_protocol::Space;
use tracing::warn;

use super::{Service, ThreatContext, now_ms};
use crate::governance::{Escalation, Governance as Rules};
use crate::node::{Governance, NodeError};

impl<S: Storage + Send + 'static> Service<S> {
    pub(super) fn on_governance(&mut self, command: Governance) {
        let now = now_ms();
        match command {
            Governance::Record(audit, events, reply) => {
                let outcome = self.defences.record(audit, now);
                let records = outcome.records.clone();
                self.carry_out(outcome, &ThreatContext::default());
                for event in events {
                    self.note(event);
                }
                let _ = reply.send(Ok(records));
            }
            Governance::Admit(agent, capability, reply) => {
                let result = self
                    .defences
                    .admit_delegation(agent, &capability, now)
                    .map_err(NodeError::Blocked);
                let _ = reply.send(result);
            }
            Governance::Blocks(agent, capability, reply) => {
                let _ = reply.send(Ok(self.defences.delegation_blocked(
                    agent,
                    &capability,
                    now,
                )));
            }
        }
    }

    /// The events not yet forwarded (what just arrived or was written).
    fn fresh_events(&self) -> Vec<Event> {
        self.medium.events_since(self.last_event).to_vec()
    }

    /// After `space`'s coordination was recomputed: task outcomes feed the breakers; with
    /// `live`, claims and joins that just arrived without the capability are offences, and
    /// disputes of verified entries are escalated. At start (`live` false) the outcomes
    /// already in the medium are only remembered.
    pub(super) fn govern_coordination(&mut self, space: &Space, snapshot: &Snapshot, live: bool) {
        let me = self.me();
        let events = if live {
            self.fresh_events()
        } else {
            Vec::new()
        };
        let Some(index) = self.medium.index(space) else {
            return;
        };
        // Live, only the tasks whose records just arrived can have a new outcome (or a
        // new winner); at start, every task's is remembered.
        let touched = live.then(|| Rules::touched_tasks(&events, space, &me));
        let outcomes = self
            .governance
            .outcomes(space, snapshot, index, touched.as_ref(), live);
        let (violations, disputes) = if live {
            let trust = self.medium.trust(space);
            let index = self.medium.index(space);
            let violations = Rules::violations(space, snapshot, &events, &me);
            let disputes = index.map_or_else(Vec::new, |index| {
                self.governance
                    .disputes(space, index, &trust, &events, &me, DEFAULT_VERIFIERS)
            });
            (violations, disputes)
        } else {
            (Vec::new(), Vec::new())
        };
        let context = ThreatContext::space(space.clone());
        for observation in outcomes.into_iter().chain(violations) {
            self.observe(observation, &context);
        }
        for escalation in disputes {
            self.escalate(escalation);
        }
    }

    /// Escalates the contradicting facts among the events not yet forwarded.
    pub(super) fn escalate_conflicts(&mut self) {
        if !self
            .medium
            .events_since(self.last_event)
            .iter()
            .any(|e| matches!(e.kind, membrane_crdt::EventKind::Conflict { .. }))
        {
            return;
        }
        let events = self.fresh_events();
        let medium = &self.medium;
        let escalations = self
            .governance
            .conflicts(&events, |space| medium.index(space));
        for escalation in escalations {
            self.escalate(escalation);
        }
    }

    /// Audits a conflict record, tells the agent (an event) and the operator (a log line).
    fn escalate(&mut self, escalation: Escalation) {
        warn!(
            space = %escalation.space,
            key = %escalation.key,
            owners = ?escalation.owners.iter().map(|o| o.short()).collect::<Vec<_>>(),
            "value conflict escalated to the agent: {}",
            escalation.reason
        );
        let outcome = self.defences.record(vec![escalation.audit()], now_ms());
        self.carry_out(outcome, &ThreatContext::default());
        self.note(escalation.event());
    }
}
