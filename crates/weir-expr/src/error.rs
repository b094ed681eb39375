//! The single error type of the crate.
//!
//! Every failure a caller can see — a syntax error, an unknown column or
//! function, a type mismatch, or a batch that does not match the schema the
//! expression was compiled for — is an [`ExprError`]. Errors that come from
//! the source text carry the 0-based *character* offset of the offending
//! token so that callers (config validation, CLI) can point at it.

use thiserror::Error;

/// An error from parsing, type checking or evaluating an expression.
///
/// The `Display` text is a complete, human readable message. Syntax errors
/// include `at position N` in the message; all variants that stem from the
/// source text also expose the offset through [`ExprError::position`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ExprError {
    /// The text could not be tokenised or parsed.
    #[error("{message}")]
    Syntax {
        /// Full message, e.g. `unexpected token ")" at position 14`.
        message: String,
        /// 0-based character offset of the offending token.
        position: Option<usize>,
    },
    /// A column name that is not part of the schema.
    #[error("unknown column \"{name}\" (available: {available}){hint}")]
    UnknownColumn {
        /// The name as written in the expression.
        name: String,
        /// Comma separated list of the schema's column names.
        available: String,
        /// Either empty or a `; did you mean "..."?` suggestion.
        hint: String,
        /// 0-based character offset of the column reference.
        position: Option<usize>,
    },
    /// A function name that is not supported.
    #[error("unknown function \"{name}\"")]
    UnknownFunction {
        /// The name as written in the expression.
        name: String,
        /// 0-based character offset of the function name.
        position: Option<usize>,
    },
    /// The expression is well formed but does not type check (operand types,
    /// argument counts, non-boolean predicate, unsupported column type, ...).
    #[error("{message}")]
    Type {
        /// Full message, e.g. `cannot compare VARCHAR with BIGINT`.
        message: String,
        /// 0-based character offset of the operator / call / node at fault.
        position: Option<usize>,
    },
    /// Evaluation failed because the batch does not match the schema the
    /// expression was compiled against (or a result would exceed Arrow's
    /// limits). Bad *data* never produces this: it yields NULLs instead.
    #[error("{message}")]
    Evaluation {
        /// Full message.
        message: String,
    },
}

impl ExprError {
    /// 0-based character offset into the source text, when the error stems
    /// from a specific place in it.
    pub fn position(&self) -> Option<usize> {
        match self {
            ExprError::Syntax { position, .. }
            | ExprError::UnknownColumn { position, .. }
            | ExprError::UnknownFunction { position, .. }
            | ExprError::Type { position, .. } => *position,
            ExprError::Evaluation { .. } => None,
        }
    }

    pub(crate) fn syntax(message: impl Into<String>, position: usize) -> Self {
        ExprError::Syntax {
            message: message.into(),
            position: Some(position),
        }
    }

    pub(crate) fn type_error(message: impl Into<String>, position: usize) -> Self {
        ExprError::Type {
            message: message.into(),
            position: Some(position),
        }
    }

    pub(crate) fn eval(message: impl Into<String>) -> Self {
        ExprError::Evaluation {
            message: message.into(),
        }
    }

    /// An internal inconsistency between the type checker and the evaluator.
    /// Returned instead of panicking; seeing one is a bug in this crate.
    pub(crate) fn internal(what: &str) -> Self {
        ExprError::Evaluation {
            message: format!("internal error in weir-expr: {what}"),
        }
    }
}
