//! Scenarios through the whole engine, with exact expected actions.

use super::*;
use crate::audit::Verdict;
use crate::breaker::Transition;
use crate::detectors::RateConfig;
use crate::detectors::{CapabilityAct, Fault};
use crate::testutil::peer;

const ME: u8 = 0;
const ACCUSED: u8 = 50;
const MIN: u64 = 60_000;
const HOUR: u64 = 60 * MIN;
const DAY: u64 = 24 * HOUR;

fn engine() -> Immune {
    Immune::new(Config::default(), peer(ME)).unwrap()
}

fn signal(offender: u8, kind: ThreatKind, severity: Severity) -> ThreatSignal {
    ThreatSignal {
        space: "default".parse().unwrap(),
        offender: peer(offender),
        kind,
        severity,
        evidence_hash: [offender; 32],
        evidence: None,
    }
}

fn report(im: &mut Immune, reporter: u8, s: &ThreatSignal, v: Verdict, now: u64) -> Vec<Action> {
    im.on_event(
        Observation::ThreatReceived {
            reporter: peer(reporter),
            signal: s.clone(),
            verdict: v,
        },
        now,
    )
}

/// Rewards `peers` once a minute until each reaches the reporter threshold; returns the
/// instant they all did.
fn earn(im: &mut Immune, peers: &[u8], mut now: u64) -> u64 {
    loop {
        for p in peers {
            im.on_event(Observation::Contributed { peer: peer(*p) }, now);
        }
        if peers
            .iter()
            .all(|p| im.reputation(&peer(*p), now) >= im.config().quorum.reporter_min)
        {
            return now;
        }
        now += MIN;
    }
}

fn received(reporter: u8, s: &ThreatSignal, verdict: Verdict, outcome: &str) -> Action {
    Action::Audit(AuditEvent::ThreatReceived {
        reporter: peer(reporter),
        offender: s.offender,
        kind: s.kind,
        severity: s.severity,
        evidence_hash: s.evidence_hash,
        verdict,
        outcome: outcome.into(),
    })
}

fn lower(p: u8, severity: Severity, reputation: f64) -> Action {
    Action::LowerScore {
        peer: peer(p),
        severity,
        reputation,
        app_score: crate::reputation::app_score(reputation, &Config::default().reputation),
    }
}

#[test]
fn forged_frame_bans_at_once_and_is_remembered_across_restart() {
    let mut im = engine();
    let bad = peer(7);
    let content = [0xab; 32];
    let actions = im.on_event(
        Observation::Rejected {
            peer: bad,
            author: None,
            content,
            fault: Fault::Forged,
        },
        1_000,
    );
    let d = Detection {
        offender: bad,
        kind: ThreatKind::Forgery,
        severity: Severity::Fatal,
        evidence_hash: Some(content),
        reason: "sent a forged record".into(),
    };
    let until = 1_000 + 7 * DAY;
    assert_eq!(
        actions,
        vec![
            Action::Audit(AuditEvent::ThreatDetected {
                detection: d.clone()
            }),
            lower(7, Severity::Fatal, -100.0),
            Action::Quarantine {
                peer: bad,
                until_ms: None
            },
            Action::Audit(AuditEvent::Quarantine {
                peer: bad,
                reason: "reputation -100.0 ≤ -25.0: sent a forged record".into(),
                until_ms: None,
            }),
            Action::DropSessions(bad),
            Action::Disconnect(bad),
            Action::Ban {
                peer: bad,
                until_ms: until
            },
            Action::Audit(AuditEvent::Ban {
                peer: bad,
                until_ms: until,
                reason: "reputation -100.0 ≤ -90.0: sent a forged record".into(),
            }),
            Action::PublishThreat(d),
        ]
    );
    assert!(im.is_known_offender(&bad, 2_000) && !im.admits(&bad, 2_000));
    assert!(im.is_replayed(&content, 2_000));
    assert_eq!(
        im.on_event(Observation::Connected { peer: bad }, 2_000),
        vec![Action::Disconnect(bad)]
    );
    assert_eq!(
        im.on_event(Observation::Connected { peer: peer(8) }, 2_000),
        vec![]
    );

    // Restart: the records are all the node kept.
    let records = im.memory_records(3_000);
    let json = serde_json::to_string(&records).unwrap();
    let back: Vec<MemoryRecord> = serde_json::from_str(&json).unwrap();
    let mut fresh = Immune::with_memory(Config::default(), peer(ME), &back, 4_000).unwrap();
    assert_eq!(fresh.banned(4_000), vec![(bad, until)]);
    assert!(fresh.is_replayed(&content, 4_000));
    assert!(
        fresh.quarantine(&bad).is_some(),
        "its quarantine came back too"
    );
    assert_eq!(
        fresh.on_event(Observation::Connected { peer: bad }, 4_000),
        vec![Action::Disconnect(bad)]
    );
    // The ban runs out on a tick; by then the score has recovered as well.
    let expired = fresh.on_event(Observation::Tick, until);
    assert_eq!(
        expired,
        vec![
            Action::Unban(bad),
            Action::Audit(AuditEvent::Unban {
                peer: bad,
                reason: "ban expired".into()
            }),
            Action::Release(bad),
            Action::Audit(AuditEvent::Release {
                peer: bad,
                reason: "reputation recovered".into()
            }),
        ]
    );
    assert!(fresh.admits(&bad, until));
}

