use crate::test_support::*;

/// The minimal pipeline reading a NATS source with these credential lines.
fn with_credentials(lines: &str) -> String {
    patched(
        &minimal(),
        "type = \"memory\"",
        &format!("type = \"nats\"\nurl = \"nats://127.0.0.1\"\nstream = \"S\"\n{lines}"),
    )
}

#[test]
fn credential_problems() {
    let dir = tempfile::tempdir().expect("temp dir");
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").expect("write");
    let empty_file = format!(
        "password_file = {:?}\nuser = \"u\"",
        empty.display().to_string()
    );
    let empty_message = format!("{} is empty", empty.display());
    std::env::set_var("WEIR_CONFIG_CASES_EMPTY", "");
    check(&[
        source_case(
            "environment variable and file",
            with_credentials("user = \"u\"\npassword_env = \"A\"\npassword_file = \"Cargo.toml\""),
            "sources[0].password_env",
            Some("password_env ="),
            "give either `password_env` or `password_file`, not both",
        ),
        source_case(
            "unset variable",
            with_credentials("token_env = \"WEIR_CONFIG_CASES_UNSET\""),
            "sources[0].token_env",
            Some("token_env ="),
            "environment variable WEIR_CONFIG_CASES_UNSET is not set",
        ),
        source_case(
            "empty variable",
            with_credentials("token_env = \"WEIR_CONFIG_CASES_EMPTY\""),
            "sources[0].token_env",
            Some("token_env ="),
            "environment variable WEIR_CONFIG_CASES_EMPTY is empty",
        ),
        source_case(
            "empty file",
            with_credentials(&empty_file),
            "sources[0].password_file",
            Some("password_file ="),
            &empty_message,
        ),
        source_case(
            "missing file",
            with_credentials("token_file = \"/nonexistent/token\""),
            "sources[0].token_file",
            Some("token_file ="),
            "cannot read /nonexistent/token: No such file or directory (os error 2)",
        ),
        source_case(
            "password without user",
            with_credentials("password_file = \"Cargo.toml\""),
            "sources[0].password_env",
            Some("[[sources]]"),
            "a password needs `user`",
        ),
    ]);
}
