//! Pipeline files for weir.
//!
//! A pipeline is a TOML file declaring one source, a tree of steps and one or
//! more sinks. [`load`] reads and checks it without connecting anywhere or
//! loading models: `${VAR}` references are replaced from the environment,
//! then unknown keys, wrong types, references to undefined steps or
//! columns, expressions that do not type-check, and cycles are all
//! reported with the field path and line, one problem per mistake.
//! [`load_with`] and [`Checks`] add what `weir validate` checks outside the
//! file: that a file source's file exists, and (through a [`ModelShapes`]
//! the engine provides) that each model step fits its model.
//! The result, [`Pipeline`], carries each step's input and output schema and
//! the resolved [`Graph`] of steps and sinks, so the engine builds its
//! operators without re-deriving types or wiring.
//!
//! Modules, each using only those listed before it (and the pipeline types
//! of this file, the vocabulary they all share):
//!
//! - `error`, `duration`: problems with their lines; human durations.
//! - `interpolate`: `${VAR}` references replaced before the text is parsed.
//! - `spec`: the file's form, one serde struct per component kind.
//! - `check`: the [`Problem`] collector shared by validation and connectors.
//! - `graph`: the resolved tree the engine runs ([`Graph`], [`Consumer`]).
//! - `fingerprint`: what the pipeline's saved state means
//!   ([`Pipeline::fingerprint`]).
//! - `connectors`: one file per connector (NATS, MQTT, Kafka, PostgreSQL)
//!   and their registry; uses `check`, never `validate`.
//! - `validate`: one module per concern; uses all of the above and builds
//!   the [`Pipeline`].

#![deny(missing_docs)]

mod check;
mod connectors;
mod duration;
mod error;
mod fingerprint;
mod graph;
mod interpolate;
mod spec;
mod tasks;
#[cfg(test)]
mod test_support;
mod validate;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema, SchemaRef};

pub use connectors::{
    Credentials, KafkaDelivery, KafkaSink, KafkaSource, MqttSink, MqttSource, NatsSink, NatsSource,
    PostgresSink, Secret,
};
pub use duration::parse_duration_ms;
pub use error::{ConfigError, Problem};
pub use graph::{Consumer, Graph};
pub use tasks::{task_key_groups, task_of_group};
pub use weir_expr::CompiledExpr;

/// Name of the hidden column carrying each record's position in its source
/// (0-based record number). It is the basis of deterministic output ids.
pub const POSITION_COLUMN: &str = "__pos";
/// Name of the hidden column carrying, for each record, the largest event
/// time among the records before it in the same micro-batch (`i64::MIN` when
/// none). Shards combine it with the maxima of earlier batches to get the
/// per-record watermark, independent of how input was cut into batches.
pub const PRIOR_MAX_TIME_COLUMN: &str = "__prior_max_ts";

/// Reads and validates a pipeline file, with the checks of what lies
/// outside it that every run needs ([`Checks::default`]).
pub fn load(path: &Path) -> Result<Pipeline, ConfigError> {
    load_with(path, &Checks::default())
}

/// Reads and validates a pipeline file, with `checks` of what lies outside
/// it. `${VAR}` references are replaced from the environment first (see
/// the README); problems show `${VAR}` where a value would appear.
pub fn load_with(path: &Path, checks: &Checks<'_>) -> Result<Pipeline, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let base_dir = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    parse_with(&text, &base_dir, checks).map_err(|problems| ConfigError::Invalid {
        file: path.display().to_string(),
        problems,
    })
}

/// Validates pipeline text; relative paths in it resolve against `base_dir`.
pub fn parse(text: &str, base_dir: &Path) -> Result<Pipeline, Vec<Problem>> {
    parse_with(text, base_dir, &Checks::default())
}

/// Validates pipeline text with `checks` of what lies outside it; relative
/// paths in it resolve against `base_dir`.
pub fn parse_with(
    text: &str,
    base_dir: &Path,
    checks: &Checks<'_>,
) -> Result<Pipeline, Vec<Problem>> {
    check_text(text, base_dir, checks, &interpolate::from_environment)
}