#[test]
fn a_replayed_payload_is_refused_and_marks_the_sender() {
    let mut im = engine();
    let content = [0xcd; 32];
    im.on_event(
        Observation::Rejected {
            peer: peer(7),
            author: None,
            content,
            fault: Fault::Undecodable,
        },
        0,
    );
    assert!(im.is_replayed(&content, 10));
    let actions = im.on_event(
        Observation::Received {
            peer: peer(8),
            channel: Channel::Gossip,
            content,
        },
        10,
    );
    let d = Detection {
        offender: peer(8),
        kind: ThreatKind::Replay,
        severity: Severity::Mid,
        evidence_hash: Some(content),
        reason: "replayed content rejected before (Malformed)".into(),
    };
    assert_eq!(
        actions,
        vec![
            Action::Audit(AuditEvent::ThreatDetected {
                detection: d.clone()
            }),
            lower(8, Severity::Mid, -20.0),
            Action::PublishThreat(d),
        ]
    );
    // The replay renewed the memory: forgotten a week after it.
    assert!(im.is_replayed(&content, 7 * DAY));
    assert!(!im.is_replayed(&content, 7 * DAY + 10));
}

#[test]
fn trespass_disconnects_the_author_without_a_ban() {
    let mut im = engine();
    let actions = im.on_event(
        Observation::Rejected {
            peer: peer(3),
            author: Some(peer(3)),
            content: [1; 32],
            fault: Fault::Trespass,
        },
        0,
    );
    let kinds: Vec<&str> = actions
        .iter()
        .map(|a| match a {
            Action::Audit(_) => "audit",
            Action::LowerScore { .. } => "lower",
            Action::Quarantine { .. } => "quarantine",
            Action::DropSessions(_) => "drop",
            Action::Disconnect(_) => "disconnect",
            Action::Ban { .. } => "ban",
            Action::PublishThreat(_) => "publish",
            _ => "other",
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "audit",
            "lower",
            "quarantine",
            "audit",
            "drop",
            "disconnect",
            "publish"
        ]
    );
    assert!(!im.is_known_offender(&peer(3), 0));
    assert!(!im.admits(&peer(3), 0));
    // 6 h later the score is −25: still quarantined on a tick; a little later released.
    assert_eq!(im.reputation(&peer(3), 6 * HOUR), -25.0);
    assert!(im.admits(&peer(3), 6 * HOUR));
    assert_eq!(im.on_event(Observation::Tick, 6 * HOUR), vec![]);
    assert_eq!(
        im.on_event(Observation::Tick, 6 * HOUR + MIN),
        vec![
            Action::Release(peer(3)),
            Action::Audit(AuditEvent::Release {
                peer: peer(3),
                reason: "reputation recovered".into()
            })
        ]
    );
    assert!(im.accepts_from(&peer(3), 6 * HOUR + MIN));
}

#[test]
fn equivocation_targets_the_owner() {
    let mut im = engine();
    let a = im.on_event(
        Observation::Equivocation {
            owner: peer(4),
            seq: 9,
            first: [1; 32],
            second: [2; 32],
        },
        0,
    );
    assert!(a.contains(&lower(4, Severity::High, -50.0)));
    // Neither half is refused unprocessed later: an honest replica that got the second
    // one first holds it validly and may offer it again.
    assert!(!im.is_replayed(&[2; 32], 0) && !im.is_replayed(&[1; 32], 0));
    let same = im.on_event(
        Observation::Equivocation {
            owner: peer(5),
            seq: 9,
            first: [3; 32],
            second: [3; 32],
        },
        0,
    );
    assert_eq!(same, vec![]);
}

