//! Signatures of the built-in functions: name lookup (case-insensitive,
//! with aliases), argument counts, argument kinds and result kind.
//!
//! Some functions are rewritten into other plan nodes here: `mod(a, b)` is
//! `a % b` and `nullif(a, b)` is `CASE WHEN a = b THEN NULL ELSE a END`.

use super::{arith, coerce, comparison, err, fold, Checker};
use crate::ast::Expr;
use crate::error::ExprError;
use crate::plan::{ArithOp, CmpOp, Func, Plan};
use crate::types::{numeric_common, unify, Ty};

/// Allowed argument counts.
enum Arity {
    Exactly(usize),
    Range(usize, usize),
    AtLeast(usize),
}

impl Arity {
    fn allows(&self, n: usize) -> bool {
        match *self {
            Arity::Exactly(k) => n == k,
            Arity::Range(lo, hi) => (lo..=hi).contains(&n),
            Arity::AtLeast(k) => n >= k,
        }
    }

    fn describe(&self) -> String {
        let plural = |k: usize| if k == 1 { "argument" } else { "arguments" };
        match *self {
            Arity::Exactly(k) => format!("{k} {}", plural(k)),
            Arity::Range(lo, hi) => format!("{lo} or {hi} {}", plural(hi)),
            Arity::AtLeast(k) => format!("at least {k} {}", plural(k)),
        }
    }
}

/// How the argument and result kinds of a function are determined.
#[derive(Clone, Copy)]
enum Sig {
    /// One numeric argument, result of the same kind (abs, floor, ...).
    NumericSame(Func),
    /// Numeric arguments converted to DOUBLE, DOUBLE result (sqrt, ...).
    Double(Func),
    /// round(x [, digits BIGINT]).
    Round,
    /// log(x) = log10(x), log(base, x).
    Log,
    /// mod(a, b) = a % b.
    Mod,
    /// least/greatest/coalesce: arguments unified to one kind.
    Unified(Func),
    /// nullif(a, b).
    NullIf,
    /// VARCHAR arguments; the given result kind.
    Strings(Func, Ty),
    /// substr(s, start [, len]).
    Substr,
    /// concat(any...): every argument converted to VARCHAR.
    Concat,
}

fn lookup(lower: &str) -> Option<(Sig, Arity)> {
    use Arity::*;
    use Func as F;
    let one = Exactly(1);
    Some(match lower {
        "abs" => (Sig::NumericSame(F::Abs), one),
        "sign" => (Sig::NumericSame(F::Sign), one),
        "floor" => (Sig::NumericSame(F::Floor), one),
        "ceil" | "ceiling" => (Sig::NumericSame(F::Ceil), one),
        "trunc" | "truncate" => (Sig::NumericSame(F::Trunc), one),
        "round" => (Sig::Round, Range(1, 2)),
        "sqrt" => (Sig::Double(F::Sqrt), one),
        "cbrt" => (Sig::Double(F::Cbrt), one),
        "exp" => (Sig::Double(F::Exp), one),
        "ln" => (Sig::Double(F::Ln), one),
        "log10" => (Sig::Double(F::Log10), one),
        "log2" => (Sig::Double(F::Log2), one),
        "sigmoid" => (Sig::Double(F::Sigmoid), one),
        "power" | "pow" => (Sig::Double(F::Power), Exactly(2)),
        "log" => (Sig::Log, Range(1, 2)),
        "mod" => (Sig::Mod, Exactly(2)),
        "least" => (Sig::Unified(F::Least), AtLeast(1)),
        "greatest" => (Sig::Unified(F::Greatest), AtLeast(1)),
        "coalesce" => (Sig::Unified(F::Coalesce), AtLeast(1)),
        "nullif" => (Sig::NullIf, Exactly(2)),
        "lower" => (Sig::Strings(F::Lower, Ty::Str), one),
        "upper" => (Sig::Strings(F::Upper, Ty::Str), one),
        "trim" | "btrim" => (Sig::Strings(F::Trim, Ty::Str), one),
        "ltrim" => (Sig::Strings(F::Ltrim, Ty::Str), one),
        "rtrim" => (Sig::Strings(F::Rtrim, Ty::Str), one),
        "length" | "char_length" | "character_length" => (Sig::Strings(F::Length, Ty::Int), one),
        "replace" => (Sig::Strings(F::Replace, Ty::Str), Exactly(3)),
        "starts_with" => (Sig::Strings(F::StartsWith, Ty::Bool), Exactly(2)),
        "ends_with" => (Sig::Strings(F::EndsWith, Ty::Bool), Exactly(2)),
        "strpos" => (Sig::Strings(F::Strpos, Ty::Int), Exactly(2)),
        "substr" | "substring" => (Sig::Substr, Range(2, 3)),
        "concat" => (Sig::Concat, AtLeast(1)),
        _ => return None,
    })
}

fn call(func: Func, args: Vec<Plan>, ty: Ty) -> Plan {
    fold(Plan::Call { func, args, ty })
}

