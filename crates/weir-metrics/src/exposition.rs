//! The Prometheus text exposition (format 0.0.4) as its readers in weir
//! (`weir top`, the scaler) parse it: samples with their labels, and the
//! lookups they need.
//!
//! The parser is this module's own, about a hundred lines: label values are
//! free text (step, sink and pipeline names), and the parser crates fall
//! short on them or on the build. `prometheus-parse` splits labels on `,`
//! and `=` without honouring quotes or escapes (the test
//! `prometheus_parse_splits_quoted_label_values` shows it), and the others
//! that parse correctly are LGPL-licensed or unmaintained;
//! docs/ARCHITECTURE.md has the details.

pub mod histogram;

use histogram::Histogram;

/// One sample line of the exposition.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    /// Sorted by label name.
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, name: &str) -> Option<&str> {
        label(&self.labels, name)
    }
}

pub fn label<'a>(labels: &'a [(String, String)], name: &str) -> Option<&'a str> {
    labels
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// A parsed Prometheus text exposition (format 0.0.4).
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    pub samples: Vec<Sample>,
}

impl Scrape {
    /// Parses exposition text; lines that are not valid samples
    /// (comments, `# TYPE`, garbage) are skipped.
    pub fn parse(text: &str) -> Scrape {
        let samples = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .filter_map(parse_sample)
            .collect();
        Scrape { samples }
    }

    pub fn named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| s.name == name)
    }

    /// The sample of `name` with exactly `labels`.
    pub fn exact(&self, name: &str, labels: &[(String, String)]) -> Option<f64> {
        self.named(name)
            .find(|s| s.labels == labels)
            .map(|s| s.value)
    }

    /// The first sample of `name` whose labels include `want`.
    pub fn value(&self, name: &str, want: &[(&str, &str)]) -> Option<f64> {
        self.named(name)
            .find(|s| want.iter().all(|(k, v)| s.label(k) == Some(*v)))
            .map(|s| s.value)
    }

    /// Distinct values of label `key` on `name`, in order of appearance.
    pub fn label_values(&self, name: &str, key: &str) -> Vec<String> {
        let mut seen = Vec::new();
        for s in self.named(name) {
            if let Some(v) = s.label(key) {
                if !seen.iter().any(|x: &String| x == v) {
                    seen.push(v.to_string());
                }
            }
        }
        seen
    }

    /// The histograms of family `base`, by label set (without `le`), in
    /// order of appearance.
    pub fn histograms(&self, base: &str) -> Vec<(Vec<(String, String)>, Histogram)> {
        let bucket_name = format!("{base}_bucket");
        let mut out: Vec<(Vec<(String, String)>, Histogram)> = Vec::new();
        for s in self.named(&bucket_name) {
            let Some(le) = s.label("le").and_then(parse_float) else {
                continue;
            };
            let labels: Vec<(String, String)> = s
                .labels
                .iter()
                .filter(|(k, _)| k != "le")
                .cloned()
                .collect();
            let i = match out.iter().position(|(l, _)| *l == labels) {
                Some(i) => i,
                None => {
                    out.push((labels, Histogram::default()));
                    out.len() - 1
                }
            };
            out[i].1.buckets.push((le, s.value));
        }
        let count_name = format!("{base}_count");
        let sum_name = format!("{base}_sum");
        for (labels, h) in &mut out {
            h.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            h.count = self.exact(&count_name, labels);
            h.sum = self.exact(&sum_name, labels);
        }
        out
    }

    /// The histogram of `base` whose labels include `want`.
    pub fn histogram(&self, base: &str, want: &[(&str, &str)]) -> Option<Histogram> {
        self.histograms(base)
            .into_iter()
            .find(|(l, _)| want.iter().all(|(k, v)| label(l, k) == Some(*v)))
            .map(|(_, h)| h)
    }
}

