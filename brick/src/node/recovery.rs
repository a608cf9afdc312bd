//! Recovery: a partition copied whole to a brick that joins its replica
//! group, under a write lease held by the source only for the last stretch.
//!
//! The group's first member (the *source*) drives it. When its group has
//! fewer members than `replicas`, it asks every other brick how many arena
//! bytes it holds (`Capacity`) and picks the target: the brick that left the
//! group last, as soon as it answers again; or, once the group has been
//! short for `heal_after`, the live brick holding the fewest bytes (lowest
//! id on a tie). Then:
//!
//! 1. `CopyBegin` tells the target what is coming and brings it the
//!    source's maps. A target that left within `grace` may keep its data and
//!    answers with its digest; if it equals the source's, the copy is
//!    skipped (step 3 only), else it starts over in full.
//! 2. **Pre-copy**: chunks of the arena (`CopyChunk`, whole records, the
//!    frame's crc over all of their bytes checked at the target, then each
//!    record's structure) are streamed from offset 64 while reads and
//!    writes go on; background compaction of the partition is paused so
//!    offsets stay put. Writes that land meanwhile are appended past the
//!    offset already sent and go in a later chunk.
//! 3. **Write lease**: when less than `SEAL_BYTES` remain, the source holds
//!    new prepares for the partition (they wait up to `PREPARE_HOLD_WAIT`,
//!    then are refused with `WritesHeld`, which ddslib retries),
//!    waits for its prepared writes there to finish, sends the rest with the
//!    partition's digest, and the target installs the copy only if its own
//!    digest of what it received is equal. The source then proposes the
//!    group with the target added for the next epoch (`membership`), still
//!    holding writes, and the decision is pushed to every brick. Every write needs the
//!    source's yes vote, so holding the source's prepares holds them all.
//! 4. Anything else ends the copy: a chunk that fails a check, a digest
//!    that differs, the target or the source going silent, the group
//!    changing, or the lease running past `copy_lease`. The target drops
//!    what it received (a copy is never installed half-way; until the new
//!    epoch it is not a member and serves nothing), the source resumes
//!    writes and compaction, and tries again a second later.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use maps::{BrickId, PartitionId, RgId};
use wire::{CopyChunkRef, CopyIndexRef, Digest, ErrorCode, Reply, Request};

use super::{error, membership, ArenaChunk, IndexPart, Node, PeerPending, Transmit, TABLE_MARKER};
use crate::limits;
pub use crate::slots::save_durably;
use crate::slots::SlotFile;
use crate::store::{
    Backing, ChunkCheck, Filling, IndexImage, Partition, SnapshotRoom, StoreError, HEADER_BYTES,
};

/// Where a brick keeps partitions it creates when it receives a copy, and
/// its maps and votes.
#[derive(Clone, Debug)]
pub enum Storage {
    /// Arena files in this folder, named by [`arena_path`], and the maps
    /// and votes files.
    Dir(DataDir),
    /// Anonymous memory (the simulator).
    Anonymous,
}

/// A brick's data folder, with its maps and votes files open once they
/// were first saved ([`SlotFile`]: a save overwrites one of two slots in
/// place).
#[derive(Clone, Debug)]
pub struct DataDir {
    path: PathBuf,
    saves: Arc<Mutex<Saves>>,
}

#[derive(Debug, Default)]
struct Saves {
    maps: Option<SlotFile>,
    votes: Option<SlotFile>,
}

impl DataDir {
    pub fn new(path: PathBuf) -> DataDir {
        DataDir {
            path,
            saves: Arc::default(),
        }
    }

    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Saves `bytes` durably as the file that `which` picks (opened at its
    /// first save).
    fn save(
        &self,
        which: fn(&mut Saves) -> &mut Option<SlotFile>,
        name: fn(&std::path::Path) -> PathBuf,
        bytes: &[u8],
    ) -> std::io::Result<()> {
        let mut saves = self.saves.lock().unwrap_or_else(|e| e.into_inner());
        let file = match which(&mut saves) {
            Some(file) => file,
            empty => empty.insert(SlotFile::open(&name(&self.path))?.0),
        };
        file.save(bytes)
    }
}

/// The arena file of a partition in a brick's data folder.
pub fn arena_path(dir: &std::path::Path, partition: PartitionId) -> PathBuf {
    dir.join(format!("partition-{:x}.arena", partition.0))
}

/// The partition an arena file name stands for, if it is one.
pub fn partition_of_file_name(name: &str) -> Option<PartitionId> {
    let hex = name.strip_prefix("partition-")?.strip_suffix(".arena")?;
    u64::from_str_radix(hex, 16).ok().map(PartitionId)
}

/// A file that exists while a partition's arena holds no data of its
/// group: created before an arena is created empty at a start, and removed
/// once the brick holds the group's data (`Node::unblank`), so that a
/// restart in between still knows the arena is not the group's.
pub fn blank_marker_path(dir: &std::path::Path, partition: PartitionId) -> PathBuf {
    dir.join(format!("partition-{:x}.blank", partition.0))
}

/// The file in a brick's data folder that holds its maps.
pub fn maps_path(dir: &std::path::Path) -> PathBuf {
    dir.join("maps")
}

/// The file in a brick's data folder that holds its membership votes.
pub fn votes_path(dir: &std::path::Path) -> PathBuf {
    dir.join("votes")
}

impl Storage {
    /// Makes `maps` (encoded) durable before the node acts on them, so a
    /// brick that restarts after a crash knows every membership it
    /// installed or learned (a lost removal could otherwise be decided a
    /// second time, differently). A crash during the save leaves the maps
    /// saved before it ([`SlotFile`]).
    pub(super) fn save_maps(&self, maps: &[u8]) -> std::io::Result<()> {
        match self {
            Storage::Dir(dir) => dir.save(|s| &mut s.maps, maps_path, maps),
            Storage::Anonymous => Ok(()),
        }
    }

    /// Makes the votes durable before they are answered (see
    /// `membership`): an acceptor that forgot a promise could let two
    /// memberships be decided for one epoch.
    pub(super) fn save_votes(&self, votes: &[u8]) -> std::io::Result<()> {
        match self {
            Storage::Dir(dir) => dir.save(|s| &mut s.votes, votes_path, votes),
            Storage::Anonymous => Ok(()),
        }
    }

    /// Removes the marker that says a partition's arena was created empty
    /// at a start ([`blank_marker_path`]): it holds the group's data now.
    pub(super) fn clear_blank(&self, partition: PartitionId) -> std::io::Result<()> {
        match self {
            Storage::Dir(dir) => {
                match std::fs::remove_file(blank_marker_path(dir.path(), partition)) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                    _ => Ok(()),
                }
            }
            Storage::Anonymous => Ok(()),
        }
    }

    /// A fresh, empty partition: an existing file is deleted first.
    fn create(&self, partition: PartitionId, capacity: u64) -> Result<Partition, String> {
        let backing = match self {
            Storage::Dir(dir) => {
                let path = arena_path(dir.path(), partition);
                match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(format!("cannot remove {}: {e}", path.display())),
                }
                Backing::File(path)
            }
            Storage::Anonymous => Backing::Anonymous,
        };
        Partition::open(backing, capacity)
            .map(|(partition, _)| partition)
            .map_err(|e| e.to_string())
    }

    /// A fresh, empty partition that its brick holds no data of: the blank
    /// marker is written durably first, as at a start without the arena
    /// (see the daemon), so a crash in between cannot leave an empty arena
    /// that a next start takes for data.
    fn create_blank(&self, partition: PartitionId, capacity: u64) -> Result<Partition, String> {
        if let Storage::Dir(dir) = self {
            let marker = blank_marker_path(dir.path(), partition);
            save_durably(&marker, b"")
                .map_err(|e| format!("cannot write {}: {e}", marker.display()))?;
        }
        self.create(partition, capacity)
    }

    /// Drops what holds a partition's arena (a [`Partition`], or a
    /// [`Filling`] that is receiving a copy) and deletes its file.
    fn discard(&self, partition_id: PartitionId, held: impl Sized) {
        drop(held);
        if let Storage::Dir(dir) = self {
            let path = arena_path(dir.path(), partition_id);
            if let Err(e) = std::fs::remove_file(&path) {
                log::warn!("cannot remove {}: {e}", path.display());
            }
        }
    }
}

/// How recovery is tuned, from `cluster.toml`'s `[recovery]`.
#[derive(Clone, Debug)]
pub struct RecoveryConfig {
    pub heal_after: Duration,
    pub grace: Duration,
    pub copy_lease: Duration,
    /// Bytes per second a copy may send; 0 for no cap.
    pub copy_rate: u64,
}

impl Default for RecoveryConfig {
    fn default() -> RecoveryConfig {
        RecoveryConfig {
            heal_after: Duration::from_secs(30),
            grace: Duration::from_secs(10),
            copy_lease: Duration::from_secs(1),
            copy_rate: 0,
        }
    }
}

/// Where a copy stands at its source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum CopyPhase {
    /// `CopyBegin` sent, waiting for `CopyReady`.
    Begin,
    /// Streaming the arena while writes go on.
    PreCopy,
    /// Holding the partition's writes: draining prepared writes, then
    /// sending the rest.
    Sealed,
    /// The last chunk is sent; waiting for the target's verdict.
    Final,
    /// The target holds a verified copy; the bricks vote on adding it.
    Deciding,
}

impl CopyPhase {
    fn number(self) -> u64 {
        match self {
            CopyPhase::Begin => 0,
            CopyPhase::PreCopy => 1,
            CopyPhase::Sealed => 2,
            CopyPhase::Final => 3,
            CopyPhase::Deciding => 4,
        }
    }

    /// Whether the partition's writes are held.
    fn holds_writes(self) -> bool {
        matches!(
            self,
            CopyPhase::Sealed | CopyPhase::Final | CopyPhase::Deciding
        )
    }
}

