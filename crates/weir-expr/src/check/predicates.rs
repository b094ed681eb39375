//! `BETWEEN`, `LIKE` and `IN`: checking operand kinds and choosing the
//! evaluation strategy (compiled constant patterns, constant sets).

use super::{coerce, err, fold, Checker};
use crate::ast::Expr;
use crate::error::ExprError;
use crate::like::LikePattern;
use crate::plan::{ConstSet, PatternPlan, Plan, Scalar};
use crate::types::{unify, Ty};

impl Checker<'_> {
    pub(super) fn between(
        &mut self,
        operand: &Expr,
        low: &Expr,
        high: &Expr,
        negated: bool,
        position: usize,
    ) -> Result<Plan, ExprError> {
        let (x, lo, hi) = (self.check(operand)?, self.check(low)?, self.check(high)?);
        let ty = unify(x.ty(), lo.ty())
            .and_then(|t| unify(t, hi.ty()))
            .ok_or_else(|| {
                err(
                    format!(
                        "cannot compare {} with {} and {} in BETWEEN",
                        x.ty().name(),
                        lo.ty().name(),
                        hi.ty().name()
                    ),
                    position,
                )
            })?;
        Ok(fold(Plan::Between {
            input: Box::new(coerce(x, ty)),
            low: Box::new(coerce(lo, ty)),
            high: Box::new(coerce(hi, ty)),
            negated,
        }))
    }

    pub(super) fn like(
        &mut self,
        operand: &Expr,
        pattern: &Expr,
        negated: bool,
        position: usize,
    ) -> Result<Plan, ExprError> {
        let x = self.check(operand)?;
        let p = self.check(pattern)?;
        for t in [x.ty(), p.ty()] {
            if !matches!(t, Ty::Str | Ty::Null) {
                return Err(err(
                    format!("LIKE expects VARCHAR operands, found {}", t.name()),
                    position,
                ));
            }
        }
        let x = coerce(x, Ty::Str);
        let pattern = match p {
            Plan::Const {
                value: Scalar::Str(s),
                ..
            } => PatternPlan::Const(LikePattern::new(&s)),
            Plan::Const { .. } => return Ok(Plan::null(Ty::Bool)),
            other => PatternPlan::Dynamic(Box::new(other)),
        };
        Ok(fold(Plan::Like {
            input: Box::new(x),
            pattern,
            negated,
        }))
    }

    pub(super) fn in_list(
        &mut self,
        operand: &Expr,
        list: &[Expr],
        negated: bool,
    ) -> Result<Plan, ExprError> {
        let x = self.check(operand)?;
        let mut ty = x.ty();
        let mut items = Vec::with_capacity(list.len());
        for item in list {
            let p = self.check(item)?;
            ty = unify(ty, p.ty()).ok_or_else(|| {
                err(
                    format!(
                        "IN list item of type {} is not comparable with {}",
                        p.ty().name(),
                        ty.name()
                    ),
                    item.position(),
                )
            })?;
            items.push(p);
        }
        if ty == Ty::Null {
            return Ok(Plan::null(Ty::Bool));
        }
        let x = Box::new(coerce(x, ty));
        let items: Vec<Plan> = items.into_iter().map(|p| coerce(p, ty)).collect();
        if let Some((set, has_null)) = const_set(ty, &items) {
            return Ok(fold(Plan::InSet {
                input: x,
                set,
                has_null,
                negated,
            }));
        }
        Ok(fold(Plan::InList {
            input: x,
            list: items,
            negated,
        }))
    }
}

/// The constant set of an IN list whose items are all constants.
fn const_set(ty: Ty, items: &[Plan]) -> Option<(ConstSet, bool)> {
    let mut has_null = false;
    let mut scalars = Vec::with_capacity(items.len());
    for p in items {
        match p {
            Plan::Const {
                value: Scalar::Null,
                ..
            } => has_null = true,
            Plan::Const { value, .. } => scalars.push(value),
            _ => return None,
        }
    }
    let set = match ty {
        Ty::Int => {
            let mut v: Vec<i64> = scalars
                .iter()
                .filter_map(|s| match s {
                    Scalar::Int(i) => Some(*i),
                    _ => None,
                })
                .collect();
            v.sort_unstable();
            v.dedup();
            ConstSet::Int(v)
        }
        Ty::Float => ConstSet::Float(
            scalars
                .iter()
                .filter_map(|s| match s {
                    Scalar::Float(f) => Some(*f),
                    _ => None,
                })
                .collect(),
        ),
        Ty::Str => {
            let mut v: Vec<Box<str>> = scalars
                .iter()
                .filter_map(|s| match s {
                    Scalar::Str(t) => Some(Box::from(&**t)),
                    _ => None,
                })
                .collect();
            v.sort_unstable();
            v.dedup();
            ConstSet::Str(v)
        }
        Ty::Bool => ConstSet::Bool(
            scalars
                .iter()
                .filter_map(|s| match s {
                    Scalar::Bool(b) => Some(*b),
                    _ => None,
                })
                .collect(),
        ),
        Ty::Null => return None,
    };
    Some((set, has_null))
}
