//! SQL `LIKE` pattern compilation and matching.
//!
//! `%` matches any run of characters, `_` exactly one character, and `\`
//! makes the next character literal. Matching is case-sensitive and works on
//! characters (not bytes). Constant patterns are compiled once per expression
//! and the common shapes (`'abc'`, `'abc%'`, `'%abc'`, `'%abc%'`) become plain
//! string comparisons.

/// One element of a general pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Piece {
    Lit(char),
    One,
    Many,
}

/// A compiled `LIKE` pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LikePattern {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Contains(String),
    General(Vec<Piece>),
}

impl LikePattern {
    /// Compiles `pattern`.
    pub(crate) fn new(pattern: &str) -> LikePattern {
        let mut pieces = Vec::new();
        let mut chars = pattern.chars();
        while let Some(c) = chars.next() {
            let piece = match c {
                '%' => Piece::Many,
                '_' => Piece::One,
                '\\' => Piece::Lit(chars.next().unwrap_or('\\')),
                c => Piece::Lit(c),
            };
            if piece == Piece::Many && pieces.last() == Some(&Piece::Many) {
                continue;
            }
            pieces.push(piece);
        }
        Self::classify(pieces)
    }

    fn classify(pieces: Vec<Piece>) -> LikePattern {
        if pieces.contains(&Piece::One) {
            return LikePattern::General(pieces);
        }
        let starts = pieces.first() == Some(&Piece::Many);
        let ends = pieces.len() > usize::from(starts) && pieces.last() == Some(&Piece::Many);
        let inner = &pieces[usize::from(starts)..pieces.len() - usize::from(ends)];
        if inner.contains(&Piece::Many) {
            return LikePattern::General(pieces);
        }
        let lit: String = inner
            .iter()
            .filter_map(|p| match p {
                Piece::Lit(c) => Some(*c),
                _ => None,
            })
            .collect();
        match (starts, ends) {
            (false, false) => LikePattern::Exact(lit),
            (false, true) => LikePattern::Prefix(lit),
            (true, false) if lit.is_empty() => LikePattern::Prefix(lit),
            (true, false) => LikePattern::Suffix(lit),
            (true, true) => LikePattern::Contains(lit),
        }
    }

    /// Whether `text` matches the pattern.
    #[inline]
    pub(crate) fn matches(&self, text: &str) -> bool {
        match self {
            LikePattern::Exact(s) => text == s,
            LikePattern::Prefix(s) => text.starts_with(s.as_str()),
            LikePattern::Suffix(s) => text.ends_with(s.as_str()),
            LikePattern::Contains(s) => text.contains(s.as_str()),
            LikePattern::General(p) => general_match(p, text),
        }
    }
}

fn next_char(text: &str, at: usize) -> Option<char> {
    text.get(at..).and_then(|rest| rest.chars().next())
}

/// Wildcard matching with single-point backtracking to the last `%`
/// (O(pattern × text) worst case, no recursion, no allocation).
fn general_match(pieces: &[Piece], text: &str) -> bool {
    let mut pi = 0;
    let mut ti = 0;
    // (piece index after the last `%`, text index it is currently matched up to)
    let mut star: Option<(usize, usize)> = None;
    loop {
        if let Some(piece) = pieces.get(pi) {
            match piece {
                Piece::Many => {
                    star = Some((pi + 1, ti));
                    pi += 1;
                    continue;
                }
                Piece::One => {
                    if let Some(c) = next_char(text, ti) {
                        ti += c.len_utf8();
                        pi += 1;
                        continue;
                    }
                }
                Piece::Lit(want) => {
                    if let Some(c) = next_char(text, ti) {
                        if c == *want {
                            ti += c.len_utf8();
                            pi += 1;
                            continue;
                        }
                    }
                }
            }
        } else if ti == text.len() {
            return true;
        }
        // Mismatch: let the last `%` swallow one more character.
        match star {
            Some((sp, st)) => match next_char(text, st) {
                Some(c) => {
                    let st = st + c.len_utf8();
                    star = Some((sp, st));
                    pi = sp;
                    ti = st;
                }
                None => return false,
            },
            None => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn like(text: &str, pat: &str) -> bool {
        LikePattern::new(pat).matches(text)
    }

    #[test]
    fn shapes() {
        assert_eq!(LikePattern::new("abc"), LikePattern::Exact("abc".into()));
        assert_eq!(LikePattern::new("ab%"), LikePattern::Prefix("ab".into()));
        assert_eq!(LikePattern::new("%%ab"), LikePattern::Suffix("ab".into()));
        assert_eq!(LikePattern::new("%ab%"), LikePattern::Contains("ab".into()));
        assert_eq!(LikePattern::new("%"), LikePattern::Prefix(String::new()));
        assert_eq!(LikePattern::new("%%"), LikePattern::Prefix(String::new()));
        assert_eq!(LikePattern::new(r"50\%"), LikePattern::Exact("50%".into()));
        assert!(matches!(LikePattern::new("a_c"), LikePattern::General(_)));
        assert!(matches!(LikePattern::new("a%b%c"), LikePattern::General(_)));
    }

    #[test]
    fn matching() {
        assert!(like("abc", "abc"));
        assert!(!like("abcd", "abc"));
        assert!(like("abc", "a_c"));
        assert!(like("aéc", "a_c"));
        assert!(!like("ac", "a_c"));
        assert!(like("axxbyyc", "a%b%c"));
        assert!(like("abc", "a%b%c"));
        assert!(!like("axxbyy", "a%b%c"));
        assert!(like("", "%"));
        assert!(!like("", "_"));
        assert!(like("mississippi", "%iss%ppi"));
        assert!(like("mississippi", "m%i_s%i"));
        assert!(like("100%", r"100\%"));
        assert!(!like("1000", r"100\%"));
        assert!(like("a_b", r"a\_b"));
        assert!(!like("axb", r"a\_b"));
        assert!(like(r"a\", r"a\"));
        assert!(like("Abc", "A%"));
        assert!(!like("abc", "A%"));
    }
}