/// Interpolates `text` with variables from `lookup`, then validates it.
fn check_text(
    text: &str,
    base_dir: &Path,
    checks: &Checks<'_>,
    lookup: &dyn Fn(&str) -> Result<Option<String>, String>,
) -> Result<Pipeline, Vec<Problem>> {
    let done = interpolate::interpolate(text, lookup)?;
    validate::validate(&done.text, base_dir, checks).map_err(|problems| done.scrub(problems))
}

/// What validation checks outside the pipeline file. Always: that the
/// files steps read exist (a model, a Protobuf schema) and that credentials
/// can be read. [`Checks::all`] adds what `weir validate` checks before
/// anything runs.
#[derive(Clone, Copy, Default)]
pub struct Checks<'a> {
    /// A file source's file must exist. Off by default: a run may be handed
    /// its input otherwise (tests, benchmarks, the Rust API), and one whose
    /// file is missing fails when it opens it.
    pub source_files: bool,
    /// Reads model files, to check that each model step names as many
    /// inputs and outputs as its model has.
    pub models: Option<&'a dyn ModelShapes>,
}

impl<'a> Checks<'a> {
    /// Every check: source files exist, models fit their steps.
    pub fn all(models: &'a dyn ModelShapes) -> Checks<'a> {
        Checks {
            source_files: true,
            models: Some(models),
        }
    }
}

/// What a model file declares, for [`Checks::models`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelShape {
    /// Features per row the model takes.
    pub inputs: usize,
    /// Values per row it produces, all outputs together.
    pub outputs: usize,
}

/// Reads model files (weir-config does not: the engine's model crate does).
pub trait ModelShapes {
    /// The shape of the model in this file, or why it cannot be used (in
    /// words that name the file).
    fn shape(&self, path: &Path) -> Result<ModelShape, String>;
}

/// A checked pipeline, ready for the engine to build.
#[derive(Debug, Clone)]
pub struct Pipeline {
    /// The pipeline's name.
    pub name: String,
    /// Directory relative paths were resolved against.
    pub base_dir: PathBuf,
    /// Engine settings.
    pub settings: Settings,
    /// The one source.
    pub source: Source,
    /// Steps in an order where every step comes after its input.
    pub steps: Vec<Step>,
    /// Sinks.
    pub sinks: Vec<Sink>,
    /// Where rejected records go.
    pub dead_letter: DeadLetter,
    /// Checkpointing, when configured: exactly-once output and recovery.
    pub checkpoint: Option<CheckpointSettings>,
    /// The steps and sinks as a resolved tree: what reads each step's
    /// output ports, the decode step, and the worker and shard parts.
    pub graph: Graph,
    /// The one task this pipeline runs, when it was made by
    /// [`Pipeline::for_task`]; `None`: the whole pipeline.
    pub task: Option<Task>,
}

/// One task of a pipeline split into `settings.tasks` tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Task {
    /// The task's number, from 0.
    pub index: u32,
    /// The number of tasks.
    pub count: u32,
    /// The key groups it owns.
    pub key_groups: (u32, u32),
}

/// What `{task}` in a sink's path or stream, or the dead letter's, stands
/// for in a pipeline split into tasks.
pub const TASK_PLACEHOLDER: &str = "{task}";

/// The `[checkpoint]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointSettings {
    /// Directory of the checkpoint store (`dir = "..."`); empty when the
    /// store is at `url`.
    pub dir: PathBuf,
    /// The checkpoint store as a URL (`url = "s3://bucket/prefix"`,
    /// `gs://`, `az://`, `file:///abs/dir`, `memory:///`); `None` for a
    /// directory.
    pub url: Option<String>,
    /// Time between checkpoints, in ms.
    pub interval_ms: u64,
    /// Number of completed checkpoints kept.
    pub keep: usize,
}

impl Pipeline {
    /// The step with this name.
    pub fn step(&self, name: &str) -> Option<&Step> {
        self.steps.iter().find(|s| s.name == name)
    }