impl Checker<'_> {
    pub(super) fn function(
        &mut self,
        name: &str,
        args: &[Expr],
        position: usize,
    ) -> Result<Plan, ExprError> {
        let lower = name.to_ascii_lowercase();
        let Some((sig, arity)) = lookup(&lower) else {
            return Err(ExprError::UnknownFunction {
                name: name.to_string(),
                position: Some(position),
            });
        };
        if !arity.allows(args.len()) {
            return Err(err(
                format!(
                    "function {lower} expects {}, got {}",
                    arity.describe(),
                    args.len()
                ),
                position,
            ));
        }
        let plans = args
            .iter()
            .map(|a| self.check(a))
            .collect::<Result<Vec<_>, _>>()?;
        let positions: Vec<usize> = args.iter().map(Expr::position).collect();
        typed_call(&lower, sig, plans, &positions, position)
    }
}

/// Checks argument kinds of an already resolved call and builds its plan.
fn typed_call(
    lower: &str,
    sig: Sig,
    plans: Vec<Plan>,
    positions: &[usize],
    position: usize,
) -> Result<Plan, ExprError> {
    let want = |i: usize, ok: bool, what: &str| -> Result<(), ExprError> {
        if ok {
            Ok(())
        } else {
            Err(err(
                format!(
                    "function {lower} expects {what} argument, found {}",
                    plans[i].ty().name()
                ),
                positions[i],
            ))
        }
    };
    // Every signature takes at least one argument (checked by `Arity`).
    let Some(first) = plans.first().map(Plan::ty) else {
        return Err(ExprError::internal("function without arguments"));
    };
    let numeric = |t: Ty| t.is_numeric() || t == Ty::Null;
    let text = |t: Ty| matches!(t, Ty::Str | Ty::Null);
    let integer = |t: Ty| matches!(t, Ty::Int | Ty::Null);
    match sig {
        Sig::NumericSame(func) => {
            want(0, numeric(first), "a numeric")?;
            let ty = numeric_common(first, Ty::Null).unwrap_or(Ty::Int);
            let args = plans.into_iter().map(|p| coerce(p, ty)).collect();
            Ok(call(func, args, ty))
        }
        Sig::Round => {
            want(0, numeric(first), "a numeric")?;
            if plans.len() == 2 {
                want(1, integer(plans[1].ty()), "a BIGINT digits")?;
            }
            let ty = numeric_common(first, Ty::Null).unwrap_or(Ty::Int);
            let args = plans
                .into_iter()
                .enumerate()
                .map(|(i, p)| coerce(p, if i == 0 { ty } else { Ty::Int }))
                .collect();
            Ok(call(Func::Round, args, ty))
        }
        Sig::Double(_) | Sig::Log => {
            for (i, p) in plans.iter().enumerate() {
                want(i, numeric(p.ty()), "a numeric")?;
            }
            let func = match sig {
                Sig::Double(f) => f,
                _ if plans.len() == 1 => Func::Log10,
                _ => Func::LogBase,
            };
            let args = plans.into_iter().map(|p| coerce(p, Ty::Float)).collect();
            Ok(call(func, args, Ty::Float))
        }
        Sig::Mod => {
            let mut it = plans.into_iter();
            let (Some(a), Some(b)) = (it.next(), it.next()) else {
                return Err(ExprError::internal("mod arity"));
            };
            let ty = numeric_common(a.ty(), b.ty()).ok_or_else(|| {
                err(
                    format!(
                        "function mod expects numeric arguments, found {} and {}",
                        a.ty().name(),
                        b.ty().name()
                    ),
                    position,
                )
            })?;
            Ok(arith(ArithOp::Mod, ty, a, b))
        }
        Sig::Unified(func) => {
            let mut ty = Ty::Null;
            for (i, p) in plans.iter().enumerate() {
                ty = unify(ty, p.ty()).ok_or_else(|| {
                    err(
                        format!(
                            "function {lower} has arguments of incompatible types {} and {}",
                            ty.name(),
                            p.ty().name()
                        ),
                        positions[i],
                    )
                })?;
            }
            let args = plans.into_iter().map(|p| coerce(p, ty)).collect();
            Ok(call(func, args, ty))
        }
        Sig::NullIf => {
            let mut it = plans.into_iter();
            let (Some(a), Some(b)) = (it.next(), it.next()) else {
                return Err(ExprError::internal("nullif arity"));
            };
            let ty = a.ty();
            let cond = comparison(CmpOp::Eq, a.clone(), b, position)?;
            Ok(fold(Plan::Case {
                branches: vec![(cond, Plan::null(ty))],
                otherwise: Box::new(a),
                ty,
            }))
        }
        Sig::Strings(func, ty) => {
            for (i, p) in plans.iter().enumerate() {
                want(i, text(p.ty()), "a VARCHAR")?;
            }
            let args = plans.into_iter().map(|p| coerce(p, Ty::Str)).collect();
            Ok(call(func, args, ty))
        }
        Sig::Substr => {
            want(0, text(first), "a VARCHAR")?;
            for (i, p) in plans.iter().enumerate().skip(1) {
                want(i, integer(p.ty()), "a BIGINT")?;
            }
            let args = plans
                .into_iter()
                .enumerate()
                .map(|(i, p)| coerce(p, if i == 0 { Ty::Str } else { Ty::Int }))
                .collect();
            Ok(call(Func::Substr, args, Ty::Str))
        }
        Sig::Concat => {
            let args = plans.into_iter().map(|p| coerce(p, Ty::Str)).collect();
            Ok(call(Func::Concat, args, Ty::Str))
        }
    }
}
