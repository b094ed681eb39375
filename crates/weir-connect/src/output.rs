//! One batch of output as a sink connector receives it.

use arrow_array::RecordBatch;

/// A batch of output records in the forms connectors need: typed columns
/// (for databases), each row as a JSON object (for brokers) and each row's
/// deterministic id (for deduplication and upserts).
#[derive(Debug)]
pub struct Output<'a> {
    /// The batch as the sink receives it, hidden columns included.
    pub batch: &'a RecordBatch,
    /// The columns the sink writes, in order.
    pub columns: &'a [String],
    /// Each row's output id: the same on every replay.
    pub ids: &'a [u64],
    /// Each row as a JSON object with its `_id`, one per line (empty for
    /// a PostgreSQL sink, which binds the typed columns).
    pub json: &'a [u8],
    /// Where each row's line ends (at its `\n`) in `json` (empty with it).
    pub ends: &'a [usize],
}

impl<'a> Output<'a> {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Row `i` as a JSON object, without its newline.
    pub fn json_row(&self, i: usize) -> &'a [u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] + 1 };
        &self.json[start..self.ends[i]]
    }

    /// Each row's id and JSON object.
    pub fn rows(&self) -> impl Iterator<Item = (u64, &'a [u8])> + '_ {
        (0..self.len()).map(|i| (self.ids[i], self.json_row(i)))
    }
}
