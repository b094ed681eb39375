//! Sources and sinks in external systems: NATS JetStream, MQTT, Kafka and
//! PostgreSQL.
//!
//! Checking a connector touches nothing outside the file except its
//! credentials: passwords and tokens come from an environment variable or a
//! file, read here so that a missing one is reported by `weir validate`
//! with the variable or file named, never the value. Addresses are checked
//! for form only; whether the server answers is the engine's business.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::validate::Checker;

/// A password or token. Its value is never printed: `Debug` shows where it
/// came from.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    value: String,
    origin: String,
}

impl Secret {
    /// A secret with a description of where it came from (for messages).
    pub fn new(value: impl Into<String>, origin: impl Into<String>) -> Secret {
        Secret {
            value: value.into(),
            origin: origin.into(),
        }
    }

    /// The value, for handing to a client library.
    pub fn expose(&self) -> &str {
        &self.value
    }

    /// Where it came from: `environment variable X` or `file F`.
    pub fn origin(&self) -> &str {
        &self.origin
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret(from {})", self.origin)
    }
}

/// Credentials for a server. All optional; which ones a server accepts is
/// its own business.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    /// User name.
    pub user: Option<String>,
    /// Password (with `user`).
    pub password: Option<Secret>,
    /// Token (NATS).
    pub token: Option<Secret>,
}

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

/// An MQTT source: subscribes with a persistent session and makes each
/// message durable in a stream of weir's log before acknowledging it; the
/// pipeline reads that stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttSource {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// Topic filters subscribed to.
    pub topics: Vec<String>,
    /// Subscription QoS: 0 or 1.
    pub qos: u8,
    /// Client id, which names the broker's persistent session (default: the
    /// pipeline's name).
    pub client_id: String,
    /// Log directory holding the stream of received messages.
    pub log_dir: PathBuf,
    /// Stream name in that directory (the source's name).
    pub stream: String,
    /// Drop a message whose topic and payload equal one of the last this
    /// many received (0: keep every message). QoS 1 delivers at least once;
    /// this removes the duplicates when payloads carry unique ids.
    pub dedup_window: usize,
    /// Credentials.
    pub credentials: Credentials,
}

/// An MQTT sink: publishes each record (JSON) to a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttSink {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// Topic published to.
    pub topic: String,
    /// Publish QoS: 0 or 1.
    pub qos: u8,
    /// Client id (default: pipeline name, a dash and the sink's name).
    pub client_id: String,
    /// Publish with the retain flag.
    pub retain: bool,
    /// Credentials.
    pub credentials: Credentials,
}

/// A Kafka source: every partition of one topic, assigned by weir, with
/// offsets kept in checkpoints and committed to the consumer group for
/// visibility.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaSource {
    /// Bootstrap servers, `host:port` separated by commas.
    pub brokers: String,
    /// The topic read.
    pub topic: String,
    /// Consumer group offsets are committed to (default: the pipeline's
    /// name).
    pub group_id: String,
    /// Further librdkafka properties, as given.
    pub properties: Vec<(String, String)>,
    /// SASL credentials.
    pub credentials: Credentials,
}

/// How a Kafka sink keeps replays out of its topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KafkaDelivery {
    /// Each epoch in one Kafka transaction; after a restart the records
    /// already committed past the checkpoint are read back and skipped.
    Transactional,
    /// Idempotent producer, record key = output id: replays may appear
    /// twice in the topic, with the same key (compaction or consumers
    /// remove them).
    Idempotent,
}

/// A Kafka sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaSink {
    /// Bootstrap servers, `host:port` separated by commas.
    pub brokers: String,
    /// The topic written.
    pub topic: String,
    /// Transactional or idempotent.
    pub delivery: KafkaDelivery,
    /// `transactional.id` (default: pipeline name, a dash and the sink's
    /// name).
    pub transactional_id: String,
    /// Further librdkafka properties, as given.
    pub properties: Vec<(String, String)>,
    /// SASL credentials.
    pub credentials: Credentials,
}

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

