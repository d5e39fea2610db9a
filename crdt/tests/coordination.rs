//! Coordination computed from the medium: the five-agent scenario's swarm steps, task
//! claims resolved to one winner on every replica whatever the order (a partition that
//! heals included), dissolution, and verification.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use common::{NOW, Replica, replica, space, sync_all, sync_pair};
use membrane_crdt::coord::{self, SwarmState, TaskState};
use membrane_crdt::{Draft, Filter};
use membrane_protocol::permeability::Reader;
use membrane_protocol::{EntryKind, EnvelopeId, Pattern, Score, Tier};
use proptest::prelude::*;

fn write(
    r: &mut Replica,
    key: &str,
    value: serde_json::Value,
    at: u64,
) -> membrane_protocol::EnvelopeId {
    let mut draft = Draft::new(key.parse().unwrap(), value.to_string(), Some(Tier::Public));
    draft.kind = EntryKind::Meta;
    r.expose(&space(), draft, at).unwrap().id
}

fn register(r: &mut Replica, name: &str, caps: &[&str], at: u64) {
    let key = coord::agent_key(r.me());
    let caps: Vec<_> = caps
        .iter()
        .map(|c| serde_json::json!({"name": c, "description": ""}))
        .collect();
    write(
        r,
        &key,
        serde_json::json!({"name": name, "capabilities": caps}),
        at,
    );
}

fn snapshot(r: &Replica, at: u64) -> coord::Snapshot {
    coord::snapshot(r.index(&space()).unwrap(), at)
}

fn five() -> Vec<Replica> {
    let mut rs: Vec<Replica> = (1..=5).map(replica).collect();
    for r in &mut rs {
        r.join(space()).unwrap();
    }
    let roles: [(&str, &[&str]); 5] = [
        ("orchestrator", &["planning"]),
        ("researcher", &["research"]),
        ("writer", &["writing"]),
        ("reviewer", &["reviewing"]),
        ("editor", &["editing", "reviewing"]),
    ];
    for (r, (name, caps)) in rs.iter_mut().zip(roles) {
        register(r, name, caps, NOW);
    }
    rs
}

#[test]
fn the_five_agent_swarm_steps() {
    let mut rs = five();
    let slug = coord::slug("Final Review").unwrap();
    assert_eq!(slug, "final-review");
    let spec =
        serde_json::json!({"name": "Final Review", "capability": "reviewing", "threshold": 2});
    write(&mut rs[0], &coord::swarm_key(&slug), spec, NOW + 10);
    // The editor joins: 1 of 2, not active.
    let editor = *rs[4].me();
    write(
        &mut rs[4],
        &coord::member_key(&slug, &editor),
        serde_json::json!({}),
        NOW + 20,
    );
    sync_all(&mut rs, &space());
    for r in &rs {
        let swarm = &snapshot(r, NOW + 25).swarms[&slug];
        assert_eq!(swarm.members, vec![editor]);
        assert_eq!(swarm.state, SwarmState::Forming);
    }
    // The reviewer joins: 2 of 2, active on every replica, from the second join's time.
    let reviewer = *rs[3].me();
    write(
        &mut rs[3],
        &coord::member_key(&slug, &reviewer),
        serde_json::json!({}),
        NOW + 30,
    );
    // The researcher lacks the capability: its join counts nowhere, with the reason.
    let researcher = *rs[1].me();
    write(
        &mut rs[1],
        &coord::member_key(&slug, &researcher),
        serde_json::json!({}),
        NOW + 31,
    );
    sync_all(&mut rs, &space());
    let first = snapshot(&rs[0], NOW + 40).swarms[&slug].clone();
    assert_eq!(first.state, SwarmState::Active);
    assert_eq!(first.activated_at_ms, Some(NOW + 30));
    assert_eq!(first.members.len(), 2);
    assert!(first.members.contains(&reviewer) && first.members.contains(&editor));
    assert_eq!(first.refused.len(), 1);
    assert_eq!(first.refused[0].0, researcher);
    assert!(
        first.refused[0].1.contains("lacks reviewing"),
        "{:?}",
        first.refused
    );
    for r in &rs {
        assert_eq!(snapshot(r, NOW + 40).swarms[&slug], first);
    }
    // The editor leaves after activation: below the threshold, so dissolved.
    let member = rs[4]
        .retract(
            &space(),
            &coord::member_key(&slug, &editor).parse().unwrap(),
            None,
            NOW + 50,
        )
        .unwrap();
    let _ = member;
    sync_all(&mut rs, &space());
    for r in &rs {
        let swarm = &snapshot(r, NOW + 60).swarms[&slug];
        assert!(
            matches!(&swarm.state, SwarmState::Dissolved { reason } if reason.contains("below the threshold")),
            "{:?}",
            swarm.state
        );
    }
}

