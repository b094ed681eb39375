//! The untyped syntax tree produced by [`crate::parse`].
//!
//! It mirrors the source text closely (including the character offset of
//! every node) so that the type checker can report errors at the right place.
//! `Display` renders a fully parenthesised SQL form that parses back to the
//! same tree, which is handy in tests and in log messages.

use std::fmt;

/// A parsed expression.
///
/// Every variant carries `position`, the 0-based character offset of the
/// token that best identifies the node (the operator for binary operators,
/// the keyword for `CASE`/`CAST`/`IN`/..., the name for columns/functions).
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// A constant.
    Literal {
        /// The value.
        value: Literal,
        /// Offset of the literal.
        position: usize,
    },
    /// A reference to an input column (case-sensitive name).
    Column {
        /// Column name without quotes.
        name: String,
        /// Offset of the name.
        position: usize,
    },
    /// `-x`, `+x`, `NOT x`.
    Unary {
        /// The operator.
        op: UnaryOp,
        /// The operand.
        operand: Box<Expr>,
        /// Offset of the operator.
        position: usize,
    },
    /// `l op r` for arithmetic, comparison, logic and `||`.
    Binary {
        /// The operator.
        op: BinaryOp,
        /// Left operand.
        left: Box<Expr>,
        /// Right operand.
        right: Box<Expr>,
        /// Offset of the operator.
        position: usize,
    },
    /// `x IS [NOT] NULL`.
    IsNull {
        /// Tested value.
        operand: Box<Expr>,
        /// `IS NOT NULL`.
        negated: bool,
        /// Offset of `IS`.
        position: usize,
    },
    /// `x [NOT] IN (a, b, ...)`.
    InList {
        /// Tested value.
        operand: Box<Expr>,
        /// Candidates (at least one).
        list: Vec<Expr>,
        /// `NOT IN`.
        negated: bool,
        /// Offset of `IN` (or of `NOT` in `NOT IN`).
        position: usize,
    },
    /// `x [NOT] BETWEEN low AND high` (inclusive).
    Between {
        /// Tested value.
        operand: Box<Expr>,
        /// Lower bound.
        low: Box<Expr>,
        /// Upper bound.
        high: Box<Expr>,
        /// `NOT BETWEEN`.
        negated: bool,
        /// Offset of `BETWEEN` (or of `NOT`).
        position: usize,
    },
    /// `x [NOT] LIKE pattern` with `%` and `_` wildcards and `\` escapes.
    Like {
        /// Tested string.
        operand: Box<Expr>,
        /// Pattern string.
        pattern: Box<Expr>,
        /// `NOT LIKE`.
        negated: bool,
        /// Offset of `LIKE` (or of `NOT`).
        position: usize,
    },
    /// `CASE [operand] WHEN .. THEN .. [ELSE ..] END`.
    Case {
        /// Present for the simple form `CASE x WHEN v THEN r ...`.
        operand: Option<Box<Expr>>,
        /// `(when, then)` pairs, at least one.
        branches: Vec<(Expr, Expr)>,
        /// The `ELSE` value; NULL when absent.
        otherwise: Option<Box<Expr>>,
        /// Offset of `CASE`.
        position: usize,
    },
    /// `CAST(x AS type)`.
    Cast {
        /// Converted value.
        operand: Box<Expr>,
        /// Target type.
        target: CastType,
        /// Offset of `CAST`.
        position: usize,
    },
    /// `name(args...)`; the name is kept as written, lookup is
    /// case-insensitive.
    Function {
        /// Function name as written.
        name: String,
        /// Arguments.
        args: Vec<Expr>,
        /// Offset of the name.
        position: usize,
    },
}

/// A literal constant.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    /// `NULL`.
    Null,
    /// `TRUE` / `FALSE`.
    Bool(bool),
    /// An integer literal (BIGINT).
    Int(i64),
    /// A literal with a decimal point or exponent (DOUBLE).
    Float(f64),
    /// A quoted string (VARCHAR).
    Str(String),
}

/// Prefix operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnaryOp {
    /// Arithmetic negation `-`.
    Neg,
    /// Unary `+` (numeric identity).
    Plus,
    /// Logical `NOT`.
    Not,
}

/// Infix operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryOp {
    /// `OR`
    Or,
    /// `AND`
    And,
    /// `=`
    Eq,
    /// `<>` or `!=`
    NotEq,
    /// `<`
    Lt,
    /// `<=`
    LtEq,
    /// `>`
    Gt,
    /// `>=`
    GtEq,
    /// `||` string concatenation
    Concat,
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/`
    Div,
    /// `%`
    Mod,
}

impl BinaryOp {
    /// The operator as written in SQL.
    pub fn symbol(self) -> &'static str {
        match self {
            BinaryOp::Or => "OR",
            BinaryOp::And => "AND",
            BinaryOp::Eq => "=",
            BinaryOp::NotEq => "<>",
            BinaryOp::Lt => "<",
            BinaryOp::LtEq => "<=",
            BinaryOp::Gt => ">",
            BinaryOp::GtEq => ">=",
            BinaryOp::Concat => "||",
            BinaryOp::Add => "+",
            BinaryOp::Sub => "-",
            BinaryOp::Mul => "*",
            BinaryOp::Div => "/",
            BinaryOp::Mod => "%",
        }
    }
}

/// Target of `CAST(x AS type)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CastType {
    /// `BOOLEAN` / `BOOL`
    Boolean,
    /// `BIGINT` / `INT` / `INTEGER` / `SMALLINT` (all Int64)
    BigInt,
    /// `DOUBLE` / `DOUBLE PRECISION` / `FLOAT` / `REAL` (all Float64)
    Double,
    /// `VARCHAR` / `TEXT` / `STRING` (Utf8)
    Varchar,
}

