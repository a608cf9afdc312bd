//! One partition of the hash table: an append-only arena of records in a
//! memory map, and a compact in-memory index from key to its latest record.
//!
//! This module holds the storage of one partition and nothing about
//! networking, tables, locks or replication: keys are opaque bytes (the node
//! prefixes them with the table name), and a [`Partition`] is driven by plain
//! method calls. The byte format is in `record` (and its module docs), the
//! mapping and files in `arena`, the hash table in [`index`].
//!
//! # Layout and writes
//!
//! An arena is `capacity` bytes: a 64-byte header page (magic, version,
//! capacity, generation), then records back to back, then zeros. A put
//! appends a live record, a remove appends a tombstone; nothing is written in
//! place. A put or remove either completes or changes nothing: every check
//! that can fail runs before the first byte is written (a synchronous
//! compaction it runs first may move records, never change them).
//!
//! The index maps each key to the location of its latest live record. It
//! stores no key, only a location (offset and arena parity, 28 bits for a
//! 100 MiB arena) and a tag of the key's hash in the other bits, in 8-byte
//! slots of an open-addressing table kept between 7/16 and 7/8 full: 9 to
//! 18 bytes per key. Reads return a slice of the map, not a copy.
//!
//! # Full arenas
//!
//! A put is refused with [`StoreError::Full`] only when the live data plus
//! the new record would not fit in the capacity even after compaction. The
//! old version of an overwritten key counts as live in that sum, because it
//! stays live until the new record is in. If the live data fits but the
//! arena's tail has no room, the put compacts synchronously (rare, and
//! proportional to the live data) and then appends. [`Partition::can_fit`]
//! applies the same rule, so a write that two-phase commit prepared after a
//! `can_fit` check cannot fail at commit.
//!
//! A remove of a live key never fails for lack of space: when the tail has
//! no room for its tombstone, the partition is compacted without that key,
//! and then no tombstone is needed.
//!
//! # Compaction
//!
//! Compaction copies the live records into a fresh arena of the next
//! generation while puts and removes go on between bounded steps
//! ([`Partition::compact_step`]). Writes keep going to the old arena, so it
//! stays complete: a crash at any point reopens the old arena with every
//! write, and the half-built `<file>.compact` is deleted on open.
//!
//! The scheme: remember the old arena's end at the start (`start_end`); a
//! cursor walks the old arena from the header to its *current* end, which
//! moves as writes append. At each record:
//!
//! * A live record whose index entry points at exactly this location is the
//!   key's current value: it is appended to the new arena and the index
//!   entry repointed there (locations carry the arena's generation parity,
//!   so the index can point into either arena).
//! * Any other live record is superseded by a later record of its key in the
//!   old arena, past the cursor, and is dropped.
//! * A tombstone before `start_end` is dropped: every earlier record of its
//!   key was dead when compaction began, so none of them was copied.
//! * A tombstone at or after `start_end` is copied, because the new arena may
//!   hold a copy of an earlier record of its key, taken before the remove.
//!
//! Invariant: replaying the new arena and then the old arena from the cursor
//! on gives the current contents. Copying a record keeps the replayed
//! sequence the same; dropping one is allowed only when a later record of
//! its key follows in the old arena, or (tombstones before `start_end`) when
//! the new arena holds nothing of its key. When the cursor reaches the end,
//! the new arena alone holds the contents; it is synced and renamed over the
//! old file (atomic), and the old map is dropped. The sync of a background
//! compaction runs on a helper thread ([`CompactStatus::Syncing`]): steps
//! meanwhile copy what is written to the old arena, and the arena is renamed
//! into place once the sync is done. What was copied after the sync began
//! is then as durable as a write since the last flush — unless a
//! [`Partition::flush`] came in between, in which case the install syncs
//! again before the rename.
//!
//! Memory during a compaction is two arenas. Copying tombstones written
//! during a compaction can leave a few that the next compaction removes.
//! A step copies at most about `budget_bytes` and visits at most four times
//! that in dead records, and asks the kernel to start writing the copied
//! bytes back, so the final sync has little left to do.
//!
//! A synchronous compaction (when a write finds no room at the tail) first
//! finishes any running one, then, if still short, rebuilds a fresh arena
//! from the index alone: it copies each indexed record in slot order, syncs
//! and renames, and only then repoints the index (in the same order), so a
//! failure leaves everything as it was. Its result is exactly the live data.
//!
//! [`Partition::set_compaction_paused`] stops background compaction, for a
//! recovery copy that streams the arena by offset. A write that finds no
//! room still compacts synchronously, since a prepared commit must not fail;
//! the copy notices because [`Partition::generation`] changes, and restarts.
//!
//! # Opening
//!
//! The header page is checked (magic, version, crc, and capacity equal to
//! the file's length). A file smaller than the configured capacity is grown
//! (the capacity is raised in its header); a larger one is refused with
//! [`StoreError::CapacityMismatch`], since shrinking could cut records off.
//! Records are then replayed from offset 64: later records of a key win and
//! tombstones remove. The scan stops at the end marker or at the first
//! invalid record (bad crc, unknown flags, lengths past the capacity); from
//! there to the last byte that is not zero is a torn tail, which is zeroed,
//! logged and counted in [`OpenReport::torn_tail_bytes`], so the next append
//! starts on clean bytes. Finding that last byte reads the file, skipping
//! holes, rather than the map, so it costs little and adds nothing to the
//! process's memory.
//!
//! Data written before a [`Partition::flush`] or a clean shutdown is there
//! after reopen; a process crash loses no completed write either, since the
//! writes are in the kernel's page cache. Only a machine crash can lose writes since
//! the last flush, which replication covers.

mod arena;
mod filling;
pub mod index;
mod record;
mod segments;

use std::cell::Cell;
use std::fmt;
use std::io;
use std::path::PathBuf;
use std::thread::JoinHandle;

use xxhash_rust::xxh3::xxh3_64;

use arena::{Arena, Leftovers};
pub use filling::{Filling, QUEUE_CHUNKS as FILLING_QUEUE_CHUNKS};
pub use index::IndexImage;
use index::{Index, Probe};
use record::{Parsed, Record, Shape};
use segments::Segments;
pub use segments::SEGMENT_BYTES as COPY_CHUNK_BYTES;

pub use record::{
    record_bytes, CAPACITY_MAX, CAPACITY_MIN, HEADER_BYTES, KEY_SIZE_MAX, RECORD_HEADER_BYTES_MAX,
    RECORD_HEADER_BYTES_MIN, VALUE_SIZE_MAX,
};

/// Dead bytes below which the ratio rule does not start a compaction. A
/// compaction has a fixed cost whatever it frees (a new arena file, its
/// first pages, two fsyncs before the rename, unmapping the old one): at
/// 1 MiB, a partition with a few MiB of live data under overwrites
/// compacted several times a second, which took a third of a brick's CPU
/// and, through the fsyncs then on the event loop, most of the writes' tail
/// latency. The price is up to this many dead bytes resident per
/// partition on top of the quarter of its used bytes the ratio allows.
pub const COMPACTION_DEAD_BYTES_MIN: u64 = 8 << 20;

