//! fraud-v1 end to end into PostgreSQL: alerts upserted on their output id.
//! The table must hold exactly the reference alerts, and running the whole
//! input again (a replay from scratch, no checkpoint) must change nothing.

use weir_config::{Credentials, PostgresSink, SinkKind, SourceKind};
use weir_engine::{run, RunOptions};
use weir_test_support::fraud::{assert_exact, reference, Alert};
use weir_test_support::names::unique;
use weir_test_support::pipelines::fraud_with;

const EVENTS: u64 = 20_000;

fn client() -> postgres::Client {
    postgres::Client::connect(
        "host=127.0.0.1 port=5432 user=postgres dbname=test",
        postgres::NoTls,
    )
    .expect("connect to PostgreSQL")
}

/// The table's rows as (alerts sorted, ids, row count).
fn table(name: &str) -> (Vec<Alert>, Vec<u64>) {
    let rows = client()
        .query(
            &format!("SELECT txn_id::text, card_id::text, score, _id::text FROM {name}"),
            &[],
        )
        .expect("read the table");
    let num = |s: String| s.parse::<u64>().expect("integer column");
    let mut alerts: Vec<Alert> = Vec::new();
    let mut ids = Vec::new();
    for r in rows {
        alerts.push((num(r.get(0)), num(r.get(1)), r.get::<_, f64>(2).to_bits()));
        ids.push(num(r.get(3)));
    }
    alerts.sort_unstable();
    (alerts, ids)
}

#[test]
#[ignore = "integration: needs PostgreSQL on 127.0.0.1:5432 (database test)"]
fn fraud_alerts_are_upserted_exactly_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let input = dir.path().join("transactions.jsonl");
    std::fs::write(&input, weir_workloads::fraud_v1::encode_json(EVENTS)).expect("write events");
    let table_name = unique("weir_alerts");
    let sink = SinkKind::Postgres(PostgresSink {
        host: "127.0.0.1".into(),
        port: 5432,
        database: "test".into(),
        table: table_name.clone(),
        create_table: true,
        credentials: Credentials {
            user: Some("postgres".into()),
            ..Default::default()
        },
    });
    let p = fraud_with(dir.path(), SourceKind::File { path: input }, sink, true);
    let summary = run(&p, RunOptions::default()).expect("pipeline runs");
    assert_eq!(summary.source_records, EVENTS);
    let expected = reference(EVENTS);
    let (alerts, ids) = table(&table_name);
    assert_exact(&alerts, &expected, "first run");

    // The same input again without the checkpoint: every alert is written
    // again with the same id, and the table does not change.
    let mut replay = p.clone();
    replay.checkpoint = None;
    run(&replay, RunOptions::default()).expect("replay runs");
    let (again, again_ids) = table(&table_name);
    assert_exact(&again, &expected, "after a replay");
    let (mut a, mut b) = (ids, again_ids);
    a.sort_unstable();
    b.sort_unstable();
    assert_eq!(a, b, "the same ids after a replay");

    client()
        .execute(&format!("DROP TABLE {table_name}"), &[])
        .expect("drop the table");
}
