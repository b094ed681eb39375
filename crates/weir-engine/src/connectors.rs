//! The connector registry: the one place that maps a source or sink kind
//! of the pipeline file to the connector crate that runs it.
//!
//! Each broker or database connector sits behind a cargo feature of the
//! same name (`nats`, `mqtt`, `kafka`, `postgres`; all on by default), so
//! a build without one (an edge build without librdkafka or PostgreSQL)
//! still reads every pipeline file and refuses, when the run starts, a
//! pipeline that needs what was left out. Adding a connector means its
//! own crate, its config spec in `weir-config`, a feature, and one line
//! here per role.

use weir_config::{Pipeline, Sink, SinkKind, SourceKind};
use weir_connect::{ConnectError, SinkConnector, SourceConnector};

use crate::EngineError;

/// Opens the pipeline's source if it is a connector: the embedded log or
/// a broker (`None`: a byte source the engine reads itself), at `start` (the next offset per
/// partition from the restored checkpoint).
#[cfg_attr(
    not(all(feature = "nats", feature = "mqtt", feature = "kafka")),
    allow(unused_variables)
)]
pub(crate) fn open_source(
    p: &Pipeline,
    start: Option<&[u64]>,
    drain: bool,
) -> Result<Option<Box<dyn SourceConnector>>, EngineError> {
    let name = p.source.name.as_str();
    let opened: Result<Box<dyn SourceConnector>, ConnectError> = match &p.source.kind {
        SourceKind::File { .. } | SourceKind::Stdin | SourceKind::Memory => return Ok(None),
        SourceKind::Log {
            dir,
            stream,
            partitions,
            follow,
        } => {
            // The pipeline's name (with its task's) is the consumer whose
            // position ingest's lag bound reads.
            let consumer = p.consumer_name();
            let config = weir_log_source::LogSourceConfig {
                dir,
                stream,
                partitions: *partitions,
                read: p.task.is_some().then(|| p.log_partitions()).flatten(),
                follow: *follow,
                consumer: &consumer,
            };
            weir_log_source::open(name, &config, start, drain)
        }
        #[cfg(feature = "nats")]
        SourceKind::Nats(c) => weir_nats::open_source(name, c, start, drain),
        #[cfg(feature = "mqtt")]
        SourceKind::Mqtt(c) => weir_mqtt::open_source(name, c, start, drain),
        #[cfg(feature = "kafka")]
        SourceKind::Kafka(_) if p.task.is_some() => Err(ConnectError::Config(
            "a task's kafka source reads through its process's consumer group member \
             (weir run joins the group; see weir_kafka::KafkaGroup)"
                .into(),
        )),
        #[cfg(feature = "kafka")]
        SourceKind::Kafka(c) => weir_kafka::open_source(name, c, start, drain),
        #[allow(unreachable_patterns)] // reachable in builds without a connector
        other => return Err(not_built(&format!("source {name}"), source_kind(other))),
    };
    opened.map(Some).map_err(|e| EngineError::source(name, e))
}

/// A sink connector and what it writes to.
pub(crate) struct OpenedSink {
    pub connector: Box<dyn SinkConnector>,
    /// Where it writes, for messages (never with credentials).
    pub destination: String,
    /// Whether it takes each batch's rows as JSON (a database sink binds
    /// typed columns and gets none).
    pub json_rows: bool,
}