/// Bytes of records a compaction step may visit (dead ones included) per
/// byte of its copy budget, so a step over mostly dead records stays short.
pub const COMPACTION_VISIT_FACTOR: u64 = 4;

/// The fewest bytes of arena per key that [`Partition::reserve_keys`]
/// sizes an index for: a record of a short key and a short value.
pub const RESERVE_BYTES_PER_KEY: u64 = 16;

/// Records a load checks and hashes before it applies them to the index.
const LOAD_BATCH_RECORDS: usize = 4096;

/// How many records ahead of the one being applied a load or an appended
/// copy chunk prefetches index slots: enough to cover a memory access.
const PREFETCH_AHEAD: usize = 8;

/// How far ahead of its walk through the records [`Partition::chunk`]
/// prefetches the arena. The walk is a chain of reads, each record's length
/// saying where the next one starts, so without it the processor waits for
/// each line in turn: cutting 111 MB of 150-byte values into a copy's
/// chunks took 36–41 ms, and 5–9 ms with it (`copy_bench`). The load at
/// open and the scan for table names walk the same way but did not get
/// faster with it (their time goes elsewhere), so they go without.
const WALK_AHEAD_BYTES: u64 = 2048;

/// How much of a record [`Partition::prefetch`] brings into the cache: four
/// cache lines.
const PREFETCH_RECORD_BYTES: usize = 256;

/// How index locations are laid out for one capacity: the record's offset
/// in the low bits, and above it one bit for the parity of the arena's
/// generation, so that during a compaction a location can point into either
/// the old or the new arena. Taking no more bits than the capacity needs
/// leaves the rest of the index slot to the hash tag (see [`index`]).
#[derive(Clone, Copy, Debug)]
struct Locations {
    offset_bits: u32,
}

impl Locations {
    fn new(capacity: u64) -> Locations {
        Locations {
            offset_bits: u64::BITS - (capacity - 1).leading_zeros(),
        }
    }

    /// Bits of a location, parity included.
    fn bits(self) -> u32 {
        self.offset_bits + 1
    }

    fn at(self, parity: u64, offset: u64) -> u64 {
        debug_assert!(parity <= 1 && offset >> self.offset_bits == 0);
        (parity << self.offset_bits) | offset
    }

    fn offset(self, location: u64) -> u64 {
        location & ((1 << self.offset_bits) - 1)
    }

    fn parity(self, location: u64) -> u64 {
        location >> self.offset_bits
    }
}

const _: () = assert!(CAPACITY_MAX.trailing_zeros() < index::LOCATION_BITS_MAX);

/// What backs an arena.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backing {
    /// A file of exactly the capacity, created if missing.
    File(PathBuf),
    /// Anonymous memory: no file system at all (the simulator).
    Anonymous,
}

/// What [`Partition::open`] found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// Valid records scanned, tombstones included.
    pub records: u64,
    /// Keys with a live value.
    pub live_keys: u64,
    /// Bytes cut off after the last valid record (a torn write, or bytes
    /// left past the end of data by a crash).
    pub torn_tail_bytes: u64,
    /// Where the next record goes.
    pub end_offset: u64,
}

/// Counters of one partition.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PartitionStats {
    /// Keys with a live value.
    pub keys: u64,
    /// Bytes of the live records (headers included).
    pub live_bytes: u64,
    /// Bytes of superseded records and tombstones: what compaction frees.
    pub dead_bytes: u64,
    /// Bytes of records in the arena: `live_bytes + dead_bytes`.
    pub used_bytes: u64,
    /// The arena's capacity, header page included.
    pub capacity_bytes: u64,
    /// Compactions finished since open.
    pub compactions: u64,
    /// Bytes of memory the index uses.
    pub index_bytes: u64,
    /// Bytes copied into the new arena by the running compaction (zero when
    /// none runs).
    pub compaction_copied_bytes: u64,
    /// Bytes the last [`Partition::compact_step`] copied.
    pub last_step_copied_bytes: u64,
}

/// A partition's index table when the arena's end was `end`: what
/// [`Partition::index_snapshot`] takes at a copy's source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexSnapshot {
    pub end: u64,
    /// Bits of a location in a slot (see [`index`]); below them the
    /// record's offset, and the arena's parity bit at the top.
    pub location_bits: u32,
    pub slots: Vec<u64>,
}

/// Memory for an index snapshot, being faulted in on a thread of its own
/// (see [`Partition::index_snapshot_room`]). The default has none.
#[derive(Debug, Default)]
pub struct SnapshotRoom(Option<std::thread::JoinHandle<Vec<u64>>>);

impl SnapshotRoom {
    /// Whether the memory is faulted in.
    pub fn is_ready(&self) -> bool {
        self.0
            .as_ref()
            .is_some_and(|faulting| faulting.is_finished())
    }

    /// Whether the memory is still being faulted in.
    pub fn is_pending(&self) -> bool {
        self.0
            .as_ref()
            .is_some_and(|faulting| !faulting.is_finished())
    }

    /// Empty memory for `slots` slots: the room faulted in ahead if its
    /// thread is done and it is large enough, or else fresh memory. A
    /// thread not done yet is left to finish and free its memory.
    fn take(self, slots: usize) -> Vec<u64> {
        match self.0 {
            Some(faulting) if faulting.is_finished() => match faulting.join() {
                Ok(mut room) if room.capacity() >= slots => {
                    room.clear();
                    room
                }
                _ => Vec::with_capacity(slots),
            },
            _ => Vec::with_capacity(slots),
        }
    }
}

/// How much of a copy's chunk [`Partition::append_chunk_with`] checks
/// before it writes anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChunkCheck {
    /// Each record's structure and its crc.
    Records,
    /// Each record's structure only (lengths, bounds, the end marker): for
    /// a chunk whose bytes a crc over all of them covered on their way, as
    /// a `CopyChunk` frame's does. Whether each record's crc matches its
    /// bytes is then what it was at the source, which trusts the records
    /// in its memory as its reads and compactions do (they check no crc).
    Structure,
}

/// What a [`Partition::compact_step`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompactStatus {
    /// Nothing: no compaction wanted, paused, or waiting to retry after an
    /// I/O error.
    Idle,
    /// Copied some records; more steps are needed.
    InProgress,
    /// Every record is copied and the new arena is being synced on a helper
    /// thread: later steps copy what is written meanwhile and install it
    /// once the sync is done. Nothing urgent to do.
    Syncing,
    /// The compaction completed and the new arena replaced the old one.
    Finished,
}

