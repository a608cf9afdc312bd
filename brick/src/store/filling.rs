//! A partition being filled by a recovery copy, on two threads: the caller
//! checks each chunk's records and writes the chunk into the arena's file,
//! and a helper thread, which owns the [`Partition`] until the copy ends,
//! indexes the records. Indexing was almost half of what the receiving
//! side spent (each record's index slot is a cache miss), checking and
//! writing most of the rest, so with a second core the two halves overlap.
//!
//! The helper only reads records below the end it was told of, which the
//! caller wrote (and finished writing) before it said so; the caller only
//! writes past that end. An anonymous arena (tests, the simulator) has no
//! file to write through, so its chunks travel to the helper, which copies
//! them in.
//!
//! With the source's index ([`Filling::use_index`]) the caller checks
//! nothing of the chunks below the index's end: it writes them, and the
//! helper walks their records, checking each one's structure, and checks
//! every index entry against them: each must be the start of a live record
//! (so that no lookup ever reads a record at an offset that is not one).
//! The entries are grouped by the stretch of the arena they point into
//! when the index arrives (two passes over the table), and for each chunk
//! the entries pointing into it are marked in a bitmap of its bytes, which
//! the walk reads. The digest and live bytes are summed over the records
//! the entries point at, so the end of the copy is checked against the
//! source's digest as before. The entries' tags are the source's, as its
//! records are: a wrong one would lose the key at the source too. Until the
//! walk passes the index's end no lookup runs on the index, since chunks
//! past it come later; a mismatch fails the copy, which is then never
//! installed.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

use xxhash_rust::xxh3::xxh3_64;

use super::index::{self, Index, IndexImage};
use super::record::{self, Parsed};
use super::{
    check_chunk_place, parse_chunk, record_digest, ChunkCheck, ChunkRecord, Partition, StoreError,
    HEADER_BYTES, WALK_AHEAD_BYTES,
};
use crate::store::RECORD_HEADER_BYTES_MIN;

/// Chunks the caller may be ahead of the helper; one more makes it wait.
/// As many as a copy's source keeps in flight, so that the event loop
/// waits for the helper only when the helper fell behind by a whole
/// window (a brick's loop serves other partitions meanwhile); this many
/// chunks' record lists are what the queue holds at most.
pub const QUEUE_CHUNKS: usize = 4;

/// The zero bytes of an end marker.
const END_MARKER: [u8; RECORD_HEADER_BYTES_MIN as usize] = [0; RECORD_HEADER_BYTES_MIN as usize];

/// Keys that start with a prefix, in arena order, each with whether its
/// record is live: what [`Filling::finish`] reports of the records below
/// the end of an index the copy brought.
pub type PrefixedKeys = Vec<(bool, Vec<u8>)>;

/// Work for the helper. A chunk's bytes travel with it when the helper must
/// copy them in (anonymous arenas).
enum Batch {
    /// A chunk the caller checked, with its records.
    Records {
        start: u64,
        len: u64,
        records: Vec<ChunkRecord>,
        bytes: Option<Vec<u8>>,
    },
    /// A chunk below the end of the source's index, unchecked.
    Unparsed {
        start: u64,
        len: u64,
        bytes: Option<Vec<u8>>,
    },
    /// The source's index, describing the records up to `end`; keys that
    /// start with `prefix` are to be reported.
    Index {
        image: IndexImage,
        end: u64,
        prefix: Vec<u8>,
    },
}

/// The helper's check of the source's index against the records below its
/// end.
struct Verify {
    /// The offsets of the index's entries, grouped by the stretch of
    /// `1 << BUCKET_SHIFT` bytes they fall in: stretch `b`'s are
    /// `offsets[starts[b]..starts[b + 1]]`.
    offsets: Vec<u64>,
    starts: Vec<usize>,
    /// Entries not yet matched with a record.
    left: usize,
    end: u64,
    /// Whether the walk reached `end`.
    done: bool,
    /// A bit per byte of the chunk being walked: where entries point.
    marks: Vec<u64>,
    prefix: Vec<u8>,
    prefixed: PrefixedKeys,
}

