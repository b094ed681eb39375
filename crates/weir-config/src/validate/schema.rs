//! What flows between steps: a port's schema and what is known about its
//! records (key, event time), and the schema helpers the step checks share.

use std::ops::Range;
use std::sync::Arc;

use arrow_schema::{Field, Schema, SchemaRef};

use crate::check::Checker;
use crate::CompiledExpr;

/// What flows out of a step: its schema and what is known about it.
#[derive(Clone)]
pub(super) struct PortInfo {
    pub schema: SchemaRef,
    /// Key column once keyed.
    pub key: Option<String>,
    /// Event-time column and its out-of-orderness bound.
    pub event_time: Option<(String, i64)>,
}

impl PortInfo {
    /// Another schema with the same key and event time.
    pub fn with_schema(&self, schema: SchemaRef) -> PortInfo {
        PortInfo {
            schema,
            key: self.key.clone(),
            event_time: self.event_time.clone(),
        }
    }
}

/// The visible column names of a schema, for "available: ..." hints.
pub(super) fn visible(schema: &Schema) -> String {
    schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .filter(|n| !crate::is_hidden(n))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `schema` with `extra` fields appended.
pub(super) fn with_fields(schema: &Schema, extra: Vec<Field>) -> SchemaRef {
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.extend(extra);
    Arc::new(Schema::new(fields))
}

/// Compiles an expression (a predicate when `predicate`) against `schema`,
/// reporting a failure at `path`, on the line of `key`.
pub(super) fn compile_at(
    c: &mut Checker<'_>,
    path: String,
    span: &Range<usize>,
    key: &str,
    src: &str,
    schema: &Schema,
    predicate: bool,
) -> Option<CompiledExpr> {
    let r = if predicate {
        weir_expr::compile_predicate(src, schema)
    } else {
        weir_expr::compile(src, schema)
    };
    match r {
        Ok(e) => Some(e),
        Err(e) => {
            c.at(path, span, key, format!("{e} in {src:?}"));
            None
        }
    }
}
