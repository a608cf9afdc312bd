//! The in-memory index of a partition: key hash → record location.
//!
//! An open-addressing table of `u64` slots with linear probing. A slot holds
//! a *tag* (the high bits of the key's hash) above a *location* (where the
//! record is; see [`Index::new`]); zero means empty, which never collides
//! with a location because record offsets start after the 64-byte header
//! page. The location takes only the bits the arena's capacity needs (28 for
//! 100 MiB), so the tag gets the rest: 36 bits for 100 MiB, never fewer than
//! 24.
//!
//! A key's home slot is its tag scaled to the table's size: the tag read as
//! a fraction of one, times the number of slots ("fast range", a multiply
//! and a shift instead of a power-of-two mask). So the table may have any
//! size, and it grows by an eighth at a time: it is kept between 7/9 and
//! 7/8 full, where doubling a power of two kept it between 7/16 and 7/8. A
//! table of up to 2^tag_bits slots finds every entry's home from the slot
//! alone, so growing and deleting never read the arena; beyond that (only
//! for arenas of many GiB) the home takes the whole hash, which the
//! caller's `hash_at(location)` recomputes from the stored key. The price of
//! sharing bits between tag and home: a lookup's tag comparison tells apart
//! entries of the same home by the tag's other bits only (about 36 - 18 =
//! 18 bits for a 100 MiB arena of half a million keys), which still makes a
//! wasted key comparison rare.
//!
//! The index stores no keys. Callers pass `matches(location)`, called only
//! when a tag matches, to compare the full key in the arena. This module
//! knows nothing about arenas, and its tests feed it made-up hashes.
//!
//! Memory: 8 bytes per slot at a load between 7/9 and 7/8 (the table grows
//! by an eighth past 7/8), so 9.1 to 10.3 bytes per key. Growing moves
//! every entry, so a key is moved about eight times on average over the
//! table's life: a few nanoseconds per put, for 1.5 bytes per key less
//! than growing by a quarter would hold. Deletion shifts later
//! entries of the probe run back (no tombstones), so lookups never slow
//! down with churn.
//!
//! Growth in steps: moving every entry at once stalls the write that
//! triggers it (about 10 ms at half a million keys, more on a busy
//! machine), and a brick's event loop with it. So a table of
//! [`GROW_IN_STEPS_FROM`] slots or more keeps the outgrown table beside the
//! grown one and moves its entries over a few probe runs per insert, as
//! Redis rehashes a dictionary a bucket at a time. Meanwhile a lookup that
//! misses in the grown table looks in the old one, new keys go only to the
//! grown one, and an overwrite or remove acts where the key is. The step
//! is large enough that the move always ends before the next growth is
//! due, so there are never more than two tables, and an idle caller can
//! move more ([`Index::grow_step`]) so that the old table does not stay
//! when puts stop.

use std::ops::{Deref, DerefMut};

use memmap2::MmapMut;

/// Asks the processor to bring the cache line at `at` into its cache. Only
/// a hint: it changes nothing and cannot fault.
pub fn prefetch<T>(at: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch has no effect on memory and cannot fault; the
    // pointer comes from a reference anyway.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>((at as *const T).cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = at;
}

/// Fewest slots a table has.
pub const SLOTS_MIN: usize = 16;

/// Most slots a table may have: beyond this a partition could not hold
/// enough records anyway (records are at least
/// [`super::RECORD_HEADER_BYTES_MIN`] bytes in an arena of at most
/// [`super::CAPACITY_MAX`] bytes).
pub const SLOTS_MAX: usize = 1 << 37;

/// Most bits a location may take, so that a tag has at least 24.
pub const LOCATION_BITS_MAX: u32 = 40;

const _: () = assert!(SLOTS_MIN >= 4 && SLOTS_MAX.is_power_of_two());
const _: () = assert!(
    SLOTS_MAX as u64 * super::RECORD_HEADER_BYTES_MIN / 8 * 7 >= super::record::CAPACITY_MAX
);

/// Where a key's probe ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    /// The key is at this position.
    Found(usize),
    /// The key is absent; this empty position is where it would go.
    Vacant(usize),
}

/// Tables smaller than this grow in one go; larger ones move their entries
/// to the grown table a few at a time (see [`Index::reserve_one`]).
pub const GROW_IN_STEPS_FROM: usize = 4096;

/// Slots of the old table a growing index moves on with each
/// [`Index::reserve_one`] (whole probe runs, so sometimes more). The old
/// table holds at most 7/8 of its `n` slots in entries and the grown one
/// (9n/8 slots) fills up after 7n/64 more keys, so moving at least 64/7 ≈
/// 9.2 slots per insert always ends the move before the next growth.
const MOVE_PER_STEP: usize = 16;

const _: () = assert!(MOVE_PER_STEP * 7 > 64);

/// A table's slots, zeroed at first, in an anonymous mapping of their
/// own rather than from the heap: a table outgrown is unmapped, so its
/// memory goes back to the system at once whatever the allocator keeps
/// (glibc keeps freed blocks under its map threshold, which rises with
/// every large block freed; mimalloc keeps freed pages for a while), and
/// the pages of a new table are zero without being written.
struct Slots {
    map: MmapMut,
    len: usize,
}

impl Slots {
    fn zeroed(len: usize) -> Slots {
        let bytes = len * std::mem::size_of::<u64>();
        let map = MmapMut::map_anon(bytes)
            .unwrap_or_else(|e| panic!("cannot map {bytes} bytes for an index table: {e}"));
        Slots { map, len }
    }
}

impl Deref for Slots {
    type Target = [u64];

    fn deref(&self) -> &[u64] {
        // SAFETY: the mapping is page-aligned, `len` u64s long, and lives
        // as long as `self`; any bit pattern is a valid u64.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr().cast(), self.len) }
    }
}

impl DerefMut for Slots {
    fn deref_mut(&mut self) -> &mut [u64] {
        // SAFETY: as in `deref`, and `&mut self` makes the borrow unique.
        unsafe { std::slice::from_raw_parts_mut(self.map.as_mut_ptr().cast(), self.len) }
    }
}

