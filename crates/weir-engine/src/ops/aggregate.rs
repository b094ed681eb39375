//! Aggregate accumulators shared by every window kind.

use arrow_array::{
    Array, ArrayRef, BooleanArray, Float32Array, Float64Array, Int32Array, Int64Array, StringArray,
    UInt32Array, UInt64Array,
};
use arrow_schema::DataType;
use weir_config::{Aggregate, AggregateFunction};

use super::running::HLL_BITS;
use crate::hash::{hash_bytes, mix64};

/// How an aggregate reads its input column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKind {
    /// No input (`count(*)`).
    None,
    /// Exact integers.
    Int,
    /// Floats.
    Float,
    /// Only a hash is needed (distinct counts, counts of strings).
    Hash,
}

/// Decides how `agg` reads a column of type `dt`.
pub fn input_kind(agg: &Aggregate, dt: Option<&DataType>) -> InputKind {
    match (agg.function, dt) {
        (_, None) => InputKind::None,
        (AggregateFunction::ApproxDistinct | AggregateFunction::Count, _) => InputKind::Hash,
        (_, Some(DataType::Float32 | DataType::Float64)) => InputKind::Float,
        _ => InputKind::Int,
    }
}

/// Reads one aggregate input column as 64-bit values (i64, f64 bits or a
/// hash, per `kind`) plus validity.
pub fn read_values(array: &ArrayRef, kind: InputKind, out: &mut Vec<u64>, valid: &mut Vec<bool>) {
    out.clear();
    valid.clear();
    let n = array.len();
    valid.extend((0..n).map(|i| array.is_valid(i)));
    let any = array.as_any();
    macro_rules! ints {
        ($t:ty) => {
            if let Some(a) = any.downcast_ref::<$t>() {
                match kind {
                    InputKind::Float => {
                        out.extend(a.values().iter().map(|&v| (v as f64).to_bits()))
                    }
                    InputKind::Hash => {
                        out.extend(a.values().iter().map(|&v| mix64(v as i64 as u64)))
                    }
                    _ => out.extend(a.values().iter().map(|&v| v as i64 as u64)),
                }
                return;
            }
        };
    }
    ints!(Int64Array);
    ints!(Int32Array);
    ints!(UInt32Array);
    ints!(UInt64Array);
    if let Some(a) = any.downcast_ref::<Float64Array>() {
        match kind {
            InputKind::Hash => out.extend(a.values().iter().map(|v| mix64(v.to_bits()))),
            _ => out.extend(a.values().iter().map(|v| v.to_bits())),
        }
        return;
    }
    if let Some(a) = any.downcast_ref::<Float32Array>() {
        match kind {
            InputKind::Hash => out.extend(a.values().iter().map(|&v| mix64((v as f64).to_bits()))),
            _ => out.extend(a.values().iter().map(|&v| (v as f64).to_bits())),
        }
        return;
    }
    if let Some(a) = any.downcast_ref::<StringArray>() {
        out.extend((0..n).map(|i| {
            if a.is_valid(i) {
                hash_bytes(a.value(i).as_bytes())
            } else {
                0
            }
        }));
        return;
    }
    if let Some(a) = any.downcast_ref::<BooleanArray>() {
        out.extend((0..n).map(|i| mix64(a.value(i) as u64)));
        return;
    }
    out.resize(n, 0);
    valid.iter_mut().for_each(|v| *v = false);
}

const EXACT_LIMIT: usize = 1024;

/// Distinct counting: exact up to 1024 values, then a HyperLogLog sketch
/// with 4096 registers (about 1.6% standard error).
#[derive(Debug, Clone)]
pub enum Distinct {
    /// Sorted distinct hashes.
    Exact(Vec<u64>),
    /// HyperLogLog registers.
    Sketch(Box<[u8]>),
}

impl Distinct {
    fn new() -> Self {
        Distinct::Exact(Vec::new())
    }

