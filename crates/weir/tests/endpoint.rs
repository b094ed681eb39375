//! The endpoint of `weir run --metrics-address` with a token, as an
//! operator and an intruder meet it: `/metrics` and `/tap` need the token
//! while the probes do not, taps stream live records up to the cap and
//! the ones beyond are refused without stopping the others, and `weir
//! tap` / `weir top` send the token from a file or the environment.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

mod common;

use common::{append, get, get_with, get_with_token, start, weir, WEIR};
use weir_test_support::net::free_port;
use weir_test_support::pipelines::fraud_text_following_log;

const TOKEN: &str = "endpoint-test-token";

/// A tap opened over a raw connection: its response head has been read;
/// `records` reads the JSON lines that follow.
struct Tap {
    conn: TcpStream,
    /// Body bytes read and not yet taken apart.
    pending: String,
}

impl Tap {
    /// Opens `/tap/{step}` with `headers`; returns the status line and
    /// head (lower case) and, for a 200, the tap.
    fn open(port: u16, path: &str, headers: &str) -> (String, Option<Tap>) {
        let mut conn = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        conn.set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        write!(conn, "GET {path} HTTP/1.1\r\nHost: x\r\n{headers}\r\n").unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8];
        while !head.ends_with(b"\r\n\r\n") {
            conn.read_exact(&mut byte).expect("a response head");
            head.push(byte[0]);
        }
        let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
        let tap = head.starts_with("http/1.1 200 ").then(|| Tap {
            conn,
            pending: String::new(),
        });
        (head, tap)
    }

    /// Reads records until `done` holds for one, or fails after `secs`.
    /// Chunked framing is taken apart by line: a chunk holds one record
    /// line (or a heartbeat's empty line), framed by CRLFs.
    fn until(&mut self, secs: u64, what: &str, done: impl Fn(&serde_json::Value) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let mut buf = [0u8; 16 * 1024];
        loop {
            while let Some(end) = self.pending.find("\r\n") {
                let piece: String = self.pending.drain(..end + 2).collect();
                let piece = piece.trim_end();
                if piece.starts_with('{') {
                    let record: serde_json::Value =
                        serde_json::from_str(piece).expect("a JSON record");
                    assert_eq!(record["_step"], "features", "{record}");
                    if done(&record) {
                        return;
                    }
                }
            }
            assert!(Instant::now() < deadline, "{what}: not within {secs} s");
            let n = self.conn.read(&mut buf).expect("tap body");
            assert!(n > 0, "{what}: the tap ended");
            self.pending
                .push_str(std::str::from_utf8(&buf[..n]).expect("UTF-8"));
        }
    }
}

fn txn(record: &serde_json::Value) -> u64 {
    record["txn_id"].as_u64().expect("txn_id")
}

