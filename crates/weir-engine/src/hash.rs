//! Deterministic key hashing: the same key lands in the same key group on
//! every run and every machine, which is what makes results independent of
//! the number of shards and state portable between them.

use std::hash::{BuildHasherDefault, Hasher};

/// Mixes a 64-bit value (SplitMix64's finaliser): cheap and well spread.
#[inline]
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Hash of a string key (FNV-1a, then mixed).
#[inline]
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    mix64(h)
}

/// Key group of a key hash.
#[inline]
pub fn key_group(hash: u64, key_groups: u32) -> u32 {
    (hash % key_groups as u64) as u32
}

/// Shard owning a key group: contiguous ranges of key groups per shard, so
/// changing the shard count moves whole groups.
#[inline]
pub fn shard_of(group: u32, key_groups: u32, shards: usize) -> usize {
    (group as usize * shards) / key_groups as usize
}

/// A fast hasher for in-memory maps keyed by already-mixed or small integer
/// keys (not for untrusted keys where flooding matters: window keys are
/// hashed with [`mix64`] first).
#[derive(Default, Clone, Copy)]
pub struct FastHasher(u64);

impl Hasher for FastHasher {
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        self.0 = hash_bytes(bytes) ^ self.0.rotate_left(5);
    }
    #[inline]
    fn write_u64(&mut self, v: u64) {
        self.0 = mix64(v ^ self.0);
    }
    #[inline]
    fn write_i64(&mut self, v: i64) {
        self.write_u64(v as u64);
    }
    #[inline]
    fn write_usize(&mut self, v: usize) {
        self.write_u64(v as u64);
    }
}

/// `BuildHasher` for [`FastHasher`].
pub type FastBuild = BuildHasherDefault<FastHasher>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_cover_groups_in_ranges() {
        for shards in 1..=8 {
            let mut last = 0;
            for g in 0..128 {
                let s = shard_of(g, 128, shards);
                assert!(s < shards);
                assert!(s >= last);
                last = s;
            }
            assert_eq!(last, shards - 1);
        }
    }

    #[test]
    fn hashing_is_stable() {
        // Fixed values: a change here moves keys between key groups and
        // invalidates saved state.
        assert_eq!(mix64(0), 0);
        assert_eq!(mix64(1), 0x5692_161d_100b_05e5);
        assert_eq!(hash_bytes(b""), mix64(0xcbf2_9ce4_8422_2325));
    }
}
