//! Resolving column names against the schema, with helpful messages for
//! names that do not exist.

use super::{err, Checker};
use crate::error::ExprError;
use crate::plan::Plan;
use crate::types::{sql_type_name, Ty};

impl Checker<'_> {
    pub(super) fn column(&mut self, name: &str, position: usize) -> Result<Plan, ExprError> {
        let fields = self.schema.fields();
        let Some(index) = fields.iter().position(|f| f.name() == name) else {
            // Names starting with `__` are the engine's bookkeeping columns,
            // not offered to users.
            let names: Vec<&str> = fields
                .iter()
                .map(|f| f.name().as_str())
                .filter(|n| !n.starts_with("__"))
                .collect();
            let hint = names
                .iter()
                .find(|n| n.eq_ignore_ascii_case(name))
                .or_else(|| {
                    names
                        .iter()
                        .map(|n| (levenshtein(n, name), n))
                        .filter(|(d, _)| *d <= 2.max(name.chars().count() / 4))
                        .min_by_key(|(d, _)| *d)
                        .map(|(_, n)| n)
                })
                .map(|n| format!("; did you mean \"{n}\"?"))
                .unwrap_or_default();
            let available = if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            };
            return Err(ExprError::UnknownColumn {
                name: name.to_string(),
                available,
                hint,
                position: Some(position),
            });
        };
        let dt = fields[index].data_type();
        let ty = Ty::from_arrow(dt).ok_or_else(|| {
            err(
                format!(
                    "column \"{name}\" has unsupported type {} ({dt}); supported are BOOLEAN, \
                     integer, floating point and VARCHAR (Utf8) columns",
                    sql_type_name(dt)
                ),
                position,
            )
        })?;
        if !self.indices.contains(&index) {
            self.indices.push(index);
            self.columns.push(name.to_string());
        }
        Ok(Plan::Column { index, ty })
    }
}

/// Edit distance, for "did you mean" hints.
fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::levenshtein;

    #[test]
    fn edit_distance() {
        assert_eq!(levenshtein("amout_cents", "amount_cents"), 1);
        assert_eq!(levenshtein("", "abc"), 3);
        assert_eq!(levenshtein("kitten", "sitting"), 3);
    }
}