/// A copy this node sends, as the source.
#[derive(Debug)]
pub(super) struct CopyOut {
    /// Numbers the copies this node starts; answers to another session's
    /// requests are ignored.
    session: u64,
    rg: RgId,
    epoch: u64,
    target: BrickId,
    phase: CopyPhase,
    /// Offering the target to keep its data, if its digest matches.
    catch_up: bool,
    /// The arena generation the offsets belong to.
    generation: u64,
    /// Offset up to which chunks were sent, and acknowledged.
    sent: u64,
    acked: u64,
    in_flight: usize,
    started: Instant,
    /// When the copy is abandoned unless the target answers before.
    deadline: Instant,
    sealed_at: Option<Instant>,
    /// Earliest time of the next chunk, under the rate cap.
    next_send: Instant,
    /// When progress was last logged.
    logged_at: Instant,
    /// The partition's index as the pre-copy began, while parts of it are
    /// left to send ahead of the first chunk.
    index: Option<IndexOut>,
    /// Memory for that snapshot, faulted in while the target gets ready.
    index_room: SnapshotRoom,
    /// Set from `CopyReady` until the snapshot is taken: the time by which
    /// it is taken whether or not its memory is faulted in, and when to
    /// look at that memory next. No chunk goes out meanwhile.
    snapshot_by: Option<(Instant, Instant)>,
}

/// A source's index, sent in parts ahead of a full copy's first chunk so
/// that the target need not index the records below `end` (see
/// [`Filling::use_index`]).
#[derive(Debug)]
pub(super) struct IndexOut {
    end: u64,
    bits: u32,
    /// The table's slots as little-endian words, shared with the parts
    /// that are sent (see [`IndexPart`]).
    slots: Arc<Vec<u64>>,
    /// Slots sent so far.
    sent: usize,
}

/// A copy this node receives.
pub(super) struct CopyIn {
    rg: RgId,
    /// The partition being filled, indexed on a helper thread (see
    /// [`Filling`]); `None` when the node keeps the data it has and only
    /// checks its digest (catch-up).
    staging: Option<Filling>,
    last_heard: Instant,
    bytes: u64,
    /// Table names whose markers the chunks this node checked hold, each
    /// with whether its last marker is live, followed chunk by chunk so
    /// that installing needs no scan of every key. The markers below the
    /// end of an index the source sent come from [`Filling::finish`].
    tables: BTreeMap<Vec<u8>, bool>,
    /// The source's index as it arrives, until the first chunk: the end
    /// of the arena it describes, its location bits and its slots.
    index: Option<(u64, u8, IndexImage)>,
}

/// A round of `Capacity` questions for a group that is short of members.
#[derive(Debug)]
pub(super) struct HealPoll {
    waiting: BTreeSet<BrickId>,
    /// Bricks that answered, with the arena bytes they hold and whether
    /// they hold data of the partition.
    answers: BTreeMap<BrickId, (u64, bool)>,
    deadline: Instant,
}

/// Per group, peers noted at one epoch of the group, each with what was
/// noted of it.
type PeersAt<T = ()> = BTreeMap<RgId, (u64, BTreeMap<BrickId, T>)>;

/// Notes `peer` (with `what`) in `rg`'s set at `epoch`, which starts afresh
/// when the epoch moves. Returns whether the peer was not noted so.
fn note_peer_at<T: Copy + PartialEq>(
    map: &mut PeersAt<T>,
    (rg, epoch, peer): (RgId, u64, BrickId),
    what: T,
) -> bool {
    let (at, peers) = map.entry(rg).or_insert((epoch, BTreeMap::new()));
    if *at != epoch {
        *at = epoch;
        peers.clear();
    }
    peers.insert(peer, what) != Some(what)
}

/// What is noted of `peer` in `rg`'s set at `epoch`.
fn noted_at<T: Copy>(map: &PeersAt<T>, rg: RgId, epoch: u64, peer: BrickId) -> Option<T> {
    map.get(&rg)
        .filter(|(at, _)| *at == epoch)
        .and_then(|(_, peers)| peers.get(&peer).copied())
}

/// How long a condition about `peer` in `rg` has held: since the first
/// call for the pair after the map last dropped it.
pub(super) fn held_for(
    since: &mut BTreeMap<(RgId, BrickId), Instant>,
    key: (RgId, BrickId),
    now: Instant,
) -> Duration {
    now.duration_since(*since.entry(key).or_insert(now))
}

/// A digest that holds less than `other`: fewer keys, or (a tie broken
/// either way, but the same way at both ends) a lower sum.
fn holds_less(digest: Digest, other: Digest) -> bool {
    (digest.keys, digest.sum) < (other.keys, other.sum)
}

/// Recovery state of a node.
#[derive(Default)]
pub(super) struct Recovery {
    pub(super) out: BTreeMap<PartitionId, CopyOut>,
    pub(super) incoming: BTreeMap<PartitionId, CopyIn>,
    polls: BTreeMap<RgId, HealPoll>,
    /// The session number of the last copy started.
    last_session: u64,
    /// Since when each group this node leads has been short of members.
    short_since: BTreeMap<RgId, Instant>,
    /// The brick that last left each group, and when this node saw it go.
    departed: BTreeMap<RgId, (BrickId, Instant)>,
    /// No new attempt for a group before this time.
    next_attempt: BTreeMap<RgId, Instant>,
    /// The members of each group as this node last saw them.
    members: BTreeMap<RgId, Vec<BrickId>>,
    /// Groups whose partition this node received by a copy since it
    /// started: its amnesia (after a crash) does not apply to them.
    pub(super) recovered: BTreeSet<RgId>,
    /// Groups this node has been the only member of since it started: its
    /// data is the group's, so its amnesia does not apply to them either.
    pub(super) alone_in: BTreeSet<RgId>,
    /// Per group, the other members that answered this node's lease
    /// renewal at the epoch given that they restarted after a crash too.
    amnesiac_peers: PeersAt,
    /// Partitions this node started without data for and still waits to
    /// receive, or to learn that no member holds any of (`Node::blank_in`).
    pub(super) blank: BTreeSet<PartitionId>,
    /// Per group, what the other members' latest lease renewal at the
    /// epoch given said: blank, with their digest, or not.
    renewals: PeersAt<Option<Digest>>,
    /// Per group and peer, since when the peer answers "restarted" to this
    /// node's renewals while no renewal of its own arrived at the epoch.
    pub(super) restarted_unheard: BTreeMap<(RgId, BrickId), Instant>,
    /// Per group and peer, since when the peer's renewals say it is blank
    /// and lacks data this node holds.
    pub(super) blank_mismatch_since: BTreeMap<(RgId, BrickId), Instant>,
    /// Those of them that said so while this node was blank too, holding
    /// no more than this node.
    fellow_blank: PeersAt,
    /// Per group, the other members that granted this node a lease at the
    /// epoch given while it said it started without data: they hold none of
    /// the group's data from before either.
    empty_peers: PeersAt,
    /// Partitions whose copy failed the check against the index its source
    /// sent: their next copies are indexed here, whatever comes with them.
    index_refused: BTreeSet<PartitionId>,
    pub(super) counters: RecoveryCounters,
}

#[derive(Debug, Default)]
pub(super) struct RecoveryCounters {
    started: u64,
    pub(super) finished: u64,
    failed: u64,
    catch_ups: u64,
    bytes_sent: u64,
    bytes_received: u64,
    installed: u64,
    last_copy_ms: u64,
    last_copy_bytes: u64,
    last_write_lease_us: u64,
    longest_write_lease_us: u64,
    /// Partitions let go of after their group was healed elsewhere.
    dropped: u64,
    /// Bytes of index tables sent ahead of copies.
    index_bytes_sent: u64,
    /// Copies installed with the index their source sent.
    pub(super) installed_with_index: u64,
}

/// Bytes per chunk: large enough that per-message costs vanish, small
/// enough that a chunk does not hold up other traffic on the connection.
/// The arena's checksummed stretches are this large, so a chunk is one of
/// them when it can be (`Partition::copy_chunk`).
const CHUNK_BYTES: usize = crate::store::COPY_CHUNK_BYTES;
/// Chunks in flight per copy.
const WINDOW: usize = 4;
/// Chunks or index parts one pass of the event loop sends while writes
/// go on. A pass that filled the whole window at once (the index's
/// snapshot, then four parts of it, each built, checksummed and written)
/// kept the clients' requests waiting behind it: the longest writes of a
/// copy (9–13 ms) ended in its first milliseconds. The copy goes on at
/// the loop's next turn; once the window is full, each ack frees one
/// place anyway.
const SENDS_PER_PASS: usize = 2;
/// The longest a full copy waits, after `CopyReady`, for the memory of its
/// index snapshot to be faulted in (see [`Partition::index_snapshot_room`])
/// before it takes the snapshot into fresh memory: a target that kept its
/// pages answers in a millisecond, before the memory is ready, and the
/// source's event loop, which serves the clients too, would then stall
/// on the page faults (4–5 ms for 760,000 slots).
const SNAPSHOT_WAIT_MAX: Duration = Duration::from_millis(20);
/// How often a copy waiting for that memory looks at it.
const SNAPSHOT_LOOK_EVERY: Duration = Duration::from_millis(1);
/// Slots of an index table per `CopyIndex` part: as many bytes as a chunk.
const INDEX_PART_SLOTS: usize = CHUNK_BYTES / 8;
/// The largest index table a target takes, in slots per byte of its
/// partition's capacity: a source's table has at most one slot per 5
/// bytes (a live record takes at least 7 bytes, and the table is kept at
/// least 1/8 empty), so a quarter leaves room and bounds what a peer can
/// make a brick reserve to twice the capacity.
const INDEX_SLOTS_PER_CAPACITY_BYTE_MAX: u64 = 4;
// The chunks in flight must fit in a peer connection's send queue with room
// to spare: past its limit the connection is dropped as "not reading", and
// a copy that overflows it would break its own connection on every try.
const _: () = assert!(WINDOW * CHUNK_BYTES <= wire::limits::QUEUED_BYTES_PER_CONNECTION_MAX / 2);
// The target's loop waits for its indexing helper only past a whole window.
const _: () = assert!(WINDOW <= crate::store::FILLING_QUEUE_CHUNKS);
/// The write lease is taken when at most this many bytes are left to send.
const SEAL_BYTES: u64 = 256 * 1024;
/// A copy whose target does not answer for this long is abandoned.
const PROGRESS_TIMEOUT: Duration = Duration::from_secs(5);
/// A received copy that hears nothing for this long is dropped.
const INCOMING_IDLE: Duration = Duration::from_secs(10);
/// Pause between attempts to heal one group.
const RETRY: Duration = Duration::from_secs(1);
/// How often a running copy logs its progress.
const PROGRESS_LOG_INTERVAL: Duration = Duration::from_secs(2);

