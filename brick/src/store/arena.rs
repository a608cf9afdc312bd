//! One arena: a memory map of fixed capacity, backed by a file or by
//! anonymous memory, with an append position.
//!
//! This module opens, creates, validates the header of, appends to, syncs
//! and renames arenas. It does not know which records are live — that is
//! the index's business, in the parent module.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use memmap2::MmapMut;

use super::record::{self, Header, Record, HEADER_BYTES};
use super::segments::{Segment, Segments};
use super::StoreError;

/// Syncs a folder after a rename in it; a failure is logged (see
/// [`Arena::rename_over`]).
fn sync_dir(dir: &Path) {
    if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
        log::error!(
            "{}: syncing the directory after compaction failed: {e}",
            dir.display()
        );
    }
}

/// Gives `file` a length of `capacity` bytes with the disk blocks for all
/// of them set aside (`fallocate`). A file-backed arena is written through
/// its map, and a write fault on a page whose block cannot be allocated (a
/// full disk) kills the process with SIGBUS: nothing can refuse that one
/// write. With every block set aside when the arena is created (or reopened,
/// or started for a compaction), a full disk is an error here, at a point
/// that returns it. Blocks already allocated are kept. On a file system
/// that cannot set blocks aside the file is only sized (sparse), as before.
fn allocate(file: &File, path: &Path, capacity: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let len = libc::off_t::try_from(capacity)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "capacity out of range"))?;
    loop {
        // SAFETY: the descriptor belongs to `file`, open for writing for
        // the whole call; fallocate touches no memory of this process.
        if unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) } == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EOPNOTSUPP) => return file.set_len(capacity),
            _ => {
                return Err(io::Error::new(
                    e.kind(),
                    format!(
                        "setting aside {capacity} bytes of disk for {}: {e}",
                        path.display()
                    ),
                ))
            }
        }
    }
}

/// Bytes read at a time when looking for leftovers past the end of data.
const SCAN_CHUNK_BYTES: usize = 1 << 20;

/// How far ahead of the appends a file-backed arena puts zeroed pages into
/// the page cache at a time (see [`Arena::zero_ahead`]).
const ZERO_AHEAD_BYTES: usize = 256 << 10;

/// What [`Arena::zero_ahead`] writes.
static ZEROS: [u8; ZERO_AHEAD_BYTES] = [0; ZERO_AHEAD_BYTES];

/// The unit the kernel maps files in.
const PAGE_BYTES: u64 = 4096;

/// A mapped arena. `end` is the append position: every byte from `end` to
/// the capacity is zero.
pub(super) struct Arena {
    map: MmapMut,
    file: Option<ArenaFile>,
    capacity: u64,
    pub(super) end: u64,
    pub(super) generation: u64,
    /// Whether the kernel reads ahead for faults in a file-backed map (see
    /// [`Arena::set_read_ahead`]).
    read_ahead: bool,
    /// Where the zeroed pages written ahead of the appends end (see
    /// [`Arena::zero_ahead`]); 0 until the first append.
    zeroed_to: u64,
    /// The appended records in checksummed stretches, a copy's chunks.
    segments: Segments,
}

struct ArenaFile {
    file: File,
    path: PathBuf,
}

/// Where bytes that are not zero may lie past the end of the data, for
/// [`Arena::cut_leftovers`].
pub(super) enum Leftovers {
    /// Nothing to look at: a fresh arena.
    None,
    /// Within the first this-many bytes of the map.
    Below(u64),
    /// Anywhere in the backing file.
    InFile,
}

/// `<path>.compact`: where compaction builds the next generation of a
/// file-backed arena.
pub(super) fn compaction_path(path: &Path) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(".compact");
    PathBuf::from(name)
}

impl Arena {
    /// A fresh anonymous arena. It touches no file, and its pages cost
    /// memory only once written.
    pub(super) fn anonymous(capacity: u64, generation: u64) -> io::Result<Arena> {
        let map = MmapMut::map_anon(capacity as usize)?;
        let mut arena = Arena {
            map,
            file: None,
            capacity,
            end: HEADER_BYTES,
            generation,
            read_ahead: false,
            zeroed_to: 0,
            segments: Segments::from(HEADER_BYTES),
        };
        arena.write_header();
        Ok(arena)
    }

