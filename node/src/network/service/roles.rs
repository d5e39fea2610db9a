//! Emergent role hints for this node's agent, derived from the medium (see
//! [`membrane_crdt::coord::RoleHint`]): *coordinate* when it holds the most context relevant
//! to an active swarm it is in, *fill gap* when a task in its capability has gone
//! [`GAP_AFTER_MS`] without a taker, *mediate* when other owners conflict on an entry it can
//! see. Each hint is logged once per subject as a `role` event; the agent may ignore it.

use std::collections::{BTreeMap, BTreeSet};

use membrane_crdt::coord::{self, RoleHint, Snapshot};
use membrane_crdt::{Conflict, EventKind, Storage};
use membrane_protocol::Space;
use tracing::debug;

use super::{Service, now_ms};

/// How long a task stays open and unclaimed before capable agents are told it has no
/// taker.
pub(crate) const GAP_AFTER_MS: u64 = 5_000;
/// Hints remembered (so each is given once), at most; the oldest are forgotten.
const MAX_HINTED: usize = 4096;

/// What role hints this node has given and is watching for.
#[derive(Debug, Default)]
pub(crate) struct Roles {
    /// (space, role, subject) already hinted.
    hinted: BTreeSet<(Space, &'static str, String)>,
    /// Open, unclaimed tasks the agent could take: (space, task) → (posted at, capability).
    gaps: BTreeMap<(Space, String), (u64, String)>,
}

impl<S: Storage + Send + 'static> Service<S> {
    /// Logs `hint` unless it was given before; with `log` false (at start, for what the
    /// medium already held) only remembers it.
    fn hint(&mut self, space: &Space, hint: RoleHint, log: bool) {
        let key = (space.clone(), hint.role, hint.subject.clone());
        if self.roles.hinted.contains(&key) {
            return;
        }
        if self.roles.hinted.len() >= MAX_HINTED {
            self.roles.hinted.pop_first();
        }
        self.roles.hinted.insert(key);
        if !log {
            return;
        }
        debug!(%space, role = hint.role, subject = %hint.subject, "role hint");
        self.note(EventKind::Role {
            space: space.clone(),
            role: hint.role.to_owned(),
            subject: hint.subject,
            reason: hint.reason,
        });
    }

    /// After coordination in `space` was recomputed: coordinate hints (logged if `log`),
    /// and the gaps to watch.
    pub(super) fn roles_after(&mut self, space: &Space, snapshot: &Snapshot, log: bool) {
        let me = self.me();
        let Some(index) = self.medium.index(space) else {
            return;
        };
        let hints = coord::coordinate_hints(index, snapshot, &me);
        let open = coord::gaps(index, snapshot, &me);
        self.roles.gaps.retain(|(s, _), _| s != space);
        for (task, posted, capability) in open {
            self.roles
                .gaps
                .insert((space.clone(), task), (posted, capability));
        }
        for hint in hints {
            self.hint(space, hint, log);
        }
    }

    /// A conflict the medium reported.
    pub(super) fn role_on_conflict(&mut self, space: &Space, conflict: &Conflict) {
        if let Some(hint) = coord::mediate_hint(conflict, &self.me()) {
            self.hint(space, hint, true);
        }
    }

    /// Tasks whose wait for a taker ran out.
    pub(super) fn role_tick(&mut self) {
        let now = now_ms();
        let due: Vec<_> = self
            .roles
            .gaps
            .iter()
            .filter(|(_, (posted, _))| now >= posted.saturating_add(GAP_AFTER_MS))
            .map(|((space, task), (posted, capability))| {
                (space.clone(), task.clone(), *posted, capability.clone())
            })
            .collect();
        for (space, task, posted, capability) in due {
            self.roles.gaps.remove(&(space.clone(), task.clone()));
            let waited = now.saturating_sub(posted) / 1000;
            self.hint(
                &space,
                RoleHint {
                    role: "fill_gap",
                    subject: task.clone(),
                    reason: format!(
                        "task {task} needs {capability}, which you have, and nobody has \
                         claimed it in {waited} s"
                    ),
                },
                true,
            );
        }
    }
}
