//! [`At`]: where the problems of one connector table are reported, and the
//! checks every connector uses on its values.

use std::ops::Range;

use crate::check::Checker;

/// Where problems of one component are reported; `ok` turns false at the
/// first.
pub(crate) struct At<'c, 'a> {
    c: &'c mut Checker<'a>,
    path: String,
    span: Range<usize>,
    /// No problem was reported through this yet.
    pub ok: bool,
}

impl<'c, 'a> At<'c, 'a> {
    /// Problems of the table at `path` (e.g. `sinks[1]`) spanning `span`.
    pub(crate) fn new(c: &'c mut Checker<'a>, path: String, span: Range<usize>) -> Self {
        At {
            c,
            path,
            span,
            ok: true,
        }
    }

    /// Reports a problem with `key`, on the line where it is assigned.
    pub(crate) fn bad(&mut self, key: &str, message: impl Into<String>) {
        self.c
            .at(format!("{}.{key}", self.path), &self.span, key, message);
        self.ok = false;
    }

    /// Reports `key` when its value is blank.
    pub(crate) fn nonempty(&mut self, key: &str, v: &str) {
        if v.trim().is_empty() {
            self.bad(key, "must not be empty");
        }
    }

    /// The value of a key a `kind` sink requires; empty (and reported)
    /// when it is blank or missing.
    pub(crate) fn required(&mut self, kind: &str, key: &str, v: &Option<String>) -> String {
        match v {
            Some(v) if !v.trim().is_empty() => v.clone(),
            Some(_) => {
                self.bad(key, "must not be empty");
                String::new()
            }
            None => {
                // Reported at the table's `type`, the key that asks for it.
                self.c.at(
                    format!("{}.{key}", self.path),
                    &self.span,
                    "type",
                    format!("a {kind} sink needs `{key}`"),
                );
                self.ok = false;
                String::new()
            }
        }
    }
}
