//! Shared by the engine's test files.

/// A sink line less its last field, the output id `_id` (checked to be
/// there): these tests compare the rest; tests/sinks.rs and the recovery
/// tests check the ids themselves.
pub fn without_id(line: &str) -> String {
    let at = line
        .rfind(",\"_id\":")
        .or_else(|| line.rfind("\"_id\":"))
        .unwrap_or_else(|| panic!("sink record without _id: {line}"));
    format!("{}}}", &line[..at])
}
