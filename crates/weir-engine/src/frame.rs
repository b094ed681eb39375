//! Cutting records out of a byte stream: newline-delimited or
//! varint-length-delimited (as Protobuf's `writeDelimitedTo`).
//!
//! The source thread only finds record boundaries (memchr / varint reads),
//! so it stays cheap; parsing happens on the shard workers.

use weir_config::Framing;

/// Outcome of looking for the next record at the start of `buf`.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// A record: its byte range within `buf` and the total bytes consumed.
    Record {
        /// Start of the record's bytes.
        start: usize,
        /// End (exclusive) of the record's bytes.
        end: usize,
        /// Bytes consumed, including framing.
        consumed: usize,
    },
    /// More bytes are needed (only possible before end of input).
    Incomplete,
    /// The framing itself is broken (bad varint); `consumed` bytes are
    /// dropped to resynchronise and reported as one bad record.
    Corrupt {
        /// Bytes to drop.
        consumed: usize,
        /// Why.
        reason: &'static str,
    },
}

/// Appends `v` as a protobuf varint (the length prefix of
/// length-delimited framing).
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Finds the next record. With `at_end`, a final line without `\n` is a
/// record and a truncated length-delimited frame is corrupt.
pub fn next_record(framing: Framing, buf: &[u8], at_end: bool) -> Next {
    match framing {
        Framing::Lines => match memchr::memchr(b'\n', buf) {
            Some(i) => {
                let end = if i > 0 && buf[i - 1] == b'\r' {
                    i - 1
                } else {
                    i
                };
                Next::Record {
                    start: 0,
                    end,
                    consumed: i + 1,
                }
            }
            None if at_end && !buf.is_empty() => Next::Record {
                start: 0,
                end: buf.len(),
                consumed: buf.len(),
            },
            None => Next::Incomplete,
        },
        Framing::LengthDelimited => {
            let mut len: u64 = 0;
            for (i, &b) in buf.iter().enumerate().take(10) {
                len |= ((b & 0x7f) as u64) << (7 * i);
                if b & 0x80 == 0 {
                    let start = i + 1;
                    let Some(end) = (start as u64).checked_add(len) else {
                        return Next::Corrupt {
                            consumed: start,
                            reason: "invalid varint length prefix",
                        };
                    };
                    if end > buf.len() as u64 {
                        return if at_end {
                            Next::Corrupt {
                                consumed: buf.len(),
                                reason: "truncated length-delimited record at end of input",
                            }
                        } else {
                            Next::Incomplete
                        };
                    }
                    return Next::Record {
                        start,
                        end: end as usize,
                        consumed: end as usize,
                    };
                }
            }
            if buf.len() >= 10 {
                Next::Corrupt {
                    consumed: buf.len().min(10),
                    reason: "invalid varint length prefix",
                }
            } else if at_end {
                Next::Corrupt {
                    consumed: buf.len(),
                    reason: "truncated varint length prefix at end of input",
                }
            } else {
                Next::Incomplete
            }
        }
    }
}

/// A record, or the bytes of a broken frame and why it is broken.
pub type Framed<'a> = Result<&'a [u8], (&'static str, &'a [u8])>;

/// Iterates over the records of a chunk known to hold only whole records.
pub fn records(framing: Framing, mut buf: &[u8]) -> impl Iterator<Item = Framed<'_>> {
    std::iter::from_fn(move || {
        if buf.is_empty() {
            return None;
        }
        match next_record(framing, buf, true) {
            Next::Record {
                start,
                end,
                consumed,
            } => {
                let rec = &buf[start..end];
                buf = &buf[consumed..];
                Some(Ok(rec))
            }
            Next::Corrupt { consumed, reason } => {
                let (bad, rest) = buf.split_at(consumed.max(1).min(buf.len()));
                buf = rest;
                Some(Err((reason, bad)))
            }
            // unwrap-free: with at_end = true, Incomplete cannot happen.
            Next::Incomplete => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_with_and_without_final_newline() {
        let v: Vec<_> = records(Framing::Lines, b"a\r\nbb\nccc").collect();
        assert_eq!(v, vec![Ok(&b"a"[..]), Ok(&b"bb"[..]), Ok(&b"ccc"[..])]);
        assert_eq!(next_record(Framing::Lines, b"abc", false), Next::Incomplete);
    }

    #[test]
    fn length_delimited() {
        let buf = [2u8, b'h', b'i', 0, 1, b'x'];
        let v: Vec<_> = records(Framing::LengthDelimited, &buf).collect();
        assert_eq!(v, vec![Ok(&b"hi"[..]), Ok(&b""[..]), Ok(&b"x"[..])]);
        assert_eq!(
            next_record(Framing::LengthDelimited, &[5, 1], false),
            Next::Incomplete
        );
        assert!(matches!(
            next_record(Framing::LengthDelimited, &[5, 1], true),
            Next::Corrupt { .. }
        ));
        assert!(matches!(
            next_record(Framing::LengthDelimited, &[0xff; 12], false),
            Next::Corrupt { .. }
        ));
    }
}
