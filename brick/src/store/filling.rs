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

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

use super::{parse_chunk, ChunkCheck, ChunkRecord, Partition, StoreError};
use crate::store::RECORD_HEADER_BYTES_MIN;

/// Chunks the caller may be ahead of the helper; one more makes it wait.
/// As many as a copy's source keeps in flight, so that the event loop
/// waits for the helper only when the helper fell behind by a whole
/// window (a brick's loop serves other partitions meanwhile); this many
/// chunks' record lists are what the queue holds at most.
pub const QUEUE_CHUNKS: usize = 4;

/// The zero bytes of an end marker.
const END_MARKER: [u8; RECORD_HEADER_BYTES_MIN as usize] = [0; RECORD_HEADER_BYTES_MIN as usize];

/// One chunk for the helper: where it starts in the arena, its records, and
/// its bytes when the helper must copy them in (anonymous arenas).
struct Batch {
    start: u64,
    len: u64,
    records: Vec<ChunkRecord>,
    bytes: Option<Vec<u8>>,
}

/// A partition that receives a copy's chunks ([`Filling::append_chunk_with`])
/// and is handed back whole by [`Filling::finish`].
pub struct Filling {
    /// The arena's file, written at `end` by this thread; `None` for an
    /// anonymous arena.
    file: Option<File>,
    end: u64,
    capacity: u64,
    queue: Option<SyncSender<Batch>>,
    helper: Option<JoinHandle<Partition>>,
    /// Set when the copy is abandoned: the helper skips what is queued.
    abandoned: Arc<AtomicBool>,
}

impl Partition {
    /// Starts filling this partition with a copy's chunks, indexing them on
    /// a helper thread. Background compaction must be paused (a copy's
    /// offsets are the source's); the partition comes back from
    /// [`Filling::finish`].
    pub fn into_filling(self) -> Result<Filling, StoreError> {
        let file = self.main.file_handle().map_err(StoreError::Io)?;
        let (end, capacity) = (self.main.end, self.main.capacity());
        let (queue, batches) = sync_channel::<Batch>(QUEUE_CHUNKS);
        let mut partition = self;
        let abandoned = Arc::new(AtomicBool::new(false));
        let skip = Arc::clone(&abandoned);
        let helper = std::thread::Builder::new()
            .name("copy-index".to_string())
            .spawn(move || {
                for batch in batches {
                    if skip.load(Ordering::Relaxed) {
                        continue;
                    }
                    match &batch.bytes {
                        Some(bytes) => {
                            // An anonymous arena: a copy into memory, which
                            // cannot fail.
                            let _ = partition.main.append_bytes(bytes);
                        }
                        None => partition.main.take_written(batch.len),
                    }
                    partition.replay_chunk(batch.start, &batch.records);
                    if batch.bytes.is_some() {
                        partition.main.mark_end();
                    }
                }
                partition
            })
            .map_err(StoreError::Io)?;
        Ok(Filling {
            file,
            end,
            capacity,
            queue: Some(queue),
            helper: Some(helper),
            abandoned,
        })
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
        let records = parse_chunk(offset, self.end, free, chunk, check)?;
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
            each_key(shape.live, shape.key(chunk, at));
        }
        let batch = Batch {
            start: offset,
            len,
            records,
            bytes,
        };
        let sent = self.queue.as_ref().is_some_and(|q| q.send(batch).is_ok());
        if !sent {
            return Err(helper_stopped());
        }
        self.end += len;
        Ok(())
    }

    /// The arena's capacity, header page included.
    pub fn capacity_bytes(&self) -> u64 {
        self.capacity
    }

    /// Waits for the helper to index every chunk and returns the partition.
    pub fn finish(mut self) -> Result<Partition, StoreError> {
        self.queue = None;
        match self.helper.take().map(JoinHandle::join) {
            Some(Ok(partition)) => Ok(partition),
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
