//! The SQL the sink sends: column types from Arrow types, quoted names, the
//! `CREATE TABLE` and the batched upsert, and what an existing column may
//! be to receive a column's values.
//!
//! Names are quoted, so they are used exactly as written (case included):
//! `table = "Events"` is the table `"Events"`, not `events`.

use arrow_schema::DataType;
use postgres::types::Type;

/// The Arrow types the sink writes, each with its SQL column type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ColumnKind {
    Boolean,
    Int32,
    Int64,
    UInt32,
    UInt64,
    Float32,
    Float64,
    Utf8,
}

impl ColumnKind {
    /// The kind for an Arrow type, if the sink writes it.
    pub(crate) fn of(data_type: &DataType) -> Option<ColumnKind> {
        Some(match data_type {
            DataType::Boolean => ColumnKind::Boolean,
            DataType::Int32 => ColumnKind::Int32,
            DataType::Int64 => ColumnKind::Int64,
            DataType::UInt32 => ColumnKind::UInt32,
            DataType::UInt64 => ColumnKind::UInt64,
            DataType::Float32 => ColumnKind::Float32,
            DataType::Float64 => ColumnKind::Float64,
            DataType::Utf8 => ColumnKind::Utf8,
            _ => return None,
        })
    }

    /// The Arrow type, for messages.
    pub(crate) fn arrow_name(self) -> &'static str {
        match self {
            ColumnKind::Boolean => "Boolean",
            ColumnKind::Int32 => "Int32",
            ColumnKind::Int64 => "Int64",
            ColumnKind::UInt32 => "UInt32",
            ColumnKind::UInt64 => "UInt64",
            ColumnKind::Float32 => "Float32",
            ColumnKind::Float64 => "Float64",
            ColumnKind::Utf8 => "Utf8",
        }
    }

    /// The column type of a created table. Unsigned types take the next
    /// wider signed type: PostgreSQL has none.
    pub(crate) fn column_type(self) -> &'static str {
        match self {
            ColumnKind::Boolean => "BOOLEAN",
            ColumnKind::Int32 => "INTEGER",
            ColumnKind::Int64 | ColumnKind::UInt32 => "BIGINT",
            ColumnKind::UInt64 => "NUMERIC(20)",
            ColumnKind::Float32 => "REAL",
            ColumnKind::Float64 => "DOUBLE PRECISION",
            ColumnKind::Utf8 => "TEXT",
        }
    }

    /// The element type the column is bound as (the upsert's array cast).
    pub(crate) fn bind_type(self) -> Type {
        match self {
            ColumnKind::Boolean => Type::BOOL,
            ColumnKind::Int32 => Type::INT4,
            ColumnKind::Int64 | ColumnKind::UInt32 => Type::INT8,
            ColumnKind::UInt64 => Type::NUMERIC,
            ColumnKind::Float32 => Type::FLOAT4,
            ColumnKind::Float64 => Type::FLOAT8,
            ColumnKind::Utf8 => Type::TEXT,
        }
    }

    /// Whether an existing column of type `oid` (with modifier `typmod`)
    /// holds every value of this kind without loss: the same type, or a
    /// wider one (a `NUMERIC` with room for the integer digits, `VARCHAR`
    /// for text; a `VARCHAR(n)` rejects longer values at write time).
    pub(crate) fn fits(self, oid: u32, typmod: i32) -> bool {
        let numeric = |digits| oid == Type::NUMERIC.oid() && numeric_holds_integers(typmod, digits);
        match self {
            ColumnKind::Boolean => oid == Type::BOOL.oid(),
            ColumnKind::Int32 => oid == Type::INT4.oid() || oid == Type::INT8.oid() || numeric(10),
            ColumnKind::Int64 => oid == Type::INT8.oid() || numeric(19),
            ColumnKind::UInt32 => oid == Type::INT8.oid() || numeric(10),
            ColumnKind::UInt64 => numeric(20),
            ColumnKind::Float32 => oid == Type::FLOAT4.oid() || oid == Type::FLOAT8.oid(),
            ColumnKind::Float64 => oid == Type::FLOAT8.oid(),
            ColumnKind::Utf8 => oid == Type::TEXT.oid() || oid == Type::VARCHAR.oid(),
        }
    }
}

/// Whether a `NUMERIC` column with modifier `typmod` holds every integer of
/// `digits` decimal digits: unconstrained (-1), or precision minus scale at
/// least `digits`. The modifier is `((precision << 16) | scale) + 4`, the
/// scale an 11-bit signed number (negative scales exist since 15).
pub(crate) fn numeric_holds_integers(typmod: i32, digits: i32) -> bool {
    if typmod < 4 {
        return typmod == -1;
    }
    let packed = typmod - 4;
    let precision = (packed >> 16) & 0xffff;
    let scale = ((packed & 0x7ff) ^ 0x400) - 0x400;
    precision - scale >= digits
}