#[test]
fn one_liar_gets_no_action() {
    let mut im = engine();
    let now = earn(&mut im, &[1], 0);
    let s = signal(ACCUSED, ThreatKind::Forgery, Severity::Fatal);
    assert_eq!(
        report(&mut im, 1, &s, Verdict::Unverifiable, now),
        vec![received(
            1,
            &s,
            Verdict::Unverifiable,
            "held until a quorum of reputable reporters"
        )]
    );
    // Repeating itself changes nothing.
    for t in 1..5 {
        let again = report(&mut im, 1, &s, Verdict::Unverifiable, now + t);
        assert_eq!(again.len(), 1);
    }
    assert_eq!(im.reputation(&peer(ACCUSED), now + 5), 0.0);
    assert!(im.accepts_from(&peer(ACCUSED), now + 5));
}

#[test]
fn a_sybil_cluster_gets_no_action() {
    let mut im = engine();
    let s = signal(ACCUSED, ThreatKind::Trespass, Severity::Fatal);
    // Ten fresh identities, all busy contributing for a few minutes first.
    let sybils: Vec<u8> = (100..110).collect();
    let mut now = 0;
    for _ in 0..10 {
        for p in &sybils {
            im.on_event(Observation::Contributed { peer: peer(*p) }, now);
        }
        now += MIN;
    }
    for p in &sybils {
        assert!(im.reputation(&peer(*p), now) < 5.0);
        assert_eq!(
            report(&mut im, *p, &s, Verdict::Unverifiable, now),
            vec![received(
                *p,
                &s,
                Verdict::Unverifiable,
                "held until a quorum of reputable reporters"
            )]
        );
    }
    assert_eq!(im.reputation(&peer(ACCUSED), now), 0.0);
    assert!(im.accepts_from(&peer(ACCUSED), now));
}

#[test]
fn earning_reputation_takes_time() {
    let mut im = engine();
    let reached = earn(&mut im, &[1], 0);
    // One reward a minute of 0.5 points: at least 40 minutes to reach 20.
    assert!(reached >= 40 * MIN, "{reached}");
    // Contributions faster than once a minute earn nothing more.
    let before = im.reputation(&peer(1), reached);
    for t in 1..30 {
        im.on_event(Observation::Contributed { peer: peer(1) }, reached + t);
    }
    assert_eq!(
        im.reputation(&peer(1), reached + 29),
        decay(before, 29, 6 * HOUR)
    );
}

#[test]
fn three_reputable_reporters_act_and_exoneration_undoes_it() {
    let mut im = engine();
    let now = earn(&mut im, &[1, 2, 3], 0);
    let s = signal(ACCUSED, ThreatKind::Trespass, Severity::High);
    // Sybils join in; they do not count but are remembered.
    for p in 100..105 {
        report(&mut im, p, &s, Verdict::Unverifiable, now);
    }
    assert_eq!(report(&mut im, 1, &s, Verdict::Unverifiable, now).len(), 1);
    assert_eq!(report(&mut im, 2, &s, Verdict::Unverifiable, now).len(), 1);
    let accused = peer(ACCUSED);
    let until = now + HOUR;
    assert_eq!(
        report(&mut im, 3, &s, Verdict::Unverifiable, now),
        vec![
            received(
                3,
                &s,
                Verdict::Unverifiable,
                "quorum of 3 reputable reporters: High applied, quarantined"
            ),
            Action::Quarantine {
                peer: accused,
                until_ms: Some(until)
            },
            Action::Audit(AuditEvent::Quarantine {
                peer: accused,
                reason: "reported for Trespass by a quorum of 3".into(),
                until_ms: Some(until),
            }),
            Action::DropSessions(accused),
            lower(ACCUSED, Severity::High, -50.0),
            Action::Disconnect(accused),
        ]
    );
    assert_eq!(
        im.quarantine(&accused).map(|q| q.reason),
        Some(QuarantineReason::Quorum)
    );
    // Unproven, so no ban and nothing remembered.
    assert!(!im.is_known_offender(&accused, now));

    // Later the accused's data verifies: every reporter pays, the accused is restored.
    let later = now + 10 * MIN;
    let before: Vec<f64> = [1, 2, 3]
        .iter()
        .map(|p| im.reputation(&peer(*p), later))
        .collect();
    let actions = im.on_event(Observation::Exonerated { peer: accused }, later);
    assert_eq!(actions[0], Action::Release(accused));
    let lowered: Vec<PublicKey> = actions
        .iter()
        .filter_map(|a| match a {
            Action::LowerScore { peer, severity, .. } => {
                assert_eq!(*severity, Severity::Mid);
                Some(*peer)
            }
            _ => None,
        })
        .collect();
    assert_eq!(lowered.len(), 8, "3 reputable reporters and 5 Sybils");
    for (p, b) in [1, 2, 3].iter().zip(before) {
        assert_eq!(im.reputation(&peer(*p), later), b - 20.0);
    }
    assert!(im.reputation(&accused, later).abs() < 1e-9);
    assert!(im.accepts_from(&accused, later));
    // Nothing left to exonerate.
    assert_eq!(
        im.on_event(Observation::Exonerated { peer: accused }, later),
        vec![]
    );
}

