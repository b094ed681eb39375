//! One writer per stream: a second process cannot open a stream for
//! writing while another holds it, is told which process does, and can
//! once that one is killed (SIGKILL: the OS releases the lock). Readers
//! need no lock. Within one process, every `Log` shares one writer.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use weir_log::{Log, LogError, StreamConfig, TailReader};

const CHILD_DIR: &str = "WEIR_LOG_TEST_WRITER_DIR";

fn config() -> StreamConfig {
    StreamConfig::default()
}

/// Not a test of its own: the child process of the tests below. It opens
/// stream `s` of the log it is given for writing, appends two records,
/// says so and waits to be killed, holding the stream.
#[test]
#[ignore = "run as a child process by other tests"]
fn stream_writer_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else {
        return;
    };
    let log = Log::open(Path::new(&dir)).unwrap();
    let stream = log.stream("s", config()).unwrap();
    stream
        .partition(0)
        .append(&[b"child-1", b"child-2"])
        .unwrap();
    println!("holding s");
    std::thread::sleep(std::time::Duration::from_secs(600));
}

/// The child process, killed (SIGKILL) and reaped when dropped, also when
/// a test fails.
struct Writer(Child);

impl Writer {
    fn id(&self) -> u32 {
        self.0.id()
    }

    fn kill(&mut self) {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the child writer on `dir` and waits until it holds the stream.
fn child_writer(dir: &Path) -> Writer {
    let mut child = Writer(
        Command::new(std::env::current_exe().unwrap())
            .args(["stream_writer_child", "--exact", "--ignored", "--nocapture"])
            .env(CHILD_DIR, dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
    for line in lines {
        if line.unwrap() == "holding s" {
            return child;
        }
    }
    panic!("the child ended without opening the stream");
}

#[test]
fn a_second_process_is_refused_with_the_holder_named_until_it_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = child_writer(dir.path());
    let program = std::env::current_exe()
        .unwrap()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();

    let log = Log::open(dir.path()).unwrap();
    let err = log.stream("s", config()).unwrap_err();
    let LogError::Locked {
        stream,
        dir: log_dir,
        holder,
    } = &err
    else {
        panic!("unexpected {err:?}");
    };
    assert_eq!(stream, "s");
    assert_eq!(log_dir, dir.path());
    let holder = holder.as_ref().expect("the child recorded itself");
    assert_eq!(holder.pid, child.id());
    assert_eq!(holder.program, format!("{program} stream_writer_child"));
    let message = err.to_string();
    let expected_start = format!(
        "stream \"s\" in {} is being written by {program} stream_writer_child (pid {}, since ",
        dir.path().display(),
        child.id()
    );
    assert!(message.starts_with(&expected_start), "{message}");
    assert!(
        message.ends_with("Z); stop it or write through it"),
        "{message}"
    );

    // Refused every time while the child lives; a reader needs no lock and
    // sees what the child appended.
    assert!(matches!(
        log.stream("s", config()),
        Err(LogError::Locked { .. })
    ));
    let mut reader = TailReader::new(dir.path(), "s", 0);
    assert_eq!(
        reader.read(0, 10).unwrap(),
        vec![(0, b"child-1".to_vec()), (1, b"child-2".to_vec())]
    );
    // Other streams of the log are not locked.
    log.stream("other", config()).unwrap();

    child.kill(); // SIGKILL
    let stream = log.stream("s", config()).unwrap();
    assert_eq!(stream.partition(0).next_offset(), 2);
    assert_eq!(stream.partition(0).append(&[b"parent"]).unwrap(), 2..3);
    assert_eq!(
        stream.partition(0).read(0, 10).unwrap(),
        vec![
            (0, b"child-1".to_vec()),
            (1, b"child-2".to_vec()),
            (2, b"parent".to_vec())
        ]
    );
}

#[test]
fn a_dropped_stream_releases_its_lock_to_other_processes() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = Log::open(dir.path()).unwrap();
        log.stream("s", config()).unwrap();
    }
    let mut child = child_writer(dir.path());
    child.kill();
}

#[test]
fn every_log_in_one_process_shares_one_writer() {
    let dir = tempfile::tempdir().unwrap();
    let a = Log::open(dir.path()).unwrap();
    // Another spelling of the same directory.
    let b = Log::open(dir.path().join(".")).unwrap();
    let sa = a.stream("s", config()).unwrap();
    let sb = b.stream("s", config()).unwrap();
    assert!(Arc::ptr_eq(&sa, &sb));
    assert_eq!(sa.partition(0).append(&[b"a"]).unwrap(), 0..1);
    assert_eq!(sb.partition(0).append(&[b"b"]).unwrap(), 1..2);
    let other = StreamConfig {
        partitions: 2,
        ..config()
    };
    let err = b.stream("s", other).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid configuration for stream \"s\": already open with a different configuration"
    );
    let c = Log::open(dir.path()).unwrap();
    let err = c
        .stream(
            "s",
            StreamConfig {
                partitions: 2,
                ..config()
            },
        )
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid configuration for stream \"s\": already open in this process with a different configuration"
    );
    // Once every handle is gone the stream closes and opens again, here
    // with another configuration.
    drop((sa, sb, a, b));
    let s = c
        .stream(
            "s",
            StreamConfig {
                partitions: 2,
                ..config()
            },
        )
        .unwrap();
    assert_eq!(s.partition(0).next_offset(), 2);
}

#[test]
fn threads_opening_and_dropping_one_stream_never_collide() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let path = path.clone();
            std::thread::spawn(move || {
                for i in 0..50u32 {
                    let log = Log::open(&path).unwrap();
                    let stream = log.stream("s", config()).unwrap();
                    let record = format!("{t}-{i}");
                    stream.partition(0).append(&[record.as_bytes()]).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let log = Log::open(&path).unwrap();
    let stream = log.stream("s", config()).unwrap();
    let records = stream.partition(0).read(0, 1000).unwrap();
    assert_eq!(records.len(), 200);
    assert!(records.iter().enumerate().all(|(i, (o, _))| *o == i as u64));
    let mut seen: Vec<String> = records
        .into_iter()
        .map(|(_, r)| String::from_utf8(r).unwrap())
        .collect();
    seen.sort();
    let mut want: Vec<String> = (0..4)
        .flat_map(|t| (0..50).map(move |i| format!("{t}-{i}")))
        .collect();
    want.sort();
    assert_eq!(seen, want);
}