/// Parses `name{label="value",...} value [timestamp]`.
fn parse_sample(line: &str) -> Option<Sample> {
    let end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(line.len());
    let name = &line[..end];
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    let mut rest = line[end..].trim_start();
    let mut labels = Vec::new();
    if let Some(r) = rest.strip_prefix('{') {
        let (l, r) = parse_labels(r)?;
        labels = l;
        rest = r;
    }
    let value = parse_float(rest.split_whitespace().next()?)?;
    labels.sort();
    Some(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// Parses the labels after `{`; returns them and the text after `}`.
fn parse_labels(mut rest: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut labels = Vec::new();
    loop {
        rest = rest.trim_start();
        if let Some(r) = rest.strip_prefix('}') {
            return Some((labels, r));
        }
        let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))?;
        let key = &rest[..end];
        if key.is_empty() {
            return None;
        }
        rest = rest[end..]
            .trim_start()
            .strip_prefix('=')?
            .trim_start()
            .strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let close = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (_, c) => value.push(c),
            }
        };
        rest = rest[close + 1..].trim_start();
        labels.push((key.to_string(), value));
        if let Some(r) = rest.strip_prefix(',') {
            rest = r;
        } else if !rest.starts_with('}') {
            return None;
        }
    }
}

/// Parses a sample value: a float, `+Inf`, `-Inf` or `NaN`.
fn parse_float(text: &str) -> Option<f64> {
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_samples_labels_escapes_and_special_values() {
        let s = Scrape::parse(
            "# HELP x a help line\n\
             x 1\n\
             y{a=\"1\",b=\"two, with = and } inside\"} 2.5 1700000000000\n\
             z{ b = \"q\\\"uote\\\\ \\n\" , a=\"\",} +Inf\n\
             w NaN\n\
             v{le=\"-Inf\"} -Inf\n\
             broken{a=\"1\" 3\n\
             also broken\n\
             {a=\"1\"} 3\n",
        );
        let names: Vec<&str> = s.samples.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["x", "y", "z", "w", "v"]);
        assert_eq!(s.samples[0].value, 1.0);
        assert!(s.samples[0].labels.is_empty());
        assert_eq!(s.samples[1].label("b"), Some("two, with = and } inside"));
        assert_eq!(s.samples[1].value, 2.5);
        assert_eq!(s.samples[2].label("b"), Some("q\"uote\\ \n"));
        assert_eq!(s.samples[2].label("a"), Some(""));
        assert_eq!(s.samples[2].labels[0].0, "a", "labels sorted");
        assert_eq!(s.samples[2].value, f64::INFINITY);
        assert!(s.samples[3].value.is_nan());
        assert_eq!(s.samples[4].value, f64::NEG_INFINITY);
    }

    /// Label values holding `,`, `=`, `"`, `\\` and `}`, as step and
    /// pipeline names may.
    const HARD_LABELS: &str =
        "records_total{pipeline=\"a, b=c\",step=\"say \\\"hi\\\" \\\\ x\"} 7\n\
                               records_total{step=\"{x}\"} 8\n";

    #[test]
    fn label_values_keep_commas_equals_quotes_backslashes_and_braces() {
        let s = Scrape::parse(HARD_LABELS);
        assert_eq!(s.samples.len(), 2);
        assert_eq!(s.samples[0].label("pipeline"), Some("a, b=c"));
        assert_eq!(s.samples[0].label("step"), Some("say \"hi\" \\ x"));
        assert_eq!(s.samples[0].value, 7.0);
        assert_eq!(s.samples[1].label("step"), Some("{x}"));
        assert_eq!(s.samples[1].value, 8.0);
    }

    /// Why the parser above is not `prometheus-parse` (0.2): it cuts label
    /// values at `,` and `=`, keeps escapes as they are, and drops a sample
    /// with a `}` in a label value. Should this fail after an upgrade, the
    /// crate has learnt quoting and could replace the parser.
    #[test]
    fn prometheus_parse_splits_quoted_label_values() {
        let lines = HARD_LABELS.lines().map(|l| Ok(l.trim().to_string()));
        let parsed = prometheus_parse::Scrape::parse(lines).expect("parses");
        assert_eq!(parsed.samples.len(), 1, "the sample with {{x}} is dropped");
        let labels = &parsed.samples[0].labels;
        assert_ne!(labels.get("pipeline"), Some("a, b=c"), "{labels:?}");
        assert_ne!(labels.get("step"), Some("say \"hi\" \\ x"), "{labels:?}");
    }
}