#[test]
fn verifiable_evidence_acts_at_once_even_from_a_nobody() {
    let mut im = engine();
    let s = signal(ACCUSED, ThreatKind::Forgery, Severity::Fatal);
    let accused = peer(ACCUSED);
    let until = 7 * DAY;
    let actions = report(&mut im, 100, &s, Verdict::Confirmed, 0);
    assert_eq!(
        actions,
        vec![
            received(
                100,
                &s,
                Verdict::Confirmed,
                "evidence verified: Fatal applied"
            ),
            lower(ACCUSED, Severity::Fatal, -100.0),
            Action::Quarantine {
                peer: accused,
                until_ms: None
            },
            Action::Audit(AuditEvent::Quarantine {
                peer: accused,
                reason: format!(
                    "reputation -100.0 ≤ -25.0: reported by {} with verified evidence",
                    peer(100)
                ),
                until_ms: None,
            }),
            Action::DropSessions(accused),
            Action::Disconnect(accused),
            Action::Ban {
                peer: accused,
                until_ms: until
            },
            Action::Audit(AuditEvent::Ban {
                peer: accused,
                until_ms: until,
                reason: format!(
                    "reputation -100.0 ≤ -90.0: reported by {} with verified evidence",
                    peer(100)
                ),
            }),
        ]
    );
    assert!(im.is_replayed(&s.evidence_hash, 1));
    assert_eq!(
        im.reputation(&peer(100), 0),
        0.5,
        "a true report earns a reward"
    );
    // A reporter cannot inflate what its evidence proves.
    let inflated = signal(51, ThreatKind::Malformed, Severity::Fatal);
    let a = report(&mut im, 100, &inflated, Verdict::Confirmed, 0);
    assert!(a.contains(&lower(51, Severity::Mid, -20.0)));
    assert!(!im.is_known_offender(&peer(51), 0));
}

#[test]
fn a_false_reporter_loses_reputation() {
    let mut im = engine();
    let now = earn(&mut im, &[1], 0);
    let before = im.reputation(&peer(1), now);
    let s = signal(ACCUSED, ThreatKind::Forgery, Severity::Fatal);
    assert_eq!(
        report(&mut im, 1, &s, Verdict::Refuted, now),
        vec![
            received(
                1,
                &s,
                Verdict::Refuted,
                "evidence refuted: reporter penalized"
            ),
            lower(1, Severity::Mid, before - 20.0),
        ]
    );
    assert_eq!(im.reputation(&peer(ACCUSED), now), 0.0);
    // Now below the reporter threshold, its unverifiable reports stop counting.
    let s2 = signal(51, ThreatKind::Trespass, Severity::High);
    let now = earn(&mut im, &[2, 3], now);
    report(&mut im, 2, &s2, Verdict::Unverifiable, now);
    report(&mut im, 3, &s2, Verdict::Unverifiable, now);
    assert_eq!(report(&mut im, 1, &s2, Verdict::Unverifiable, now).len(), 1);
    assert_eq!(im.reputation(&peer(51), now), 0.0);
}

#[test]
fn reports_by_banned_reporters_or_about_us_are_ignored() {
    let mut im = engine();
    im.on_event(Observation::Operator(Override::Ban(peer(9))), 0);
    let s = signal(ACCUSED, ThreatKind::Forgery, Severity::Fatal);
    assert_eq!(report(&mut im, 9, &s, Verdict::Confirmed, 1), vec![]);
    let about_me = signal(ME, ThreatKind::Trespass, Severity::High);
    assert_eq!(
        report(&mut im, 1, &about_me, Verdict::Unverifiable, 1),
        vec![]
    );
    let self_report = signal(1, ThreatKind::Trespass, Severity::High);
    assert_eq!(
        report(&mut im, 1, &self_report, Verdict::Refuted, 1),
        vec![]
    );
}

