//! `${VAR}` and `${VAR:-default}` in pipeline files: environment variables
//! put into the text before it is parsed as TOML.
//!
//! The rules, as the README states them:
//!
//! - Interpolation happens inside quoted strings only (basic `"…"`, literal
//!   `'…'`, and their multi-line forms), in values and quoted keys alike;
//!   comments are left alone, and `${` anywhere else is a problem.
//! - `${NAME}` is the variable's value; unset, it is a problem naming the
//!   variable and the line. `${NAME:-default}` is the default when the
//!   variable is unset or empty; the default is text of the string it
//!   stands in (escapes as there) and cannot contain `}`. A reference
//!   ends on its line.
//! - `$$` is a literal `$`; any other `$` stays as written.
//! - A value becomes exactly the string's content: in `"…"` strings its `"`,
//!   `\` and control characters are escaped, so a value never ends a string
//!   or changes the file's structure; literal strings have no escapes, so a
//!   value with `'`, a line break or another control character is a problem
//!   there.
//! - Values never appear in problems: those of the file's later checks show
//!   `${NAME}` where a value would appear (see [`Interpolated::scrub`]).

use std::collections::HashMap;

use crate::Problem;

/// Where the text is, outside strings or inside one of a kind.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Quote {
    /// `"…"`
    Basic,
    /// `"""…"""`
    MultiBasic,
    /// `'…'`
    Literal,
    /// `'''…'''`
    MultiLiteral,
}

impl Quote {
    fn escapes(self) -> bool {
        matches!(self, Quote::Basic | Quote::MultiBasic)
    }

    fn delimiter(self) -> &'static str {
        match self {
            Quote::Basic => "\"",
            Quote::MultiBasic => "\"\"\"",
            Quote::Literal => "'",
            Quote::MultiLiteral => "'''",
        }
    }
}

/// A variable's value put into the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Substitution {
    /// The variable.
    pub name: String,
    /// Its value.
    pub value: String,
    /// 1-based line of the string it went into (where the string starts).
    pub line: usize,
}

/// The text with every reference replaced.
#[derive(Debug)]
pub(crate) struct Interpolated {
    pub text: String,
    /// Values taken from the environment (defaults are not listed: they
    /// are in the file already).
    pub substitutions: Vec<Substitution>,
}

impl Interpolated {
    /// `problems` with every value taken from the environment replaced by
    /// `${NAME}`: in problems on the line its string starts on, and in
    /// problems with no line; longest values first.
    pub(crate) fn scrub(&self, problems: Vec<Problem>) -> Vec<Problem> {
        if self.substitutions.is_empty() {
            return problems;
        }
        problems
            .into_iter()
            .map(|mut p| {
                let mut here: Vec<&Substitution> = self
                    .substitutions
                    .iter()
                    .filter(|s| !s.value.is_empty() && (p.line.is_none() || p.line == Some(s.line)))
                    .collect();
                here.sort_by_key(|s| std::cmp::Reverse(s.value.len()));
                for s in here {
                    let reference = format!("${{{}}}", s.name);
                    p.message = replace_value(&p.message, &s.value, &reference);
                    p.path = replace_value(&p.path, &s.value, &reference);
                }
                p
            })
            .collect()
    }
}

/// `text` with `value` replaced by `reference`: everywhere when the value
/// is long (8 bytes or more: a secret), else only where it stands as a
/// word of its own (a short value such as `s` is not replaced inside
/// `stream`).
fn replace_value(text: &str, value: &str, reference: &str) -> String {
    let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for (at, _) in text.match_indices(value) {
        if at < last {
            continue;
        }
        let before = text[..at].chars().next_back();
        let after = text[at + value.len()..].chars().next();
        if value.len() >= 8 || !(word(before) || word(after)) {
            out.push_str(&text[last..at]);
            out.push_str(reference);
            last = at + value.len();
        }
    }
    out.push_str(&text[last..]);
    out
}

