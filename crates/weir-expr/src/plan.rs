//! The typed, resolved form of an expression that the evaluator executes.
//!
//! Produced by [`crate::check`] from the syntax tree: column names are
//! resolved to indices, implicit conversions are explicit [`Plan::Cast`]
//! nodes, every operator knows its operand kind, and literal-only subtrees
//! are folded to constants. The evaluator can therefore dispatch on the
//! kind once per batch instead of once per row.

use crate::like::LikePattern;
use crate::types::Ty;
use std::sync::Arc;

/// A single constant value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Scalar {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Arc<str>),
}

/// Arithmetic operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ArithOp {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
}

/// Comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CmpOp {
    Eq,
    NotEq,
    Lt,
    LtEq,
    Gt,
    GtEq,
}

/// Built-in functions (after alias resolution).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Func {
    Abs,
    Sign,
    Sqrt,
    Cbrt,
    Exp,
    Ln,
    Log10,
    Log2,
    /// `log(base, x)`
    LogBase,
    Power,
    Floor,
    Ceil,
    Round,
    Trunc,
    Sigmoid,
    Least,
    Greatest,
    Coalesce,
    Lower,
    Upper,
    Length,
    Trim,
    Ltrim,
    Rtrim,
    Substr,
    Concat,
    Replace,
    StartsWith,
    EndsWith,
    Strpos,
}

/// Set of constant values for `x IN (c1, c2, ...)`.
#[derive(Debug, Clone)]
pub(crate) enum ConstSet {
    /// Sorted, deduplicated.
    Int(Vec<i64>),
    Float(Vec<f64>),
    /// Sorted, deduplicated.
    Str(Vec<Box<str>>),
    Bool(Vec<bool>),
}

/// `LIKE` pattern: compiled once when constant.
#[derive(Debug, Clone)]
pub(crate) enum PatternPlan {
    Const(LikePattern),
    Dynamic(Box<Plan>),
}

/// A typed expression node.
#[derive(Debug, Clone)]
pub(crate) enum Plan {
    Const {
        value: Scalar,
        ty: Ty,
    },
    /// Input column, read (and widened) as `ty`.
    Column {
        index: usize,
        ty: Ty,
    },
    /// Arithmetic negation, `ty` is Int or Float.
    Neg(Box<Plan>, Ty),
    Not(Box<Plan>),
    /// Both operands have kind `ty` (Int or Float), and so does the result.
    Arith {
        op: ArithOp,
        ty: Ty,
        left: Box<Plan>,
        right: Box<Plan>,
    },
    /// Both operands have the same kind; result is Bool.
    Cmp {
        op: CmpOp,
        left: Box<Plan>,
        right: Box<Plan>,
    },
    And(Box<Plan>, Box<Plan>),
    Or(Box<Plan>, Box<Plan>),
    IsNull {
        input: Box<Plan>,
        negated: bool,
    },
    /// `x IN (constants)`; `has_null` if the list contained NULL.
    InSet {
        input: Box<Plan>,
        set: ConstSet,
        has_null: bool,
        negated: bool,
    },
    /// `x IN (non-constant list)`: OR of equalities.
    InList {
        input: Box<Plan>,
        list: Vec<Plan>,
        negated: bool,
    },
    Between {
        input: Box<Plan>,
        low: Box<Plan>,
        high: Box<Plan>,
        negated: bool,
    },
    Like {
        input: Box<Plan>,
        pattern: PatternPlan,
        negated: bool,
    },
    Concat(Box<Plan>, Box<Plan>),
    /// Searched CASE; `otherwise` is a typed NULL constant when absent.
    Case {
        branches: Vec<(Plan, Plan)>,
        otherwise: Box<Plan>,
        ty: Ty,
    },
    Cast {
        input: Box<Plan>,
        to: Ty,
    },
    Call {
        func: Func,
        args: Vec<Plan>,
        ty: Ty,
    },
}

impl Plan {
    /// Result kind of the node.
    pub(crate) fn ty(&self) -> Ty {
        match self {
            Plan::Const { ty, .. }
            | Plan::Column { ty, .. }
            | Plan::Neg(_, ty)
            | Plan::Arith { ty, .. }
            | Plan::Case { ty, .. }
            | Plan::Call { ty, .. } => *ty,
            Plan::Cast { to, .. } => *to,
            Plan::Concat(..) => Ty::Str,
            Plan::Not(_)
            | Plan::Cmp { .. }
            | Plan::And(..)
            | Plan::Or(..)
            | Plan::IsNull { .. }
            | Plan::InSet { .. }
            | Plan::InList { .. }
            | Plan::Between { .. }
            | Plan::Like { .. } => Ty::Bool,
        }
    }

    /// Whether the node is a constant.
    pub(crate) fn is_const(&self) -> bool {
        matches!(self, Plan::Const { .. })
    }

    /// Whether every direct child is a constant (so the node can be folded).
    /// Leaves return `false`: there is nothing to fold.
    pub(crate) fn children_const(&self) -> bool {
        let c = |p: &Plan| p.is_const();
        match self {
            Plan::Const { .. } | Plan::Column { .. } => false,
            Plan::Neg(a, _) | Plan::Not(a) | Plan::IsNull { input: a, .. } => c(a),
            Plan::Cast { input, .. } | Plan::InSet { input, .. } => c(input),
            Plan::Arith { left, right, .. } | Plan::Cmp { left, right, .. } => c(left) && c(right),
            Plan::And(a, b) | Plan::Or(a, b) | Plan::Concat(a, b) => c(a) && c(b),
            Plan::InList { input, list, .. } => c(input) && list.iter().all(c),
            Plan::Between {
                input, low, high, ..
            } => c(input) && c(low) && c(high),
            Plan::Like { input, pattern, .. } => {
                c(input)
                    && match pattern {
                        PatternPlan::Const(_) => true,
                        PatternPlan::Dynamic(p) => c(p),
                    }
            }
            Plan::Case {
                branches,
                otherwise,
                ..
            } => c(otherwise) && branches.iter().all(|(w, t)| c(w) && c(t)),
            Plan::Call { args, .. } => args.iter().all(c),
        }
    }

    /// Typed NULL constant.
    pub(crate) fn null(ty: Ty) -> Plan {
        Plan::Const {
            value: Scalar::Null,
            ty,
        }
    }
}
