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
///
/// The states live in one dense vector (a slab) beside their keys; the
/// hash maps hold only slot numbers. An operator can resolve a whole
/// batch's keys to slots first, in a tight loop whose cache misses the
/// CPU overlaps, and then work through the rows prefetching the states a
/// few rows ahead ([`KeyedMap::slot`], [`KeyedMap::at`]). Removal moves
/// the last state into the freed slot, so slots stay dense but a slot
/// number is only good until the next removal.
pub struct KeyedMap<V> {
    ints: HashMap<i64, u32, FastBuild>,
    strs: HashMap<Arc<str>, u32, FastBuild>,
    null: Option<u32>,
    keys: Vec<Key>,
    values: Vec<V>,
}

impl<V> Default for KeyedMap<V> {
    fn default() -> Self {
        KeyedMap {
            ints: HashMap::default(),
            strs: HashMap::default(),
            null: None,
            keys: Vec::new(),
            values: Vec::new(),
        }
    }
}

impl<V> KeyedMap<V> {
    /// The state for row `i`'s key, created with `make` if new.
    #[inline]
    pub fn entry(&mut self, keys: &KeyColumn<'_>, i: usize, make: impl FnOnce() -> V) -> &mut V {
        let s = self.slot(keys, i, make);
        &mut self.values[s]
    }

    /// The slot of row `i`'s key, its state created with `make` if new.
    #[inline]
    pub fn slot(&mut self, keys: &KeyColumn<'_>, i: usize, make: impl FnOnce() -> V) -> usize {
        let next = self.values.len() as u32;
        let (s, fresh) = match keys {
            KeyColumn::Int(v, nulls) => {
                if nulls.is_some_and(|n| n.is_null(i)) {
                    let fresh = self.null.is_none();
                    (*self.null.get_or_insert(next), fresh)
                } else {
                    let s = *self.ints.entry(v[i]).or_insert(next);
                    (s, s == next)
                }
            }
            KeyColumn::Str(a) => {
                if a.is_null(i) {
                    let fresh = self.null.is_none();
                    (*self.null.get_or_insert(next), fresh)
                } else {
                    let k = a.value(i);
                    match self.strs.get(k) {
                        Some(&s) => (s, false),
                        None => {
                            self.strs.insert(Arc::from(k), next);
                            (next, true)
                        }
                    }
                }
            }
        };
        if fresh {
            self.keys.push(Self::key_of(keys, i));
            self.values.push(make());
        }
        s as usize
    }

    /// The state in slot `s` (from [`KeyedMap::slot`], no removal since).
    #[inline]
    pub fn at(&mut self, s: usize) -> &mut V {
        &mut self.values[s]
    }

    /// The state in slot `s`, to read (or prefetch from).
    #[inline]
    pub fn peek(&self, s: usize) -> &V {
        &self.values[s]
    }

    /// Slot `s`'s key, and its state to change.
    pub fn entry_at(&mut self, s: usize) -> (&Key, &mut V) {
        (&self.keys[s], &mut self.values[s])
    }