/// `words` with each word in little-endian order, the wire's: unchanged on
/// a little-endian machine.
fn little_endian(mut words: Vec<u64>) -> Vec<u64> {
    if cfg!(target_endian = "big") {
        for word in &mut words {
            *word = word.to_le();
        }
    }
    words
}

/// Bytes per second.
fn rate(bytes: u64, took: Duration) -> f64 {
    bytes as f64 / took.as_secs_f64().max(1e-6)
}

impl Node {
    /// Whether prepares for `partition` are held by a copy's write lease.
    pub(super) fn copy_holds_writes(&self, partition: PartitionId) -> bool {
        self.recovery
            .out
            .get(&partition)
            .is_some_and(|c| c.phase.holds_writes())
    }

    /// Whether a crash's amnesia still applies to `rg`: not after this node
    /// received the group's partition by a copy, nor once it has been the
    /// group's only member.
    pub(super) fn amnesiac_in(&self, rg: RgId) -> bool {
        self.config.amnesiac
            && !self.recovery.recovered.contains(&rg)
            && !self.recovery.alone_in.contains(&rg)
    }

    /// Whether this node, restarted, may have forgotten transactions of
    /// `partition`: it then says `Unknown`, never `Aborted`, about ones it
    /// does not know. Not once the outcome retention has passed since its
    /// start: a brick that never stopped would have forgotten every
    /// transaction finished before then too.
    pub(super) fn forgot_transactions(&self, now: Instant, partition: PartitionId) -> bool {
        self.forgot_transactions_in(now, self.maps.dp.rg_of(partition))
    }

    /// [`Node::forgot_transactions`] for the partition of `rg` (`None`: a
    /// partition in no group).
    ///
    /// A brick blank in the group may have forgotten them too, however it
    /// started: its data folder was emptied, outcomes and all (a new
    /// cluster's bricks stop being blank within a round trip, and have
    /// nothing to forget).
    pub(super) fn forgot_transactions_in(&self, now: Instant, rg: Option<RgId>) -> bool {
        let restarted = self.forgot_outcomes_until.is_some_and(|until| now < until)
            && !rg.is_some_and(|rg| self.recovery.recovered.contains(&rg));
        restarted || rg.is_some_and(|rg| self.blank_in(rg))
    }

    /// `peer` answered this node's lease renewal for `rg` at `epoch` that
    /// it restarted after a crash: noted while this node is amnesiac in the
    /// group too, for [`Node::revive_crashed_groups`].
    pub(super) fn note_amnesiac_peer(&mut self, rg: RgId, epoch: u64, peer: BrickId) {
        if !self.amnesiac_in(rg) || self.maps.rg.get(rg).is_none_or(|e| e.epoch != epoch) {
            return;
        }
        note_peer_at(&mut self.recovery.amnesiac_peers, (rg, epoch, peer), ());
    }

    /// Whether this node started without data for `rg`'s partition (no
    /// arena file: an emptied data folder, or a new cluster) and has
    /// neither received it by a copy since nor learnt that no other member
    /// holds any of it. It then serves nothing in the group and decides
    /// nothing there, as an amnesiac brick: its partners hold the group's
    /// data, or none of them does. Its lease renewals say so, and partners
    /// that hold data from before have it removed and copied back; when
    /// every other member either said the same or granted it a lease
    /// (holding no data from before), the group is new and it serves.
    pub(super) fn blank_in(&self, rg: RgId) -> bool {
        self.recovery
            .blank
            .iter()
            .any(|p| self.maps.dp.rg_of(*p) == Some(rg))
    }

    /// Amnesiac or blank in `rg`: this node's data there may lack writes
    /// the group acknowledged, so it leads no change of the group.
    pub(super) fn decides_nothing_in(&self, rg: RgId) -> bool {
        self.amnesiac_in(rg) || self.blank_in(rg)
    }

    /// The digest of what this node holds of `rg` (its partitions' digests
    /// added up).
    pub(super) fn group_digest(&self, rg: RgId) -> Digest {
        let mut digest = Digest { sum: 0, keys: 0 };
        for (p, partition) in &self.partitions {
            if self.maps.dp.rg_of(*p) == Some(rg) {
                let (sum, keys) = partition.digest();
                digest.sum = digest.sum.wrapping_add(sum);
                digest.keys += keys;
            }
        }
        digest
    }

    /// What this node's lease renewals in `rg` say: its digest there while
    /// it is blank.
    pub(super) fn blank_digest(&self, rg: RgId) -> Option<Digest> {
        self.blank_in(rg).then(|| self.group_digest(rg))
    }

    /// The digest `peer`'s latest renewal for `rg` at `epoch` gave, if it
    /// said it is blank.
    pub(super) fn peer_blank_at(&self, rg: RgId, epoch: u64, peer: BrickId) -> Option<Digest> {
        self.peer_renewal_at(rg, epoch, peer).flatten()
    }

    /// What `peer`'s latest renewal for `rg` at `epoch` said (blank with
    /// a digest, or not); `None` when none arrived at that epoch.
    pub(super) fn peer_renewal_at(
        &self,
        rg: RgId,
        epoch: u64,
        peer: BrickId,
    ) -> Option<Option<Digest>> {
        noted_at(&self.recovery.renewals, rg, epoch, peer)
    }

    /// A lease renewal from `peer`, a member of `rg` at this node's `epoch`,
    /// said whether it is blank there, and with what digest. If this node is
    /// blank too, the peer learns that from a renewal sent at once (before
    /// this node may stop being blank), and this node counts the peer as
    /// holding nothing it lacks when the peer holds the same or less (one
    /// that holds less is removed and copied back once this node serves).
    pub(super) fn note_peer_blank(
        &mut self,
        now: Instant,
        (rg, epoch, peer): (RgId, u64, BrickId),
        blank: Option<Digest>,
    ) {
        let new = note_peer_at(&mut self.recovery.renewals, (rg, epoch, peer), blank);
        self.recovery.restarted_unheard.remove(&(rg, peer));
        let Some(digest) = blank else {
            return;
        };
        if let Some(own) = self.blank_digest(rg) {
            if new {
                self.renew_lease(now, rg, epoch, peer);
            }
            if !holds_less(own, digest) {
                note_peer_at(&mut self.recovery.fellow_blank, (rg, epoch, peer), ());
                self.maybe_unblank(rg);
            }
        }
    }

    /// Whether a member of `rg` that is blank with `digest` lacks data this
    /// node (not blank) holds there: then it is removed and copied back.
    pub(super) fn lacks_data_held_here(&self, rg: RgId, digest: Digest) -> bool {
        digest != self.group_digest(rg)
    }

    /// `peer` granted this node a lease in `rg` at `epoch`: if this node
    /// asked as blank, the peer holds what this node does.
    pub(super) fn note_empty_peer(&mut self, rg: RgId, epoch: u64, peer: BrickId) {
        if self.blank_in(rg) && self.maps.rg.get(rg).is_some_and(|e| e.epoch == epoch) {
            note_peer_at(&mut self.recovery.empty_peers, (rg, epoch, peer), ());
            self.maybe_unblank(rg);
        }
    }

    /// Ends blankness in `rg` once every other member at the current epoch
    /// said it is blank too, holding no more than this node, or granted a
    /// lease to this blank node.
    fn maybe_unblank(&mut self, rg: RgId) {
        let Some(entry) = self.maps.rg.get(rg) else {
            return;
        };
        let shown = entry.bricks.iter().filter(|b| **b != self.id).all(|b| {
            noted_at(&self.recovery.fellow_blank, rg, entry.epoch, *b).is_some()
                || noted_at(&self.recovery.empty_peers, rg, entry.epoch, *b).is_some()
        });
        if shown && self.blank_in(rg) {
            self.unblank(rg, "no other member holds data it lacks");
        }
    }

    /// This node holds `rg`'s data now (`why`): it is blank there no more,
    /// and its next start will not be either.
    pub(super) fn unblank(&mut self, rg: RgId, why: &str) {
        let partitions: Vec<PartitionId> = self
            .recovery
            .blank
            .iter()
            .copied()
            .filter(|p| self.maps.dp.rg_of(*p) == Some(rg))
            .collect();
        if partitions.is_empty() {
            return;
        }
        for p in &partitions {
            self.recovery.blank.remove(p);
            if let Err(e) = self.config.storage.clear_blank(*p) {
                log::error!("{}: cannot remove the blank marker of {p}: {e}", self.id);
            }
        }
        log::info!("{}: serves {rg} ({partitions:?}): {why}", self.id);
    }

