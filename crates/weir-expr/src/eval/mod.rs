//! Vectorised evaluation of a [`Plan`] over a batch.
//!
//! Each node is evaluated once per batch into a [`Value`] (a whole column
//! or a scalar). When all inputs of a node are scalars the node is computed
//! on one row and returned as a scalar, which is also how the type checker
//! folds constant subtrees. Evaluation never panics on data: failures such
//! as overflow or division by zero produce NULL rows; only a batch that does
//! not match the compiled schema is an error.
//!
//! The recursive walk keeps one small method per node kind so that deep
//! expressions need little stack per level (even in debug builds).

mod arith;
mod cast;
mod column;
mod compare;
mod kernels;
mod logic;
mod strings;
pub(crate) mod value;

use crate::error::ExprError;
use crate::like::LikePattern;
use crate::plan::{ArithOp, CmpOp, ConstSet, Func, PatternPlan, Plan};
use crate::types::Ty;
use arrow_array::ArrayRef;
pub(crate) use value::Value;

/// Evaluates `plan` over `columns` (all of `len` rows).
pub(crate) fn eval(plan: &Plan, columns: &[ArrayRef], len: usize) -> Result<Value, ExprError> {
    Evaluator { columns, len }.eval(plan)
}

/// Evaluates a plan whose leaves are all constants, returning the scalar.
pub(crate) fn eval_const(plan: &Plan) -> Result<Value, ExprError> {
    let v = Evaluator {
        columns: &[],
        len: 1,
    }
    .eval(plan)?;
    Ok(v.into_first_scalar())
}

struct Evaluator<'a> {
    columns: &'a [ArrayRef],
    len: usize,
}

/// Row count to compute with, and whether the result must be turned back
/// into a scalar: 1 row if every input is a scalar, else the batch length.
struct Shape {
    n: usize,
    scalar: bool,
}

impl Shape {
    fn finish(&self, v: Value) -> Value {
        if self.scalar {
            v.into_first_scalar()
        } else {
            v
        }
    }
}

