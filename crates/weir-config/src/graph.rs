//! The pipeline's steps as a resolved tree: where the records leaving each
//! step's output port go, which step decodes, and which steps the workers
//! and the shards run.
//!
//! Validation resolves every step's and sink's input (route names
//! included) and builds this once; the engine builds its operators from it
//! and never re-derives it. It depends only on names and inputs, so a
//! [`crate::Pipeline`] whose source or sink kinds are changed after loading
//! keeps a valid graph.

/// Where records leaving a step's output port go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consumer {
    /// A step, by index into [`crate::Pipeline::steps`].
    Step(usize),
    /// A sink, by index into [`crate::Pipeline::sinks`].
    Sink(usize),
}

/// The pipeline's steps as a resolved tree.
#[derive(Debug, Clone, Default)]
pub struct Graph {
    /// Per step (index into `Pipeline::steps`), per output port (a route step has one
    /// port per route, in declaration order; every other step one), its consumers:
    /// the steps reading it in pipeline order, then the sinks in pipeline order.
    pub children: Vec<Vec<Vec<Consumer>>>,
    /// The decode step: the one step reading the source.
    pub decode: usize,
    /// Steps the workers run, in pipeline order: every step not after a key_by, plus the
    /// key_by steps themselves (a key_by splits on the worker).
    pub unkeyed: Vec<usize>,
    /// Steps the shards run, in pipeline order: every step after a key_by (the key_by
    /// itself excluded). Empty for a pipeline without key_by.
    pub keyed: Vec<usize>,
}

impl Graph {
    /// Number of output ports of a step: one per route of a route step, one
    /// for any other step (0 for an index that is no step).
    pub fn port_count(&self, step: usize) -> usize {
        self.children.get(step).map_or(0, Vec::len)
    }
}
