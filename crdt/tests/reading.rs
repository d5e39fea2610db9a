//! Search answers only what the reader may see, within its token budget, and follows the
//! medium as entries arrive, retract and expire; a late joiner replays to the same answers.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use common::{NOW, Replica, replica, space, sync_all, sync_pair};
use membrane_crdt::Draft;
use membrane_protocol::permeability::Reader;
use membrane_protocol::{Evidence, Pattern, Score, Tier};

fn expose(r: &mut Replica, key: &str, value: &str, tier: Tier) {
    r.expose(
        &space(),
        Draft::new(key.parse().unwrap(), value, Some(tier)),
        NOW,
    )
    .unwrap();
}

fn search(r: &Replica, text: &str, max_tokens: u32, now: u64) -> membrane_crdt::SearchAnswer {
    let reader = Reader::open(*r.me());
    r.search(&reader, &space(), text, max_tokens, now).unwrap()
}

#[test]
fn search_ranks_visible_entries_and_fits_the_budget() {
    let space = space();
    let mut a = replica(1);
    let mut b = replica(2);
    a.join(space.clone()).unwrap();
    b.join(space.clone()).unwrap();
    expose(
        &mut a,
        "city.heat",
        "urban heat islands raise night temperatures",
        Tier::Public,
    );
    expose(
        &mut a,
        "city.flood",
        "coastal flooding threatens ports",
        Tier::Public,
    );
    expose(
        &mut a,
        "city.secret",
        "heat heat heat private plan",
        Tier::Private,
    );
    expose(
        &mut a,
        "city.draft",
        "heat draft for trusted readers",
        Tier::Trusted,
    );
    sync_pair(&mut a, &mut b, &space);

    let answer = search(&b, "heat islands temperatures", 1000, NOW);
    let keys: Vec<&str> = answer
        .hits
        .iter()
        .map(|h| h.entry.body().key.as_str())
        .collect();
    assert_eq!(keys.first(), Some(&"city.heat"), "{keys:?}");
    assert!(!keys.contains(&"city.secret"));
    assert!(!keys.contains(&"city.draft"), "b is not trusted by a");
    assert_eq!(
        answer.total_tokens,
        answer.hits.iter().map(|h| u64::from(h.tokens)).sum::<u64>()
    );
    // The owner sees its own private and trusted entries.
    let own = search(&a, "heat", 1000, NOW);
    let own_keys: Vec<&str> = own
        .hits
        .iter()
        .map(|h| h.entry.body().key.as_str())
        .collect();
    assert!(own_keys.contains(&"city.secret") && own_keys.contains(&"city.draft"));

    // A budget too small for everything keeps within it and says what it left out.
    let one = answer.hits[0].tokens;
    let small = search(&b, "heat islands temperatures coastal flooding", one, NOW);
    assert!(small.total_tokens <= u64::from(one));
    assert!(small.left_out >= 1);
    let none = search(&b, "heat", 0, NOW);
    assert!(none.hits.is_empty());
}

#[test]
fn trust_and_evidence_weigh_in_ranking() {
    let space = space();
    let mut a = replica(1);
    let mut c = replica(3);
    let mut reader = replica(2);
    for r in [&mut a, &mut c, &mut reader] {
        r.join(space.clone()).unwrap();
    }
    // Same text from two owners; the reader trusts c.
    expose(&mut a, "x.a", "glacier melt accelerates", Tier::Public);
    expose(&mut c, "x.c", "glacier melt accelerates", Tier::Public);
    let c_key = *c.me();
    reader.set_trust(&space, c_key, Score::ONE, NOW).unwrap();
    let mut all = vec![a, c, reader];
    sync_all(&mut all, &space);
    let answer = search(&all[2], "glacier melt", 1000, NOW);
    assert_eq!(answer.hits[0].entry.owner(), &c_key);
    assert!(answer.hits[0].score > answer.hits[1].score);

    // Stronger evidence ranks higher, all else equal.
    let mut d = replica(4);
    d.join(space.clone()).unwrap();
    let mut weak = Draft::new(
        "y.weak".parse().unwrap(),
        "sea ice minimum record",
        Some(Tier::Public),
    );
    weak.evidence = Evidence::AgentOpinion;
    let mut strong = Draft::new(
        "y.strong".parse().unwrap(),
        "sea ice minimum record",
        Some(Tier::Public),
    );
    strong.evidence = Evidence::ToolResult;
    d.expose(&space, weak, NOW).unwrap();
    d.expose(&space, strong, NOW).unwrap();
    let answer = search(&d, "sea ice minimum", 1000, NOW);
    assert_eq!(answer.hits[0].entry.body().key.as_str(), "y.strong");
}