impl std::fmt::Debug for Slots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Slots({})", self.len)
    }
}

/// One open-addressing table: its slots and the geometry of homes.
#[derive(Debug)]
struct Table {
    slots: Slots,
    location_bits: u32,
}

impl Table {
    fn len(&self) -> usize {
        self.slots.len()
    }

    /// The slot after `pos`, wrapping at the end.
    fn next(&self, pos: usize) -> usize {
        if pos + 1 == self.slots.len() {
            0
        } else {
            pos + 1
        }
    }

    /// How far `pos` is past `home` along the probe order.
    fn distance(&self, home: usize, pos: usize) -> usize {
        if pos >= home {
            pos - home
        } else {
            pos + self.slots.len() - home
        }
    }

    /// The slot that `bits`, read as a fraction of one, falls in.
    fn scale(&self, bits: u64) -> usize {
        ((u128::from(bits) * self.slots.len() as u128) >> 64) as usize
    }

    fn location_mask(&self) -> u64 {
        (1 << self.location_bits) - 1
    }

    fn tag(&self, hash: u64) -> u64 {
        hash >> self.location_bits
    }

    /// The home slot: the tag scaled to the table's size while the tag's
    /// bits tell that many slots apart, else the whole hash scaled.
    fn home(&self, hash: u64) -> usize {
        if self.homes_from_tags() {
            self.scale(hash & !self.location_mask())
        } else {
            self.scale(hash)
        }
    }

    /// Whether homes can be read off the slots, without `hash_at`.
    fn homes_from_tags(&self) -> bool {
        (self.slots.len() as u64) <= 1u64 << (64 - self.location_bits).min(63)
    }

    /// The home slot of the entry in `slot`.
    fn home_of_slot(&self, slot: u64, hash_at: &mut impl FnMut(u64) -> u64) -> usize {
        if self.homes_from_tags() {
            self.scale(slot & !self.location_mask())
        } else {
            let hash = hash_at(slot & self.location_mask());
            debug_assert_eq!(
                self.tag(hash),
                slot >> self.location_bits,
                "hash_at disagrees with the stored tag"
            );
            self.home(hash)
        }
    }

    /// The key's slot, or the empty slot where its probe ended.
    fn find(&self, hash: u64, matches: &mut impl FnMut(u64) -> bool) -> Probe {
        let tag = self.tag(hash);
        let mut pos = self.home(hash);
        // The table always has an empty slot (load stays under 7/8), so the
        // probe ends within one lap; the bound only guards that invariant.
        for _ in 0..self.slots.len() {
            let slot = self.slots[pos];
            if slot == 0 {
                return Probe::Vacant(pos);
            }
            if slot >> self.location_bits == tag && matches(slot & self.location_mask()) {
                return Probe::Found(pos);
            }
            pos = self.next(pos);
        }
        unreachable!("an index of {} slots has no empty slot", self.slots.len());
    }

    fn prefetch(&self, hash: u64) {
        prefetch(&self.slots[self.home(hash)]);
    }

    /// The location of the first entry among the eight slots from the
    /// key's home whose tag is the key's: most likely the key's.
    fn candidate(&self, hash: u64) -> Option<u64> {
        let tag = self.tag(hash);
        let mut pos = self.home(hash);
        for _ in 0..8 {
            let slot = self.slots[pos];
            if slot == 0 {
                return None;
            }
            if slot >> self.location_bits == tag {
                return Some(slot & self.location_mask());
            }
            pos = self.next(pos);
        }
        None
    }

    /// Puts an entry (a whole slot value) at the first empty slot from its
    /// home.
    fn place(&mut self, slot: u64, hash_at: &mut impl FnMut(u64) -> u64) {
        let mut pos = self.home_of_slot(slot, hash_at);
        while self.slots[pos] != 0 {
            pos = self.next(pos);
        }
        self.slots[pos] = slot;
    }

    /// Empties slot `pos` and shifts back the entries after it that would
    /// otherwise become unreachable, so no tombstone is needed.
    fn remove(&mut self, pos: usize, hash_at: &mut impl FnMut(u64) -> u64) {
        assert!(self.slots[pos] != 0, "slot {pos} is empty");
        let mut hole = pos;
        let mut next = self.next(pos);
        for _ in 0..self.slots.len() {
            let slot = self.slots[next];
            if slot == 0 {
                break;
            }
            let home = self.home_of_slot(slot, hash_at);
            // The entry may fill the hole when the hole lies on its probe
            // path, that is between its home and where it sits now (with
            // wraparound): its distance from home is at least the hole's.
            if self.distance(home, next) >= self.distance(hole, next) {
                self.slots[hole] = slot;
                hole = next;
            }
            next = self.next(next);
        }
        self.slots[hole] = 0;
    }

    /// Checks that every entry is reachable from its home without crossing
    /// an empty slot and that its tag is its hash's; returns the entries.
    fn check_invariants(&self, hash_at: &mut impl FnMut(u64) -> u64) -> usize {
        let mut count = 0;
        for (pos, &slot) in self.slots.iter().enumerate().filter(|(_, &s)| s != 0) {
            count += 1;
            let hash = hash_at(slot & self.location_mask());
            assert_eq!(
                slot >> self.location_bits,
                self.tag(hash),
                "tag of slot {pos}"
            );
            let home = self.home(hash);
            let mut at = home;
            while at != pos {
                assert!(
                    self.slots[at] != 0,
                    "entry at {pos} (home {home}) is cut off by an empty slot at {at}"
                );
                at = self.next(at);
            }
        }
        count
    }
}

/// An index table's slots arriving in parts, in order (a recovery copy
/// sends its source's index: see [`Index::from_image`]).
#[derive(Debug)]
pub struct IndexImage {
    slots: Slots,
    /// Slots received so far, from slot 0.
    filled: usize,
}

