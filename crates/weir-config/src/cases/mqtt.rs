use crate::test_support::*;

/// The minimal pipeline reading an MQTT source with these lines after its
/// `type`.
fn source(lines: &str) -> String {
    patched(
        &minimal(),
        "type = \"memory\"",
        &format!("type = \"mqtt\"\n{lines}"),
    )
}

/// The minimal pipeline writing to an MQTT sink with these lines after its
/// `input`.
fn sink(lines: &str) -> String {
    patched(
        &minimal(),
        "type = \"discard\"\ninput = \"decode\"",
        &format!("type = \"mqtt\"\ninput = \"decode\"\n{lines}"),
    )
}

#[test]
fn mqtt_source_problems() {
    check(&[
        source_case(
            "no buffer",
            source("url = \"mqtt://127.0.0.1\"\ntopics = [\"a\"]"),
            "sources[0]",
            Some("name = \"events\""),
            "missing field `buffer`",
        ),
        source_case(
            "URL that is not one",
            source("url = \"127.0.0.1:1883\"\ntopics = [\"a\"]\nbuffer = \"b\""),
            "sources[0].url",
            Some("url ="),
            "\"127.0.0.1:1883\" is not a URL (expected mqtt:// or tcp://host:port)",
        ),
        source_case(
            "no topics",
            source("url = \"mqtt://127.0.0.1\"\ntopics = []\nbuffer = \"b\""),
            "sources[0].topics",
            Some("topics ="),
            "give at least one topic filter",
        ),
        source_case(
            "empty topic filter",
            source("url = \"mqtt://127.0.0.1\"\ntopics = [\"\"]\nbuffer = \"b\""),
            "sources[0].topics",
            Some("topics ="),
            "topic filters must not be empty",
        ),
        source_case(
            "'#' before the last level",
            source("url = \"mqtt://127.0.0.1\"\ntopics = [\"a/#/b\"]\nbuffer = \"b\""),
            "sources[0].topics",
            Some("topics ="),
            "\"a/#/b\": '#' must be a whole last level",
        ),
        source_case(
            "'+' in a level",
            source("url = \"mqtt://127.0.0.1\"\ntopics = [\"a+/b\"]\nbuffer = \"b\""),
            "sources[0].topics",
            Some("topics ="),
            "\"a+/b\": '+' must be a whole level",
        ),
        source_case(
            "QoS 2",
            source("url = \"mqtt://127.0.0.1\"\ntopics = [\"a\"]\nqos = 2\nbuffer = \"b\""),
            "sources[0].qos",
            Some("qos ="),
            "must be 0 or 1, got 2",
        ),
        source_case(
            "empty client id",
            source(
                "url = \"mqtt://127.0.0.1\"\ntopics = [\"a\"]\nclient_id = \"\"\nbuffer = \"b\"",
            ),
            "sources[0].client_id",
            Some("client_id ="),
            "must not be empty",
        ),
        source_case(
            "negative dedup window",
            source(
                "url = \"mqtt://127.0.0.1\"\ntopics = [\"a\"]\nbuffer = \"b\"\ndedup_window = -1",
            ),
            "sources[0].dedup_window",
            Some("dedup_window ="),
            "must be between 0 and 10000000, got -1",
        ),
    ]);
}

#[test]
fn mqtt_sink_problems() {
    check(&[
        case(
            "no topic",
            sink("url = \"mqtt://127.0.0.1\""),
            "sinks[0].topic",
            Some("type = \"mqtt\""),
            "a mqtt sink needs `topic`",
        ),
        case(
            "wildcard topic",
            sink("url = \"mqtt://127.0.0.1\"\ntopic = \"alerts/+\""),
            "sinks[0].topic",
            Some("topic ="),
            "a publish topic may not contain wildcards ('+', '#')",
        ),
        case(
            "invalid port",
            sink("url = \"mqtt://127.0.0.1:0\"\ntopic = \"alerts\""),
            "sinks[0].url",
            Some("url ="),
            "invalid port \"0\" in \"mqtt://127.0.0.1:0\"",
        ),
        case(
            "QoS 3",
            sink("url = \"mqtt://127.0.0.1\"\ntopic = \"alerts\"\nqos = 3"),
            "sinks[0].qos",
            Some("qos ="),
            "must be 0 or 1, got 3",
        ),
        case(
            "key of another connector",
            sink("url = \"mqtt://127.0.0.1\"\ntopic = \"alerts\"\nsubject = \"s\""),
            "sinks[0].subject",
            Some("subject ="),
            "`subject` does not apply to mqtt sinks (they take url, topic, qos, client_id, retain)",
        ),
    ]);
}

#[test]
fn mqtt_sink_is_read() {
    let p = parse(&sink(
        "url = \"tcp://sensor@[::1]:1884\"\ntopic = \"alerts\"\nqos = 0\nretain = true",
    ))
    .expect("valid");
    assert_eq!(
        p.sinks[0].kind,
        crate::SinkKind::Mqtt(crate::MqttSink {
            host: "::1".into(),
            port: 1884,
            topic: "alerts".into(),
            qos: 0,
            client_id: "cases-out".into(),
            retain: true,
            credentials: crate::Credentials {
                user: Some("sensor".into()),
                password: None,
                token: None,
            },
        })
    );
}
