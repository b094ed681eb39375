use crate::test_support::*;

/// The minimal pipeline writing to a PostgreSQL sink with these lines
/// after its `input`.
fn sink(lines: &str) -> String {
    patched(
        &minimal(),
        "type = \"discard\"\ninput = \"decode\"",
        &format!("type = \"postgres\"\ninput = \"decode\"\n{lines}"),
    )
}

#[test]
fn postgres_sink_problems() {
    check(&[
        case(
            "no table",
            sink("url = \"postgres://weir@127.0.0.1/test\""),
            "sinks[0].table",
            Some("type = \"postgres\""),
            "a postgres sink needs `table`",
        ),
        case(
            "URL of another scheme",
            sink("url = \"mysql://127.0.0.1/test\"\ntable = \"t\""),
            "sinks[0].url",
            Some("url ="),
            "unsupported scheme \"mysql\" in \"mysql://127.0.0.1/test\" (expected postgres:// or postgresql://)",
        ),
        case(
            "URL without a database",
            sink("url = \"postgres://127.0.0.1\"\ntable = \"t\""),
            "sinks[0].url",
            Some("url ="),
            "\"postgres://127.0.0.1\" names no database (postgres://user@host:port/database)",
        ),
        case(
            "table that is not a plain name",
            sink("url = \"postgres://127.0.0.1/test\"\ntable = \"a.b.c\""),
            "sinks[0].table",
            Some("table ="),
            "\"a.b.c\" is not a plain table name (letters, digits and '_', optionally schema.table)",
        ),
        case(
            "token",
            sink("url = \"postgres://weir@127.0.0.1/test\"\ntable = \"t\"\ntoken_file = \"Cargo.toml\""),
            "sinks[0].token_env",
            Some("[[sinks]]"),
            "PostgreSQL takes `user` and a password, not a token",
        ),
        case(
            "key of another connector",
            sink("url = \"postgres://127.0.0.1/test\"\ntable = \"t\"\ntopic = \"x\""),
            "sinks[0].topic",
            Some("topic ="),
            "`topic` does not apply to postgres sinks (they take url, table, create_table)",
        ),
        source_case(
            "as a source",
            patched(&minimal(), "type = \"memory\"", "type = \"postgres\""),
            "sources[0].type",
            Some("type = \"postgres\""),
            "unknown source type \"postgres\" (expected file, stdin, memory, log, nats, mqtt or kafka)",
        ),
    ]);
}