    /// An anonymous arena holding a copy of `bytes`, a prefix of an arena
    /// saved earlier (see `Partition::bytes`). The header is checked; the
    /// records are left for the caller to scan.
    pub(super) fn from_bytes(
        bytes: &[u8],
        capacity: u64,
    ) -> Result<(Arena, Leftovers), StoreError> {
        if bytes.len() as u64 > capacity {
            return Err(StoreError::CapacityMismatch {
                file_bytes: bytes.len() as u64,
                configured_bytes: capacity,
            });
        }
        let mut arena = Arena::anonymous(capacity, 0)?;
        if bytes.len() < HEADER_BYTES as usize {
            if bytes.iter().any(|&b| b != 0) {
                return Err(corrupt_header(
                    "the saved bytes are shorter than a header page",
                ));
            }
            return Ok((arena, Leftovers::None));
        }
        arena.map[..bytes.len()].copy_from_slice(bytes);
        match record::decode_header(bytes).map_err(corrupt_header)? {
            None => {
                if bytes.iter().any(|&b| b != 0) {
                    return Err(corrupt_header(
                        "the header page is empty but records follow it",
                    ));
                }
                arena.write_header();
                Ok((arena, Leftovers::None))
            }
            Some(header) => {
                if header.capacity < bytes.len() as u64 {
                    return Err(corrupt_header(
                        "the saved bytes run past the capacity in their header",
                    ));
                }
                arena.adopt(header)?;
                Ok((arena, Leftovers::Below(bytes.len() as u64)))
            }
        }
    }

