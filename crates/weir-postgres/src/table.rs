//! Making sure the table can take the sink's rows before the first batch:
//! created when allowed and missing, otherwise checked, so that a wrong
//! table is reported at start with what is wrong rather than as a failed
//! write later.

use postgres::Client;
use weir_connect::ConnectError;

use crate::sink::describe;
use crate::sql::{self, ColumnKind};

/// What the sink knows about its table.
pub(crate) struct TableSpec<'a> {
    /// As configured, for messages.
    pub(crate) name: &'a str,
    /// Quoted for SQL.
    pub(crate) quoted: &'a str,
    /// The sink's columns (without `_id`).
    pub(crate) columns: &'a [(&'a str, ColumnKind)],
    pub(crate) create: bool,
    /// `host:port/database`, for messages.
    pub(crate) address: &'a str,
}

/// One column of the existing table.
struct ExistingColumn {
    name: String,
    type_oid: u32,
    typmod: i32,
    type_name: String,
    /// NOT NULL without a default: every insert must give it.
    required: bool,
}

/// Creates the table if allowed and missing, then checks that it has `_id`
/// as its primary key (or alone under a unique index) and every column
/// with a type that holds the column's values.
pub(crate) fn ensure(client: &mut Client, spec: &TableSpec<'_>) -> Result<(), ConnectError> {
    let broker = |doing: &str, e: postgres::Error| ConnectError::Broker {
        address: spec.address.to_string(),
        message: format!("{doing} table {}: {}", spec.name, describe(&e)),
    };
    if spec.create {
        client
            .batch_execute(&sql::create_table(spec.quoted, spec.columns))
            .map_err(|e| broker("creating", e))?;
    }
    let relation = client
        .query_opt(
            "SELECT c.oid, c.relkind::text FROM pg_class c WHERE c.oid = to_regclass($1::text)",
            &[&spec.quoted],
        )
        .map_err(|e| broker("looking up", e))?;
    let Some(relation) = relation else {
        return Err(ConnectError::Config(format!(
            "table {} does not exist in {} (create_table is false)",
            spec.name, spec.address
        )));
    };
    let oid: u32 = relation.get(0);
    let relkind: String = relation.get(1);
    // r: table, p: partitioned table.
    if relkind != "r" && relkind != "p" {
        return Err(ConnectError::Config(format!(
            "{} in {} is not a table (relkind {relkind})",
            spec.name, spec.address
        )));
    }
    let existing: Vec<ExistingColumn> = client
        .query(
            "SELECT attname::text, atttypid, atttypmod, format_type(atttypid, atttypmod), \
                    attnotnull AND NOT atthasdef AND attidentity = '' AND attgenerated = '' \
             FROM pg_attribute WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped \
             ORDER BY attnum",
            &[&oid],
        )
        .map_err(|e| broker("reading the columns of", e))?
        .iter()
        .map(|r| ExistingColumn {
            name: r.get(0),
            type_oid: r.get(1),
            typmod: r.get(2),
            type_name: r.get(3),
            required: r.get(4),
        })
        .collect();
    // ON CONFLICT ("_id") needs a unique index on exactly `_id`: not
    // partial, not on an expression, not deferrable.
    let id_is_unique: bool = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_index i JOIN pg_attribute a \
                 ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] \
             WHERE i.indrelid = $1 AND i.indisunique AND i.indimmediate AND i.indisvalid \
               AND i.indnkeyatts = 1 AND i.indpred IS NULL AND i.indexprs IS NULL \
               AND a.attname = '_id')",
            &[&oid],
        )
        .map_err(|e| broker("reading the indexes of", e))?
        .get(0);

    let problems = problems(spec, &existing, id_is_unique);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ConnectError::Config(format!(
            "table {} in {} cannot take the sink's rows: {}",
            spec.name,
            spec.address,
            problems.join("; ")
        )))
    }
}

/// Everything wrong with the existing table, in words.
fn problems(spec: &TableSpec<'_>, existing: &[ExistingColumn], id_is_unique: bool) -> Vec<String> {
    let find = |name: &str| existing.iter().find(|c| c.name == name);
    let mut problems = Vec::new();
    match find("_id") {
        None => problems.push("no column \"_id\" (NUMERIC(20) PRIMARY KEY)".to_string()),
        Some(c) => {
            if !ColumnKind::UInt64.fits(c.type_oid, c.typmod) {
                problems.push(format!(
                    "column \"_id\" is {}, which cannot hold every output id (use NUMERIC(20))",
                    c.type_name
                ));
            }
            if !id_is_unique {
                problems.push(
                    "column \"_id\" is not the primary key (nor alone under a unique index), \
                     which the upsert needs"
                        .to_string(),
                );
            }
        }
    }
    for (name, kind) in spec.columns {
        match find(name) {
            None => problems.push(format!(
                "no column {} ({} for {} values)",
                sql::quote_ident(name),
                kind.column_type(),
                kind.arrow_name()
            )),
            Some(c) if !kind.fits(c.type_oid, c.typmod) => problems.push(format!(
                "column {} is {}, which cannot hold {} values (use {})",
                sql::quote_ident(name),
                c.type_name,
                kind.arrow_name(),
                kind.column_type()
            )),
            Some(_) => {}
        }
    }
    for c in existing {
        if c.required && c.name != "_id" && !spec.columns.iter().any(|(n, _)| *n == c.name) {
            problems.push(format!(
                "column {} is NOT NULL without a default, and the sink does not write it",
                sql::quote_ident(&c.name)
            ));
        }
    }
    problems
}