/// The stretches of arena the entries of an index are grouped by: about a
/// chunk's bytes, so a chunk's entries are a few groups.
const BUCKET_SHIFT: u32 = 19;

/// What the helper hands back.
type Filled = (Partition, Result<PrefixedKeys, StoreError>);

/// A partition that receives a copy's chunks ([`Filling::append_chunk_with`])
/// and is handed back whole by [`Filling::finish`].
pub struct Filling {
    /// The arena's file, written at `end` by this thread; `None` for an
    /// anonymous arena.
    file: Option<File>,
    end: u64,
    capacity: u64,
    /// Location bits of the partition's index, which an index sent with
    /// the copy must have.
    location_bits: u32,
    /// The end of the source's index in use: chunks below it go unchecked
    /// to the helper. Zero without one.
    index_end: u64,
    queue: Option<SyncSender<Batch>>,
    helper: Option<JoinHandle<Filled>>,
    /// Set when the copy is abandoned: the helper skips what is queued.
    abandoned: Arc<AtomicBool>,
    /// Set by the helper when the chunks failed its checks: the copy is
    /// lost, and the next chunk is refused.
    failed: Arc<AtomicBool>,
}

impl Partition {
    /// Starts filling this partition with a copy's chunks, indexing them on
    /// a helper thread. Background compaction must be paused (a copy's
    /// offsets are the source's); the partition comes back from
    /// [`Filling::finish`].
    pub fn into_filling(self) -> Result<Filling, StoreError> {
        let file = self.main.file_handle().map_err(StoreError::Io)?;
        let (end, capacity) = (self.main.end, self.main.capacity());
        let location_bits = self.locations.bits();
        let (queue, batches) = sync_channel::<Batch>(QUEUE_CHUNKS);
        let mut partition = self;
        let abandoned = Arc::new(AtomicBool::new(false));
        let failed = Arc::new(AtomicBool::new(false));
        let (skip, fail) = (Arc::clone(&abandoned), Arc::clone(&failed));
        let helper = std::thread::Builder::new()
            .name("copy-index".to_string())
            .spawn(move || {
                let mut verify: Option<Verify> = None;
                let mut result = Ok(());
                for batch in batches {
                    if skip.load(Ordering::Relaxed) || result.is_err() {
                        continue;
                    }
                    result = partition.take_batch(batch, &mut verify);
                    if result.is_err() {
                        fail.store(true, Ordering::Relaxed);
                    }
                }
                let result = result.and_then(|()| match verify {
                    None => Ok(PrefixedKeys::new()),
                    Some(v) if v.done => Ok(v.prefixed),
                    Some(v) => Err(StoreError::Corrupt {
                        offset: v.end,
                        reason: "the copy ended before the end of the index sent with it",
                    }),
                });
                (partition, result)
            })
            .map_err(StoreError::Io)?;
        Ok(Filling {
            file,
            end,
            capacity,
            location_bits,
            index_end: 0,
            queue: Some(queue),
            helper: Some(helper),
            abandoned,
            failed,
        })
    }

    /// The helper's part of one batch.
    fn take_batch(&mut self, batch: Batch, verify: &mut Option<Verify>) -> Result<(), StoreError> {
        match batch {
            Batch::Records {
                start,
                len,
                records,
                bytes,
            } => {
                self.adopt(len, bytes);
                self.replay_chunk(start, &records);
                Ok(())
            }
            Batch::Unparsed { start, len, bytes } => {
                self.adopt(len, bytes);
                let v = verify.as_mut().ok_or(StoreError::Corrupt {
                    offset: start,
                    reason: "unchecked records without an index",
                })?;
                self.check_against_index(start, len, v)
            }
            Batch::Index { image, end, prefix } => {
                let (offsets, starts) = self
                    .install_index(image, end)
                    .map_err(|reason| StoreError::Corrupt { offset: 0, reason })?;
                *verify = Some(Verify {
                    left: offsets.len(),
                    offsets,
                    starts,
                    end,
                    done: false,
                    marks: Vec::new(),
                    prefix,
                    prefixed: PrefixedKeys::new(),
                });
                Ok(())
            }
        }
    }

