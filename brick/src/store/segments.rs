//! An arena's records cut into stretches of at most [`SEGMENT_BYTES`] as
//! they are appended, each closed at a record's end with the crc32 of its
//! bytes. A recovery copy sends the stretches as its chunks
//! ([`super::Partition::copy_chunk`]): its source then neither walks the
//! records to find where a chunk may end nor reads every byte for the
//! frame's crc while the copy runs, on the event loop that serves the
//! clients too (together about a sixth of that loop's time in a copy
//! under load). A stretch's crc is computed once, when it closes: one
//! pass over 512 KiB that the appends have just written, a few tens of
//! microseconds every few thousand appends.
//!
//! The stretches cover what was appended record by record, or found by
//! the scan at a reopen, since the arena was opened or last cut back;
//! bytes that came another way (a copy's chunks written through the file)
//! lie in a gap that no stretch covers, and a copy walks and checksums
//! those as before, up to the next stretch's start.

/// The most bytes of one stretch, unless a single record is longer. A
/// recovery copy's chunks are this large (see `node/recovery.rs`).
pub const SEGMENT_BYTES: usize = 512 * 1024;

/// One closed stretch: `len` bytes of whole records from `start`, whose
/// crc32 is `crc`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub start: u64,
    pub len: u64,
    pub crc: u32,
}

/// The stretches of one arena.
#[derive(Debug)]
pub(super) struct Segments {
    /// Closed stretches, in arena order, none overlapping.
    closed: Vec<Segment>,
    /// Where the stretch being appended to starts: a record's start, at or
    /// below the arena's end.
    open: u64,
}

impl Segments {
    /// No stretches; appends from `end` on are cut into them.
    pub(super) fn from(end: u64) -> Segments {
        Segments {
            closed: Vec::new(),
            open: end,
        }
    }

    /// Before a record of `len` bytes is appended at `end` (the arena's
    /// end) of `bytes`: closes the open stretch at `end` if the record
    /// would take it past [`SEGMENT_BYTES`].
    pub(super) fn before_append(&mut self, bytes: &[u8], end: u64, len: u64) {
        debug_assert!(self.open <= end);
        if end > self.open && end + len - self.open > SEGMENT_BYTES as u64 {
            let crc = maps::crc32(&bytes[self.open as usize..end as usize]);
            self.closed.push(Segment {
                start: self.open,
                len: end - self.open,
                crc,
            });
            self.open = end;
        }
    }

    /// The arena's end moved to `end` other than by appending records one
    /// by one (bytes written through the file, a reset, a reopen): closed
    /// stretches past `end` are dropped, the open one is given up, and the
    /// next stretch starts at `end`.
    pub(super) fn restart_at(&mut self, end: u64) {
        let keep = self.closed.partition_point(|s| s.start + s.len <= end);
        self.closed.truncate(keep);
        self.open = end;
    }

    /// The closed stretch that starts at `offset`, if any.
    pub(super) fn at(&self, offset: u64) -> Option<Segment> {
        let i = self.closed.partition_point(|s| s.start < offset);
        self.closed.get(i).filter(|s| s.start == offset).copied()
    }

    /// The nearest start of a stretch (closed or open) past `offset`: a
    /// chunk walked from `offset` ends there, so the next chunk is a
    /// stretch again.
    pub(super) fn next_start_after(&self, offset: u64) -> Option<u64> {
        let i = self.closed.partition_point(|s| s.start <= offset);
        match self.closed.get(i) {
            Some(s) => Some(s.start),
            None => (self.open > offset).then_some(self.open),
        }
    }

    /// Every closed stretch, for tests.
    #[cfg(test)]
    pub(super) fn closed(&self) -> &[Segment] {
        &self.closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Appends `lens` records of those lengths from offset 64 of `bytes`.
    fn appended(segments: &mut Segments, bytes: &[u8], lens: &[u64]) -> u64 {
        let mut end = 64;
        for &len in lens {
            segments.before_append(bytes, end, len);
            end += len;
        }
        end
    }

    #[test]
    fn stretches_close_at_record_ends_and_carry_the_crc_of_their_bytes() {
        let bytes: Vec<u8> = (0..4 << 20).map(|i: u32| (i * 7 % 251) as u8).collect();
        let mut segments = Segments::from(64);
        let lens: Vec<u64> = (0..12_000).map(|i| 100 + (i * 37) % 300).collect();
        let end = appended(&mut segments, &bytes, &lens);
        let closed = segments.closed().to_vec();
        assert!(closed.len() >= 5, "{} stretches", closed.len());
        let mut at = 64;
        for s in &closed {
            assert_eq!(s.start, at, "stretches follow each other");
            assert!(s.len <= SEGMENT_BYTES as u64);
            assert!(s.len > SEGMENT_BYTES as u64 - 400, "closed only when full");
            let range = s.start as usize..(s.start + s.len) as usize;
            assert_eq!(s.crc, crc32fast::hash(&bytes[range]));
            assert_eq!(segments.at(s.start), Some(*s));
            assert_eq!(segments.at(s.start + 1), None);
            at += s.len;
        }
        assert!(at < end);
        assert_eq!(segments.next_start_after(65), Some(closed[1].start));
        assert_eq!(segments.next_start_after(at - 1), Some(at), "the open one");
        assert_eq!(segments.next_start_after(at), None);

        // A record longer than a stretch is a stretch of its own.
        let mut big = Segments::from(64);
        appended(&mut big, &bytes, &[10, 600 << 10, 10]);
        assert_eq!(big.closed().len(), 2);
        assert_eq!(big.closed()[1].len, 600 << 10);

        // Cut back: stretches past the new end go, the next starts there.
        segments.restart_at(closed[2].start + 5);
        assert_eq!(segments.closed(), &closed[..2]);
        assert_eq!(
            segments.next_start_after(closed[2].start),
            Some(closed[2].start + 5)
        );
        segments.restart_at(64);
        assert!(segments.closed().is_empty());
    }
}
