//! Type checking: turns the syntax tree into a typed [`Plan`].
//!
//! This is where names meet the schema. Columns are resolved to indices
//! (unknown names get a message listing what is available), every operator
//! is checked for operand kinds with a message pointing at the operator,
//! implicit BIGINT → DOUBLE (and NULL → anything) conversions are inserted,
//! and subtrees made only of constants are evaluated once, here, so that
//! `x > 10 * 1000` costs the same as `x > 10000` per batch.

mod columns;
mod functions;
mod predicates;

use crate::ast::{BinaryOp, CastType, Expr, Literal, UnaryOp};
use crate::error::ExprError;
use crate::eval::{eval_const, Value};
use crate::plan::{ArithOp, CmpOp, Plan, Scalar};
use crate::types::{numeric_common, unify, Ty};
use arrow_schema::Schema;
use std::sync::Arc;

/// Result of checking an expression against a schema.
pub(crate) struct Checked {
    pub(crate) plan: Plan,
    /// Referenced column names, in order of first use.
    pub(crate) columns: Vec<String>,
    /// Indices of those columns in the schema.
    pub(crate) indices: Vec<usize>,
}

/// Type checks `expr` against `schema`.
pub(crate) fn check(expr: &Expr, schema: &Schema) -> Result<Checked, ExprError> {
    let mut c = Checker {
        schema,
        columns: Vec::new(),
        indices: Vec::new(),
    };
    let plan = c.check(expr)?;
    Ok(Checked {
        plan,
        columns: c.columns,
        indices: c.indices,
    })
}

pub(crate) struct Checker<'a> {
    schema: &'a Schema,
    columns: Vec<String>,
    indices: Vec<usize>,
}

/// Replaces a node whose children are all constants by its value.
pub(crate) fn fold(plan: Plan) -> Plan {
    if plan.children_const() {
        if let Ok(Value::Scalar(value)) = eval_const(&plan) {
            return Plan::Const {
                value,
                ty: plan.ty(),
            };
        }
    }
    plan
}

/// Converts `plan` to kind `to` (no-op if it already is, or if `to` is
/// still the untyped NULL).
pub(crate) fn coerce(plan: Plan, to: Ty) -> Plan {
    if plan.ty() == to || to == Ty::Null {
        return plan;
    }
    match plan {
        Plan::Const {
            value: Scalar::Null,
            ..
        } => Plan::null(to),
        p => fold(Plan::Cast {
            input: Box::new(p),
            to,
        }),
    }
}

pub(crate) fn err(message: String, position: usize) -> ExprError {
    ExprError::type_error(message, position)
}

fn cmp_op(op: BinaryOp) -> Option<CmpOp> {
    Some(match op {
        BinaryOp::Eq => CmpOp::Eq,
        BinaryOp::NotEq => CmpOp::NotEq,
        BinaryOp::Lt => CmpOp::Lt,
        BinaryOp::LtEq => CmpOp::LtEq,
        BinaryOp::Gt => CmpOp::Gt,
        BinaryOp::GtEq => CmpOp::GtEq,
        _ => return None,
    })
}

fn arith_op(op: BinaryOp) -> Option<ArithOp> {
    Some(match op {
        BinaryOp::Add => ArithOp::Add,
        BinaryOp::Sub => ArithOp::Sub,
        BinaryOp::Mul => ArithOp::Mul,
        BinaryOp::Div => ArithOp::Div,
        BinaryOp::Mod => ArithOp::Mod,
        _ => return None,
    })
}

/// Builds a comparison `l op r`, unifying operand kinds.
pub(crate) fn comparison(op: CmpOp, l: Plan, r: Plan, position: usize) -> Result<Plan, ExprError> {
    let (lt, rt) = (l.ty(), r.ty());
    let ty = unify(lt, rt).ok_or_else(|| {
        err(
            format!("cannot compare {} with {}", lt.name(), rt.name()),
            position,
        )
    })?;
    Ok(fold(Plan::Cmp {
        op,
        left: Box::new(coerce(l, ty)),
        right: Box::new(coerce(r, ty)),
    }))
}