    /// A group all of whose members restarted after a crash has nobody
    /// to be copied back from: each member waits for a live one. Its first
    /// member commits every write before anyone is told of it, so its arena
    /// holds every write the group acknowledged; once every other member
    /// has answered (at the same epoch) that it restarted after a crash
    /// too, so that none of them can still decide anything, the first
    /// member proposes the group with itself alone. The vote adopts
    /// whatever may have been decided for that epoch instead. Alone, the
    /// member serves, and copies the group back to a second brick at once,
    /// which goes first in the group (`finish_copy`).
    fn revive_crashed_groups(&mut self, now: Instant) {
        let me = self.id;
        let groups: Vec<RgId> = self
            .maps
            .rg
            .iter()
            .filter(|(rg, e)| {
                // The first member, unless it started without data: then
                // the next one, which holds the most the group has.
                let first = e
                    .bricks
                    .iter()
                    .find(|b| self.peer_blank_at(**rg, e.epoch, **b).is_none());
                e.bricks.len() > 1
                    && first == Some(&me)
                    && !self.blank_in(**rg)
                    && self.amnesiac_in(**rg)
                    && e.bricks.iter().filter(|b| **b != me).all(|b| {
                        noted_at(&self.recovery.amnesiac_peers, **rg, e.epoch, *b).is_some()
                    })
            })
            .map(|(rg, _)| *rg)
            .collect();
        for rg in groups {
            if self.membership.proposals.contains_key(&rg) || self.membership_holds_writes(now, rg)
            {
                continue;
            }
            if self
                .maps
                .rg
                .get(rg)
                .is_some_and(|e| e.bricks.first() != Some(&me))
            {
                log::warn!(
                    "{me}: every member of {rg} restarted after a crash, and its first member without its data; {me} takes the group alone with what it holds (writes the first member acknowledged that {me} held only prepared are lost)"
                );
            } else {
                log::warn!(
                    "{me}: every member of {rg} restarted after a crash; as its first member it holds every write the group acknowledged, and takes the group alone"
                );
            }
            self.propose(now, rg, membership::Purpose::Revive, Some(vec![me]));
        }
    }

    /// Notes who left which group, after any change of the maps.
    /// The members of `rg` as this node saw them before the latest change.
    pub(super) fn recovery_members(&self, rg: RgId) -> Option<&Vec<BrickId>> {
        self.recovery.members.get(&rg)
    }

    pub(super) fn note_members(&mut self, now: Instant) {
        let alone: Vec<RgId> = self
            .maps
            .rg
            .iter()
            .filter(|(_, e)| e.bricks == [self.id])
            .map(|(rg, _)| *rg)
            .collect();
        for rg in alone {
            self.unblank(rg, "it is the group's only member");
        }
        for (rg, entry) in self.maps.rg.iter() {
            if entry.bricks == [self.id] {
                self.recovery.alone_in.insert(*rg);
            }
            if let Some(old) = self.recovery.members.get(rg) {
                if let Some(gone) = old.iter().find(|b| !entry.bricks.contains(b)) {
                    self.recovery.departed.insert(*rg, (*gone, now));
                }
                // A peer that joins is given a fresh hearing: what was heard
                // of it before it left says nothing about it now. So is every
                // member when this node is the one that joins: it stopped
                // renewing leases with them when it left, and took their
                // silence since for a fault (it probed each of them at once).
                let rejoined = !old.contains(&self.id) && entry.bricks.contains(&self.id);
                for joined in entry.bricks.iter().filter(|b| rejoined || !old.contains(b)) {
                    self.last_heard.insert((*rg, *joined), now);
                }
            }
            self.recovery.members.insert(*rg, entry.bricks.clone());
        }
        // A copy whose group changed under it is over: the target joined
        // if the vote on adding it decided so, else the copy is void.
        let changed: Vec<(PartitionId, bool)> = self
            .recovery
            .out
            .iter()
            .filter_map(|(p, c)| {
                let entry = self.maps.rg.get(c.rg);
                if entry.is_some_and(|e| e.epoch == c.epoch && e.bricks.first() == Some(&self.id)) {
                    return None;
                }
                let joined = c.phase == CopyPhase::Deciding
                    && entry.is_some_and(|e| {
                        e.epoch == c.epoch + 1
                            && e.bricks.contains(&self.id)
                            && e.bricks.contains(&c.target)
                    });
                Some((*p, joined))
            })
            .collect();
        for (partition, joined) in changed {
            if joined {
                self.copy_joined(now, partition);
            } else {
                self.abort_copy(partition, "the group changed during the copy");
            }
        }
    }

    /// Bytes of arenas this node holds, received copies included.
    fn held_bytes(&self) -> u64 {
        let held: u64 = self
            .partitions
            .values()
            .map(|p| p.stats().capacity_bytes)
            .sum();
        let incoming: u64 = self
            .recovery
            .incoming
            .values()
            .filter_map(|c| c.staging.as_ref())
            .map(Filling::capacity_bytes)
            .sum();
        held + incoming
    }

    /// Lets go of the partitions of groups that have their full number of
    /// members without this brick: it was replaced while it was away
    /// (`heal_after`), and its data there is older than the members' and
    /// read by nobody. Its arena file is deleted, which frees the memory
    /// and disk it held and stops it counting in the bytes this brick
    /// holds, which placement goes by. Not while a copy of it is arriving
    /// or leaving, or a transaction prepared here still names it.
    pub(super) fn drop_replaced_partitions(&mut self) {
        let me = self.id;
        let replaced: Vec<(PartitionId, RgId)> = self
            .partitions
            .keys()
            .filter_map(|p| {
                let rg = self.maps.dp.rg_of(*p)?;
                let entry = self.maps.rg.get(rg)?;
                let whole_without_me =
                    !entry.bricks.contains(&me) && entry.bricks.len() >= self.config.replicas;
                let in_use = self.recovery.incoming.contains_key(p)
                    || self.recovery.out.contains_key(p)
                    || self.prepared.values().any(|tx| tx.partition == *p);
                (whole_without_me && !in_use).then_some((*p, rg))
            })
            .collect();
        for (p, rg) in replaced {
            if let Some(partition) = self.partitions.remove(&p) {
                self.config.storage.discard(p, partition);
                self.recovery.blank.remove(&p);
                if let Err(e) = self.config.storage.clear_blank(p) {
                    log::warn!("{me}: cannot remove the blank marker of {p}: {e}");
                }
                log::info!(
                    "{me}: let go of {p}: {rg} has its {} members without this brick; its arena file is deleted",
                    self.config.replicas
                );
                self.recovery.counters.dropped += 1;
            }
        }
    }

    /// A member of a group that holds no arena of the group's partition is
    /// blank there: it creates the empty arena with its marker, and serves
    /// and decides nothing in the group until its partners show what they
    /// hold (`blank_in`). It happens when a brick started without its data
    /// before it learnt that it had joined the group (its copy installed,
    /// the vote decided while it was down): its saved maps did not name it
    /// a member, so the start made no blank arena. Taken for a member with
    /// nothing to lose, such a brick led its partner's removal after they
    /// both crashed and was left the group's only member with none of its
    /// data (simulator seed 13,820,384).
    pub(super) fn ensure_member_partitions(&mut self) {
        let me = self.id;
        let missing: Vec<(PartitionId, RgId)> = self
            .maps
            .dp
            .leaves()
            .filter(|(p, rg)| {
                self.maps
                    .rg
                    .get(*rg)
                    .is_some_and(|e| e.bricks.contains(&me))
                    && !self.partitions.contains_key(p)
                    && !self.recovery.incoming.contains_key(p)
            })
            .collect();
        for (p, rg) in missing {
            match self
                .config
                .storage
                .create_blank(p, self.config.partition_capacity)
            {
                Ok(store) => {
                    self.partitions.insert(p, store);
                    self.recovery.blank.insert(p);
                    log::warn!(
                        "{me}: a member of {rg} without an arena of {p}; it starts one empty, and serves {rg} once copied back or shown that its partners hold none"
                    );
                }
                Err(e) => log::error!("{me}: cannot start an empty arena of {p} for {rg}: {e}"),
            }
        }
    }

    pub(super) fn capacity_reply(&self, partition: PartitionId) -> Reply {
        Reply::Capacity {
            held_bytes: self.held_bytes(),
            holds_partition: self.partitions.contains_key(&partition)
                || self.recovery.incoming.contains_key(&partition),
        }
    }

    // ----------------------------------------------------------------------
    // Source side.

    /// Advances copies and capacity polls; with `scan` (once per renewal
    /// interval), also looks for groups this node leads that are short of
    /// members and asks the other bricks for their capacity.
    pub(super) fn heal_tick(&mut self, now: Instant, scan: bool) {
        self.expire_copies(now);
        self.finish_polls(now);
        if !scan || now < self.stalled_until {
            return;
        }
        self.drop_replaced_partitions();
        self.ensure_member_partitions();
        self.revive_crashed_groups(now);
        let groups: Vec<(RgId, Vec<BrickId>)> = self
            .maps
            .rg
            .iter()
            .filter(|(_, e)| e.bricks.first() == Some(&self.id))
            .map(|(rg, e)| (*rg, e.bricks.clone()))
            .collect();
        for (rg, members) in groups {
            if members.len() >= self.config.replicas {
                self.recovery.short_since.remove(&rg);
                continue;
            }
            self.recovery.short_since.entry(rg).or_insert(now);
            // An amnesiac brick's data is authoritative only where it is
            // the group's only member.
            if self.decides_nothing_in(rg) && members.len() > 1 {
                continue;
            }
            let Some(partition) = self.sole_partition(rg) else {
                continue;
            };
            if self.recovery.out.contains_key(&partition)
                || self.recovery.polls.contains_key(&rg)
                || self.membership_holds_writes(now, rg)
                || self.membership.proposals.contains_key(&rg)
                || self
                    .recovery
                    .next_attempt
                    .get(&rg)
                    .is_some_and(|at| now < *at)
            {
                continue;
            }
            let candidates: BTreeSet<BrickId> = self
                .config
                .bricks
                .iter()
                .copied()
                .filter(|b| !members.contains(b))
                .collect();
            if candidates.is_empty() {
                continue;
            }
            self.recovery.next_attempt.insert(rg, now + RETRY);
            for brick in &candidates {
                self.send_peer(
                    *brick,
                    Request::Capacity { partition },
                    PeerPending::Capacity { rg, peer: *brick },
                );
            }
            self.recovery.polls.insert(
                rg,
                HealPoll {
                    waiting: candidates,
                    answers: BTreeMap::new(),
                    deadline: now + self.config.probe_timeout,
                },
            );
        }
    }

