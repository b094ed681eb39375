//! Event-time windows per key: what the window kinds share (reading their
//! input columns once per batch, deciding and rejecting late events), with
//! the sliding kind in `sliding.rs` and the fixed kinds in `fixed.rs`.
//!
//! Time follows Flink and Beam. Event time is integer milliseconds. The
//! watermark is per record: the largest event time among all source
//! records before it, minus the decode step's out-of-orderness bound. A
//! window covers `[start, end)` and fires when the watermark reaches `end`.
//! An event is *late* when every window it belongs to has fired by its own
//! watermark (`end <= watermark`); until then it counts in each of its
//! windows that has not. A window takes late events for its allowed
//! lateness `L` more (while `end + L > watermark`): each updates it and it
//! fires again. An event whose windows are all past that goes to the
//! dead-letter destination, never into a window opened anew.
//!
//! * *Tumbling* and *hopping* windows: an event at `t` belongs to the
//!   windows whose start is a multiple of the slide in `(t - size, t]`. It
//!   goes into those still open (`end + L > watermark`) and is late only
//!   when none is.
//! * *Sliding* windows are evaluated per event: an event at `t` gets the
//!   aggregates of its key's events with time in `(t - size, t]` that
//!   arrived before it or with it, at once. Its window is `[t - size + 1,
//!   t + 1)`, so by the same rule it is late when `t + 1 + L <= watermark`,
//!   i.e. when `t` is more than `L` behind the watermark.
//!
//! Because the decision uses the record's own watermark, not when windows
//! happen to fire, it does not depend on batch boundaries or the shard
//! count; a window's final result does not either (how often it fired
//! before does).

mod capture;
mod events;
mod fixed;
mod front;
mod sliding;

pub use fixed::FixedWindows;
pub use sliding::SlidingWindow;

use arrow_array::{RecordBatch, UInt64Array};
use arrow_schema::SchemaRef;
use weir_config::{Window, POSITION_COLUMN, PRIOR_MAX_TIME_COLUMN};

use super::aggregate::{input_kind, read_values, InputKind};
use super::keyed::KeyColumn;
use super::{watermark, Ctx};
use crate::dead_letter::Rejected;
use crate::EngineError;

/// Column indices and value kinds the window reads from its input.
struct Inputs {
    key: usize,
    time: usize,
    position: usize,
    prior_max: usize,
    columns: Vec<Option<usize>>,
    kinds: Vec<InputKind>,
}

impl Inputs {
    fn new(step: &str, w: &Window, schema: &SchemaRef) -> Result<Self, EngineError> {
        let idx = |n: &str| schema.index_of(n).map_err(|e| EngineError::build(step, e));
        let columns: Vec<Option<usize>> = w
            .aggregates
            .iter()
            .map(|a| a.column.as_deref().map(idx).transpose())
            .collect::<Result<_, _>>()?;
        let kinds = w
            .aggregates
            .iter()
            .zip(&columns)
            .map(|(a, c)| input_kind(a, c.map(|i| schema.field(i).data_type())))
            .collect();
        Ok(Inputs {
            key: idx(&w.key_column)?,
            time: idx(&w.time_column)?,
            position: idx(POSITION_COLUMN)?,
            prior_max: idx(PRIOR_MAX_TIME_COLUMN)?,
            columns,
            kinds,
        })
    }

    /// Per aggregate: whether its input is read as floats.
    fn floats(&self) -> Vec<bool> {
        self.kinds.iter().map(|k| *k == InputKind::Float).collect()
    }

    /// The batch's key column.
    fn keys<'a>(&self, batch: &'a RecordBatch, step: &str) -> Result<KeyColumn<'a>, EngineError> {
        KeyColumn::read(batch.column(self.key)).map_err(|_| {
            EngineError::invariant(
                format!("step {step}"),
                "the key column has a type validation refuses",
            )
        })
    }
}

/// An integer column widened to i64; event times above `i64::MAX` clamp.
fn int_column(batch: &RecordBatch, i: usize) -> Result<Vec<i64>, String> {
    super::keyed::int_values(batch.column(i), |v| v.min(i64::MAX as u64) as i64)
        .ok_or_else(|| format!("column {i} is not an integer column"))
}

/// Per-batch columns read once.
struct BatchView {
    times: Vec<i64>,
    positions: Vec<u64>,
    prior: Vec<i64>,
    values: Vec<Vec<u64>>,
    valid: Vec<Vec<bool>>,
}

impl BatchView {
    /// Row `row`'s watermark: the largest event time before it (in earlier
    /// batches or earlier in this one) less the bound.
    #[inline]
    fn watermark(&self, row: usize, ctx: &Ctx<'_>, bound: i64) -> i64 {
        watermark(ctx.prior_max_time.max(self.prior[row]), bound)
    }

    /// Sends row `row` to the dead letters as late, for `reason`.
    fn reject(
        &self,
        ctx: &mut Ctx<'_>,
        step: &str,
        batch: &RecordBatch,
        row: usize,
        reason: String,
    ) {
        ctx.rejected.push(Rejected {
            step: step.to_string(),
            position: self.positions[row],
            reason,
            bytes: Vec::new(),
            record: Some(crate::encode::row_json(batch, row)),
        });
    }
}

fn view(inputs: &Inputs, batch: &RecordBatch, step: &str) -> Result<BatchView, EngineError> {
    let e = |what: &'static str| move |_| EngineError::invariant(format!("step {step}"), what);
    let times =
        int_column(batch, inputs.time).map_err(e("the time column is not an integer column"))?;
    let positions = batch
        .column(inputs.position)
        .as_any()
        .downcast_ref::<UInt64Array>()
        .map(|a| a.values().to_vec())
        .ok_or_else(|| EngineError::invariant(format!("step {step}"), "bad position column"))?;
    let prior = int_column(batch, inputs.prior_max)
        .map_err(e("the prior-maximum column is not an integer column"))?;
    let mut values = Vec::with_capacity(inputs.columns.len());
    let mut valid = Vec::with_capacity(inputs.columns.len());
    for (c, k) in inputs.columns.iter().zip(&inputs.kinds) {
        let mut v = Vec::new();
        let mut ok = Vec::new();
        match c {
            Some(i) => read_values(batch.column(*i), *k, &mut v, &mut ok),
            None => {
                v.resize(batch.num_rows(), 0);
                ok.resize(batch.num_rows(), true);
            }
        }
        values.push(v);
        valid.push(ok);
    }
    Ok(BatchView {
        times,
        positions,
        prior,
        values,
        valid,
    })
}

/// The dead-letter reason of a late event at `t` whose windows all ended
/// by `last_end` (at most `wm - lateness`).
fn late_reason(t: i64, last_end: i64, wm: i64, lateness: i64) -> String {
    if lateness == 0 {
        format!(
            "late event: event time {t}: its windows had fired (the last ends at {last_end}, \
             the watermark is {wm})"
        )
    } else {
        format!(
            "late event: event time {t}: its windows had fired (the last ends at {last_end}, \
             the watermark is {wm}) and their allowed lateness of {lateness} ms had passed"
        )
    }
}
