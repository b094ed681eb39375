//! Crash damage on disk: acknowledged batches are appended, then the last
//! segment is cut short and/or a bit is flipped somewhere. After reopening,
//! everything before the damage reads back intact, nothing at or after a
//! damaged point is ever returned as data, and damage in sealed segments is
//! reported as `Corrupt`.

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use weir_log::{FsyncPolicy, Log, LogError, StreamConfig};

const HEADER: u64 = 29;

fn config(segment_bytes: u64) -> StreamConfig {
    StreamConfig {
        partitions: 1,
        segment_bytes,
        retention_bytes: None,
        retention_age: None,
        fsync: FsyncPolicy::Never,
    }
}

#[derive(Debug, Clone)]
struct Damage {
    /// Cut the last segment at this fraction of its length.
    cut: Option<f64>,
    /// Flip bit `.2` of the byte at fraction `.1` of segment number `.0 % n`.
    flip: Option<(usize, f64, u8)>,
}

/// Where a frame (one batch) ended up on disk.
#[derive(Debug, Clone, Copy)]
struct Frame {
    segment: usize,
    pos: u64,
    len: u64,
    base: u64,
}

fn segments(dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            let base = p.file_stem().unwrap().to_str().unwrap().parse().unwrap();
            (base, p)
        })
        .collect();
    v.sort();
    v
}

fn read_all(p: &weir_log::Partition) -> (Vec<(u64, Vec<u8>)>, Option<LogError>) {
    let mut out = Vec::new();
    let mut from = p.first_offset();
    loop {
        match p.read(from, 7) {
            Ok(v) if v.is_empty() => return (out, None),
            Ok(v) => {
                from = v.last().unwrap().0 + 1;
                out.extend(v);
            }
            Err(e) => return (out, Some(e)),
        }
    }
}

fn damage() -> impl Strategy<Value = Damage> {
    let cut = proptest::option::of(0.0..1.0f64);
    let flip = proptest::option::of((0..100usize, 0.0..1.0f64, 0..8u8));
    (cut, flip).prop_map(|(cut, flip)| Damage { cut, flip })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn damaged_segments_never_return_garbage(
        batches in proptest::collection::vec(
            proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 1..5),
            1..30,
        ),
        segment_bytes in 100..400u64,
        damage in damage(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let pdir = dir.path().join("s/0");
        let mut expected: Vec<Vec<u8>> = Vec::new();
        {
            let log = Log::open(dir.path()).unwrap();
            let stream = log.stream("s", config(segment_bytes)).unwrap();
            for b in &batches {
                let refs: Vec<&[u8]> = b.iter().map(Vec::as_slice).collect();
                let r = stream.partition(0).append(&refs).unwrap();
                prop_assert_eq!(r.start, expected.len() as u64);
                expected.extend(b.iter().cloned());
            }
        }

        // Lay the frames out as the documented format says they are.
        let segs = segments(&pdir);
        let mut frames = Vec::new();
        let (mut base, mut seg, mut pos) = (0u64, 0usize, 0u64);
        for b in &batches {
            while seg + 1 < segs.len() && segs[seg + 1].0 <= base {
                seg += 1;
                pos = 0;
            }
            let len = HEADER + b.iter().map(|r| 4 + r.len() as u64).sum::<u64>();
            frames.push(Frame { segment: seg, pos, len, base });
            pos += len;
            base += b.len() as u64;
        }
        for (i, (_, path)) in segs.iter().enumerate() {
            let end = frames.iter().filter(|f| f.segment == i).map(|f| f.pos + f.len).max().unwrap();
            prop_assert_eq!(std::fs::metadata(path).unwrap().len(), end);
        }
        let last = segs.len() - 1;
        let frame_at = |segment: usize, byte: u64| {
            *frames.iter().find(|f| f.segment == segment && f.pos <= byte && byte < f.pos + f.len).unwrap()
        };

        // Damage the files; work out what must survive.
        let total = expected.len() as u64;
        let mut tail_good = total; // offsets kept by the tail recovery
        let mut sealed_bad: Option<Frame> = None; // corrupt frame in a sealed segment
        if let Some((s, frac, bit)) = damage.flip {
            let s = s % segs.len();
            let mut bytes = std::fs::read(&segs[s].1).unwrap();
            let at = ((bytes.len() as f64 * frac) as u64).min(bytes.len() as u64 - 1);
            bytes[at as usize] ^= 1 << bit;
            std::fs::write(&segs[s].1, bytes).unwrap();
            let f = frame_at(s, at);
            if s == last { tail_good = tail_good.min(f.base) } else { sealed_bad = Some(f) }
        }
        if let Some(frac) = damage.cut {
            let len = std::fs::metadata(&segs[last].1).unwrap().len();
            let cut = (len as f64 * frac) as u64;
            std::fs::OpenOptions::new().write(true).open(&segs[last].1).unwrap().set_len(cut).unwrap();
            let kept = frames.iter().filter(|f| f.segment == last && f.pos + f.len > cut).map(|f| f.base).min();
            tail_good = tail_good.min(kept.unwrap_or(total));
        }

        // Reopen and read everything.
        let log = Log::open(dir.path()).unwrap();
        let stream = log.stream("s", config(segment_bytes)).unwrap();
        let p = stream.partition(0);
        prop_assert_eq!(p.next_offset(), tail_good);
        let (got, err) = read_all(p);
        for (off, rec) in &got {
            prop_assert_eq!(rec, &expected[*off as usize], "offset {} returned garbage", off);
        }
        let offsets: Vec<u64> = got.iter().map(|r| r.0).collect();
        match sealed_bad {
            None => {
                prop_assert!(err.is_none(), "unexpected error {:?}", err);
                prop_assert_eq!(offsets, (0..tail_good).collect::<Vec<_>>());
            }
            Some(bad) => {
                prop_assert_eq!(offsets, (0..bad.base).collect::<Vec<_>>());
                match err {
                    Some(LogError::Corrupt { segment, position, .. }) => {
                        prop_assert_eq!(segment, segs[bad.segment].1.clone());
                        prop_assert_eq!(position, bad.pos);
                    }
                    other => prop_assert!(false, "expected Corrupt, got {:?}", other),
                }
                // Later segments still read.
                let next_seg = segs[bad.segment + 1].0;
                if next_seg < tail_good {
                    let v = p.read(next_seg, usize::MAX).unwrap();
                    prop_assert_eq!(v.first().map(|r| r.0), Some(next_seg));
                    prop_assert_eq!(v.last().map(|r| r.0), Some(tail_good - 1));
                    for (off, rec) in &v {
                        prop_assert_eq!(rec, &expected[*off as usize]);
                    }
                }
            }
        }

        // The recovered partition takes appends at the right offset.
        prop_assert_eq!(p.append(&[b"after recovery"]).unwrap(), tail_good..tail_good + 1);
        prop_assert_eq!(p.read(tail_good, 1).unwrap(), vec![(tail_good, b"after recovery".to_vec())]);
    }
}