/// Replaces the references in `text`, looking variables up with `lookup`
/// (`Err` with the reason when a set variable cannot be used, such as a
/// value that is not UTF-8). Every problem found, in file order.
pub(crate) fn interpolate(
    text: &str,
    lookup: &dyn Fn(&str) -> Result<Option<String>, String>,
) -> Result<Interpolated, Vec<Problem>> {
    let mut s = Scanner {
        text,
        at: 0,
        line: 1,
        out: String::with_capacity(text.len()),
        problems: Vec::new(),
        substitutions: Vec::new(),
        table: String::new(),
        arrays: HashMap::new(),
        key: String::new(),
        depth: 0,
        line_start: true,
        lookup,
    };
    s.run();
    if s.problems.is_empty() {
        Ok(Interpolated {
            text: s.out,
            substitutions: s.substitutions,
        })
    } else {
        Err(s.problems)
    }
}

struct Scanner<'t, 'l> {
    text: &'t str,
    /// Byte offset of the next unread byte.
    at: usize,
    /// 1-based line of `at`.
    line: usize,
    out: String,
    problems: Vec<Problem>,
    substitutions: Vec<Substitution>,
    /// The current table's path (`sources[0]`, `settings`), for problems.
    table: String,
    /// Tables of arrays seen so far, by name, and their count.
    arrays: HashMap<String, usize>,
    /// The key whose value is being read (after the table's path).
    key: String,
    /// Nesting of `[`/`{` in the current value.
    depth: usize,
    /// Whether only blanks stand before `at` on its line.
    line_start: bool,
    lookup: &'l dyn Fn(&str) -> Result<Option<String>, String>,
}

