//! One writer per stream, as an operator meets it: while `weir ingest`
//! owns a stream, `weir dlq replay --to` that stream and a second `weir
//! ingest` are refused with the server named; `dlq replay --via` sends the
//! records through the server; the stream reads back exactly what each
//! appended, in order, with no torn tail; once the server is killed with
//! SIGKILL a direct replay works.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;

const TOKEN: &str = "s3cret-token";

/// `weir ingest`, killed (SIGKILL) and reaped when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn ingest(dir: &Path, port: u16) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_weir"));
    c.args(["ingest", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--log-dir", "log", "--stream", "transactions"])
        .env("WEIR_INGEST_TOKEN", TOKEN)
        .current_dir(dir);
    c
}

fn weir(dir: &Path, args: &[&str], token: Option<&str>) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_weir"));
    c.args(args)
        .current_dir(dir)
        .env_remove("WEIR_INGEST_TOKEN");
    if let Some(t) = token {
        c.env("WEIR_INGEST_TOKEN", t);
    }
    c.output().expect("weir runs")
}

/// POSTs JSON lines; the status and body.
fn post(port: u16, body: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "POST /v1/streams/transactions/events HTTP/1.1\r\nHost: x\r\n\
         Content-Type: application/x-ndjson\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut answer = String::new();
    s.read_to_string(&mut answer)?;
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// Waits until the server answers, then posts `body`.
fn post_when_up(port: u16, body: &str) -> (u16, String) {
    let start = Instant::now();
    loop {
        match post(port, body) {
            Ok(answer) => return answer,
            Err(e) if start.elapsed() > Duration::from_secs(20) => panic!("ingest not up: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

fn read_back(dir: &Path) -> Vec<(u64, String)> {
    let mut reader = weir_log::TailReader::new(&dir.join("log"), "transactions", 0);
    reader
        .read(0, 1000)
        .expect("read")
        .into_iter()
        .map(|(o, r)| (o, String::from_utf8(r).expect("utf-8")))
        .collect()
}

fn segment_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir.join("log/transactions/0"))
        .expect("partition")
        .map(|e| e.expect("entry").metadata().expect("stat").len())
        .sum()
}

#[test]
fn dlq_replay_into_a_stream_ingest_owns_is_refused_or_goes_through_the_server() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let mut server = Server(
        ingest(dir.path(), port)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("weir ingest starts"),
    );
    let pid = server.0.id();
    let first = "{\"n\":1}\n{\"n\":2}\n{\"n\":3}\n";
    assert_eq!(
        post_when_up(port, first),
        (
            200,
            "{\"stream\":\"transactions\",\"partition\":0,\"offsets\":[0,3],\"accepted\":3}"
                .to_string()
        )
    );

    // Two dead letters: one rejected after decoding, one with its bytes.
    {
        let log = weir_log::Log::open(dir.path().join("log")).expect("log");
        let dlq = log
            .stream("dead-letters", weir_log::StreamConfig::default())
            .expect("dead-letter stream");
        let raw = base64::engine::general_purpose::STANDARD.encode(b"{\"n\":5}");
        let entries = [
            "{\"step\":\"per_second\",\"position\":7,\"reason\":\"late\",\"record\":{\"n\":4}}"
                .to_string(),
            format!(
                "{{\"step\":\"decode\",\"position\":8,\"reason\":\"malformed\",\"bytes_base64\":\"{raw}\"}}"
            ),
        ];
        let slices: Vec<&[u8]> = entries.iter().map(|e| e.as_bytes()).collect();
        dlq.partition(0).append(&slices).expect("append");
    }

    let replay = [
        "dlq",
        "replay",
        "--log-dir",
        "log",
        "--stream",
        "dead-letters",
        "--to",
        "transactions",
    ];
    // Directly: refused, naming the server and the way through it.
    let out = weir(dir.path(), &replay, None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "error: cannot append to stream transactions: stream \"transactions\" in log is \
             being written by weir ingest (pid {pid}, since "
        )),
        "{stderr}"
    );
    assert!(stderr.contains("add --via http://ADDRESS"), "{stderr}");

    // A second server on the same stream does not start.
    let other = ingest(dir.path(), free_port())
        .output()
        .expect("weir ingest");
    let stderr = String::from_utf8_lossy(&other.stderr);
    assert!(!other.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("being written by weir ingest (pid {pid}, since ")),
        "{stderr}"
    );
    assert_eq!(read_back(dir.path()).len(), 3);

    // Through the server: without its token refused, with it stored.
    let via = format!("http://127.0.0.1:{port}");
    let with_via: Vec<&str> = replay.iter().copied().chain(["--via", &via]).collect();
    let out = weir(dir.path(), &with_via, None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("answered 401"), "{stderr}");
    assert!(stderr.contains("resume with --from 0"), "{stderr}");
    let out = weir(dir.path(), &with_via, Some(TOKEN));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "replayed 2 dead letters from stream dead-letters into transactions\n"
    );
    // The same replay again (as after a lost answer): the server
    // recognises the batch by its idempotency key and stores nothing.
    let again = weir(dir.path(), &with_via, Some(TOKEN));
    assert_eq!(
        String::from_utf8_lossy(&again.stdout),
        "replayed 2 dead letters from stream dead-letters into transactions \
         (2 already stored by an earlier replay, not stored again)\n"
    );

    // The server's own next append comes after the replayed records.
    let (status, body) = post(port, "{\"n\":6}\n{\"n\":7}\n").expect("post");
    assert_eq!(
        (status, body.contains("\"offsets\":[5,7]")),
        (200, true),
        "{body}"
    );

    server.0.kill().expect("SIGKILL");
    server.0.wait().expect("reaped");
    let want: Vec<(u64, String)> = (1..=7).map(|n| (n - 1, format!("{{\"n\":{n}}}"))).collect();
    assert_eq!(read_back(dir.path()), want);
    // No torn tail: opening the stream for writing (which cuts one) keeps
    // every byte. The lock died with the server.
    let before = segment_bytes(dir.path());
    {
        let log = weir_log::Log::open(dir.path().join("log")).expect("log");
        let s = log
            .stream("transactions", weir_log::StreamConfig::default())
            .expect("the killed server's lock is gone");
        assert_eq!(s.partition(0).next_offset(), 7);
    }
    assert_eq!(segment_bytes(dir.path()), before);

    // With the server gone, a direct replay appends.
    let out = weir(dir.path(), &replay, None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let back = read_back(dir.path());
    assert_eq!(back.len(), 9);
    assert_eq!(back[7], (7, "{\"n\":4}".to_string()));
    assert_eq!(back[8], (8, "{\"n\":5}".to_string()));
}

/// Replaying dead letters into the dead-letter stream itself stops at the
/// end it had when the replay started.
#[test]
fn a_replay_into_its_own_stream_ends() {
    let dir = tempfile::tempdir().expect("temp dir");
    {
        let log = weir_log::Log::open(dir.path().join("log")).expect("log");
        let dlq = log
            .stream("dead-letters", weir_log::StreamConfig::default())
            .expect("dead-letter stream");
        let entry = b"{\"step\":\"s\",\"position\":1,\"reason\":\"r\",\"record\":{\"step\":\"s\",\"position\":1,\"reason\":\"r\",\"record\":{}}}";
        dlq.partition(0).append(&[entry]).expect("append");
    }
    let out = weir(
        dir.path(),
        &[
            "dlq",
            "replay",
            "--log-dir",
            "log",
            "--stream",
            "dead-letters",
            "--to",
            "dead-letters",
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "replayed 1 dead letters from stream dead-letters into dead-letters\n"
    );
}