/// Why a store operation failed.
#[derive(Debug)]
pub enum StoreError {
    /// The live data plus this record would not fit even after compaction.
    Full { needed: u64, free: u64 },
    /// A key longer than [`KEY_SIZE_MAX`].
    KeyTooLarge(usize),
    /// A value longer than [`VALUE_SIZE_MAX`].
    ValueTooLarge(usize),
    /// The arena's header cannot be trusted.
    Corrupt { offset: u64, reason: &'static str },
    /// The file system failed.
    Io(std::io::Error),
    /// The arena is larger than the configured capacity.
    CapacityMismatch {
        file_bytes: u64,
        configured_bytes: u64,
    },
    /// The configured capacity is outside what an arena can be.
    CapacityOutOfRange { configured_bytes: u64 },
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Full { needed, free } => write!(
                f,
                "partition full: the write needs {needed} bytes but only {free} bytes are free for live data \
                 even after compaction; remove data or split the partition"
            ),
            StoreError::KeyTooLarge(n) => {
                write!(f, "a key of {n} bytes is over the store's limit of {KEY_SIZE_MAX} bytes; use a shorter key")
            }
            StoreError::ValueTooLarge(n) => write!(
                f,
                "a value of {n} bytes is over the store's limit of {VALUE_SIZE_MAX} bytes; store it in pieces"
            ),
            StoreError::Corrupt { offset, reason } => write!(
                f,
                "the arena is corrupt at offset {offset}: {reason}; move the file aside and let the brick copy \
                 the partition from a replica"
            ),
            StoreError::Io(e) => {
                write!(f, "arena I/O failed: {e}; check the data directory's disk space and permissions")
            }
            StoreError::CapacityMismatch { file_bytes, configured_bytes } => write!(
                f,
                "the arena holds {file_bytes} bytes but the configured partition capacity is {configured_bytes} \
                 bytes; configure at least {file_bytes} bytes (arenas grow but never shrink)"
            ),
            StoreError::CapacityOutOfRange { configured_bytes } => write!(
                f,
                "a partition capacity of {configured_bytes} bytes is outside {CAPACITY_MIN}..={CAPACITY_MAX}; \
                 change the configured partition capacity"
            ),
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StoreError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<std::io::Error> for StoreError {
    fn from(e: std::io::Error) -> StoreError {
        StoreError::Io(e)
    }
}

/// A compaction under way: the next arena and how far the cursor got.
struct Compaction {
    next: Arena,
    /// Offset in the old arena of the next record to look at.
    cursor: u64,
    /// The old arena's end when the compaction started.
    start_end: u64,
    /// The sync of `next` running on a helper thread, started when the
    /// cursor first reached the end, and the old arena's end then.
    sync: Option<(JoinHandle<io::Result<()>>, u64)>,
    /// The old arena's end when that sync began, once it succeeded:
    /// everything copied before it is durable in `next`.
    synced_through: Option<u64>,
}

/// The arenas an index location may point into.
#[derive(Clone, Copy)]
struct Arenas<'a> {
    main: &'a Arena,
    next: Option<&'a Arena>,
    locations: Locations,
}

impl<'a> Arenas<'a> {
    fn new(main: &'a Arena, compaction: &'a Option<Compaction>) -> Arenas<'a> {
        Arenas {
            main,
            next: compaction.as_ref().map(|c| &c.next),
            locations: Locations::new(main.capacity()),
        }
    }

    /// The arena `location` points into; `None` for the compaction's
    /// while there is none.
    fn arena(self, location: u64) -> Option<&'a Arena> {
        if self.locations.parity(location) == self.main.parity() {
            Some(self.main)
        } else {
            self.next
        }
    }

    fn record(self, location: u64) -> Record<'a> {
        let arena = self
            .arena(location)
            .expect("an index location points into a compaction arena that does not exist");
        arena.record(self.locations.offset(location))
    }

    fn key(self, location: u64) -> &'a [u8] {
        self.record(location).key
    }

    /// Prefetches the record at `location`: the first [`PREFETCH_RECORD_BYTES`]
    /// of it, which hold its header, the key and, for short values (the
    /// 150 bytes of the bench's), the value.
    fn prefetch(self, location: u64) {
        let Some(arena) = self.arena(location) else {
            return;
        };
        let at = self.locations.offset(location) as usize;
        for line in (at..at + PREFETCH_RECORD_BYTES).step_by(64) {
            if let Some(byte) = arena.bytes().get(line) {
                index::prefetch(byte);
            }
        }
    }

    fn hash(self, location: u64) -> u64 {
        xxh3_64(self.key(location))
    }
}

/// The hash a partition's index files a store key under.
pub fn key_hash(key: &[u8]) -> u64 {
    xxh3_64(key)
}

/// One partition's arena and index. See the module docs.
pub struct Partition {
    main: Arena,
    locations: Locations,
    index: Index,
    /// Sum of the sizes of the records the index points at.
    live_bytes: u64,
    /// Wrapping sum of [`record_digest`] over the records the index points
    /// at: the partition's digest, kept current by every write.
    digest_sum: u64,
    compaction: Option<Compaction>,
    /// The arena's end at the last [`Partition::flush`].
    flushed_end: Cell<u64>,
    paused: bool,
    compactions: u64,
    last_step_copied_bytes: u64,
    /// After a compaction failed on I/O, background compaction waits until
    /// the arena's end passes this offset, so a failing disk is not retried
    /// on every event-loop pass.
    retry_at_end: Option<u64>,
}

impl Partition {
    /// Opens (or creates) a partition of `capacity_bytes` on `backing`, and
    /// rebuilds the index by scanning the records. See the module docs for
    /// what happens to torn tails and to capacities that differ.
    pub fn open(
        backing: Backing,
        capacity_bytes: u64,
    ) -> Result<(Partition, OpenReport), StoreError> {
        check_capacity(capacity_bytes)?;
        let (arena, leftovers) = match backing {
            Backing::File(path) => Arena::open_file(&path, capacity_bytes)?,
            Backing::Anonymous => (Arena::anonymous(capacity_bytes, 0)?, Leftovers::None),
        };
        Partition::load(arena, leftovers)
    }

    /// Opens an anonymous partition holding a copy of `bytes`, a prefix of
    /// an arena taken with [`Partition::bytes`] (for a simulated crash that
    /// keeps the memory). Runs the same checks and scan as a file.
    pub fn reopen_anonymous(
        bytes: &[u8],
        capacity_bytes: u64,
    ) -> Result<(Partition, OpenReport), StoreError> {
        check_capacity(capacity_bytes)?;
        let (arena, leftovers) = Arena::from_bytes(bytes, capacity_bytes)?;
        Partition::load(arena, leftovers)
    }