// ---------------------------------------------------------------------------
// The file's form.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NatsSourceSpec {
    pub name: String,
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MqttSourceSpec {
    pub name: String,
    #[serde(rename = "type")]
    _kind: String,
    url: String,
    topics: Vec<String>,
    #[serde(default)]
    qos: Option<i64>,
    #[serde(default)]
    client_id: Option<String>,
    buffer: String,
    #[serde(default)]
    dedup_window: Option<i64>,
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct KafkaSourceSpec {
    pub name: String,
    #[serde(rename = "type")]
    _kind: String,
    brokers: String,
    topic: String,
    #[serde(default)]
    group_id: Option<String>,
    #[serde(default)]
    properties: Option<toml::Table>,
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

/// Fields every connector sink has.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConnectorSinkSpec {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub input: String,
    #[serde(default)]
    pub columns: Option<Vec<String>>,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    brokers: Option<String>,
    #[serde(default)]
    subject: Option<String>,
    #[serde(default)]
    topic: Option<String>,
    #[serde(default)]
    table: Option<String>,
    #[serde(default)]
    max_in_flight: Option<i64>,
    #[serde(default)]
    qos: Option<i64>,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    retain: Option<bool>,
    #[serde(default)]
    delivery: Option<String>,
    #[serde(default)]
    transactional_id: Option<String>,
    #[serde(default)]
    properties: Option<toml::Table>,
    #[serde(default)]
    create_table: Option<bool>,
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

/// Credential fields as given. (Each connector's table repeats them:
/// serde's `flatten` would defeat `deny_unknown_fields`.)
#[derive(Debug, Default)]
struct AuthFields {
    user: Option<String>,
    password_env: Option<String>,
    password_file: Option<String>,
    token_env: Option<String>,
    token_file: Option<String>,
}

/// Source types that are connectors.
pub(crate) const SOURCE_TYPES: [&str; 3] = ["nats", "mqtt", "kafka"];
/// Sink types that are connectors.
pub(crate) const SINK_TYPES: [&str; 4] = ["nats", "mqtt", "kafka", "postgres"];

/// The part of a sink that is a connector.
pub(crate) enum ConnectorSinkKind {
    Nats(NatsSink),
    Mqtt(MqttSink),
    Kafka(KafkaSink),
    Postgres(PostgresSink),
}

// ---------------------------------------------------------------------------
// Checks.

/// The credential fields of a spec.
macro_rules! auth_of {
    ($s:expr) => {
        AuthFields {
            user: $s.user.clone(),
            password_env: $s.password_env.clone(),
            password_file: $s.password_file.clone(),
            token_env: $s.token_env.clone(),
            token_file: $s.token_file.clone(),
        }
    };
}

/// Where problems of one component are reported.
struct At<'c, 'a> {
    c: &'c mut Checker<'a>,
    path: String,
    span: Range<usize>,
    ok: bool,
}

impl At<'_, '_> {
    fn bad(&mut self, key: &str, message: impl Into<String>) {
        self.c
            .at(format!("{}.{key}", self.path), &self.span, key, message);
        self.ok = false;
    }

    fn credentials(&mut self, a: AuthFields, base_dir: &Path) -> Credentials {
        let password = self.secret("password", a.password_env, a.password_file, base_dir);
        let token = self.secret("token", a.token_env, a.token_file, base_dir);
        if password.is_some() && a.user.is_none() {
            self.bad("password_env", "a password needs `user`");
        }
        Credentials {
            user: a.user,
            password,
            token,
        }
    }

    fn secret(
        &mut self,
        what: &str,
        env: Option<String>,
        file: Option<String>,
        base_dir: &Path,
    ) -> Option<Secret> {
        match (env, file) {
            (None, None) => None,
            (Some(_), Some(_)) => {
                self.bad(
                    &format!("{what}_env"),
                    format!("give either `{what}_env` or `{what}_file`, not both"),
                );
                None
            }
            (Some(var), None) => match std::env::var(&var) {
                Ok(v) if !v.is_empty() => {
                    Some(Secret::new(v, format!("environment variable {var}")))
                }
                Ok(_) => {
                    self.bad(
                        &format!("{what}_env"),
                        format!("environment variable {var} is empty"),
                    );
                    None
                }
                Err(_) => {
                    self.bad(
                        &format!("{what}_env"),
                        format!("environment variable {var} is not set"),
                    );
                    None
                }
            },
            (None, Some(f)) => {
                let path = crate::validate::resolve(base_dir, &f);
                match std::fs::read_to_string(&path) {
                    Ok(v) if !v.trim().is_empty() => Some(Secret::new(
                        v.trim_end_matches(['\n', '\r']).to_string(),
                        format!("file {}", path.display()),
                    )),
                    Ok(_) => {
                        self.bad(
                            &format!("{what}_file"),
                            format!("{} is empty", path.display()),
                        );
                        None
                    }
                    Err(e) => {
                        self.bad(
                            &format!("{what}_file"),
                            format!("cannot read {}: {e}", path.display()),
                        );
                        None
                    }
                }
            }
        }
    }

    fn nonempty(&mut self, key: &str, v: &str) {
        if v.trim().is_empty() {
            self.bad(key, "must not be empty");
        }
    }

    fn qos(&mut self, v: Option<i64>) -> u8 {
        match v.unwrap_or(1) {
            q @ (0 | 1) => q as u8,
            q => {
                self.bad("qos", format!("must be 0 or 1, got {q}"));
                1
            }
        }
    }

    fn properties(&mut self, t: Option<toml::Table>) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (k, v) in t.unwrap_or_default() {
            let v = match v {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                other => {
                    self.bad(
                        "properties",
                        format!(
                            "property {k:?} must be a string, integer or boolean, got {}",
                            other.type_str()
                        ),
                    );
                    continue;
                }
            };
            if k.contains("password") || k.contains("secret") {
                self.bad(
                    "properties",
                    format!(
                        "property {k:?} holds a credential: give it with `password_env` or `password_file` instead"
                    ),
                );
                continue;
            }
            out.push((k, v));
        }
        out
    }
}

/// A server address parsed from `scheme://[user@]host[:port][/path]`.
#[derive(Debug, PartialEq, Eq)]
struct Url {
    user: Option<String>,
    host: String,
    port: u16,
    path: String,
}

fn parse_url(text: &str, schemes: &[&str], default_port: u16) -> Result<Url, String> {
    let expected = schemes
        .iter()
        .map(|s| format!("{s}://"))
        .collect::<Vec<_>>()
        .join(" or ");
    let Some((scheme, rest)) = text.split_once("://") else {
        return Err(format!(
            "{text:?} is not a URL (expected {expected}host:port)"
        ));
    };
    if !schemes.contains(&scheme) {
        return Err(format!(
            "unsupported scheme {scheme:?} in {text:?} (expected {expected})"
        ));
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i + 1..].to_string()),
        None => (rest, String::new()),
    };
    let (user, hostport) = match authority.rsplit_once('@') {
        Some((userinfo, hp)) => {
            if userinfo.contains(':') {
                return Err(
                    "the URL holds a password: give it with `password_env` or `password_file` instead"
                        .into(),
                );
            }
            (Some(userinfo.to_string()), hp)
        }
        None => (None, authority),
    };
    let (host, port) = host_port(hostport, default_port).map_err(|e| format!("{e} in {text:?}"))?;
    Ok(Url {
        user,
        host,
        port,
        path,
    })
}