#[test]
fn operator_overrides_are_reversible_and_audited() {
    let mut im = engine();
    let p = peer(6);
    let until = 24 * HOUR;
    assert_eq!(
        im.on_event(Observation::Operator(Override::Ban(p)), 0),
        vec![
            Action::Audit(AuditEvent::Override {
                action: OverrideAction::Ban,
                peer: p
            }),
            Action::Ban {
                peer: p,
                until_ms: until
            },
            Action::Audit(AuditEvent::Ban {
                peer: p,
                until_ms: until,
                reason: "operator".into()
            }),
            Action::DropSessions(p),
            Action::Disconnect(p),
        ]
    );
    assert!(!im.admits(&p, 1));
    assert_eq!(
        im.on_event(Observation::Operator(Override::Unban(p)), 1),
        vec![
            Action::Audit(AuditEvent::Override {
                action: OverrideAction::Unban,
                peer: p
            }),
            Action::Unban(p),
            Action::Audit(AuditEvent::Unban {
                peer: p,
                reason: "operator".into()
            }),
        ]
    );
    assert!(im.admits(&p, 1));

    // An operator's quarantine never lifts by itself; release lifts it and the score.
    im.on_event(Observation::Operator(Override::Quarantine(p)), 2);
    assert!(!im.accepts_from(&p, 2) && im.admits(&p, 2));
    assert_eq!(im.on_event(Observation::Tick, 30 * DAY), vec![]);
    im.on_event(
        Observation::Rejected {
            peer: p,
            author: None,
            content: [4; 32],
            fault: Fault::Undecodable,
        },
        30 * DAY,
    );
    assert_eq!(im.reputation(&p, 30 * DAY), -20.0);
    let released = im.on_event(Observation::Operator(Override::Release(p)), 30 * DAY);
    assert_eq!(released[1], Action::Release(p));
    assert!(im.accepts_from(&p, 30 * DAY));
    assert_eq!(im.reputation(&p, 30 * DAY), 0.0);
}

#[test]
fn rate_anomaly_after_warmup() {
    let config = Config {
        gossip_rate: RateConfig {
            bucket_ms: 1_000,
            alpha: 0.5,
            warmup_buckets: 3,
            sigmas: 2.0,
            floor: 4,
            ceiling: 1_000,
        },
        ..Config::default()
    };
    let mut im = Immune::new(config, peer(ME)).unwrap();
    let p = peer(5);
    let mut n = 0u8;
    let mut send = |im: &mut Immune, t: u64| {
        n = n.wrapping_add(1);
        im.on_event(
            Observation::Received {
                peer: p,
                channel: Channel::Gossip,
                content: [n; 32],
            },
            t,
        )
    };
    // Warm-up: bursts at the floor are no anomaly.
    for b in 0..3 {
        for i in 0..4 {
            assert_eq!(send(&mut im, b * 1_000 + i), vec![]);
        }
    }
    // Learned 3.5 a bucket (σ ≈ 1.32): the threshold is then 6.15, so the 7th trips,
    // and again the 13th (a doubling); both low.
    let mut trips = Vec::new();
    for i in 0..20 {
        let a = send(&mut im, 3_000 + i);
        if !a.is_empty() {
            trips.push((i, a));
        }
    }
    assert_eq!(
        trips.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
        vec![6, 12]
    );
    for (k, (_, actions)) in trips.iter().enumerate() {
        assert_eq!(actions.len(), 2, "low severity is not published");
        let Action::LowerScore {
            severity,
            reputation,
            ..
        } = actions[1]
        else {
            panic!("{actions:?}");
        };
        assert_eq!(severity, Severity::Low);
        assert!(
            (reputation + 5.0 * (k as f64 + 1.0)).abs() < 1e-3,
            "{reputation}"
        );
    }
}

