//! Keys: reading them from a column, hashing them into key groups, and
//! per-key state maps.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::{
    Array, ArrayRef, BooleanArray, Int32Array, Int64Array, RecordBatch, StringArray, UInt32Array,
    UInt64Array,
};
use arrow_schema::DataType;
use arrow_select::take::take_record_batch;

use crate::dead_letter::Rejected;
use crate::hash::{hash_bytes, key_group, mix64, shard_of, FastBuild};
use crate::EngineError;

/// A typed view of a key column. Integer and boolean keys are handled as
/// i64 (u64 keys by their bit pattern, a bijection).
pub enum KeyColumn<'a> {
    /// Integer or boolean keys.
    Int(Vec<i64>, Option<&'a arrow_buffer::NullBuffer>),
    /// String keys.
    Str(&'a StringArray),
}

impl<'a> KeyColumn<'a> {
    /// Reads the key column of a batch.
    pub fn read(array: &'a ArrayRef) -> Result<Self, String> {
        let any = array.as_any();
        let nulls = array.nulls();
        Ok(match array.data_type() {
            DataType::Int64 | DataType::Int32 | DataType::UInt32 | DataType::UInt64 => {
                KeyColumn::Int(
                    int_values(array, |v| v as i64).ok_or("bad key column")?,
                    nulls,
                )
            }
            DataType::Boolean => {
                let b = any.downcast_ref::<BooleanArray>().ok_or("bad key column")?;
                KeyColumn::Int((0..b.len()).map(|i| b.value(i) as i64).collect(), nulls)
            }
            DataType::Utf8 => {
                KeyColumn::Str(any.downcast_ref::<StringArray>().ok_or("bad key column")?)
            }
            other => return Err(format!("keys of type {other} are not supported")),
        })
    }

    /// Hash of row `i`'s key (NULL keys share one hash).
    #[inline]
    pub fn hash(&self, i: usize) -> u64 {
        match self {
            KeyColumn::Int(v, nulls) => {
                if nulls.is_some_and(|n| n.is_null(i)) {
                    0
                } else {
                    mix64(v[i] as u64)
                }
            }
            KeyColumn::Str(a) => {
                if a.is_null(i) {
                    0
                } else {
                    hash_bytes(a.value(i).as_bytes())
                }
            }
        }
    }
}

/// Reads an integer column widened to i64; `from_u64` decides what
/// unsigned 64-bit values become. `None` for non-integer columns.
pub fn int_values(array: &ArrayRef, from_u64: fn(u64) -> i64) -> Option<Vec<i64>> {
    let any = array.as_any();
    if let Some(x) = any.downcast_ref::<Int64Array>() {
        return Some(x.values().to_vec());
    }
    if let Some(x) = any.downcast_ref::<UInt64Array>() {
        return Some(x.values().iter().map(|&v| from_u64(v)).collect());
    }
    if let Some(x) = any.downcast_ref::<Int32Array>() {
        return Some(x.values().iter().map(|&v| v as i64).collect());
    }
    any.downcast_ref::<UInt32Array>()
        .map(|x| x.values().iter().map(|&v| v as i64).collect())
}

/// `key_by`: splits a batch into one batch per shard.
pub struct Partitioner {
    /// Step name.
    pub step: String,
    /// Index of the key column.
    pub key_index: usize,
    /// Number of key groups.
    pub key_groups: u32,
    /// Number of shards.
    pub shards: usize,
    /// The key groups this run owns (one task's), with the task's number
    /// and count; rows of other groups are dead letters. `None`: all.
    pub owned: Option<OwnedGroups>,
    indices: Vec<Vec<u32>>,
}

/// One task's key groups, for [`Partitioner`].
#[derive(Debug, Clone, Copy)]
pub struct OwnedGroups {
    /// The task's number (and partition).
    pub task: u32,
    /// The number of tasks.
    pub tasks: u32,
    /// Its key groups, `[start, end)`.
    pub groups: (u32, u32),
}

impl Partitioner {
    /// A partitioner over `shards` shards.
    pub fn new(step: &str, key_index: usize, key_groups: u32, shards: usize) -> Self {
        Partitioner {
            step: step.to_string(),
            key_index,
            key_groups,
            shards,
            owned: None,
            indices: vec![Vec::new(); shards],
        }
    }

    /// Rows whose key group `owned` does not hold go to `rejected`.
    pub fn owning(mut self, owned: OwnedGroups) -> Self {
        self.owned = Some(owned);
        self
    }

    /// Splits `batch`; entry `s` holds the rows for shard `s`, in input
    /// order. Rows of key groups another task owns go to `rejected`.
    pub fn split(
        &mut self,
        batch: &RecordBatch,
        rejected: &mut Vec<Rejected>,
    ) -> Result<Vec<RecordBatch>, EngineError> {
        if self.shards == 1 && self.owned.is_none() {
            return Ok(vec![batch.clone()]);
        }
        let keys = KeyColumn::read(batch.column(self.key_index)).map_err(|_| {
            EngineError::invariant(
                format!("step {}", self.step),
                "the key column has a type validation refuses",
            )
        })?;
        for v in &mut self.indices {
            v.clear();
        }
        for row in 0..batch.num_rows() {
            let g = key_group(keys.hash(row), self.key_groups);
            if let Some(o) = &self.owned {
                if !(o.groups.0..o.groups.1).contains(&g) {
                    rejected.push(self.misrouted(batch, row, g, o));
                    continue;
                }
            }
            self.indices[shard_of(g, self.key_groups, self.shards)].push(row as u32);
        }
        self.indices
            .iter()
            .map(|idx| {
                if idx.len() == batch.num_rows() {
                    Ok(batch.clone())
                } else {
                    let idx = UInt32Array::from(idx.clone());
                    take_record_batch(batch, &idx).map_err(|e| EngineError::compute(&self.step, e))
                }
            })
            .collect()
    }
}

impl Partitioner {
    /// The dead letter of a row read by a task that does not own its key.
    #[cold]
    fn misrouted(&self, batch: &RecordBatch, row: usize, group: u32, o: &OwnedGroups) -> Rejected {
        let position = batch
            .column_by_name(weir_config::POSITION_COLUMN)
            .and_then(|c| c.as_any().downcast_ref::<UInt64Array>())
            .map_or(0, |c| c.value(row));
        let owner = weir_config::task_of_group(group, self.key_groups, o.tasks);
        Rejected {
            step: self.step.clone(),
            position,
            reason: format!(
                "misrouted record: its key is in key group {group}, which task {owner} owns, \
                 but it was read from partition {} (task {}); a producer must write a record \
                 to the partition of its key's task",
                o.task, o.task
            ),
            bytes: Vec::new(),
            record: Some(crate::encode::row_json(batch, row)),
        }
    }
}

/// An owned key, for state that outlives a batch.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Key {
    /// NULL key.
    Null,
    /// Integer or boolean key.
    Int(i64),
    /// String key.
    Str(Arc<str>),
}