#[test]
fn the_creator_dissolves_and_ttl_expires() {
    let mut rs = five();
    write(
        &mut rs[0],
        &coord::swarm_key("a"),
        serde_json::json!({"name": "a", "capability": "research", "threshold": 1}),
        NOW,
    );
    let mut draft = Draft::new(
        coord::swarm_key("b").parse().unwrap(),
        serde_json::json!({"name": "b", "capability": "research", "threshold": 1}).to_string(),
        Some(Tier::Public),
    );
    draft.ttl_ms = Some(1000);
    rs[0].expose(&space(), draft, NOW).unwrap();
    rs[0]
        .retract(
            &space(),
            &coord::swarm_key("a").parse().unwrap(),
            None,
            NOW + 5,
        )
        .unwrap();
    sync_all(&mut rs, &space());
    let snap = snapshot(&rs[2], NOW + 2000);
    assert_eq!(
        snap.swarms["a"].state,
        SwarmState::Dissolved {
            reason: "dissolved by its creator".into()
        }
    );
    assert_eq!(
        snap.swarms["b"].state,
        SwarmState::Dissolved {
            reason: "its ttl ran out".into()
        }
    );
    assert_eq!(
        snapshot(&rs[2], NOW + 10).swarms["b"].state,
        SwarmState::Forming
    );
}

fn post_task(r: &mut Replica, id: &str, capability: &str) {
    write(
        r,
        &coord::task_key(id),
        serde_json::json!({"description": "review the brief", "capability": capability}),
        NOW,
    );
}

fn claim(r: &mut Replica, id: &str, lamport: u64, at: u64) {
    let key = coord::claim_key(id, r.me());
    write(r, &key, serde_json::json!({"lamport": lamport}), at);
}

#[test]
fn a_partitioned_double_claim_has_one_winner_after_healing() {
    let mut rs = five();
    post_task(&mut rs[0], "t1", "reviewing");
    sync_all(&mut rs, &space());
    // Partition: the reviewer and the editor each claim, seeing only their side.
    claim(&mut rs[3], "t1", 1, NOW + 10);
    claim(&mut rs[4], "t1", 1, NOW + 11);
    // And the writer, without the capability.
    claim(&mut rs[2], "t1", 1, NOW + 12);
    {
        let (left, right) = rs.split_at_mut(4);
        sync_pair(&mut left[0], &mut right[0], &space());
    }
    sync_all(&mut rs, &space());
    let (reviewer, editor) = (*rs[3].me(), *rs[4].me());
    let expected = reviewer.min(editor);
    for r in &rs {
        let task = &snapshot(r, NOW + 20).tasks["t1"];
        assert_eq!(task.winner, Some(expected));
        assert_eq!(task.state, TaskState::Claimed);
        assert_eq!(task.claims.len(), 2);
        assert_eq!(task.refused.len(), 1);
        assert!(task.refused[0].1.contains("lacks reviewing"));
    }
    // The winner completes it; everyone sees the result.
    let winner = rs.iter().position(|r| *r.me() == expected).unwrap();
    let key = coord::outcome_key("t1", &expected);
    let result = write(
        &mut rs[winner],
        &key,
        serde_json::json!({"status": "completed", "result": "looks good"}),
        NOW + 30,
    );
    // A loser's outcome counts for nothing.
    let loser = if winner == 3 { 4 } else { 3 };
    let loser_key = coord::outcome_key("t1", &rs[loser].me().clone());
    write(
        &mut rs[loser],
        &loser_key,
        serde_json::json!({"status": "failed", "result": "x"}),
        NOW + 31,
    );
    sync_all(&mut rs, &space());
    for r in &rs {
        assert_eq!(
            snapshot(r, NOW + 40).tasks["t1"].state,
            TaskState::Completed {
                result: result.to_string()
            }
        );
    }
}

