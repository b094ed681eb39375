//! Recursive-descent / precedence-climbing parser from tokens to [`Expr`].
//!
//! Precedence, loosest first (all binary operators are left-associative):
//!
//! | level | operators                                                    |
//! |-------|--------------------------------------------------------------|
//! | 1     | `OR`                                                         |
//! | 2     | `AND`                                                        |
//! | 3     | prefix `NOT`                                                 |
//! | 4     | `= <> != < <= > >=`, `IS [NOT] NULL`, `[NOT] IN`, `[NOT] BETWEEN`, `[NOT] LIKE` |
//! | 5     | `\|\|`                                                       |
//! | 6     | `+ -`                                                        |
//! | 7     | `* / %`                                                      |
//! | 8     | prefix `-` / `+`                                             |
//!
//! Nesting depth is limited so that hostile input cannot overflow the stack
//! in the parser or in the later recursive passes.

use crate::ast::{is_reserved, BinaryOp, CastType, Expr, Literal, UnaryOp};
use crate::error::ExprError;
use crate::lexer::{tokenize, Tok, Token};

/// Maximum nesting depth of the syntax tree.
const MAX_DEPTH: usize = 200;

const PREC_OR: u8 = 1;
const PREC_AND: u8 = 2;
const PREC_NOT: u8 = 3;
const PREC_CMP: u8 = 4;
const PREC_CONCAT: u8 = 5;
const PREC_ADD: u8 = 6;
const PREC_MUL: u8 = 7;
const PREC_UNARY: u8 = 8;

/// Parses an expression. See the crate documentation for the grammar.
pub fn parse(src: &str) -> Result<Expr, ExprError> {
    let tokens = tokenize(src)?;
    let mut p = Parser {
        tokens,
        idx: 0,
        depth: 0,
    };
    let expr = p.expr(PREC_OR)?;
    let t = p.peek();
    if t.tok != Tok::Eof {
        return Err(unexpected(t));
    }
    Ok(expr)
}

fn unexpected(t: &Token) -> ExprError {
    if t.tok == Tok::Eof {
        ExprError::syntax(
            format!("unexpected end of input at position {}", t.pos),
            t.pos,
        )
    } else {
        ExprError::syntax(
            format!("unexpected token {} at position {}", t.tok, t.pos),
            t.pos,
        )
    }
}

/// Infix forms that can follow an operand.
enum Infix {
    Binary(BinaryOp),
    Is,
    In,
    Between,
    Like,
    /// `NOT` followed by `IN` / `BETWEEN` / `LIKE`.
    Not,
}

struct Parser {
    tokens: Vec<Token>,
    idx: usize,
    /// Current nesting depth (recursion plus left-deep operator chains).
    depth: usize,
}

impl Parser {
    fn peek(&self) -> &Token {
        // The token list always ends with Eof and `idx` never moves past it.
        &self.tokens[self.idx.min(self.tokens.len() - 1)]
    }

    fn peek_at(&self, ahead: usize) -> &Tok {
        let i = (self.idx + ahead).min(self.tokens.len() - 1);
        &self.tokens[i].tok
    }

    fn bump(&mut self) -> Token {
        let t = self.peek().clone();
        if t.tok != Tok::Eof {
            self.idx += 1;
        }
        t
    }

    fn eat(&mut self, tok: &Tok) -> bool {
        if &self.peek().tok == tok {
            self.bump();
            true
        } else {
            false
        }
    }

    fn eat_kw(&mut self, kw: &str) -> bool {
        if self.peek().tok.is_kw(kw) {
            self.bump();
            true
        } else {
            false
        }
    }

    fn expect(&mut self, tok: &Tok) -> Result<(), ExprError> {
        if self.eat(tok) {
            Ok(())
        } else {
            Err(self.expected(&tok.to_string()))
        }
    }

    fn expect_kw(&mut self, kw: &str) -> Result<(), ExprError> {
        if self.eat_kw(kw) {
            Ok(())
        } else {
            Err(self.expected(kw))
        }
    }

    fn expected(&self, what: &str) -> ExprError {
        let t = self.peek();
        ExprError::syntax(
            format!("expected {what} but found {} at position {}", t.tok, t.pos),
            t.pos,
        )
    }