impl IndexImage {
    /// An image of `slots` slots, all still to come; `None` for a size no
    /// index has.
    pub fn new(slots: u64) -> Option<IndexImage> {
        let slots = usize::try_from(slots).ok()?;
        (SLOTS_MIN..=SLOTS_MAX)
            .contains(&slots)
            .then(|| IndexImage {
                slots: Slots::zeroed(slots),
                filled: 0,
            })
    }

    /// The image's size in slots.
    pub fn slots(&self) -> usize {
        self.slots.len()
    }

    /// Takes the next part: `bytes` holds slots from `first` on, as
    /// little-endian u64s. Refused unless it follows the part before and
    /// fits.
    pub fn write(&mut self, first: u64, bytes: &[u8]) -> Result<(), &'static str> {
        if first != self.filled as u64 {
            return Err("a part of the index image out of order");
        }
        if !bytes.len().is_multiple_of(8) || bytes.len() / 8 > self.slots.len() - self.filled {
            return Err("a part of the index image does not fit it");
        }
        let to = self.filled + bytes.len() / 8;
        for (slot, word) in self.slots[self.filled..to]
            .iter_mut()
            .zip(bytes.chunks_exact(8))
        {
            *slot = u64::from_le_bytes(word.try_into().expect("8 bytes"));
        }
        self.filled = to;
        Ok(())
    }

    /// Whether every slot arrived.
    pub fn is_complete(&self) -> bool {
        self.filled == self.slots.len()
    }
}

/// The table an index outgrew, while its entries move to the grown one.
/// Its slots are visited once, in order from slot 0, and a step stops only
/// at an empty slot. So what has moved is whole probe runs, and perhaps the
/// part at slot 0 of a run that wraps around the end (its start, near the
/// end of the table, moves last): never the start of a run without its
/// rest. A key left behind is therefore still found from its home here.
/// Moved slots are emptied; no key is ever added here.
#[derive(Debug)]
struct Moving {
    table: Table,
    /// The next slot to visit; every slot before it is empty.
    cursor: usize,
}

/// The open-addressing table. See the module docs.
///
/// Positions in [`Probe`] and the methods that take one number the current
/// table's slots from 0, then, while a growth is under way, the old
/// table's after them; a position is good until the next call that takes
/// `&mut self`.
#[derive(Debug)]
pub struct Index {
    table: Table,
    moving: Option<Moving>,
    len: usize,
    grow_in_steps_from: usize,
    /// Filled in bulk (a partition's load): see [`Index::start_bulk`].
    bulk: bool,
}

impl Index {
    /// An empty index of [`SLOTS_MIN`] slots whose locations are nonzero
    /// numbers of `location_bits` bits (at most [`LOCATION_BITS_MAX`]; up to
    /// 60 is accepted so tests can make tags tiny).
    pub fn new(location_bits: u32) -> Index {
        assert!(
            (1..=60).contains(&location_bits),
            "{location_bits} location bits"
        );
        Index {
            table: Table {
                slots: Slots::zeroed(SLOTS_MIN),
                location_bits,
            },
            moving: None,
            len: 0,
            grow_in_steps_from: GROW_IN_STEPS_FROM,
            bulk: false,
        }
    }

    /// The same index growing in steps from tables of `slots` slots, so
    /// that tests can watch small tables grow that way.
    #[cfg(test)]
    fn growing_in_steps_from(mut self, slots: usize) -> Index {
        self.grow_in_steps_from = slots;
        self
    }

    /// Removes every key and keeps the table's size, for a partition that
    /// is about to be filled again with about as many keys.
    pub fn clear(&mut self) {
        self.moving = None;
        self.table.slots.fill(0);
        self.len = 0;
    }

    /// Keys in the index.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the index holds no key.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Slots in the current table (the grown one, while entries move).
    pub fn slots(&self) -> usize {
        self.table.len()
    }

    /// One past the largest position: the current table's slots and the
    /// old table's while entries move.
    pub fn positions(&self) -> usize {
        self.table.len() + self.moving.as_ref().map_or(0, |m| m.table.len())
    }

    /// Whether entries are still moving from an outgrown table.
    pub fn is_growing(&self) -> bool {
        self.moving.is_some()
    }

    /// Bytes of memory the tables use.
    pub fn memory_bytes(&self) -> usize {
        self.positions() * std::mem::size_of::<u64>()
    }

    /// The table and slot behind a position.
    fn at(&self, pos: usize) -> (&Table, usize) {
        match (pos.checked_sub(self.table.len()), &self.moving) {
            (Some(old), Some(m)) => (&m.table, old),
            _ => (&self.table, pos),
        }
    }

    fn at_mut(&mut self, pos: usize) -> (&mut Table, usize) {
        match (pos.checked_sub(self.table.len()), &mut self.moving) {
            (Some(old), Some(m)) => (&mut m.table, old),
            _ => (&mut self.table, pos),
        }
    }

    /// Looks for the key with this hash. `matches` is asked about each entry
    /// whose tag equals the key's, and says whether that entry's location
    /// holds the key. A vacant position is always in the current table.
    pub fn find(&self, hash: u64, mut matches: impl FnMut(u64) -> bool) -> Probe {
        let probe = self.table.find(hash, &mut matches);
        match (probe, &self.moving) {
            (Probe::Vacant(_), Some(m)) => match m.table.find(hash, &mut matches) {
                Probe::Found(old) => Probe::Found(self.table.len() + old),
                Probe::Vacant(_) => probe,
            },
            _ => probe,
        }
    }

    /// Asks the processor to bring the home slot of `hash` into its cache,
    /// so that a [`Index::find`] of that hash a little later does not wait
    /// for memory. Only a hint: it changes nothing.
    pub fn prefetch(&self, hash: u64) {
        self.table.prefetch(hash);
        if let Some(m) = &self.moving {
            m.table.prefetch(hash);
        }
    }

    /// Where the key with this hash most likely is, without comparing keys
    /// (an entry of the same tag), for a prefetch of its record: best read
    /// after a [`Index::prefetch`] of the hash had time to bring the slot.
    pub fn candidate(&self, hash: u64) -> Option<u64> {
        self.table
            .candidate(hash)
            .or_else(|| self.moving.as_ref().and_then(|m| m.table.candidate(hash)))
    }

