//! Tokeniser: turns the source text into a flat list of tokens, each tagged
//! with the 0-based character offset where it starts.
//!
//! Kept separate from the parser so that the parser only deals with
//! structure, and so that all character-level rules (quoting, escapes,
//! number formats, comments) live in one place.

use crate::error::ExprError;
use std::fmt;

/// Kind (and payload) of a token.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    /// Integer literal digits, range-checked by the parser (so that
    /// `-9223372036854775808` can be accepted).
    Int(String),
    /// Decimal / exponent literal, already converted.
    Float(f64),
    /// `'...'` string with `''` unescaped.
    Str(String),
    /// Bare identifier or keyword, as written.
    Ident(String),
    /// `"..."` identifier with `""` unescaped (never a keyword).
    Quoted(String),
    LParen,
    RParen,
    Comma,
    Plus,
    Minus,
    Star,
    Slash,
    Percent,
    Concat,
    Eq,
    NotEq,
    Lt,
    LtEq,
    Gt,
    GtEq,
    Eof,
}

/// A token and its starting character offset.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Token {
    pub(crate) tok: Tok,
    pub(crate) pos: usize,
}

impl Tok {
    /// Whether this is the (case-insensitive) bare keyword `kw`.
    pub(crate) fn is_kw(&self, kw: &str) -> bool {
        matches!(self, Tok::Ident(s) if s.eq_ignore_ascii_case(kw))
    }
}

impl fmt::Display for Tok {
    /// How a token is quoted in error messages: `")"`, `"amount"`, `"'abc'"`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tok::Int(s) => write!(f, "\"{s}\""),
            Tok::Float(v) => write!(f, "\"{v:?}\""),
            Tok::Str(s) => write!(f, "\"'{}'\"", s.replace('\'', "''")),
            Tok::Ident(s) => write!(f, "\"{s}\""),
            Tok::Quoted(s) => write!(f, "\"\"{}\"\"", s.replace('"', "\"\"")),
            Tok::Eof => f.write_str("end of input"),
            other => {
                let sym = match other {
                    Tok::LParen => "(",
                    Tok::RParen => ")",
                    Tok::Comma => ",",
                    Tok::Plus => "+",
                    Tok::Minus => "-",
                    Tok::Star => "*",
                    Tok::Slash => "/",
                    Tok::Percent => "%",
                    Tok::Concat => "||",
                    Tok::Eq => "=",
                    Tok::NotEq => "<>",
                    Tok::Lt => "<",
                    Tok::LtEq => "<=",
                    Tok::Gt => ">",
                    Tok::GtEq => ">=",
                    _ => "?",
                };
                write!(f, "\"{sym}\"")
            }
        }
    }
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Splits `src` into tokens; the last token is always [`Tok::Eof`].
pub(crate) fn tokenize(src: &str) -> Result<Vec<Token>, ExprError> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let start = i;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        // `--` line comment
        if c == '-' && chars.get(i + 1) == Some(&'-') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
            continue;
        }
        let two = |next: char| chars.get(i + 1) == Some(&next);
        let (tok, len) = match c {
            '(' => (Tok::LParen, 1),
            ')' => (Tok::RParen, 1),
            ',' => (Tok::Comma, 1),
            '+' => (Tok::Plus, 1),
            '-' => (Tok::Minus, 1),
            '*' => (Tok::Star, 1),
            '/' => (Tok::Slash, 1),
            '%' => (Tok::Percent, 1),
            '=' => (Tok::Eq, 1),
            '|' if two('|') => (Tok::Concat, 2),
            '!' if two('=') => (Tok::NotEq, 2),
            '<' if two('>') => (Tok::NotEq, 2),
            '<' if two('=') => (Tok::LtEq, 2),
            '<' => (Tok::Lt, 1),
            '>' if two('=') => (Tok::GtEq, 2),
            '>' => (Tok::Gt, 1),
            '\'' => {
                let (s, end) = quoted(&chars, i, '\'').ok_or_else(|| {
                    ExprError::syntax(
                        format!("unterminated string literal starting at position {start}"),
                        start,
                    )
                })?;
                out.push(Token {
                    tok: Tok::Str(s),
                    pos: start,
                });
                i = end;
                continue;
            }
            '"' => {
                let (s, end) = quoted(&chars, i, '"').ok_or_else(|| {
                    ExprError::syntax(
                        format!("unterminated quoted identifier starting at position {start}"),
                        start,
                    )
                })?;
                if s.is_empty() {
                    return Err(ExprError::syntax(
                        format!("empty quoted identifier at position {start}"),
                        start,
                    ));
                }
                out.push(Token {
                    tok: Tok::Quoted(s),
                    pos: start,
                });
                i = end;
                continue;
            }
            c if c.is_ascii_digit()
                || (c == '.' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit())) =>
            {
                let (tok, end) = number(&chars, i)?;
                out.push(Token { tok, pos: start });
                i = end;
                continue;
            }
            c if is_ident_start(c) => {
                let mut end = i;
                while end < chars.len() && is_ident_char(chars[end]) {
                    end += 1;
                }
                let word: String = chars[i..end].iter().collect();
                out.push(Token {
                    tok: Tok::Ident(word),
                    pos: start,
                });
                i = end;
                continue;
            }
            other => {
                return Err(ExprError::syntax(
                    format!("unexpected character '{other}' at position {start}"),
                    start,
                ))
            }
        };
        out.push(Token { tok, pos: start });
        i += len;
    }
    out.push(Token {
        tok: Tok::Eof,
        pos: chars.len(),
    });
    Ok(out)
}