    fn add(&mut self, h: u64) {
        match self {
            Distinct::Exact(v) => {
                if let Err(i) = v.binary_search(&h) {
                    v.insert(i, h);
                    if v.len() > EXACT_LIMIT {
                        let mut regs = vec![0u8; 1 << HLL_BITS].into_boxed_slice();
                        for &x in v.iter() {
                            hll_add(&mut regs, x);
                        }
                        *self = Distinct::Sketch(regs);
                    }
                }
            }
            Distinct::Sketch(regs) => hll_add(regs, h),
        }
    }

    fn count(&self) -> i64 {
        match self {
            Distinct::Exact(v) => v.len() as i64,
            Distinct::Sketch(regs) => {
                let m = regs.len() as f64;
                let sum: f64 = regs.iter().map(|&r| 2f64.powi(-(r as i32))).sum();
                let alpha = 0.7213 / (1.0 + 1.079 / m);
                let raw = alpha * m * m / sum;
                let zeros = regs.iter().filter(|&&r| r == 0).count();
                let est = if raw <= 2.5 * m && zeros > 0 {
                    m * (m / zeros as f64).ln()
                } else {
                    raw
                };
                est.round() as i64
            }
        }
    }
}

fn hll_add(regs: &mut [u8], h: u64) {
    let (idx, rank) = super::running::hll_slot(h);
    if regs[idx] < rank {
        regs[idx] = rank;
    }
}

/// The running state of one aggregate over one window.
#[derive(Debug, Clone)]
pub enum Acc {
    /// count
    Count(i64),
    /// Exact integer sum; `None` after overflow.
    SumInt { sum: Option<i64>, seen: bool },
    /// Float sum.
    SumFloat { sum: f64, seen: bool },
    /// Integer min or max.
    ExtInt { value: Option<i64>, max: bool },
    /// Float min or max.
    ExtFloat { value: Option<f64>, max: bool },
    /// Count, sum, mean and squared deviations (Welford) for avg/stddev.
    Moments {
        n: i64,
        sum: f64,
        mean: f64,
        m2: f64,
        kind: AggregateFunction,
    },
    /// Distinct count.
    Distinct(Distinct),
}

impl Acc {
    /// Writes the running state (not the function: that comes from the
    /// pipeline on restore).
    pub fn save(&self, w: &mut crate::state::StateWriter<'_>) {
        match self {
            Acc::Count(n) => w.i64(*n),
            Acc::SumInt { sum, seen } => {
                w.u8(sum.is_some() as u8 | (*seen as u8) << 1);
                w.i64(sum.unwrap_or(0));
            }
            Acc::SumFloat { sum, seen } => {
                w.u8(*seen as u8);
                w.f64(*sum);
            }
            Acc::ExtInt { value, .. } => {
                w.u8(value.is_some() as u8);
                w.i64(value.unwrap_or(0));
            }
            Acc::ExtFloat { value, .. } => {
                w.u8(value.is_some() as u8);
                w.f64(value.unwrap_or(0.0));
            }
            Acc::Moments {
                n, sum, mean, m2, ..
            } => {
                w.i64(*n);
                w.f64(*sum);
                w.f64(*mean);
                w.f64(*m2);
            }
            Acc::Distinct(Distinct::Exact(v)) => {
                w.u8(0);
                w.u64(v.len() as u64);
                for h in v {
                    w.i64(*h as i64);
                }
            }
            Acc::Distinct(Distinct::Sketch(regs)) => {
                w.u8(1);
                w.bytes(regs);
            }
        }
    }