    /// The one partition of `rg` that this node holds. Groups of several
    /// partitions (after splits) are not healed yet.
    fn sole_partition(&self, rg: RgId) -> Option<PartitionId> {
        let mut leaves = self.maps.dp.leaves().filter(|(_, g)| *g == rg);
        let (partition, _) = leaves.next()?;
        if leaves.next().is_some() || !self.partitions.contains_key(&partition) {
            return None;
        }
        Some(partition)
    }

    /// A brick's answer to `Capacity` (`None`: it could not be asked).
    pub(super) fn capacity_answer(
        &mut self,
        now: Instant,
        rg: RgId,
        peer: BrickId,
        held: Option<(u64, bool)>,
    ) {
        if let Some(poll) = self.recovery.polls.get_mut(&rg) {
            if poll.waiting.remove(&peer) {
                if let Some(held) = held {
                    poll.answers.insert(peer, held);
                }
            }
        }
        self.finish_polls(now);
    }

    /// Chooses targets for the polls that are complete or past their
    /// deadline, and starts their copies.
    fn finish_polls(&mut self, now: Instant) {
        let done: Vec<RgId> = self
            .recovery
            .polls
            .iter()
            .filter(|(_, p)| p.waiting.is_empty() || now >= p.deadline)
            .map(|(rg, _)| *rg)
            .collect();
        for rg in done {
            let poll = self.recovery.polls.remove(&rg).expect("listed above");
            let Some(partition) = self.sole_partition(rg) else {
                continue;
            };
            let Some(entry) = self.maps.rg.get(rg) else {
                continue;
            };
            if entry.bricks.len() >= self.config.replicas
                || entry.bricks.first() != Some(&self.id)
                || entry.bricks.iter().any(|b| poll.answers.contains_key(b))
            {
                continue;
            }
            // The brick that left, if it answers: this node saw it go, or
            // (after this node restarted) it still holds the partition.
            let departed = self
                .recovery
                .departed
                .get(&rg)
                .copied()
                .filter(|(b, _)| poll.answers.contains_key(b))
                .or_else(|| {
                    poll.answers
                        .iter()
                        .filter(|(_, (_, holds))| *holds)
                        .min_by_key(|(brick, (held, _))| (*held, **brick))
                        .map(|(brick, _)| (*brick, now))
                });
            let short_for = self
                .recovery
                .short_since
                .get(&rg)
                .map_or(Duration::ZERO, |since| {
                    now.saturating_duration_since(*since)
                });
            let choice = if let Some((brick, left_at)) = departed {
                let within_grace = !self.config.recovery.grace.is_zero()
                    && now.saturating_duration_since(left_at) <= self.config.recovery.grace;
                Some((brick, within_grace))
            } else if short_for >= self.config.recovery.heal_after {
                poll.answers
                    .iter()
                    .min_by_key(|(brick, (held, _))| (*held, **brick))
                    .map(|(brick, _)| (*brick, false))
            } else {
                None
            };
            log::debug!(
                "{}: {rg} is short of members; answers {:?}, choice {choice:?}",
                self.id,
                poll.answers
            );
            if let Some((target, catch_up)) = choice {
                self.start_copy(now, rg, partition, target, catch_up);
            }
        }
    }

    fn start_copy(
        &mut self,
        now: Instant,
        rg: RgId,
        partition: PartitionId,
        target: BrickId,
        catch_up: bool,
    ) {
        let epoch = self.maps.rg.get(rg).map_or(0, |e| e.epoch);
        log::info!(
            "{}: copying {partition} of {rg} to {target}{}",
            self.id,
            if catch_up {
                " (offering it to keep its data)"
            } else {
                ""
            }
        );
        self.recovery.counters.started += 1;
        self.recovery.last_session += 1;
        self.recovery.out.insert(
            partition,
            CopyOut {
                session: self.recovery.last_session,
                rg,
                epoch,
                target,
                phase: CopyPhase::Begin,
                catch_up,
                generation: 0,
                sent: HEADER_BYTES,
                acked: HEADER_BYTES,
                in_flight: 0,
                started: now,
                deadline: now + PROGRESS_TIMEOUT,
                sealed_at: None,
                next_send: now,
                logged_at: now,
                index: None,
                index_room: SnapshotRoom::default(),
                snapshot_by: None,
            },
        );
        self.send_copy_begin(partition, !catch_up);
    }

    fn send_copy_begin(&mut self, partition: PartitionId, full: bool) {
        let Some(c) = self.recovery.out.get_mut(&partition) else {
            return;
        };
        let store = self.partitions.get(&partition);
        let keys = store.map_or(0, |p| p.digest().1);
        // While the target gets ready, memory for the index snapshot that
        // a full copy sends first is faulted in on another thread (not for
        // arenas in memory: there, in tests and the simulator, a thread's
        // timing must not change what the node does).
        let on_disk = matches!(self.config.storage, Storage::Dir(_));
        if let Some(store) = store.filter(|_| full && on_disk) {
            c.index_room = store.index_snapshot_room();
        }
        let request = Request::CopyBegin {
            rg: c.rg,
            epoch: c.epoch,
            partition,
            full,
            keys,
            maps: self.maps.encode(),
        };
        let (target, session) = (c.target, c.session);
        self.send_peer(
            target,
            request,
            PeerPending::CopyBegin {
                partition,
                session,
                peer: target,
            },
        );
    }

    /// The target's answer to `CopyBegin`.
    pub(super) fn copy_ready(
        &mut self,
        now: Instant,
        partition: PartitionId,
        session: u64,
        reply: Reply,
    ) {
        let Some(c) = copy_in_session(&mut self.recovery.out, partition, session) else {
            return;
        };
        if c.phase != CopyPhase::Begin {
            return;
        }
        let local = match reply {
            Reply::CopyReady { local } => local,
            other => {
                let reason = format!("{} refused the copy: {}", c.target, reply_text(&other));
                self.abort_copy(partition, &reason);
                return;
            }
        };
        let store = self
            .partitions
            .get_mut(&partition)
            .expect("a source holds its partition");
        c.deadline = now + PROGRESS_TIMEOUT;
        log::debug!(
            "{}: {} is ready for the copy of {partition}, {:?} after it began",
            self.id,
            c.target,
            now - c.started
        );
        let (sum, keys) = store.digest();
        if c.catch_up {
            if local == Some(Digest { sum, keys }) {
                log::info!(
                    "{}: {} kept current data of {partition}; joining it without a copy",
                    self.id,
                    c.target
                );
                c.phase = CopyPhase::Sealed;
                c.sealed_at = Some(now);
            } else {
                log::info!(
                    "{}: the data {} kept of {partition} is not current; copying in full",
                    self.id,
                    c.target
                );
                c.catch_up = false;
                self.send_copy_begin(partition, true);
                return;
            }
        } else {
            store.set_compaction_paused(true);
            c.phase = CopyPhase::PreCopy;
            c.generation = store.generation();
            c.snapshot_by = Some((now + SNAPSHOT_WAIT_MAX, now));
        }
        // The first chunks go out first; then phase one of the vote on
        // adding the target (promises, each saved with an fsync) runs, so
        // that only phase two falls in the time writes are held.
        let rg = c.rg;
        self.pump_copy(now, partition);
        if copy_in_session(&mut self.recovery.out, partition, session).is_some() {
            self.propose(now, rg, membership::Purpose::Add(partition), None);
        }
    }

    /// Takes the snapshot of the index a full copy sends first, once its
    /// memory is faulted in or [`SNAPSHOT_WAIT_MAX`] has passed. Returns
    /// whether it is taken.
    fn take_index_snapshot(&mut self, now: Instant, partition: PartitionId) -> bool {
        let Some(c) = self.recovery.out.get_mut(&partition) else {
            return false;
        };
        let Some((by, _)) = c.snapshot_by else {
            return true;
        };
        if c.index_room.is_pending() && now < by {
            c.snapshot_by = Some((by, now + SNAPSHOT_LOOK_EVERY));
            return false;
        }
        c.snapshot_by = None;
        let room = std::mem::take(&mut c.index_room);
        // A partition gone or compacted meanwhile: the pump abandons the
        // copy, and no snapshot is worth taking.
        let Some(store) = self
            .partitions
            .get(&partition)
            .filter(|store| store.generation() == c.generation)
        else {
            return true;
        };
        if !room.is_ready() {
            log::debug!(
                "{}: the index snapshot of {partition} goes into fresh memory",
                self.id
            );
        }
        c.index = store.index_snapshot_in(room).map(|snapshot| IndexOut {
            end: snapshot.end,
            bits: snapshot.location_bits,
            slots: Arc::new(little_endian(snapshot.slots)),
            sent: 0,
        });
        log::debug!(
            "{}: took the index snapshot of {partition}, {:?} after the copy began",
            self.id,
            now - c.started
        );
        true
    }

