//! Validation errors that point at the offending place in the pipeline file.
//!
//! Every problem carries the field path (`steps[2].where`) and, when it can
//! be found, the 1-based line in the file, so `weir validate` can print
//! `pipeline.toml:14: steps[2].where: unknown column "amout"`.

use std::fmt;

/// One thing wrong with a pipeline file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted path of the field, e.g. `steps[2].where`.
    pub path: String,
    /// 1-based line in the file, when known.
    pub line: Option<usize>,
    /// What is wrong and, where useful, what was expected.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "line {line}: {}: {}", self.path, self.message),
            None => write!(f, "{}: {}", self.path, self.message),
        }
    }
}

impl Problem {
    /// `file:line: path: message`, the form compilers use.
    pub fn located(&self, file: &str) -> String {
        match self.line {
            Some(line) => format!("  {file}:{line}: {}: {}", self.path, self.message),
            None => format!("  {file}: {}: {}", self.path, self.message),
        }
    }
}

/// Why a pipeline file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read pipeline file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The operating system's words.
        source: std::io::Error,
    },
    /// The file was read but is not a valid pipeline.
    #[error("{} is not a valid pipeline ({} problem{}):\n{}", .file, .problems.len(),
        if .problems.len() == 1 { "" } else { "s" },
        .problems.iter().map(|p| p.located(.file)).collect::<Vec<_>>().join("\n"))]
    Invalid {
        /// The file, as given.
        file: String,
        /// Every problem found, in file order.
        problems: Vec<Problem>,
    },
}

impl ConfigError {
    /// The problems found, empty for I/O errors.
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Io { .. } => &[],
            ConfigError::Invalid { problems, .. } => problems,
        }
    }
}

/// Maps byte offsets in the source text to 1-based lines.
#[derive(Debug, Clone)]
pub(crate) struct LineIndex<'a> {
    src: &'a str,
}

impl<'a> LineIndex<'a> {
    pub(crate) fn new(src: &'a str) -> Self {
        LineIndex { src }
    }

    /// Line of a byte offset.
    pub(crate) fn line(&self, offset: usize) -> usize {
        let end = offset.min(self.src.len());
        self.src.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    /// The text of the table whose span is `span`, without its `[header]`
    /// line, up to the next header; with the line its text starts on.
    pub(crate) fn section(&self, span: &std::ops::Range<usize>) -> Option<(&'a str, usize)> {
        let mut start = span.start.min(self.src.len());
        if self.src[start..].trim_start().starts_with('[') {
            start += self.src[start..].find('\n')? + 1;
        }
        let mut end = self.src.len();
        let mut offset = start;
        for line in self.src[start..].split_inclusive('\n') {
            if line.trim_start().starts_with('[')
                && !line.trim_start().starts_with("[ ")
                && offset >= span.end.min(end)
            {
                end = offset;
                break;
            }
            offset += line.len();
        }
        Some((&self.src[start..end], self.line(start)))
    }

    /// Line on which `key` is assigned inside the byte range `span`, falling
    /// back to the first line of the range. Tables parsed through serde lose
    /// per-key positions, so the key is found again in the text.
    pub(crate) fn key_line(&self, span: &std::ops::Range<usize>, key: &str) -> usize {
        // A table's span may cover only its `[[header]]`: search on to the
        // next table header.
        let start = span.start.min(self.src.len());
        let mut offset = start;
        for (i, line) in self.src[start..].split_inclusive('\n').enumerate() {
            let trimmed = line.trim_start();
            if i > 0 && offset >= span.end && trimmed.starts_with('[') {
                break;
            }
            if !key.is_empty() {
                if let Some(rest) = trimmed.strip_prefix(key) {
                    let rest = rest.trim_start();
                    if rest.starts_with('=') || rest.starts_with('.') {
                        return self.line(offset);
                    }
                }
            }
            offset += line.len();
        }
        // Keys of inline tables (`aggregates = { win_max = "..." }`) are not
        // at the start of a line.
        if !key.is_empty() {
            let mut offset = start;
            for (i, line) in self.src[start..].split_inclusive('\n').enumerate() {
                if i > 0 && offset >= span.end && line.trim_start().starts_with('[') {
                    break;
                }
                let found = line.match_indices(key).any(|(at, _)| {
                    let before = line[..at].chars().next_back();
                    let after = line[at + key.len()..].trim_start();
                    matches!(before, Some(' ' | '{' | ',' | '\t')) && after.starts_with('=')
                });
                if found {
                    return self.line(offset);
                }
                offset += line.len();
            }
        }
        self.line(start)
    }
}