    /// Reads back what [`Acc::save`] wrote into an accumulator of the same
    /// function.
    pub fn load(
        &mut self,
        r: &mut crate::state::StateReader<'_>,
    ) -> Result<(), crate::state::Damaged> {
        use crate::state::Damaged;
        match self {
            Acc::Count(n) => *n = r.i64()?,
            Acc::SumInt { sum, seen } => {
                let flags = r.u8()?;
                let v = r.i64()?;
                *sum = (flags & 1 != 0).then_some(v);
                *seen = flags & 2 != 0;
            }
            Acc::SumFloat { sum, seen } => {
                *seen = r.u8()? != 0;
                *sum = r.f64()?;
            }
            Acc::ExtInt { value, .. } => {
                let some = r.u8()? != 0;
                let v = r.i64()?;
                *value = some.then_some(v);
            }
            Acc::ExtFloat { value, .. } => {
                let some = r.u8()? != 0;
                let v = r.f64()?;
                *value = some.then_some(v);
            }
            Acc::Moments {
                n, sum, mean, m2, ..
            } => {
                *n = r.i64()?;
                *sum = r.f64()?;
                *mean = r.f64()?;
                *m2 = r.f64()?;
            }
            Acc::Distinct(d) => {
                *d = match r.u8()? {
                    0 => {
                        let n = r.count(8)?;
                        let mut v = Vec::with_capacity(n);
                        for _ in 0..n {
                            v.push(r.i64()? as u64);
                        }
                        Distinct::Exact(v)
                    }
                    1 => {
                        let regs = r.bytes()?;
                        if regs.len() != 1 << HLL_BITS {
                            return Err(Damaged);
                        }
                        Distinct::Sketch(regs.into())
                    }
                    _ => return Err(Damaged),
                }
            }
        }
        Ok(())
    }

    /// A fresh accumulator for `agg` reading `kind` values.
    pub fn new(agg: &Aggregate, kind: InputKind) -> Acc {
        match agg.function {
            AggregateFunction::Count => Acc::Count(0),
            AggregateFunction::Sum if kind == InputKind::Float => Acc::SumFloat {
                sum: 0.0,
                seen: false,
            },
            AggregateFunction::Sum => Acc::SumInt {
                sum: Some(0),
                seen: false,
            },
            AggregateFunction::Min | AggregateFunction::Max => {
                let max = agg.function == AggregateFunction::Max;
                if kind == InputKind::Float {
                    Acc::ExtFloat { value: None, max }
                } else {
                    Acc::ExtInt { value: None, max }
                }
            }
            AggregateFunction::Avg
            | AggregateFunction::StddevSamp
            | AggregateFunction::StddevPop => Acc::Moments {
                n: 0,
                sum: 0.0,
                mean: 0.0,
                m2: 0.0,
                kind: agg.function,
            },
            AggregateFunction::ApproxDistinct => Acc::Distinct(Distinct::new()),
        }
    }

    /// Adds one value (`bits` per the input kind); `valid` false for NULL.
    #[inline]
    pub fn add(&mut self, bits: u64, valid: bool, float: bool) {
        if !valid {
            return;
        }
        match self {
            Acc::Count(n) => *n += 1,
            Acc::SumInt { sum, seen } => {
                *seen = true;
                *sum = sum.and_then(|s| s.checked_add(bits as i64));
            }
            Acc::SumFloat { sum, seen } => {
                *seen = true;
                *sum += f64::from_bits(bits);
            }
            Acc::ExtInt { value, max } => {
                let v = bits as i64;
                *value = Some(match *value {
                    None => v,
                    Some(c) if *max => c.max(v),
                    Some(c) => c.min(v),
                });
            }
            Acc::ExtFloat { value, max } => {
                let v = f64::from_bits(bits);
                *value = Some(match *value {
                    None => v,
                    Some(c) if *max => c.max(v),
                    Some(c) => c.min(v),
                });
            }
            Acc::Moments {
                n, sum, mean, m2, ..
            } => {
                let x = if float {
                    f64::from_bits(bits)
                } else {
                    bits as i64 as f64
                };
                *n += 1;
                *sum += x;
                let delta = x - *mean;
                *mean += delta / *n as f64;
                *m2 += delta * (x - *mean);
            }
            Acc::Distinct(d) => d.add(bits),
        }
    }

