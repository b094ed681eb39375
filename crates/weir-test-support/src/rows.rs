//! Output batches owned by a test and lent to a sink connector as the
//! engine lends them: an Arrow batch, the columns written, each row's id
//! and each row as a JSON line.

use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch, UInt64Array};
use weir_connect::Output;

/// An output batch owned by the test, lent as an [`Output`].
pub struct Rows {
    batch: RecordBatch,
    columns: Vec<String>,
    ids: Vec<u64>,
    json: Vec<u8>,
    ends: Vec<usize>,
}

/// The JSON row [`Rows::new`] writes for `id`.
pub fn row_json(id: u64) -> String {
    format!("{{\"_id\":{id},\"v\":\"row-{id}\"}}")
}

impl Rows {
    /// One row per id: a single UInt64 column `_id`, each row's JSON
    /// [`row_json`].
    pub fn new(ids: impl IntoIterator<Item = u64>) -> Rows {
        let ids: Vec<u64> = ids.into_iter().collect();
        let column: ArrayRef = Arc::new(UInt64Array::from(ids.clone()));
        let batch = RecordBatch::try_from_iter([("_id", column)]).expect("an _id batch");
        let json = ids.iter().map(|&id| row_json(id)).collect::<Vec<_>>();
        Rows::from_parts(batch, &["_id"], ids, json)
    }

    /// A batch with the `columns` a sink writes, each row's id and each
    /// row's JSON object (one per id, without a newline).
    pub fn from_parts(
        batch: RecordBatch,
        columns: &[&str],
        ids: Vec<u64>,
        rows_json: impl IntoIterator<Item = impl AsRef<[u8]>>,
    ) -> Rows {
        let mut json = Vec::new();
        let mut ends = Vec::new();
        for row in rows_json {
            json.extend_from_slice(row.as_ref());
            ends.push(json.len());
            json.push(b'\n');
        }
        assert_eq!(ends.len(), ids.len(), "one JSON row per id");
        Rows {
            batch,
            columns: columns.iter().map(|c| c.to_string()).collect(),
            ids,
            json,
            ends,
        }
    }

    /// The same rows with other columns written (names the batch may lack,
    /// for a sink's checks).
    pub fn with_columns(mut self, columns: &[&str]) -> Rows {
        self.columns = columns.iter().map(|c| c.to_string()).collect();
        self
    }

    /// The batch as a sink receives it.
    pub fn output(&self) -> Output<'_> {
        Output {
            batch: &self.batch,
            columns: &self.columns,
            ids: &self.ids,
            json: &self.json,
            ends: &self.ends,
        }
    }

    /// The Arrow batch.
    pub fn batch(&self) -> &RecordBatch {
        &self.batch
    }

    /// The columns the sink writes.
    pub fn columns(&self) -> &[String] {
        &self.columns
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_lent_as_the_engine_lends_them() {
        let rows = Rows::new(7..10);
        let out = rows.output();
        assert_eq!(out.len(), 3);
        assert_eq!(out.ids, &[7, 8, 9]);
        assert_eq!(out.json_row(1), row_json(8).as_bytes());
        assert_eq!(out.batch.num_rows(), 3);
        assert_eq!(rows.with_columns(&["_id", "v"]).columns(), ["_id", "v"]);
    }
}
