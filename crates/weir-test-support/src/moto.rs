//! A private S3 server for the object-storage tests: moto's
//! `moto_server` (PyPI `moto[server]`), started on a free port and killed
//! when the guard drops, also when the test fails.
//!
//! This file uses the standard library only: weir-checkpoint's tests
//! include it by path (`#[path]`) since weir-checkpoint cannot depend on
//! this crate.
//!
//! `moto_server` is looked up in `$WEIR_MOTO_SERVER`, then on `PATH`, then
//! in the repository's CI venv (`.ci/.venv/bin`). Without it the test
//! fails with how to install it, unless `WEIR_SKIP_S3=1`, which skips the
//! test with a printed reason.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `moto_server`; killed and reaped on drop.
pub struct Moto {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find_moto_server() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("WEIR_MOTO_SERVER") {
        return Some(PathBuf::from(p));
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("moto_server"))
            .find(|p| p.is_file())
    });
    on_path.or_else(|| {
        let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.ci/.venv/bin/moto_server");
        venv.is_file().then_some(venv)
    })
}

/// One HTTP/1.1 request without a body to `127.0.0.1:port`; the status
/// line of the answer.
fn http(port: u16, method: &str, path: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = String::new();
    s.read_to_string(&mut answer)?;
    Ok(answer.lines().next().unwrap_or("").to_string())
}

impl Moto {
    /// Starts `moto_server` and waits until it answers; `None` (with the
    /// reason printed) when `WEIR_SKIP_S3=1`. Panics, saying how to
    /// install it, when it cannot be found.
    pub fn start() -> Option<Moto> {
        if std::env::var("WEIR_SKIP_S3").as_deref() == Ok("1") {
            eprintln!("skipping the S3 test: WEIR_SKIP_S3=1 is set");
            return None;
        }
        let program = find_moto_server().unwrap_or_else(|| {
            panic!(
                "moto_server (the S3 server these tests run against) is not installed: \
                 install it with `pip install 'moto[server]'` (or run .ci/venv, which puts it \
                 in .ci/.venv/bin), or point WEIR_MOTO_SERVER at it; set WEIR_SKIP_S3=1 to skip"
            )
        });
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let child = Command::new(&program)
            .args(["-p", &port.to_string(), "-H", "127.0.0.1"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        let mut moto = Moto { child, port };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(status) = http(port, "GET", "/") {
                if status.contains(" 200") {
                    break;
                }
            }
            if let Ok(Some(exit)) = moto.child.try_wait() {
                panic!("{} exited before answering: {exit}", program.display());
            }
            assert!(
                Instant::now() < deadline,
                "{} did not answer on port {port} within 60 s",
                program.display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(moto)
    }

    /// Creates `bucket` (moto accepts unsigned requests).
    pub fn create_bucket(&self, bucket: &str) {
        let status = http(self.port, "PUT", &format!("/{bucket}")).expect("create bucket");
        assert!(
            status.contains(" 200"),
            "creating bucket {bucket}: {status}"
        );
    }

    /// The endpoint URL, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The environment variables object_store reads to reach this server
    /// (dummy credentials: moto accepts any).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", "weir-test".into()),
            ("AWS_SECRET_ACCESS_KEY", "weir-test-secret".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ALLOW_HTTP", "true".into()),
        ]
    }
}