/// Per-key state, with lookups that do not allocate for existing keys.
pub struct KeyedMap<V> {
    ints: HashMap<i64, V, FastBuild>,
    strs: HashMap<Arc<str>, V, FastBuild>,
    null: Option<V>,
}

impl<V> Default for KeyedMap<V> {
    fn default() -> Self {
        KeyedMap {
            ints: HashMap::default(),
            strs: HashMap::default(),
            null: None,
        }
    }
}

impl<V> KeyedMap<V> {
    /// The state for row `i`'s key, created with `make` if new.
    #[inline]
    pub fn entry(&mut self, keys: &KeyColumn<'_>, i: usize, make: impl FnOnce() -> V) -> &mut V {
        match keys {
            KeyColumn::Int(v, nulls) => {
                if nulls.is_some_and(|n| n.is_null(i)) {
                    self.null.get_or_insert_with(make)
                } else {
                    self.ints.entry(v[i]).or_insert_with(make)
                }
            }
            KeyColumn::Str(a) => {
                if a.is_null(i) {
                    return self.null.get_or_insert_with(make);
                }
                let s = a.value(i);
                if !self.strs.contains_key(s) {
                    self.strs.insert(Arc::from(s), make());
                }
                // unwrap: inserted just above when missing.
                self.strs.get_mut(s).expect("key present")
            }
        }
    }