    /// Opens the arena file at `path`, creating it if it is missing or
    /// empty, and growing it if its capacity is smaller than `capacity`.
    /// A `<path>.compact` left by a compaction that a crash interrupted is
    /// deleted: the arena itself is complete without it.
    pub(super) fn open_file(path: &Path, capacity: u64) -> Result<(Arena, Leftovers), StoreError> {
        let leftover = compaction_path(path);
        match std::fs::remove_file(&leftover) {
            Ok(()) => log::warn!("{}: removed an unfinished compaction", leftover.display()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let len = file.metadata()?.len();
        let mut page = [0u8; HEADER_BYTES as usize];
        let have = len.min(HEADER_BYTES) as usize;
        file.read_exact_at(&mut page[..have], 0)?;
        let header = if len < HEADER_BYTES {
            if page.iter().any(|&b| b != 0) {
                return Err(corrupt_header("the file is shorter than a header page"));
            }
            None
        } else {
            let header = record::decode_header(&page).map_err(corrupt_header)?;
            if header.is_none() && last_nonzero_in_file(&file, 0, len)?.is_some() {
                return Err(corrupt_header(
                    "the header page is empty but records follow it",
                ));
            }
            header
        };
        if let Some(header) = header {
            if header.capacity != len {
                return Err(corrupt_header(
                    "the file's length differs from the capacity in its header",
                ));
            }
        }
        if len > capacity {
            return Err(StoreError::CapacityMismatch {
                file_bytes: len,
                configured_bytes: capacity,
            });
        }
        // Also for a file of the right length: one written by an older
        // build is sparse.
        allocate(&file, path, capacity)?;
        // SAFETY: the map stays valid while `Arena` owns both it and the
        // file. The file belongs to this brick; another process writing it
        // while it is mapped is outside what the store defends against.
        let map = unsafe { MmapMut::map_mut(&file)? };
        let mut arena = Arena {
            map,
            file: Some(ArenaFile {
                file,
                path: path.to_path_buf(),
            }),
            capacity,
            end: HEADER_BYTES,
            generation: 0,
            // The load reads every record in order; it is turned off after.
            read_ahead: true,
            zeroed_to: 0,
            segments: Segments::from(HEADER_BYTES),
        };
        arena.advise(memmap2::Advice::Sequential);
        match header {
            None => {
                arena.write_header();
                arena.map.flush_range(0, HEADER_BYTES as usize)?;
                Ok((arena, Leftovers::None))
            }
            Some(header) => {
                if header.capacity < capacity {
                    log::info!(
                        "{}: grew the arena from {} to {capacity} bytes",
                        path.display(),
                        header.capacity
                    );
                }
                arena.adopt(header)?;
                Ok((arena, Leftovers::InFile))
            }
        }
    }

    /// Takes the generation from a header read from the backing, and
    /// rewrites the header if the capacity grew.
    fn adopt(&mut self, header: Header) -> Result<(), StoreError> {
        if header.capacity > self.capacity {
            return Err(StoreError::CapacityMismatch {
                file_bytes: header.capacity,
                configured_bytes: self.capacity,
            });
        }
        self.generation = header.generation;
        if header.capacity != self.capacity {
            self.write_header();
            self.flush_range(0, HEADER_BYTES)?;
        }
        Ok(())
    }

    /// An empty arena of the same capacity and backing kind, for the next
    /// generation: `<path>.compact` (replaced if present) for a file,
    /// anonymous memory otherwise.
    pub(super) fn create_next(&self, generation: u64) -> io::Result<Arena> {
        let Some(current) = &self.file else {
            return Arena::anonymous(self.capacity, generation);
        };
        let path = compaction_path(&current.path);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)?;
        allocate(&file, &path, self.capacity)?;
        // SAFETY: as in `open_file`.
        let map = unsafe { MmapMut::map_mut(&file)? };
        let mut arena = Arena {
            map,
            file: Some(ArenaFile { file, path }),
            capacity: self.capacity,
            end: HEADER_BYTES,
            generation,
            read_ahead: true,
            zeroed_to: 0,
            segments: Segments::from(HEADER_BYTES),
        };
        arena.set_read_ahead(false);
        arena.write_header();
        Ok(arena)
    }

    /// Makes this arena (built by [`Arena::create_next`]) durable and puts
    /// it where `old` lives: for files, sync then rename over `old`'s path,
    /// which is atomic, so a crash leaves either arena whole. Once this
    /// returns `Ok`, `old` must no longer be written: its name is gone.
    pub(super) fn replace(&mut self, old: &Arena) -> io::Result<()> {
        if let Some(new) = &self.file {
            self.map.flush()?;
            new.file.sync_all()?;
        }
        self.rename_over(old)
    }

    /// Starts making this arena's bytes so far durable on a helper thread,
    /// so that the event loop does not wait for the disk: an fsync of the
    /// file, which on Linux also writes back the pages dirtied through the
    /// map (elsewhere the map is synced first, here). `None` for a memory
    /// arena, and where no thread could be started (the caller then syncs
    /// with [`Arena::replace`]).
    pub(super) fn sync_in_background(&self) -> io::Result<Option<JoinHandle<io::Result<()>>>> {
        let Some(own) = &self.file else {
            return Ok(None);
        };
        #[cfg(not(target_os = "linux"))]
        self.map.flush()?;
        let file = own.file.try_clone()?;
        match std::thread::Builder::new()
            .name("arena-sync".to_string())
            .spawn(move || file.sync_all())
        {
            Ok(handle) => Ok(Some(handle)),
            Err(e) => {
                log::warn!(
                    "{}: no thread for a background sync ({e}); syncing in place",
                    own.path.display()
                );
                Ok(None)
            }
        }
    }

    /// Renames this arena over `old`, whose bytes up to some point were
    /// made durable ([`Arena::sync_in_background`]); what was written after
    /// is as durable as any write since the last flush. The directory's
    /// sync follows on a helper thread.
    pub(super) fn rename_over(&mut self, old: &Arena) -> io::Result<()> {
        let (Some(new), Some(old)) = (&mut self.file, &old.file) else {
            return Ok(());
        };
        std::fs::rename(&new.path, &old.path)?;
        new.path = old.path.clone();
        // The rename is done and cannot be taken back, so a failure to make
        // it durable is logged rather than returned: the arena is in place
        // either way, and a crash before the directory reaches the disk
        // leaves the previous generation, which is complete too.
        if let Some(dir) = new.path.parent().map(Path::to_path_buf) {
            let on_thread = dir.clone();
            if std::thread::Builder::new()
                .name("dir-sync".to_string())
                .spawn(move || sync_dir(&on_thread))
                .is_err()
            {
                sync_dir(&dir);
            }
        }
        Ok(())
    }

    /// Lets go of an arena that a compaction replaced. For a file this
    /// closes the last descriptor of a file renamed over, which frees its
    /// pages in the page cache and its blocks on disk: milliseconds for a
    /// full arena, once per compaction, which the event loop would spend
    /// with every other partition waiting. A helper thread does it (or this
    /// one, if no thread can be started); a memory arena is dropped here.
    pub(super) fn retire(self) {
        if self.file.is_none() {
            return;
        }
        // On failure the closure, and the arena with it, is dropped here.
        let _ = std::thread::Builder::new()
            .name("arena-retire".to_string())
            .spawn(move || drop(self));
    }

    /// Deletes the backing file of an arena that will not be installed.
    pub(super) fn discard(self) {
        if let Some(file) = &self.file {
            if let Err(e) = std::fs::remove_file(&file.path) {
                log::warn!(
                    "{}: removing an abandoned compaction failed: {e}",
                    file.path.display()
                );
            }
        }
    }

    pub(super) fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Which of two alternating arenas this is: index locations carry it.
    pub(super) fn parity(&self) -> u64 {
        self.generation & 1
    }

    pub(super) fn tail_free(&self) -> u64 {
        self.capacity - self.end
    }

    /// How log lines name this arena.
    pub(super) fn name(&self) -> String {
        match &self.file {
            Some(file) => file.path.display().to_string(),
            None => format!("anonymous arena of generation {}", self.generation),
        }
    }

    /// The whole map, header page included.
    pub(super) fn bytes(&self) -> &[u8] {
        &self.map
    }

    /// The record at `offset`, which the store wrote or validated.
    pub(super) fn record(&self, offset: u64) -> Record<'_> {
        record::view(&self.map, offset)
    }