/// Reads a `q`-quoted run starting at `chars[start] == q`, where a doubled
/// quote stands for one. Returns the content and the index after the closing
/// quote, or `None` if unterminated.
fn quoted(chars: &[char], start: usize, q: char) -> Option<(String, usize)> {
    let mut s = String::new();
    let mut i = start + 1;
    loop {
        let c = *chars.get(i)?;
        if c == q {
            if chars.get(i + 1) == Some(&q) {
                s.push(q);
                i += 2;
                continue;
            }
            return Some((s, i + 1));
        }
        s.push(c);
        i += 1;
    }
}

/// Reads `digits [. digits] [e [+-] digits]` (or `. digits ...`).
fn number(chars: &[char], start: usize) -> Result<(Tok, usize), ExprError> {
    let digits_from = |mut i: usize| {
        while i < chars.len() && chars[i].is_ascii_digit() {
            i += 1;
        }
        i
    };
    let mut i = digits_from(start);
    let mut is_float = false;
    if chars.get(i) == Some(&'.') {
        is_float = true;
        i = digits_from(i + 1);
    }
    if matches!(chars.get(i), Some('e' | 'E')) {
        let mut j = i + 1;
        if matches!(chars.get(j), Some('+' | '-')) {
            j += 1;
        }
        if chars.get(j).is_some_and(|c| c.is_ascii_digit()) {
            is_float = true;
            i = digits_from(j);
        }
    }
    let text: String = chars[start..i].iter().collect();
    if chars.get(i).is_some_and(|c| is_ident_char(*c) || *c == '.') {
        let mut end = i;
        while end < chars.len() && (is_ident_char(chars[end]) || chars[end] == '.') {
            end += 1;
        }
        let bad: String = chars[start..end].iter().collect();
        return Err(ExprError::syntax(
            format!("invalid number \"{bad}\" at position {start}"),
            start,
        ));
    }
    if is_float {
        let v: f64 = text.parse().map_err(|_| {
            ExprError::syntax(
                format!("invalid number \"{text}\" at position {start}"),
                start,
            )
        })?;
        if !v.is_finite() {
            return Err(ExprError::syntax(
                format!("numeric literal {text} is out of range for DOUBLE at position {start}"),
                start,
            ));
        }
        Ok((Tok::Float(v), i))
    } else {
        Ok((Tok::Int(text), i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(src: &str) -> Vec<Tok> {
        tokenize(src)
            .expect("tokenizes")
            .into_iter()
            .map(|t| t.tok)
            .collect()
    }

    #[test]
    fn operators_and_positions() {
        let toks = tokenize("a<>b != c <= 1.5e3 || 'x''y'").expect("ok");
        let pos: Vec<usize> = toks.iter().map(|t| t.pos).collect();
        assert_eq!(pos, vec![0, 1, 3, 5, 8, 10, 13, 19, 22, 28]);
        assert_eq!(toks[6].tok, Tok::Float(1500.0));
        assert_eq!(toks[8].tok, Tok::Str("x'y".into()));
    }

    #[test]
    fn positions_count_chars_not_bytes() {
        let toks = tokenize("'é€' + x").expect("ok");
        assert_eq!(toks[1].pos, 5);
        assert_eq!(toks[2].pos, 7);
    }

    #[test]
    fn numbers() {
        assert_eq!(kinds(".5")[0], Tok::Float(0.5));
        assert_eq!(kinds("1.")[0], Tok::Float(1.0));
        assert_eq!(kinds("12")[0], Tok::Int("12".into()));
        assert_eq!(kinds("1e-2")[0], Tok::Float(0.01));
        assert!(tokenize("12abc").is_err());
        assert!(tokenize("1.2.3").is_err());
        assert!(tokenize("1e999").is_err());
    }

    #[test]
    fn quoted_identifiers_and_comments() {
        assert_eq!(
            kinds("\"my \"\"col\"\"\" -- trailing\n+ 1"),
            vec![
                Tok::Quoted("my \"col\"".into()),
                Tok::Plus,
                Tok::Int("1".into()),
                Tok::Eof
            ]
        );
    }

    #[test]
    fn errors() {
        let e = tokenize("a # b").unwrap_err();
        assert_eq!(e.to_string(), "unexpected character '#' at position 2");
        assert_eq!(e.position(), Some(2));
        let e = tokenize("x = 'abc").unwrap_err();
        assert_eq!(
            e.to_string(),
            "unterminated string literal starting at position 4"
        );
        assert!(tokenize("\"\"").is_err());
        assert!(tokenize("a | b").is_err());
    }
}