/// What an honest heavy writer looks like from another node: 100 records a second
/// applied from sync (in batches of 10 every 100 ms, as pushes arrive) and its gossip
/// (coalesced heads announcements and ads: 10 a second).
fn heavy_writer_second(im: &mut Immune, p: PublicKey, second: u64) -> Vec<Action> {
    let mut out = Vec::new();
    for tenth in 0..10 {
        let t = second * 1_000 + tenth * 100;
        out.extend(im.on_event(
            Observation::Applied {
                owner: p,
                records: 10,
            },
            t,
        ));
        let mut content = [0; 32];
        content[..8].copy_from_slice(&t.to_be_bytes());
        out.extend(im.on_event(
            Observation::Received {
                peer: p,
                channel: Channel::Gossip,
                content,
            },
            t,
        ));
    }
    out
}

#[test]
fn an_honest_heavy_writer_is_never_marked() {
    let mut im = engine();
    let p = peer(5);
    // From the first second (no history: the floor holds), through warm-up, for ten
    // minutes; then idle for ten minutes (its average falls to nothing) and busy again.
    for second in (0..600).chain(1_200..1_500) {
        assert_eq!(
            heavy_writer_second(&mut im, p, second),
            vec![],
            "{second} s"
        );
    }
    assert_eq!(im.reputation(&p, 1_500_000), 0.0);
}

#[test]
fn flooders_are_quarantined_within_a_few_buckets() {
    let mut im = engine();
    // Entries at 2,000/s from the first second: over the floor (2,500 a bucket) and
    // twice it in each 5 s bucket. Five marks spread over seconds decay to a little
    // above −25, so the sixth (the third bucket's second) quarantines it.
    let f = peer(6);
    let mut marks = 0;
    let mut quarantined = None;
    for tenth in 0..200u64 {
        for a in im.on_event(
            Observation::Applied {
                owner: f,
                records: 200,
            },
            tenth * 100,
        ) {
            match a {
                Action::LowerScore { .. } => marks += 1,
                Action::Quarantine { .. } => {
                    quarantined = quarantined.or(Some((tenth * 100, marks)));
                }
                _ => {}
            }
        }
    }
    assert_eq!(quarantined, Some((12_500, 6)));
    // Gossip at 1,000/s: over the floor (250 a bucket), twice it (both low), four times
    // it (mid, a flood): −30 at the 1,001st message.
    let g = peer(7);
    let mut quarantined_at = None;
    for i in 0..6_000u64 {
        let mut content = [0; 32];
        content[..8].copy_from_slice(&i.to_be_bytes());
        let a = im.on_event(
            Observation::Received {
                peer: g,
                channel: Channel::Gossip,
                content,
            },
            i,
        );
        if a.iter().any(|a| matches!(a, Action::Quarantine { .. })) {
            quarantined_at.get_or_insert(i);
        }
    }
    assert_eq!(quarantined_at, Some(1_000));
    // Relayed or not, records count for their owner only, and ours never.
    im.on_event(
        Observation::Applied {
            owner: peer(ME),
            records: u32::MAX,
        },
        0,
    );
    assert_eq!(im.reputation(&peer(ME), 0), 0.0);
}

#[test]
fn a_quarantine_by_score_survives_a_restart_until_the_score_recovers() {
    let mut im = engine();
    let f = peer(6);
    for _ in 0..30 {
        im.on_event(
            Observation::Received {
                peer: f,
                channel: Channel::Gossip,
                content: [1; 32],
            },
            24,
        );
    }
    assert_eq!(im.reputation(&f, 24), -30.0);
    assert!(im.quarantine(&f).is_some() && !im.is_known_offender(&f, 24));
    let records = im.memory_records(100);
    // −30 decays to −25 after 6 h · log2(1.2) ≈ 5,681,543.1 ms; above it 1 ms later.
    let until = 24 + 5_681_543 + 1;
    assert_eq!(
        records,
        vec![MemoryRecord {
            key: MemoryKey::Quarantined { peer: f },
            value: Memory {
                kind: Some(ThreatKind::Flooding),
                severity: Severity::Low,
                since_ms: 24,
            },
            expires_at_ms: until,
        }]
    );
    let json = serde_json::to_string(&records).unwrap();
    let back: Vec<MemoryRecord> = serde_json::from_str(&json).unwrap();
    let mut fresh = Immune::with_memory(Config::default(), peer(ME), &back, HOUR).unwrap();
    assert_eq!(
        fresh.quarantine(&f),
        Some(Quarantined {
            reason: QuarantineReason::Score,
            since_ms: 24,
            until_ms: None
        })
    );
    assert!(!fresh.accepts_from(&f, HOUR));
    let was = im.reputation(&f, HOUR);
    assert!((fresh.reputation(&f, HOUR) - was).abs() < 1e-3, "{was}");
    // It stays quarantined until its score recovers, as it would have without a restart.
    assert_eq!(fresh.on_event(Observation::Tick, until - 1), vec![]);
    assert_eq!(
        fresh.on_event(Observation::Tick, until),
        vec![
            Action::Release(f),
            Action::Audit(AuditEvent::Release {
                peer: f,
                reason: "reputation recovered".into()
            })
        ]
    );
    assert!(fresh.memory_records(until).is_empty());
    // Expired records are not restored; an operator's release forgets the quarantine.
    let late = Immune::with_memory(Config::default(), peer(ME), &back, until).unwrap();
    assert_eq!(late.quarantine(&f), None);
    im.on_event(Observation::Operator(Override::Release(f)), 200);
    assert!(im.memory_records(200).is_empty());
}

