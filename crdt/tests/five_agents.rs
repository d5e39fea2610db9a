//! The five-agent scenario's medium steps (1–12 of `shared/scenarios/five-agents.md`) over
//! five replicas that only meet through validated sync.
#![allow(clippy::unwrap_used, clippy::panic, clippy::needless_range_loop)]

mod common;

use common::{NOW, Replica, replica, space, sync_all};
use membrane_crdt::Draft;
use membrane_protocol::permeability::Reader;
use membrane_protocol::{EntryKind, Evidence, Pattern, PublicKey, Score, Space, Tier};

const ORCHESTRATOR: usize = 0;
const RESEARCHER: usize = 1;
const WRITER: usize = 2;
const EDITOR: usize = 3;
const REVIEWER: usize = 4;
const NAMES: [&str; 5] = ["orchestrator", "researcher", "writer", "editor", "reviewer"];

fn key_of(agents: &[Replica], i: usize) -> PublicKey {
    *agents[i].me()
}

fn expose(
    agents: &mut [Replica],
    who: usize,
    key: &str,
    value: &str,
    tier: Tier,
) -> membrane_protocol::EnvelopeId {
    let mut draft = Draft::new(key.parse().unwrap(), value, Some(tier));
    draft.kind = EntryKind::Finding;
    draft.evidence = Evidence::ExternalSource;
    agents[who].expose(&space(), draft, NOW).unwrap().id
}

fn query(agents: &[Replica], who: usize, pattern: &str) -> membrane_crdt::QueryAnswer {
    let reader = Reader::open(key_of(agents, who));
    let pattern: Pattern = pattern.parse().unwrap();
    agents[who]
        .query(&reader, &space(), &pattern, NOW, false)
        .unwrap()
}

fn name(agents: &[Replica], key: &PublicKey) -> String {
    (0..5)
        .find(|i| &key_of(agents, *i) == key)
        .map(|i| NAMES[i].to_owned())
        .unwrap_or_else(|| key.short())
}

fn scenario() -> (Vec<Replica>, Space) {
    let space = space();
    let mut agents: Vec<Replica> = (1..=5).map(replica).collect();
    for a in &mut agents {
        a.join(space.clone()).unwrap();
    }
    // 2. Trust edges.
    for (from, to, score) in [
        (ORCHESTRATOR, WRITER, 0.7),
        (ORCHESTRATOR, EDITOR, 0.7),
        (ORCHESTRATOR, RESEARCHER, 0.7),
        (WRITER, EDITOR, 0.9),
        (EDITOR, WRITER, 0.9),
        (EDITOR, REVIEWER, 0.8),
    ] {
        let trustee = key_of(&agents, to);
        agents[from]
            .set_trust(&space, trustee, Score::from_f64(score).unwrap(), NOW)
            .unwrap();
    }
    // 3. The brief.
    expose(
        &mut agents,
        ORCHESTRATOR,
        "tasks.brief",
        "Write a 500-word brief on how cities adapt to climate change",
        Tier::Public,
    );
    sync_all(&mut agents, &space);
    (agents, space)
}