    /// The location at position `pos`, if it is occupied.
    pub fn get(&self, pos: usize) -> Option<u64> {
        let (table, pos) = self.at(pos);
        let slot = table.slots[pos];
        (slot != 0).then_some(slot & table.location_mask())
    }

    /// The location at an occupied position.
    pub fn location(&self, pos: usize) -> u64 {
        self.get(pos)
            .unwrap_or_else(|| panic!("position {pos} is empty"))
    }

    fn check_location(&self, location: u64) {
        assert!(
            location != 0 && location <= self.table.location_mask(),
            "location {location:#x} out of range"
        );
    }

    /// Points an occupied position at a new location of the same key.
    pub fn replace(&mut self, pos: usize, location: u64) {
        self.check_location(location);
        let (table, pos) = self.at_mut(pos);
        let slot = table.slots[pos];
        assert!(slot != 0, "position {pos} is empty");
        table.slots[pos] = (slot & !table.location_mask()) | location;
    }

    /// Makes room for one more key: grows the table by an eighth if that
    /// key would take the load past 7/8, and moves on a growth under way.
    /// Call before [`Index::find`] when the result may be used to insert,
    /// because both move entries. `hash_at` is called only for tables past
    /// 2^tag_bits slots.
    ///
    /// A table of fewer than [`GROW_IN_STEPS_FROM`] slots is rebuilt at
    /// once. A larger one is not: its entries move to the grown table
    /// `MOVE_PER_STEP` slots per call, while lookups look in both, so no
    /// single write pays for moving every key (about 10 ms at half a
    /// million keys).
    pub fn reserve_one(&mut self, mut hash_at: impl FnMut(u64) -> u64) {
        if self.moving.is_some() {
            self.move_entries(MOVE_PER_STEP, &mut hash_at);
        }
        if (self.len + 1) * 8 > self.table.len() * 7 {
            assert!(self.table.len() < SLOTS_MAX, "index past {SLOTS_MAX} slots");
            // Not reached while the step size holds; kept for safety.
            self.move_entries(usize::MAX, &mut hash_at);
            let grown = if self.bulk {
                self.table.len() * 2
            } else {
                self.table.len() + self.table.len() / 8
            }
            .min(SLOTS_MAX);
            let old = std::mem::replace(&mut self.table.slots, Slots::zeroed(grown));
            let old = Table {
                slots: old,
                location_bits: self.table.location_bits,
            };
            let step = if self.bulk || old.len() < self.grow_in_steps_from {
                usize::MAX
            } else {
                MOVE_PER_STEP
            };
            self.moving = Some(Moving {
                table: old,
                cursor: 0,
            });
            self.move_entries(step, &mut hash_at);
        }
    }

    /// Makes room for `keys` keys in all (and a reservation past them, see
    /// [`Index::reserve_one`]), in one step: a partition about to
    /// receive a copy of that many keys sizes its index once instead of
    /// growing it a few percent at a time (each growth moves every entry
    /// again). Entries already in the index move at once, so this is meant
    /// for an index that is empty or small.
    pub fn reserve(&mut self, keys: usize, mut hash_at: impl FnMut(u64) -> u64) {
        let keys = keys.max(self.len);
        // Room for one more, so that an overwrite with `keys` keys in (which
        // reserves before it finds its key) does not grow the table.
        let room = keys.saturating_add(1);
        if room.saturating_mul(8) <= self.table.len() * 7 {
            return;
        }
        self.move_entries(usize::MAX, &mut hash_at);
        let slots = room
            .saturating_mul(8)
            .div_ceil(7)
            .clamp(SLOTS_MIN, SLOTS_MAX);
        let old = std::mem::replace(&mut self.table.slots, Slots::zeroed(slots));
        for slot in old.iter().copied().filter(|&s| s != 0) {
            self.table.place(slot, &mut hash_at);
        }
    }

    /// Until [`Index::end_bulk`], the table grows to twice its size at
    /// once instead of by an eighth a few slots per insert: for a load,
    /// which nobody waits on between inserts, and which would otherwise
    /// move every entry about nine times (and look up every new key in
    /// both tables while a move lasts).
    pub fn start_bulk(&mut self, mut hash_at: impl FnMut(u64) -> u64) {
        self.move_entries(usize::MAX, &mut hash_at);
        self.bulk = true;
    }

    /// Ends [`Index::start_bulk`], giving the table the size an index of
    /// this many keys has after a growth in steps (an eighth of room), so a
    /// table that doubled does not keep up to twice the memory.
    pub fn end_bulk(&mut self, mut hash_at: impl FnMut(u64) -> u64) {
        self.bulk = false;
        let room = (self.len + 1).div_ceil(8) * 9;
        let fitting = room
            .saturating_mul(8)
            .div_ceil(7)
            .clamp(SLOTS_MIN, SLOTS_MAX);
        if fitting < self.table.len() {
            self.move_entries(usize::MAX, &mut hash_at);
            let old = std::mem::replace(&mut self.table.slots, Slots::zeroed(fitting));
            for slot in old.iter().copied().filter(|&s| s != 0) {
                self.table.place(slot, &mut hash_at);
            }
        }
    }

    /// Moves a growth under way on by at least `slots` slots of the old
    /// table, for an idle moment; returns whether entries are still moving.
    pub fn grow_step(&mut self, slots: usize, mut hash_at: impl FnMut(u64) -> u64) -> bool {
        self.move_entries(slots, &mut hash_at);
        self.moving.is_some()
    }

    /// Moves the entries of at least `count` slots of the old table (whole
    /// probe runs) to the current one; drops the old table once it is
    /// empty.
    fn move_entries(&mut self, count: usize, hash_at: &mut impl FnMut(u64) -> u64) {
        let Some(m) = &mut self.moving else {
            return;
        };
        let mut visited = 0usize;
        while m.cursor < m.table.len() && (visited < count || m.table.slots[m.cursor] != 0) {
            let slot = std::mem::take(&mut m.table.slots[m.cursor]);
            if slot != 0 {
                self.table.place(slot, hash_at);
            }
            m.cursor += 1;
            visited += 1;
        }
        if m.cursor == m.table.len() {
            self.moving = None;
        }
    }