#[test]
fn taps_need_the_token_and_are_capped_while_the_open_ones_stream() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("pipeline.toml"),
        fraud_text_following_log(256, 2, false),
    )
    .expect("write");
    std::fs::write(dir.path().join("token"), format!("{TOKEN}\n")).expect("write");
    let port = free_port();
    let address = format!("127.0.0.1:{port}");
    let _run = start(
        dir.path(),
        &[
            "--metrics-address",
            &address,
            "--endpoint-token-file",
            "token",
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while get(port, "/readyz") != Ok((200, "ready\n".into())) {
        assert!(Instant::now() < deadline, "never ready");
        std::thread::sleep(Duration::from_millis(50));
    }

    // The probes are open; metrics and taps need the token.
    assert_eq!(get(port, "/healthz"), Ok((200, "ok\n".into())));
    let refused = Ok((401, "missing or invalid bearer token\n".to_string()));
    assert_eq!(get(port, "/metrics"), refused);
    assert_eq!(get_with_token(port, "/metrics", "wrong"), refused);
    assert_eq!(get(port, "/tap/features"), refused);
    assert_eq!(get_with_token(port, "/tap/features", "wrong"), refused);
    assert_eq!(
        get_with(
            port,
            "/tap/features",
            &format!("Authorization: {TOKEN}\r\n")
        ),
        refused
    );
    let (status, metrics) = get_with_token(port, "/metrics", TOKEN).expect("scrape");
    assert_eq!(status, 200);
    assert!(
        metrics.contains("weir_ready{pipeline=\"fraud-v1\"} 1"),
        "{metrics}"
    );

    // Four taps stream; a fifth is refused, and the four go on.
    let auth = format!("Authorization: Bearer {TOKEN}\r\n");
    let mut taps: Vec<Tap> = (0..4)
        .map(|i| {
            let (head, tap) = Tap::open(port, "/tap/features?rate=50", &auth);
            tap.unwrap_or_else(|| panic!("tap {i}: {head}"))
        })
        .collect();
    append(dir.path(), 0, 20_000, &[]);
    for tap in &mut taps {
        tap.until(60, "a record of the first 20,000", |r| txn(r) < 20_000);
    }
    let (head, fifth) = Tap::open(port, "/tap/features", &auth);
    assert!(fifth.is_none());
    assert!(
        head.starts_with("http/1.1 503 service unavailable\r\n"),
        "{head}"
    );
    let mut fifth = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        fifth,
        "GET /tap/features HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    fifth.read_to_string(&mut answer).unwrap();
    assert!(
        answer.ends_with(
            "\r\n\r\ntoo many taps: this endpoint streams at most 4 at once; try again when one ends\n"
        ),
        "{answer}"
    );
    // A tap samples at most its rate in each second, so keep records
    // coming until every tap has shown a new one.
    let feeding = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let feeder = {
        let (dir, feeding) = (dir.path().to_path_buf(), feeding.clone());
        std::thread::spawn(move || {
            let mut next = 20_000;
            while feeding.load(std::sync::atomic::Ordering::Relaxed) && next < 200_000 {
                append(&dir, next, next + 500, &[]);
                next += 500;
                std::thread::sleep(Duration::from_millis(100));
            }
            next
        })
    };
    for tap in &mut taps {
        tap.until(60, "a record appended after the refusal", |r| {
            txn(r) >= 20_000
        });
    }
    feeding.store(false, std::sync::atomic::Ordering::Relaxed);
    let mut next = feeder.join().expect("feeder");
    drop(taps);

    // `weir tap` sends the token from the environment or a file; without
    // it, it says what is missing.
    let mut tap = |token_args: &[&str], env: Option<&str>| {
        let mut c = Command::new(WEIR);
        c.args(["tap", &address, "features", "--limit", "2", "--rate", "50"])
            .args(token_args)
            .current_dir(dir.path())
            .env_remove("WEIR_ENDPOINT_TOKEN");
        if let Some(t) = env {
            c.env("WEIR_ENDPOINT_TOKEN", t);
        }
        let child = c
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("weir tap");
        // Records keep coming while it waits for two.
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(3) {
            std::thread::sleep(Duration::from_millis(200));
            append(dir.path(), next, next + 500, &[]);
            next += 500;
        }
        child.wait_with_output().expect("weir tap")
    };
    let denied = tap(&[], None);
    assert!(!denied.status.success());
    let err = String::from_utf8_lossy(&denied.stderr);
    assert!(
        err.contains(&format!(
            "GET http://{address}/tap/features?rate=50&limit=2 answered 401 Unauthorized: \
             missing or invalid bearer token (give the endpoint's token with --token-file or \
             WEIR_ENDPOINT_TOKEN)"
        )),
        "{err}"
    );
    for (args, env) in [
        (&[][..], Some(TOKEN)),
        (&["--token-file", "token"][..], None),
    ] {
        // The server notices the closed taps at once, but give it time.
        let deadline = Instant::now() + Duration::from_secs(20);
        let out = loop {
            let out = tap(args, env);
            let busy = String::from_utf8_lossy(&out.stderr).contains("too many taps");
            if !busy || Instant::now() > deadline {
                break out;
            }
        };
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        for l in lines {
            let record: serde_json::Value = serde_json::from_str(l).expect("JSON");
            assert_eq!(record["_step"], "features");
        }
    }

    // `weir top` too.
    let top = weir(
        &[
            "top",
            &address,
            "--once",
            "--interval",
            "200ms",
            "--token-file",
            "token",
        ],
        dir.path(),
    );
    assert!(
        top.status.success(),
        "{}",
        String::from_utf8_lossy(&top.stderr)
    );
    assert!(String::from_utf8_lossy(&top.stdout).contains("pipeline fraud-v1"));
    let top = Command::new(WEIR)
        .args(["top", &address, "--once"])
        .env_remove("WEIR_ENDPOINT_TOKEN")
        .output()
        .expect("weir top");
    assert!(!top.status.success());
    let err = String::from_utf8_lossy(&top.stderr);
    assert!(
        err.contains("answered 401 Unauthorized: missing or invalid bearer token (give the endpoint's token with --token-file or WEIR_ENDPOINT_TOKEN)"),
        "{err}"
    );
    let said = std::fs::read_to_string(dir.path().join("weir.stderr")).expect("stderr");
    assert!(
        said.contains(&format!(
            "weir run: serving http://{address}/metrics and /tap/STEP (bearer token required), /healthz, /readyz"
        )),
        "{said}"
    );
}

#[test]
fn a_token_file_that_cannot_be_read_stops_the_run_before_it_starts() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("pipeline.toml"),
        fraud_text_following_log(256, 1, false),
    )
    .expect("write");
    std::fs::write(dir.path().join("empty"), "\n").expect("write");
    let address = format!("127.0.0.1:{}", free_port());
    for (file, want) in [
        ("missing", "cannot read token file missing"),
        ("empty", "token file empty is empty"),
    ] {
        let out = weir(
            &[
                "run",
                "pipeline.toml",
                "--metrics-address",
                &address,
                "--endpoint-token-file",
                file,
            ],
            dir.path(),
        );
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{err}");
    }
}
