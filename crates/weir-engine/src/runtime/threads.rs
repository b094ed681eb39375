//! Starting and joining the threads of a run, keeping the error that
//! explains a failure.
//!
//! Threads end in order (source, workers, shards, sinks, dead letters,
//! checkpoints) as each one's input channels close; the first error wins,
//! unless it only says that a thread downstream had already stopped, and a
//! panic becomes an internal error naming the thread.

use std::thread::{Scope, ScopedJoinHandle};

use crate::EngineError;

/// The threads of a run and its first error.
pub(crate) struct Threads<'scope, 'env> {
    scope: &'scope Scope<'scope, 'env>,
    first_error: Option<EngineError>,
}

/// A started thread and its role, for messages.
pub(crate) struct Handle<'scope, T> {
    handle: ScopedJoinHandle<'scope, Result<T, EngineError>>,
    role: &'static str,
}

impl<'scope, 'env> Threads<'scope, 'env> {
    pub fn new(scope: &'scope Scope<'scope, 'env>) -> Self {
        Threads {
            scope,
            first_error: None,
        }
    }

    /// Starts thread `name` in `role` (worker, shard, sink, …).
    pub fn spawn<T: Send + 'scope>(
        &mut self,
        name: impl Into<String>,
        role: &'static str,
        f: impl FnOnce() -> Result<T, EngineError> + Send + 'scope,
    ) -> Result<Handle<'scope, T>, EngineError> {
        let handle = std::thread::Builder::new()
            .name(name.into())
            .spawn_scoped(self.scope, f)
            .map_err(|e| EngineError::io(format!("cannot start {role} thread"), e))?;
        Ok(Handle { handle, role })
    }

    /// Waits for a thread; its error (or panic) is kept if it is the first.
    pub fn join<T>(&mut self, h: Handle<'scope, T>) -> Option<T> {
        match h.handle.join() {
            Ok(Ok(v)) => Some(v),
            Ok(Err(e)) => {
                self.failed(Some(e));
                None
            }
            Err(_) => {
                self.failed(Some(EngineError::Panicked { thread: h.role }));
                None
            }
        }
    }

    /// Keeps `e` if it explains the run's failure better than what is kept.
    pub fn failed(&mut self, e: Option<EngineError>) {
        if let Some(e) = e {
            EngineError::keep_first(&mut self.first_error, e);
        }
    }

    /// The run's outcome once every thread is joined.
    pub fn result(self) -> Result<(), EngineError> {
        match self.first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}