impl<'t> Scanner<'t, '_> {
    fn rest(&self) -> &'t str {
        let text: &'t str = self.text;
        &text[self.at..]
    }

    /// Copies the next `n` bytes (ASCII or whole characters) to the output.
    fn copy(&mut self, n: usize) {
        let end = (self.at + n).min(self.text.len());
        let chunk = &self.text[self.at..end];
        self.line += chunk.matches('\n').count();
        self.out.push_str(chunk);
        self.at = end;
    }

    /// The next character (none at the end).
    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn field(&self) -> String {
        match (self.table.is_empty(), self.key.is_empty()) {
            (_, true) if self.table.is_empty() => "(file)".into(),
            (_, true) => self.table.clone(),
            (true, false) => self.key.clone(),
            (false, false) => format!("{}.{}", self.table, self.key),
        }
    }

    fn problem(&mut self, line: usize, message: String) {
        self.problems.push(Problem {
            path: self.field(),
            line: Some(line),
            message,
        });
    }

    fn run(&mut self) {
        while let Some(ch) = self.peek() {
            match ch {
                '#' => self.comment(),
                '"' | '\'' => {
                    self.line_start = false;
                    self.string(ch);
                }
                '\n' => {
                    self.copy(1);
                    self.line_start = true;
                }
                '[' if self.line_start && self.depth == 0 => self.header(),
                '[' | '{' => {
                    self.depth += 1;
                    self.copy(1);
                }
                ']' | '}' => {
                    self.depth = self.depth.saturating_sub(1);
                    self.copy(1);
                }
                '$' if self.rest().starts_with("${") => {
                    let line = self.line;
                    self.problem(
                        line,
                        "`${` outside a quoted string: variables are put into strings only (write \"${NAME}\")"
                            .into(),
                    );
                    self.copy(2);
                }
                c if c.is_whitespace() => self.copy(c.len_utf8()),
                _ => {
                    if self.line_start && self.depth == 0 {
                        self.key_line();
                    } else {
                        self.line_start = false;
                        self.copy(ch.len_utf8());
                    }
                }
            }
        }
    }

    fn comment(&mut self) {
        let n = self.rest().find('\n').unwrap_or(self.rest().len());
        self.copy(n);
    }

    /// `[table]` or `[[array]]` at the start of a line: the current table.
    fn header(&mut self) {
        let line_end = self.rest().find('\n').unwrap_or(self.rest().len());
        let line = &self.rest()[..line_end];
        let array = line.starts_with("[[");
        let inner = line.trim_start_matches('[');
        let name = inner
            .split(']')
            .next()
            .unwrap_or("")
            .trim()
            .trim_matches('"')
            .to_string();
        self.table = if array {
            let n = self.arrays.entry(name.clone()).or_insert(0);
            *n += 1;
            format!("{name}[{}]", *n - 1)
        } else {
            name
        };
        self.key.clear();
        // The header's own text (a quoted name, a comment) needs nothing.
        let end = line.find('#').unwrap_or(line_end);
        self.copy(end);
        self.line_start = false;
    }

    /// A line starting with a key: `key = value`; the key is remembered
    /// for problems, the value is scanned on.
    fn key_line(&mut self) {
        let line_end = self.rest().find('\n').unwrap_or(self.rest().len());
        let line = &self.rest()[..line_end];
        match line.find('=') {
            Some(eq) if !line[..eq].contains(['"', '\'']) => {
                self.key = line[..eq].trim().to_string();
                self.copy(eq + 1);
            }
            _ => {
                let n = self.peek().map_or(1, char::len_utf8);
                self.copy(n);
            }
        }
        self.line_start = false;
    }

    /// A string opened by `quote` at `at`: copied with its references
    /// replaced.
    fn string(&mut self, quote_char: char) {
        let triple: String = std::iter::repeat_n(quote_char, 3).collect();
        let kind = match (quote_char, self.rest().starts_with(&triple)) {
            ('"', true) => Quote::MultiBasic,
            ('"', false) => Quote::Basic,
            (_, true) => Quote::MultiLiteral,
            (_, false) => Quote::Literal,
        };
        let start_line = self.line;
        self.copy(kind.delimiter().len());
        let multi = matches!(kind, Quote::MultiBasic | Quote::MultiLiteral);
        loop {
            let Some(ch) = self.peek() else { return };
            if self.rest().starts_with(kind.delimiter()) {
                self.copy(kind.delimiter().len());
                // `"""a""""`: up to two more quotes belong to the string.
                if multi {
                    let extra = self.rest().chars().take_while(|&c| c == quote_char).count();
                    self.copy(extra.min(2));
                }
                return;
            }
            match ch {
                '\n' if !multi => return,
                '\\' if kind.escapes() => {
                    let n = 1 + self.rest()[1..].chars().next().map_or(0, char::len_utf8);
                    self.copy(n);
                }
                '$' if self.rest().starts_with("$$") => {
                    self.out.push('$');
                    self.at += 2;
                }
                '$' if self.rest().starts_with("${") => self.reference(kind, start_line),
                _ => self.copy(ch.len_utf8()),
            }
        }
    }

    /// `${NAME}` or `${NAME:-default}` at `at`, inside a string of `kind`
    /// that starts on `string_line`.
    fn reference(&mut self, kind: Quote, string_line: usize) {
        let line = self.line;
        let line_end = self.rest().find('\n').unwrap_or(self.rest().len());
        let Some(close) = self.rest()[..line_end].find('}') else {
            self.problem(
                line,
                "`${` without a closing `}` on its line (write `$${` for a literal `${`)".into(),
            );
            self.copy(2);
            return;
        };
        let inner = &self.rest()[2..close];
        let (name, default) = match inner.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (inner, None),
        };
        let valid = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            let written = &self.rest()[..close + 1];
            let message = format!(
                "`{written}` is not a variable reference: write ${{NAME}} or ${{NAME:-default}}, NAME of letters, digits and _ (and $$ for a literal $)"
            );
            self.problem(line, message);
            self.at += close + 1;
            return;
        }
        let name = name.to_string();
        let default = default.map(str::to_string);
        self.at += close + 1;
        let value = match (self.lookup)(&name) {
            Ok(v) => v,
            Err(why) => {
                self.problem(line, format!("environment variable {name} {why}"));
                return;
            }
        };
        match (value, default) {
            (Some(v), d) if !(v.is_empty() && d.is_some()) => {
                if let Some(text) = self.fit(kind, &name, &v, line) {
                    self.out.push_str(&text);
                    self.substitutions.push(Substitution {
                        name,
                        value: v,
                        line: string_line,
                    });
                }
            }
            (_, Some(d)) => self.out.push_str(&d),
            (_, None) => self.problem(
                line,
                format!(
                    "environment variable {name} is not set (set it, or give a default: ${{{name}:-default}})"
                ),
            ),
        }
    }

    /// The value as text of a string of `kind`: escaped in basic strings;
    /// in literal strings as it is, when it can be.
    fn fit(&mut self, kind: Quote, name: &str, value: &str, line: usize) -> Option<String> {
        if kind.escapes() {
            let mut out = String::with_capacity(value.len());
            for c in value.chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    '\t' => out.push_str("\\t"),
                    '\r' => out.push_str("\\r"),
                    c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
                    c => out.push(c),
                }
            }
            return Some(out);
        }
        let unfit = if value.contains('\'') {
            Some("a '")
        } else if value.contains(['\n', '\r']) {
            Some("a line break")
        } else if value.chars().any(|c| c.is_control() && c != '\t') {
            Some("a control character")
        } else {
            None
        };
        match unfit {
            None => Some(value.to_string()),
            Some(what) => {
                self.problem(
                    line,
                    format!(
                        "the value of environment variable {name} contains {what}, which a literal '…' string cannot hold: use a \"…\" string"
                    ),
                );
                None
            }
        }
    }
}