    fn load(main: Arena, leftovers: Leftovers) -> Result<(Partition, OpenReport), StoreError> {
        let locations = Locations::new(main.capacity());
        let mut partition = Partition {
            main,
            locations,
            index: Index::new(locations.bits()),
            live_bytes: 0,
            digest_sum: 0,
            compaction: None,
            flushed_end: Cell::new(0),
            paused: false,
            compactions: 0,
            last_step_copied_bytes: 0,
            retry_at_end: None,
        };
        let mut records = 0u64;
        let mut offset = HEADER_BYTES;
        let mut invalid = None;
        // Records are checked and hashed a batch at a time, then applied
        // while the index slot of the record eight places ahead is fetched
        // from memory, as a copy's chunks are (`append_chunk_with`).
        let mut batch: Vec<ChunkRecord> = Vec::with_capacity(LOAD_BATCH_RECORDS);
        let mut done = false;
        let arenas = Arenas::new(&partition.main, &partition.compaction);
        partition.index.start_bulk(|l| arenas.hash(l));
        // Every record is at least a header long, which bounds the scan.
        let records_max = partition.main.capacity() / RECORD_HEADER_BYTES_MIN + 1;
        // The records found are cut into checksummed stretches as appends
        // are, while they are in the cache, so that a copy from this
        // arena sends them without reading them again.
        let mut segments = Segments::from(HEADER_BYTES);
        while !done && records < records_max {
            batch.clear();
            while batch.len() < LOAD_BATCH_RECORDS && records < records_max {
                match record::parse(partition.main.bytes(), offset) {
                    Parsed::End => {
                        done = true;
                        break;
                    }
                    Parsed::Invalid(reason) => {
                        invalid = Some(reason);
                        done = true;
                        break;
                    }
                    Parsed::Record(shape) => {
                        let hash = xxh3_64(shape.key(partition.main.bytes(), offset));
                        segments.before_append(partition.main.bytes(), offset, shape.len);
                        batch.push((offset, shape, hash));
                        records += 1;
                        offset += shape.len;
                    }
                }
            }
            partition.replay_chunk(0, &batch);
        }
        let arenas = Arenas::new(&partition.main, &partition.compaction);
        partition.index.end_bulk(|l| arenas.hash(l));
        partition.main.set_end_found(offset, segments);
        partition.main.set_read_ahead(false);
        let torn_tail_bytes = partition.main.cut_leftovers(leftovers)?;
        if torn_tail_bytes > 0 {
            log::warn!(
                "{}: cut {torn_tail_bytes} bytes at offset {offset} after the last valid record: {}",
                partition.main.name(),
                invalid.unwrap_or("bytes past the end marker")
            );
        }
        partition.check_invariants_cheap();
        let report = OpenReport {
            records,
            live_keys: partition.index.len() as u64,
            torn_tail_bytes,
            end_offset: offset,
        };
        Ok((partition, report))
    }

    /// Applies the validated record at `offset`, whose key hash is `hash`,
    /// to the index: during a load, and for a copy's chunks.
    fn replay(&mut self, offset: u64, hash: u64, shape: Shape) {
        let arenas = Arenas::new(&self.main, &self.compaction);
        let key = shape.key(arenas.main.bytes(), offset);
        if shape.live {
            self.index.reserve_one(|l| arenas.hash(l));
        }
        let probe = self.index.find(hash, |l| arenas.key(l) == key);
        if let Probe::Found(pos) = probe {
            let old = arenas.record(self.index.location(pos));
            self.live_bytes -= old.bytes.len() as u64;
            self.digest_sum = self.digest_sum.wrapping_sub(record_digest(hash, old.crc));
        }
        match (shape.live, probe) {
            (true, Probe::Found(pos)) => self
                .index
                .replace(pos, self.locations.at(arenas.main.parity(), offset)),
            (true, Probe::Vacant(pos)) => {
                self.index
                    .insert(pos, hash, self.locations.at(arenas.main.parity(), offset))
            }
            (false, Probe::Found(pos)) => self.index.remove(pos, |l| arenas.hash(l)),
            // A tombstone of a key with no record: one a compaction copied
            // after the key's records were already gone. Nothing to undo.
            (false, Probe::Vacant(_)) => {}
        }
        if shape.live {
            self.live_bytes += shape.len;
            self.digest_sum = self.digest_sum.wrapping_add(record_digest(hash, shape.crc));
        }
    }

    /// The value of `key`, as a slice of the arena.
    /// Brings what a lookup of `key` reads into the processor's cache, in
    /// two steps for a batch of keys: for all of them first the index slot
    /// (`record` false), then for all of them the record the slot points to
    /// (`record` true), so that the memory accesses of the whole batch
    /// overlap rather than each lookup waiting for two in turn. Only a
    /// hint: it changes nothing.
    pub fn prefetch(&self, key: &[u8], record: bool) {
        let hash = key_hash(key);
        if !record {
            self.prefetch_slot(hash);
        } else {
            self.prefetch_record(hash);
        }
    }

    /// The first step of [`Partition::prefetch`], for a key whose
    /// [`key_hash`] the caller keeps for the second.
    pub fn prefetch_slot(&self, hash: u64) {
        self.index.prefetch(hash);
    }