#[test]
fn replays_are_refused_by_what_was_remembered() {
    let mut im = engine();
    // A forged record sent again by someone else is a forgery again.
    im.on_event(
        Observation::Rejected {
            peer: peer(1),
            author: None,
            content: [1; 32],
            fault: Fault::Forged,
        },
        0,
    );
    let a = im.on_event(
        Observation::Received {
            peer: peer(2),
            channel: Channel::Entries,
            content: [1; 32],
        },
        10,
    );
    assert!(a.contains(&lower(2, Severity::Fatal, -100.0)), "{a:?}");
    assert!(im.is_known_offender(&peer(2), 10));
    // A trespass replayed: mid.
    im.on_event(
        Observation::Rejected {
            peer: peer(3),
            author: Some(peer(3)),
            content: [3; 32],
            fault: Fault::Trespass,
        },
        0,
    );
    let a = im.on_event(
        Observation::Received {
            peer: peer(4),
            channel: Channel::Entries,
            content: [3; 32],
        },
        10,
    );
    assert!(a.contains(&lower(4, Severity::Mid, -20.0)), "{a:?}");
}

#[test]
fn flooding_and_budget_abuse() {
    let mut im = engine();
    let p = peer(5);
    let mut trips = 0;
    for t in 0..5 {
        let a = im.on_event(
            Observation::Received {
                peer: p,
                channel: Channel::Gossip,
                content: [9; 32],
            },
            t,
        );
        trips += a.len();
    }
    assert_eq!(trips, 2, "the fifth copy: audit and lower score");
    assert_eq!(im.reputation(&p, 4), -5.0);
    assert!(
        !im.is_replayed(&[9; 32], 4),
        "repeated content is not bad content"
    );
    // Sync frames are not counted for duplicates (anti-entropy repeats are normal).
    let q = peer(6);
    for t in 0..10 {
        let a = im.on_event(
            Observation::Received {
                peer: q,
                channel: Channel::Entries,
                content: [8; 32],
            },
            t,
        );
        assert_eq!(a, vec![]);
    }

    let a = im.on_event(
        Observation::BudgetCharged {
            peer: p,
            tokens: 50_001,
        },
        4,
    );
    assert!(
        matches!(
            &a[..],
            [
                Action::Audit(_),
                Action::LowerScore {
                    severity: Severity::Mid,
                    ..
                },
                Action::Quarantine { .. },
                Action::Audit(_),
                Action::DropSessions(_),
                Action::PublishThreat(Detection {
                    kind: ThreatKind::BudgetAbuse,
                    ..
                }),
            ]
        ),
        "{a:?}"
    );
}

#[test]
fn capability_violation_is_published_once_a_minute() {
    let mut im = engine();
    let claim = |t| {
        (
            Observation::CapabilityUse {
                peer: peer(5),
                capability: "code".into(),
                act: CapabilityAct::Claim,
                ad: None,
            },
            t,
        )
    };
    let published = |a: &[Action]| a.iter().any(|x| matches!(x, Action::PublishThreat(_)));
    let (o, t) = claim(0);
    assert!(published(&im.on_event(o, t)));
    let (o, t) = claim(1_000);
    assert!(!published(&im.on_event(o, t)));
    let (o, t) = claim(MIN);
    assert!(published(&im.on_event(o, t)));
}