    /// Takes `len` bytes at the arena's end: written through the file by
    /// the caller, or copied in here (an anonymous arena, which cannot
    /// fail).
    fn adopt(&mut self, len: u64, bytes: Option<Vec<u8>>) {
        match bytes {
            Some(bytes) => {
                let _ = self.main.append_bytes(&bytes);
                self.main.mark_end();
            }
            None => self.main.take_written(len),
        }
    }

    /// Makes the source's index this partition's, with this arena's parity
    /// in its locations, and returns the offsets its entries point at,
    /// grouped as [`Verify`] keeps them, for
    /// [`Partition::check_against_index`]. Every offset must lie between
    /// the arena's header and `end`. The digest and live bytes start from
    /// zero: the check sums them over the records the entries point at.
    #[allow(clippy::type_complexity)]
    fn install_index(
        &mut self,
        image: IndexImage,
        end: u64,
    ) -> Result<(Vec<u64>, Vec<usize>), &'static str> {
        let locations = self.locations;
        let parity_bit = 1u64 << locations.offset_bits;
        let parity = if self.main.parity() == 1 {
            parity_bit
        } else {
            0
        };
        let index = Index::from_image(locations.bits(), image, |slot| {
            (slot & !parity_bit) | parity
        })?;
        let offset_mask = parity_bit - 1;
        let slots = index
            .table_slots()
            .expect("an index from an image is not growing");
        let buckets = (end >> BUCKET_SHIFT) as usize + 1;
        let mut starts = vec![0usize; buckets + 1];
        for &slot in slots.iter().filter(|&&s| s != 0) {
            let offset = slot & offset_mask;
            if !(HEADER_BYTES..end).contains(&offset) {
                return Err("an index entry points outside the records it describes");
            }
            starts[(offset >> BUCKET_SHIFT) as usize + 1] += 1;
        }
        for b in 1..=buckets {
            starts[b] += starts[b - 1];
        }
        let mut offsets = vec![0u64; index.len()];
        let mut next = starts.clone();
        for &slot in slots.iter().filter(|&&s| s != 0) {
            let offset = slot & offset_mask;
            let bucket = (offset >> BUCKET_SHIFT) as usize;
            offsets[next[bucket]] = offset;
            next[bucket] += 1;
        }
        self.index = index;
        self.live_bytes = 0;
        self.digest_sum = 0;
        Ok((offsets, starts))
    }

    /// Walks the records of `start..start + len`, checking each one's
    /// structure, and matches the index entries that point into it: each
    /// must be the start of a live record. Once the walk reaches the
    /// index's end, every entry must have been matched.
    fn check_against_index(
        &mut self,
        start: u64,
        len: u64,
        v: &mut Verify,
    ) -> Result<(), StoreError> {
        let corrupt = |offset, reason| StoreError::Corrupt { offset, reason };
        let to = start + len;
        if v.done || to > v.end {
            return Err(corrupt(start, "unchecked records past the index's end"));
        }
        v.marks.clear();
        v.marks.resize((len as usize).div_ceil(64), 0);
        let mut marked = 0usize;
        let buckets = (start >> BUCKET_SHIFT) as usize..=((to - 1) >> BUCKET_SHIFT) as usize;
        for &offset in &v.offsets[v.starts[*buckets.start()]..v.starts[buckets.end() + 1]] {
            if (start..to).contains(&offset) {
                let bit = (offset - start) as usize;
                v.marks[bit / 64] |= 1 << (bit % 64);
                marked += 1;
            }
        }
        // The pages the loop wrote through the file are read through the
        // map as they come: the faults, a few pages at a time, cost less
        // than mapping each chunk's pages first with MADV_POPULATE_READ,
        // whose page walk was a seventh of this thread's time (`copy_bench`,
        // the append with the index: 52 against 58 ms of CPU, means of
        // eight alternating runs).
        let bytes = self.main.bytes();
        let (mut at, mut ahead, mut matched) = (start, start, 0usize);
        while at < to {
            while ahead < (at + WALK_AHEAD_BYTES).min(to) {
                index::prefetch(&bytes[ahead as usize]);
                ahead += 64;
            }
            let shape = match record::parse_structure(bytes, at) {
                Parsed::Record(shape) if at + shape.len <= to => shape,
                Parsed::Record(_) => return Err(corrupt(at, "a record runs past its chunk")),
                Parsed::End => {
                    return Err(corrupt(
                        at,
                        "a copy chunk holds zero bytes where a record should be",
                    ))
                }
                Parsed::Invalid(reason) => return Err(corrupt(at, reason)),
            };
            let key = shape.key(bytes, at);
            // A byte-wise loop: the prefix is a byte or two, and
            // `starts_with` calls `memcmp` for each of the records.
            if key.len() >= v.prefix.len() && key.iter().zip(&v.prefix).all(|(a, b)| a == b) {
                v.prefixed.push((shape.live, key.to_vec()));
            }
            let bit = (at - start) as usize;
            if v.marks[bit / 64] & (1 << (bit % 64)) != 0 {
                if !shape.live {
                    return Err(corrupt(at, "an index entry points at a tombstone"));
                }
                self.live_bytes += shape.len;
                let digest = record_digest(xxh3_64(key), shape.crc);
                self.digest_sum = self.digest_sum.wrapping_add(digest);
                matched += 1;
            }
            at += shape.len;
        }
        if matched != marked {
            return Err(corrupt(start, "an index entry points inside a record"));
        }
        v.left -= matched;
        if to == v.end {
            if v.left != 0 {
                return Err(corrupt(to, "index entries are left unmatched"));
            }
            v.done = true;
            v.offsets = Vec::new();
            v.marks = Vec::new();
        }
        Ok(())
    }
}

