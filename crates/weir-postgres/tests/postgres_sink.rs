//! The PostgreSQL sink against a real server (127.0.0.1:5432, database
//! `test`, user `postgres`), plus the checks that refuse a sink before it
//! connects (these need no server).
//!
//! Each test uses its own table, named after the process and a counter,
//! and drops it at the end (also when it fails).

use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow_array::{
    ArrayRef, BooleanArray, Float32Array, Float64Array, Int32Array, Int64Array, RecordBatch,
    StringArray, UInt32Array, UInt64Array,
};
use arrow_schema::{DataType, Field, Schema};
use postgres::{Client, NoTls};
use weir_config::{Credentials, PostgresSink};
use weir_connect::{ConnectError, ConnectionState, SinkConnector};
use weir_test_support::names::unique;
use weir_test_support::net::free_port;
use weir_test_support::rows::Rows;

fn admin() -> Client {
    Client::connect("host=127.0.0.1 port=5432 user=postgres dbname=test", NoTls)
        .expect("connect to PostgreSQL on 127.0.0.1:5432 as postgres, database test")
}

/// Drops what a test created when it ends, passed or failed.
struct Cleanup(Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Ok(mut c) =
            Client::connect("host=127.0.0.1 port=5432 user=postgres dbname=test", NoTls)
        {
            for statement in &self.0 {
                let _ = c.batch_execute(statement);
            }
        }
    }
}

fn drop_table(table: &str) -> Cleanup {
    Cleanup(vec![format!("DROP TABLE IF EXISTS \"{table}\"")])
}

fn config(table: &str) -> PostgresSink {
    PostgresSink {
        host: "127.0.0.1".into(),
        port: 5432,
        database: "test".into(),
        table: table.into(),
        create_table: true,
        credentials: Credentials {
            user: Some("postgres".into()),
            ..Credentials::default()
        },
    }
}

/// Runs `f` on its own thread and fails if it takes longer than `limit`,
/// so that a hanging sink fails the test instead of stalling the run.
fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(limit) {
        Ok(v) => {
            let _ = handle.join();
            v
        }
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("test body still running after {limit:?}")
        }
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => match handle.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => unreachable!("the body sends before it ends"),
        },
    }
}

const LIMIT: Duration = Duration::from_secs(60);

/// A batch as the engine hands it over: the ids in a hidden UInt64 column
/// (`__id`) and each row as JSON with its `_id`. `columns` are the written
/// ones; `fields` may hold more.
fn test_batch(columns: &[&str], fields: Vec<(&str, ArrayRef)>, ids: Vec<u64>) -> Rows {
    let mut all: Vec<(Field, ArrayRef)> = vec![(
        Field::new("__id", DataType::UInt64, false),
        Arc::new(UInt64Array::from(ids.clone())) as ArrayRef,
    )];
    for (name, array) in fields {
        all.push((Field::new(name, array.data_type().clone(), true), array));
    }
    let schema = Arc::new(Schema::new(
        all.iter().map(|(f, _)| f.clone()).collect::<Vec<_>>(),
    ));
    let batch = RecordBatch::try_new(schema, all.into_iter().map(|(_, a)| a).collect())
        .expect("a valid test batch");
    let json: Vec<String> = ids.iter().map(|id| format!("{{\"_id\":{id}}}")).collect();
    Rows::from_parts(batch, columns, ids, json)
}

/// Opening a sink for a test batch's columns and schema.
trait OpenSink {
    fn open(
        &self,
        name: &str,
        config: &PostgresSink,
    ) -> Result<Box<dyn SinkConnector>, ConnectError>;
}

impl OpenSink for Rows {
    fn open(
        &self,
        name: &str,
        config: &PostgresSink,
    ) -> Result<Box<dyn SinkConnector>, ConnectError> {
        weir_postgres::open_sink(
            name,
            config,
            self.columns(),
            &self.batch().schema(),
            true,
            None,
        )
    }
}

