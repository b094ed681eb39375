//! The pipeline file as written: one serde struct per component kind.
//!
//! These structs reject unknown keys and wrong types; `validate` turns them
//! into the checked [`crate::Pipeline`].

use serde::Deserialize;

/// The top level of a pipeline file. Components stay untyped tables here so
/// each can be checked on its own and its errors located in the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileSpec {
    pub name: String,
    #[serde(default)]
    pub settings: Option<toml::Spanned<toml::Table>>,
    #[serde(default)]
    pub sources: Vec<toml::Spanned<toml::Table>>,
    #[serde(default)]
    pub steps: Vec<toml::Spanned<toml::Table>>,
    #[serde(default)]
    pub sinks: Vec<toml::Spanned<toml::Table>>,
    #[serde(default)]
    pub dead_letter: Option<toml::Spanned<toml::Table>>,
    #[serde(default)]
    pub checkpoint: Option<toml::Spanned<toml::Table>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CheckpointSpec {
    #[serde(default)]
    pub dir: Option<String>,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub interval: Option<String>,
    #[serde(default)]
    pub keep: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SettingsSpec {
    #[serde(default)]
    pub batch_rows: Option<i64>,
    #[serde(default)]
    pub shards: Option<i64>,
    #[serde(default)]
    pub key_groups: Option<i64>,
    #[serde(default)]
    pub tasks: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SourceSpec {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub framing: Option<String>,
    #[serde(default)]
    pub stream: Option<String>,
    #[serde(default)]
    pub partitions: Option<i64>,
    #[serde(default)]
    pub follow: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FieldSpec {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub optional: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DecodeSpec {
    pub name: String,
    #[serde(rename = "type")]
    pub _kind: String,
    pub input: String,
    pub format: String,
    pub fields: Vec<FieldSpec>,
    #[serde(default)]
    pub proto: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub event_time: Option<String>,
    #[serde(default)]
    pub max_out_of_orderness: Option<String>,
    #[serde(default)]
    pub max_record_bytes: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FilterSpec {
    pub name: String,
    #[serde(rename = "type")]
    pub _kind: String,
    pub input: String,
    #[serde(rename = "where")]
    pub predicate: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeriveSpec {
    pub name: String,
    #[serde(rename = "type")]
    pub _kind: String,
    pub input: String,
    pub columns: toml::Table,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SelectSpec {
    pub name: String,
    #[serde(rename = "type")]
    pub _kind: String,
    pub input: String,
    pub columns: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct KeyBySpec {
    pub name: String,
    #[serde(rename = "type")]
    pub _kind: String,
    pub input: String,
    pub key: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WindowSpec {
    pub name: String,
    #[serde(rename = "type")]
    pub _kind: String,
    pub input: String,
    pub kind: String,
    pub size: String,
    #[serde(default)]
    pub slide: Option<String>,
    pub aggregates: toml::Table,
    #[serde(default)]
    pub late: Option<String>,
    #[serde(default)]
    pub allowed_lateness: Option<String>,
    #[serde(default)]
    pub revision_column: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ModelSpec {
    pub name: String,
    #[serde(rename = "type")]
    pub _kind: String,
    pub input: String,
    pub path: String,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RouteSpec {
    pub name: String,
    #[serde(rename = "type")]
    pub _kind: String,
    pub input: String,
    pub routes: toml::Table,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SinkSpec {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub input: String,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub format: Option<String>,
    #[serde(default)]
    pub proto: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub columns: Option<Vec<String>>,
    #[serde(default)]
    pub stream: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeadLetterSpec {
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub log: Option<String>,
    #[serde(default)]
    pub stream: Option<String>,
}