    /// Puts a key that [`Index::find`] reported vacant at `pos` into that
    /// slot.
    pub fn insert(&mut self, pos: usize, hash: u64, location: u64) {
        self.check_location(location);
        assert!(pos < self.table.len(), "insert into the old table");
        assert!(self.table.slots[pos] == 0, "slot {pos} is taken");
        assert!(
            (self.len + 1) * 8 <= self.table.len() * 7,
            "insert without reserve_one"
        );
        self.table.slots[pos] = (self.table.tag(hash) << self.table.location_bits) | location;
        self.len += 1;
    }

    /// Empties position `pos` and shifts back the entries after it in its
    /// table that would otherwise become unreachable, so no tombstone is
    /// needed. `hash_at` is called only for tables past 2^tag_bits slots.
    pub fn remove(&mut self, pos: usize, mut hash_at: impl FnMut(u64) -> u64) {
        let (table, pos) = self.at_mut(pos);
        table.remove(pos, &mut hash_at);
        self.len -= 1;
    }

    /// Every occupied position as (position, location), in position order.
    pub fn iter(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
        let old = self.moving.as_ref().map_or(&[][..], |m| &m.table.slots[..]);
        let mask = self.table.location_mask();
        self.table
            .slots
            .iter()
            .chain(old)
            .enumerate()
            .filter(|(_, &s)| s != 0)
            .map(move |(pos, &s)| (pos, s & mask))
    }

    /// The table's slots as they are, for a recovery copy to send; `None`
    /// while entries move from an outgrown table or during a bulk fill,
    /// when the slots alone are not the index.
    pub fn table_slots(&self) -> Option<&[u64]> {
        (self.moving.is_none() && !self.bulk).then_some(&self.table.slots[..])
    }

