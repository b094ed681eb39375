//! NATS JetStream: a source reading a stream through a durable pull
//! consumer, and a sink publishing each record with its id as
//! `Nats-Msg-Id`.

use serde::Deserialize;
use toml::Spanned;

use super::address::parse_url;
use super::at::At;
use super::credentials::{auth_of, Credentials};
use super::{Connector, ConnectorSinkSpec, Context, SinkChecks};
use crate::check::Checker;
use crate::{SinkKind, SourceKind};

/// A NATS JetStream source: a durable pull consumer on a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsSource {
    /// Server URLs (`nats://host:port`), at least one.
    pub servers: Vec<String>,
    /// The JetStream stream read (it must exist).
    pub stream: String,
    /// Durable consumer name (default: the pipeline's name).
    pub consumer: String,
    /// Only messages on subjects matching this filter.
    pub subject: Option<String>,
    /// Credentials.
    pub credentials: Credentials,
}

/// A NATS JetStream sink: publishes each record to a subject, with the
/// record's id as `Nats-Msg-Id` so the stream drops replays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsSink {
    /// Server URLs (`nats://host:port`), at least one.
    pub servers: Vec<String>,
    /// Subject each record is published to; a stream must capture it.
    pub subject: String,
    /// Most publishes waiting for their acknowledgement.
    pub max_in_flight: usize,
    /// Credentials.
    pub credentials: Credentials,
}