/// Looks a variable up in the process environment.
pub(crate) fn from_environment(name: &str) -> Result<Option<String>, String> {
    match std::env::var(name) {
        Ok(v) => Ok(Some(v)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err("is not valid UTF-8".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `text` interpolated with these variables.
    fn with(vars: &[(&str, &str)], text: &str) -> Result<Interpolated, Vec<Problem>> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        interpolate(text, &|name| Ok(vars.get(name).cloned()))
    }

    fn text(vars: &[(&str, &str)], text: &str) -> String {
        with(vars, text).unwrap_or_else(|p| panic!("{p:?}")).text
    }

    #[test]
    fn references_are_replaced_inside_strings() {
        let vars = [("DIR", "/data"), ("EMPTY", ""), ("Q", "a\"b\\c\nd")];
        let cases = [
            ("path = \"${DIR}/in.jsonl\"", "path = \"/data/in.jsonl\""),
            ("path = '${DIR}/in.jsonl'", "path = '/data/in.jsonl'"),
            ("p = \"\"\"\n${DIR}\"\"\"", "p = \"\"\"\n/data\"\"\""),
            ("p = '''${DIR}'''", "p = '''/data'''"),
            ("p = \"${UNSET:-/tmp}\"", "p = \"/tmp\""),
            ("p = \"${EMPTY:-x}\"", "p = \"x\""),
            ("p = \"${EMPTY}\"", "p = \"\""),
            ("p = \"${DIR:-x}\"", "p = \"/data\""),
            ("p = \"${UNSET:-}\"", "p = \"\""),
            ("p = \"${UNSET:-a\\\\b}\"", "p = \"a\\\\b\""),
            // Escaped: the value is the string's content, nothing more.
            ("p = \"${Q}\"", "p = \"a\\\"b\\\\c\\nd\""),
            (
                "p = \"$$5 and $${DIR} and $ alone\"",
                "p = \"$5 and ${DIR} and $ alone\"",
            ),
            ("p = \"\\\"${DIR}\"", "p = \"\\\"/data\""),
            (
                "# ${UNSET} in a comment\np = 1",
                "# ${UNSET} in a comment\np = 1",
            ),
            ("p = \"#${DIR}\" # ${UNSET}", "p = \"#/data\" # ${UNSET}"),
            ("t = { \"${DIR}\" = 1 }", "t = { \"/data\" = 1 }"),
            (
                "s = \"\"\"a\"\"\"\" # ${UNSET}",
                "s = \"\"\"a\"\"\"\" # ${UNSET}",
            ),
        ];
        for (from, to) in cases {
            assert_eq!(text(&vars, from), to, "{from}");
        }
        // The value makes a TOML string of exactly itself.
        let t: toml::Table = toml::from_str(&text(&vars, "p = \"${Q}\"")).expect("toml");
        assert_eq!(t["p"].as_str(), Some("a\"b\\c\nd"));
    }

    #[test]
    fn problems_name_the_variable_and_line() {
        let text = "name = \"x\"\n\n[[sources]]\nname = \"s\"\npath = \"${DATA_DIR}/in\"\n\n[[steps]]\nname = \"d\"\n\n[[steps]]\nwhere = \"a > ${LIMIT\"\nkey = \"${1X}\"\nq = '${QUOTE}'\nn = ${N}\n\n[settings]\nbatch_rows = \"${ROWS}\"";
        let problems = with(&[("QUOTE", "it's")], text).expect_err("problems");
        let want = [
            ("sources[0].path", 5, "environment variable DATA_DIR is not set (set it, or give a default: ${DATA_DIR:-default})"),
            ("steps[1].where", 11, "`${` without a closing `}` on its line (write `$${` for a literal `${`)"),
            ("steps[1].key", 12, "`${1X}` is not a variable reference: write ${NAME} or ${NAME:-default}, NAME of letters, digits and _ (and $$ for a literal $)"),
            ("steps[1].q", 13, "the value of environment variable QUOTE contains a ', which a literal '…' string cannot hold: use a \"…\" string"),
            ("steps[1].n", 14, "`${` outside a quoted string: variables are put into strings only (write \"${NAME}\")"),
            ("settings.batch_rows", 17, "environment variable ROWS is not set (set it, or give a default: ${ROWS:-default})"),
        ];
        let got: Vec<(&str, usize, &str)> = problems
            .iter()
            .map(|p| (p.path.as_str(), p.line.unwrap_or(0), p.message.as_str()))
            .collect();
        assert_eq!(got, want);
        // The value of QUOTE is not in any problem.
        assert!(problems.iter().all(|p| !p.message.contains("it's")));
    }

    #[test]
    fn values_that_cannot_be_read_are_problems() {
        let problems = interpolate("p = \"${BAD}\"", &|_| Err("is not valid UTF-8".into()))
            .expect_err("problem");
        assert_eq!(
            problems[0].message,
            "environment variable BAD is not valid UTF-8"
        );
        assert_eq!(problems[0].path, "p");
    }

    #[test]
    fn scrub_replaces_values_on_their_line() {
        let done = with(
            &[("PW", "hunter2-secret"), ("S", "s"), ("USER", "bob")],
            "a = \"${PW}\"\nb = \"${S}\"\nc = \"${USER}\"",
        )
        .expect("ok");
        let problem = |line: Option<usize>, message: &str| Problem {
            path: "p".into(),
            line,
            message: message.into(),
        };
        let problems = vec![
            problem(Some(1), "\"x:hunter2-secretx\" is not a URL"),
            problem(Some(2), "stream \"s\" is bad"),
            problem(Some(3), "user \"bob\" (not bobby)"),
            problem(Some(4), "hunter2-secret and s stay"),
            problem(None, "hunter2-secret"),
        ];
        let scrubbed = done.scrub(problems);
        let messages: Vec<&str> = scrubbed.iter().map(|p| p.message.as_str()).collect();
        assert_eq!(
            messages,
            [
                "\"x:${PW}x\" is not a URL",
                "stream \"${S}\" is bad",
                "user \"${USER}\" (not bobby)",
                "hunter2-secret and s stay",
                "${PW}"
            ]
        );
    }

    #[test]
    fn no_input_panics() {
        for t in [
            "\"${",
            "'${X",
            "\"\"\"${X}",
            "\"\\",
            "[",
            "[[",
            "${",
            "\"$",
            "a = \"${X:-",
            "é = \"${É}\"",
            "\"${X}é\"",
        ] {
            let _ = with(&[("X", "é")], t);
        }
    }
}