#[test]
fn search_follows_retraction_supersession_and_expiry() {
    let space = space();
    let mut a = replica(1);
    a.join(space.clone()).unwrap();
    expose(&mut a, "w.one", "wildfire smoke season", Tier::Public);
    let mut short = Draft::new(
        "w.short".parse().unwrap(),
        "wildfire alert today",
        Some(Tier::Public),
    );
    short.ttl_ms = Some(1_000);
    a.expose(&space, short, NOW).unwrap();
    assert_eq!(search(&a, "wildfire", 1000, NOW).hits.len(), 2);

    // Expired: gone from search and queries, unless the query asks for expired entries.
    let later = NOW + 1_000;
    assert_eq!(search(&a, "wildfire", 1000, later).hits.len(), 1);
    let reader = Reader::open(*a.me());
    let w: Pattern = "w.*".parse().unwrap();
    assert_eq!(
        a.query(&reader, &space, &w, later, false)
            .unwrap()
            .hits
            .len(),
        1
    );
    assert_eq!(
        a.query(&reader, &space, &w, later, true)
            .unwrap()
            .hits
            .len(),
        2
    );

    // Superseded: only the new value is found.
    expose(
        &mut a,
        "w.one",
        "wildfire smoke season now longer",
        Tier::Public,
    );
    let hits = search(&a, "wildfire smoke", 1000, NOW).hits;
    let values: Vec<&str> = hits.iter().map(|h| h.entry.body().value.as_str()).collect();
    assert!(values.contains(&"wildfire smoke season now longer"));
    assert!(!values.contains(&"wildfire smoke season"));

    // Retracted: gone.
    a.retract(&space, &"w.one".parse().unwrap(), None, NOW)
        .unwrap();
    assert!(
        search(&a, "smoke season", 1000, NOW)
            .hits
            .iter()
            .all(|h| h.entry.body().key.as_str() != "w.one")
    );
}

#[test]
fn a_late_joiner_replays_to_the_same_answers() {
    let space = space();
    let mut early: Vec<Replica> = (1..=3).map(replica).collect();
    for r in &mut early {
        r.join(space.clone()).unwrap();
    }
    for (i, r) in early.iter_mut().enumerate() {
        for k in 0..5 {
            expose(
                r,
                &format!("topic.r{i}k{k}"),
                &format!("finding {k} of replica {i} about rivers"),
                Tier::Public,
            );
        }
    }
    early[0]
        .retract(&space, &"topic.r0k0".parse().unwrap(), None, NOW)
        .unwrap();
    sync_all(&mut early, &space);

    let mut late = replica(9);
    late.join(space.clone()).unwrap();
    sync_pair(&mut early[1], &mut late, &space);
    let late_key = *late.me();
    let reader = Reader::open(late_key);
    let all = Pattern::all();
    let there = early[2].query(&reader, &space, &all, NOW, true).unwrap();
    let here = late.query(&reader, &space, &all, NOW, true).unwrap();
    assert_eq!(here, there);
    assert_eq!(here.hits.len(), 14);
    assert_eq!(
        late.search(&reader, &space, "rivers finding", 400, NOW)
            .unwrap(),
        early[0]
            .search(&reader, &space, "rivers finding", 400, NOW)
            .unwrap()
    );
}
