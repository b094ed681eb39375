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
        source_case(
            "misspelt key",
            source("url = \"nats://127.0.0.1\"\nstrem = \"S\""),
            "sources[0].strem",
            Some("strem ="),
            "unknown field `strem`, expected one of `name`, `type`, `url`, `stream`, `consumer`, `subject`, `user`, `password_env`, `password_file`, `token_env`, `token_file`",
        ),
        source_case(
            "URL of another scheme",
            source("url = \"http://127.0.0.1\"\nstream = \"S\""),
            "sources[0].url",
            Some("url ="),
            "unsupported scheme \"http\" in \"http://127.0.0.1\" (expected nats:// or tls://)",
        ),
        source_case(
            "user in the URL",
            source("url = \"nats://weir@127.0.0.1\"\nstream = \"S\""),
            "sources[0].url",
            Some("url ="),
            "give the user with `user`, not in the URL",
        ),
        source_case(
            "empty stream",
            source("url = \"nats://127.0.0.1\"\nstream = \"\""),
            "sources[0].stream",
            Some("stream ="),
            "must not be empty",
        ),
        source_case(
            "stream with a dot",
            source("url = \"nats://127.0.0.1\"\nstream = \"a.b\""),
            "sources[0].stream",
            Some("stream ="),
            "stream names may not contain '.', '*', '>' or spaces",
        ),
        source_case(
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