    /// The owned key of row `i`.
    pub fn key_of(keys: &KeyColumn<'_>, i: usize) -> Key {
        match keys {
            KeyColumn::Int(v, nulls) => {
                if nulls.is_some_and(|n| n.is_null(i)) {
                    Key::Null
                } else {
                    Key::Int(v[i])
                }
            }
            KeyColumn::Str(a) => {
                if a.is_null(i) {
                    Key::Null
                } else {
                    Key::Str(Arc::from(a.value(i)))
                }
            }
        }
    }

    /// State for an owned key.
    pub fn get_mut(&mut self, key: &Key) -> Option<&mut V> {
        match key {
            Key::Null => self.null.as_mut(),
            Key::Int(v) => self.ints.get_mut(v),
            Key::Str(s) => self.strs.get_mut(s.as_ref()),
        }
    }

    /// Removes an owned key's state.
    pub fn remove(&mut self, key: &Key) -> Option<V> {
        match key {
            Key::Null => self.null.take(),
            Key::Int(v) => self.ints.remove(v),
            Key::Str(s) => self.strs.remove(s.as_ref()),
        }
    }

    /// Drops the states for which `keep` is false.
    pub fn retain(&mut self, mut keep: impl FnMut(&mut V) -> bool) {
        self.ints.retain(|_, v| keep(v));
        self.strs.retain(|_, v| keep(v));
        if let Some(v) = &mut self.null {
            if !keep(v) {
                self.null = None;
            }
        }
    }

    /// Drops the states for which `keep` is false, handing each dropped
    /// one to `dropped` with its key first.
    pub fn retain_reporting(
        &mut self,
        mut keep: impl FnMut(&mut V) -> bool,
        mut dropped: impl FnMut(Key, &V),
    ) {
        self.ints.retain(|k, v| {
            let kept = keep(v);
            if !kept {
                dropped(Key::Int(*k), v);
            }
            kept
        });
        self.strs.retain(|k, v| {
            let kept = keep(v);
            if !kept {
                dropped(Key::Str(k.clone()), v);
            }
            kept
        });
        if let Some(v) = &mut self.null {
            if !keep(v) {
                dropped(Key::Null, v);
                self.null = None;
            }
        }
    }

    /// Calls `f` with every key and its state (order unspecified).
    pub fn for_each_mut(&mut self, mut f: impl FnMut(Key, &mut V)) {
        if let Some(v) = &mut self.null {
            f(Key::Null, v);
        }
        for (k, v) in &mut self.ints {
            f(Key::Int(*k), v);
        }
        for (k, v) in &mut self.strs {
            f(Key::Str(k.clone()), v);
        }
    }

    /// Every key with its state (order unspecified).
    pub fn iter(&self) -> impl Iterator<Item = (Key, &V)> {
        self.null
            .iter()
            .map(|v| (Key::Null, v))
            .chain(self.ints.iter().map(|(k, v)| (Key::Int(*k), v)))
            .chain(self.strs.iter().map(|(k, v)| (Key::Str(k.clone()), v)))
    }

    /// Sets an owned key's state.
    pub fn insert(&mut self, key: Key, value: V) {
        match key {
            Key::Null => self.null = Some(value),
            Key::Int(v) => {
                self.ints.insert(v, value);
            }
            Key::Str(s) => {
                self.strs.insert(s, value);
            }
        }
    }

    /// Number of keys with state.
    pub fn len(&self) -> usize {
        self.ints.len() + self.strs.len() + self.null.is_some() as usize
    }

    /// Whether there is no state.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
