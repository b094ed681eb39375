//! Re-fired windows into PostgreSQL: every firing of a window upserts the
//! row with the window's `_id`, so the table ends with one row per window
//! holding its final value and revision, whatever the batch size.

use std::sync::Arc;

use weir_engine::{run, Input, RunOptions};

fn client() -> postgres::Client {
    postgres::Client::connect(
        "host=127.0.0.1 port=5432 user=postgres dbname=test",
        postgres::NoTls,
    )
    .expect("connect to PostgreSQL")
}

/// Tumbling 10 s counts with 60 s of allowed lateness into `table`.
fn pipeline(batch_rows: usize, table: &str) -> String {
    format!(
        r#"
name = "window_upsert"

[settings]
batch_rows = {batch_rows}

[[sources]]
name = "events"
type = "memory"
framing = "lines"

[[steps]]
name = "decode"
type = "decode"
input = "events"
format = "json"
event_time = "ts"
max_out_of_orderness = "2s"
fields = [
  {{ name = "key", type = "string" }},
  {{ name = "ts", type = "i64" }},
]

[[steps]]
name = "by_key"
type = "key_by"
input = "decode"
key = "key"

[[steps]]
name = "win"
type = "window"
input = "by_key"
kind = "tumbling"
size = "10s"
allowed_lateness = "60s"
revision_column = "_revision"
aggregates = {{ n = "count(*)" }}

[[sinks]]
name = "out"
type = "postgres"
input = "win"
url = "postgres://postgres@127.0.0.1:5432/test"
table = "{table}"
"#
    )
}

#[test]
#[ignore = "integration: needs PostgreSQL on 127.0.0.1:5432 (database test)"]
fn refired_windows_leave_one_row_per_window() {
    let input = "{\"key\":\"a\",\"ts\":1000}\n{\"key\":\"a\",\"ts\":3000}\n\
                 {\"key\":\"a\",\"ts\":50000}\n{\"key\":\"a\",\"ts\":2000}\n";
    let mut tables = Vec::new();
    for batch_rows in [1, 4096] {
        let table = format!("weir_window_upsert_{}_{batch_rows}", std::process::id());
        let dir = tempfile::tempdir().expect("temp dir");
        let p = weir_config::parse(&pipeline(batch_rows, &table), dir.path())
            .unwrap_or_else(|e| panic!("invalid test pipeline: {e:#?}"));
        run(
            &p,
            RunOptions {
                input: Input::Bytes(Arc::new(input.as_bytes().to_vec())),
                ..Default::default()
            },
        )
        .expect("pipeline runs");
        let rows: Vec<(String, i64, i64, i64, String)> = client()
            .query(
                &format!(
                    "SELECT key, window_start, n, \"_revision\", _id::text FROM {table} \
                     ORDER BY window_start"
                ),
                &[],
            )
            .expect("read the table")
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
            .collect();
        client()
            .execute(&format!("DROP TABLE {table}"), &[])
            .expect("drop the table");
        tables.push(rows);
    }
    let (per_record, one_batch) = (&tables[0], &tables[1]);
    let strip = |rows: &[(String, i64, i64, i64, String)]| {
        rows.iter()
            .map(|(k, s, n, _, id)| (k.clone(), *s, *n, id.clone()))
            .collect::<Vec<_>>()
    };
    // One record per batch: [0, 10000) fired with 2, then with 3 (the
    // late a@2000): one row, revision 1.
    let revisions: Vec<i64> = per_record.iter().map(|r| r.3).collect();
    assert_eq!(revisions, [1, 0], "{per_record:?}");
    let counts: Vec<(i64, i64)> = per_record.iter().map(|r| (r.1, r.2)).collect();
    assert_eq!(counts, [(0, 3), (50000, 1)]);
    // One batch: each window fired once; same rows, same ids.
    assert_eq!(strip(per_record), strip(one_batch));
}