    /// The second step of [`Partition::prefetch`].
    pub fn prefetch_record(&self, hash: u64) {
        if let Some(location) = self.index.candidate(hash) {
            Arenas::new(&self.main, &self.compaction).prefetch(location);
        }
    }

    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        let arenas = Arenas::new(&self.main, &self.compaction);
        match self.index.find(xxh3_64(key), |l| arenas.key(l) == key) {
            Probe::Found(pos) => Some(arenas.record(self.index.location(pos)).value),
            Probe::Vacant(_) => None,
        }
    }

    /// Sets `key` to `value`. Fails only on a size limit, on
    /// [`StoreError::Full`] (exactly when [`Partition::can_fit`] says no), or
    /// on an I/O error of a synchronous compaction; a failure changes
    /// nothing.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        check_sizes(key.len(), value.len())?;
        let needed = record_bytes(key.len(), value.len());
        let free = self.live_free_bytes();
        if needed > free {
            return Err(StoreError::Full { needed, free });
        }
        if self.main.tail_free() < needed {
            self.make_room(needed)?;
        }
        let hash = xxh3_64(key);
        let arenas = Arenas::new(&self.main, &self.compaction);
        self.index.reserve_one(|l| arenas.hash(l));
        let probe = self.index.find(hash, |l| arenas.key(l) == key);
        let (old_len, old_digest) = match probe {
            Probe::Found(pos) => {
                let old = arenas.record(self.index.location(pos));
                (old.bytes.len() as u64, record_digest(hash, old.crc))
            }
            Probe::Vacant(_) => (0, 0),
        };
        let offset = self.main.append(true, key, value);
        let new_digest = record_digest(hash, self.main.record(offset).crc);
        let new_location = self.locations.at(self.main.parity(), offset);
        match probe {
            Probe::Found(pos) => self.index.replace(pos, new_location),
            Probe::Vacant(pos) => self.index.insert(pos, hash, new_location),
        }
        self.live_bytes = self.live_bytes - old_len + needed;
        self.digest_sum = self
            .digest_sum
            .wrapping_sub(old_digest)
            .wrapping_add(new_digest);
        Ok(())
    }

    /// Removes `key`. Returns whether it had a value; a tombstone is
    /// appended only then. Fails only on the key size limit or on an I/O
    /// error of a synchronous compaction, and a failure changes nothing.
    pub fn remove(&mut self, key: &[u8]) -> Result<bool, StoreError> {
        check_sizes(key.len(), 0)?;
        let hash = xxh3_64(key);
        if self.find(hash, key).is_none() {
            return Ok(false);
        }
        let needed = record_bytes(key.len(), 0);
        if self.main.tail_free() < needed && self.compaction.is_some() {
            self.finish_compaction()?;
        }
        let pos = self.find(hash, key).expect("compaction keeps every key");
        if self.main.tail_free() < needed {
            // Compacting without the key removes it with no tombstone.
            self.compact_now(Some(pos))?;
            return Ok(true);
        }
        let arenas = Arenas::new(&self.main, &self.compaction);
        let old = arenas.record(self.index.location(pos));
        let (old_len, old_digest) = (old.bytes.len() as u64, record_digest(hash, old.crc));
        self.main.append(false, key, &[]);
        let arenas = Arenas::new(&self.main, &self.compaction);
        self.index.remove(pos, |l| arenas.hash(l));
        self.live_bytes -= old_len;
        self.digest_sum = self.digest_sum.wrapping_sub(old_digest);
        Ok(true)
    }

    fn find(&self, hash: u64, key: &[u8]) -> Option<usize> {
        let arenas = Arenas::new(&self.main, &self.compaction);
        match self.index.find(hash, |l| arenas.key(l) == key) {
            Probe::Found(pos) => Some(pos),
            Probe::Vacant(_) => None,
        }
    }

    /// Whether a put of a key and value of these sizes would succeed now:
    /// the answer two-phase commit votes on.
    pub fn can_fit(&self, key_len: usize, value_len: usize) -> bool {
        self.can_fit_reserved(0, key_len, value_len)
    }

    /// Like [`Partition::can_fit`], with `reserved_bytes` already promised
    /// to other prepared puts (sum their [`record_bytes`]). A node that
    /// prepares several puts on one partition at once needs this for each
    /// of them to be sure to fit at commit.
    pub fn can_fit_reserved(&self, reserved_bytes: u64, key_len: usize, value_len: usize) -> bool {
        check_sizes(key_len, value_len).is_ok()
            && reserved_bytes.saturating_add(record_bytes(key_len, value_len))
                <= self.live_free_bytes()
    }

    /// Bytes still free for live records, counting what compaction frees.
    fn live_free_bytes(&self) -> u64 {
        self.main.capacity() - HEADER_BYTES - self.live_bytes
    }

    /// The partition's counters.
    pub fn stats(&self) -> PartitionStats {
        let used_bytes = self.main.end - HEADER_BYTES;
        PartitionStats {
            keys: self.index.len() as u64,
            live_bytes: self.live_bytes,
            dead_bytes: used_bytes - self.live_bytes,
            used_bytes,
            capacity_bytes: self.main.capacity(),
            compactions: self.compactions,
            index_bytes: self.index.memory_bytes() as u64,
            compaction_copied_bytes: self
                .compaction
                .as_ref()
                .map_or(0, |c| c.next.end - HEADER_BYTES),
            last_step_copied_bytes: self.last_step_copied_bytes,
        }
    }

    /// Whether a new background compaction should start: dead bytes over
    /// [`COMPACTION_DEAD_BYTES_MIN`] and over a quarter of the used bytes, or
    /// less than an eighth of the capacity left at the tail with at least a
    /// thirty-second of it dead (so the pass frees a useful amount and a full
    /// arena of live data does not compact in a loop). False while one runs,
    /// while paused, and while waiting to retry after an I/O error.
    pub fn compaction_wanted(&self) -> bool {
        if self.paused || self.compaction.is_some() || self.backing_off() {
            return false;
        }
        let s = self.stats();
        let by_ratio = s.dead_bytes >= COMPACTION_DEAD_BYTES_MIN && s.dead_bytes * 4 > s.used_bytes;
        let by_space =
            self.main.tail_free() < s.capacity_bytes / 8 && s.dead_bytes >= s.capacity_bytes / 32;
        by_ratio || by_space
    }

    /// Whether the index is moving its keys to a grown table (a few per
    /// put; see [`Partition::grow_index_step`]). Until it is done the index
    /// holds both tables.
    pub fn index_growing(&self) -> bool {
        self.index.is_growing()
    }

    /// Moves the index's keys on to the grown table by up to about `slots`
    /// slots of the old one, so that an idle brick ends a growth (and frees
    /// the old table) without waiting for more puts. Returns whether keys
    /// are still moving.
    pub fn grow_index_step(&mut self, slots: usize) -> bool {
        let arenas = Arenas::new(&self.main, &self.compaction);
        self.index.grow_step(slots, |l| arenas.hash(l))
    }

    /// Whether a compaction has started and not finished.
    pub fn compaction_in_progress(&self) -> bool {
        self.compaction.is_some()
    }

    fn backing_off(&self) -> bool {
        self.retry_at_end.is_some_and(|end| self.main.end < end)
    }

    /// Does a bounded amount of compaction: starts one if it is wanted, and
    /// copies records until about `budget_bytes` are copied (at least one
    /// record, so a step always progresses) or four times that were visited.
    /// Returns what it did. I/O errors are logged; background compaction
    /// then waits until a sixteenth of the capacity more was written.
    pub fn compact_step(&mut self, budget_bytes: usize) -> CompactStatus {
        self.last_step_copied_bytes = 0;
        if self.paused || self.backing_off() {
            return CompactStatus::Idle;
        }
        if self.compaction.is_none() {
            if !self.compaction_wanted() {
                return CompactStatus::Idle;
            }
            if let Err(e) = self.start_compaction() {
                self.compaction_failed(e);
                return CompactStatus::Idle;
            }
        }
        match self.step(budget_bytes as u64, false) {
            Ok(status) => status,
            Err(e) => {
                self.compaction_failed(e);
                CompactStatus::Idle
            }
        }
    }

    fn compaction_failed(&mut self, e: StoreError) {
        log::error!(
            "{}: compaction failed, will retry later: {e}",
            self.main.name()
        );
        self.retry_at_end = Some(self.main.end + self.main.capacity() / 16);
    }

    fn start_compaction(&mut self) -> Result<(), StoreError> {
        assert!(self.compaction.is_none(), "a compaction already runs");
        let next = self.main.create_next(self.main.generation + 1)?;
        self.compaction = Some(Compaction {
            next,
            cursor: HEADER_BYTES,
            start_end: self.main.end,
            sync: None,
            synced_through: None,
        });
        Ok(())
    }

    /// Copies records of the running compaction (see the module docs for
    /// the rules), and installs the new arena once the cursor reaches the
    /// end.
    fn step(&mut self, budget_bytes: u64, wait: bool) -> Result<CompactStatus, StoreError> {
        let Partition {
            main,
            locations,
            index,
            compaction,
            ..
        } = self;
        let c = compaction.as_mut().expect("a compaction runs");
        let budget_bytes = budget_bytes.max(1);
        let visit_bytes_max = budget_bytes.saturating_mul(COMPACTION_VISIT_FACTOR);
        let (old_parity, new_parity) = (main.parity(), c.next.parity());
        let (mut copied, mut visited) = (0u64, 0u64);
        let copy_start = c.next.end;
        while c.cursor < main.end && copied < budget_bytes && visited < visit_bytes_max {
            let record = main.record(c.cursor);
            let len = record.bytes.len() as u64;
            if record.live {
                // A location names one record, so the entry that points here
                // (if any) is found by location alone, without reading keys.
                let here = locations.at(old_parity, c.cursor);
                if let Probe::Found(pos) = index.find(xxh3_64(record.key), |l| l == here) {
                    let offset = c.next.append_copy(record.bytes);
                    index.replace(pos, locations.at(new_parity, offset));
                    copied += len;
                }
            } else if c.cursor >= c.start_end {
                c.next.append_copy(record.bytes);
                copied += len;
            }
            c.cursor += len;
            visited += len;
        }
        c.next.start_writeback(copy_start, c.next.end);
        let done = c.cursor == main.end;
        self.last_step_copied_bytes = copied;
        if !done {
            return Ok(CompactStatus::InProgress);
        }
        // The disk is waited for off the event loop: see the module docs.
        if c.synced_through.is_none() {
            match c.sync.take() {
                None if !wait => {
                    if let Some(handle) = c.next.sync_in_background()? {
                        c.sync = Some((handle, c.cursor));
                        return Ok(CompactStatus::Syncing);
                    }
                }
                None => {}
                Some((handle, through)) if !wait && !handle.is_finished() => {
                    c.sync = Some((handle, through));
                    return Ok(CompactStatus::Syncing);
                }
                Some((handle, through)) => {
                    handle
                        .join()
                        .unwrap_or_else(|_| Err(io::Error::other("the sync thread panicked")))?;
                    c.synced_through = Some(through);
                }
            }
        }
        self.install()?;
        Ok(CompactStatus::Finished)
    }

    /// Makes the finished new arena durable and the main one.
    fn install(&mut self) -> Result<(), StoreError> {
        let c = self.compaction.as_mut().expect("a compaction runs");
        assert_eq!(
            c.cursor, self.main.end,
            "install before the cursor reached the end"
        );
        // A flush since the sync began promised durability for records the
        // sync does not cover: then they are synced here.
        if c.synced_through
            .is_some_and(|t| t >= self.flushed_end.get())
        {
            c.next.rename_over(&self.main)?;
        } else {
            c.next.replace(&self.main)?;
        }
        let c = self.compaction.take().expect("a compaction runs");
        std::mem::replace(&mut self.main, c.next).retire();
        self.compactions += 1;
        self.retry_at_end = None;
        self.check_invariants_cheap();
        Ok(())
    }

    fn finish_compaction(&mut self) -> Result<(), StoreError> {
        match self.step(u64::MAX, true)? {
            CompactStatus::Finished => Ok(()),
            other => unreachable!("an unbounded compaction step ended {other:?}"),
        }
    }

    /// Makes `needed` bytes of room at the tail, for a put whose record fits
    /// in the live free bytes.
    fn make_room(&mut self, needed: u64) -> Result<(), StoreError> {
        if self.compaction.is_some() {
            self.finish_compaction()?;
            if self.main.tail_free() >= needed {
                return Ok(());
            }
        }
        self.compact_now(None)?;
        assert!(
            self.main.tail_free() >= needed,
            "a compacted arena holds only live data"
        );
        Ok(())
    }

    /// Rebuilds the arena from the index alone, leaving out the key in slot
    /// `skip` (which is then removed from the index). All or nothing: the
    /// index changes only once the new arena is in place. See the module
    /// docs.
    fn compact_now(&mut self, skip: Option<usize>) -> Result<(), StoreError> {
        assert!(
            self.compaction.is_none(),
            "finish the running compaction first"
        );
        let mut next = self.main.create_next(self.main.generation + 1)?;
        let (mut skipped_bytes, mut skipped_digest) = (0, 0);
        for (pos, l) in self.index.iter() {
            let record = self.main.record(self.locations.offset(l));
            if Some(pos) == skip {
                skipped_bytes = record.bytes.len() as u64;
                skipped_digest = record_digest(xxh3_64(record.key), record.crc);
            } else {
                next.append_copy(record.bytes);
            }
        }
        if let Err(e) = next.replace(&self.main) {
            next.discard();
            return Err(e.into());
        }
        // The same slot order as the copy, so the offsets follow each other.
        let parity = next.parity();
        let mut offset = HEADER_BYTES;
        for pos in 0..self.index.positions() {
            if self.index.get(pos).is_some() && Some(pos) != skip {
                self.index.replace(pos, self.locations.at(parity, offset));
                offset += next.record(offset).bytes.len() as u64;
            }
        }
        assert_eq!(offset, next.end, "relocation disagrees with the copy");
        std::mem::replace(&mut self.main, next).retire();
        if let Some(pos) = skip {
            let arenas = Arenas::new(&self.main, &self.compaction);
            self.index.remove(pos, |l| arenas.hash(l));
            self.live_bytes -= skipped_bytes;
            self.digest_sum = self.digest_sum.wrapping_sub(skipped_digest);
        }
        self.compactions += 1;
        self.retry_at_end = None;
        self.check_invariants_cheap();
        Ok(())
    }

    /// Pauses or resumes background compaction (a recovery copy pauses it so
    /// that offsets stay put). Writes that find no room still compact; see
    /// the module docs.
    pub fn set_compaction_paused(&mut self, paused: bool) {
        self.paused = paused;
    }

    /// Writes dirty pages of a file-backed arena to disk (msync); nothing
    /// for an anonymous one.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.main.flush()?;
        self.flushed_end.set(self.main.end);
        Ok(())
    }

    /// A digest of the live (key, value) pairs that does not depend on the
    /// order they were written in or on compaction: the wrapping sum of a
    /// per-record xxh3 (seeded with the key length, so the key/value split
    /// counts), folded to 32 bits; and the number of keys. Replicas with the
    /// same data agree.
    pub fn checksum(&self) -> (u32, u64) {
        let sum = self.digest_sum;
        ((sum ^ (sum >> 32)) as u32, self.index.len() as u64)
    }

    /// The full 64-bit digest behind [`Partition::checksum`] and the number
    /// of keys, kept current by every write (no scan): what a recovery copy
    /// is verified against, and what tells a returning replica whether the
    /// data it kept is current.
    pub fn digest(&self) -> (u64, u64) {
        (self.digest_sum, self.index.len() as u64)
    }

    /// Up to about `max_bytes` of the arena from `offset`, in whole records
    /// (at least one record, whatever its size, when any is left): a chunk
    /// of a recovery copy. `offset` must be `HEADER_BYTES` or the end of an
    /// earlier chunk of the same [`Partition::generation`]. The chunk ends
    /// at the start of the next checksummed stretch of records, if one lies
    /// within reach, so that [`Partition::copy_chunk`] finds the stretch
    /// next.
    pub fn chunk(&self, offset: u64, max_bytes: usize) -> &[u8] {
        let end = self.main.end;
        assert!(
            (HEADER_BYTES..=end).contains(&offset),
            "chunk offset {offset} outside the arena's records"
        );
        let limit = self
            .main
            .next_segment_after(offset)
            .map_or(end, |s| s.min(end));
        let bytes = self.main.bytes();
        let (mut to, mut ahead) = (offset, offset);
        while to < limit {
            while ahead < (to + WALK_AHEAD_BYTES).min(end) {
                index::prefetch(&bytes[ahead as usize]);
                ahead += 64;
            }
            let len = self.main.record(to).bytes.len() as u64;
            if to > offset && to + len - offset > max_bytes as u64 {
                break;
            }
            to += len;
        }
        &self.main.bytes()[offset as usize..to as usize]
    }

    /// [`Partition::chunk`], with the crc32 of its bytes when the arena
    /// holds it already: the stretch of records that starts at `offset`,
    /// closed and checksummed as the records were appended (see
    /// `store/segments.rs`), when there is one of at most `max_bytes`.
    /// Otherwise the records are walked, and the caller computes the crc.
    pub fn copy_chunk(&self, offset: u64, max_bytes: usize) -> (&[u8], Option<u32>) {
        match self.main.segment_at(offset) {
            Some(s) if s.len <= max_bytes as u64 && s.start + s.len <= self.main.end => {
                let bytes = &self.main.bytes()[s.start as usize..(s.start + s.len) as usize];
                (bytes, Some(s.crc))
            }
            _ => (self.chunk(offset, max_bytes), None),
        }
    }

    /// The index as it stands, for a recovery copy to send ahead of the
    /// arena so that the receiver need not build it (see
    /// [`Filling::use_index`]): its slots, with the arena's end they
    /// describe. `None` while a compaction runs (locations may point into
    /// either arena) or the index is growing or filled in bulk.
    pub fn index_snapshot(&self) -> Option<IndexSnapshot> {
        self.index_snapshot_in(SnapshotRoom::default())
    }

    /// [`Partition::index_snapshot`] into memory faulted in ahead by
    /// [`Partition::index_snapshot_room`], when it is ready and large
    /// enough: the snapshot is then a copy of memory at its full speed.
    /// Otherwise into fresh memory, whose page faults took 3–5 ms of the
    /// caller's time for a table of 760,000 slots against 0.6 ms for the
    /// copy itself (`copy_bench`).
    pub fn index_snapshot_in(&self, room: SnapshotRoom) -> Option<IndexSnapshot> {
        if self.compaction.is_some() {
            return None;
        }
        let table = self.index.table_slots()?;
        let mut slots = room.take(table.len());
        slots.extend_from_slice(table);
        Some(IndexSnapshot {
            end: self.main.end,
            location_bits: self.locations.bits(),
            slots,
        })
    }

    /// Starts faulting in, on a thread of its own, memory for a snapshot
    /// of the index as large as it is now, so that the snapshot a copy
    /// takes later does not stall the caller's thread.
    pub fn index_snapshot_room(&self) -> SnapshotRoom {
        let Some(slots) = self.index.table_slots().map(<[u64]>::len) else {
            return SnapshotRoom::default();
        };
        let faulting = std::thread::Builder::new()
            .name("index-snapshot".to_string())
            .spawn(move || {
                let mut room = Vec::<u64>::with_capacity(slots);
                // Writing every byte faults every page in (with zeros the
                // allocator could hand out untouched pages instead).
                room.resize(slots, u64::MAX);
                room
            });
        SnapshotRoom(faulting.ok())
    }

    /// Empties the partition where it is, keeping its arena's pages: the
    /// receiving side of a full recovery copy writes over the old records
    /// instead of deleting the file and faulting in a fresh one. The end
    /// of data is marked, here and after every [`Partition::append_chunk`],
    /// so a reopen never reads old records past the new ones.
    pub fn reset(&mut self) {
        if let Some(c) = self.compaction.take() {
            c.next.discard();
        }
        self.index.clear();
        self.live_bytes = 0;
        self.digest_sum = 0;
        self.main.set_end(HEADER_BYTES);
        self.main.mark_end();
    }

    /// Sizes the index for `keys` keys at once: the receiving side of a
    /// copy, told how many keys the source holds, saves the repeated
    /// growth of an index filled from empty (in `copy_bench`, 100 against
    /// 193 ms for 600,000 keys into a fresh file). `keys` comes from a
    /// peer, so it is capped at one key per [`RESERVE_BYTES_PER_KEY`] of
    /// capacity; more keys than that still fit, by growing as usual.
    pub fn reserve_keys(&mut self, keys: u64) {
        let cap = self.main.capacity() / RESERVE_BYTES_PER_KEY;
        let keys = usize::try_from(keys.min(cap)).unwrap_or(usize::MAX);
        let arenas = Arenas::new(&self.main, &self.compaction);
        self.index.reserve(keys, |l| arenas.hash(l));
    }

    /// Appends a chunk of another arena's records (from
    /// [`Partition::chunk`]) at `offset`, which must be this arena's end:
    /// the receiving side of a recovery copy. Every record's crc is checked
    /// before anything is written, so a corrupt or cut chunk changes nothing
    /// and is refused with [`StoreError::Corrupt`]. Background compaction
    /// must be paused while a copy is received.
    pub fn append_chunk(&mut self, offset: u64, chunk: &[u8]) -> Result<(), StoreError> {
        self.append_chunk_with(offset, chunk, ChunkCheck::Records, |_, _| {})
    }

    /// [`Partition::append_chunk`], checking as `check` says, and calling
    /// `each_key` with every record's key, in order, and whether it is live
    /// (false for a tombstone), once the chunk is accepted: what the caller
    /// wants to know of the keys costs no second pass over the records.
    pub fn append_chunk_with(
        &mut self,
        offset: u64,
        chunk: &[u8],
        check: ChunkCheck,
        mut each_key: impl FnMut(bool, &[u8]),
    ) -> Result<(), StoreError> {
        let records = parse_chunk(offset, self.main.end, self.main.tail_free(), chunk, check)?;
        let start = self.main.append_bytes(chunk)?;
        debug_assert_eq!(start, offset);
        self.replay_chunk(offset, &records);
        for &(at, shape, _) in &records {
            each_key(shape.live, shape.key(chunk, at));
        }
        self.main.mark_end();
        Ok(())
    }

    /// Indexes the records of a chunk that is in the arena from `start`,
    /// as [`parse_chunk`] found them (or a batch of a load, from 0),
    /// prefetching each record's index slot
    /// a few records before it is needed (without that, the index's cache
    /// misses are most of the time an append takes), and a little later the
    /// record that slot's entry of the same tag points to, which the apply
    /// reads to compare keys when the copy overwrites a key.
    fn replay_chunk(&mut self, start: u64, records: &[ChunkRecord]) {
        for (i, &(at, shape, hash)) in records.iter().enumerate() {
            if let Some(&(_, _, ahead)) = records.get(i + 2 * PREFETCH_AHEAD) {
                self.index.prefetch(ahead);
            }
            if let Some(&(_, _, ahead)) = records.get(i + PREFETCH_AHEAD) {
                if let Some(location) = self.index.candidate(ahead) {
                    Arenas::new(&self.main, &self.compaction).prefetch(location);
                }
            }
            self.replay(start + at, hash, shape);
        }
    }

    /// Every live key that starts with `prefix`, sorted. Reads the records
    /// in arena order, which streams through memory, and looks up only the
    /// keys with the prefix: following every index entry to its record
    /// instead cost a cache miss per key (52 against 19 ms at 600,000 keys,
    /// on every brick start, which looks for table names this way).
    pub fn keys_with_prefix(&self, prefix: &[u8]) -> Vec<Vec<u8>> {
        let arenas = [Some(&self.main), self.compaction.as_ref().map(|c| &c.next)];
        let mut candidates = std::collections::BTreeSet::new();
        for arena in arenas.into_iter().flatten() {
            let mut at = HEADER_BYTES;
            while at < arena.end {
                let record = arena.record(at);
                if record.key.starts_with(prefix) {
                    candidates.insert(record.key);
                }
                at += record.bytes.len() as u64;
            }
        }
        candidates
            .into_iter()
            .filter(|key| self.get(key).is_some())
            .map(<[u8]>::to_vec)
            .collect()
    }

    /// The append position: every record below it is in the arena, so it
    /// is a snapshot point for copying the arena while writes go on.
    pub fn end_offset(&self) -> u64 {
        self.main.end
    }

    /// The arena's generation, bumped by every compaction. Offsets from one
    /// generation mean nothing in another.
    pub fn generation(&self) -> u64 {
        self.main.generation
    }

    /// The arena's bytes from the start to [`Partition::end_offset`]: the
    /// header page and every record. [`Partition::reopen_anonymous`] takes
    /// them back.
    pub fn bytes(&self) -> &[u8] {
        &self.main.bytes()[..self.main.end as usize]
    }

    /// Checks the index against the arenas: every entry reachable, pointing
    /// at a live record of a key whose hash matches, with the live byte count
    /// right. Visits every key; for tests and the simulator.
    pub fn check_invariants(&self) {
        let arenas = Arenas::new(&self.main, &self.compaction);
        self.index.check_invariants(|l| arenas.hash(l));
        let mut live_bytes = 0;
        for (pos, l) in self.index.iter() {
            let record = arenas.record(l);
            assert!(record.live, "index slot {pos} points at a tombstone");
            assert_eq!(
                self.find(xxh3_64(record.key), record.key),
                Some(pos),
                "key of slot {pos} not found"
            );
            live_bytes += record.bytes.len() as u64;
        }
        assert_eq!(live_bytes, self.live_bytes, "live byte count");
        let digest = self.index.iter().fold(0u64, |sum, (_, l)| {
            let record = arenas.record(l);
            sum.wrapping_add(record_digest(xxh3_64(record.key), record.crc))
        });
        assert_eq!(digest, self.digest_sum, "running digest");
        self.check_invariants_cheap();
    }

    fn check_invariants_cheap(&self) {
        assert!(self.main.end <= self.main.capacity());
        assert!(
            self.live_bytes <= self.main.end - HEADER_BYTES,
            "more live bytes than used bytes"
        );
        if let Some(c) = &self.compaction {
            assert!(c.cursor <= self.main.end && c.start_end <= self.main.end);
            assert_ne!(c.next.parity(), self.main.parity());
        }
    }
}