    /// Identifies what the pipeline's saved state means: the key group
    /// count and, per window step, its name, key column and type, shape
    /// (kind, size, slide, event-time column, out-of-orderness bound, late
    /// policy) and aggregates (output column, function, input column,
    /// output type). A checkpoint restores only into a pipeline with the
    /// same fingerprint; changes that keep the state's meaning (a filter's
    /// predicate, an expression, a step without state, a source's or sink's
    /// path, batch sizes, shard counts) keep it. `name@hash`, the hash the
    /// same in every Rust version.
    pub fn fingerprint(&self) -> String {
        fingerprint::fingerprint(self)
    }
}

/// Engine settings from the `[settings]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Upper bound on records per micro-batch (natural batching never waits
    /// to fill one).
    pub batch_rows: usize,
    /// Number of shards; 0 means one per available core.
    pub shards: usize,
    /// Number of key groups keys hash into; fixed for the life of the
    /// pipeline's state, it bounds the useful number of shards.
    pub key_groups: u32,
    /// Number of tasks the key groups are split into (contiguous ranges);
    /// a task is the unit of ownership, state and recovery that `weir run`
    /// processes share. Fixed for the life of the pipeline's state, like
    /// the key groups. 1: the pipeline is one task.
    pub tasks: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            batch_rows: 4096,
            shards: 0,
            key_groups: 128,
            tasks: 1,
        }
    }
}

/// The pipeline's source of records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// Name steps refer to.
    pub name: String,
    /// Where records come from.
    pub kind: SourceKind,
    /// How records are cut from the byte stream.
    pub framing: Framing,
}

/// Where a source's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceKind {
    /// A file, read to its end.
    File {
        /// Resolved path.
        path: PathBuf,
    },
    /// Standard input, read to its end.
    Stdin,
    /// Bytes handed over by the embedding program (benchmarks, tests and
    /// the Rust API); `weir run` requires them to be supplied.
    Memory,
    /// A stream of the embedded durable log, read from its first retained
    /// offset (or the checkpointed position) to the end it had when the run
    /// started, or on and on with `follow`.
    Log {
        /// The log directory.
        dir: PathBuf,
        /// The stream name.
        stream: String,
        /// Its number of partitions.
        partitions: u32,
        /// Keep reading records as they are appended (never ends by
        /// itself) instead of stopping at the end present at start.
        follow: bool,
    },
    /// A NATS JetStream stream, through a durable pull consumer.
    Nats(NatsSource),
    /// MQTT topics, made durable in a log stream before acknowledgement.
    Mqtt(MqttSource),
    /// Every partition of a Kafka topic.
    Kafka(KafkaSource),
}

impl SourceKind {
    /// Whether this source reads an external broker (and so, like a
    /// following log, never ends unless drained).
    pub fn is_connector(&self) -> bool {
        matches!(
            self,
            SourceKind::Nats(_) | SourceKind::Mqtt(_) | SourceKind::Kafka(_)
        )
    }
}

impl Source {
    /// How the records handed to the decoder are framed: as configured for
    /// byte streams; log records arrive whole and are passed on
    /// length-delimited.
    pub fn record_framing(&self) -> Framing {
        match self.kind {
            SourceKind::Log { .. }
            | SourceKind::Nats(_)
            | SourceKind::Mqtt(_)
            | SourceKind::Kafka(_) => Framing::LengthDelimited,
            _ => self.framing,
        }
    }
}

/// How records are cut from a byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// One record per line (`\n`, an optional `\r` before it is dropped).
    Lines,
    /// Each record preceded by its length as a protobuf varint.
    LengthDelimited,
}

/// Where a step or sink takes its records from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Port {
    /// The source or step.
    pub node: String,
    /// For route steps, the route.
    pub output: Option<String>,
}

impl std::fmt::Display for Port {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.output {
            Some(o) => write!(f, "{}.{}", self.node, o),
            None => f.write_str(&self.node),
        }
    }
}