    /// Where slot `s`'s state is, to prefetch (never read through).
    #[inline]
    pub fn address(&self, s: usize) -> *const V {
        self.values.as_ptr().wrapping_add(s)
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

    fn find(&self, key: &Key) -> Option<usize> {
        match key {
            Key::Null => self.null,
            Key::Int(v) => self.ints.get(v).copied(),
            Key::Str(s) => self.strs.get(s.as_ref()).copied(),
        }
        .map(|s| s as usize)
    }

    fn set_slot(&mut self, key: &Key, s: u32) {
        match key {
            Key::Null => self.null = Some(s),
            Key::Int(v) => {
                self.ints.insert(*v, s);
            }
            Key::Str(k) => {
                if let Some(slot) = self.strs.get_mut(k.as_ref()) {
                    *slot = s;
                } else {
                    self.strs.insert(k.clone(), s);
                }
            }
        }
    }

    /// Takes slot `s` out, moving the last state into it.
    fn remove_at(&mut self, s: usize) -> (Key, V) {
        let key = self.keys.swap_remove(s);
        let value = self.values.swap_remove(s);
        match &key {
            Key::Null => self.null = None,
            Key::Int(v) => {
                self.ints.remove(v);
            }
            Key::Str(k) => {
                self.strs.remove(k.as_ref());
            }
        }
        if s < self.keys.len() {
            let moved = self.keys[s].clone();
            self.set_slot(&moved, s as u32);
        }
        (key, value)
    }

    /// State for an owned key.
    pub fn get_mut(&mut self, key: &Key) -> Option<&mut V> {
        let s = self.find(key)?;
        Some(&mut self.values[s])
    }

    /// Removes an owned key's state.
    pub fn remove(&mut self, key: &Key) -> Option<V> {
        let s = self.find(key)?;
        Some(self.remove_at(s).1)
    }

    /// Drops the states for which `keep` is false.
    pub fn retain(&mut self, mut keep: impl FnMut(&mut V) -> bool) {
        self.retain_reporting(|v| keep(v), |_, _| {});
    }

    /// Drops the states for which `keep` is false, handing each dropped
    /// one to `dropped` with its key first.
    pub fn retain_reporting(
        &mut self,
        mut keep: impl FnMut(&mut V) -> bool,
        mut dropped: impl FnMut(Key, &V),
    ) {
        let mut s = 0;
        while s < self.values.len() {
            if keep(&mut self.values[s]) {
                s += 1;
            } else {
                // The last state moves into `s`: look at it next.
                let (key, value) = self.remove_at(s);
                dropped(key, &value);
            }
        }
    }

    /// Calls `f` with every key and its state (order unspecified).
    pub fn for_each_mut(&mut self, mut f: impl FnMut(Key, &mut V)) {
        for (k, v) in self.keys.iter().zip(&mut self.values) {
            f(k.clone(), v);
        }
    }

    /// Every key with its state (order unspecified).
    pub fn iter(&self) -> impl Iterator<Item = (Key, &V)> {
        self.keys.iter().cloned().zip(&self.values)
    }

    /// Sets an owned key's state.
    pub fn insert(&mut self, key: Key, value: V) {
        if let Some(s) = self.find(&key) {
            self.values[s] = value;
            return;
        }
        self.set_slot(&key, self.values.len() as u32);
        self.keys.push(key);
        self.values.push(value);
    }

    /// Number of keys with state.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether there is no state.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    /// One operation on a map of small keys (some NULL, some strings).
    #[derive(Debug, Clone)]
    enum Op {
        /// Adds `v` to the key's value, creating it at 0.
        Entry(i64, u32),
        Remove(i64),
        /// Keeps the keys whose value is even.
        RetainEven,
        Insert(i64, u32),
    }

    fn key(k: i64) -> Key {
        match k {
            0 => Key::Null,
            k if k < 0 => Key::Str(Arc::from(format!("s{k}").as_str())),
            k => Key::Int(k),
        }
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (-5i64..20, 0u32..5).prop_map(|(k, v)| Op::Entry(k, v)),
            2 => (-5i64..20).prop_map(Op::Remove),
            1 => Just(Op::RetainEven),
            1 => (-5i64..20, 0u32..5).prop_map(|(k, v)| Op::Insert(k, v)),
        ]
    }

    proptest! {
        /// The slab, its slot numbers and the moves on removal agree with
        /// an ordered map after any sequence of operations.
        #[test]
        fn agrees_with_an_ordered_map(ops in proptest::collection::vec(op(), 0..200)) {
            let mut map: KeyedMap<u32> = KeyedMap::default();
            let mut oracle: BTreeMap<Key, u32> = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Entry(k, v) => {
                        let strings = StringArray::from(vec![format!("s{k}")]);
                        let ints = [k];
                        let nulls = arrow_buffer::NullBuffer::from(vec![false]);
                        let keys = match k {
                            0 => KeyColumn::Int(ints.to_vec(), Some(&nulls)),
                            k if k < 0 => KeyColumn::Str(&strings),
                            _ => KeyColumn::Int(ints.to_vec(), None),
                        };
                        let s = map.slot(&keys, 0, || 0);
                        *map.at(s) += v;
                        *oracle.entry(key(k)).or_insert(0) += v;
                    }
                    Op::Remove(k) => {
                        prop_assert_eq!(map.remove(&key(k)), oracle.remove(&key(k)));
                    }
                    Op::RetainEven => {
                        let mut dropped = Vec::new();
                        map.retain_reporting(|v| *v % 2 == 0, |k, v| dropped.push((k, *v)));
                        dropped.sort();
                        let gone: Vec<(Key, u32)> = oracle
                            .iter()
                            .filter(|(_, v)| *v % 2 != 0)
                            .map(|(k, v)| (k.clone(), *v))
                            .collect();
                        oracle.retain(|_, v| *v % 2 == 0);
                        prop_assert_eq!(dropped, gone);
                    }
                    Op::Insert(k, v) => {
                        map.insert(key(k), v);
                        oracle.insert(key(k), v);
                    }
                }
                let mut all: Vec<(Key, u32)> = map.iter().map(|(k, v)| (k, *v)).collect();
                all.sort();
                let want: Vec<(Key, u32)> = oracle.iter().map(|(k, v)| (k.clone(), *v)).collect();
                prop_assert_eq!(&all, &want);
                for (k, v) in &want {
                    prop_assert_eq!(map.get_mut(k).copied(), Some(*v));
                }
            }
        }
    }
}