/// A name quoted as an SQL identifier.
pub(crate) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `table` or `schema.table`, quoted part by part.
pub(crate) fn quote_table(table: &str) -> Result<String, String> {
    let parts: Vec<&str> = table.split('.').collect();
    if parts.len() > 2 || parts.iter().any(|p| p.is_empty()) {
        return Err(format!(
            "table name {table:?} is not `table` or `schema.table`"
        ));
    }
    Ok(parts
        .iter()
        .map(|p| quote_ident(p))
        .collect::<Vec<_>>()
        .join("."))
}

/// `CREATE TABLE IF NOT EXISTS` with `_id` as primary key.
pub(crate) fn create_table(table: &str, columns: &[(&str, ColumnKind)]) -> String {
    let mut sql = format!("CREATE TABLE IF NOT EXISTS {table} (\"_id\" NUMERIC(20) PRIMARY KEY");
    for (name, kind) in columns {
        sql.push_str(", ");
        sql.push_str(&quote_ident(name));
        sql.push(' ');
        sql.push_str(kind.column_type());
    }
    sql.push(')');
    sql
}

/// The batched upsert: every column bound as one array and unnested, so a
/// batch is one statement. A row whose values are all unchanged is not
/// rewritten (`WHERE … IS DISTINCT FROM`): a replay writes nothing.
pub(crate) fn upsert(table: &str, columns: &[(&str, ColumnKind)]) -> String {
    let names: Vec<String> = columns.iter().map(|(n, _)| quote_ident(n)).collect();
    let mut sql = format!("INSERT INTO {table} AS target (\"_id\"");
    for n in &names {
        sql.push_str(", ");
        sql.push_str(n);
    }
    sql.push_str(") SELECT * FROM UNNEST($1::numeric[]");
    for (i, (_, kind)) in columns.iter().enumerate() {
        sql.push_str(&format!(", ${}::{}[]", i + 2, kind.bind_type().name()));
    }
    sql.push_str(") ON CONFLICT (\"_id\") DO ");
    if names.is_empty() {
        sql.push_str("NOTHING");
        return sql;
    }
    let set: Vec<String> = names
        .iter()
        .map(|n| format!("{n} = EXCLUDED.{n}"))
        .collect();
    let old: Vec<String> = names.iter().map(|n| format!("target.{n}")).collect();
    let new: Vec<String> = names.iter().map(|n| format!("EXCLUDED.{n}")).collect();
    // ROW(...) so that a single column compares as a row too.
    sql.push_str(&format!(
        "UPDATE SET {} WHERE ROW({}) IS DISTINCT FROM ROW({})",
        set.join(", "),
        old.join(", "),
        new.join(", ")
    ));
    sql
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_quoted_exactly() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_table("s.Events").unwrap(), "\"s\".\"Events\"");
        assert_eq!(quote_table("t").unwrap(), "\"t\"");
        assert!(quote_table("a.b.c").is_err());
        assert!(quote_table("a.").is_err());
    }

    #[test]
    fn statements() {
        let cols = [("n", ColumnKind::Int64), ("s", ColumnKind::Utf8)];
        assert_eq!(
            create_table("\"t\"", &cols),
            "CREATE TABLE IF NOT EXISTS \"t\" (\"_id\" NUMERIC(20) PRIMARY KEY, \"n\" BIGINT, \"s\" TEXT)"
        );
        assert_eq!(
            upsert("\"t\"", &cols),
            "INSERT INTO \"t\" AS target (\"_id\", \"n\", \"s\") \
             SELECT * FROM UNNEST($1::numeric[], $2::int8[], $3::text[]) \
             ON CONFLICT (\"_id\") DO UPDATE SET \"n\" = EXCLUDED.\"n\", \"s\" = EXCLUDED.\"s\" \
             WHERE ROW(target.\"n\", target.\"s\") IS DISTINCT FROM ROW(EXCLUDED.\"n\", EXCLUDED.\"s\")"
        );
        assert_eq!(
            upsert("\"t\"", &[]),
            "INSERT INTO \"t\" AS target (\"_id\") SELECT * FROM UNNEST($1::numeric[]) \
             ON CONFLICT (\"_id\") DO NOTHING"
        );
    }

    #[test]
    fn numeric_modifiers() {
        let typmod = |p: i32, s: i32| ((p << 16) | (s & 0x7ff)) + 4;
        assert!(numeric_holds_integers(-1, 20));
        assert!(numeric_holds_integers(typmod(20, 0), 20));
        assert!(!numeric_holds_integers(typmod(20, 1), 20));
        assert!(numeric_holds_integers(typmod(25, 5), 20));
        assert!(numeric_holds_integers(typmod(18, -2), 20));
        assert!(!numeric_holds_integers(typmod(19, 0), 20));
    }
}