#[test]
fn verification_needs_k_verifiers_and_no_trusted_dispute() {
    let mut rs = five();
    let fact = rs[1]
        .expose(
            &space(),
            Draft::new("findings.x".parse().unwrap(), "x", Some(Tier::Public)),
            NOW,
        )
        .unwrap()
        .id;
    let owner = *rs[1].me();
    let verdict = |r: &mut Replica, v: &str, at| {
        let key = coord::verdict_key(&fact, r.me());
        write(r, &key, serde_json::json!({"verdict": v, "note": ""}), at);
    };
    verdict(&mut rs[1], "verify", NOW + 1); // the owner's own verdict does not count
    verdict(&mut rs[2], "verify", NOW + 2);
    sync_all(&mut rs, &space());
    let reader = *rs[0].me();
    let check = |r: &Replica| {
        coord::verification(
            r.index(&space()).unwrap(),
            &fact,
            Some(&owner),
            &reader,
            &r.trust(&space()),
            2,
        )
    };
    let v = check(&rs[0]);
    assert_eq!((v.verifiers.len(), v.verified), (1, false));
    verdict(&mut rs[3], "verify", NOW + 3);
    sync_all(&mut rs, &space());
    assert!(check(&rs[0]).verified);
    // An untrusted dispute leaves it verified; once the reader trusts the disputer, it is
    // contested.
    verdict(&mut rs[4], "dispute", NOW + 4);
    sync_all(&mut rs, &space());
    let v = check(&rs[0]);
    assert!(v.verified && !v.contested);
    let disputer = *rs[4].me();
    rs[0]
        .set_trust(&space(), disputer, Score::from_f64(0.8).unwrap(), NOW + 5)
        .unwrap();
    sync_all(&mut rs, &space());
    let v = check(&rs[0]);
    assert!(!v.verified && v.contested);
}

#[test]
fn kinds_and_verified_filter_queries_and_searches() {
    let mut rs = five();
    let put = |r: &mut Replica, key: &str, value: &str, kind: EntryKind, at| {
        let mut draft = Draft::new(key.parse().unwrap(), value, Some(Tier::Public));
        draft.kind = kind;
        r.expose(&space(), draft, at).unwrap().id
    };
    let fact = put(
        &mut rs[1],
        "rivers.nile",
        "the nile river floods",
        EntryKind::Fact,
        NOW,
    );
    let guess = put(
        &mut rs[1],
        "rivers.amazon",
        "the amazon river may flood",
        EntryKind::Hypothesis,
        NOW,
    );
    put(
        &mut rs[2],
        "rivers.po",
        "the po river flooded",
        EntryKind::Finding,
        NOW,
    );
    for r in &mut rs[2..4] {
        let key = coord::verdict_key(&fact, r.me());
        write(
            r,
            &key,
            serde_json::json!({"verdict": "verify", "note": ""}),
            NOW + 1,
        );
    }
    sync_all(&mut rs, &space());
    let reader = Reader::open(*rs[0].me());
    let pattern: Pattern = "rivers.**".parse().unwrap();
    let query = |r: &Replica, filter: &Filter| -> Vec<EnvelopeId> {
        let answer = r
            .query_with(&reader, &space(), &pattern, NOW + 2, false, filter)
            .unwrap();
        assert_eq!(answer.hits.len(), answer.hit_tokens.len());
        answer.hits.iter().map(|e| e.id()).collect()
    };
    let search = |r: &Replica, filter: &Filter| -> Vec<EnvelopeId> {
        r.search_with(&reader, &space(), "river flood", 2000, NOW + 2, filter)
            .unwrap()
            .hits
            .iter()
            .map(|h| h.entry.id())
            .collect()
    };
    assert_eq!(query(&rs[0], &Filter::default()).len(), 3);
    assert_eq!(search(&rs[0], &Filter::default()).len(), 3);
    let facts_and_guesses = Filter::kinds([EntryKind::Fact, EntryKind::Hypothesis]);
    let mut want = vec![fact, guess];
    want.sort();
    let mut got = query(&rs[0], &facts_and_guesses);
    got.sort();
    assert_eq!(got, want);
    let mut got = search(&rs[0], &facts_and_guesses);
    got.sort();
    assert_eq!(got, want);
    let verified = Filter {
        verified: Some(2),
        ..Filter::default()
    };
    assert_eq!(query(&rs[0], &verified), vec![fact]);
    assert_eq!(search(&rs[0], &verified), vec![fact]);
    // k = 3 is more verifiers than it has.
    let three = Filter {
        verified: Some(3),
        ..Filter::default()
    };
    assert!(query(&rs[0], &three).is_empty() && search(&rs[0], &three).is_empty());
    // A dispute by someone the reader trusts takes it out.
    let key = coord::verdict_key(&fact, rs[4].me());
    write(
        &mut rs[4],
        &key,
        serde_json::json!({"verdict": "dispute", "note": ""}),
        NOW + 3,
    );
    let disputer = *rs[4].me();
    rs[0]
        .set_trust(&space(), disputer, Score::from_f64(0.8).unwrap(), NOW + 3)
        .unwrap();
    sync_all(&mut rs, &space());
    assert!(query(&rs[0], &verified).is_empty() && search(&rs[0], &verified).is_empty());
}