/// A checked step.
#[derive(Debug, Clone)]
pub struct Step {
    /// Unique name.
    pub name: String,
    /// Where its records come from.
    pub input: Port,
    /// Schema of its input records.
    pub input_schema: SchemaRef,
    /// Schema of its output records (all routes of a route step share it).
    pub output_schema: SchemaRef,
    /// Whether the step runs after a `key_by` (on the shard owning the key).
    pub keyed: bool,
    /// What it does.
    pub kind: StepKind,
}

/// What a step does.
#[derive(Debug, Clone)]
pub enum StepKind {
    /// Parse raw records into columns.
    Decode(Decode),
    /// Keep records for which the predicate is true.
    Filter {
        /// The predicate.
        predicate: CompiledExpr,
    },
    /// Append computed columns, each able to use the ones before it.
    Derive {
        /// Name and expression per new column, in order.
        columns: Vec<(String, CompiledExpr)>,
    },
    /// Keep only these columns (hidden columns always stay).
    Select {
        /// Column names, in output order.
        columns: Vec<String>,
    },
    /// Partition by a key column; later steps run on the key's shard.
    KeyBy {
        /// The key column.
        key: String,
    },
    /// Event-time window aggregates per key.
    Window(Window),
    /// Run a model on each batch.
    Model(Model),
    /// Send each record to every route whose predicate holds.
    Route {
        /// Name and predicate per route.
        routes: Vec<(String, CompiledExpr)>,
    },
}

/// A decode step.
#[derive(Debug, Clone, PartialEq)]
pub struct Decode {
    /// Wire format.
    pub format: DecodeFormat,
    /// Column to use as event time (milliseconds), if any.
    pub event_time: Option<String>,
    /// Bound on out-of-orderness for watermarks, in ms.
    pub max_out_of_orderness_ms: i64,
    /// Records longer than this go to the dead-letter destination.
    pub max_record_bytes: usize,
}

/// A decoder's wire format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeFormat {
    /// One JSON object per record.
    Json,
    /// One Protobuf message per record.
    Protobuf(ProtoMessage),
}

/// A Protobuf message type and where its schema comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtoMessage {
    /// A `.proto` file, or a binary `FileDescriptorSet` (`.pb`, `.desc`, `.bin`).
    pub schema_file: PathBuf,
    /// Fully qualified message name.
    pub message: String,
}

/// A window step.
#[derive(Debug, Clone)]
pub struct Window {
    /// Sliding, tumbling or hopping.
    pub kind: WindowKind,
    /// Window length in ms.
    pub size_ms: i64,
    /// Event-time column.
    pub time_column: String,
    /// Key column (from the upstream `key_by`).
    pub key_column: String,
    /// Out-of-orderness bound of the event time, in ms.
    pub max_out_of_orderness_ms: i64,
    /// Aggregates, in output order.
    pub aggregates: Vec<Aggregate>,
    /// What to do with events behind the watermark.
    pub late: LatePolicy,
    /// How long past its end, in watermark time, a window still takes
    /// late events (ms): `allowed_lateness`, else one window size with
    /// `late = "update"`, else 0. Later events go to the dead letters.
    pub allowed_lateness_ms: i64,
    /// Tumbling and hopping windows: the declared column numbering the
    /// firings of one key's window (0, then 1 for its first re-firing, …).
    pub revision_column: Option<String>,
}

/// Window shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowKind {
    /// Per event: the events of its key with time in `(t - size, t]`.
    Sliding,
    /// Fixed, non-overlapping windows aligned to the epoch.
    Tumbling,
    /// Fixed windows of `size` starting every `slide_ms`.
    Hopping {
        /// Distance between window starts in ms.
        slide_ms: i64,
    },
}

/// What happens to a late event: one whose windows have all fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LatePolicy {
    /// Send it to the dead-letter destination, unless an allowed lateness
    /// is set.
    DeadLetter,
    /// Update its windows (they fire again) for an allowed lateness of one
    /// window size unless set otherwise; later events go to the dead
    /// letters.
    Update,
}