impl Filling {
    /// Appends a chunk of another arena's records (from
    /// [`Partition::chunk`]) at `offset`, which must be the end of what
    /// was appended so far, checking its records as `check` says before
    /// anything is written, and calling `each_key` with every record's key
    /// and whether it is live, in order, once the chunk is written. A
    /// chunk that fails the check changes nothing; after any other error
    /// the copy is to be dropped. The chunk is indexed
    /// later, on the helper thread; this waits only when that thread is
    /// [`QUEUE_CHUNKS`] chunks behind.
    pub fn append_chunk_with(
        &mut self,
        offset: u64,
        chunk: &[u8],
        check: ChunkCheck,
        mut each_key: impl FnMut(bool, &[u8]),
    ) -> Result<(), StoreError> {
        let free = self.capacity - self.end;
        if self.failed.load(Ordering::Relaxed) {
            return Err(StoreError::Corrupt {
                offset,
                reason: "the copy's records do not match the index sent with it",
            });
        }
        check_chunk_place(offset, self.end, free, chunk.len())?;
        // Below the index's end the helper checks the records; past it,
        // this thread does, before anything is written.
        let unchecked = self
            .index_end
            .saturating_sub(offset)
            .min(chunk.len() as u64);
        let (below, past) = chunk.split_at(unchecked as usize);
        let from = offset + unchecked;
        let records = parse_chunk(from, from, free, past, check)?;
        let len = chunk.len() as u64;
        let bytes = match &self.file {
            Some(file) => {
                file.write_all_at(chunk, offset).map_err(StoreError::Io)?;
                // Bytes of an earlier copy past the new end must read as the
                // end at a reopen (see `Arena::mark_end`).
                let room = (self.capacity - offset - len).min(END_MARKER.len() as u64);
                file.write_all_at(&END_MARKER[..room as usize], offset + len)
                    .map_err(StoreError::Io)?;
                None
            }
            None => Some(chunk.to_vec()),
        };
        for &(at, shape, _) in &records {
            each_key(shape.live, shape.key(past, at));
        }
        let (below_bytes, past_bytes) = match bytes {
            Some(mut all) => {
                let past = all.split_off(below.len());
                (Some(all), Some(past))
            }
            None => (None, None),
        };
        if !below.is_empty() {
            self.send(Batch::Unparsed {
                start: offset,
                len: below.len() as u64,
                bytes: below_bytes,
            })?;
        }
        if !past.is_empty() || below.is_empty() {
            self.send(Batch::Records {
                start: offset + unchecked,
                len: past.len() as u64,
                records,
                bytes: past_bytes,
            })?;
        }
        self.end += len;
        Ok(())
    }