    /// The result as an integer (for Int64 outputs) or float.
    pub fn result(&self) -> Value {
        match self {
            Acc::Count(n) => Value::Int(*n),
            Acc::SumInt { sum, seen } => match (sum, seen) {
                (Some(s), true) => Value::Int(*s),
                _ => Value::Null,
            },
            Acc::SumFloat { sum, seen } => {
                if *seen {
                    Value::Float(*sum)
                } else {
                    Value::Null
                }
            }
            Acc::ExtInt { value, .. } => value.map(Value::Int).unwrap_or(Value::Null),
            Acc::ExtFloat { value, .. } => value.map(Value::Float).unwrap_or(Value::Null),
            Acc::Moments {
                n, sum, m2, kind, ..
            } => match kind {
                AggregateFunction::Avg if *n > 0 => Value::Float(*sum / *n as f64),
                AggregateFunction::StddevPop if *n > 0 => Value::Float((*m2 / *n as f64).sqrt()),
                AggregateFunction::StddevSamp if *n > 1 => {
                    Value::Float((*m2 / (*n - 1) as f64).sqrt())
                }
                _ => Value::Null,
            },
            Acc::Distinct(d) => Value::Int(d.count()),
        }
    }
}

/// An aggregate result.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    /// NULL
    Null,
    /// BIGINT
    Int(i64),
    /// DOUBLE
    Float(f64),
}

/// Collects one output column of aggregate results.
pub enum ResultColumn {
    /// Int64 output.
    Int(Vec<i64>, Vec<bool>),
    /// Float64 output.
    Float(Vec<f64>, Vec<bool>),
}

impl ResultColumn {
    /// An empty column of the aggregate's output type.
    pub fn new(dt: &DataType, capacity: usize) -> Self {
        match dt {
            DataType::Float64 => {
                ResultColumn::Float(Vec::with_capacity(capacity), Vec::with_capacity(capacity))
            }
            _ => ResultColumn::Int(Vec::with_capacity(capacity), Vec::with_capacity(capacity)),
        }
    }

    /// Appends a result.
    #[inline(always)]
    pub fn push(&mut self, v: Value) {
        match (self, v) {
            (ResultColumn::Int(d, n), Value::Int(x)) => {
                d.push(x);
                n.push(true);
            }
            (ResultColumn::Int(d, n), Value::Float(x)) => {
                d.push(x as i64);
                n.push(true);
            }
            (ResultColumn::Float(d, n), Value::Float(x)) => {
                d.push(x);
                n.push(true);
            }
            (ResultColumn::Float(d, n), Value::Int(x)) => {
                d.push(x as f64);
                n.push(true);
            }
            (ResultColumn::Int(d, n), Value::Null) => {
                d.push(0);
                n.push(false);
            }
            (ResultColumn::Float(d, n), Value::Null) => {
                d.push(0.0);
                n.push(false);
            }
        }
    }

    /// The finished Arrow array.
    pub fn finish(self) -> ArrayRef {
        use std::sync::Arc;
        fn nulls(v: Vec<bool>) -> Option<arrow_buffer::NullBuffer> {
            if v.iter().all(|&b| b) {
                None
            } else {
                Some(arrow_buffer::NullBuffer::from(v))
            }
        }
        match self {
            ResultColumn::Int(d, n) => Arc::new(Int64Array::new(d.into(), nulls(n))),
            ResultColumn::Float(d, n) => Arc::new(Float64Array::new(d.into(), nulls(n))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinct_is_exact_then_close() {
        let mut d = Distinct::new();
        for i in 0..1000u64 {
            d.add(mix64(i % 500));
        }
        assert_eq!(d.count(), 500);
        for i in 0..100_000u64 {
            d.add(mix64(i));
        }
        let c = d.count() as f64;
        assert!((c - 100_000.0).abs() / 100_000.0 < 0.05, "{c}");
    }

    #[test]
    fn moments() {
        let agg = Aggregate {
            name: "s".into(),
            function: AggregateFunction::StddevSamp,
            column: Some("x".into()),
            data_type: DataType::Float64,
        };
        let mut a = Acc::new(&agg, InputKind::Int);
        for x in [2i64, 4, 4, 4, 5, 5, 7, 9] {
            a.add(x as u64, true, false);
        }
        let Value::Float(s) = a.result() else {
            panic!("no result")
        };
        assert!((s - 2.138_089_935_299_395).abs() < 1e-12);
    }
}
