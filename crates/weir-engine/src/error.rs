//! Engine errors: what failed, in which component, with the error of the
//! layer below kept as the source, and a class that says who must act.
//!
//! The class is what callers decide on: the CLI picks its exit code and
//! the first words of its message from it, and retry logic retries only
//! [`ErrorClass::External`] errors.

use weir_connect::ConnectError;

/// Who must act on an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The pipeline or what it points at is wrong (a component that cannot
    /// be built, a missing file, a topic that does not exist, a checkpoint
    /// that does not fit the pipeline): retrying fails the same way until
    /// someone changes the configuration.
    Config,
    /// The outside world failed (a broker or database down, a full disk, an
    /// I/O error): retrying later may succeed.
    External,
    /// A bug in weir: an invariant broke or a thread panicked.
    Internal,
}

impl ErrorClass {
    /// A short name for messages and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Config => "configuration",
            ErrorClass::External => "external",
            ErrorClass::Internal => "internal",
        }
    }
}

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
    /// Reading or writing a local file failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, with the path.
        context: String,
        /// The operating system's words.
        source: std::io::Error,
    },
    /// A connector (a broker or database client) failed.
    #[error("{component}: {source}")]
    Connector {
        /// `source NAME` or `sink NAME`.
        component: String,
        /// The connector's error.
        source: ConnectError,
    },
    /// The embedded durable log failed.
    #[error("{context}: {source}")]
    Log {
        /// What was being done, naming the component and stream.
        context: String,
        /// The log's error.
        source: weir_log::LogError,
    },
    /// The checkpoint store failed, or refused to restore.
    #[error(transparent)]
    Store(#[from] weir_checkpoint::CheckpointError),
    /// A checkpoint does not fit the pipeline or a part of it cannot be
    /// read.
    #[error("checkpoint {checkpoint}: {problem}")]
    Restore {
        /// The checkpoint's id.
        checkpoint: u64,
        /// What does not fit, naming the component.
        problem: String,
    },
    /// Output the engine staged for a transaction is not what a checkpoint
    /// says it staged.
    #[error("sink {sink}: {problem}")]
    Staged {
        /// The sink.
        sink: String,
        /// What differs, with the file.
        problem: String,
    },
    /// A newer owner of the task (a higher epoch) has opened the sink's
    /// file: this run must not cut it back or append to it.
    #[error(
        "sink {sink}: {path} is owned by a newer owner of the task (epoch {owner}); \
         this writer (epoch {epoch}) is fenced out and changed nothing"
    )]
    SinkFenced {
        /// The sink.
        sink: String,
        /// The sink's file.
        path: String,
        /// This run's owner epoch.
        epoch: u64,
        /// The epoch that owns the file now.
        owner: u64,
    },
    /// An expression failed on a batch it was compiled for: a bug (bad
    /// data yields NULLs, never this).
    #[error("step {step}: {source}")]
    Expression {
        /// The step evaluating it.
        step: String,
        /// The expression's error.
        source: weir_expr::ExprError,
    },
    /// An Arrow kernel refused a batch the engine built: a bug.
    #[error("step {step}: {source}")]
    Compute {
        /// The step running it.
        step: String,
        /// Arrow's error.
        source: arrow_schema::ArrowError,
    },
    /// An invariant of the engine does not hold: a bug.
    #[error("{component}: {problem}")]
    Invariant {
        /// The component where it was found.
        component: String,
        /// What should have held.
        problem: &'static str,
    },
    /// A thread panicked.
    #[error("{thread} thread panicked")]
    Panicked {
        /// Which kind of thread.
        thread: &'static str,
    },
    /// A thread stopped because the one it feeds had already failed; the
    /// run reports that failure instead.
    #[error("{component} stopped")]
    Stopped {
        /// The component that stopped first.
        component: String,
    },
}

impl EngineError {
    /// Who must act on this error.
    pub fn class(&self) -> ErrorClass {
        match self {
            EngineError::Build { .. } | EngineError::Restore { .. } => ErrorClass::Config,
            EngineError::Io { source, .. } => io_class(source),
            EngineError::Connector { source, .. } => match source {
                ConnectError::Config(_) | ConnectError::Checkpoint(_) => ErrorClass::Config,
                ConnectError::Connect { .. } | ConnectError::Broker { .. } => ErrorClass::External,
                ConnectError::Io { source, .. } => io_class(source),
            },
            EngineError::Log { source, .. } => log_class(source),
            EngineError::Store(e) => match e {
                weir_checkpoint::CheckpointError::Io { source, .. } => io_class(source),
                weir_checkpoint::CheckpointError::Incompatible { .. }
                | weir_checkpoint::CheckpointError::Location { .. } => ErrorClass::Config,
                // Another owner took the store over: this run is stale and
                // stops; the store itself is intact.
                weir_checkpoint::CheckpointError::Fenced { .. } => ErrorClass::External,
                _ => ErrorClass::External,
            },
            EngineError::Staged { .. } | EngineError::SinkFenced { .. } => ErrorClass::External,
            EngineError::Compute { .. }
            | EngineError::Expression { .. }
            | EngineError::Invariant { .. }
            | EngineError::Panicked { .. }
            | EngineError::Stopped { .. } => ErrorClass::Internal,
        }
    }

