//! Group commit and failures: a message the database refuses is answered
//! with an error, and the other messages of its batch still commit.

use crate::common::{Harness, SimAgent};
use kattila_agent::push::PushError;
use kattila_agent::simulate::SimFleet;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_message_does_not_cost_its_batch_neighbours_their_commit() {
    let h = Harness::start(|_| {}).await;
    let fleet = SimFleet::new("batch", 41);
    let mut agents: Vec<SimAgent> =
        (0..fleet.agents.len()).map(|i| SimAgent::new(&fleet, i)).collect();
    // The first report creates the schema and every agent's state.
    for a in &mut agents {
        a.send(&h.url).await.expect("first report");
    }
    // A trigger makes the database refuse one agent's next report, as a
    // full disk or a corrupt page would.
    let poisoned = agents[0].id().to_string();
    h.conn()
        .execute_batch(&format!(
            "CREATE TRIGGER poison BEFORE INSERT ON reports WHEN NEW.agent_id = '{poisoned}'
             BEGIN SELECT RAISE(ABORT, 'refused by the test'); END;"
        ))
        .unwrap();
    let url = h.url.clone();
    let sends = agents.into_iter().map(|mut a| {
        let url = url.clone();
        tokio::spawn(async move {
            let result = a.send(&url).await;
            (a, result)
        })
    });
    let results = futures_join_all(sends).await;

    let count = |agent: &str| -> i64 {
        h.conn()
            .query_row("SELECT count(*) FROM reports WHERE agent_id = ?1", [agent], |r| r.get(0))
            .unwrap()
    };
    let mut refused_agent = None;
    for (agent, result) in results {
        let id = agent.id().to_string();
        if id == poisoned {
            match &result {
                Err(PushError::Refused { status, code, .. }) => {
                    assert_eq!((*status, code.as_str()), (503, "storage"))
                }
                other => panic!("the refused report got {other:?}"),
            }
            assert_eq!(count(&id), 1, "only the first report of the refused agent is stored");
            refused_agent = Some(agent);
        } else {
            assert!(result.is_ok(), "{id}: {result:?}");
            assert_eq!(count(&id), 2, "{id}: both reports are stored");
        }
    }
    // The writer goes on after the failure, for that agent too.
    h.conn().execute_batch("DROP TRIGGER poison").unwrap();
    refused_agent.unwrap().send(&h.url).await.expect("accepted once the database takes it");
    assert_eq!(count(&poisoned), 2);
}

async fn futures_join_all<T: Send + 'static>(
    handles: impl Iterator<Item = tokio::task::JoinHandle<T>>,
) -> Vec<T> {
    let mut out = Vec::new();
    for h in handles.collect::<Vec<_>>() {
        out.push(h.await.unwrap());
    }
    out
}
