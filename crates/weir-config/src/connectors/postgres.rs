//! PostgreSQL: a sink upserting records in batches, keyed on the output id.

use super::address::parse_url;
use super::at::At;
use super::credentials::{auth_of, Credentials};
use super::{Connector, ConnectorSinkSpec, Context, SinkChecks};
use crate::SinkKind;

/// A PostgreSQL sink: batched upserts keyed on the output id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresSink {
    /// Server host.
    pub host: String,
    /// Server port.
    pub port: u16,
    /// Database.
    pub database: String,
    /// The table written; columns are the sink's columns plus `_id`.
    pub table: String,
    /// Create the table when it does not exist.
    pub create_table: bool,
    /// User and password.
    pub credentials: Credentials,
}

pub(super) const CONNECTOR: Connector = Connector {
    kind: "postgres",
    source: None,
    sink: Some(SinkChecks {
        keys: &["url", "table", "create_table"],
        check: check_sink,
    }),
};

fn check_sink(at: &mut At<'_, '_>, s: ConnectorSinkSpec, context: &Context<'_>) -> SinkKind {
    let url = at.required(&s.kind, "url", &s.url);
    let (host, port, user, database) = match parse_url(&url, &["postgres", "postgresql"], 5432) {
        Ok(u) => {
            if u.path.is_empty() {
                at.bad(
                    "url",
                    format!("{url:?} names no database (postgres://user@host:port/database)"),
                );
            }
            (u.host, u.port, u.user, u.path)
        }
        Err(e) => {
            if !url.is_empty() {
                at.bad("url", e);
            }
            (String::new(), 0, None, String::new())
        }
    };
    let table = at.required(&s.kind, "table", &s.table);
    if !table.is_empty() && !is_sql_identifier(&table) {
        at.bad(
            "table",
            format!("{table:?} is not a plain table name (letters, digits and '_', optionally schema.table)"),
        );
    }
    let mut auth = auth_of!(s);
    if auth.user.is_none() {
        auth.user = user;
    }
    if auth.token_env.is_some() || auth.token_file.is_some() {
        at.bad(
            "token_env",
            "PostgreSQL takes `user` and a password, not a token",
        );
    }
    let credentials = at.credentials(auth, context.base_dir);
    SinkKind::Postgres(PostgresSink {
        host,
        port,
        database,
        table,
        create_table: s.create_table.unwrap_or(true),
        credentials,
    })
}

/// A plain table name: letters, digits and `_`, optionally `schema.table`.
fn is_sql_identifier(name: &str) -> bool {
    let parts: Vec<&str> = name.split('.').collect();
    parts.len() <= 2
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.chars()
                    .next()
                    .is_some_and(|ch| ch.is_ascii_alphabetic() || ch == '_')
                && p.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
        })
}

#[cfg(test)]
mod tests {
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
            case(
                "as a source",
                patched(&minimal(), "type = \"memory\"", "type = \"postgres\""),
                "sources[0].type",
                Some("type = \"postgres\""),
                "unknown source type \"postgres\" (expected file, stdin, memory, log, nats, mqtt or kafka)",
            ),
        ]);
    }
}