pub(super) const CONNECTOR: Connector = Connector {
    kind: "nats",
    source: Some(check_source),
    sink: Some(SinkChecks {
        keys: &["url", "subject", "max_in_flight"],
        check: check_sink,
    }),
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NatsSourceSpec {
    name: String,
    #[serde(rename = "type")]
    _kind: String,
    url: String,
    stream: String,
    #[serde(default)]
    consumer: Option<String>,
    #[serde(default)]
    subject: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    password_env: Option<String>,
    #[serde(default)]
    password_file: Option<String>,
    #[serde(default)]
    token_env: Option<String>,
    #[serde(default)]
    token_file: Option<String>,
}

fn check_source(
    c: &mut Checker<'_>,
    table: &Spanned<toml::Table>,
    context: &Context<'_>,
) -> Option<(String, SourceKind)> {
    let path = "sources[0]".to_string();
    let s: NatsSourceSpec = c.typed(&path, table)?;
    let mut at = At::new(c, path, table.span());
    let servers = nats_servers(&mut at, &s.url);
    at.nonempty("stream", &s.stream);
    if s.stream.contains(['.', '*', '>', ' ']) {
        at.bad(
            "stream",
            "stream names may not contain '.', '*', '>' or spaces",
        );
    }
    let consumer = s
        .consumer
        .clone()
        .unwrap_or_else(|| durable_name(context.pipeline));
    if consumer.contains(['.', '*', '>', ' ']) || consumer.is_empty() {
        at.bad(
            "consumer",
            format!("{consumer:?} is not a valid durable name (no '.', '*', '>' or spaces)"),
        );
    }
    let credentials = at.credentials(auth_of!(s), context.base_dir);
    at.ok.then_some((
        s.name,
        SourceKind::Nats(NatsSource {
            servers,
            stream: s.stream,
            consumer,
            subject: s.subject,
            credentials,
        }),
    ))
}

fn check_sink(at: &mut At<'_, '_>, s: ConnectorSinkSpec, context: &Context<'_>) -> SinkKind {
    let url = at.required(&s.kind, "url", &s.url);
    let servers = if url.is_empty() {
        Vec::new()
    } else {
        nats_servers(at, &url)
    };
    let subject = at.required(&s.kind, "subject", &s.subject);
    if subject.contains(['*', '>', ' ']) {
        at.bad(
            "subject",
            "a publish subject may not contain wildcards or spaces",
        );
    }
    let max_in_flight = match s.max_in_flight.unwrap_or(1024) {
        n @ 1..=1_000_000 => n as usize,
        n => {
            at.bad(
                "max_in_flight",
                format!("must be between 1 and 1000000, got {n}"),
            );
            1
        }
    };
    let credentials = at.credentials(auth_of!(s), context.base_dir);
    SinkKind::Nats(NatsSink {
        servers,
        subject,
        max_in_flight,
        credentials,
    })
}

/// Server URLs from a comma-separated list; the user goes in `user`.
fn nats_servers(at: &mut At<'_, '_>, urls: &str) -> Vec<String> {
    let mut servers = Vec::new();
    for u in urls.split(',').map(str::trim) {
        match parse_url(u, &["nats", "tls"], 4222) {
            Ok(p) if p.user.is_some() => at.bad("url", "give the user with `user`, not in the URL"),
            Ok(p) => servers.push(format!(
                "{}://{}:{}",
                u.split("://").next().unwrap_or("nats"),
                p.host,
                p.port
            )),
            Err(e) => at.bad("url", e),
        }
    }
    servers
}

/// A durable name from the pipeline name: JetStream forbids '.', '*', '>'
/// and whitespace.
fn durable_name(pipeline: &str) -> String {
    pipeline
        .chars()
        .map(|ch| {
            if ch.is_whitespace() || "*.>".contains(ch) {
                '_'
            } else {
                ch
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use crate::test_support::*;

    /// The minimal pipeline reading a NATS source with these lines after its
    /// `type`.
    fn source(lines: &str) -> String {
        patched(
            &minimal(),
            "type = \"memory\"",
            &format!("type = \"nats\"\n{lines}"),
        )
    }

    /// The minimal pipeline writing to a NATS sink with these lines after its
    /// `input`.
    fn sink(lines: &str) -> String {
        patched(
            &minimal(),
            "type = \"discard\"\ninput = \"decode\"",
            &format!("type = \"nats\"\ninput = \"decode\"\n{lines}"),
        )
    }

    #[test]
    fn nats_source_problems() {
        check(&[
            case(
                "misspelt key",
                source("url = \"nats://127.0.0.1\"\nstrem = \"S\""),
                "sources[0].strem",
                Some("strem ="),
                "unknown field `strem`, expected one of `name`, `type`, `url`, `stream`, `consumer`, `subject`, `user`, `password_env`, `password_file`, `token_env`, `token_file`",
            ),
            case(
                "URL of another scheme",
                source("url = \"http://127.0.0.1\"\nstream = \"S\""),
                "sources[0].url",
                Some("url ="),
                "unsupported scheme \"http\" in \"http://127.0.0.1\" (expected nats:// or tls://)",
            ),
            case(
                "user in the URL",
                source("url = \"nats://weir@127.0.0.1\"\nstream = \"S\""),
                "sources[0].url",
                Some("url ="),
                "give the user with `user`, not in the URL",
            ),
            case(
                "empty stream",
                source("url = \"nats://127.0.0.1\"\nstream = \"\""),
                "sources[0].stream",
                Some("stream ="),
                "must not be empty",
            ),
            case(
                "stream with a dot",
                source("url = \"nats://127.0.0.1\"\nstream = \"a.b\""),
                "sources[0].stream",
                Some("stream ="),
                "stream names may not contain '.', '*', '>' or spaces",
            ),
            case(
                "invalid durable name",
                source("url = \"nats://127.0.0.1\"\nstream = \"S\"\nconsumer = \"a b\""),
                "sources[0].consumer",
                Some("consumer ="),
                "\"a b\" is not a valid durable name (no '.', '*', '>' or spaces)",
            ),
        ]);
    }

    #[test]
    fn nats_sink_problems() {
        check(&[
            case(
                "no URL",
                sink("subject = \"out\""),
                "sinks[0].url",
                Some("type = \"nats\""),
                "a nats sink needs `url`",
            ),
            case(
                "empty subject",
                sink("url = \"nats://127.0.0.1\"\nsubject = \"\""),
                "sinks[0].subject",
                Some("subject ="),
                "must not be empty",
            ),
            case(
                "wildcard subject",
                sink("url = \"nats://127.0.0.1\"\nsubject = \"out.>\""),
                "sinks[0].subject",
                Some("subject ="),
                "a publish subject may not contain wildcards or spaces",
            ),
            case(
                "no publishes in flight",
                sink("url = \"nats://127.0.0.1\"\nsubject = \"out\"\nmax_in_flight = 0"),
                "sinks[0].max_in_flight",
                Some("max_in_flight ="),
                "must be between 1 and 1000000, got 0",
            ),
            case(
                "key of another connector",
                sink("url = \"nats://127.0.0.1\"\nsubject = \"out\"\nretain = true"),
                "sinks[0].retain",
                Some("retain ="),
                "`retain` does not apply to nats sinks (they take url, subject, max_in_flight)",
            ),
            case(
                "unknown key",
                sink("url = \"nats://127.0.0.1\"\nsubjects = \"out\""),
                "sinks[0].subjects",
                Some("subjects ="),
                "unknown field `subjects`, expected one of `name`, `type`, `input`, `columns`, `url`, `brokers`, `subject`, `topic`, `table`, `max_in_flight`, `qos`, `client_id`, `retain`, `delivery`, `transactional_id`, `properties`, `create_table`, `user`, `password_env`, `password_file`, `token_env`, `token_file`",
            ),
        ]);
    }

    #[test]
    fn nats_sink_is_read() {
        let p = parse(&sink(
            "url = \"tls://127.0.0.1:4443\"\nsubject = \"out\"\ntoken_file = \"Cargo.toml\"",
        ))
        .expect("valid");
        let crate::SinkKind::Nats(n) = &p.sinks[0].kind else {
            panic!("not a NATS sink: {:?}", p.sinks[0].kind)
        };
        assert_eq!(n.servers, ["tls://127.0.0.1:4443"]);
        assert_eq!((n.subject.as_str(), n.max_in_flight), ("out", 1024));
        assert!(n.credentials.token.is_some());
        assert_eq!(n.credentials.user, None);
    }
}