    /// Sends what the copy of `partition` may send now.
    pub(super) fn pump_copy(&mut self, now: Instant, partition: PartitionId) {
        let snapshot_due = self
            .recovery
            .out
            .get(&partition)
            .is_some_and(|c| c.snapshot_by.is_some());
        if !self.take_index_snapshot(now, partition) {
            return;
        }
        if snapshot_due {
            // The snapshot copied the index table in this pass: the first
            // parts go in the next one, after the requests that waited.
            self.yield_pass(now, partition);
            return;
        }
        let mut sends = 0;
        for _ in 0..=WINDOW {
            let Some(c) = self.recovery.out.get_mut(&partition) else {
                return;
            };
            let Some(store) = self.partitions.get(&partition) else {
                self.abort_copy(partition, "the partition is gone");
                return;
            };
            if !c.catch_up && c.phase != CopyPhase::Begin && store.generation() != c.generation {
                // A write found no room and compacted synchronously: the
                // offsets sent so far mean nothing any more.
                self.abort_copy(partition, "the arena was compacted during the copy");
                return;
            }
            let end = store.end_offset();
            match c.phase {
                CopyPhase::Begin | CopyPhase::Final | CopyPhase::Deciding => return,
                CopyPhase::PreCopy => {
                    if end - c.acked <= SEAL_BYTES && c.in_flight == 0 {
                        c.phase = CopyPhase::Sealed;
                        c.sealed_at = Some(now);
                        // A large part of the index left is not sent while
                        // writes are held: the target then indexes the
                        // records itself.
                        if c.index
                            .as_ref()
                            .is_some_and(|i| (i.slots.len() - i.sent) as u64 * 8 > SEAL_BYTES)
                        {
                            c.index = None;
                        }
                        log::info!(
                            "{}: holding writes of {partition} for the last {} bytes of the copy, {:?} after it began",
                            self.id,
                            end - c.acked,
                            now - c.started
                        );
                        continue;
                    }
                    if c.in_flight >= WINDOW {
                        return;
                    }
                    if sends == SENDS_PER_PASS {
                        self.yield_pass(now, partition);
                        return;
                    }
                    if c.index.is_some() {
                        sends += 1;
                        self.send_index_part(now, partition);
                        continue;
                    }
                    if c.sent >= end || now < c.next_send {
                        return;
                    }
                    sends += 1;
                    self.send_chunk(now, partition, false);
                }
                CopyPhase::Sealed => {
                    let draining = self.prepared.values().any(|tx| tx.partition == partition);
                    if draining || c.in_flight >= WINDOW {
                        return;
                    }
                    if c.index.is_some() {
                        self.send_index_part(now, partition);
                        continue;
                    }
                    if c.catch_up {
                        let (sum, keys) = store.digest();
                        let (target, session) = (c.target, c.session);
                        c.phase = CopyPhase::Final;
                        c.in_flight += 1;
                        let end = Some(Digest { sum, keys });
                        let offset = HEADER_BYTES;
                        self.send_copy_chunk(target, partition, session, offset, Vec::new(), end);
                        return;
                    }
                    self.send_chunk(now, partition, true);
                }
            }
        }
    }

    /// Ends a pass of [`Node::pump_copy`] that could send more: the copy
    /// goes on at the loop's next turn (see [`Node::recovery_timeout`]),
    /// once the requests that arrived meanwhile are served, so that no
    /// client waits behind a whole window of chunks or index parts.
    fn yield_pass(&mut self, now: Instant, partition: PartitionId) {
        if let Some(c) = self.recovery.out.get_mut(&partition) {
            c.next_send = c.next_send.max(now);
        }
    }

    /// Sends the next part of the index, ahead of the first chunk.
    fn send_index_part(&mut self, now: Instant, partition: PartitionId) {
        let c = self.recovery.out.get_mut(&partition).expect("pumped copy");
        let Some(index) = c.index.as_mut() else {
            return;
        };
        let first = index.sent;
        let to = (first + INDEX_PART_SLOTS).min(index.slots.len());
        self.recovery.counters.index_bytes_sent += (to - first) as u64 * 8;
        // The part's bytes stay in the snapshot: the driver sends them
        // from there, as a chunk's from the arena.
        let part = IndexPart {
            partition,
            end: index.end,
            slots: index.slots.len() as u64,
            bits: index.bits as u8,
            first: first as u64,
            words: Arc::clone(&index.slots),
            range: first..to,
        };
        index.sent = to;
        if to == index.slots.len() {
            c.index = None;
            log::debug!(
                "{}: sent the index of {partition}, {:?} after the copy began",
                self.id,
                now - c.started
            );
        }
        c.in_flight += 1;
        let (target, session) = (c.target, c.session);
        let request_id = self.peer_request_id(PeerPending::CopyChunk {
            partition,
            session,
            peer: target,
        });
        self.transmits.push_back(Transmit::CopyIndex {
            peer: target,
            request_id,
            part,
        });
    }

    /// Sends the next chunk; while writes are held, the chunk that reaches
    /// the end carries the digest.
    fn send_chunk(&mut self, now: Instant, partition: PartitionId, sealed: bool) {
        let store = &self.partitions[&partition];
        let c = self.recovery.out.get_mut(&partition).expect("pumped copy");
        // The bytes stay in the arena: the driver sends them from there.
        let (bytes, crc) = store.copy_chunk(c.sent, CHUNK_BYTES);
        let len = bytes.len() as u64;
        let offset = c.sent;
        c.sent += len;
        c.in_flight += 1;
        let last = sealed && c.sent == store.end_offset();
        let end = last.then(|| {
            let (sum, keys) = store.digest();
            Digest { sum, keys }
        });
        if last {
            c.phase = CopyPhase::Final;
        }
        let rate = self.config.recovery.copy_rate;
        if rate > 0 {
            let spacing = Duration::from_secs_f64(len as f64 / rate as f64);
            c.next_send = c.next_send.max(now - spacing.min(Duration::from_millis(1))) + spacing;
        }
        self.recovery.counters.bytes_sent += len;
        let (target, session) = (c.target, c.session);
        let generation = store.generation();
        let request_id = self.peer_request_id(PeerPending::CopyChunk {
            partition,
            session,
            peer: target,
        });
        self.transmits.push_back(Transmit::CopyChunk {
            peer: target,
            request_id,
            chunk: ArenaChunk {
                partition,
                generation,
                offset,
                len,
                end,
                crc,
            },
        });
    }

    /// The bytes of a [`Transmit::CopyChunk`], in the arena. `None` when
    /// the partition is gone, was compacted since (its offsets mean other
    /// bytes now), or does not reach that far: the copy is abandoned then,
    /// and the chunk is dropped as a lost message would be.
    pub fn copy_chunk_bytes(&self, chunk: &ArenaChunk) -> Option<&[u8]> {
        let store = self.partitions.get(&chunk.partition)?;
        if store.generation() != chunk.generation {
            return None;
        }
        let from = usize::try_from(chunk.offset).ok()?;
        let to = usize::try_from(chunk.offset.checked_add(chunk.len)?).ok()?;
        store.bytes().get(from..to)
    }

    /// A [`Transmit::CopyChunk`] as the request it stands for, owning a
    /// copy of its bytes, for a driver that moves owned requests (the
    /// simulator). `None` as for [`Node::copy_chunk_bytes`].
    pub fn copy_chunk_request(&self, chunk: &ArenaChunk) -> Option<Request> {
        let bytes = self.copy_chunk_bytes(chunk)?;
        Some(Request::CopyChunk {
            partition: chunk.partition,
            offset: chunk.offset,
            bytes: bytes.to_vec(),
            end: chunk.end,
        })
    }

    fn send_copy_chunk(
        &mut self,
        target: BrickId,
        partition: PartitionId,
        session: u64,
        offset: u64,
        bytes: Vec<u8>,
        end: Option<Digest>,
    ) {
        let request = Request::CopyChunk {
            partition,
            offset,
            bytes,
            end,
        };
        let pending = PeerPending::CopyChunk {
            partition,
            session,
            peer: target,
        };
        self.send_peer(target, request, pending);
    }

    /// The target's answer to a chunk.
    pub(super) fn copy_acked(
        &mut self,
        now: Instant,
        partition: PartitionId,
        session: u64,
        reply: Reply,
    ) {
        let Some(c) = copy_in_session(&mut self.recovery.out, partition, session) else {
            return;
        };
        let end = match reply {
            Reply::CopyAck { end } => end,
            other => {
                let reason = format!("{} refused a chunk: {}", c.target, reply_text(&other));
                self.abort_copy(partition, &reason);
                return;
            }
        };
        c.in_flight = c.in_flight.saturating_sub(1);
        c.acked = c.acked.max(end);
        c.deadline = now + PROGRESS_TIMEOUT;
        if now.saturating_duration_since(c.logged_at) >= PROGRESS_LOG_INTERVAL {
            c.logged_at = now;
            let total = self
                .partitions
                .get(&partition)
                .map_or(0, |p| p.end_offset());
            log::info!(
                "{}: copy of {partition} to {}: {} of {} bytes, {:.1} MiB/s",
                self.id,
                c.target,
                c.acked - HEADER_BYTES,
                total.saturating_sub(HEADER_BYTES),
                rate(
                    c.acked - HEADER_BYTES,
                    now.saturating_duration_since(c.started)
                ) / 1048576.0
            );
        }
        if c.phase == CopyPhase::Final && c.in_flight == 0 {
            self.finish_copy(now, partition);
        } else {
            self.pump_copy(now, partition);
        }
    }

    /// The target holds a verified copy: the bricks vote on adding it,
    /// while the source keeps holding the partition's writes.
    fn finish_copy(&mut self, now: Instant, partition: PartitionId) {
        let c = self.recovery.out.get(&partition).expect("finished copy");
        let lease = now.saturating_duration_since(c.sealed_at.unwrap_or(now));
        let members = self
            .maps
            .rg
            .get(c.rg)
            .filter(|e| e.epoch == c.epoch && e.bricks.first() == Some(&self.id))
            .map(|e| e.bricks.clone());
        let (rg, target) = (c.rg, c.target);
        let Some(mut members) = members
            .filter(|_| lease <= self.config.recovery.copy_lease && now >= self.stalled_until)
        else {
            self.abort_copy(partition, "the group changed or the write lease ran out");
            return;
        };
        if self.forgot_transactions_in(now, Some(rg)) {
            // This node restarted after a crash (it took the group alone)
            // and may have forgotten outcomes: as the group's primary it
            // would answer "unknown" to every prepare-and-decide of a
            // transaction it does not know, new ones included, so every
            // write would fail. The target knows every outcome it can be
            // asked about and goes first.
            members.insert(0, target);
        } else {
            members.push(target);
        }
        if let Some(c) = self.recovery.out.get_mut(&partition) {
            c.phase = CopyPhase::Deciding;
        }
        // In a one- or two-brick cluster the vote is decided at once.
        if !self.propose_value(now, rg, membership::Purpose::Add(partition), members) {
            self.abort_copy(partition, "a vote on the group is under way");
        }
    }