/// A batch of (id, n, s) rows with columns `n` (Int64) and `s` (Utf8).
fn rows(rows: &[(u64, Option<i64>, Option<&str>)]) -> Rows {
    test_batch(
        &["n", "s"],
        vec![
            (
                "n",
                Arc::new(Int64Array::from(
                    rows.iter().map(|r| r.1).collect::<Vec<_>>(),
                )) as ArrayRef,
            ),
            (
                "s",
                Arc::new(StringArray::from(
                    rows.iter().map(|r| r.2).collect::<Vec<_>>(),
                )) as ArrayRef,
            ),
        ],
        rows.iter().map(|r| r.0).collect(),
    )
}

type Row = (String, Option<i64>, Option<String>);

/// The (id, n, s) table, ordered by id.
fn contents(c: &mut Client, table: &str) -> Vec<Row> {
    c.query(
        &format!("SELECT _id::text, n, s FROM \"{table}\" AS t ORDER BY t._id"),
        &[],
    )
    .expect("read the table")
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect()
}

fn row(id: u64, n: Option<i64>, s: Option<&str>) -> Row {
    (id.to_string(), n, s.map(str::to_string))
}

fn error_of<T>(r: Result<T, ConnectError>) -> ConnectError {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e,
    }
}

// ---------------------------------------------------------------------------
// Refused before connecting: no server needed.

#[test]
fn a_sink_without_a_user_is_refused_before_connecting() {
    let batch = rows(&[(1, Some(1), None)]);
    let mut cfg = config("t");
    cfg.credentials.user = None;
    // A closed port: the check must come before any connection attempt.
    cfg.port = 1;
    let e = error_of(batch.open("nouser", &cfg));
    assert_eq!(
        e.to_string(),
        "PostgreSQL sink nouser: no user for 127.0.0.1:1/test (give it in the URL, postgres://user@host/database, or as `user`)"
    );
}

#[test]
fn columns_the_sink_cannot_write_are_refused_with_their_type() {
    let mut cfg = config("t");
    cfg.port = 1;
    let dates = test_batch(
        &["n", "day"],
        vec![
            ("n", Arc::new(Int64Array::from(vec![1])) as ArrayRef),
            (
                "day",
                Arc::new(arrow_array::Date32Array::from(vec![1])) as ArrayRef,
            ),
        ],
        vec![1],
    );
    assert_eq!(
        error_of(dates.open("dates", &cfg)).to_string(),
        "PostgreSQL sink dates: column \"day\" has type Date32, which the sink cannot write \
         (Boolean, Int32, Int64, UInt32, UInt64, Float32, Float64, Utf8)"
    );
    let missing = rows(&[(1, Some(1), None)]).with_columns(&["n", "s", "gone"]);
    assert_eq!(
        error_of(missing.open("missing", &cfg)).to_string(),
        "PostgreSQL sink missing: column \"gone\" is not in the sink's input"
    );
    let clash = test_batch(
        &["_id"],
        vec![("_id", Arc::new(Int64Array::from(vec![1])) as ArrayRef)],
        vec![1],
    );
    assert_eq!(
        error_of(clash.open("clash", &cfg)).to_string(),
        "PostgreSQL sink clash: a column named \"_id\" clashes with the output id the sink adds"
    );
    let restored = weir_postgres::open_sink(
        "cp",
        &cfg,
        &missing.columns()[..2],
        &missing.batch().schema(),
        true,
        Some(b"xy"),
    );
    assert_eq!(
        error_of(restored).to_string(),
        "PostgreSQL sink cp: the checkpoint holds 2 bytes for it, but this sink stores nothing there"
    );
}

// ---------------------------------------------------------------------------
// Against the server.