#[test]
fn the_scenario_decides_as_written_over_synced_replicas() {
    let (mut agents, space) = scenario();

    // 4. researcher queries tasks.* → one hit, the brief.
    let answer = query(&agents, RESEARCHER, "tasks.*");
    assert_eq!(answer.hits.len(), 1);
    assert_eq!(answer.hits[0].body().key.as_str(), "tasks.brief");

    // 5. researcher's findings, three public and one private.
    for (k, v) in [
        (
            "findings.heat_islands",
            "Urban heat islands add 2-5 C at night",
        ),
        (
            "findings.coastal_risk",
            "Coastal cities face rising flood risk",
        ),
        ("findings.green_infra", "Green roofs cut runoff by half"),
    ] {
        expose(&mut agents, RESEARCHER, k, v, Tier::Public);
    }
    expose(
        &mut agents,
        RESEARCHER,
        "findings.notes_internal",
        "TODO verify IPCC citation",
        Tier::Private,
    );
    sync_all(&mut agents, &space);

    // 6. writer: exactly 3 hits, one hidden, never the private value.
    let answer = query(&agents, WRITER, "findings.*");
    assert_eq!(answer.hits.len(), 3);
    assert_eq!(answer.hidden, 1);
    assert!(answer.denied.is_empty());
    assert!(answer.hits.iter().all(|e| !e.body().value.contains("IPCC")));
    // What was withheld, and why, for the node's audit log: the key, never the value.
    assert_eq!(answer.withheld.len(), 1);
    assert_eq!(
        answer.withheld[0].key.as_str(),
        "findings.notes_internal",
        "{:?}",
        answer.withheld
    );
    assert_eq!(answer.withheld[0].reason, "private to its owner");

    // 7. writer's trusted drafts.
    for k in ["drafts.intro", "drafts.body", "drafts.outro"] {
        expose(
            &mut agents,
            WRITER,
            k,
            &format!("text of {k}"),
            Tier::Trusted,
        );
    }
    sync_all(&mut agents, &space);

    // 8. reviewer is denied, with the reason.
    let answer = query(&agents, REVIEWER, "drafts.*");
    assert!(answer.hits.is_empty());
    assert_eq!(answer.denied.len(), 3);
    for denial in &answer.denied {
        assert_eq!(
            denial.reason.describe(|k| name(&agents, k)),
            "writer's trust in reviewer is 0.00 < 0.50"
        );
    }

    // 9. editor sees the three drafts.
    assert_eq!(query(&agents, EDITOR, "drafts.*").hits.len(), 3);

    // 10. editor's trusted feedback reaches the writer.
    for k in ["feedback.intro", "feedback.body"] {
        expose(
            &mut agents,
            EDITOR,
            k,
            &format!("notes on {k}"),
            Tier::Trusted,
        );
    }
    sync_all(&mut agents, &space);
    assert_eq!(query(&agents, WRITER, "feedback.*").hits.len(), 2);

    // 11. writer retracts drafts.intro: gone from every query, the retraction recorded.
    agents[WRITER]
        .retract(
            &space,
            &"drafts.intro".parse().unwrap(),
            Some("superseded".into()),
            NOW,
        )
        .unwrap();
    sync_all(&mut agents, &space);
    for who in 0..5 {
        let answer = query(&agents, who, "drafts.*");
        assert!(
            answer
                .hits
                .iter()
                .all(|e| e.body().key.as_str() != "drafts.intro"),
            "{} still sees drafts.intro",
            NAMES[who]
        );
        assert!(
            answer
                .denied
                .iter()
                .all(|d| d.key.as_str() != "drafts.intro"),
            "{} still hears of drafts.intro",
            NAMES[who]
        );
    }
    assert_eq!(query(&agents, EDITOR, "drafts.*").hits.len(), 2);

    // 12. final.brief, remixed from the findings and feedback.
    let parents: Vec<_> = query(&agents, WRITER, "findings.*")
        .hits
        .iter()
        .chain(query(&agents, WRITER, "feedback.*").hits.iter())
        .map(|e| e.id())
        .collect();
    let mut draft = Draft::new(
        "final.brief".parse().unwrap(),
        "Cities adapt by …",
        Some(Tier::Public),
    );
    draft.parents = parents.clone();
    agents[WRITER].expose(&space, draft, NOW).unwrap();
    sync_all(&mut agents, &space);
    for who in 0..5 {
        let answer = query(&agents, who, "final.*");
        assert_eq!(answer.hits.len(), 1, "{}", NAMES[who]);
        assert_eq!(answer.hits[0].body().parents, parents);
    }

    // 16 (the medium's part). Every replica that may see a thing sees the same thing.
    let public_heads: Vec<_> = agents
        .iter()
        .map(|a| {
            a.heads(&membrane_crdt::DocId::public(space.clone()))
                .unwrap()
        })
        .collect();
    assert!(public_heads.windows(2).all(|w| w[0] == w[1]));
    for pattern in ["**", "findings.*", "drafts.*", "final.*"] {
        for who in 0..5 {
            let here = query(&agents, who, pattern);
            // Every other replica answering for the same reader gives the same answer.
            for other in 0..5 {
                let reader = Reader::open(key_of(&agents, who));
                let there = agents[other]
                    .query(&reader, &space, &pattern.parse().unwrap(), NOW, false)
                    .unwrap();
                if other == who {
                    continue;
                }
                // Another replica may lack documents the reader may see (it is not in
                // their audience); it must never show more.
                assert!(there.hits.len() <= here.hits.len());
                for hit in &there.hits {
                    assert!(here.hits.contains(hit));
                }
            }
        }
    }
}

#[test]
fn trusted_documents_reach_only_trusted_peers() {
    let (mut agents, space) = scenario();
    for k in ["drafts.intro", "drafts.body"] {
        expose(&mut agents, WRITER, k, "SECRET-DRAFT-TEXT", Tier::Trusted);
    }
    expose(
        &mut agents,
        RESEARCHER,
        "findings.notes_internal",
        "SECRET-PRIVATE-NOTE",
        Tier::Private,
    );
    sync_all(&mut agents, &space);
    for who in 0..5 {
        // Every document this replica holds, saved to bytes.
        let docs = agents[who].docs(&space);
        let bytes: Vec<u8> = docs
            .iter()
            .flat_map(|d| d.automerge().save_nocompress())
            .collect();
        let contains = |needle: &str| bytes.windows(needle.len()).any(|w| w == needle.as_bytes());
        assert!(
            !contains("SECRET-PRIVATE-NOTE"),
            "{} holds the private note",
            NAMES[who]
        );
        let may_read_drafts = who == WRITER || who == EDITOR;
        assert_eq!(
            contains("SECRET-DRAFT-TEXT"),
            may_read_drafts,
            "{} draft visibility",
            NAMES[who]
        );
    }
}