    /// The vote added the copy's target to the group.
    fn copy_joined(&mut self, now: Instant, partition: PartitionId) {
        let Some(c) = self.recovery.out.remove(&partition) else {
            return;
        };
        if let Some(store) = self.partitions.get_mut(&partition) {
            store.set_compaction_paused(false);
        }
        let lease = now.saturating_duration_since(c.sealed_at.unwrap_or(now));
        let took = now.saturating_duration_since(c.started);
        let bytes = c.acked - HEADER_BYTES;
        let counters = &mut self.recovery.counters;
        counters.finished += 1;
        counters.catch_ups += u64::from(c.catch_up);
        counters.last_copy_ms = took.as_millis() as u64;
        counters.last_copy_bytes = if c.catch_up { 0 } else { bytes };
        counters.last_write_lease_us = lease.as_micros() as u64;
        counters.longest_write_lease_us = counters
            .longest_write_lease_us
            .max(lease.as_micros() as u64);
        let epoch = self.maps.rg.get(c.rg).map_or(0, |e| e.epoch);
        log::warn!(
            "{}: {} joined {} at epoch {epoch} after {}; writes were held for {:?}",
            self.id,
            c.target,
            c.rg,
            if c.catch_up {
                "it proved its data current".to_string()
            } else {
                format!(
                    "a copy of {bytes} bytes in {took:?} ({:.0} MiB/s)",
                    rate(bytes, took) / 1048576.0
                )
            },
            lease
        );
        // The new member cannot have removed this node before its first
        // renewal: until then, this node's reads count on a lease from it
        // as if just granted, so reads do not stop at the switch.
        let held = self.held.entry(c.rg).or_default();
        held.epoch = epoch;
        held.until.insert(c.target, now + self.config.lease);
        self.next_renewal = now;
    }

    fn send_copy_abort(&mut self, target: BrickId, partition: PartitionId) {
        self.send_peer(
            target,
            Request::CopyAbort { partition },
            PeerPending::CopyAbort,
        );
    }

    /// Ends a copy that failed: writes and compaction resume, the target is
    /// told to drop what it has, and the group is tried again later.
    pub(super) fn abort_copy(&mut self, partition: PartitionId, reason: &str) {
        let Some(c) = self.recovery.out.remove(&partition) else {
            return;
        };
        log::warn!(
            "{}: copy of {partition} to {} abandoned: {reason}",
            self.id,
            c.target
        );
        self.recovery.counters.failed += 1;
        if let Some(store) = self.partitions.get_mut(&partition) {
            store.set_compaction_paused(false);
        }
        // A vote on adding the target stops here: once writes resume the
        // target's copy is out of date. If this node accepted the addition
        // already, its vote keeps holding the writes until the epoch is
        // decided (see `membership`); if it did not, nobody did, since the
        // source accepts its value before anyone else is asked to.
        if self
            .membership
            .proposals
            .get(&c.rg)
            .is_some_and(|p| p.purpose == membership::Purpose::Add(partition))
        {
            self.membership.proposals.remove(&c.rg);
        }
        self.send_copy_abort(c.target, partition);
        // Prepares parked by the hold go on (`last_active` is the time of
        // the input being handled).
        let now = self.last_active;
        self.retry_held_prepares(now);
    }

