//! The CLI's exit code and message follow the class of the error: a
//! configuration problem (78), the outside world failing (75), a bug (70).

mod common;

use std::path::Path;

use common::weir;
use weir_test_support::net::free_port;

fn pipeline(dir: &Path, source: &str) -> String {
    let text = format!(
        r#"name = "codes"

[[sources]]
name = "events"
{source}

[[steps]]
name = "decode"
type = "decode"
input = "events"
format = "json"
fields = [{{ name = "id", type = "u64" }}]

[[sinks]]
name = "out"
type = "file"
input = "decode"
path = "out.jsonl"
"#
    );
    let path = dir.join("p.toml");
    std::fs::write(&path, text).expect("pipeline file");
    path.to_str().expect("utf-8 path").to_string()
}

#[test]
fn a_missing_source_file_is_a_configuration_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let p = pipeline(dir.path(), "type = \"file\"\npath = \"nowhere.jsonl\"");
    let out = weir(&["run", &p], dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("nowhere.jsonl"), "{stderr}");
    assert!(stderr.contains("a configuration problem"), "{stderr}");
}

#[test]
fn an_invalid_pipeline_file_is_a_configuration_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let p = pipeline(dir.path(), "type = \"file\"\npath = 5");
    let out = weir(&["run", &p], dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("is not a valid pipeline"), "{stderr}");
}

#[test]
fn an_unreachable_broker_is_worth_retrying() {
    let dir = tempfile::tempdir().expect("temp dir");
    // Nothing listens on a port just released.
    let port = free_port();
    let p = pipeline(
        dir.path(),
        &format!("type = \"nats\"\nurl = \"nats://127.0.0.1:{port}\"\nstream = \"EVENTS\""),
    );
    let out = weir(&["run", &p], dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(75), "{stderr}");
    assert!(stderr.contains(&format!("127.0.0.1:{port}")), "{stderr}");
    assert!(stderr.contains("retrying later may succeed"), "{stderr}");
}

#[test]
fn usage_errors_keep_exit_code_2_and_others_1() {
    let dir = tempfile::tempdir().expect("temp dir");
    assert_eq!(weir(&["run"], dir.path()).status.code(), Some(2));
    let out = weir(&["generate", "no-such-workload"], dir.path());
    assert_eq!(out.status.code(), Some(1));
}