    /// Appends a record and returns its offset. The caller checked the room.
    pub(super) fn append(&mut self, live: bool, key: &[u8], value: &[u8]) -> u64 {
        self.set_read_ahead(false);
        let len = record::record_bytes(key.len(), value.len());
        let offset = self.claim(len);
        record::encode(
            &mut self.map[offset as usize..(offset + len) as usize],
            live,
            key,
            value,
        );
        offset
    }

    /// Zeroes the end marker's bytes at the end of data (as far as the
    /// capacity allows), so that bytes left from earlier contents past it
    /// read as the end.
    pub(super) fn mark_end(&mut self) {
        let from = self.end as usize;
        let to = (self.end + record::RECORD_HEADER_BYTES_MIN).min(self.capacity()) as usize;
        self.map[from..to].fill(0);
    }

    /// Turns the kernel's read-ahead for faults in a file-backed map on or
    /// off. The file is sparse past the end, and with read-ahead a write
    /// fault at the tail has the kernel fill a window of the file that grows
    /// to the disk's read-ahead size (8 MiB on some machines) in large pages,
    /// at once, on the writing thread: every 8 MiB or so of puts, one put
    /// took 1 to 25 ms of CPU. So it is on only for the load at open, which
    /// reads the file in order, and off once the arena takes appends (a
    /// fault then fills one page, and reads through the index are in no
    /// order a read-ahead could use). A copy's chunks do not fault: they are
    /// written through the file ([`Arena::append_bytes`]). Switched only
    /// when the mode changes, since each switch is a system call on the
    /// whole map.
    pub(super) fn set_read_ahead(&mut self, on: bool) {
        if self.read_ahead != on {
            self.read_ahead = on;
            self.advise(if on {
                memmap2::Advice::Normal
            } else {
                memmap2::Advice::Random
            });
        }
    }

    fn advise(&self, advice: memmap2::Advice) {
        if self.file.is_some() {
            // Only a hint: where the kernel refuses it, nothing changes.
            let _ = self.map.advise(advice);
        }
    }