#[test]
fn role_hints_follow_context_gaps_and_conflicts() {
    let mut rs = five();
    // A review swarm the reviewer and the editor join; the reviewer holds more of the
    // relevant knowledge.
    let slug = coord::slug("Final Review").unwrap();
    let spec =
        serde_json::json!({"name": "Final Review", "capability": "reviewing", "threshold": 2});
    write(&mut rs[0], &coord::swarm_key(&slug), spec, NOW + 1);
    for i in [3, 4] {
        let me = *rs[i].me();
        write(
            &mut rs[i],
            &coord::member_key(&slug, &me),
            serde_json::json!({}),
            NOW + 2,
        );
    }
    let note = |r: &mut Replica, key: &str, text: &str| {
        r.expose(
            &space(),
            Draft::new(key.parse().unwrap(), text, Some(Tier::Public)),
            NOW + 3,
        )
        .unwrap();
    };
    note(
        &mut rs[3],
        "notes.a",
        "final review checklist for reviewing drafts",
    );
    note(&mut rs[3], "notes.b", "reviewing the final figures");
    note(&mut rs[4], "notes.c", "a final review of the intro");
    note(&mut rs[2], "notes.d", "final review style guide");
    sync_all(&mut rs, &space());
    let hints = |r: &Replica| {
        let index = r.index(&space()).unwrap();
        coord::coordinate_hints(index, &coord::snapshot(index, NOW + 5), r.me())
    };
    let reviewer = hints(&rs[3]);
    assert_eq!(reviewer.len(), 1, "{reviewer:?}");
    assert_eq!(
        (reviewer[0].role, reviewer[0].subject.as_str()),
        ("coordinate", "final-review")
    );
    assert!(
        reviewer[0].reason.contains("2 of the 3"),
        "{}",
        reviewer[0].reason
    );
    // The editor holds less; the writer holds some but is not a member.
    assert!(hints(&rs[4]).is_empty() && hints(&rs[2]).is_empty());

    // A task for writing, posted by the orchestrator: a gap for the writer only, until
    // someone claims it.
    post_task(&mut rs[0], "draft-brief", "writing");
    sync_all(&mut rs, &space());
    let gaps = |r: &Replica| {
        let index = r.index(&space()).unwrap();
        coord::gaps(index, &coord::snapshot(index, NOW + 10), r.me())
    };
    let writer = gaps(&rs[2]);
    assert_eq!(writer.len(), 1);
    assert_eq!(
        (writer[0].0.as_str(), writer[0].2.as_str()),
        ("draft-brief", "writing")
    );
    assert!(gaps(&rs[0]).is_empty() && gaps(&rs[3]).is_empty());
    claim(&mut rs[2], "draft-brief", 1, NOW + 11);
    sync_all(&mut rs, &space());
    assert!(gaps(&rs[2]).is_empty());

    // The researcher and the writer disagree on a key: the others may mediate.
    note(&mut rs[1], "findings.rate", "3.7 mm/yr");
    note(&mut rs[2], "findings.rate", "3.2 mm/yr");
    sync_all(&mut rs, &space());
    let all: Pattern = "findings.**".parse().unwrap();
    let conflicts = rs[0].conflicts(&space(), &all);
    assert_eq!(conflicts.len(), 1);
    let hint = coord::mediate_hint(&conflicts[0], rs[0].me()).unwrap();
    assert_eq!(
        (hint.role, hint.subject.as_str()),
        ("mediate", "findings.rate")
    );
    assert!(coord::mediate_hint(&conflicts[0], rs[1].me()).is_none());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Joins, leaves and claims made on different replicas, synced in any order of pairs,
    /// end in the same swarm states and task winners everywhere.
    #[test]
    fn any_delivery_order_gives_the_same_states(
        claims in proptest::collection::vec((0usize..5, 1u64..4), 1..6),
        joins in proptest::collection::vec((0usize..5, any::<bool>()), 1..8),
        order in proptest::collection::vec((0usize..5, 0usize..5), 4..20),
    ) {
        let mut rs = five();
        post_task(&mut rs[0], "t", "reviewing");
        write(
            &mut rs[0],
            &coord::swarm_key("s"),
            serde_json::json!({"name": "s", "capability": "reviewing", "threshold": 2}),
            NOW,
        );
        let mut t = NOW + 1;
        for (who, lamport) in claims {
            claim(&mut rs[who], "t", lamport, t);
            t += 1;
        }
        for (who, leave) in joins {
            let key = coord::member_key("s", &rs[who].me().clone());
            if leave {
                let _ = rs[who].retract(&space(), &key.parse().unwrap(), None, t);
            } else {
                write(&mut rs[who], &key, serde_json::json!({}), t);
            }
            t += 1;
        }
        for (i, j) in order {
            if i != j {
                let (a, b) = (i.min(j), i.max(j));
                let (left, right) = rs.split_at_mut(b);
                sync_pair(&mut left[a], &mut right[0], &space());
            }
        }
        sync_all(&mut rs, &space());
        let first = snapshot(&rs[0], t);
        for r in &rs[1..] {
            let other = snapshot(r, t);
            prop_assert_eq!(&other.swarms["s"], &first.swarms["s"]);
            prop_assert_eq!(&other.tasks["t"], &first.tasks["t"]);
        }
    }
}

