//! Engine errors: what failed, in which component, in the words of the
//! layer below.

/// An error that stops a job (bad input never does: it goes to the
/// dead-letter destination instead).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A component could not be built from its validated config.
    #[error("cannot build {component}: {message}")]
    Build {
        /// The source, step or sink name.
        component: String,
        /// What went wrong.
        message: String,
    },
    /// Reading or writing failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, with the path.
        context: String,
        /// The operating system's words.
        source: std::io::Error,
    },
    /// A checkpoint could not be written or restored.
    #[error("{0}")]
    Checkpoint(String),
    /// A worker thread failed or panicked.
    #[error("{0}")]
    Worker(String),
    /// A thread stopped because the one it feeds had already failed; the
    /// run reports that failure instead.
    #[error("{0} stopped")]
    Stopped(String),
}

impl EngineError {
    /// Keeps the error that explains a failed run: the first one, unless
    /// it only says that a downstream thread had stopped.
    pub(crate) fn keep_first(slot: &mut Option<EngineError>, e: EngineError) {
        match slot {
            None => *slot = Some(e),
            Some(EngineError::Stopped(_)) if !matches!(e, EngineError::Stopped(_)) => {
                *slot = Some(e)
            }
            Some(_) => {}
        }
    }

    pub(crate) fn build(component: &str, message: impl std::fmt::Display) -> Self {
        EngineError::Build {
            component: component.to_string(),
            message: message.to_string(),
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        EngineError::Io {
            context: context.into(),
            source,
        }
    }
}