impl Drop for Partition {
    /// A compaction that will never finish leaves no file behind.
    fn drop(&mut self) {
        if let Some(c) = self.compaction.take() {
            c.next.discard();
        }
    }
}

/// A record of a copy chunk: where it starts in the chunk, what
/// [`record::parse`] found, and its key's hash.
type ChunkRecord = (u64, Shape, u64);

/// A copy chunk of `len` bytes at `offset` must start at the arena's `end`
/// and fit in the `free` bytes past it.
fn check_chunk_place(offset: u64, end: u64, free: u64, len: usize) -> Result<(), StoreError> {
    if offset != end {
        return Err(StoreError::Corrupt {
            offset,
            reason: "a copy chunk does not start at the arena's end",
        });
    }
    if len as u64 > free {
        return Err(StoreError::Full {
            needed: len as u64,
            free,
        });
    }
    Ok(())
}

/// Checks that a copy chunk for `offset` goes at an arena's `end` and fits
/// in its `free` bytes, and every record of it as `check` says, and
/// returns each record's place, shape and key hash: everything the index
/// needs, so the records are read once.
fn parse_chunk(
    offset: u64,
    end: u64,
    free: u64,
    chunk: &[u8],
    check: ChunkCheck,
) -> Result<Vec<ChunkRecord>, StoreError> {
    check_chunk_place(offset, end, free, chunk.len())?;
    let parse = match check {
        ChunkCheck::Records => record::parse,
        ChunkCheck::Structure => record::parse_structure,
    };
    let mut records = Vec::with_capacity(chunk.len() / 64);
    let mut at = 0u64;
    while at < chunk.len() as u64 {
        match parse(chunk, at) {
            Parsed::Record(shape) => {
                records.push((at, shape, xxh3_64(shape.key(chunk, at))));
                at += shape.len;
            }
            Parsed::End => {
                return Err(StoreError::Corrupt {
                    offset: offset + at,
                    reason: "a copy chunk holds zero bytes where a record should be",
                })
            }
            Parsed::Invalid(reason) => {
                return Err(StoreError::Corrupt {
                    offset: offset + at,
                    reason,
                })
            }
        }
    }
    Ok(records)
}

/// One record's share of the partition digest: its key's hash and its crc
/// (which covers the lengths, the key and the value) mixed into 64 bits.
/// Both are at hand wherever a record is written or replayed, so the digest
/// costs no pass over the value; an appended copy's crcs are checked
/// before they count.
fn record_digest(key_hash: u64, crc: u32) -> u64 {
    // The finalizer of SplitMix64: every input bit moves every output bit.
    let mut z = key_hash.rotate_left(32) ^ u64::from(crc).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn check_capacity(capacity_bytes: u64) -> Result<(), StoreError> {
    if (CAPACITY_MIN..=CAPACITY_MAX).contains(&capacity_bytes) {
        Ok(())
    } else {
        Err(StoreError::CapacityOutOfRange {
            configured_bytes: capacity_bytes,
        })
    }
}

fn check_sizes(key_len: usize, value_len: usize) -> Result<(), StoreError> {
    if key_len > KEY_SIZE_MAX {
        return Err(StoreError::KeyTooLarge(key_len));
    }
    if value_len > VALUE_SIZE_MAX {
        return Err(StoreError::ValueTooLarge(value_len));
    }
    Ok(())
}