    /// Takes the source's index, which describes the records up to `end`,
    /// before the first chunk: chunks below `end` are then written without
    /// a check here, and the helper checks them against the index instead
    /// of indexing them (see the module docs). Keys that start with
    /// `prefix` among those records come back from [`Filling::finish`],
    /// since `append_chunk_with` does not see them. Returns false, and the
    /// copy goes on as without it, when the index cannot be used: it is
    /// incomplete, its locations are of another size, a chunk came first,
    /// or `end` is past this arena's capacity.
    pub fn use_index(
        &mut self,
        image: IndexImage,
        end: u64,
        location_bits: u32,
        prefix: &[u8],
    ) -> bool {
        let usable = image.is_complete()
            && location_bits == self.location_bits
            && self.end == HEADER_BYTES
            && self.index_end == 0
            && (HEADER_BYTES..=self.capacity).contains(&end);
        if !usable {
            return false;
        }
        let batch = Batch::Index {
            image,
            end,
            prefix: prefix.to_vec(),
        };
        if self.send(batch).is_err() {
            return false;
        }
        self.index_end = end;
        true
    }

    /// Whether the copy uses the source's index.
    pub fn uses_index(&self) -> bool {
        self.index_end != 0
    }

    /// Where the next chunk goes.
    pub fn end(&self) -> u64 {
        self.end
    }

    fn send(&self, batch: Batch) -> Result<(), StoreError> {
        let sent = self.queue.as_ref().is_some_and(|q| q.send(batch).is_ok());
        if sent {
            Ok(())
        } else {
            Err(helper_stopped())
        }
    }

    /// The arena's capacity, header page included.
    pub fn capacity_bytes(&self) -> u64 {
        self.capacity
    }

    /// Waits for the helper to index (or check) every chunk and returns
    /// the partition, with the keys of [`Filling::use_index`]'s prefix
    /// among the records the helper checked.
    pub fn finish(mut self) -> Result<(Partition, PrefixedKeys), StoreError> {
        self.queue = None;
        match self.helper.take().map(JoinHandle::join) {
            Some(Ok((partition, Ok(prefixed)))) => Ok((partition, prefixed)),
            Some(Ok((_, Err(e)))) => Err(e),
            _ => Err(helper_stopped()),
        }
    }
}

impl Drop for Filling {
    /// An abandoned copy: the helper skips what is queued and drops the
    /// partition. The file holds every chunk written, up to an end marker,
    /// whatever the helper had indexed.
    fn drop(&mut self) {
        self.abandoned.store(true, Ordering::Relaxed);
        self.queue = None;
        if let Some(helper) = self.helper.take() {
            let _ = helper.join();
        }
    }
}

fn helper_stopped() -> StoreError {
    StoreError::Io(io::Error::other(
        "the thread indexing a copy's records stopped",
    ))
}
