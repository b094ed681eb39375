//! The reusable buffer a source connector fills.

/// One received record: its place, and where its payload ends in
/// [`Received::data`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceivedRecord {
    /// Partition, `0..partitions()`.
    pub partition: u32,
    /// Offset within the partition (strictly growing).
    pub offset: u64,
    end: usize,
}

/// Records received in one poll: payloads back to back in one buffer, so
/// a poll allocates nothing once the buffer has grown.
#[derive(Debug, Default)]
pub struct Received {
    data: Vec<u8>,
    records: Vec<ReceivedRecord>,
}

impl Received {
    /// Appends a record.
    pub fn push(&mut self, partition: u32, offset: u64, payload: &[u8]) {
        self.data.extend_from_slice(payload);
        self.records.push(ReceivedRecord {
            partition,
            offset,
            end: self.data.len(),
        });
    }

    /// Empties the buffer, keeping its capacity.
    pub fn clear(&mut self) {
        self.data.clear();
        self.records.clear();
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Each record with its payload, in arrival order.
    pub fn iter(&self) -> impl Iterator<Item = (ReceivedRecord, &[u8])> + '_ {
        let mut start = 0;
        self.records.iter().map(move |r| {
            let payload = &self.data[start..r.end];
            start = r.end;
            (*r, payload)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_come_back_in_order() {
        let mut r = Received::default();
        r.push(0, 7, b"ab");
        r.push(1, 3, b"");
        r.push(0, 8, b"cde");
        let got: Vec<(u32, u64, Vec<u8>)> = r
            .iter()
            .map(|(m, p)| (m.partition, m.offset, p.to_vec()))
            .collect();
        assert_eq!(
            got,
            vec![
                (0, 7, b"ab".to_vec()),
                (1, 3, vec![]),
                (0, 8, b"cde".to_vec())
            ]
        );
        r.clear();
        assert!(r.is_empty());
    }
}
