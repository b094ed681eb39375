//! The checking machinery that validation and the connectors share: a
//! [`Checker`] collecting problems with their field paths and lines, and
//! small readers of component tables.
//!
//! It imports neither `validate` nor `connectors`; both build on it.

use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use toml::Spanned;

use crate::error::{LineIndex, Problem};

/// Collects problems with their locations.
pub(crate) struct Checker<'a> {
    lines: LineIndex<'a>,
    problems: Vec<Problem>,
}

impl<'a> Checker<'a> {
    /// A checker of the pipeline text `text`, with no problems yet.
    pub(crate) fn new(text: &'a str) -> Self {
        Checker {
            lines: LineIndex::new(text),
            problems: Vec::new(),
        }
    }

    /// 1-based line of a byte offset in the text.
    pub(crate) fn line(&self, offset: usize) -> usize {
        self.lines.line(offset)
    }

    /// Records a problem located by the caller.
    pub(crate) fn push(&mut self, problem: Problem) {
        self.problems.push(problem);
    }

    /// Records a problem at the line where `key` is assigned inside `span`
    /// (the span's first line when the key is not found).
    pub(crate) fn at(
        &mut self,
        path: String,
        span: &Range<usize>,
        key: &str,
        message: impl Into<String>,
    ) {
        let line = Some(self.lines.key_line(span, key));
        self.problems.push(Problem {
            path,
            line,
            message: message.into(),
        });
    }

    /// Whether any problem was recorded.
    pub(crate) fn has_problems(&self) -> bool {
        !self.problems.is_empty()
    }

    /// The problems, in file order (problems on one line in the order they
    /// were found; those without a line first).
    pub(crate) fn into_problems(mut self) -> Vec<Problem> {
        self.problems.sort_by_key(|p| p.line.unwrap_or(0));
        self.problems
    }

    /// Deserializes a component table, reporting serde's words (unknown
    /// field, wrong type, missing field) at the offending key.
    pub(crate) fn typed<T: DeserializeOwned>(
        &mut self,
        path: &str,
        table: &Spanned<toml::Table>,
    ) -> Option<T> {
        match toml::Value::Table(table.get_ref().clone()).try_into::<T>() {
            Ok(v) => Some(v),
            Err(e) => {
                let message = e.message().trim().to_string();
                // Parsing the component's own text again gives the position
                // of the offending value, which the table has lost.
                let located = self
                    .lines
                    .section(&table.span())
                    .and_then(|(text, first_line)| {
                        let err = toml::from_str::<T>(text).err()?;
                        let at = err.span()?.start;
                        let before = text.get(..at)?;
                        let line_text = before.rsplit('\n').next().unwrap_or("");
                        let key = line_text.split('=').next().unwrap_or("").trim().to_string();
                        let line = first_line + before.matches('\n').count();
                        Some((line, key))
                    });
                let key = field_named(&message).filter(|_| !message.starts_with("missing field"));
                let (line, key) = match (located, key) {
                    (_, Some(k)) => (self.lines.key_line(&table.span(), &k), Some(k)),
                    (Some((line, k)), None) => (
                        line,
                        Some(k).filter(|k| !k.is_empty() && !k.contains(['{', '['])),
                    ),
                    (None, None) => (self.lines.line(table.span().start), None),
                };
                let field = match key {
                    Some(k) => format!("{path}.{k}"),
                    None => path.to_string(),
                };
                self.problems.push(Problem {
                    path: field,
                    line: Some(line),
                    message,
                });
                None
            }
        }
    }
}

/// The field a serde message names: `wher` in "unknown field `wher`,
/// expected ..." (also "missing field" and "duplicate field"). Other
/// messages quote a value, not a field ("invalid type: integer `5`").
pub(crate) fn field_named(message: &str) -> Option<String> {
    ["unknown field", "missing field", "duplicate field"]
        .iter()
        .any(|m| message.starts_with(m))
        .then(|| backticked(message))
        .flatten()
}

/// First `name` in backticks.
fn backticked(message: &str) -> Option<String> {
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    Some(message[start..start + len].to_string())
}

/// The `type` of a component table, when it is a string.
pub(crate) fn type_of(table: &toml::Table) -> Option<&str> {
    table.get("type").and_then(|v| v.as_str())
}

/// A path from the file: absolute as given, relative against `base_dir`.
pub(crate) fn resolve(base_dir: &Path, p: &str) -> PathBuf {
    let path = Path::new(p);
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base_dir.join(path)
    }
}
