//! Asking a running pipeline to stop, gracefully.
//!
//! A [`Stop`] is shared between the embedding program (`weir run` sets it
//! on SIGTERM or SIGINT) and the run. The source thread looks at it
//! between batches and polls: once it is set, the source stops reading and
//! sends a final barrier through the pipeline. Under checkpoints that
//! barrier takes a last checkpoint, after which the sinks commit and the
//! dead letters are synced; open windows are not fired (a restart resumes
//! them from the checkpoint). Every thread then ends as at the end of the
//! input, and `run` returns its summary.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

/// A request to stop a run; clones share it.
#[derive(Clone, Debug, Default)]
pub struct Stop {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    requested: AtomicBool,
    at: OnceLock<Instant>,
}

impl Stop {
    /// A stop nobody has requested yet.
    pub fn new() -> Stop {
        Stop::default()
    }

    /// Asks the run to stop; later calls change nothing.
    pub fn request(&self) {
        let _ = self.inner.at.set(Instant::now());
        self.inner.requested.store(true, Ordering::Release);
    }

    /// Whether a stop was requested (one relaxed-cost load).
    pub fn requested(&self) -> bool {
        self.inner.requested.load(Ordering::Acquire)
    }

    /// When the first request came.
    pub fn requested_at(&self) -> Option<Instant> {
        self.inner.at.get().copied()
    }
}

/// Why the source stopped reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    /// The input ended (or was drained).
    Input,
    /// A stop was requested.
    Stopped,
    /// The workers are gone (they failed; the run reports why).
    Abandoned,
}