    /// Appends `bytes` (whole records) at the end in one step and returns
    /// where they start: a chunk of a recovery copy. A file-backed arena
    /// writes them through its file (`pwrite`), not through the map: the
    /// kernel copies them straight into the page cache that the map shares,
    /// where writing through the map took a write fault per page (and the
    /// file system's bookkeeping for each), about a third of the receiving
    /// side's time. If the write fails (a full disk), the end stays where it
    /// was and is marked again, as after a crash in the middle of a copy.
    pub(super) fn append_bytes(&mut self, bytes: &[u8]) -> io::Result<u64> {
        let offset = self.end;
        assert!(
            bytes.len() as u64 <= self.tail_free(),
            "append of {} bytes with {} free",
            bytes.len(),
            self.tail_free()
        );
        match &self.file {
            Some(f) => {
                if let Err(e) = std::os::unix::fs::FileExt::write_all_at(&f.file, bytes, offset) {
                    self.mark_end();
                    return Err(e);
                }
            }
            None => self.map[offset as usize..offset as usize + bytes.len()].copy_from_slice(bytes),
        }
        self.set_end(self.end + bytes.len() as u64);
        Ok(offset)
    }

    /// A second handle on the arena's file, for writing chunks from
    /// another thread with `pwrite` ([`super::Filling`]); `None` for an
    /// anonymous arena.
    pub(super) fn file_handle(&self) -> io::Result<Option<File>> {
        self.file.as_ref().map(|f| f.file.try_clone()).transpose()
    }

    /// Takes the `len` bytes past the end as appended: another handle on
    /// the file wrote them ([`Arena::file_handle`]).
    pub(super) fn take_written(&mut self, len: u64) {
        assert!(
            len <= self.tail_free(),
            "adopting {len} bytes with {} free",
            self.tail_free()
        );
        self.set_end(self.end + len);
    }

    /// Moves the end of data to `end`, other than by appending records
    /// (which [`Arena::claim`] does): bytes written through the file, a
    /// reset. The stretches of [`Segments`] past it are dropped, and the
    /// next one starts at `end`.
    pub(super) fn set_end(&mut self, end: u64) {
        self.end = end;
        self.segments.restart_at(end);
    }

    /// Sets the end of data found by the scan at a reopen, with the
    /// stretches the scan cut the records into.
    pub(super) fn set_end_found(&mut self, end: u64, segments: Segments) {
        self.end = end;
        self.segments = segments;
    }

    /// The checksummed stretch of records that starts at `offset`, if any.
    pub(super) fn segment_at(&self, offset: u64) -> Option<Segment> {
        self.segments.at(offset)
    }

    /// The nearest start of a stretch past `offset` (see
    /// [`Segments::next_start_after`]).
    pub(super) fn next_segment_after(&self, offset: u64) -> Option<u64> {
        self.segments.next_start_after(offset)
    }

    /// Appends a record copied whole from another arena.
    pub(super) fn append_copy(&mut self, record: &[u8]) -> u64 {
        let offset = self.claim(record.len() as u64);
        self.map[offset as usize..offset as usize + record.len()].copy_from_slice(record);
        offset
    }

    fn claim(&mut self, len: u64) -> u64 {
        assert!(
            len <= self.tail_free(),
            "append of {len} bytes with {} free",
            self.tail_free()
        );
        self.zero_ahead(self.end + len);
        self.segments.before_append(&self.map, self.end, len);
        let offset = self.end;
        self.end += len;
        offset
    }

    /// Before appends through the map of a file reach `to`: writes zeros
    /// through the file (`pwrite`) over the next pages past the end, a
    /// window at a time. The first write through the map to a page of the
    /// sparse file took a fault that read the hole and had the file system
    /// allocate for it, page by page: about 5 µs a page, an eighth of a
    /// brick's time under writes. A page the zeros put in the page cache
    /// takes a fault that finds it there, and the whole costs about 2 µs a
    /// page. Those faults, one per page, were still 3% of a brick's time,
    /// so the window is then mapped writable in one call
    /// (`MADV_POPULATE_WRITE`, Linux 5.14 on; elsewhere, or if it fails,
    /// the pages fault as before): `store_bench` puts 14–25% faster in
    /// six of seven pairs. Populating alone, without the zeros, was slower
    /// than either: the file system then allocates page by page. Only pages
    /// past the one holding the end are written, so no byte of data is,
    /// and the bytes past the end stay zero as the arena requires. Best effort: the blocks were set aside when the file was
    /// created ([`allocate`]), so a failure here (logged) only leaves the
    /// map to fault as it would without it.
    fn zero_ahead(&mut self, to: u64) {
        let Some(f) = &self.file else {
            return;
        };
        if to <= self.zeroed_to {
            return;
        }
        let from = self.zeroed_to.max(self.end.next_multiple_of(PAGE_BYTES));
        let until = to
            .next_multiple_of(PAGE_BYTES)
            .max(from + ZERO_AHEAD_BYTES as u64)
            .min(self.capacity);
        let mut at = from;
        while at < until {
            let len = (until - at).min(ZERO_AHEAD_BYTES as u64) as usize;
            if let Err(e) = std::os::unix::fs::FileExt::write_all_at(&f.file, &ZEROS[..len], at) {
                log::warn!(
                    "{}: zeroing pages ahead of the appends: {e}",
                    f.path.display()
                );
                break;
            }
            at += len as u64;
        }
        #[cfg(target_os = "linux")]
        if at > from {
            // Best effort, as above: it writes nothing.
            let _ = self.map.advise_range(
                memmap2::Advice::PopulateWrite,
                from as usize,
                (at - from) as usize,
            );
        }
        self.zeroed_to = until;
    }