#[test]
fn discover_ranks_by_card_words_and_track_record() {
    let mut rs = five();
    // Both the reviewer and the editor review; the reviewer completes a task, the editor
    // fails one.
    post_task(&mut rs[0], "t1", "reviewing");
    post_task(&mut rs[0], "t2", "reviewing");
    sync_all(&mut rs, &space());
    claim(&mut rs[3], "t1", 1, NOW + 1);
    claim(&mut rs[4], "t2", 1, NOW + 1);
    sync_all(&mut rs, &space());
    let (reviewer, editor) = (*rs[3].me(), *rs[4].me());
    write(
        &mut rs[3],
        &coord::outcome_key("t1", &reviewer),
        serde_json::json!({"status": "completed", "result": "ok"}),
        NOW + 2,
    );
    write(
        &mut rs[4],
        &coord::outcome_key("t2", &editor),
        serde_json::json!({"status": "failed", "result": "no time"}),
        NOW + 2,
    );
    sync_all(&mut rs, &space());
    let snap = snapshot(&rs[0], NOW + 3);
    assert_eq!(snap.standings[&reviewer].completed["reviewing"], 1);
    assert_eq!(snap.standings[&editor].failed["reviewing"], 1);
    let found = coord::discover(&snap, "who can review a draft brief");
    let order: Vec<_> = found.iter().map(|c| c.agent).collect();
    assert_eq!(order, vec![reviewer, editor], "{found:?}");
    assert!(found[0].score > found[1].score);
    assert_eq!(found[0].capability, "reviewing");
    // Nobody's card speaks of cooking.
    assert!(coord::discover(&snap, "cook a risotto").is_empty());
    // Outcomes fade: ten half-lives on, both are back near neutral (1), the counts kept.
    let later = snapshot(&rs[0], NOW + 10 * coord::STANDING_HALF_LIFE_MS);
    let weight = |s: &coord::Snapshot, who| s.standings[who].weight(Some("reviewing"));
    let (good, bad) = (weight(&snap, &reviewer), weight(&snap, &editor));
    let (good_later, bad_later) = (weight(&later, &reviewer), weight(&later, &editor));
    assert!(
        good > good_later && good_later > 1.0 && good_later < 1.01,
        "{good} {good_later}"
    );
    assert!(
        bad < bad_later && bad_later < 1.0 && bad_later > 0.99,
        "{bad} {bad_later}"
    );
    assert_eq!(later.standings[&reviewer].completed["reviewing"], 1);
}