#[test]
fn breakers_through_the_engine() {
    let mut im = engine();
    let agent = peer(5);
    let fail = |t| {
        (
            Observation::TaskOutcome {
                agent,
                capability: "code".into(),
                success: false,
            },
            t,
        )
    };
    for t in 0..2 {
        let (o, t) = fail(t);
        assert_eq!(im.on_event(o, t), vec![]);
    }
    let (o, t) = fail(2);
    let a = im.on_event(o, t);
    let opened = Transition::Opened { until_ms: 60_002 };
    assert_eq!(
        a,
        vec![
            Action::Breaker {
                key: BreakerKey::Agent(agent),
                transition: opened
            },
            Action::Audit(AuditEvent::Breaker {
                key: BreakerKey::Agent(agent),
                transition: opened
            }),
            Action::Breaker {
                key: BreakerKey::Capability("code".into()),
                transition: opened
            },
            Action::Audit(AuditEvent::Breaker {
                key: BreakerKey::Capability("code".into()),
                transition: opened
            }),
        ]
    );
    assert!(im.delegation_blocked(agent, "search", 100));
    assert!(im.admit_delegation(peer(6), "code", 100).is_err());
    assert_eq!(im.admit_delegation(peer(6), "search", 100), Ok(()));
    // The tick after the cooldown says the breakers are half-open (and audits it).
    assert_eq!(im.on_event(Observation::Tick, 60_001), vec![]);
    let half = im.on_event(Observation::Tick, 60_002);
    assert_eq!(
        half,
        vec![
            Action::Breaker {
                key: BreakerKey::Agent(agent),
                transition: Transition::HalfOpen
            },
            Action::Audit(AuditEvent::Breaker {
                key: BreakerKey::Agent(agent),
                transition: Transition::HalfOpen
            }),
            Action::Breaker {
                key: BreakerKey::Capability("code".into()),
                transition: Transition::HalfOpen
            },
            Action::Audit(AuditEvent::Breaker {
                key: BreakerKey::Capability("code".into()),
                transition: Transition::HalfOpen
            }),
        ]
    );
    assert_eq!(im.breakers().count(), 2);
    assert_eq!(im.admit_delegation(agent, "code", 60_002), Ok(()));
    assert!(im.admit_delegation(agent, "code", 60_003).is_err());
    // The trial succeeds: both close, and are forgotten.
    let closed = im.on_event(
        Observation::TaskOutcome {
            agent,
            capability: "code".into(),
            success: true,
        },
        60_004,
    );
    assert_eq!(
        closed
            .iter()
            .filter(|a| matches!(
                a,
                Action::Breaker {
                    transition: Transition::Closed,
                    ..
                }
            ))
            .count(),
        2
    );
    assert_eq!(im.breakers().count(), 0);
    // Failing tasks are not offences.
    assert_eq!(im.reputation(&agent, 60_003), 0.0);
}

#[test]
fn a_flood_of_fresh_identities_stays_bounded() {
    let config = Config {
        max_peers: 16,
        ..Config::default()
    };
    let mut im = Immune::new(config, peer(ME)).unwrap();
    im.on_event(
        Observation::Rejected {
            peer: peer(1),
            author: None,
            content: [1; 32],
            fault: Fault::MissingDeps,
        },
        0,
    );
    let mut now = earn(&mut im, &[2], 0);
    for n in 10..=255u8 {
        now += 1;
        im.on_event(
            Observation::Received {
                peer: peer(n),
                channel: Channel::Gossip,
                content: [n; 32],
            },
            now,
        );
        assert!(im.tracked_peers() <= 16);
    }
    // The offender and the reputable peer kept their standing.
    assert!(im.reputation(&peer(1), now) < 0.0);
    assert!(im.reputation(&peer(2), now) >= 19.0);
}

#[test]
fn app_scores_follow_reputation() {
    let mut im = engine();
    im.on_event(
        Observation::Rejected {
            peer: peer(1),
            author: None,
            content: [1; 32],
            fault: Fault::Undecodable,
        },
        0,
    );
    earn(&mut im, &[2], 0);
    let scores = im.app_scores(0);
    assert_eq!(scores.len(), 2);
    assert_eq!(im.app_score(&peer(1), 0), -20.0);
    assert_eq!(im.app_score(&peer(1), 6 * HOUR), -10.0);
    assert_eq!(im.app_score(&peer(9), 0), 0.0);
}

#[test]
fn our_own_key_is_never_punished() {
    let mut im = engine();
    let a = im.on_event(
        Observation::Rejected {
            peer: peer(ME),
            author: None,
            content: [1; 32],
            fault: Fault::Forged,
        },
        0,
    );
    assert_eq!(a, vec![]);
    assert_eq!(
        im.on_event(Observation::Operator(Override::Ban(peer(ME))), 0),
        vec![]
    );
}