    fn write_header(&mut self) {
        let header = Header {
            capacity: self.capacity,
            generation: self.generation,
        };
        record::encode_header(&mut self.map, header);
    }

    /// Writes dirty pages back: msync for a file, nothing for memory.
    pub(super) fn flush(&self) -> io::Result<()> {
        if self.file.is_some() {
            self.map.flush()?;
        }
        Ok(())
    }

    fn flush_range(&self, from: u64, to: u64) -> io::Result<()> {
        if self.file.is_some() && to > from {
            self.map.flush_range(from as usize, (to - from) as usize)?;
        }
        Ok(())
    }

    /// Asks the kernel to start writing back `from..to` without waiting,
    /// so that the sync at the end of a compaction has little left to do.
    /// Best effort: an error here only means that sync takes longer.
    pub(super) fn start_writeback(&self, from: u64, to: u64) {
        #[cfg(target_os = "linux")]
        if let Some(file) = &self.file {
            use std::os::fd::AsRawFd;
            // SAFETY: a plain system call on a descriptor this arena owns.
            unsafe {
                libc::sync_file_range(
                    file.file.as_raw_fd(),
                    from as libc::off64_t,
                    (to - from) as libc::off64_t,
                    libc::SYNC_FILE_RANGE_WRITE,
                );
            }
        }
        #[cfg(not(target_os = "linux"))]
        let _ = (from, to);
    }

    /// Zeroes any bytes that are not zero from `self.end` on, which a crash
    /// in the middle of an append leaves behind, so that the next append
    /// starts on clean bytes and a later scan cannot mistake old bytes for
    /// records. Returns how many bytes were cut (from `end` to the last
    /// byte that was not zero).
    pub(super) fn cut_leftovers(&mut self, within: Leftovers) -> io::Result<u64> {
        let last = match within {
            Leftovers::None => None,
            Leftovers::Below(limit) => {
                let limit = limit.min(self.capacity) as usize;
                let from = (self.end as usize).min(limit);
                self.map[from..limit]
                    .iter()
                    .rposition(|&b| b != 0)
                    .map(|i| (from + i) as u64)
            }
            Leftovers::InFile => {
                let file = &self.file.as_ref().expect("a file-backed arena").file;
                last_nonzero_in_file(file, self.end, self.capacity)?
            }
        };
        let Some(last) = last else {
            return Ok(0);
        };
        let (from, to) = (self.end, last + 1);
        self.map[from as usize..to as usize].fill(0);
        self.flush_range(from, to)?;
        Ok(to - from)
    }
}

fn corrupt_header(reason: &'static str) -> StoreError {
    StoreError::Corrupt { offset: 0, reason }
}

/// The offset of the last byte in `from..to` of `file` that is not zero.
/// Reads the file rather than the map so that looking does not bring the
/// pages into this process's memory, and skips holes where the file system
/// can report them, so a sparse arena costs next to nothing to check.
fn last_nonzero_in_file(file: &File, from: u64, to: u64) -> io::Result<Option<u64>> {
    let mut last = None;
    let mut buffer = vec![0u8; SCAN_CHUNK_BYTES];
    let mut at = from;
    // Each pass consumes one data region of at least one byte, so the range's
    // length bounds the passes.
    for _ in 0..=to.saturating_sub(from) {
        let Some((start, stop)) = data_region(file, at, to)? else {
            break;
        };
        let mut read_at = start;
        while read_at < stop {
            let n = (stop - read_at).min(SCAN_CHUNK_BYTES as u64) as usize;
            file.read_exact_at(&mut buffer[..n], read_at)?;
            if let Some(i) = buffer[..n].iter().rposition(|&b| b != 0) {
                last = Some(read_at + i as u64);
            }
            read_at += n as u64;
        }
        at = stop;
        if at >= to {
            break;
        }
    }
    Ok(last)
}