impl Checker<'_> {
    pub(crate) fn check(&mut self, e: &Expr) -> Result<Plan, ExprError> {
        match e {
            Expr::Literal { value, .. } => Ok(literal(value)),
            Expr::Column { name, position } => self.column(name, *position),
            Expr::Unary {
                op,
                operand,
                position,
            } => {
                let p = self.check(operand)?;
                self.unary(*op, p, *position)
            }
            Expr::Binary {
                op,
                left,
                right,
                position,
            } => {
                let l = self.check(left)?;
                let r = self.check(right)?;
                self.binary(*op, l, r, left.position(), right.position(), *position)
            }
            Expr::IsNull {
                operand, negated, ..
            } => {
                let p = self.check(operand)?;
                Ok(fold(Plan::IsNull {
                    input: Box::new(p),
                    negated: *negated,
                }))
            }
            Expr::InList {
                operand,
                list,
                negated,
                ..
            } => self.in_list(operand, list, *negated),
            Expr::Between {
                operand,
                low,
                high,
                negated,
                position,
            } => self.between(operand, low, high, *negated, *position),
            Expr::Like {
                operand,
                pattern,
                negated,
                position,
            } => self.like(operand, pattern, *negated, *position),
            Expr::Case {
                operand,
                branches,
                otherwise,
                ..
            } => self.case(operand.as_deref(), branches, otherwise.as_deref()),
            Expr::Cast {
                operand, target, ..
            } => self.cast(operand, *target),
            Expr::Function {
                name,
                args,
                position,
            } => self.function(name, args, *position),
        }
    }

    fn cast(&mut self, operand: &Expr, target: CastType) -> Result<Plan, ExprError> {
        let p = self.check(operand)?;
        let to = match target {
            CastType::Boolean => Ty::Bool,
            CastType::BigInt => Ty::Int,
            CastType::Double => Ty::Float,
            CastType::Varchar => Ty::Str,
        };
        Ok(coerce(p, to))
    }

    fn unary(&mut self, op: UnaryOp, p: Plan, position: usize) -> Result<Plan, ExprError> {
        let ty = p.ty();
        match op {
            UnaryOp::Not => {
                if !matches!(ty, Ty::Bool | Ty::Null) {
                    return Err(err(
                        format!("argument of NOT must be BOOLEAN, found {}", ty.name()),
                        position,
                    ));
                }
                Ok(fold(Plan::Not(Box::new(coerce(p, Ty::Bool)))))
            }
            UnaryOp::Neg | UnaryOp::Plus => {
                let sym = if op == UnaryOp::Neg { "-" } else { "+" };
                let nty = numeric_common(ty, Ty::Null).ok_or_else(|| {
                    err(
                        format!("cannot apply unary {sym} to {}", ty.name()),
                        position,
                    )
                })?;
                let p = coerce(p, nty);
                if op == UnaryOp::Plus {
                    return Ok(p);
                }
                Ok(fold(Plan::Neg(Box::new(p), nty)))
            }
        }
    }

    fn binary(
        &mut self,
        op: BinaryOp,
        l: Plan,
        r: Plan,
        lpos: usize,
        rpos: usize,
        position: usize,
    ) -> Result<Plan, ExprError> {
        let (lt, rt) = (l.ty(), r.ty());
        if let Some(cmp) = cmp_op(op) {
            return comparison(cmp, l, r, position);
        }
        if let Some(aop) = arith_op(op) {
            let ty = numeric_common(lt, rt).ok_or_else(|| {
                err(
                    format!(
                        "cannot apply operator {} to {} and {}",
                        op.symbol(),
                        lt.name(),
                        rt.name()
                    ),
                    position,
                )
            })?;
            return Ok(arith(aop, ty, l, r));
        }
        match op {
            BinaryOp::And | BinaryOp::Or => {
                for (t, pos) in [(lt, lpos), (rt, rpos)] {
                    if !matches!(t, Ty::Bool | Ty::Null) {
                        return Err(err(
                            format!(
                                "argument of {} must be BOOLEAN, found {}",
                                op.symbol(),
                                t.name()
                            ),
                            pos,
                        ));
                    }
                }
                let (l, r) = (Box::new(coerce(l, Ty::Bool)), Box::new(coerce(r, Ty::Bool)));
                Ok(fold(if op == BinaryOp::And {
                    Plan::And(l, r)
                } else {
                    Plan::Or(l, r)
                }))
            }
            BinaryOp::Concat => {
                if !matches!(lt, Ty::Str | Ty::Null) && !matches!(rt, Ty::Str | Ty::Null) {
                    return Err(err(
                        format!(
                            "operator || expects VARCHAR operands, found {} and {}",
                            lt.name(),
                            rt.name()
                        ),
                        position,
                    ));
                }
                Ok(fold(Plan::Concat(
                    Box::new(coerce(l, Ty::Str)),
                    Box::new(coerce(r, Ty::Str)),
                )))
            }
            _ => Err(ExprError::internal("unhandled binary operator")),
        }
    }

    fn case(
        &mut self,
        operand: Option<&Expr>,
        branches: &[(Expr, Expr)],
        otherwise: Option<&Expr>,
    ) -> Result<Plan, ExprError> {
        let subject = operand.map(|o| self.check(o)).transpose()?;
        let mut conds = Vec::with_capacity(branches.len());
        let mut values = Vec::with_capacity(branches.len());
        let mut ty = Ty::Null;
        for (when, then) in branches {
            let w = self.check(when)?;
            let cond = match &subject {
                Some(s) => comparison(CmpOp::Eq, s.clone(), w, when.position())?,
                None => {
                    if !matches!(w.ty(), Ty::Bool | Ty::Null) {
                        return Err(err(
                            format!(
                                "CASE WHEN condition must be BOOLEAN, found {}",
                                w.ty().name()
                            ),
                            when.position(),
                        ));
                    }
                    coerce(w, Ty::Bool)
                }
            };
            let v = self.check(then)?;
            ty = self.unify_branch(ty, v.ty(), then.position())?;
            conds.push(cond);
            values.push(v);
        }
        let e = match otherwise {
            Some(o) => {
                let v = self.check(o)?;
                ty = self.unify_branch(ty, v.ty(), o.position())?;
                v
            }
            None => Plan::null(Ty::Null),
        };
        let branches: Vec<(Plan, Plan)> = conds
            .into_iter()
            .zip(values)
            .map(|(c, v)| (c, coerce(v, ty)))
            .collect();
        Ok(fold(Plan::Case {
            branches,
            otherwise: Box::new(coerce(e, ty)),
            ty,
        }))
    }

    fn unify_branch(&self, acc: Ty, t: Ty, position: usize) -> Result<Ty, ExprError> {
        unify(acc, t).ok_or_else(|| {
            err(
                format!(
                    "CASE branches have incompatible types {} and {}",
                    acc.name(),
                    t.name()
                ),
                position,
            )
        })
    }
}

fn literal(value: &Literal) -> Plan {
    let (value, ty) = match value {
        Literal::Null => (Scalar::Null, Ty::Null),
        Literal::Bool(b) => (Scalar::Bool(*b), Ty::Bool),
        Literal::Int(v) => (Scalar::Int(*v), Ty::Int),
        Literal::Float(v) => (Scalar::Float(*v), Ty::Float),
        Literal::Str(s) => (Scalar::Str(Arc::from(s.as_str())), Ty::Str),
    };
    Plan::Const { value, ty }
}

pub(crate) fn arith(op: ArithOp, ty: Ty, l: Plan, r: Plan) -> Plan {
    fold(Plan::Arith {
        op,
        ty,
        left: Box::new(coerce(l, ty)),
        right: Box::new(coerce(r, ty)),
    })
}