#[test]
#[ignore = "integration: needs PostgreSQL on 127.0.0.1:5432 (database test)"]
fn every_type_lands_with_its_exact_value() {
    within(LIMIT, || {
        let table = unique("weir_pg_types");
        let _cleanup = drop_table(&table);
        let high_id = (1u64 << 63) + 5;
        // Written columns in another order than the batch's, and a batch
        // column (`hidden`) that is not written.
        let batch = test_batch(
            &["s", "flag", "i32", "i64", "u32", "u64", "f32", "f64"],
            vec![
                (
                    "hidden",
                    Arc::new(StringArray::from(vec!["x", "y", "z", "w"])) as ArrayRef,
                ),
                (
                    "flag",
                    Arc::new(BooleanArray::from(vec![
                        Some(true),
                        Some(false),
                        None,
                        Some(true),
                    ])) as ArrayRef,
                ),
                (
                    "i32",
                    Arc::new(Int32Array::from(vec![
                        Some(i32::MIN),
                        Some(i32::MAX),
                        None,
                        Some(0),
                    ])) as ArrayRef,
                ),
                (
                    "i64",
                    Arc::new(Int64Array::from(vec![
                        Some(i64::MIN),
                        Some(i64::MAX),
                        None,
                        Some(-1),
                    ])) as ArrayRef,
                ),
                (
                    "u32",
                    Arc::new(UInt32Array::from(vec![
                        Some(0),
                        Some(u32::MAX),
                        None,
                        Some(7),
                    ])) as ArrayRef,
                ),
                (
                    "u64",
                    Arc::new(UInt64Array::from(vec![
                        Some(0),
                        Some(u64::MAX),
                        None,
                        Some(10_000_000_000_000_000_000),
                    ])) as ArrayRef,
                ),
                (
                    "f32",
                    Arc::new(Float32Array::from(vec![
                        Some(-1.5),
                        Some(f32::MAX),
                        None,
                        Some(0.1),
                    ])) as ArrayRef,
                ),
                (
                    "f64",
                    Arc::new(Float64Array::from(vec![
                        Some(-0.1),
                        Some(1e300),
                        None,
                        Some(f64::MIN_POSITIVE),
                    ])) as ArrayRef,
                ),
                (
                    "s",
                    Arc::new(StringArray::from(vec![
                        Some(""),
                        Some("ünï \"q\" 'a' \\ ,{}"),
                        None,
                        Some("plain"),
                    ])) as ArrayRef,
                ),
            ],
            vec![1, high_id, u64::MAX, 10_000],
        );
        let mut sink = batch.open("types", &config(&table)).expect("open the sink");
        assert_eq!(sink.status().state(), ConnectionState::Connected);
        sink.write(0, &batch.output()).expect("write");
        sink.finish().expect("finish");
        assert_eq!(sink.status().state(), ConnectionState::Closed);

        let mut c = admin();
        type Typed = (
            String,
            Option<bool>,
            Option<i32>,
            Option<i64>,
            Option<i64>,
            Option<String>,
            Option<f32>,
            Option<f64>,
            Option<String>,
        );
        let got: Vec<Typed> = c
            .query(
                &format!("SELECT _id::text, flag, i32, i64, u32, u64::text, f32, f64, s FROM \"{table}\" AS t ORDER BY t._id"),
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5), r.get(6), r.get(7), r.get(8)))
            .collect();
        let want: Vec<Typed> = vec![
            (
                "1".into(),
                Some(true),
                Some(i32::MIN),
                Some(i64::MIN),
                Some(0),
                Some("0".into()),
                Some(-1.5),
                Some(-0.1),
                Some("".into()),
            ),
            (
                "10000".into(),
                Some(true),
                Some(0),
                Some(-1),
                Some(7),
                Some("10000000000000000000".into()),
                Some(0.1),
                Some(f64::MIN_POSITIVE),
                Some("plain".into()),
            ),
            (
                "9223372036854775813".into(),
                Some(false),
                Some(i32::MAX),
                Some(i64::MAX),
                Some(i64::from(u32::MAX)),
                Some("18446744073709551615".into()),
                Some(f32::MAX),
                Some(1e300),
                Some("ünï \"q\" 'a' \\ ,{}".into()),
            ),
            (
                "18446744073709551615".into(),
                None,
                None,
                None,
                None,
                None,
                None,
                None,
                None,
            ),
        ];
        assert_eq!(got, want);

        // The created table: `_id` first as primary key, then the sink's
        // columns in the sink's order with their mapped types.
        let types: Vec<(String, String)> = c
            .query(
                "SELECT attname::text, format_type(atttypid, atttypmod) FROM pg_attribute \
                 WHERE attrelid = $1::text::regclass AND attnum > 0 ORDER BY attnum",
                &[&format!("\"{table}\"")],
            )
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let expected: Vec<(String, String)> = [
            ("_id", "numeric(20,0)"),
            ("s", "text"),
            ("flag", "boolean"),
            ("i32", "integer"),
            ("i64", "bigint"),
            ("u32", "bigint"),
            ("u64", "numeric(20,0)"),
            ("f32", "real"),
            ("f64", "double precision"),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        assert_eq!(types, expected);
        let primary_key: String = c
            .query_one(
                "SELECT a.attname::text FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid \
                 AND a.attnum = ANY(i.indkey) WHERE i.indrelid = $1::text::regclass AND i.indisprimary",
                &[&format!("\"{table}\"")],
            )
            .unwrap()
            .get(0);
        assert_eq!(primary_key, "_id");
    });
}