    /// Keeps the error that explains a failed run: the first one, unless
    /// it only says that a downstream thread had stopped.
    pub(crate) fn keep_first(slot: &mut Option<EngineError>, e: EngineError) {
        match slot {
            None => *slot = Some(e),
            Some(EngineError::Stopped { .. }) if !matches!(e, EngineError::Stopped { .. }) => {
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

    /// Whether a newer owner claimed the run's checkpoint store or a
    /// sink's file: the run no longer owns its task (nothing it wrote after the claim counts).
    pub fn is_fenced(&self) -> bool {
        matches!(
            self,
            EngineError::Store(weir_checkpoint::CheckpointError::Fenced { .. })
                | EngineError::SinkFenced { .. }
        )
    }

    pub(crate) fn source(name: &str, source: ConnectError) -> Self {
        EngineError::Connector {
            component: format!("source {name}"),
            source,
        }
    }

    pub(crate) fn sink(name: &str, source: ConnectError) -> Self {
        EngineError::Connector {
            component: format!("sink {name}"),
            source,
        }
    }

    pub(crate) fn log(context: impl Into<String>, source: weir_log::LogError) -> Self {
        EngineError::Log {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn compute(step: &str, source: arrow_schema::ArrowError) -> Self {
        EngineError::Compute {
            step: step.to_string(),
            source,
        }
    }

    pub(crate) fn invariant(component: impl Into<String>, problem: &'static str) -> Self {
        EngineError::Invariant {
            component: component.into(),
            problem,
        }
    }

    pub(crate) fn stopped(component: impl Into<String>) -> Self {
        EngineError::Stopped {
            component: component.into(),
        }
    }
}

/// A missing file or a refused permission is the configuration's to fix;
/// anything else (a full disk, a failing device) may pass.
fn io_class(e: &std::io::Error) -> ErrorClass {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::NotFound
        | K::PermissionDenied
        | K::InvalidInput
        | K::NotADirectory
        | K::IsADirectory
        | K::ReadOnlyFilesystem
        | K::AlreadyExists => ErrorClass::Config,
        _ => ErrorClass::External,
    }
}

fn log_class(e: &weir_log::LogError) -> ErrorClass {
    use weir_log::LogError as L;
    match e {
        L::Io { source, .. } => io_class(source),
        L::InvalidConfig { .. } | L::InvalidConsumer { .. } => ErrorClass::Config,
        _ => ErrorClass::External,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io(kind: std::io::ErrorKind) -> EngineError {
        EngineError::io("sink out: cannot write out.jsonl", kind.into())
    }

    #[test]
    fn classes_say_who_must_act() {
        use std::io::ErrorKind as K;
        assert_eq!(
            EngineError::build("features", "bad").class(),
            ErrorClass::Config
        );
        assert_eq!(io(K::NotFound).class(), ErrorClass::Config);
        assert_eq!(io(K::PermissionDenied).class(), ErrorClass::Config);
        assert_eq!(io(K::StorageFull).class(), ErrorClass::External);
        assert_eq!(
            EngineError::source(
                "orders",
                ConnectError::Connect {
                    address: "127.0.0.1:1".into(),
                    message: "refused".into()
                }
            )
            .class(),
            ErrorClass::External
        );
        assert_eq!(
            EngineError::sink("alerts", ConnectError::Config("no such table".into())).class(),
            ErrorClass::Config
        );
        assert_eq!(
            EngineError::Panicked { thread: "shard" }.class(),
            ErrorClass::Internal
        );
        // A stale owner of a checkpoint store stops; a supervisor may
        // start it again later (it is refused while another owns it).
        let fenced = EngineError::Store(weir_checkpoint::CheckpointError::Fenced {
            store: "s3://state/task-0".into(),
            epoch: 0,
            what: "its manifest was changed by another writer".into(),
        });
        assert_eq!(fenced.class(), ErrorClass::External);
        assert_eq!(
            EngineError::Store(weir_checkpoint::CheckpointError::Location {
                location: "ftp://host/cp".into(),
                reason: "unsupported scheme".into(),
            })
            .class(),
            ErrorClass::Config
        );
    }

    #[test]
    fn the_source_error_is_kept() {
        use std::error::Error as _;
        let e = EngineError::sink(
            "alerts",
            ConnectError::Broker {
                address: "nats://127.0.0.1:4222".into(),
                message: "publish refused".into(),
            },
        );
        assert_eq!(
            e.to_string(),
            "sink alerts: nats://127.0.0.1:4222: publish refused"
        );
        let source = e.source().expect("a source error");
        assert!(source.downcast_ref::<ConnectError>().is_some());
    }

    #[test]
    fn a_stopped_thread_does_not_hide_the_cause() {
        let mut slot = None;
        EngineError::keep_first(&mut slot, EngineError::stopped("sink alerts"));
        EngineError::keep_first(&mut slot, io(std::io::ErrorKind::StorageFull));
        EngineError::keep_first(&mut slot, EngineError::Panicked { thread: "shard" });
        assert!(matches!(slot, Some(EngineError::Io { .. })));
    }
}
