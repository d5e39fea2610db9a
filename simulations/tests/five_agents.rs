//! The five-agent scenario over five real nodes, as CI runs it: every outcome the scenario
//! lists is checked by the scenario itself (it stops at the first that differs); this test
//! also pins the counts a reader compares with the design documents.

use std::sync::Arc;

use membrane_protocol::cost::Tiktoken;
use membrane_simulations::five_agents::{self, Options};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_five_agent_scenario_holds_over_five_real_nodes() {
    let tokens = Arc::new(Tiktoken::o200k().unwrap());
    let outcome = five_agents::run(Options::quick(), tokens)
        .await
        .unwrap_or_else(|f| panic!("{f}\n{}", f.transcript.join("\n")));
    let c = &outcome.counts;
    assert_eq!(c.subscriptions, 4);
    assert_eq!((c.broadcasts, c.deliveries), (1, 4));
    assert_eq!(c.swarms, 1);
    assert_eq!(c.trust_edges, 6);
    assert_eq!(
        (c.visible_entries, c.private_entries, c.retracted_entries),
        (9, 1, 1)
    );
    assert_eq!(c.events_per_node.len(), 5);
    assert!(c.events_per_node.iter().all(|(_, n)| *n > 0));
    assert_eq!(c.events_by_type.get("rejected"), None);
    let keys: Vec<(&str, &str, bool)> = outcome
        .state
        .iter()
        .map(|r| (r.key.as_str(), r.owner.as_str(), r.retracted))
        .collect();
    assert!(keys.contains(&("drafts.intro", "writer", true)));
    assert!(keys.contains(&("final.brief", "writer", false)));
    assert!(outcome.swarm.starts_with("final-review (active"));
    assert!(outcome.checks >= 80, "{}", outcome.checks);
    // One transcript line per action, each step's outcome among them.
    let transcript = outcome.transcript.join("\n");
    for expected in [
        "1 hit: tasks.brief",
        "3 hits, 1 hidden",
        "denied x3: writer's trust in reviewer is 0.00 < 0.50",
        "3 hits (writer trusts editor 0.9)",
        "2 hits (editor trusts writer 0.9)",
        "refused: your capability card lacks reviewing",
        "members 2/2, active",
        "delivered to 4/4 other agents",
        "drafts.intro stays retracted",
    ] {
        assert!(transcript.contains(expected), "{expected}\n{transcript}");
    }
}