/// The next stretch of `from..to` that may hold data, skipping holes.
#[cfg(target_os = "linux")]
fn data_region(file: &File, from: u64, to: u64) -> io::Result<Option<(u64, u64)>> {
    use std::os::fd::AsRawFd;
    if from >= to {
        return Ok(None);
    }
    let fd = file.as_raw_fd();
    // SAFETY: lseek on a descriptor we own; the store reads and writes only
    // at explicit offsets, so moving the file position is harmless.
    let start = unsafe { libc::lseek(fd, from as libc::off_t, libc::SEEK_DATA) };
    if start < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            // No data at or after `from`.
            Some(libc::ENXIO) => Ok(None),
            // A file system without hole reporting: read everything.
            Some(libc::EINVAL) | Some(libc::EOPNOTSUPP) => Ok(Some((from, to))),
            _ => Err(e),
        };
    }
    let start = start as u64;
    if start >= to {
        return Ok(None);
    }
    // SAFETY: as above.
    let stop = unsafe { libc::lseek(fd, start as libc::off_t, libc::SEEK_HOLE) };
    let stop = if stop < 0 { to } else { (stop as u64).min(to) };
    Ok(Some((start, stop.max(start + 1))))
}

#[cfg(not(target_os = "linux"))]
fn data_region(_file: &File, from: u64, to: u64) -> io::Result<Option<(u64, u64)>> {
    Ok((from < to).then_some((from, to)))
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// The kernel's flags for the map of `path` in this process, from
    /// `/proc/self/smaps` (`rr`: no read-ahead, `sr`: sequential).
    fn vm_flags(path: &Path) -> Vec<String> {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let name = path.to_str().unwrap();
        let mut in_map = false;
        for line in smaps.lines() {
            if line.contains('-') && line.split_whitespace().count() >= 5 {
                in_map = line.ends_with(name);
            } else if let Some(flags) = line.strip_prefix("VmFlags:") {
                if in_map {
                    return flags.split_whitespace().map(str::to_string).collect();
                }
            }
        }
        panic!("no map of {name}");
    }

    #[test]
    fn a_file_map_reads_ahead_for_the_load_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.arena");
        let (mut arena, _) = Arena::open_file(&path, 1 << 20).unwrap();
        assert!(
            vm_flags(&path).contains(&"sr".to_string()),
            "{:?}",
            vm_flags(&path)
        );
        arena.set_read_ahead(false);
        assert!(
            vm_flags(&path).contains(&"rr".to_string()),
            "{:?}",
            vm_flags(&path)
        );
        arena.set_read_ahead(true);
        let flags = vm_flags(&path);
        assert!(!flags.contains(&"rr".to_string()) && !flags.contains(&"sr".to_string()));
        arena.append(true, b"k", b"v");
        assert!(
            vm_flags(&path).contains(&"rr".to_string()),
            "{:?}",
            vm_flags(&path)
        );
        let next = arena.create_next(1).unwrap();
        let next_path = compaction_path(&path);
        assert!(vm_flags(&next_path).contains(&"rr".to_string()));
        next.discard();
    }

    /// Bytes of disk the file at `path` has allocated.
    fn allocated_bytes(path: &Path) -> u64 {
        std::os::unix::fs::MetadataExt::blocks(&std::fs::metadata(path).unwrap()) * 512
    }

    #[test]
    fn arena_files_have_their_disk_blocks_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let capacity = 8 << 20;
        // A new arena, and the one a compaction writes.
        let path = dir.path().join("a.arena");
        let (mut arena, _) = Arena::open_file(&path, capacity).unwrap();
        assert!(
            allocated_bytes(&path) >= capacity,
            "{}",
            allocated_bytes(&path)
        );
        arena.append(true, b"k", b"v");
        let next = arena.create_next(1).unwrap();
        let next_path = compaction_path(&path);
        assert!(allocated_bytes(&next_path) >= capacity);
        next.discard();
        drop(arena);
        // A sparse file of the right length (as an older build left it),
        // and one with a smaller capacity that grows on reopen.
        for (name, len) in [("b.arena", capacity), ("c.arena", capacity / 2)] {
            let path = dir.path().join(name);
            File::create(&path).unwrap().set_len(len).unwrap();
            assert!(allocated_bytes(&path) < len);
            let (arena, _) = Arena::open_file(&path, capacity).unwrap();
            assert_eq!(std::fs::metadata(&path).unwrap().len(), capacity);
            assert!(allocated_bytes(&path) >= capacity, "{name}");
            drop(arena);
        }
        // What was appended before survives the reopen's allocation.
        let (arena, _) = Arena::open_file(&path, capacity).unwrap();
        let record = arena.record(HEADER_BYTES);
        assert_eq!((record.key, record.value), (&b"k"[..], &b"v"[..]));
    }

    /// Which pages of the arena's file are in the page cache.
    fn resident_pages(arena: &Arena) -> Vec<bool> {
        let pages = arena.map.len() / PAGE_BYTES as usize;
        let mut flags = vec![0u8; pages];
        // SAFETY: the map is `pages` pages long and `flags` holds one byte
        // for each.
        let rc = unsafe {
            libc::mincore(
                arena.map.as_ptr() as *mut libc::c_void,
                arena.map.len(),
                flags.as_mut_ptr(),
            )
        };
        assert_eq!(rc, 0, "{}", io::Error::last_os_error());
        flags.iter().map(|f| f & 1 == 1).collect()
    }

    #[test]
    fn appends_to_a_file_find_zeroed_pages_ahead_and_keep_every_byte() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.arena");
        let capacity = 64 << 20;
        let window = ZERO_AHEAD_BYTES / PAGE_BYTES as usize;
        let (mut arena, _) = Arena::open_file(&path, capacity).unwrap();
        arena.set_read_ahead(false);
        // As after a load that found data up to the middle of a page, far
        // from what the first faults read ahead.
        let start = (32 << 20) + 100;
        arena.set_end(start);
        let first = arena.append(true, b"k0", &[7; 100]);
        let resident = resident_pages(&arena);
        let page = (start / PAGE_BYTES) as usize;
        assert!(
            resident[page + 1..=page + window].iter().all(|&r| r),
            "the window after the end's page is in the page cache"
        );
        assert!(
            !resident[page + 16 * window],
            "pages far past the end stay holes until appends come near"
        );
        // Appends across several windows, then a reopen with the end in the
        // middle of a page and more appends: nothing written is lost, and
        // everything past the end reads as zero in the file.
        let value = [9u8; 1000];
        let mut offsets = vec![first];
        for i in 1..700u32 {
            offsets.push(arena.append(true, format!("k{i}").as_bytes(), &value));
        }
        let end = arena.end;
        assert!(end > start + 2 * ZERO_AHEAD_BYTES as u64 && end % PAGE_BYTES != 0);
        drop(arena);
        let (mut arena, _) = Arena::open_file(&path, capacity).unwrap();
        arena.set_read_ahead(false);
        arena.set_end(end);
        for i in 700..1000u32 {
            offsets.push(arena.append(true, format!("k{i}").as_bytes(), &value));
        }
        for (i, offset) in offsets.iter().enumerate() {
            let record = arena.record(*offset);
            assert_eq!(record.key, format!("k{i}").as_bytes());
            let fill = if i == 0 { 7 } else { 9 };
            assert_eq!(record.value.len(), if i == 0 { 100 } else { 1000 });
            assert!(record.value.iter().all(|&b| b == fill));
        }
        let f = File::open(&path).unwrap();
        let mut data = vec![0u8; (arena.end - start) as usize];
        std::os::unix::fs::FileExt::read_exact_at(&f, &mut data, start).unwrap();
        assert!(data[..] == arena.map[start as usize..arena.end as usize]);
        assert_eq!(last_nonzero_in_file(&f, arena.end, capacity).unwrap(), None);
    }
}