    fn enter(&mut self) -> Result<(), ExprError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            let pos = self.peek().pos;
            return Err(ExprError::syntax(
                format!("expression nested too deeply at position {pos}"),
                pos,
            ));
        }
        Ok(())
    }

    fn infix(&self) -> Option<(Infix, u8)> {
        let t = &self.peek().tok;
        let bin = |op| Some((Infix::Binary(op), prec_of(op)));
        match t {
            Tok::Eq => bin(BinaryOp::Eq),
            Tok::NotEq => bin(BinaryOp::NotEq),
            Tok::Lt => bin(BinaryOp::Lt),
            Tok::LtEq => bin(BinaryOp::LtEq),
            Tok::Gt => bin(BinaryOp::Gt),
            Tok::GtEq => bin(BinaryOp::GtEq),
            Tok::Concat => bin(BinaryOp::Concat),
            Tok::Plus => bin(BinaryOp::Add),
            Tok::Minus => bin(BinaryOp::Sub),
            Tok::Star => bin(BinaryOp::Mul),
            Tok::Slash => bin(BinaryOp::Div),
            Tok::Percent => bin(BinaryOp::Mod),
            Tok::Ident(w) => {
                let is = |k: &str| w.eq_ignore_ascii_case(k);
                if is("OR") {
                    bin(BinaryOp::Or)
                } else if is("AND") {
                    bin(BinaryOp::And)
                } else if is("IS") {
                    Some((Infix::Is, PREC_CMP))
                } else if is("IN") {
                    Some((Infix::In, PREC_CMP))
                } else if is("BETWEEN") {
                    Some((Infix::Between, PREC_CMP))
                } else if is("LIKE") {
                    Some((Infix::Like, PREC_CMP))
                } else if is("NOT") {
                    let next = self.peek_at(1);
                    if next.is_kw("IN") || next.is_kw("BETWEEN") || next.is_kw("LIKE") {
                        Some((Infix::Not, PREC_CMP))
                    } else {
                        None
                    }
                } else {
                    None
                }
            }
            _ => None,
        }
    }

    /// Parses an expression whose infix operators all bind at least as
    /// tightly as `min_prec`.
    fn expr(&mut self, min_prec: u8) -> Result<Expr, ExprError> {
        let saved = self.depth;
        self.enter()?;
        let mut lhs = self.prefix()?;
        while let Some((infix, prec)) = self.infix() {
            if prec < min_prec {
                break;
            }
            self.enter()?;
            lhs = self.apply_infix(lhs, infix, prec)?;
        }
        self.depth = saved;
        Ok(lhs)
    }

    /// Parses the rest of an infix form whose operator is the next token.
    fn apply_infix(&mut self, lhs: Expr, infix: Infix, prec: u8) -> Result<Expr, ExprError> {
        let op_tok = self.bump();
        let position = op_tok.pos;
        Ok(match infix {
            Infix::Binary(op) => {
                let right = self.expr(prec + 1)?;
                Expr::Binary {
                    op,
                    left: Box::new(lhs),
                    right: Box::new(right),
                    position,
                }
            }
            Infix::Is => {
                let negated = self.eat_kw("NOT");
                self.expect_kw("NULL")?;
                Expr::IsNull {
                    operand: Box::new(lhs),
                    negated,
                    position,
                }
            }
            Infix::Not => {
                // `infix()` guaranteed one of IN / BETWEEN / LIKE follows.
                let kw = self.bump();
                self.negatable(lhs, &kw.tok, true, position)?
            }
            Infix::In | Infix::Between | Infix::Like => {
                self.negatable(lhs, &op_tok.tok, false, position)?
            }
        })
    }

    /// The rest of `IN (...)`, `BETWEEN a AND b` or `LIKE p` after the
    /// keyword `kw` has been consumed.
    fn negatable(
        &mut self,
        operand: Expr,
        kw: &Tok,
        negated: bool,
        position: usize,
    ) -> Result<Expr, ExprError> {
        let operand = Box::new(operand);
        if kw.is_kw("IN") {
            self.expect(&Tok::LParen)?;
            let mut list = vec![self.expr(PREC_OR)?];
            while self.eat(&Tok::Comma) {
                list.push(self.expr(PREC_OR)?);
            }
            self.expect(&Tok::RParen)?;
            Ok(Expr::InList {
                operand,
                list,
                negated,
                position,
            })
        } else if kw.is_kw("BETWEEN") {
            let low = Box::new(self.expr(PREC_CONCAT)?);
            self.expect_kw("AND")?;
            let high = Box::new(self.expr(PREC_CONCAT)?);
            Ok(Expr::Between {
                operand,
                low,
                high,
                negated,
                position,
            })
        } else {
            let pattern = Box::new(self.expr(PREC_CONCAT)?);
            Ok(Expr::Like {
                operand,
                pattern,
                negated,
                position,
            })
        }
    }

    fn prefix(&mut self) -> Result<Expr, ExprError> {
        let t = self.bump();
        let position = t.pos;
        let lit = |value| Ok(Expr::Literal { value, position });
        match t.tok {
            Tok::Int(digits) => lit(Literal::Int(parse_int(&digits, false, position)?)),
            Tok::Float(v) => lit(Literal::Float(v)),
            Tok::Str(s) => lit(Literal::Str(s)),
            Tok::Quoted(name) => Ok(Expr::Column { name, position }),
            Tok::LParen => {
                let e = self.expr(PREC_OR)?;
                self.expect(&Tok::RParen)?;
                Ok(e)
            }
            Tok::Minus | Tok::Plus => self.signed(t.tok == Tok::Minus, position),
            Tok::Ident(ref word) => self.word(word.clone(), position, &t),
            _ => Err(unexpected(&t)),
        }
    }

    /// Operand after a prefix `-` (`neg`) or `+` at `position`.
    fn signed(&mut self, neg: bool, position: usize) -> Result<Expr, ExprError> {
        let lit = |value| Ok(Expr::Literal { value, position });
        // Fold signs into numeric literals so that
        // -9223372036854775808 is representable.
        match self.peek().tok.clone() {
            Tok::Int(digits) => {
                self.bump();
                lit(Literal::Int(parse_int(&digits, neg, position)?))
            }
            Tok::Float(v) => {
                self.bump();
                lit(Literal::Float(if neg { -v } else { v }))
            }
            _ => {
                let operand = Box::new(self.expr(PREC_UNARY)?);
                let op = if neg { UnaryOp::Neg } else { UnaryOp::Plus };
                Ok(Expr::Unary {
                    op,
                    operand,
                    position,
                })
            }
        }
    }

    /// A bare word in operand position: keyword form, function call or
    /// column reference.
    fn word(&mut self, word: String, position: usize, t: &Token) -> Result<Expr, ExprError> {
        let kw = |k: &str| word.eq_ignore_ascii_case(k);
        if kw("NULL") {
            return Ok(Expr::Literal {
                value: Literal::Null,
                position,
            });
        }
        if kw("TRUE") || kw("FALSE") {
            return Ok(Expr::Literal {
                value: Literal::Bool(kw("TRUE")),
                position,
            });
        }
        if kw("NOT") {
            let operand = Box::new(self.expr(PREC_NOT)?);
            return Ok(Expr::Unary {
                op: UnaryOp::Not,
                operand,
                position,
            });
        }
        if kw("CASE") {
            return self.case(position);
        }
        if kw("CAST") {
            return self.cast(position);
        }
        if is_reserved(&word) {
            return Err(unexpected(t));
        }
        if self.peek().tok == Tok::LParen {
            return self.call(word, position);
        }
        Ok(Expr::Column {
            name: word,
            position,
        })
    }

    /// `CAST(x AS type)` after the keyword.
    fn cast(&mut self, position: usize) -> Result<Expr, ExprError> {
        self.expect(&Tok::LParen)?;
        let operand = Box::new(self.expr(PREC_OR)?);
        self.expect_kw("AS")?;
        let target = self.cast_type()?;
        self.expect(&Tok::RParen)?;
        Ok(Expr::Cast {
            operand,
            target,
            position,
        })
    }

    /// `name(args...)`, the next token being `(`.
    fn call(&mut self, word: String, position: usize) -> Result<Expr, ExprError> {
        self.bump();
        let mut args = Vec::new();
        if !self.eat(&Tok::RParen) {
            args.push(self.expr(PREC_OR)?);
            while self.eat(&Tok::Comma) {
                args.push(self.expr(PREC_OR)?);
            }
            self.expect(&Tok::RParen)?;
        }
        Ok(Expr::Function {
            name: word,
            args,
            position,
        })
    }

    fn case(&mut self, position: usize) -> Result<Expr, ExprError> {
        let next = &self.peek().tok;
        if next.is_kw("END") || next.is_kw("ELSE") || next.is_kw("THEN") {
            return Err(self.expected("WHEN"));
        }
        let operand = if self.peek().tok.is_kw("WHEN") {
            None
        } else {
            Some(Box::new(self.expr(PREC_OR)?))
        };
        let mut branches = Vec::new();
        while self.eat_kw("WHEN") {
            let when = self.expr(PREC_OR)?;
            self.expect_kw("THEN")?;
            let then = self.expr(PREC_OR)?;
            branches.push((when, then));
        }
        if branches.is_empty() {
            return Err(self.expected("WHEN"));
        }
        let otherwise = if self.eat_kw("ELSE") {
            Some(Box::new(self.expr(PREC_OR)?))
        } else {
            None
        };
        self.expect_kw("END")?;
        Ok(Expr::Case {
            operand,
            branches,
            otherwise,
            position,
        })
    }

    fn cast_type(&mut self) -> Result<CastType, ExprError> {
        let t = self.bump();
        let Tok::Ident(name) = &t.tok else {
            return Err(ExprError::syntax(
                format!(
                    "expected a type name but found {} at position {}",
                    t.tok, t.pos
                ),
                t.pos,
            ));
        };
        let ty = match name.to_ascii_uppercase().as_str() {
            "BIGINT" | "INT" | "INTEGER" | "SMALLINT" | "INT8" | "INT4" | "INT2" => {
                CastType::BigInt
            }
            "DOUBLE" => {
                self.eat_kw("PRECISION");
                CastType::Double
            }
            "FLOAT" | "REAL" | "FLOAT8" | "FLOAT4" => CastType::Double,
            "VARCHAR" | "TEXT" | "STRING" => {
                // Optional, ignored length: VARCHAR(20).
                if self.peek().tok == Tok::LParen && matches!(self.peek_at(1), Tok::Int(_)) {
                    self.bump();
                    self.bump();
                    self.expect(&Tok::RParen)?;
                }
                CastType::Varchar
            }
            "BOOLEAN" | "BOOL" => CastType::Boolean,
            _ => {
                return Err(ExprError::Type {
                    message: format!(
                        "unknown type \"{name}\" (supported: BIGINT, INT, INTEGER, SMALLINT, \
                         DOUBLE, FLOAT, REAL, VARCHAR, TEXT, STRING, BOOLEAN)"
                    ),
                    position: Some(t.pos),
                })
            }
        };
        Ok(ty)
    }
}