fn host_port(text: &str, default_port: u16) -> Result<(String, u16), String> {
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        // [ipv6]:port
        let Some((h, after)) = rest.split_once(']') else {
            return Err("unclosed '['".into());
        };
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err(format!("unexpected {after:?} after the address")),
        };
        (h.to_string(), port)
    } else {
        match text.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (text.to_string(), None),
        }
    };
    if host.is_empty()
        || !host
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || "-._:".contains(ch))
    {
        return Err(format!("invalid host {host:?}"));
    }
    let port = match port {
        None => default_port,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => n,
            _ => return Err(format!("invalid port {p:?}")),
        },
    };
    Ok((host, port))
}

/// Checks a connector source; `name` is the pipeline's name (the default
/// consumer, client and group name).
pub(crate) fn check_source(
    c: &mut Checker<'_>,
    table: &Spanned<toml::Table>,
    kind: &str,
    base_dir: &Path,
    pipeline: &str,
) -> Option<(String, crate::SourceKind)> {
    let span = table.span();
    let path = "sources[0]".to_string();
    match kind {
        "nats" => {
            let s: NatsSourceSpec = c.typed(&path, table)?;
            let mut at = At {
                c,
                path,
                span,
                ok: true,
            };
            let servers = nats_servers(&mut at, &s.url);
            at.nonempty("stream", &s.stream);
            if s.stream.contains(['.', '*', '>', ' ']) {
                at.bad(
                    "stream",
                    "stream names may not contain '.', '*', '>' or spaces",
                );
            }
            let consumer = s.consumer.unwrap_or_else(|| durable_name(pipeline));
            if consumer.contains(['.', '*', '>', ' ']) || consumer.is_empty() {
                at.bad(
                    "consumer",
                    format!(
                        "{consumer:?} is not a valid durable name (no '.', '*', '>' or spaces)"
                    ),
                );
            }
            let credentials = at.credentials(auth_of!(s), base_dir);
            at.ok.then_some((
                s.name,
                crate::SourceKind::Nats(NatsSource {
                    servers,
                    stream: s.stream,
                    consumer,
                    subject: s.subject,
                    credentials,
                }),
            ))
        }
        "mqtt" => {
            let s: MqttSourceSpec = c.typed(&path, table)?;
            let mut at = At {
                c,
                path,
                span,
                ok: true,
            };
            let url = parse_url(&s.url, &["mqtt", "tcp"], 1883);
            let (host, port, user) = match url {
                Ok(u) => (u.host, u.port, u.user),
                Err(e) => {
                    at.bad("url", e);
                    (String::new(), 0, None)
                }
            };
            if s.topics.is_empty() {
                at.bad("topics", "give at least one topic filter");
            }
            for t in &s.topics {
                if let Err(e) = check_topic_filter(t) {
                    at.bad("topics", e);
                }
            }
            let qos = at.qos(s.qos);
            let client_id = s.client_id.unwrap_or_else(|| pipeline.to_string());
            at.nonempty("client_id", &client_id);
            let dedup_window = match s.dedup_window.unwrap_or(0) {
                n @ 0..=10_000_000 => n as usize,
                n => {
                    at.bad(
                        "dedup_window",
                        format!("must be between 0 and 10000000, got {n}"),
                    );
                    0
                }
            };
            let mut auth = auth_of!(s);
            if auth.user.is_none() {
                auth.user = user;
            }
            let credentials = at.credentials(auth, base_dir);
            at.ok.then(|| {
                (
                    s.name.clone(),
                    crate::SourceKind::Mqtt(MqttSource {
                        host,
                        port,
                        topics: s.topics,
                        qos,
                        client_id,
                        log_dir: crate::validate::resolve(base_dir, &s.buffer),
                        stream: s.name,
                        dedup_window,
                        credentials,
                    }),
                )
            })
        }
        "kafka" => {
            let s: KafkaSourceSpec = c.typed(&path, table)?;
            let mut at = At {
                c,
                path,
                span,
                ok: true,
            };
            kafka_brokers(&mut at, &s.brokers);
            at.nonempty("topic", &s.topic);
            let properties = at.properties(s.properties);
            let credentials = at.credentials(auth_of!(s), base_dir);
            at.ok.then(|| {
                (
                    s.name,
                    crate::SourceKind::Kafka(KafkaSource {
                        brokers: s.brokers,
                        topic: s.topic,
                        group_id: s.group_id.unwrap_or_else(|| pipeline.to_string()),
                        properties,
                        credentials,
                    }),
                )
            })
        }
        _ => None,
    }
}