/// One aggregate of a window step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Aggregate {
    /// Output column.
    pub name: String,
    /// Function.
    pub function: AggregateFunction,
    /// Input column, `None` for `count(*)`.
    pub column: Option<String>,
    /// Output type.
    pub data_type: DataType,
}

/// Aggregate functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggregateFunction {
    /// Number of events (`count(*)`) or of non-null values.
    Count,
    /// Sum (exact for integers).
    Sum,
    /// Minimum.
    Min,
    /// Maximum.
    Max,
    /// Mean, as DOUBLE.
    Avg,
    /// Sample standard deviation (`stddev`, `stddev_samp`).
    StddevSamp,
    /// Population standard deviation (`stddev_pop`).
    StddevPop,
    /// Approximate number of distinct values (HyperLogLog).
    ApproxDistinct,
}

/// A model step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Model {
    /// The ONNX file.
    pub path: PathBuf,
    /// Input feature columns, in the model's feature order.
    pub inputs: Vec<String>,
    /// Output columns (DOUBLE), one per model output value.
    pub outputs: Vec<String>,
}

/// A checked sink.
#[derive(Debug, Clone)]
pub struct Sink {
    /// Unique name.
    pub name: String,
    /// Where its records come from.
    pub input: Port,
    /// Where records go.
    pub kind: SinkKind,
    /// Columns written, in order (hidden columns never are).
    pub columns: Vec<String>,
    /// Schema of the records it receives.
    pub input_schema: SchemaRef,
}

/// Where a sink writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkKind {
    /// Standard output, as JSON lines.
    Stdout,
    /// A file.
    File {
        /// Resolved path.
        path: PathBuf,
        /// Record encoding.
        format: SinkFormat,
    },
    /// A stream of the durable log, one JSON record per output record;
    /// under checkpoints, records a replay produces again are recognised by
    /// their `_id` and not appended twice.
    Log {
        /// The log directory.
        dir: PathBuf,
        /// The stream name.
        stream: String,
    },
    /// Counted and dropped.
    Discard,
    /// Published to NATS JetStream, deduplicated by `Nats-Msg-Id`.
    Nats(NatsSink),
    /// Published to an MQTT broker.
    Mqtt(MqttSink),
    /// Produced to a Kafka topic.
    Kafka(KafkaSink),
    /// Upserted into a PostgreSQL table.
    Postgres(PostgresSink),
}

/// Record encodings for file sinks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkFormat {
    /// JSON lines.
    Json,
    /// Length-delimited Protobuf messages.
    Protobuf(ProtoMessage),
}

/// The dead-letter destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// JSON-lines file of rejected records (used when `log` is not set).
    pub path: PathBuf,
    /// A durable log stream (log directory, stream name) that receives the
    /// entries instead of the file, for `weir dlq inspect` and `replay`.
    pub log: Option<(PathBuf, String)>,
}

/// Schema types allowed in `fields`, with their Arrow types.
pub fn field_type(name: &str) -> Option<DataType> {
    Some(match name {
        "bool" => DataType::Boolean,
        "i32" => DataType::Int32,
        "i64" => DataType::Int64,
        "u32" => DataType::UInt32,
        "u64" => DataType::UInt64,
        "f32" => DataType::Float32,
        "f64" => DataType::Float64,
        "string" => DataType::Utf8,
        _ => return None,
    })
}

/// True for the engine's hidden bookkeeping columns.
pub fn is_hidden(name: &str) -> bool {
    name.starts_with("__")
}

/// Builds the schema a decode step produces: the declared fields (name,
/// type, optional), then the hidden columns. Only optional fields are
/// nullable: a record missing a required field is rejected.
pub fn decoded_schema(fields: &[(String, DataType, bool)]) -> SchemaRef {
    let mut out: Vec<Field> = fields
        .iter()
        .map(|(n, t, optional)| Field::new(n, t.clone(), *optional))
        .collect();
    out.push(Field::new(POSITION_COLUMN, DataType::UInt64, false));
    out.push(Field::new(PRIOR_MAX_TIME_COLUMN, DataType::Int64, false));
    Arc::new(Schema::new(out))
}