fn prec_of(op: BinaryOp) -> u8 {
    match op {
        BinaryOp::Or => PREC_OR,
        BinaryOp::And => PREC_AND,
        BinaryOp::Eq
        | BinaryOp::NotEq
        | BinaryOp::Lt
        | BinaryOp::LtEq
        | BinaryOp::Gt
        | BinaryOp::GtEq => PREC_CMP,
        BinaryOp::Concat => PREC_CONCAT,
        BinaryOp::Add | BinaryOp::Sub => PREC_ADD,
        BinaryOp::Mul | BinaryOp::Div | BinaryOp::Mod => PREC_MUL,
    }
}

/// Converts integer literal digits (optionally negated) to `i64`.
fn parse_int(digits: &str, negative: bool, position: usize) -> Result<i64, ExprError> {
    let magnitude: Option<u64> = digits.parse().ok();
    let value = match (magnitude, negative) {
        (Some(m), false) => i64::try_from(m).ok(),
        (Some(m), true) => 0i64.checked_sub_unsigned(m),
        (None, _) => None,
    };
    value.ok_or_else(|| {
        let sign = if negative { "-" } else { "" };
        ExprError::syntax(
            format!(
                "integer literal {sign}{digits} is out of range for BIGINT at position {position} \
                 (write it as a DOUBLE, e.g. {sign}{digits}.0)"
            ),
            position,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_int_literal() {
        assert_eq!(
            parse("-9223372036854775808").expect("parses"),
            Expr::Literal {
                value: Literal::Int(i64::MIN),
                position: 0
            }
        );
        assert!(parse("9223372036854775808").is_err());
    }

    #[test]
    fn depth_limit() {
        let deep = format!("{}1{}", "(".repeat(10_000), ")".repeat(10_000));
        assert!(parse(&deep).is_err());
        let chain = vec!["a"; 5_000].join(" + ");
        assert!(parse(&chain).is_err());
        let nots = format!("{}a", "NOT ".repeat(5_000));
        assert!(parse(&nots).is_err());
        let ok = vec!["a"; 100].join(" + ");
        assert!(parse(&ok).is_ok());
    }
}