/// Checks the connector fields of a sink.
pub(crate) fn check_sink(
    c: &mut Checker<'_>,
    path: &str,
    span: &Range<usize>,
    s: ConnectorSinkSpec,
    base_dir: &Path,
    pipeline: &str,
) -> Option<ConnectorSinkKind> {
    let mut at = At {
        c,
        path: path.to_string(),
        span: span.clone(),
        ok: true,
    };
    // Fields that belong to other connector kinds.
    let allowed: &[&str] = match s.kind.as_str() {
        "nats" => &["url", "subject", "max_in_flight"],
        "mqtt" => &["url", "topic", "qos", "client_id", "retain"],
        "kafka" => &[
            "brokers",
            "topic",
            "delivery",
            "transactional_id",
            "properties",
        ],
        _ => &["url", "table", "create_table"],
    };
    let given = [
        ("url", s.url.is_some()),
        ("brokers", s.brokers.is_some()),
        ("subject", s.subject.is_some()),
        ("topic", s.topic.is_some()),
        ("table", s.table.is_some()),
        ("max_in_flight", s.max_in_flight.is_some()),
        ("qos", s.qos.is_some()),
        ("client_id", s.client_id.is_some()),
        ("retain", s.retain.is_some()),
        ("delivery", s.delivery.is_some()),
        ("transactional_id", s.transactional_id.is_some()),
        ("properties", s.properties.is_some()),
        ("create_table", s.create_table.is_some()),
    ];
    for (key, present) in given {
        if present && !allowed.contains(&key) {
            at.bad(
                key,
                format!(
                    "`{key}` does not apply to {} sinks (they take {})",
                    s.kind,
                    allowed.join(", ")
                ),
            );
        }
    }
    let required = |at: &mut At<'_, '_>, key: &str, v: &Option<String>| -> String {
        match v {
            Some(v) if !v.trim().is_empty() => v.clone(),
            Some(_) => {
                at.bad(key, "must not be empty");
                String::new()
            }
            None => {
                // Reported at the table's `type`, the key that asks for it.
                at.c.at(
                    format!("{}.{key}", at.path),
                    &at.span,
                    "type",
                    format!("a {} sink needs `{key}`", s.kind),
                );
                at.ok = false;
                String::new()
            }
        }
    };
    let kind = match s.kind.as_str() {
        "nats" => {
            let url = required(&mut at, "url", &s.url);
            let servers = if url.is_empty() {
                Vec::new()
            } else {
                nats_servers(&mut at, &url)
            };
            let subject = required(&mut at, "subject", &s.subject);
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
            let credentials = at.credentials(auth_of!(s), base_dir);
            ConnectorSinkKind::Nats(NatsSink {
                servers,
                subject,
                max_in_flight,
                credentials,
            })
        }
        "mqtt" => {
            let url = required(&mut at, "url", &s.url);
            let (host, port, user) = match parse_url(&url, &["mqtt", "tcp"], 1883) {
                Ok(u) => (u.host, u.port, u.user),
                Err(e) => {
                    if !url.is_empty() {
                        at.bad("url", e);
                    }
                    (String::new(), 0, None)
                }
            };
            let topic = required(&mut at, "topic", &s.topic);
            if topic.contains(['+', '#']) {
                at.bad(
                    "topic",
                    "a publish topic may not contain wildcards ('+', '#')",
                );
            }
            let qos = at.qos(s.qos);
            let client_id = s
                .client_id
                .clone()
                .unwrap_or_else(|| format!("{pipeline}-{}", s.name));
            let mut auth = auth_of!(s);
            if auth.user.is_none() {
                auth.user = user;
            }
            let credentials = at.credentials(auth, base_dir);
            ConnectorSinkKind::Mqtt(MqttSink {
                host,
                port,
                topic,
                qos,
                client_id,
                retain: s.retain.unwrap_or(false),
                credentials,
            })
        }
        "kafka" => {
            let brokers = required(&mut at, "brokers", &s.brokers);
            if !brokers.is_empty() {
                kafka_brokers(&mut at, &brokers);
            }
            let topic = required(&mut at, "topic", &s.topic);
            let delivery = match s.delivery.as_deref() {
                None | Some("transactional") => KafkaDelivery::Transactional,
                Some("idempotent") => KafkaDelivery::Idempotent,
                Some(other) => {
                    at.bad(
                        "delivery",
                        format!("unknown delivery {other:?} (expected \"transactional\" or \"idempotent\")"),
                    );
                    KafkaDelivery::Transactional
                }
            };
            let properties = at.properties(s.properties);
            let credentials = at.credentials(auth_of!(s), base_dir);
            ConnectorSinkKind::Kafka(KafkaSink {
                brokers,
                topic,
                delivery,
                transactional_id: s
                    .transactional_id
                    .clone()
                    .unwrap_or_else(|| format!("{pipeline}-{}", s.name)),
                properties,
                credentials,
            })
        }
        _ => {
            let url = required(&mut at, "url", &s.url);
            let parsed = parse_url(&url, &["postgres", "postgresql"], 5432);
            let (host, port, user, database) = match parsed {
                Ok(u) => {
                    if u.path.is_empty() {
                        at.bad(
                            "url",
                            format!(
                                "{url:?} names no database (postgres://user@host:port/database)"
                            ),
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
            let table = required(&mut at, "table", &s.table);
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
            let credentials = at.credentials(auth, base_dir);
            ConnectorSinkKind::Postgres(PostgresSink {
                host,
                port,
                database,
                table,
                create_table: s.create_table.unwrap_or(true),
                credentials,
            })
        }
    };
    at.ok.then_some(kind)
}

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

fn kafka_brokers(at: &mut At<'_, '_>, brokers: &str) {
    for b in brokers.split(',').map(str::trim) {
        if b.contains("://") {
            at.bad(
                "brokers",
                format!("{b:?}: give brokers as host:port, without a scheme"),
            );
        } else if !b.contains(':') {
            at.bad("brokers", format!("{b:?} has no port (host:port)"));
        } else if let Err(e) = host_port(b, 9092) {
            at.bad("brokers", format!("{e} in {b:?}"));
        }
    }
}

fn check_topic_filter(t: &str) -> Result<(), String> {
    if t.is_empty() {
        return Err("topic filters must not be empty".into());
    }
    let levels: Vec<&str> = t.split('/').collect();
    for (i, l) in levels.iter().enumerate() {
        if l.contains('#') && (*l != "#" || i + 1 != levels.len()) {
            return Err(format!("{t:?}: '#' must be a whole last level"));
        }
        if l.contains('+') && *l != "+" {
            return Err(format!("{t:?}: '+' must be a whole level"));
        }
    }
    Ok(())
}

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
    use super::*;

    #[test]
    fn urls() {
        let u = parse_url("postgres://weir@127.0.0.1:5433/test", &["postgres"], 5432).unwrap();
        assert_eq!(
            u,
            Url {
                user: Some("weir".into()),
                host: "127.0.0.1".into(),
                port: 5433,
                path: "test".into()
            }
        );
        assert_eq!(
            parse_url("mqtt://[::1]", &["mqtt"], 1883).unwrap().port,
            1883
        );
        assert!(parse_url("mqtt://a:b@h:1", &["mqtt"], 1)
            .unwrap_err()
            .contains("password"));
        assert!(parse_url("http://h:1", &["mqtt"], 1)
            .unwrap_err()
            .contains("unsupported scheme"));
        assert!(parse_url("h:1", &["mqtt"], 1)
            .unwrap_err()
            .contains("not a URL"));
        assert!(parse_url("mqtt://h:99999", &["mqtt"], 1)
            .unwrap_err()
            .contains("invalid port"));
        assert!(parse_url("mqtt://:1", &["mqtt"], 1)
            .unwrap_err()
            .contains("invalid host"));
    }

    #[test]
    fn topic_filters() {
        assert!(check_topic_filter("a/+/b/#").is_ok());
        assert!(check_topic_filter("a/b#").is_err());
        assert!(check_topic_filter("a/#/b").is_err());
        assert!(check_topic_filter("a+/b").is_err());
    }

    #[test]
    fn secrets_are_not_printed() {
        let s = Secret::new("hunter2", "environment variable X");
        assert_eq!(format!("{s:?}"), "Secret(from environment variable X)");
    }
}