    /// Abandons copies past their deadline or their write lease.
    fn expire_copies(&mut self, now: Instant) {
        let lease = self.config.recovery.copy_lease;
        let expired: Vec<(PartitionId, &'static str)> = self
            .recovery
            .out
            .iter()
            .filter_map(|(p, c)| {
                if now >= c.deadline {
                    Some((*p, "the target stopped answering"))
                } else if c.sealed_at.is_some_and(|at| now >= at + lease) {
                    Some((*p, "the write lease ran out"))
                } else {
                    None
                }
            })
            .collect();
        for (partition, reason) in expired {
            self.abort_copy(partition, reason);
        }
        let idle: Vec<PartitionId> = self
            .recovery
            .incoming
            .iter()
            .filter(|(_, c)| now.saturating_duration_since(c.last_heard) >= INCOMING_IDLE)
            .map(|(p, _)| *p)
            .collect();
        for partition in idle {
            log::warn!(
                "{}: dropping the copy of {partition} it was receiving: the source went silent",
                self.id
            );
            self.drop_incoming(partition);
        }
        let pumping: Vec<PartitionId> = self.recovery.out.keys().copied().collect();
        for partition in pumping {
            self.pump_copy(now, partition);
        }
    }

    /// When the recovery next wants a timeout.
    pub(super) fn recovery_timeout(&self) -> Option<Instant> {
        let lease = self.config.recovery.copy_lease;
        let out = self.recovery.out.iter().map(|(p, c)| {
            let mut at = c.deadline;
            if let Some(sealed) = c.sealed_at {
                at = at.min(sealed + lease);
            }
            // Only a chunk that waits for the rate cap needs a wakeup; one
            // that waits for acks or for writes to arrive does not, or the
            // loop would spin on a time already past.
            let waiting_for_cap = self
                .partitions
                .get(p)
                .is_some_and(|store| c.sent < store.end_offset());
            if c.phase == CopyPhase::PreCopy && c.in_flight < WINDOW && waiting_for_cap {
                at = at.min(c.next_send);
            }
            if let Some((by, look)) = c.snapshot_by {
                at = at.min(by).min(look);
            }
            at
        });
        let polls = self.recovery.polls.values().map(|p| p.deadline);
        let incoming = self
            .recovery
            .incoming
            .values()
            .map(|c| c.last_heard + INCOMING_IDLE);
        out.chain(polls).chain(incoming).min()
    }

    /// A copy request to `peer` was lost with its connection.
    pub(super) fn copy_peer_lost(&mut self, partition: PartitionId, session: u64) {
        if self
            .recovery
            .out
            .get(&partition)
            .is_some_and(|c| c.session == session)
        {
            self.abort_copy(partition, "the connection to the target broke");
        }
    }

    // ----------------------------------------------------------------------
    // Target side.

    /// The target's answer to a `CopyBegin`.
    pub(super) fn copy_begin(&mut self, now: Instant, request: Request) -> Reply {
        let Request::CopyBegin {
            rg,
            epoch,
            partition,
            full,
            keys,
            maps,
        } = request
        else {
            return error(ErrorCode::Internal, "not a copy begin".to_string());
        };
        if let Reply::Error(e) = self.push_maps(now, &maps) {
            return Reply::Error(e);
        }
        let Some(entry) = self.maps.rg.get(rg) else {
            return error(ErrorCode::Refused, format!("{rg} is not in the maps"));
        };
        if entry.epoch != epoch || self.maps.dp.rg_of(partition) != Some(rg) {
            return error(
                ErrorCode::Refused,
                format!("{partition} of {rg} at epoch {epoch} does not match the maps"),
            );
        }
        if entry.bricks.contains(&self.id) {
            return error(
                ErrorCode::Refused,
                format!("{} is already a member of {rg}", self.id),
            );
        }
        if !self.recovery.incoming.contains_key(&partition)
            && self.recovery.incoming.len() >= limits::INCOMING_COPIES_MAX
        {
            return error(ErrorCode::Busy, "too many copies arriving".to_string());
        }
        self.drop_incoming(partition);
        self.drop_transactions_of(now, partition);
        if !full {
            if let Some(store) = self.partitions.get(&partition) {
                let (sum, keys) = store.digest();
                self.recovery.incoming.insert(
                    partition,
                    CopyIn {
                        rg,
                        staging: None,
                        last_heard: now,
                        bytes: 0,
                        tables: BTreeMap::new(),
                        index: None,
                    },
                );
                return Reply::CopyReady {
                    local: Some(Digest { sum, keys }),
                };
            }
        }
        // Data already held is written over where it lies (its pages are
        // in memory already); otherwise a fresh arena.
        let staging = match self.partitions.remove(&partition) {
            Some(mut old) => {
                old.reset();
                Ok(old)
            }
            None => self
                .config
                .storage
                .create(partition, self.config.partition_capacity),
        };
        let staging = staging.and_then(|mut staging| {
            staging.set_compaction_paused(true);
            staging.reserve_keys(keys);
            staging.into_filling().map_err(|e| {
                // The partition was dropped with the thread that could not
                // start; its file goes too.
                self.config.storage.discard(partition, ());
                format!("cannot start indexing a copy: {e}")
            })
        });
        match staging {
            Ok(staging) => {
                log::info!("{}: receiving a copy of {partition} of {rg}", self.id);
                self.recovery.incoming.insert(
                    partition,
                    CopyIn {
                        rg,
                        staging: Some(staging),
                        last_heard: now,
                        bytes: 0,
                        tables: BTreeMap::new(),
                        index: None,
                    },
                );
                Reply::CopyReady { local: None }
            }
            Err(e) => error(
                ErrorCode::Internal,
                format!("cannot receive {partition}: {e}"),
            ),
        }
    }

    /// A part of the source's index, ahead of a full copy's first chunk.
    /// One that does not fit what came before is dropped with all of the
    /// index (the copy goes on, and this node indexes the records itself),
    /// as is an index for a partition whose last copy failed the check
    /// against the index that came with it.
    pub(super) fn copy_index(&mut self, now: Instant, part: CopyIndexRef<'_>) -> Reply {
        let CopyIndexRef {
            partition,
            end,
            slots,
            bits,
            first,
            bytes,
        } = part;
        let refused = self.recovery.index_refused.contains(&partition);
        let Some(c) = self.recovery.incoming.get_mut(&partition) else {
            return error(
                ErrorCode::Refused,
                format!("no copy of {partition} is arriving"),
            );
        };
        c.last_heard = now;
        let Some(staging) = c.staging.as_ref() else {
            return error(
                ErrorCode::Refused,
                "a copy that keeps its data takes no index".to_string(),
            );
        };
        let at = staging.end();
        if first == 0 && at == HEADER_BYTES && !refused {
            let most = staging.capacity_bytes() / INDEX_SLOTS_PER_CAPACITY_BYTE_MAX;
            c.index = IndexImage::new(slots)
                .filter(|_| slots <= most)
                .map(|image| (end, bits, image));
        }
        let fits = match c.index.as_mut() {
            Some((e, b, image)) if (*e, *b, image.slots() as u64) == (end, bits, slots) => {
                image.write(first, bytes)
            }
            Some(_) => Err("a part of another index"),
            None => Ok(()),
        };
        if let Err(e) = fits {
            log::warn!(
                "{}: ignoring the index sent with the copy of {partition}: {e}",
                self.id
            );
            c.index = None;
        }
        Reply::CopyAck { end: at }
    }

    pub(super) fn copy_chunk(&mut self, now: Instant, chunk: CopyChunkRef<'_>) -> Reply {
        let CopyChunkRef {
            partition,
            offset,
            bytes,
            end,
        } = chunk;
        let Some(c) = self.recovery.incoming.get_mut(&partition) else {
            return error(
                ErrorCode::Refused,
                format!("no copy of {partition} is arriving"),
            );
        };
        c.last_heard = now;
        if let (Some(staging), Some((end, bits, image))) = (c.staging.as_mut(), c.index.take()) {
            if offset == HEADER_BYTES
                && staging.use_index(image, end, u32::from(bits), &[TABLE_MARKER])
            {
                log::debug!(
                    "{}: the copy of {partition} comes with its source's index up to offset {end}",
                    self.id
                );
            }
        }
        let tables = &mut c.tables;
        let result = match c.staging.as_mut() {
            // The frame's crc covered every byte of the chunk on its way
            // (see "Recovery" in ARCHITECTURE.md).
            Some(staging) => staging
                .append_chunk_with(offset, bytes, ChunkCheck::Structure, |live, key| {
                    if let Some((&TABLE_MARKER, name)) = key.split_first() {
                        tables.insert(name.to_vec(), live);
                    }
                })
                .map_err(|e| (e.to_string(), index_failed(&e, staging.uses_index()))),
            None if bytes.is_empty() => Ok(()),
            None => Err(("a catch-up copy carries no data".to_string(), false)),
        };
        if let Err((e, index_failed)) = result {
            log::warn!(
                "{}: refusing a chunk of {partition} at offset {offset}: {e}",
                self.id
            );
            if index_failed {
                self.refuse_index(partition, &e);
            }
            self.drop_incoming(partition);
            return error(ErrorCode::Malformed, e);
        }
        c.bytes += bytes.len() as u64;
        self.recovery.counters.bytes_received += bytes.len() as u64;
        let received_end = offset + bytes.len() as u64;
        let Some(want) = end else {
            return Reply::CopyAck { end: received_end };
        };
        let indexed = c.staging.as_ref().is_some_and(Filling::uses_index);
        let (staging, prefixed) = match c.staging.take().map(Filling::finish) {
            None => (None, Vec::new()),
            Some(Ok((staging, prefixed))) => (Some(staging), prefixed),
            Some(Err(e)) => {
                log::error!("{}: the copy of {partition} is lost: {e}", self.id);
                if index_failed(&e, indexed) {
                    self.refuse_index(partition, &e.to_string());
                }
                self.drop_incoming(partition);
                self.config.storage.discard(partition, ());
                return error(ErrorCode::Internal, e.to_string());
            }
        };
        let have = match staging.as_ref() {
            Some(staging) => staging.digest(),
            None => self
                .partitions
                .get(&partition)
                .map_or((0, 0), Partition::digest),
        };
        if have != (want.sum, want.keys) {
            log::warn!(
                "{}: the copy of {partition} does not match the source's digest; dropped",
                self.id
            );
            self.drop_incoming(partition);
            if let Some(staging) = staging {
                self.config.storage.discard(partition, staging);
            }
            return error(
                ErrorCode::Refused,
                "the copy's digest differs from the source's".to_string(),
            );
        }
        let c = self
            .recovery
            .incoming
            .remove(&partition)
            .expect("checked above");
        if let Some(mut staging) = staging {
            staging.set_compaction_paused(false);
            // The markers below the index's end come before those this
            // node checked, in arena order.
            let mut tables = BTreeSet::new();
            let checked_here = c.tables.into_iter();
            for (live, name) in prefixed
                .into_iter()
                .map(|(live, mut key)| (live, key.split_off(1)))
                .chain(checked_here.map(|(name, live)| (live, name)))
            {
                if live {
                    tables.insert(name);
                } else {
                    tables.remove(&name);
                }
            }
            self.tables.extend(tables);
            self.recovery.counters.installed_with_index += u64::from(indexed);
            self.partitions.insert(partition, staging);
        }
        self.recovery.recovered.insert(c.rg);
        self.unblank(c.rg, "it received the group's data by a copy");
        self.recovery.counters.installed += 1;
        log::info!(
            "{}: holds a verified copy of {partition} ({} bytes received); waiting to join {}",
            self.id,
            c.bytes,
            c.rg
        );
        Reply::CopyAck { end: received_end }
    }

    pub(super) fn copy_abort(&mut self, partition: PartitionId) -> Reply {
        if self.recovery.incoming.contains_key(&partition) {
            log::info!("{}: the source abandoned the copy of {partition}", self.id);
            self.drop_incoming(partition);
        }
        Reply::Ok
    }

    /// A copy that used its source's index failed a check of its records:
    /// the next copies of the partition go without one.
    fn refuse_index(&mut self, partition: PartitionId, why: &str) {
        log::error!(
            "{}: the copy of {partition} does not match the index its source sent ({why}); \
             later copies of it are indexed here",
            self.id
        );
        self.recovery.index_refused.insert(partition);
    }

    fn drop_incoming(&mut self, partition: PartitionId) {
        if let Some(c) = self.recovery.incoming.remove(&partition) {
            if let Some(staging) = c.staging {
                self.config.storage.discard(partition, staging);
            }
        }
    }

    /// Forgets prepared writes of a partition this node is not a member of:
    /// the group resolved them without it, and the copy brings the result.
    fn drop_transactions_of(&mut self, now: Instant, partition: PartitionId) {
        let mut stale: Vec<wire::TxId> = self
            .prepared
            .iter()
            .filter(|(_, tx)| tx.partition == partition)
            .map(|(txid, _)| *txid)
            .collect();
        // In id order, so that a seeded run replays exactly.
        stale.sort_unstable();
        for txid in stale {
            self.forget_prepared(now, txid);
        }
    }

    pub(super) fn recovery_stats(&self, now: Instant, out: &mut Vec<(String, u64)>) {
        let c = &self.recovery.counters;
        out.extend([
            ("copies_started".to_string(), c.started),
            ("copies_finished".to_string(), c.finished),
            ("copies_failed".to_string(), c.failed),
            ("copies_caught_up".to_string(), c.catch_ups),
            ("copies_installed".to_string(), c.installed),
            ("copy_bytes_sent".to_string(), c.bytes_sent),
            ("copy_bytes_received".to_string(), c.bytes_received),
            ("last_copy_ms".to_string(), c.last_copy_ms),
            ("last_copy_bytes".to_string(), c.last_copy_bytes),
            ("last_write_lease_us".to_string(), c.last_write_lease_us),
            (
                "longest_write_lease_us".to_string(),
                c.longest_write_lease_us,
            ),
            ("partitions_let_go".to_string(), c.dropped),
            ("copy_index_bytes_sent".to_string(), c.index_bytes_sent),
            (
                "copies_installed_with_index".to_string(),
                c.installed_with_index,
            ),
        ]);
        // After a crash: the shared groups this brick still waits to be
        // copied back into (it serves nothing there meanwhile), and how long
        // it still says "unknown" about transactions it does not know.
        let me = self.id;
        let waiting = self
            .maps
            .rg
            .iter()
            .filter(|(rg, e)| {
                e.bricks.len() > 1 && e.bricks.contains(&me) && self.decides_nothing_in(**rg)
            })
            .count();
        out.push(("groups_waiting_for_a_copy".to_string(), waiting as u64));
        let forgetting = self
            .forgot_outcomes_until
            .map_or(0, |until| until.saturating_duration_since(now).as_millis());
        out.push(("forgotten_outcomes_ms_left".to_string(), forgetting as u64));
        for (p, copy) in &self.recovery.out {
            let total = self.partitions.get(p).map_or(0, |s| s.end_offset());
            out.push((format!("copy.{}.bytes", p.0), copy.acked - HEADER_BYTES));
            out.push((
                format!("copy.{}.total_bytes", p.0),
                total.saturating_sub(HEADER_BYTES),
            ));
            out.push((format!("copy.{}.phase", p.0), copy.phase.number()));
            out.push((format!("copy.{}.target", p.0), u64::from(copy.target.0)));
            let took = now.saturating_duration_since(copy.started);
            out.push((
                format!("copy.{}.rate_bytes_per_s", p.0),
                rate(copy.acked - HEADER_BYTES, took) as u64,
            ));
        }
        for (p, copy) in &self.recovery.incoming {
            out.push((format!("copy.{}.received_bytes", p.0), copy.bytes));
        }
    }
}

/// The copy of `partition` this node sends, if it is still the one of
/// `session`.
fn copy_in_session(
    out: &mut BTreeMap<PartitionId, CopyOut>,
    partition: PartitionId,
    session: u64,
) -> Option<&mut CopyOut> {
    out.get_mut(&partition).filter(|c| c.session == session)
}

/// Whether a copy's failure `e` is its records not matching the index its
/// source sent (`indexed`: the copy used one).
fn index_failed(e: &StoreError, indexed: bool) -> bool {
    indexed && matches!(e, StoreError::Corrupt { .. })
}

fn reply_text(reply: &Reply) -> String {
    match reply {
        Reply::Error(e) => format!("{:?}: {}", e.code, e.message),
        other => format!("{other:?}"),
    }
}