#[test]
#[ignore = "integration: needs PostgreSQL on 127.0.0.1:5432 (database test)"]
fn replays_and_overlapping_batches_leave_one_unchanged_row_per_id() {
    within(LIMIT, || {
        let table = unique("weir_pg_replay");
        let _cleanup = drop_table(&table);
        let first = rows(&[
            (1, Some(10), Some("a")),
            (2, None, Some("b")),
            (3, Some(30), None),
        ]);
        let mut sink = first
            .open("replay", &config(&table))
            .expect("open the sink");
        sink.write(1, &first.output()).unwrap();
        assert_eq!(sink.prepare(1).unwrap(), Vec::<u8>::new());
        sink.commit(1).unwrap();

        let mut c = admin();
        let want_first = vec![
            row(1, Some(10), Some("a")),
            row(2, None, Some("b")),
            row(3, Some(30), None),
        ];
        assert_eq!(contents(&mut c, &table), want_first);
        // The row versions: a replay that changes nothing creates none.
        let versions = |c: &mut Client| -> Vec<String> {
            c.query(
                &format!(
                    "SELECT xmin::text || '/' || ctid::text FROM \"{table}\" AS t ORDER BY t._id"
                ),
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
        };
        let before = versions(&mut c);

        // The same batch again, as after a restart.
        sink.write(1, &first.output()).unwrap();
        assert_eq!(contents(&mut c, &table), want_first);
        assert_eq!(versions(&mut c), before);

        // A batch overlapping the first on ids 2 and 3 (same values: the
        // same output records) and adding 4 and 5.
        let overlapping = rows(&[
            (2, None, Some("b")),
            (3, Some(30), None),
            (4, Some(40), Some("d")),
            (5, Some(-5), Some("e")),
        ]);
        sink.write(2, &overlapping.output()).unwrap();
        let want_all = vec![
            row(1, Some(10), Some("a")),
            row(2, None, Some("b")),
            row(3, Some(30), None),
            row(4, Some(40), Some("d")),
            row(5, Some(-5), Some("e")),
        ];
        assert_eq!(contents(&mut c, &table), want_all);
        assert_eq!(versions(&mut c)[..3], before[..]);
        let count: i64 = c
            .query_one(&format!("SELECT count(*) FROM \"{table}\""), &[])
            .unwrap()
            .get(0);
        assert_eq!(count, 5);

        // An id twice in one batch: its last row wins.
        let repeated = rows(&[
            (6, Some(1), Some("first")),
            (7, Some(7), None),
            (6, Some(2), Some("last")),
        ]);
        sink.write(3, &repeated.output()).unwrap();
        let mut want = want_all.clone();
        want.push(row(6, Some(2), Some("last")));
        want.push(row(7, Some(7), None));
        assert_eq!(contents(&mut c, &table), want);
        sink.finish().unwrap();
    });
}

#[test]
#[ignore = "integration: needs PostgreSQL on 127.0.0.1:5432 (database test)"]
fn an_existing_table_must_have_every_column_and_id_as_key() {
    within(LIMIT, || {
        let mut c = admin();
        let batch = rows(&[(1, Some(1), Some("x"))]);

        // Several problems at once, each named.
        let bad = unique("weir_pg_bad");
        let _cleanup_bad = drop_table(&bad);
        c.batch_execute(&format!(
            "CREATE TABLE \"{bad}\" (_id numeric(20), n text, c integer NOT NULL)"
        ))
        .unwrap();
        let e = error_of(batch.open("bad", &config(&bad)));
        assert!(matches!(e, ConnectError::Config(_)), "{e:?}");
        assert_eq!(
            e.to_string(),
            format!(
                "table {bad} in 127.0.0.1:5432/test cannot take the sink's rows: \
                 column \"_id\" is not the primary key (nor alone under a unique index), which the upsert needs; \
                 column \"n\" is text, which cannot hold Int64 values (use BIGINT); \
                 no column \"s\" (TEXT for Utf8 values); \
                 column \"c\" is NOT NULL without a default, and the sink does not write it"
            )
        );

        // Only a column missing.
        let partial = unique("weir_pg_partial");
        let _cleanup_partial = drop_table(&partial);
        c.batch_execute(&format!(
            "CREATE TABLE \"{partial}\" (_id numeric(20) PRIMARY KEY, n bigint)"
        ))
        .unwrap();
        assert_eq!(
            error_of(batch.open("partial", &config(&partial))).to_string(),
            format!("table {partial} in 127.0.0.1:5432/test cannot take the sink's rows: no column \"s\" (TEXT for Utf8 values)")
        );

        // No primary key: `_id` is a BIGINT (too narrow) and not unique.
        let nokey = unique("weir_pg_nokey");
        let _cleanup_nokey = drop_table(&nokey);
        c.batch_execute(&format!(
            "CREATE TABLE \"{nokey}\" (_id bigint, n bigint, s text)"
        ))
        .unwrap();
        assert_eq!(
            error_of(batch.open("nokey", &config(&nokey))).to_string(),
            format!(
                "table {nokey} in 127.0.0.1:5432/test cannot take the sink's rows: \
                 column \"_id\" is bigint, which cannot hold every output id (use NUMERIC(20)); \
                 column \"_id\" is not the primary key (nor alone under a unique index), which the upsert needs"
            )
        );

        // Wider types, a unique index instead of a primary key and an
        // extra nullable column are fine.
        let wide = unique("weir_pg_wide");
        let _cleanup_wide = drop_table(&wide);
        c.batch_execute(&format!(
            "CREATE TABLE \"{wide}\" (extra text, s varchar(20), n numeric(30, 5), _id numeric NOT NULL UNIQUE)"
        ))
        .unwrap();
        let mut sink = batch
            .open("wide", &config(&wide))
            .expect("a compatible table");
        sink.write(0, &batch.output()).unwrap();
        let got: (String, String, String, Option<String>) = c
            .query_one(
                &format!("SELECT _id::text, n::text, s, extra FROM \"{wide}\""),
                &[],
            )
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .unwrap();
        assert_eq!(got, ("1".into(), "1.00000".into(), "x".into(), None));

        // No table, and not allowed to create it.
        let absent = unique("weir_pg_absent");
        let mut cfg = config(&absent);
        cfg.create_table = false;
        assert_eq!(
            error_of(batch.open("absent", &cfg)).to_string(),
            format!("table {absent} does not exist in 127.0.0.1:5432/test (create_table is false)")
        );
        let exists: bool = c
            .query_one(
                "SELECT to_regclass($1::text) IS NOT NULL",
                &[&format!("\"{absent}\"")],
            )
            .unwrap()
            .get(0);
        assert!(!exists, "create_table = false must not create {absent}");
    });
}

#[test]
#[ignore = "integration: needs PostgreSQL on 127.0.0.1:5432 (database test)"]
fn an_unreachable_database_is_named_with_the_servers_words() {
    within(LIMIT, || {
        let batch = rows(&[(1, Some(1), None)]);
        let database = unique("weir_pg_nodb");
        let mut cfg = config("t");
        cfg.database = database.clone();
        match error_of(batch.open("nodb", &cfg)) {
            ConnectError::Connect { address, message } => {
                assert_eq!(address, format!("127.0.0.1:5432/{database}"));
                assert_eq!(
                    message,
                    format!("FATAL: database \"{database}\" does not exist")
                );
            }
            other => panic!("expected a connect error, got {other:?}"),
        }

        // A port nobody listens on (bound, then released).
        let port = free_port();
        let mut cfg = config("t");
        cfg.port = port;
        let e = error_of(batch.open("closed", &cfg));
        let text = e.to_string();
        match e {
            ConnectError::Connect { address, message } => {
                assert_eq!(address, format!("127.0.0.1:{port}/test"));
                assert!(
                    message.starts_with("error connecting to server: Connection refused"),
                    "{message}"
                );
                assert!(text.starts_with(&format!(
                    "cannot connect to 127.0.0.1:{port}/test: error connecting"
                )));
            }
            other => panic!("expected a connect error, got {other:?}"),
        }
    });
}

#[test]
#[ignore = "integration: needs PostgreSQL on 127.0.0.1:5432 (database test)"]
fn a_killed_connection_is_reconnected_and_the_batch_sent_again() {
    within(LIMIT, || {
        let table = unique("weir_pg_loss");
        let _cleanup = drop_table(&table);
        let name = unique("loss");
        let first = rows(&[(1, Some(1), Some("a")), (2, Some(2), Some("b"))]);
        let mut sink = first.open(&name, &config(&table)).expect("open the sink");
        let status = sink.status();
        sink.write(1, &first.output()).unwrap();

        // Kill the sink's backend, found by its application_name.
        let mut c = admin();
        let application_name = format!("weir:{name}");
        let backends = |c: &mut Client| -> Vec<i32> {
            c.query(
                "SELECT pid FROM pg_stat_activity WHERE application_name = $1",
                &[&application_name],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
        };
        let old = backends(&mut c);
        assert_eq!(old.len(), 1, "one session for the sink: {old:?}");
        let killed: bool = c
            .query_one("SELECT pg_terminate_backend($1)", &[&old[0]])
            .unwrap()
            .get(0);
        assert!(killed);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !backends(&mut c).is_empty() {
            assert!(Instant::now() < deadline, "backend {} still there", old[0]);
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(status.reconnects(), 0);

        let second = rows(&[(2, Some(2), Some("b")), (3, None, Some("c"))]);
        sink.write(2, &second.output())
            .expect("the write after the loss reconnects");
        assert_eq!(status.state(), ConnectionState::Connected);
        assert_eq!(status.reconnects(), 1);
        let new = backends(&mut c);
        assert_eq!(new.len(), 1);
        assert_ne!(new[0], old[0]);
        assert_eq!(
            contents(&mut c, &table),
            vec![
                row(1, Some(1), Some("a")),
                row(2, Some(2), Some("b")),
                row(3, None, Some("c"))
            ]
        );
        sink.finish().unwrap();
    });
}

#[test]
#[ignore = "integration: needs PostgreSQL on 127.0.0.1:5432 (database test)"]
fn a_batch_of_ten_thousand_rows_is_one_statement() {
    within(LIMIT, || {
        let table = unique("weir_pg_big");
        let counter = format!("{table}_statements");
        let _cleanup = Cleanup(vec![
            format!("DROP TABLE IF EXISTS \"{table}\""),
            format!("DROP TABLE IF EXISTS \"{counter}\""),
            format!("DROP FUNCTION IF EXISTS \"{counter}\"()"),
        ]);
        let n = 10_000u64;
        let data: Vec<(u64, Option<i64>, Option<String>)> = (0..n)
            .map(|i| (i << 3, Some(i as i64 * 3), Some(format!("row {i}"))))
            .collect();
        let borrowed: Vec<(u64, Option<i64>, Option<&str>)> = data
            .iter()
            .map(|(id, v, s)| (*id, *v, s.as_deref()))
            .collect();
        let batch = rows(&borrowed);
        let mut sink = batch.open("big", &config(&table)).expect("open the sink");

        // A statement-level trigger records each INSERT statement and its
        // transaction.
        let mut c = admin();
        c.batch_execute(&format!(
            "CREATE TABLE \"{counter}\" (txid bigint);
             CREATE FUNCTION \"{counter}\"() RETURNS trigger LANGUAGE plpgsql AS
               $$ BEGIN INSERT INTO \"{counter}\" VALUES (txid_current()); RETURN NULL; END $$;
             CREATE TRIGGER count_statements AFTER INSERT ON \"{table}\"
               FOR EACH STATEMENT EXECUTE FUNCTION \"{counter}\"();"
        ))
        .unwrap();

        sink.write(0, &batch.output()).unwrap();
        let (statements, transactions): (i64, i64) = c
            .query_one(
                &format!("SELECT count(*), count(DISTINCT txid) FROM \"{counter}\""),
                &[],
            )
            .map(|r| (r.get(0), r.get(1)))
            .unwrap();
        assert_eq!((statements, transactions), (1, 1));
        let (count, sum, distinct_text): (i64, String, i64) = c
            .query_one(
                &format!("SELECT count(*), sum(n)::text, count(DISTINCT s) FROM \"{table}\""),
                &[],
            )
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .unwrap();
        // sum of 3 * i for i < 10000.
        assert_eq!(
            (count, sum, distinct_text),
            (10_000, "149985000".to_string(), 10_000)
        );
        let last: (String, i64, String) = c
            .query_one(
                &format!(
                    "SELECT _id::text, n, s FROM \"{table}\" AS t ORDER BY t._id DESC LIMIT 1"
                ),
                &[],
            )
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .unwrap();
        assert_eq!(
            last,
            ((9_999u64 << 3).to_string(), 29_997, "row 9999".to_string())
        );
        sink.finish().unwrap();
    });
}

#[test]
#[ignore = "integration: needs PostgreSQL on 127.0.0.1:5432 (database test)"]
fn data_the_server_refuses_is_a_final_error_with_its_words() {
    within(LIMIT, || {
        let table = unique("weir_pg_check");
        let _cleanup = drop_table(&table);
        let mut c = admin();
        c.batch_execute(&format!(
            "CREATE TABLE \"{table}\" (_id numeric(20) PRIMARY KEY, n bigint CONSTRAINT n_positive CHECK (n > 0), s varchar(3))"
        ))
        .unwrap();
        let good = rows(&[(1, Some(1), Some("abc"))]);
        let mut sink = good.open("check", &config(&table)).expect("open the sink");
        sink.write(0, &good.output()).unwrap();

        let negative = rows(&[(2, Some(5), None), (3, Some(-1), None)]);
        let started = Instant::now();
        let e = error_of(sink.write(0, &negative.output()));
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "a data error must not be retried"
        );
        match e {
            ConnectError::Broker { address, message } => {
                assert_eq!(address, "127.0.0.1:5432/test");
                assert_eq!(
                    message,
                    format!(
                        "upserting 2 rows into table {table}: ERROR: new row for relation \"{table}\" \
                         violates check constraint \"n_positive\"\nDETAIL: Failing row contains (3, -1, null)."
                    )
                );
            }
            other => panic!("expected the server's refusal, got {other:?}"),
        }
        assert_eq!(sink.status().state(), ConnectionState::Closed);
        assert_eq!(sink.status().reconnects(), 0);
        // The batch is one transaction: none of its rows landed.
        assert_eq!(contents(&mut c, &table), vec![row(1, Some(1), Some("abc"))]);
    });
}

/// A loopback TCP relay to the real server that the test can cut: while
/// down it closes every connection it had and every new one at once,
/// counting the attempts.
struct Relay {
    port: u16,
    down: Arc<AtomicBool>,
    attempts_while_down: Arc<AtomicUsize>,
    open: Arc<Mutex<Vec<TcpStream>>>,
    stop: Arc<AtomicBool>,
}

impl Relay {
    fn start() -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let relay = Relay {
            port: listener.local_addr().unwrap().port(),
            down: Arc::default(),
            attempts_while_down: Arc::default(),
            open: Arc::default(),
            stop: Arc::default(),
        };
        let (down, attempts, open, stop) = (
            relay.down.clone(),
            relay.attempts_while_down.clone(),
            relay.open.clone(),
            relay.stop.clone(),
        );
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                if down.load(Ordering::SeqCst) {
                    attempts.fetch_add(1, Ordering::SeqCst);
                    continue; // dropped: closed at once
                }
                let Ok(server) = TcpStream::connect("127.0.0.1:5432") else {
                    continue;
                };
                let mut open = open.lock().unwrap();
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server.try_clone().unwrap(), client.try_clone().unwrap()),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(Shutdown::Both);
                    });
                }
                open.push(client);
                open.push(server);
            }
        });
        relay
    }

    /// Cuts every connection and refuses new ones.
    fn cut(&self) {
        self.down.store(true, Ordering::SeqCst);
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    fn restore(&self) {
        self.down.store(false, Ordering::SeqCst);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.cut();
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so that it sees `stop`.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

#[test]
#[ignore = "integration: needs PostgreSQL on 127.0.0.1:5432 (database test)"]
fn while_the_server_is_unreachable_a_write_waits_with_backoff_then_lands() {
    within(LIMIT, || {
        let table = unique("weir_pg_outage");
        let _cleanup = drop_table(&table);
        let relay = Relay::start();
        let mut cfg = config(&table);
        cfg.port = relay.port;
        let first = rows(&[(1, Some(1), Some("a"))]);
        let mut sink = first
            .open("outage", &cfg)
            .expect("open the sink through the relay");
        let status = sink.status();
        sink.write(1, &first.output()).unwrap();

        relay.cut();
        let outage = Duration::from_millis(1500);
        let relay = Arc::new(relay);
        let watcher = {
            let (relay, status) = (relay.clone(), status.clone());
            std::thread::spawn(move || {
                std::thread::sleep(outage);
                let seen = (
                    status.state(),
                    relay.attempts_while_down.load(Ordering::SeqCst),
                );
                relay.restore();
                seen
            })
        };
        let started = Instant::now();
        let second = rows(&[(2, Some(2), Some("b"))]);
        sink.write(2, &second.output())
            .expect("the write lands once the server is back");
        let waited = started.elapsed();
        let (state_during, attempts) = watcher.join().unwrap();

        assert!(
            waited >= outage,
            "the write returned after {waited:?}, during the outage"
        );
        assert_eq!(state_during, ConnectionState::Reconnecting);
        // Backoff from 100 ms doubling: delays of at least 50, 100, 200,
        // 400 and 800 ms fit 1.5 s at most 5 times; a spinning client would
        // try thousands of times.
        assert!(
            (2..=5).contains(&attempts),
            "{attempts} connection attempts in {outage:?}"
        );
        assert_eq!(status.state(), ConnectionState::Connected);
        assert_eq!(status.reconnects(), 1);
        let mut c = admin();
        assert_eq!(
            contents(&mut c, &table),
            vec![row(1, Some(1), Some("a")), row(2, Some(2), Some("b"))]
        );
        sink.finish().unwrap();
    });
}