    /// The index another table's slots make (an [`IndexImage`] received
    /// whole), after `fix` rewrote each nonzero slot (the receiver puts its
    /// own arena's parity into the locations). Refused when the table's
    /// size is outside what an index can have, or when it is over 7/8
    /// full: an index must always have an empty slot for its probes to end.
    /// What the locations point at is the caller's to check.
    pub fn from_image(
        location_bits: u32,
        image: IndexImage,
        mut fix: impl FnMut(u64) -> u64,
    ) -> Result<Index, &'static str> {
        if !image.is_complete() {
            return Err("the index image is incomplete");
        }
        let mut slots = image.slots;
        let mut len = 0usize;
        for slot in slots.iter_mut().filter(|s| **s != 0) {
            *slot = fix(*slot);
            len += 1;
        }
        if len * 8 > slots.len() * 7 {
            return Err("the index image is over 7/8 full");
        }
        Ok(Index {
            table: Table {
                slots,
                location_bits,
            },
            moving: None,
            len,
            grow_in_steps_from: GROW_IN_STEPS_FROM,
            bulk: false,
        })
    }

    /// Checks that every entry is reachable from its home in its table
    /// without crossing an empty slot, that its tag is its hash's, that the
    /// count is right, and that a growth under way ends before the next
    /// one is due. For tests.
    pub fn check_invariants(&self, mut hash_at: impl FnMut(u64) -> u64) {
        let mut count = self.table.check_invariants(&mut hash_at);
        if let Some(m) = &self.moving {
            count += m.table.check_invariants(&mut hash_at);
            let room = self.table.len() * 7 / 8 - self.len;
            let left = m.table.len() - m.cursor;
            assert!(
                left <= room.saturating_add(1) * MOVE_PER_STEP,
                "{left} old slots left to move with room for {room} keys"
            );
        }
        assert_eq!(count, self.len, "index count");
        assert!(self.len * 8 <= self.table.len() * 7, "index load over 7/8");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    /// Location bits of most tests: tags of 24 bits.
    const BITS: u32 = 40;

    /// A stand-in for an arena: location → (key, hash), counting the hashes
    /// the index asks for (each would be a key read from the arena).
    #[derive(Default)]
    struct Keys {
        hashes: HashMap<u64, (u64, u64)>,
        next_location: u64,
        hash_reads: usize,
    }

    impl Keys {
        fn hash(&mut self, location: u64) -> u64 {
            self.hash_reads += 1;
            self.hashes[&location].1
        }
    }

    /// Puts `key` with `hash` the way the store does.
    fn put(index: &mut Index, keys: &mut Keys, key: u64, hash: u64) -> u64 {
        keys.next_location += 1;
        let location = 64 + keys.next_location;
        keys.hashes.insert(location, (key, hash));
        index.reserve_one(|l| keys.hash(l));
        match index.find(hash, |l| keys.hashes[&l].0 == key) {
            Probe::Found(pos) => index.replace(pos, location),
            Probe::Vacant(pos) => index.insert(pos, hash, location),
        }
        location
    }

    fn get(index: &Index, keys: &Keys, key: u64, hash: u64) -> Option<u64> {
        match index.find(hash, |l| keys.hashes[&l].0 == key) {
            Probe::Found(pos) => Some(index.location(pos)),
            Probe::Vacant(_) => None,
        }
    }

    fn remove(index: &mut Index, keys: &mut Keys, key: u64, hash: u64) -> bool {
        match index.find(hash, |l| keys.hashes[&l].0 == key) {
            Probe::Found(pos) => {
                index.remove(pos, |l| keys.hash(l));
                true
            }
            Probe::Vacant(_) => false,
        }
    }

    fn check(index: &Index, keys: &mut Keys) {
        index.check_invariants(|l| keys.hashes[&l].1);
    }

    /// A hash (for [`BITS`] location bits) whose home slot is `home` in a
    /// table of 16 slots, and whose tag is otherwise `tag` (under 2^20).
    fn hash(home: u64, tag: u64) -> u64 {
        assert!(home < 16 && tag < 1 << 20);
        (home << 60) | (tag << BITS)
    }

    #[test]
    fn colliding_keys_probe_linearly() {
        let (mut index, mut keys) = (Index::new(BITS), Keys::default());
        // Three keys share home slot 3 and even the tag: only the key
        // comparison tells them apart.
        let a = put(&mut index, &mut keys, 1, hash(3, 7));
        let b = put(&mut index, &mut keys, 2, hash(3, 7));
        let c = put(&mut index, &mut keys, 3, hash(3, 7));
        assert_eq!(
            index.iter().collect::<Vec<_>>(),
            vec![(3, a), (4, b), (5, c)]
        );
        assert_eq!(get(&index, &keys, 2, hash(3, 7)), Some(b));
        assert_eq!(get(&index, &keys, 4, hash(3, 7)), None);
        assert_eq!(index.find(hash(3, 7), |_| false), Probe::Vacant(6));
    }

    #[test]
    fn the_key_comparison_runs_only_on_a_tag_match() {
        let (mut index, mut keys) = (Index::new(BITS), Keys::default());
        put(&mut index, &mut keys, 1, hash(3, 1));
        put(&mut index, &mut keys, 2, hash(3, 2));
        let mut compared = Vec::new();
        let probe = index.find(hash(3, 2), |l| {
            compared.push(l);
            true
        });
        assert_eq!(probe, Probe::Found(4));
        assert_eq!(
            compared.len(),
            1,
            "the first entry's tag differs, so it is not compared"
        );
    }

    #[test]
    fn the_candidate_is_the_first_entry_of_the_keys_tag_from_its_home() {
        let (mut index, mut keys) = (Index::new(BITS), Keys::default());
        let a = put(&mut index, &mut keys, 1, hash(3, 1));
        let b = put(&mut index, &mut keys, 2, hash(3, 2));
        let c = put(&mut index, &mut keys, 3, hash(3, 2));
        assert_eq!(index.candidate(hash(3, 1)), Some(a));
        // Same home and tag: the first of them, the key's or not.
        assert_eq!(index.candidate(hash(3, 2)), Some(b));
        assert_ne!(b, c);
        // No entry of that tag before the run's end, or an empty home.
        assert_eq!(index.candidate(hash(3, 9)), None);
        assert_eq!(index.candidate(hash(9, 1)), None);
    }

    #[test]
    fn clear_empties_the_table_and_keeps_its_size() {
        let (mut index, mut keys) = (Index::new(BITS), Keys::default());
        for key in 0..100 {
            put(&mut index, &mut keys, key, hash(key % 16, key));
        }
        let slots = index.slots();
        assert!(slots > SLOTS_MIN);
        index.clear();
        assert_eq!((index.len(), index.slots()), (0, slots));
        assert_eq!(index.iter().count(), 0);
        assert_eq!(get(&index, &keys, 5, hash(5, 5)), None);
        let again = put(&mut index, &mut keys, 5, hash(5, 5));
        assert_eq!(get(&index, &keys, 5, hash(5, 5)), Some(again));
        check(&index, &mut keys);
    }

    #[test]
    fn probes_wrap_around_the_end() {
        let (mut index, mut keys) = (Index::new(BITS), Keys::default());
        let a = put(&mut index, &mut keys, 1, hash(14, 1));
        let b = put(&mut index, &mut keys, 2, hash(15, 2));
        let c = put(&mut index, &mut keys, 3, hash(15, 3));
        let d = put(&mut index, &mut keys, 4, hash(14, 4));
        assert_eq!(
            index.iter().collect::<Vec<_>>(),
            vec![(0, c), (1, d), (14, a), (15, b)]
        );
        assert_eq!(get(&index, &keys, 4, hash(14, 4)), Some(d));
        check(&index, &mut keys);
    }

    #[test]
    fn removal_shifts_back_across_the_wrap() {
        let (mut index, mut keys) = (Index::new(BITS), Keys::default());
        let _a = put(&mut index, &mut keys, 1, hash(14, 1));
        let b = put(&mut index, &mut keys, 2, hash(15, 2));
        let c = put(&mut index, &mut keys, 3, hash(14, 3)); // slot 0
        let d = put(&mut index, &mut keys, 4, hash(1, 4)); // slot 1, at home
        let e = put(&mut index, &mut keys, 5, hash(0, 5)); // slot 2
        assert!(remove(&mut index, &mut keys, 1, hash(14, 1)));
        // b (home 15) stays; c (home 14) moves into 14; e (home 0) moves
        // into 0; d sits at its home and stays.
        assert_eq!(
            index.iter().collect::<Vec<_>>(),
            vec![(0, e), (1, d), (14, c), (15, b)]
        );
        check(&index, &mut keys);
        assert_eq!(get(&index, &keys, 3, hash(14, 3)), Some(c));
        assert_eq!(get(&index, &keys, 5, hash(0, 5)), Some(e));
        assert_eq!(get(&index, &keys, 1, hash(14, 1)), None);
        assert!(!remove(&mut index, &mut keys, 1, hash(14, 1)));
    }

    #[test]
    fn removal_keeps_entries_that_cannot_move() {
        let (mut index, mut keys) = (Index::new(BITS), Keys::default());
        let a = put(&mut index, &mut keys, 1, hash(5, 1));
        let _b = put(&mut index, &mut keys, 2, hash(5, 2)); // slot 6
        let c = put(&mut index, &mut keys, 3, hash(7, 3)); // slot 7, at home
        assert!(remove(&mut index, &mut keys, 2, hash(5, 2)));
        assert_eq!(index.iter().collect::<Vec<_>>(), vec![(5, a), (7, c)]);
        check(&index, &mut keys);
    }

    #[test]
    fn the_table_grows_by_an_eighth_past_seven_eighths() {
        let (mut index, mut keys) = (Index::new(BITS), Keys::default());
        for key in 0..14 {
            put(&mut index, &mut keys, key, hash(key * 7 % 16, key));
        }
        assert_eq!(index.slots(), 16, "14 keys fit 16 slots at 7/8");
        put(&mut index, &mut keys, 14, hash(1, 99));
        assert_eq!(index.slots(), 18);
        assert_eq!(index.memory_bytes(), 18 * 8);
        check(&index, &mut keys);
        for key in 0..14 {
            assert!(
                get(&index, &keys, key, hash(key * 7 % 16, key)).is_some(),
                "key {key}"
            );
        }
        // Homes scale with the table: half way through the hash space is
        // slot 9 of 18 (it was slot 8 of 16).
        let (mut index, mut keys) = (Index::new(BITS), Keys::default());
        for key in 0..15 {
            put(&mut index, &mut keys, key, hash(0, key));
        }
        assert_eq!(index.slots(), 18);
        for key in 0..15 {
            assert!(remove(&mut index, &mut keys, key, hash(0, key)));
        }
        let half = put(&mut index, &mut keys, 99, hash(8, 1));
        assert_eq!(index.location(9), half);
        check(&index, &mut keys);
    }

    #[test]
    fn the_load_stays_between_seven_ninths_and_seven_eighths() {
        let (mut index, mut keys) = (Index::new(BITS), Keys::default());
        let spread = |key: u64| key.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mut grew = 0;
        for key in 0..20_000u64 {
            let slots = index.slots();
            put(&mut index, &mut keys, key, spread(key));
            if index.slots() != slots {
                grew += 1;
                // Just after growing: the load is 7/9 (give or take the
                // rounding of small tables).
                let load = index.len() as f64 / index.slots() as f64;
                let slack = 2.0 / index.slots() as f64;
                assert!(
                    (load - 7.0 / 9.0).abs() <= slack + 0.001,
                    "load {load} after growing to {} slots",
                    index.slots()
                );
            }
            assert!(index.len() * 8 <= index.slots() * 7);
        }
        assert!(grew > 20, "{grew} growths");
        check(&index, &mut keys);
    }

    #[test]
    fn growth_and_removal_read_no_key_while_tags_hold_the_home() {
        let (mut index, mut keys) = (Index::new(BITS), Keys::default());
        let spread = |key: u64| key.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        for key in 0..1000 {
            put(&mut index, &mut keys, key, spread(key));
        }
        for key in (0..1000).step_by(2) {
            assert!(remove(&mut index, &mut keys, key, spread(key)));
        }
        assert!(index.slots() > 1000 && index.slots() < 2000);
        assert_eq!(keys.hash_reads, 0);
        check(&index, &mut keys);
    }

    #[test]
    fn homes_come_from_the_hash_past_the_tag_bits() {
        // Four tag bits: tables past 16 slots need hash_at for homes.
        let (mut index, mut keys) = (Index::new(60), Keys::default());
        let spread = |key: u64| key.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        for key in 0..200 {
            put(&mut index, &mut keys, key, spread(key));
        }
        assert!(keys.hash_reads > 0, "growth past 16 slots read hashes");
        for key in (0..200).step_by(3) {
            assert!(remove(&mut index, &mut keys, key, spread(key)));
        }
        check(&index, &mut keys);
        for key in 0..200 {
            assert_eq!(
                get(&index, &keys, key, spread(key)).is_some(),
                key % 3 != 0,
                "key {key}"
            );
        }
    }

    #[test]
    fn a_bulk_fill_doubles_at_once_and_ends_at_the_usual_size() {
        let (mut index, mut keys) = (Index::new(BITS), Keys::default());
        let spread = |key: u64| key.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        index.start_bulk(|l| keys.hash(l));
        let mut sizes = vec![index.slots()];
        for key in 0..50_000u64 {
            put(&mut index, &mut keys, key, spread(key));
            assert!(!index.is_growing(), "no move is left for later inserts");
            if index.slots() != *sizes.last().unwrap() {
                sizes.push(index.slots());
            }
        }
        // Overwrites and removes in bulk too.
        for key in (0..50_000u64).step_by(3) {
            put(&mut index, &mut keys, key, spread(key));
        }
        for key in (0..50_000u64).step_by(5) {
            remove(&mut index, &mut keys, key, spread(key));
        }
        assert!(
            sizes.windows(2).all(|w| w[1] == w[0] * 2),
            "doubled each time: {sizes:?}"
        );
        index.end_bulk(|l| keys.hash(l));
        let len = index.len();
        assert_eq!(len, 40_000);
        assert!(
            index.slots() * 7 >= (len + 1) * 9 && index.slots() * 7 <= (len + 9) * 9 + 7,
            "{} slots for {len} keys",
            index.slots()
        );
        check(&index, &mut keys);
        for key in 0..50_000u64 {
            assert_eq!(
                get(&index, &keys, key, spread(key)).is_some(),
                key % 5 != 0,
                "key {key}"
            );
        }
        // Past the bulk fill, growth is in steps again.
        let slots = index.slots();
        let mut key = 50_000u64;
        while index.slots() == slots {
            put(&mut index, &mut keys, key, spread(key));
            key += 1;
        }
        assert!(index.is_growing());
        assert_eq!(index.slots(), slots + slots / 8);
    }

    #[test]
    fn a_reserved_table_takes_that_many_keys_without_growing() {
        let (mut index, mut keys) = (Index::new(BITS), Keys::default());
        let spread = |key: u64| key.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        // Reserving over entries already in, and over a growth under way:
        // they all move to the new table and are still found.
        let mut key = 0u64;
        while !index.is_growing() {
            put(&mut index, &mut keys, key, spread(key));
            key += 1;
        }
        index.reserve(20_000, |l| keys.hash(l));
        assert!(!index.is_growing());
        let slots = index.slots();
        assert!(slots * 7 >= 20_001 * 8 && slots * 7 < 20_001 * 8 + 7);
        for k in 0..key {
            assert!(get(&index, &keys, k, spread(k)).is_some(), "key {k}");
        }
        check(&index, &mut keys);
        while key < 20_000 {
            put(&mut index, &mut keys, key, spread(key));
            key += 1;
        }
        // An overwrite with all of them in reserves a slot first: still
        // no growth.
        put(&mut index, &mut keys, 7, spread(7));
        assert_eq!((index.slots(), index.len()), (slots, 20_000));
        check(&index, &mut keys);
        // Reserving less than there is, or than there is room for, changes
        // nothing; past the reservation the table grows as usual.
        index.reserve(10, |l| keys.hash(l));
        index.reserve(20_000, |l| keys.hash(l));
        assert_eq!(index.slots(), slots);
        put(&mut index, &mut keys, key, spread(key));
        assert_eq!(index.slots(), slots);
        put(&mut index, &mut keys, key + 1, spread(key + 1));
        assert!(index.slots() > slots);
        check(&index, &mut keys);
    }

    #[test]
    fn a_large_table_grows_a_few_slots_per_put_and_finds_every_key_meanwhile() {
        let (mut index, mut keys) = (Index::new(BITS), Keys::default());
        let spread = |key: u64| key.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mut key = 0u64;
        while index.slots() < GROW_IN_STEPS_FROM {
            put(&mut index, &mut keys, key, spread(key));
            key += 1;
            assert!(!index.is_growing(), "small tables grow in one go");
        }
        // Fill up to the next growth, which moves entries in steps.
        let slots = index.slots();
        while index.slots() == slots {
            put(&mut index, &mut keys, key, spread(key));
            key += 1;
        }
        assert!(index.is_growing());
        assert_eq!(index.positions(), index.slots() + slots);
        assert_eq!(index.memory_bytes(), index.positions() * 8);
        let mut puts = 0;
        while index.is_growing() {
            // Overwrites step the growth too, and keys still in the old
            // table are found and replaced there.
            let old_key = key / 2;
            let location = put(&mut index, &mut keys, old_key, spread(old_key));
            assert_eq!(get(&index, &keys, old_key, spread(old_key)), Some(location));
            puts += 1;
            if puts % 64 == 0 {
                check(&index, &mut keys);
                for k in 0..key {
                    assert!(get(&index, &keys, k, spread(k)).is_some(), "key {k}");
                }
            }
        }
        // Each put moved about MOVE_PER_STEP slots: neither all at once nor
        // too few to end before the next growth.
        assert!(
            puts >= slots / (4 * MOVE_PER_STEP) && puts <= slots / MOVE_PER_STEP,
            "{puts} puts to move {slots} slots"
        );
        assert_eq!(index.positions(), index.slots());
        assert_eq!(index.len() as u64, key);
        check(&index, &mut keys);
    }

    /// A proptest configuration seeded from `SEED` (or the clock), with the
    /// seed printed so a failure replays, and no regression files.
    fn seeded() -> ProptestConfig {
        let seed = match std::env::var("SEED") {
            Ok(s) => s.parse().expect("SEED is a u64"),
            Err(_) => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64,
        };
        eprintln!("SEED={seed} (run with SEED={seed} to replay)");
        ProptestConfig {
            rng_seed: proptest::test_runner::RngSeed::Fixed(seed),
            failure_persistence: None,
            ..ProptestConfig::default()
        }
    }

    proptest! {
        #![proptest_config(seeded())]

        /// Random puts and removes over hashes with few distinct homes and
        /// tags, so probe runs are long and tags collide, agree with a
        /// HashMap, and the invariants hold after every step; with tags of
        /// 24 bits and of 4 bits.
        #[test]
        fn agrees_with_a_hash_map(
            location_bits in prop_oneof![Just(40u32), Just(60u32)],
            ops in proptest::collection::vec((0u64..64, any::<bool>()), 1..400),
        ) {
            let (mut index, mut keys) = (Index::new(location_bits), Keys::default());
            let mut model: HashMap<u64, u64> = HashMap::new();
            let key_hash = |key: u64| ((key * 5) % 8) << 60 | (key % 4) << 40 | key;
            for (key, is_put) in ops {
                if is_put {
                    let location = put(&mut index, &mut keys, key, key_hash(key));
                    model.insert(key, location);
                } else {
                    let removed = remove(&mut index, &mut keys, key, key_hash(key));
                    prop_assert_eq!(removed, model.remove(&key).is_some());
                }
                check(&index, &mut keys);
                prop_assert_eq!(index.len(), model.len());
                for key in 0..64 {
                    prop_assert_eq!(get(&index, &keys, key, key_hash(key)), model.get(&key).copied());
                }
            }
        }

        /// The same with every growth done in steps, over more keys so
        /// that puts, overwrites and removes land in both tables while
        /// entries move; every position `iter` reports reads back.
        #[test]
        fn agrees_with_a_hash_map_while_growing_in_steps(
            location_bits in prop_oneof![Just(40u32), Just(60u32)],
            ops in proptest::collection::vec((0u64..600, 0u8..4), 1..1500),
        ) {
            let mut index = Index::new(location_bits).growing_in_steps_from(SLOTS_MIN);
            let mut keys = Keys::default();
            let mut model: HashMap<u64, u64> = HashMap::new();
            // A third of the keys crowd into 32 homes, making long probe
            // runs; the others spread.
            let key_hash = |key: u64| match key % 3 {
                0 => ((key * 5) % 32) << 59 | (key % 4) << 40 | key,
                _ => key.wrapping_mul(0x9E37_79B9_7F4A_7C15),
            };
            let mut grew_in_steps = false;
            for (key, op) in ops {
                if op == 0 {
                    let removed = remove(&mut index, &mut keys, key, key_hash(key));
                    prop_assert_eq!(removed, model.remove(&key).is_some());
                } else {
                    let location = put(&mut index, &mut keys, key, key_hash(key));
                    model.insert(key, location);
                }
                grew_in_steps |= index.is_growing();
                check(&index, &mut keys);
                prop_assert_eq!(index.len(), model.len());
                prop_assert_eq!(index.iter().count(), model.len());
                for (pos, location) in index.iter() {
                    prop_assert_eq!(index.get(pos), Some(location));
                }
                for (&key, &location) in &model {
                    prop_assert_eq!(get(&index, &keys, key, key_hash(key)), Some(location));
                }
            }
            prop_assert!(grew_in_steps || index.slots() < 100, "{} slots, no growth in steps", index.slots());
        }
    }
}