impl Evaluator<'_> {
    fn shape<'v>(&self, inputs: impl IntoIterator<Item = &'v Value>) -> Shape {
        let scalar = inputs.into_iter().all(Value::is_scalar);
        Shape {
            n: if scalar { 1 } else { self.len },
            scalar,
        }
    }

    fn eval(&self, plan: &Plan) -> Result<Value, ExprError> {
        match plan {
            Plan::Const { value, .. } => Ok(Value::Scalar(value.clone())),
            Plan::Column { index, .. } => column::read(self.columns, *index, self.len),
            Plan::Neg(a, ty) => self.neg(a, *ty),
            Plan::Not(a) => self.not(a),
            Plan::Arith {
                op,
                ty,
                left,
                right,
            } => self.arith(*op, *ty, left, right),
            Plan::Cmp { op, left, right } => self.cmp(*op, left, right),
            Plan::And(l, r) => self.logic(true, l, r),
            Plan::Or(l, r) => self.logic(false, l, r),
            Plan::IsNull { input, negated } => self.is_null(input, *negated),
            Plan::InSet {
                input,
                set,
                has_null,
                negated,
            } => self.in_set(input, set, *has_null, *negated),
            Plan::InList {
                input,
                list,
                negated,
            } => self.in_list(input, list, *negated),
            Plan::Between {
                input,
                low,
                high,
                negated,
            } => self.between(input, low, high, *negated),
            Plan::Like {
                input,
                pattern: PatternPlan::Const(p),
                negated,
            } => self.like_const(input, p, *negated),
            Plan::Like {
                input,
                pattern: PatternPlan::Dynamic(p),
                negated,
            } => self.like_dynamic(input, p, *negated),
            Plan::Concat(l, r) => self.concat(l, r),
            Plan::Case {
                branches,
                otherwise,
                ty,
            } => self.case(branches, otherwise, *ty),
            Plan::Cast { input, to } => self.cast(input, *to),
            Plan::Call { func, args, ty } => self.call(*func, args, *ty),
        }
    }

    fn neg(&self, a: &Plan, ty: Ty) -> Result<Value, ExprError> {
        let a = self.eval(a)?;
        let s = self.shape([&a]);
        Ok(s.finish(arith::neg(ty, &a, s.n)?))
    }

    fn not(&self, a: &Plan) -> Result<Value, ExprError> {
        let a = self.eval(a)?;
        logic::not(&a, self.len)
    }

    fn arith(&self, op: ArithOp, ty: Ty, l: &Plan, r: &Plan) -> Result<Value, ExprError> {
        let (a, b) = (self.eval(l)?, self.eval(r)?);
        let s = self.shape([&a, &b]);
        Ok(s.finish(arith::arith(op, ty, &a, &b, s.n)?))
    }

    fn cmp(&self, op: CmpOp, l: &Plan, r: &Plan) -> Result<Value, ExprError> {
        let (a, b) = (self.eval(l)?, self.eval(r)?);
        let s = self.shape([&a, &b]);
        Ok(s.finish(compare::compare(op, l.ty(), &a, &b, s.n)?))
    }

    fn logic(&self, and: bool, l: &Plan, r: &Plan) -> Result<Value, ExprError> {
        let (a, b) = (self.eval(l)?, self.eval(r)?);
        let s = self.shape([&a, &b]);
        let v = if and {
            logic::and(a, b, s.n)?
        } else {
            logic::or(a, b, s.n)?
        };
        Ok(s.finish(v))
    }

    fn is_null(&self, input: &Plan, negated: bool) -> Result<Value, ExprError> {
        let a = self.eval(input)?;
        Ok(logic::is_null(&a, negated, self.len))
    }

    fn in_set(
        &self,
        input: &Plan,
        set: &ConstSet,
        has_null: bool,
        negated: bool,
    ) -> Result<Value, ExprError> {
        let a = self.eval(input)?;
        let s = self.shape([&a]);
        Ok(s.finish(compare::in_set(&a, set, has_null, negated, s.n)?))
    }

    fn in_list(&self, input: &Plan, list: &[Plan], negated: bool) -> Result<Value, ExprError> {
        let a = self.eval(input)?;
        let items = self.eval_all(list)?;
        let s = self.shape(std::iter::once(&a).chain(&items));
        Ok(s.finish(compare::in_list(input.ty(), &a, &items, negated, s.n)?))
    }

    fn between(
        &self,
        input: &Plan,
        low: &Plan,
        high: &Plan,
        negated: bool,
    ) -> Result<Value, ExprError> {
        let (x, lo, hi) = (self.eval(input)?, self.eval(low)?, self.eval(high)?);
        let s = self.shape([&x, &lo, &hi]);
        let v = compare::between(input.ty(), &x, &lo, &hi, negated, s.n)?;
        Ok(s.finish(v))
    }

    fn like_const(&self, input: &Plan, p: &LikePattern, negated: bool) -> Result<Value, ExprError> {
        let x = self.eval(input)?;
        let s = self.shape([&x]);
        Ok(s.finish(strings::like(&x, Some(p), None, negated, s.n)?))
    }

    fn like_dynamic(&self, input: &Plan, p: &Plan, negated: bool) -> Result<Value, ExprError> {
        let (x, p) = (self.eval(input)?, self.eval(p)?);
        let s = self.shape([&x, &p]);
        Ok(s.finish(strings::like(&x, None, Some(&p), negated, s.n)?))
    }

    fn concat(&self, l: &Plan, r: &Plan) -> Result<Value, ExprError> {
        let (a, b) = (self.eval(l)?, self.eval(r)?);
        let s = self.shape([&a, &b]);
        Ok(s.finish(strings::concat_op(&a, &b, s.n)?))
    }

    fn case(
        &self,
        branches: &[(Plan, Plan)],
        otherwise: &Plan,
        ty: Ty,
    ) -> Result<Value, ExprError> {
        let mut evaluated = Vec::with_capacity(branches.len());
        for (w, t) in branches {
            evaluated.push((self.eval(w)?, self.eval(t)?));
        }
        let e = self.eval(otherwise)?;
        let s = self.shape(
            evaluated
                .iter()
                .flat_map(|(w, t)| [w, t])
                .chain(std::iter::once(&e)),
        );
        Ok(s.finish(logic::case(ty, &evaluated, e.clone(), s.n)?))
    }

    fn cast(&self, input: &Plan, to: Ty) -> Result<Value, ExprError> {
        let a = self.eval(input)?;
        let s = self.shape([&a]);
        Ok(s.finish(cast::cast(&a, input.ty(), to, s.n)?))
    }

    fn eval_all(&self, plans: &[Plan]) -> Result<Vec<Value>, ExprError> {
        plans.iter().map(|p| self.eval(p)).collect()
    }

    fn call(&self, func: Func, args: &[Plan], ty: Ty) -> Result<Value, ExprError> {
        let values = self.eval_all(args)?;
        let s = self.shape(&values);
        let arg_ty = args.first().map_or(Ty::Null, Plan::ty);
        let v = match func {
            Func::Coalesce => logic::coalesce(ty, &values, s.n)?,
            Func::Least => logic::extreme(ty, &values, false, s.n)?,
            Func::Greatest => logic::extreme(ty, &values, true, s.n)?,
            Func::Lower
            | Func::Upper
            | Func::Length
            | Func::Trim
            | Func::Ltrim
            | Func::Rtrim
            | Func::Substr
            | Func::Concat
            | Func::Replace
            | Func::StartsWith
            | Func::EndsWith
            | Func::Strpos => strings::call(func, &values, s.n)?,
            _ if arg_ty == Ty::Null => Value::NULL,
            _ => arith::call(func, ty, &values, s.n)?,
        };
        Ok(s.finish(v))
    }
}