#[test]
fn teams_that_completed_tasks_together_rank_first() {
    let mut rs = five();
    let (writer, reviewer, editor) = (*rs[2].me(), *rs[3].me(), *rs[4].me());
    // Two pairs: the writer with the editor, the writer with the reviewer.
    for (slug, partner) in [("pair-a", 4), ("pair-b", 3)] {
        let spec = serde_json::json!({"name": slug, "capability": "*", "threshold": 2});
        write(&mut rs[0], &coord::swarm_key(slug), spec, NOW);
        for i in [2, partner] {
            let me = *rs[i].me();
            write(
                &mut rs[i],
                &coord::member_key(slug, &me),
                serde_json::json!({}),
                NOW + 1,
            );
        }
    }
    // Writing tasks posted to each pair; the writer wins them all, so standings in
    // reviewing stay equal: pair a completes two, pair b fails one.
    let post = |r: &mut Replica, id: &str, swarm: &str| {
        let spec = serde_json::json!({
            "description": "draft", "capability": "writing", "swarm": swarm
        });
        write(r, &coord::task_key(id), spec, NOW + 2);
    };
    post(&mut rs[0], "a1", "pair-a");
    post(&mut rs[0], "a2", "pair-a");
    post(&mut rs[0], "b1", "pair-b");
    post(&mut rs[0], "loose", "no-such-swarm");
    sync_all(&mut rs, &space());
    for (id, status) in [("a1", "completed"), ("a2", "completed"), ("b1", "failed")] {
        claim(&mut rs[2], id, 1, NOW + 3);
        write(
            &mut rs[2],
            &coord::outcome_key(id, &writer),
            serde_json::json!({"status": status, "result": "x"}),
            NOW + 4,
        );
    }
    sync_all(&mut rs, &space());
    let snap = snapshot(&rs[0], NOW + 5);
    assert_eq!(snap.tasks["a1"].swarm.as_deref(), Some("pair-a"));
    let a = &snap.teams["pair-a"];
    assert_eq!((a.completed, a.failed), (2, 0));
    let b = &snap.teams["pair-b"];
    assert_eq!((b.completed, b.failed), (0, 1));
    assert_eq!(
        snap.teams.len(),
        2,
        "a task posted to no known swarm counts for no team"
    );
    assert!((coord::teamwork(&snap, &editor, &[writer]) - 1.5).abs() < 1e-9);
    assert!((coord::teamwork(&snap, &reviewer, &[writer]) - 2.0 / 3.0).abs() < 1e-9);
    assert_eq!(coord::teamwork(&snap, &editor, &[reviewer]), 1.0);
    assert_eq!(coord::teamwork(&snap, &writer, &[writer]), 1.0);
    // Without a team the two reviewers tie (lowest id first); for the writer's team, the
    // editor, who completed tasks with the writer, comes first.
    let ids = |with: &[membrane_protocol::PublicKey]| -> Vec<_> {
        coord::discover_with(&snap, "review a draft", with)
            .iter()
            .map(|c| c.agent)
            .filter(|a| *a == reviewer || *a == editor)
            .collect()
    };
    let mut tie = vec![reviewer, editor];
    tie.sort();
    assert_eq!(ids(&[]), tie);
    assert_eq!(ids(&[writer]), vec![editor, reviewer]);
}

#[test]
fn a_slot_naming_someone_else_counts_for_nothing() {
    let mut rs = five();
    write(
        &mut rs[0],
        &coord::swarm_key("s"),
        serde_json::json!({"name": "s", "capability": "reviewing", "threshold": 1}),
        NOW,
    );
    // The researcher writes into the reviewer's member slot; the reviewer's own join counts.
    let reviewer = *rs[3].me();
    write(
        &mut rs[1],
        &coord::member_key("s", &reviewer),
        serde_json::json!({}),
        NOW + 1,
    );
    sync_all(&mut rs, &space());
    assert!(snapshot(&rs[0], NOW + 2).swarms["s"].members.is_empty());
    write(
        &mut rs[3],
        &coord::member_key("s", &reviewer),
        serde_json::json!({}),
        NOW + 3,
    );
    sync_all(&mut rs, &space());
    assert_eq!(
        snapshot(&rs[0], NOW + 4).swarms["s"].members,
        vec![reviewer]
    );
}