impl CastType {
    /// Canonical SQL name.
    pub fn name(self) -> &'static str {
        match self {
            CastType::Boolean => "BOOLEAN",
            CastType::BigInt => "BIGINT",
            CastType::Double => "DOUBLE",
            CastType::Varchar => "VARCHAR",
        }
    }
}

impl Expr {
    /// 0-based character offset identifying this node in the source.
    pub fn position(&self) -> usize {
        match self {
            Expr::Literal { position, .. }
            | Expr::Column { position, .. }
            | Expr::Unary { position, .. }
            | Expr::Binary { position, .. }
            | Expr::IsNull { position, .. }
            | Expr::InList { position, .. }
            | Expr::Between { position, .. }
            | Expr::Like { position, .. }
            | Expr::Case { position, .. }
            | Expr::Cast { position, .. }
            | Expr::Function { position, .. } => *position,
        }
    }
}

/// Words that cannot be used as bare column names (quote them instead).
pub(crate) const RESERVED: &[&str] = &[
    "AND", "OR", "NOT", "IS", "NULL", "IN", "BETWEEN", "LIKE", "CASE", "WHEN", "THEN", "ELSE",
    "END", "CAST", "AS", "TRUE", "FALSE",
];

pub(crate) fn is_reserved(word: &str) -> bool {
    RESERVED.iter().any(|k| k.eq_ignore_ascii_case(word))
}

fn write_ident(f: &mut fmt::Formatter<'_>, name: &str) -> fmt::Result {
    let mut chars = name.chars();
    let plain = matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !is_reserved(name);
    if plain {
        f.write_str(name)
    } else {
        write!(f, "\"{}\"", name.replace('"', "\"\""))
    }
}

/// A number literal that prints without a leading minus sign.
fn is_unsigned_number(e: &Expr) -> bool {
    match e {
        Expr::Literal {
            value: Literal::Int(v),
            ..
        } => *v >= 0,
        Expr::Literal {
            value: Literal::Float(v),
            ..
        } => *v >= 0.0 || v.is_nan(),
        _ => false,
    }
}

fn write_list(f: &mut fmt::Formatter<'_>, items: &[Expr]) -> fmt::Result {
    for (i, e) in items.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write!(f, "{e}")?;
    }
    Ok(())
}

impl fmt::Display for Literal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Literal::Null => f.write_str("NULL"),
            Literal::Bool(true) => f.write_str("TRUE"),
            Literal::Bool(false) => f.write_str("FALSE"),
            Literal::Int(v) if *v < 0 => write!(f, "({v})"),
            Literal::Int(v) => write!(f, "{v}"),
            // `{:?}` always prints a decimal point or exponent, so the
            // literal re-parses as DOUBLE.
            Literal::Float(v) if *v < 0.0 => write!(f, "({v:?})"),
            Literal::Float(v) => write!(f, "{v:?}"),
            Literal::Str(s) => write!(f, "'{}'", s.replace('\'', "''")),
        }
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Literal { value, .. } => write!(f, "{value}"),
            Expr::Column { name, .. } => write_ident(f, name),
            // A sign directly before a number literal would be folded into
            // the literal when re-parsed, so keep such operands parenthesised.
            Expr::Unary {
                op: op @ (UnaryOp::Neg | UnaryOp::Plus),
                operand,
                ..
            } if is_unsigned_number(operand) => {
                let sign = if *op == UnaryOp::Neg { "-" } else { "+" };
                write!(f, "({sign} ({operand}))")
            }
            Expr::Unary { op, operand, .. } => match op {
                UnaryOp::Neg => write!(f, "(- {operand})"),
                UnaryOp::Plus => write!(f, "(+ {operand})"),
                UnaryOp::Not => write!(f, "(NOT {operand})"),
            },
            Expr::Binary {
                op, left, right, ..
            } => write!(f, "({left} {} {right})", op.symbol()),
            Expr::IsNull {
                operand, negated, ..
            } => {
                let not = if *negated { "NOT " } else { "" };
                write!(f, "({operand} IS {not}NULL)")
            }
            Expr::InList {
                operand,
                list,
                negated,
                ..
            } => {
                let not = if *negated { "NOT " } else { "" };
                write!(f, "({operand} {not}IN (")?;
                write_list(f, list)?;
                f.write_str("))")
            }
            Expr::Between {
                operand,
                low,
                high,
                negated,
                ..
            } => {
                let not = if *negated { "NOT " } else { "" };
                write!(f, "({operand} {not}BETWEEN {low} AND {high})")
            }
            Expr::Like {
                operand,
                pattern,
                negated,
                ..
            } => {
                let not = if *negated { "NOT " } else { "" };
                write!(f, "({operand} {not}LIKE {pattern})")
            }
            Expr::Case {
                operand,
                branches,
                otherwise,
                ..
            } => {
                f.write_str("CASE")?;
                if let Some(op) = operand {
                    write!(f, " {op}")?;
                }
                for (w, t) in branches {
                    write!(f, " WHEN {w} THEN {t}")?;
                }
                if let Some(e) = otherwise {
                    write!(f, " ELSE {e}")?;
                }
                f.write_str(" END")
            }
            Expr::Cast {
                operand, target, ..
            } => write!(f, "CAST({operand} AS {})", target.name()),
            Expr::Function { name, args, .. } => {
                write!(f, "{}(", name.to_ascii_lowercase())?;
                write_list(f, args)?;
                f.write_str(")")
            }
        }
    }
}