/// Opens a sink if it is a connector (`None`: a sink the engine writes
/// itself). `restored` is its part of the restored checkpoint.
#[cfg_attr(
    not(all(
        feature = "nats",
        feature = "mqtt",
        feature = "kafka",
        feature = "postgres"
    )),
    allow(unused_variables)
)]
pub(crate) fn open_sink(
    sink: &Sink,
    checkpointing: bool,
    restored: Option<&[u8]>,
) -> Result<Option<OpenedSink>, EngineError> {
    let name = sink.name.as_str();
    let opened = match &sink.kind {
        SinkKind::Stdout | SinkKind::File { .. } | SinkKind::Log { .. } | SinkKind::Discard => {
            return Ok(None)
        }
        #[cfg(feature = "nats")]
        SinkKind::Nats(c) => OpenedSink::new(
            name,
            weir_nats::open_sink(name, c, checkpointing, restored),
            format!("NATS subject {} at {}", c.subject, c.servers.join(",")),
            true,
        ),
        #[cfg(feature = "mqtt")]
        SinkKind::Mqtt(c) => OpenedSink::new(
            name,
            weir_mqtt::open_sink(name, c, checkpointing, restored),
            format!("MQTT topic {} at {}:{}", c.topic, c.host, c.port),
            true,
        ),
        #[cfg(feature = "kafka")]
        SinkKind::Kafka(c) => OpenedSink::new(
            name,
            weir_kafka::open_sink(name, c, checkpointing, restored),
            format!("Kafka topic {} at {}", c.topic, c.brokers),
            true,
        ),
        #[cfg(feature = "postgres")]
        SinkKind::Postgres(c) => OpenedSink::new(
            name,
            weir_postgres::open_sink(
                name,
                c,
                &sink.columns,
                &sink.input_schema,
                checkpointing,
                restored,
            ),
            format!(
                "PostgreSQL table {} at {}:{}/{}",
                c.table, c.host, c.port, c.database
            ),
            false,
        ),
        #[allow(unreachable_patterns)] // reachable in builds without a connector
        other => Err(not_built(&format!("sink {name}"), sink_kind(other))),
    };
    opened.map(Some)
}

impl OpenedSink {
    #[cfg_attr(
        not(any(
            feature = "nats",
            feature = "mqtt",
            feature = "kafka",
            feature = "postgres"
        )),
        allow(dead_code)
    )]
    fn new(
        name: &str,
        opened: Result<Box<dyn SinkConnector>, ConnectError>,
        destination: String,
        json_rows: bool,
    ) -> Result<OpenedSink, EngineError> {
        Ok(OpenedSink {
            connector: opened.map_err(|e| EngineError::sink(name, e))?,
            destination,
            json_rows,
        })
    }
}

/// The connectors a pipeline needs that this build lacks, as
/// `(component, feature)`: for `weir validate` and early refusal.
pub fn missing(p: &Pipeline) -> Vec<(String, &'static str)> {
    let mut out = Vec::new();
    let source = source_kind(&p.source.kind);
    if !built(source) {
        out.push((format!("source {}", p.source.name), source));
    }
    for s in &p.sinks {
        let kind = sink_kind(&s.kind);
        if !built(kind) {
            out.push((format!("sink {}", s.name), kind));
        }
    }
    out
}

/// The connectors this build has.
pub const BUILT: &[&str] = &[
    #[cfg(feature = "nats")]
    "nats",
    #[cfg(feature = "mqtt")]
    "mqtt",
    #[cfg(feature = "kafka")]
    "kafka",
    #[cfg(feature = "postgres")]
    "postgres",
];

fn built(kind: &str) -> bool {
    !matches!(kind, "nats" | "mqtt" | "kafka" | "postgres") || BUILT.contains(&kind)
}

fn source_kind(k: &SourceKind) -> &'static str {
    match k {
        SourceKind::File { .. } => "file",
        SourceKind::Stdin => "stdin",
        SourceKind::Memory => "memory",
        SourceKind::Log { .. } => "log",
        SourceKind::Nats(_) => "nats",
        SourceKind::Mqtt(_) => "mqtt",
        SourceKind::Kafka(_) => "kafka",
    }
}

fn sink_kind(k: &SinkKind) -> &'static str {
    match k {
        SinkKind::Stdout => "stdout",
        SinkKind::File { .. } => "file",
        SinkKind::Log { .. } => "log",
        SinkKind::Discard => "discard",
        SinkKind::Nats(_) => "nats",
        SinkKind::Mqtt(_) => "mqtt",
        SinkKind::Kafka(_) => "kafka",
        SinkKind::Postgres(_) => "postgres",
    }
}

fn not_built(component: &str, feature: &'static str) -> EngineError {
    EngineError::build(
        component,
        format!(
            "this weir was built without the {feature} connector (cargo feature `{feature}`; built in: {})",
            if BUILT.is_empty() { "none".to_string() } else { BUILT.join(", ") }
        ),
    )
}
