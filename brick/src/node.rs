//! The brick's protocol logic as a sans-IO state machine.
//!
//! A [`Node`] holds a brick's partitions, its copy of the maps, the per-key
//! locks and transactions of two-phase commit, the read leases it holds from
//! its peers and grants to them, and any membership change it is driving. It
//! takes inputs as method calls — `handle_request`, `handle_peer_reply`,
//! `handle_peer_unreachable`, `handle_timeout`, each with the current time —
//! and produces outputs through `poll_transmit` (replies and requests to
//! peers) and `poll_timeout` (when it next wants `handle_timeout`). It does
//! no I/O and reads no clock, so the mio server in production and the
//! simulator in tests drive the very same code.
//!
//! Every map whose iteration order reaches the outputs is ordered (a
//! `BTreeMap`), or has its keys sorted before they are used (the prepared
//! transactions), so a simulated run replays exactly from its seed.
//!
//! Call order for a driver: feed every input that is ready, then drain
//! `poll_transmit` until it returns `None`, then arm a timer for
//! `poll_timeout`. `background_step` does a bounded amount of compaction and
//! may be called whenever the driver is idle.
//!
//! # The protocol in brief (ARCHITECTURE.md has the reasons)
//!
//! * Reads are served by any member of the partition's replica group that
//!   holds a read lease from every other member. A read of a key locked by a
//!   prepared write waits for the write's outcome.
//! * Writes are two-phase: `Prepare` locks the key without waiting and votes;
//!   the coordinator (in ddslib) sends its decision to the transaction's
//!   *primary* (the first participant that is still a member) and, once the
//!   primary has answered, to the others. The primary's state is the decision.
//!   A participant left prepared asks the primary; a primary left prepared
//!   asks the others: any aborted or unknown → abort, all prepared → commit.
//!   A brick asked about a transaction it never saw records it as aborted, so
//!   a late prepare is refused.
//! * Membership: a brick that stops answering lease renewals, or that a
//!   client asks to exclude, is proposed for removal by the group's leader
//!   for that change (the first member other than the brick being removed).
//!   The leader stops granting it leases, probes it, and proposes the new
//!   epoch only when the probe went unanswered and every lease it granted
//!   has run out. Every new epoch is decided by a vote among all bricks
//!   (`membership`).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Hash tables with a fast keyed hasher (the default one showed in
/// profiles of the request path).
type HashMap<K, V> = std::collections::HashMap<K, V, ahash::RandomState>;
type HashSet<K> = std::collections::HashSet<K, ahash::RandomState>;
use std::time::{Duration, Instant};

use maps::{BrickId, Maps, PartitionId, RgId};
use wire::{
    Ballot, CopyChunkRef, CopyIndexRef, ErrorCode, ErrorReply, Reply, Request, TxId, TxState, Write,
};

use crate::limits;
use crate::store::{record_bytes, CompactStatus, Partition, StoreError};

mod kept;
mod membership;
mod outcomes;
mod recovery;
mod routes;

use routes::NodeMaps;

pub use recovery::{
    arena_path, blank_marker_path, maps_path, partition_of_file_name, save_durably, votes_path,
    DataDir, RecoveryConfig, Storage,
};

/// A client connection, as the driver names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// Something the node wants sent.
#[derive(Debug)]
pub enum Transmit {
    /// A reply on a client connection.
    Reply {
        conn: ConnId,
        request_id: u64,
        reply: Reply,
    },
    /// A request to a peer brick; its reply comes back through
    /// [`Node::handle_peer_reply`] with the same request id.
    Peer {
        peer: BrickId,
        request_id: u64,
        request: Request,
    },
    /// A `CopyChunk` request to a peer whose bytes are still in the
    /// partition's arena, `len` bytes from `offset`: the driver encodes
    /// them from there ([`Node::copy_chunk_bytes`]), in the same pass,
    /// rather than from a copy made first. Its reply comes back as a
    /// [`Transmit::Peer`]'s does.
    CopyChunk {
        peer: BrickId,
        request_id: u64,
        chunk: ArenaChunk,
    },
    /// A `CopyIndex` request to a peer whose bytes are a part of the
    /// source's snapshot of its index: the driver encodes them from there
    /// ([`IndexPart::request_ref`]) rather than from a copy made first.
    /// Its reply comes back as a [`Transmit::Peer`]'s does.
    CopyIndex {
        peer: BrickId,
        request_id: u64,
        part: IndexPart,
    },
}

/// A part of the index a copy sends ahead of its first chunk: the
/// `CopyIndex` request's fields, and its slots, shared with the source's
/// snapshot of the table (held as little-endian words, so their bytes are
/// the wire's), which stays alive as long as a part names it.
#[derive(Clone, Debug)]
pub struct IndexPart {
    pub partition: PartitionId,
    pub end: u64,
    pub slots: u64,
    pub bits: u8,
    pub first: u64,
    words: std::sync::Arc<Vec<u64>>,
    range: std::ops::Range<usize>,
}

impl IndexPart {
    /// The request this part stands for, its bytes borrowed from the
    /// snapshot.
    pub fn request_ref(&self) -> CopyIndexRef<'_> {
        let words = &self.words[self.range.clone()];
        // SAFETY: any initialised memory is valid as bytes, `u8` has no
        // alignment, and the slice covers exactly the words' memory, which
        // `self` keeps alive for the borrow.
        let bytes = unsafe {
            std::slice::from_raw_parts(words.as_ptr().cast::<u8>(), std::mem::size_of_val(words))
        };
        CopyIndexRef {
            partition: self.partition,
            end: self.end,
            slots: self.slots,
            bits: self.bits,
            first: self.first,
            bytes,
        }
    }
}

/// Where the bytes of a [`Transmit::CopyChunk`] are: `len` bytes from
/// `offset` of a partition's arena of `generation`, with the digest the
/// last chunk of a copy carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArenaChunk {
    pub partition: PartitionId,
    pub generation: u64,
    pub offset: u64,
    pub len: u64,
    pub end: Option<wire::Digest>,
    /// The crc32 of the bytes, when the arena kept it (see
    /// [`crate::store::Partition::copy_chunk`]).
    pub crc: Option<u32>,
}

/// Timing of the protocol, from `cluster.toml`.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// How long a lease granted to a peer lasts.
    pub lease: Duration,
    /// How long a participant stays prepared before it asks its peers.
    pub prepare_timeout: Duration,
    /// How long a liveness probe waits before the peer counts as silent.
    pub probe_timeout: Duration,
    /// How long the outcome of a finished transaction is remembered.
    pub outcome_retention: Duration,
    /// A number that differs every time the brick process starts; peers
    /// refuse leases to a brick whose incarnation changed within an epoch,
    /// because a restarted brick may have lost prepared writes.
    pub incarnation: u64,
    /// The brick restarted after a crash: it lost its transaction table, so
    /// it serves nothing in groups with other members (it waits to be
    /// removed and recovered, or, when every member restarted after a
    /// crash, its group's first member takes the group alone).
    pub amnesiac: bool,
    /// Partitions this brick started without data for (no arena file, or a
    /// blank marker left from a start that had none): an emptied data
    /// folder or a new cluster. In their groups it serves and decides
    /// nothing until it is copied into them, or every other member has
    /// shown that it holds none of the group's data either
    /// (`Node::blank_in`).
    pub blank: BTreeSet<PartitionId>,
    /// The brick held data when it started (after a crash or a clean
    /// stop): it waits out the leases it may have granted before
    /// (`start_fence`), and it says "unknown", never "aborted", about
    /// transactions it does not know, since it may have seen them before,
    /// unless it takes back the outcomes a clean stop saved
    /// ([`Node::restore_outcomes`]).
    pub restarted: bool,
    /// How long after its start a brick that held data takes no prepare in
    /// the groups it shares: read leases it granted before it stopped may
    /// still run. The daemon knows from its clean-shutdown record; a lease
    /// period plus margin when it does not.
    pub start_fence: Duration,
    /// Members every replica group should have (`cluster.replicas`).
    pub replicas: usize,
    /// Every brick of the cluster: where a group short of members looks
    /// for a new one.
    pub bricks: Vec<BrickId>,
    /// Bytes of a partition's arena.
    pub partition_capacity: u64,
    /// Where partitions received by a copy are kept.
    pub storage: Storage,
    pub recovery: RecoveryConfig,
}

impl NodeConfig {
    /// How often leases are renewed: three times per lease, so one lost
    /// renewal does not let the lease lapse.
    fn renew_interval(&self) -> Duration {
        self.lease / 3
    }

    /// How long a peer may stay silent before its group's leader starts to
    /// exclude it.
    fn silence_limit(&self) -> Duration {
        self.lease + self.probe_timeout
    }
}

/// The reserved first byte of a table's marker key. Table names are never
/// empty, so no data key starts with a zero length byte.
const TABLE_MARKER: u8 = 0;

/// The store key of `key` in `table`: the table name's length, the name,
/// then the key, so that tables never share keys.
pub fn store_key(table: &[u8], key: &[u8]) -> Vec<u8> {
    let mut out = vec![0; 1 + table.len() + key.len()];
    write_store_key(&mut out, table, key);
    out
}

/// Writes the store key of `key` in `table` (see [`store_key`]) at the
/// start of `out`, if it fits, and returns it.
fn write_store_key<'a>(out: &'a mut [u8], table: &[u8], key: &[u8]) -> Option<&'a [u8]> {
    debug_assert!(!table.is_empty() && table.len() <= u8::MAX as usize);
    let len = 1 + table.len() + key.len();
    let out = out.get_mut(..len)?;
    out[0] = table.len() as u8;
    out[1..1 + table.len()].copy_from_slice(table);
    out[1 + table.len()..].copy_from_slice(key);
    Some(out)
}

fn table_marker_key(table: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + table.len());
    out.push(TABLE_MARKER);
    out.extend_from_slice(table);
    out
}

/// A locked key, as the reads waiting for it are filed: its partition and
/// store key.
type LockKey = (PartitionId, Vec<u8>);

/// A prepared transaction at this participant.
#[derive(Debug)]
struct PreparedTx {
    partition: PartitionId,
    rg: RgId,
    store_key: Vec<u8>,
    /// Its entry's hash in the lock table ([`Node::lock_hash`]).
    lock_hash: u64,
    write: Write,
    participants: Vec<BrickId>,
    /// When the participant next asks about the outcome.
    deadline: Instant,
    /// Replies still expected from a status round, and what they said.
    /// Boxed: rare, and kept out of the table's entries.
    round: Option<Box<StatusRound>>,
}

#[derive(Debug)]
struct StatusRound {
    waiting: HashSet<BrickId>,
    any_aborted: bool,
    any_committed: bool,
}

/// What a request this node sent to a peer was for.
#[derive(Debug)]
enum PeerPending {
    Lease {
        rg: RgId,
        epoch: u64,
        peer: BrickId,
        sent_at: Instant,
    },
    Probe {
        rg: RgId,
        peer: BrickId,
    },
    TxStatus {
        txid: TxId,
        peer: BrickId,
    },
    PushMaps,
    /// Maps asked of a peer after this node stalled.
    FetchMaps,
    Capacity {
        rg: RgId,
        peer: BrickId,
    },
    /// Copy requests carry the copy's session number, so a late answer
    /// from an abandoned copy is not taken for the current one.
    CopyBegin {
        partition: PartitionId,
        session: u64,
        peer: BrickId,
    },
    CopyChunk {
        partition: PartitionId,
        session: u64,
        peer: BrickId,
    },
    CopyAbort,
    ConfigVote {
        rg: RgId,
        epoch: u64,
        ballot: Ballot,
        peer: BrickId,
    },
}

/// A membership change this node is driving as its group's leader.
#[derive(Debug)]
struct Exclusion {
    epoch: u64,
    /// Whether an answered probe cancels the removal. A brick removed
    /// because it restarted is alive, and is removed all the same.
    probe: bool,
    /// Probes sent: a probe lost with its connection is sent again, a
    /// bounded number of times, before the deadline.
    probes_sent: u32,
    probe_deadline: Instant,
    probe_answered: bool,
    /// Whether the removal has been put to the vote. From then on an
    /// answer to a late probe no longer cancels it: the vote may decide the
    /// removal whatever this brick does next, and had it taken the answer
    /// as a reason to grant the brick leases again, the brick would hold a
    /// lease, and answer reads, in a group that no longer has it.
    proposed: bool,
    /// Client requests waiting for the result.
    waiters: Vec<(ConnId, u64)>,
}

/// A prepare that waits for its partition's writes to be released.
#[derive(Debug)]
struct HeldPrepare {
    conn: ConnId,
    request_id: u64,
    request: Request,
    until: Instant,
}

/// What a node may do with a decision on a prepared transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DecisionGate {
    Decide,
    /// It is the primary but holds no lease: the decision waits.
    NoLease,
    /// It left the group: the decision is refused.
    NotMember,
}

/// A decision on a transaction that waits for this node's lease.
#[derive(Debug)]
struct WaitingDecision {
    conn: ConnId,
    request_id: u64,
    txid: TxId,
    partition: PartitionId,
    decision: TxState,
    /// Refused (`Fenced`) if the lease has not come by then.
    until: Instant,
}

/// Leases this node holds for one replica group.
#[derive(Debug, Default)]
struct HeldLease {
    epoch: u64,
    /// Per peer, until when its grant lasts (by this node's clock).
    until: HashMap<BrickId, Instant>,
}

/// Counters reported by `Stats`.
#[derive(Debug, Default)]
struct Counters {
    gets: u64,
    prepares: u64,
    commits: u64,
    aborts: u64,
    lock_conflicts: u64,
    fingerprint_mismatches: u64,
    fenced: u64,
    reads_waited: u64,
    exclusions: u64,
    resolutions: u64,
}

/// Where a request will look in its partition's store, found by
/// [`Node::prefetch_slot`] for [`Node::prefetch_record`].
#[derive(Clone, Copy, Debug)]
pub struct PrefetchHint {
    partition: PartitionId,
    hash: u64,
}

/// The brick's protocol state. See the module documentation.
pub struct Node {
    id: BrickId,
    config: NodeConfig,
    maps: NodeMaps,
    partitions: BTreeMap<PartitionId, Partition>,
    tables: HashSet<Vec<u8>>,

    /// Per store key (within a partition), the transaction holding its
    /// lock: the entries are the prepared transactions' ids with the hash
    /// of their partition and store key ([`Node::lock_hash`]), and a
    /// lookup compares the key with the one in `prepared`, so the key is
    /// not stored twice (a copy in a hash map's key cost every prepare an
    /// allocation, a copy and a free). See [`Node::lock_holder`].
    locks: hashbrown::HashTable<(u64, TxId)>,
    lock_hasher: ahash::RandomState,
    /// A hash table, not a tree: a transaction is inserted and removed
    /// once each, and a tree's nodes shift their entries (about 150 bytes
    /// each) on both. Where the order matters (timeouts, forgetting a
    /// partition's), the ids are sorted first.
    prepared: HashMap<TxId, PreparedTx>,
    /// Arena bytes promised to prepared writes, per partition, so that
    /// every commit fits.
    reserved: HashMap<PartitionId, u64>,
    outcomes: outcomes::Outcomes,
    /// Until when outcomes of transactions decided before this process
    /// started may be lost (its start plus the outcome retention): it held
    /// data when it started and did not take back what a clean stop saved
    /// ([`Node::restore_outcomes`]). See `forgot_transactions`.
    forgot_outcomes_until: Option<Instant>,
    /// Reads waiting for a locked key's outcome.
    waiting_reads: HashMap<LockKey, Vec<(ConnId, u64)>>,
    waiting_reads_count: usize,
    waiting_decisions: Vec<WaitingDecision>,
    held_prepares: Vec<HeldPrepare>,

    held: HashMap<RgId, HeldLease>,
    /// When this node last granted each peer a lease, per group.
    granted: HashMap<(RgId, BrickId), Instant>,
    /// When each peer last answered a lease renewal, per group.
    last_heard: HashMap<(RgId, BrickId), Instant>,
    /// The incarnation each peer had when first seen in a group's epoch.
    peer_incarnations: HashMap<(RgId, u64, BrickId), u64>,
    /// Peers this node has been asked to exclude; it grants them nothing.
    exclusions: BTreeMap<(RgId, BrickId), Exclusion>,
    next_renewal: Instant,
    /// When `watch_peers` last ran, to notice this node's own stalls.
    last_watch: Instant,
    /// When the node last handled anything, and until when, after a stall,
    /// it leads no removal (it may have been removed itself meanwhile and
    /// first asks its peers for their maps).
    last_active: Instant,
    stalled_until: Instant,

    peer_pending: BTreeMap<u64, PeerPending>,
    next_request_id: u64,
    transmits: VecDeque<Transmit>,
    counters: Counters,
    recovery: recovery::Recovery,
    membership: membership::Membership,
}

impl Node {
    /// Builds a node for brick `id` with the partitions it holds. Table names
    /// are recovered from the marker records in the partitions.
    pub fn new(
        id: BrickId,
        config: NodeConfig,
        maps: Maps,
        partitions: BTreeMap<PartitionId, Partition>,
        now: Instant,
    ) -> Node {
        let mut tables = HashSet::default();
        for partition in partitions.values() {
            for marker in partition.keys_with_prefix(&[TABLE_MARKER]) {
                tables.insert(marker[1..].to_vec());
            }
        }
        let outcome_retention = config.outcome_retention;
        let config_restarted = config.restarted;
        let mut node = Node {
            id,
            config,
            maps: NodeMaps::new(maps, id),
            partitions,
            tables,
            locks: hashbrown::HashTable::new(),
            lock_hasher: ahash::RandomState::default(),
            prepared: HashMap::default(),
            reserved: HashMap::default(),
            outcomes: outcomes::Outcomes::new(outcome_retention),
            forgot_outcomes_until: config_restarted.then_some(now + outcome_retention),
            waiting_reads: HashMap::default(),
            waiting_reads_count: 0,
            waiting_decisions: Vec::new(),
            held_prepares: Vec::new(),
            held: HashMap::default(),
            granted: HashMap::default(),
            last_heard: HashMap::default(),
            peer_incarnations: HashMap::default(),
            exclusions: BTreeMap::new(),
            next_renewal: now,
            last_watch: now,
            last_active: now,
            stalled_until: now,
            peer_pending: BTreeMap::new(),
            next_request_id: 1,
            transmits: VecDeque::new(),
            counters: Counters::default(),
            recovery: recovery::Recovery::default(),
            membership: membership::Membership::default(),
        };
        if node.config.restarted && !node.config.amnesiac && !node.config.start_fence.is_zero() {
            // Leases this brick granted to its partners before it stopped
            // may still run: no prepare in a shared group until they have,
            // whatever the next epoch removes. (A brick alone in a group
            // removed its partner before it stopped, and waited out its
            // leases then; an amnesiac brick takes no prepare in a shared
            // group until it has been removed and copied back, by which
            // time its old grants are void.)
            let until = now + node.config.start_fence;
            let me = node.id;
            let groups: Vec<RgId> = node
                .maps
                .rg
                .iter()
                .filter(|(_, e)| e.bricks.len() > 1 && e.bricks.contains(&me))
                .map(|(rg, _)| *rg)
                .collect();
            for rg in groups {
                node.membership.write_fence.insert(rg, until);
            }
        }
        node.recovery.blank = node.config.blank.clone();
        node.ensure_member_partitions();
        node.note_members(now);
        node
    }

    pub fn id(&self) -> BrickId {
        self.id
    }

    pub fn maps(&self) -> &Maps {
        &self.maps
    }

    /// Whether the node restarted after a crash and serves only groups it
    /// is alone in.
    pub fn is_amnesiac(&self) -> bool {
        self.config.amnesiac
    }

    /// Whether the node's amnesia applies to `rg`: it restarted after a
    /// crash and has not received the group's partition by a copy since.
    pub fn is_amnesiac_in(&self, rg: RgId) -> bool {
        self.amnesiac_in(rg)
    }

    /// Partitions the node started without data for and still waits to
    /// receive, or to learn that no member holds any of.
    pub fn blank_partitions(&self) -> &BTreeSet<PartitionId> {
        &self.recovery.blank
    }

    /// Whether the node started without data for `rg` and waits to be
    /// copied into it, or to learn that no member holds any.
    pub fn is_blank_in(&self, rg: RgId) -> bool {
        self.blank_in(rg)
    }

    /// Recovery copies this node sent that ended with the target joining.
    pub fn copies_finished(&self) -> u64 {
        self.recovery.counters.finished
    }

    /// Recovery copies this node installed with the index their source
    /// sent.
    pub fn copies_installed_with_index(&self) -> u64 {
        self.recovery.counters.installed_with_index
    }

    /// Whether a recovery copy is under way to or from this node.
    pub fn is_copying(&self) -> bool {
        !self.recovery.out.is_empty() || !self.recovery.incoming.is_empty()
    }

    /// The partitions this node holds, for flushing at shutdown.
    pub fn partitions(&self) -> impl Iterator<Item = (&PartitionId, &Partition)> {
        self.partitions.iter()
    }

    /// The next output, if any.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// When the node next wants [`Node::handle_timeout`].
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut next = self.next_renewal;
        for tx in self.prepared.values() {
            next = next.min(tx.deadline);
        }
        for exclusion in self.exclusions.values() {
            next = next.min(exclusion.probe_deadline);
        }
        if let Some(at) = self.outcomes.next_expiry() {
            next = next.min(at);
        }
        if let Some(at) = self.recovery_timeout() {
            next = next.min(at);
        }
        if let Some(at) = self.membership_timeout() {
            next = next.min(at);
        }
        for w in &self.waiting_decisions {
            next = next.min(w.until);
        }
        for h in &self.held_prepares {
            next = next.min(h.until);
        }
        Some(next)
    }

    /// Until when a lease this node granted may still run at its holder:
    /// what a clean stop records, so the next start knows how long to wait
    /// before it takes writes.
    pub fn leases_granted_until(&self) -> Option<Instant> {
        self.granted
            .values()
            .max()
            .map(|at| *at + self.config.lease + limits::LEASE_MARGIN)
    }

    /// Whether the node holds no prepared transaction: used at shutdown to
    /// finish what is in flight before exiting.
    pub fn is_quiet(&self) -> bool {
        self.prepared.is_empty()
    }

    /// The outcomes of finished transactions this node remembers at `now`,
    /// for a clean stop to save and the next start to take back
    /// ([`Node::restore_outcomes`]); `None` when a stop now would not be
    /// clean: a transaction is still prepared (its write would be lost);
    /// the node restarted after a crash and is still amnesiac in a group it
    /// is a member of (a next start would trust data that may lack writes
    /// it acknowledged); or it restarted without its outcomes less than the
    /// outcome retention ago and was not copied into each of its groups
    /// since, so what it would save is not all it may have decided.
    pub fn outcomes_for_a_clean_stop(&self, now: Instant) -> Option<Vec<u8>> {
        let forgot_some = self.maps.rg.iter().any(|(rg, entry)| {
            entry.bricks.contains(&self.id)
                && (self.amnesiac_in(*rg) || self.forgot_transactions_in(now, Some(*rg)))
        });
        (self.is_quiet() && !forgot_some).then(|| self.outcomes.encode(now))
    }

    /// Takes back the outcomes a clean stop saved
    /// ([`Node::outcomes_for_a_clean_stop`]),
    /// less the `down` time since: with them, and no transaction prepared
    /// at the stop, this node forgot nothing a running brick would still
    /// remember, so it answers as one ("aborted" about a transaction it
    /// never saw, which fences a late prepare) instead of "unknown".
    pub fn restore_outcomes(
        &mut self,
        bytes: &[u8],
        now: Instant,
        down: Duration,
    ) -> Result<(), String> {
        self.outcomes =
            outcomes::Outcomes::decode(bytes, self.config.outcome_retention, now, down)?;
        self.forgot_outcomes_until = None;
        Ok(())
    }

    /// A client connection closed: forget what it was waiting for.
    pub fn connection_closed(&mut self, conn: ConnId) {
        let mut removed = 0;
        self.waiting_reads.retain(|_, waiters| {
            let before = waiters.len();
            waiters.retain(|(c, _)| *c != conn);
            removed += before - waiters.len();
            !waiters.is_empty()
        });
        self.waiting_reads_count -= removed;
        self.waiting_decisions.retain(|w| w.conn != conn);
        self.held_prepares.retain(|h| h.conn != conn);
        for exclusion in self.exclusions.values_mut() {
            exclusion.waiters.retain(|(c, _)| *c != conn);
        }
    }

    /// Does a bounded amount of background work: moves on every index that
    /// is growing, and compacts one partition that wants it. Returns
    /// whether more work remains.
    pub fn background_step(&mut self) -> bool {
        let mut more = false;
        for partition in self.partitions.values_mut() {
            if partition.index_growing() {
                more |= partition.grow_index_step(limits::INDEX_GROWTH_STEP_SLOTS);
            }
        }
        for partition in self.partitions.values_mut() {
            if partition.compaction_wanted() || partition.compaction_in_progress() {
                let status = partition.compact_step(limits::COMPACTION_STEP_BYTES);
                if matches!(status, CompactStatus::InProgress) {
                    more = true;
                }
                break;
            }
        }
        more
    }

    // ----------------------------------------------------------------------
    // Requests.

    /// Brings the index slot that `request` will read of its partition's
    /// store into the processor's cache, and returns where it looked: a
    /// batch of requests calls this for each, then
    /// [`Node::prefetch_record`] with each hint, then handles them, so the
    /// store key is built and hashed once for both steps (see
    /// [`Partition::prefetch_slot`]). Only a hint: it changes nothing.
    pub fn prefetch_slot(&self, request: &Request) -> Option<PrefetchHint> {
        let (partition, table, key) = match request {
            Request::Get {
                partition,
                table,
                key,
                ..
            }
            | Request::Prepare {
                partition,
                table,
                key,
                decide: true,
                ..
            } => (*partition, table.as_slice(), key.as_slice()),
            Request::Commit { txid, partition } => {
                let p = self.partitions.get(partition)?;
                let hash = crate::store::key_hash(&self.prepared.get(txid)?.store_key);
                p.prefetch_slot(hash);
                return Some(PrefetchHint {
                    partition: *partition,
                    hash,
                });
            }
            _ => return None,
        };
        let p = self.partitions.get(&partition)?;
        // The store key, built on the stack: a prefetch allocates nothing.
        // A request for a longer key, or with a table name that no table
        // can have (refused when handled), is not prefetched.
        let mut buf = [0u8; 128];
        if table.is_empty() || table.len() > u8::MAX as usize {
            return None;
        }
        let hash = crate::store::key_hash(write_store_key(&mut buf, table, key)?);
        p.prefetch_slot(hash);
        Some(PrefetchHint { partition, hash })
    }

    /// The second step of [`Node::prefetch_slot`]: brings the record the
    /// slot points to into the cache.
    pub fn prefetch_record(&self, hint: PrefetchHint) {
        if let Some(p) = self.partitions.get(&hint.partition) {
            p.prefetch_record(hint.hash);
        }
    }

    /// A request from a client or a peer, on connection `conn`.
    pub fn handle_request(
        &mut self,
        now: Instant,
        conn: ConnId,
        request_id: u64,
        request: Request,
    ) {
        self.note_time(now);
        let reply = match request {
            Request::Ping => Some(Reply::Pong),
            Request::GetMaps => Some(Reply::Maps(self.maps.encode())),
            Request::CreateTable { name } => Some(self.create_table(name)),
            Request::DestroyTable { name } => Some(self.destroy_table(name)),
            Request::Get {
                partition,
                fingerprint,
                table,
                key,
            } => self.get(now, conn, request_id, partition, fingerprint, &table, &key),
            Request::Prepare {
                txid, partition, ..
            } if self.writes_held(now, partition)
                && !self.prepared.contains_key(&txid)
                && self.held_prepares.len() < limits::HELD_PREPARES_MAX =>
            {
                // Held for a moment (a copy's last stretch, a vote): the
                // prepare waits here rather than the client backing off.
                self.held_prepares.push(HeldPrepare {
                    conn,
                    request_id,
                    request,
                    until: now + limits::PREPARE_HOLD_WAIT,
                });
                None
            }
            request @ Request::Prepare { .. } => {
                self.prepare_request(now, conn, request_id, request)
            }
            Request::Commit { txid, partition } => {
                self.decide_or_wait(now, conn, request_id, txid, partition, TxState::Committed)
            }
            Request::Abort { txid, partition } => {
                self.decide_or_wait(now, conn, request_id, txid, partition, TxState::Aborted)
            }
            Request::TxStatus { txid, partition } => {
                Some(Reply::TxState(self.status_for_peer(now, txid, partition)))
            }
            Request::Exclude { rg, epoch, brick } => {
                self.exclude(now, conn, request_id, rg, epoch, brick)
            }
            Request::PushMaps { maps } => Some(self.push_maps(now, &maps)),
            Request::LeaseRenew {
                rg,
                epoch,
                from,
                incarnation,
                blank,
            } => Some(self.grant_lease(now, rg, epoch, from, incarnation, blank)),
            Request::Stats => Some(Reply::Stats(self.stats(now))),
            Request::Capacity { partition } => Some(self.capacity_reply(partition)),
            request @ Request::CopyBegin { .. } => Some(self.copy_begin(now, request)),
            Request::CopyChunk {
                partition,
                offset,
                bytes,
                end,
            } => Some(self.copy_chunk(
                now,
                CopyChunkRef {
                    partition,
                    offset,
                    bytes: &bytes,
                    end,
                },
            )),
            request @ Request::CopyIndex { .. } => {
                let part = request.as_copy_index().expect("a CopyIndex request");
                Some(self.copy_index(now, part))
            }
            Request::CopyAbort { partition } => Some(self.copy_abort(partition)),
            Request::ConfigVote {
                rg,
                epoch,
                ballot,
                value,
            } => Some(self.config_vote(now, rg, epoch, ballot, value)),
            Request::PartitionChecksum { partition } => {
                Some(match self.partitions.get(&partition) {
                    Some(store) => {
                        let (crc, keys) = store.checksum();
                        Reply::Checksum { crc, keys }
                    }
                    None => error(
                        ErrorCode::NotReplica,
                        format!("{partition} is not held by {}", self.id),
                    ),
                })
            }
        };
        if let Some(reply) = reply {
            self.reply(conn, request_id, reply);
        }
    }

    /// [`Node::handle_request`] for a `CopyChunk` whose bytes are borrowed
    /// from the connection's read buffer (see
    /// `wire::FrameDecoder::next_frame_lending`): the same handling, without
    /// copying the chunk into a request first.
    pub fn handle_copy_chunk(
        &mut self,
        now: Instant,
        conn: ConnId,
        request_id: u64,
        chunk: CopyChunkRef<'_>,
    ) {
        self.note_time(now);
        let reply = self.copy_chunk(now, chunk);
        self.reply(conn, request_id, reply);
    }

    /// [`Node::handle_request`] for a `CopyIndex` whose bytes are borrowed
    /// from the connection's read buffer, as [`Node::handle_copy_chunk`]
    /// takes a chunk.
    pub fn handle_copy_index(
        &mut self,
        now: Instant,
        conn: ConnId,
        request_id: u64,
        part: CopyIndexRef<'_>,
    ) {
        self.note_time(now);
        let reply = self.copy_index(now, part);
        self.reply(conn, request_id, reply);
    }

    fn reply(&mut self, conn: ConnId, request_id: u64, reply: Reply) {
        self.transmits.push_back(Transmit::Reply {
            conn,
            request_id,
            reply,
        });
    }

    fn create_table(&mut self, name: Vec<u8>) -> Reply {
        if !self.save_if_kept_stale() {
            return error(ErrorCode::Internal, "cannot save votes".to_string());
        }
        if let Some(reason) = invalid_table_name(&name) {
            return error(ErrorCode::Malformed, reason.to_string());
        }
        if self.tables.contains(&name) {
            return error(
                ErrorCode::TableExists,
                format!("table {:?} exists", lossy(&name)),
            );
        }
        let marker = table_marker_key(&name);
        for (partition_id, partition) in self.partitions.iter_mut() {
            if let Err(e) = partition.put(&marker, &[]) {
                return store_error(*partition_id, e);
            }
        }
        self.tables.insert(name);
        Reply::Ok
    }

    fn destroy_table(&mut self, name: Vec<u8>) -> Reply {
        if !self.save_if_kept_stale() {
            return error(ErrorCode::Internal, "cannot save votes".to_string());
        }
        if !self.tables.contains(&name) {
            return error(
                ErrorCode::TableNotFound,
                format!("table {:?} does not exist", lossy(&name)),
            );
        }
        let prefix = store_key(&name, &[]);
        let marker = table_marker_key(&name);
        for (partition_id, partition) in self.partitions.iter_mut() {
            for key in partition.keys_with_prefix(&prefix) {
                if let Err(e) = partition.remove(&key) {
                    return store_error(*partition_id, e);
                }
            }
            if let Err(e) = partition.remove(&marker) {
                return store_error(*partition_id, e);
            }
        }
        self.tables.remove(&name);
        Reply::Ok
    }

    /// Checks that this node may serve `partition` for a caller whose
    /// fingerprint of it is `fingerprint`; returns the partition's group.
    fn check_route(&mut self, partition: PartitionId, fingerprint: u32) -> Result<RgId, Reply> {
        let Some(facts) = self.maps.route_facts(partition) else {
            log::warn!(
                "{}: request for {partition}, which is not a partition of the maps",
                self.id
            );
            return Err(Reply::Error(ErrorReply {
                code: ErrorCode::NotReplica,
                message: format!("{partition} is not a partition of the maps of {}", self.id),
                maps: Some(self.maps.encode()),
            }));
        };
        if facts.fingerprint != fingerprint {
            self.counters.fingerprint_mismatches += 1;
            return Err(Reply::Error(ErrorReply {
                code: ErrorCode::FingerprintMismatch,
                message: format!(
                    "{} routes {partition} differently; refresh the maps",
                    self.id
                ),
                maps: Some(self.maps.encode()),
            }));
        }
        if !facts.member || !self.partitions.contains_key(&partition) {
            log::warn!(
                "{}: request for {partition}, of which it holds no replica",
                self.id
            );
            return Err(Reply::Error(ErrorReply {
                code: ErrorCode::NotReplica,
                message: format!("{} holds no replica of {partition}", self.id),
                maps: Some(self.maps.encode()),
            }));
        }
        Ok(facts.rg)
    }

    /// After a crash the brick may have lost writes it acknowledged as a
    /// participant: it serves no group that has other members.
    /// So does a brick that started without the group's data (`blank_in`).
    fn amnesia_fence(&self, rg: RgId) -> Option<Reply> {
        let alone = self.maps.rg.get(rg).is_some_and(|e| e.bricks.len() == 1);
        let why = if alone {
            return None;
        } else if self.blank_in(rg) {
            "started without its data; it serves it once copied back, or once its partners show they hold none"
        } else if self.amnesiac_in(rg) {
            "restarted after a crash; it serves it again after recovery"
        } else {
            return None;
        };
        Some(error(
            ErrorCode::Restarted,
            format!("{} is not serving {rg}: it {why}", self.id),
        ))
    }

    fn check_table(&self, table: &[u8]) -> Result<(), Reply> {
        if self.tables.contains(table) {
            Ok(())
        } else {
            Err(error(
                ErrorCode::TableNotFound,
                format!("table {:?} does not exist", lossy(table)),
            ))
        }
    }

    /// Whether this node may answer reads for `rg` now: it is the only
    /// member, or it holds an unexpired lease from every other member.
    fn lease_valid(&self, now: Instant, rg: RgId) -> bool {
        let Some(entry) = self.maps.rg.get(rg) else {
            return false;
        };
        let Some(held) = self.held.get(&rg) else {
            return entry.bricks.len() == 1;
        };
        entry.bricks.iter().filter(|b| **b != self.id).all(|b| {
            held.epoch == entry.epoch && held.until.get(b).is_some_and(|until| *until > now)
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn get(
        &mut self,
        now: Instant,
        conn: ConnId,
        request_id: u64,
        partition: PartitionId,
        fingerprint: u32,
        table: &[u8],
        key: &[u8],
    ) -> Option<Reply> {
        self.counters.gets += 1;
        let rg = match self.check_route(partition, fingerprint) {
            Ok(rg) => rg,
            Err(reply) => return Some(reply),
        };
        // A brick that started without the group's data knows none of its
        // tables: "restarted" sends the client to another replica, where
        // "no such table" would be taken for an answer.
        if let Some(reply) = self.amnesia_fence(rg) {
            return Some(reply);
        }
        if let Err(reply) = self.check_table(table) {
            return Some(reply);
        }
        if !self.lease_valid(now, rg) {
            self.counters.fenced += 1;
            return Some(Reply::Error(ErrorReply {
                code: ErrorCode::Fenced,
                message: format!(
                    "{} holds no read lease for {rg}; try another replica",
                    self.id
                ),
                maps: None,
            }));
        }
        // The store key on the stack when it fits; the lock table is asked
        // only when it holds any lock.
        let mut buf = [0u8; 128];
        let skey = match write_store_key(&mut buf, table, key) {
            Some(skey) => std::borrow::Cow::Borrowed(skey),
            None => std::borrow::Cow::Owned(store_key(table, key)),
        };
        if self.locks.is_empty() {
            return Some(self.read_value(partition, &skey));
        }
        let hash = self.lock_hash(partition, &skey);
        if self.lock_holder(hash, partition, &skey).is_some() {
            if self.waiting_reads_count >= limits::WAITING_READS_MAX {
                return Some(error(
                    ErrorCode::Busy,
                    "too many reads waiting for locked keys".to_string(),
                ));
            }
            self.counters.reads_waited += 1;
            self.waiting_reads_count += 1;
            self.waiting_reads
                .entry((partition, skey.into_owned()))
                .or_default()
                .push((conn, request_id));
            return None;
        }
        Some(self.read_value(partition, &skey))
    }

    /// The hash of the lock on `store_key` in `partition`.
    fn lock_hash(&self, partition: PartitionId, store_key: &[u8]) -> u64 {
        self.lock_hasher.hash_one((partition, store_key))
    }

    /// The transaction holding the lock on `store_key` in `partition`,
    /// whose [`Node::lock_hash`] is `hash`.
    fn lock_holder(&self, hash: u64, partition: PartitionId, store_key: &[u8]) -> Option<TxId> {
        let prepared = &self.prepared;
        self.locks
            .find(hash, |&(h, txid)| {
                h == hash
                    && prepared
                        .get(&txid)
                        .is_some_and(|tx| tx.partition == partition && tx.store_key == store_key)
            })
            .map(|&(_, txid)| txid)
    }

    fn read_value(&self, partition: PartitionId, skey: &[u8]) -> Reply {
        match self.partitions.get(&partition).and_then(|p| p.get(skey)) {
            Some(value) => Reply::Value(value.to_vec()),
            None => Reply::NotFound,
        }
    }

    /// Votes on a prepare: `Voted` with the write held prepared, or a no
    /// vote. With `decide` (a `PrepareDecide`), a yes that this node may
    /// decide at once (see [`Node::decision_gate`]) commits straight away
    /// and answers `Committed` (see [`Node::commit_at_once`]); one whose
    /// decision must wait, or be refused, is held prepared as usual.
    #[allow(clippy::too_many_arguments)]
    fn prepare(
        &mut self,
        now: Instant,
        txid: TxId,
        partition: PartitionId,
        fingerprint: u32,
        table: &[u8],
        key: &[u8],
        write: Write,
        participants: Vec<BrickId>,
        decide: bool,
    ) -> Reply {
        self.counters.prepares += 1;
        if !self.save_if_kept_stale() {
            return error(ErrorCode::Internal, "cannot save votes".to_string());
        }
        if self.prepared.contains_key(&txid) {
            // A retransmitted prepare: the vote stands.
            return Reply::Voted;
        }
        if let Some(state) = self.outcomes.get(txid) {
            return error(
                ErrorCode::Refused,
                format!("transaction {} already {:?}", txid.0, state),
            );
        }
        let rg = match self.check_route(partition, fingerprint) {
            Ok(rg) => rg,
            Err(reply) => return reply,
        };
        if let Some(reply) = self.amnesia_fence(rg) {
            return reply;
        }
        if let Err(reply) = self.check_table(table) {
            return reply;
        }
        if !participants.contains(&self.id) {
            return error(
                ErrorCode::Malformed,
                format!("{} is not among the participants", self.id),
            );
        }
        if self.prepared.len() >= limits::PREPARED_MAX {
            return error(
                ErrorCode::Busy,
                "too many prepared transactions".to_string(),
            );
        }
        if self.copy_holds_writes(partition) {
            return error(
                ErrorCode::WritesHeld,
                format!("{partition} is finishing a recovery copy; retry shortly"),
            );
        }
        if self.membership_holds_writes(now, rg) {
            return error(
                ErrorCode::WritesHeld,
                format!("the membership of {rg} is changing; retry shortly"),
            );
        }
        // The store key on the stack when it fits: a write committed at
        // once copies it nowhere, a write held prepared once.
        let mut buf = [0u8; 128];
        let skey = match write_store_key(&mut buf, table, key) {
            Some(skey) => std::borrow::Cow::Borrowed(skey),
            None => std::borrow::Cow::Owned(store_key(table, key)),
        };
        let lock_hash = self.lock_hash(partition, &skey);
        if let Some(holder) = self.lock_holder(lock_hash, partition, &skey) {
            self.counters.lock_conflicts += 1;
            return error(
                ErrorCode::LockConflict,
                format!("key is locked by transaction {}", holder.0),
            );
        }
        let value_len = match &write {
            Write::Put(value) => value.len(),
            Write::Remove => 0,
        };
        let store = self
            .partitions
            .get(&partition)
            .expect("checked by check_route");
        let reserved = self.reserved.get(&partition).copied().unwrap_or(0);
        if !store.can_fit_reserved(reserved, skey.len(), value_len) {
            return error(
                ErrorCode::PartitionFull,
                format!(
                    "{partition} on {} is full; remove keys or split the partition",
                    self.id
                ),
            );
        }
        if decide && self.gate(now, rg, &participants) == DecisionGate::Decide {
            self.commit_at_once(now, txid, partition, &skey, &write);
            return Reply::TxState(TxState::Committed);
        }
        self.hold_prepared(
            txid,
            PreparedTx {
                partition,
                rg,
                store_key: skey.into_owned(),
                lock_hash,
                write,
                participants,
                deadline: now + self.config.prepare_timeout,
                round: None,
            },
        );
        Reply::Voted
    }

    /// Commits a write that a `PrepareDecide` prepared and this node, its
    /// primary, may decide at once: what holding it prepared and then
    /// [`Node::decide`] would do, without entering it into the prepared
    /// transactions, the locks and the reserved room only to take it out
    /// again. [`Node::prepare`] made every check a prepare makes (no lock
    /// on the key, room for the write), so nothing else can have changed
    /// in between: no read waits for a key that was not locked, and a
    /// transaction that was not prepared here is not kept.
    fn commit_at_once(
        &mut self,
        now: Instant,
        txid: TxId,
        partition: PartitionId,
        store_key: &[u8],
        write: &Write,
    ) {
        debug_assert!(!self.membership.kept.contains(&txid));
        debug_assert!(!self
            .waiting_reads
            .contains_key(&(partition, store_key.to_vec())));
        self.apply_commit(txid, partition, store_key, write);
        self.remember(now, txid, TxState::Committed);
        if self.recovery.out.contains_key(&partition) {
            self.pump_copy(now, partition);
        }
        self.counters.commits += 1;
    }

    /// Writes a committed transaction's write to its partition's store.
    fn apply_commit(
        &mut self,
        txid: TxId,
        partition: PartitionId,
        store_key: &[u8],
        write: &Write,
    ) {
        let store = self
            .partitions
            .get_mut(&partition)
            .expect("prepared partition is held");
        let result = match write {
            Write::Put(value) => store.put(store_key, value),
            Write::Remove => store.remove(store_key).map(|_| ()),
        };
        // Prepare reserved room for the write and the key stayed locked
        // since, so a failure here is a bug; it is logged loudly rather
        // than taking the brick down with every other partition.
        if let Err(e) = result {
            log::error!(
                "{}: commit of transaction {} failed after a yes vote: {e}",
                self.id,
                txid.0
            );
        }
    }

    /// Holds a prepared write: its key locked, room reserved for it.
    fn hold_prepared(&mut self, txid: TxId, tx: PreparedTx) {
        let value_len = match &tx.write {
            Write::Put(value) => value.len(),
            Write::Remove => 0,
        };
        *self.reserved.entry(tx.partition).or_default() +=
            record_bytes(tx.store_key.len(), value_len);
        self.locks
            .insert_unique(tx.lock_hash, (tx.lock_hash, txid), |&(h, _)| h);
        self.prepared.insert(txid, tx);
    }

    /// A decision from the coordinator. Replies with the transaction's final
    /// state here, which differs from `decision` when this node decided
    /// first (as primary, after its timeout).
    /// Whether prepares for `partition` are held: the last stretch of a
    /// copy, or a vote on its group's membership.
    fn writes_held(&self, now: Instant, partition: PartitionId) -> bool {
        self.copy_holds_writes(partition)
            || self
                .maps
                .dp
                .rg_of(partition)
                .is_some_and(|rg| self.membership_holds_writes(now, rg))
    }

    /// Takes up prepares that waited for a hold to end: those whose hold
    /// ended, and those that waited `PREPARE_HOLD_WAIT` (refused then with
    /// `WritesHeld`, and the client backs off).
    pub(super) fn retry_held_prepares(&mut self, now: Instant) {
        if self.held_prepares.is_empty() {
            return;
        }
        let held = std::mem::take(&mut self.held_prepares);
        for h in held {
            let Request::Prepare { partition, .. } = h.request else {
                continue;
            };
            if now < h.until && self.writes_held(now, partition) {
                self.held_prepares.push(h);
                continue;
            }
            if let Some(reply) = self.prepare_request(now, h.conn, h.request_id, h.request) {
                self.reply(h.conn, h.request_id, reply);
            }
        }
    }

    /// A prepare, or (with `decide`) a prepare that, on a yes here,
    /// commits at once as the transaction's primary: every other
    /// participant voted yes before it was sent. The answer is `None` when
    /// the decision waits for a lease (it is sent later).
    fn prepare_request(
        &mut self,
        now: Instant,
        conn: ConnId,
        request_id: u64,
        request: Request,
    ) -> Option<Reply> {
        let Request::Prepare {
            txid,
            partition,
            fingerprint,
            table,
            key,
            write,
            participants,
            decide,
        } = request
        else {
            return Some(error(ErrorCode::Internal, "not a prepare".to_string()));
        };
        if decide {
            // Asked again (the first answer was lost), or resolved here
            // already (asked about by a participant that timed out): the
            // outcome stands.
            if let Some(state) = self.outcomes.get(txid) {
                return Some(Reply::TxState(state));
            }
            // Restarted, this brick may have committed the transaction
            // before its crash (and had it read) and forgotten it: a no
            // vote now would let the others abort what committed. It
            // cannot tell, so it says so; the caller has it removed and
            // decides with the next member, which voted yes. Alone in the
            // group, it is the group, and decides as usual.
            let shared = self
                .maps
                .dp
                .rg_of(partition)
                .and_then(|rg| self.maps.rg.get(rg))
                .is_some_and(|e| e.bricks.len() > 1);
            if shared && self.forgot_transactions(now, partition) {
                return Some(Reply::TxState(TxState::Unknown));
            }
        }
        let reply = self.prepare(
            now,
            txid,
            partition,
            fingerprint,
            &table,
            &key,
            write,
            participants,
            decide,
        );
        // A no vote is final: the transaction cannot commit without this
        // brick's yes, and ddslib numbers every attempt anew. Remembering
        // it as aborted lets this brick say so when the coordinator's abort
        // reaches it as primary, even after a restart made it unsure of
        // transactions it does not know (it would say "unknown", and the
        // caller would hear "outcome unknown" for a write that surely
        // failed).
        if matches!(reply, Reply::Error(_)) && self.outcomes.get(txid).is_none() {
            self.remember(now, txid, TxState::Aborted);
        }
        if decide && reply == Reply::Voted {
            let decided =
                self.decide_or_wait(now, conn, request_id, txid, partition, TxState::Committed);
            if let Some(Reply::Error(e)) = &decided {
                // Too many decisions wait for a lease already: the prepare
                // is withdrawn, so that the refusal is a no vote like any
                // other (a fenced primary stays prepared: the caller then
                // has it removed and decides with the next member).
                if e.code != ErrorCode::Fenced && self.prepared.contains_key(&txid) {
                    self.finish(now, txid, TxState::Aborted);
                }
            }
            return decided;
        }
        Some(reply)
    }

    /// A decision for a prepared transaction this node is the primary of
    /// waits while the node holds no lease for the group (just started,
    /// or after a stall): see [`Node::decision_fence`].
    fn decide_or_wait(
        &mut self,
        now: Instant,
        conn: ConnId,
        request_id: u64,
        txid: TxId,
        partition: PartitionId,
        decision: TxState,
    ) -> Option<Reply> {
        if self.decision_waits(now, txid) {
            if self.waiting_decisions.len() >= limits::PREPARED_MAX {
                return Some(error(
                    ErrorCode::Busy,
                    "too many decisions waiting for a lease".to_string(),
                ));
            }
            self.waiting_decisions.push(WaitingDecision {
                conn,
                request_id,
                txid,
                partition,
                decision,
                until: now + self.config.lease,
            });
            return None;
        }
        Some(self.decide(now, txid, partition, decision))
    }

    /// Whether this node may decide `txid` now (see `decision_fence`).
    fn decision_gate(&self, now: Instant, txid: TxId) -> DecisionGate {
        let Some(tx) = self.prepared.get(&txid) else {
            return DecisionGate::Decide;
        };
        self.gate(now, tx.rg, &tx.participants)
    }

    /// [`Node::decision_gate`] for a transaction of group `rg` among
    /// `participants`, prepared here or about to be.
    fn gate(&self, now: Instant, rg: RgId, participants: &[BrickId]) -> DecisionGate {
        let Some(entry) = self.maps.rg.get(rg) else {
            return DecisionGate::NotMember;
        };
        if !entry.bricks.contains(&self.id) {
            DecisionGate::NotMember
        } else if primary_among(&entry.bricks, participants) == Some(self.id)
            && !self.lease_valid(now, rg)
        {
            DecisionGate::NoLease
        } else {
            DecisionGate::Decide
        }
    }

    /// Whether a decision on `txid` must wait: this node is its primary,
    /// still a member, but holds no valid lease for the group.
    fn decision_waits(&self, now: Instant, txid: TxId) -> bool {
        self.decision_gate(now, txid) == DecisionGate::NoLease
    }

    /// Takes up the decisions that waited for a lease: those that may go
    /// on now, and those that waited too long (refused by
    /// `decision_fence`).
    fn retry_waiting_decisions(&mut self, now: Instant) {
        if self.waiting_decisions.is_empty() {
            return;
        }
        let waiting = std::mem::take(&mut self.waiting_decisions);
        for w in waiting {
            if now < w.until && self.decision_waits(now, w.txid) {
                self.waiting_decisions.push(w);
                continue;
            }
            let reply = self.decide(now, w.txid, w.partition, w.decision);
            self.reply(w.conn, w.request_id, reply);
        }
    }

    /// The primary's state is the transaction's outcome, so it decides only
    /// while it is sure to be a member: with a lease from every other
    /// member, no removal of it can have been decided (a brick that was
    /// paused may have been removed, and the group may have resolved the
    /// transaction without it). A brick removed from the group decides
    /// nothing for it: the caller, whose maps are stale, learns the group's.
    fn decision_fence(&self, now: Instant, txid: TxId) -> Option<Reply> {
        let why = match self.decision_gate(now, txid) {
            DecisionGate::Decide => return None,
            DecisionGate::NoLease => "it holds no lease for the group",
            DecisionGate::NotMember => "it is no longer a member",
        };
        let rg = self.prepared.get(&txid)?.rg;
        log::info!(
            "{}: refusing the decision on transaction {}: {why}",
            self.id,
            txid.0
        );
        Some(Reply::Error(ErrorReply {
            code: ErrorCode::Fenced,
            message: format!(
                "{} is not a member of {rg} or holds no lease for it; it cannot decide",
                self.id
            ),
            maps: Some(self.maps.encode()),
        }))
    }

    fn decide(
        &mut self,
        now: Instant,
        txid: TxId,
        partition: PartitionId,
        decision: TxState,
    ) -> Reply {
        if self.prepared.contains_key(&txid) {
            if let Some(reply) = self.decision_fence(now, txid) {
                return reply;
            }
            self.finish(now, txid, decision);
            match decision {
                TxState::Committed => self.counters.commits += 1,
                _ => self.counters.aborts += 1,
            }
            return Reply::TxState(decision);
        }
        if let Some(state) = self.outcomes.get(txid) {
            return Reply::TxState(state);
        }
        if self.forgot_transactions(now, partition) {
            // Perhaps prepared before the restart: this brick cannot tell.
            return Reply::TxState(TxState::Unknown);
        }
        // Never prepared here: it can only end as aborted at this brick, and
        // saying so fences a late prepare.
        self.remember(now, txid, TxState::Aborted);
        Reply::TxState(TxState::Aborted)
    }

    /// What this node tells a peer that asks about `txid`.
    fn status_for_peer(&mut self, now: Instant, txid: TxId, partition: PartitionId) -> TxState {
        if self.prepared.contains_key(&txid) {
            return TxState::Prepared;
        }
        if let Some(state) = self.outcomes.get(txid) {
            return state;
        }
        if self.forgot_transactions(now, partition) {
            return TxState::Unknown;
        }
        self.remember(now, txid, TxState::Aborted);
        TxState::Aborted
    }

    /// Applies the outcome of a prepared transaction, releases its lock and
    /// answers the reads that waited for it.
    fn finish(&mut self, now: Instant, txid: TxId, outcome: TxState) {
        let partition = self.release(now, txid, Some(outcome));
        self.remember(now, txid, outcome);
        if self.recovery.out.contains_key(&partition) {
            self.pump_copy(now, partition);
        }
    }

    /// Drops a prepared transaction this node is no longer part of (its
    /// group went on without it), without applying it or recording an
    /// outcome.
    fn forget_prepared(&mut self, now: Instant, txid: TxId) {
        self.release(now, txid, None);
    }

    /// Removes a prepared transaction, applies it if `outcome` is a commit,
    /// releases its lock and answers the reads that waited for it. Returns
    /// its partition.
    fn release(&mut self, now: Instant, txid: TxId, outcome: Option<TxState>) -> PartitionId {
        let tx = self
            .prepared
            .remove(&txid)
            .expect("finish of a prepared transaction");
        self.unkeep(txid, outcome == Some(TxState::Committed));
        let partition = tx.partition;
        let value_len = match &tx.write {
            Write::Put(value) => value.len(),
            Write::Remove => 0,
        };
        if let Some(reserved) = self.reserved.get_mut(&tx.partition) {
            *reserved = reserved.saturating_sub(record_bytes(tx.store_key.len(), value_len));
        }
        if outcome == Some(TxState::Committed) {
            self.apply_commit(txid, tx.partition, &tx.store_key, &tx.write);
        }
        // Each prepared transaction holds one lock: its entry is found by
        // its id.
        if let Ok(entry) = self.locks.find_entry(tx.lock_hash, |&(_, t)| t == txid) {
            entry.remove();
        }
        if self.waiting_reads.is_empty() {
            return partition;
        }
        let lock_key = (tx.partition, tx.store_key);
        if let Some(waiters) = self.waiting_reads.remove(&lock_key) {
            self.waiting_reads_count -= waiters.len();
            // The group may have changed while the reads waited: they are
            // answered only if this node may still serve them.
            let member = self
                .maps
                .rg
                .get(tx.rg)
                .is_some_and(|e| e.bricks.contains(&self.id));
            let reply = if member && self.lease_valid(now, tx.rg) {
                self.read_value(lock_key.0, &lock_key.1)
            } else {
                Reply::Error(ErrorReply {
                    code: ErrorCode::Fenced,
                    message: format!(
                        "{} lost its read lease for {} while the read waited",
                        self.id, tx.rg
                    ),
                    maps: Some(self.maps.encode()),
                })
            };
            for (conn, request_id) in waiters {
                self.reply(conn, request_id, reply.clone());
            }
        }
        partition
    }

    fn remember(&mut self, now: Instant, txid: TxId, state: TxState) {
        self.outcomes.insert(now, txid, state);
    }

    /// The transaction's primary: the first participant still in its group.
    fn primary_of(&self, tx: &PreparedTx) -> Option<BrickId> {
        let entry = self.maps.rg.get(tx.rg)?;
        primary_among(&entry.bricks, &tx.participants)
    }

    // ----------------------------------------------------------------------
    // Membership.

    /// The member of `rg` that decides the removal of `brick`: the first
    /// member other than `brick`.
    fn exclusion_leader(&self, rg: RgId, brick: BrickId) -> Option<BrickId> {
        let entry = self.maps.rg.get(rg)?;
        entry.bricks.iter().copied().find(|b| *b != brick)
    }

    fn exclude(
        &mut self,
        now: Instant,
        conn: ConnId,
        request_id: u64,
        rg: RgId,
        epoch: u64,
        brick: BrickId,
    ) -> Option<Reply> {
        let Some(entry) = self.maps.rg.get(rg) else {
            return Some(error(
                ErrorCode::Refused,
                format!("{rg} is not in the maps of {}", self.id),
            ));
        };
        if entry.epoch != epoch || !entry.bricks.contains(&brick) {
            // Someone changed the group already: the caller catches up.
            return Some(Reply::Maps(self.maps.encode()));
        }
        if self.exclusion_leader(rg, brick) != Some(self.id)
            || self.decides_nothing_in(rg)
            || now < self.stalled_until
        {
            return Some(error(
                ErrorCode::Refused,
                format!("{} does not lead the removal of {brick} from {rg}", self.id),
            ));
        }
        self.start_exclusion(now, rg, brick, true);
        if let Some(exclusion) = self.exclusions.get_mut(&(rg, brick)) {
            if exclusion.waiters.len() < limits::EXCLUSION_WAITERS_MAX {
                exclusion.waiters.push((conn, request_id));
                return None;
            }
        }
        Some(error(
            ErrorCode::Busy,
            "too many callers waiting for this exclusion".to_string(),
        ))
    }

    /// Starts removing `brick` from `rg`. With `probe`, a live brick that
    /// answers the probe is kept; without, it is removed regardless (it
    /// restarted and lost state).
    fn start_exclusion(&mut self, now: Instant, rg: RgId, brick: BrickId, probe: bool) {
        if self.decides_nothing_in(rg) || now < self.stalled_until {
            // A brick that lost its state after a crash, or started without
            // the group's data, decides nothing.
            return;
        }
        if let Some(existing) = self.exclusions.get_mut(&(rg, brick)) {
            existing.probe &= probe;
            return;
        }
        self.keep_prepared_naming(brick, Some(rg));
        let epoch = self.maps.rg.get(rg).map_or(0, |e| e.epoch);
        if probe {
            log::info!(
                "{}: probing {brick} before removing it from {rg} at epoch {epoch}",
                self.id
            );
        } else {
            log::warn!(
                "{}: removing restarted {brick} from {rg} at epoch {epoch}",
                self.id
            );
        }
        self.exclusions.insert(
            (rg, brick),
            Exclusion {
                epoch,
                probe,
                probe_deadline: now
                    + if probe {
                        self.config.probe_timeout
                    } else {
                        Duration::ZERO
                    },
                probe_answered: false,
                proposed: false,
                probes_sent: u32::from(probe),
                waiters: Vec::new(),
            },
        );
        if probe {
            self.send_peer(brick, Request::Ping, PeerPending::Probe { rg, peer: brick });
        }
    }

    fn cancel_exclusion(&mut self, rg: RgId, brick: BrickId, reason: &str) {
        if let Some(exclusion) = self.exclusions.remove(&(rg, brick)) {
            log::info!("{}: not removing {brick} from {rg}: {reason}", self.id);
            for (conn, request_id) in exclusion.waiters {
                self.reply(
                    conn,
                    request_id,
                    error(ErrorCode::Refused, reason.to_string()),
                );
            }
        }
    }

    /// Installs exclusions whose probe went unanswered and whose leases ran
    /// out.
    fn advance_exclusions(&mut self, now: Instant) {
        self.finish_decided_exclusions();
        let keys: Vec<(RgId, BrickId)> = self.exclusions.keys().copied().collect();
        for (rg, brick) in keys {
            let exclusion = &self.exclusions[&(rg, brick)];
            if exclusion.probe_answered || now < exclusion.probe_deadline {
                continue;
            }
            let lease_end = self.granted.get(&(rg, brick)).map_or(now, |granted| {
                *granted + self.config.lease + limits::LEASE_MARGIN
            });
            if now < lease_end {
                // Wait until no lease granted to the brick can still be valid.
                self.exclusions
                    .get_mut(&(rg, brick))
                    .unwrap()
                    .probe_deadline = lease_end;
                continue;
            }
            let mut without = self
                .maps
                .rg
                .get(rg)
                .map_or(Vec::new(), |e| e.bricks.clone());
            without.retain(|b| *b != brick);
            if without.is_empty() {
                log::warn!(
                    "{}: not removing {brick} from {rg}: it is the last member",
                    self.id
                );
                self.cancel_exclusion(rg, brick, "the last member of a group stays");
                continue;
            }
            // Decided by a vote among the bricks; the exclusion ends when
            // the group's epoch moves, whatever the vote decides. Until
            // then it is looked at again once per probe timeout.
            self.propose(now, rg, membership::Purpose::Remove(brick), Some(without));
            if let Some(exclusion) = self.exclusions.get_mut(&(rg, brick)) {
                exclusion.probe_deadline = now + self.config.probe_timeout;
                exclusion.proposed = true;
            }
        }
    }

    /// Exclusions whose group moved to another epoch are over, whatever
    /// the vote decided: their callers get the maps at once.
    fn finish_decided_exclusions(&mut self) {
        let done: Vec<(RgId, BrickId)> = self
            .exclusions
            .iter()
            .filter(|((rg, brick), exclusion)| {
                let current = self
                    .maps
                    .rg
                    .get(*rg)
                    .map(|e| (e.epoch, e.bricks.contains(brick)));
                current != Some((exclusion.epoch, true))
            })
            .map(|(key, _)| *key)
            .collect();
        for (rg, brick) in done {
            self.finish_exclusion(rg, brick);
        }
    }

    fn finish_exclusion(&mut self, rg: RgId, brick: BrickId) {
        if let Some(exclusion) = self.exclusions.remove(&(rg, brick)) {
            let maps = self.maps.encode();
            for (conn, request_id) in exclusion.waiters {
                self.reply(conn, request_id, Reply::Maps(maps.clone()));
            }
        }
    }

    /// Sends the maps to every brick of the cluster, members of no group
    /// included: they vote on memberships and answer clients too.
    fn push_maps_to_all(&mut self) {
        let maps = self.maps.encode();
        for brick in self.config.bricks.clone() {
            if brick != self.id {
                self.send_peer(
                    brick,
                    Request::PushMaps { maps: maps.clone() },
                    PeerPending::PushMaps,
                );
            }
        }
    }

    fn push_maps(&mut self, now: Instant, bytes: &[u8]) -> Reply {
        match Maps::decode(bytes) {
            Ok(other) => {
                if self.maps.change().merge_newer(&other) {
                    log::info!("{}: took newer maps from a peer", self.id);
                    self.maps_changed(now);
                }
                Reply::Ok
            }
            Err(e) => error(ErrorCode::Malformed, format!("maps do not decode: {e}")),
        }
    }

    /// After the maps changed: leases of old epochs are void, and copies
    /// of groups that changed are abandoned.
    fn maps_changed(&mut self, now: Instant) {
        // Before the maps: a crash between the two saves must not leave a
        // membership without a participant and its write forgotten.
        self.keep_prepared_for_maps();
        if let Err(e) = self.config.storage.save_maps(&self.maps.encode()) {
            log::error!("{}: cannot save its maps: {e}", self.id);
        }
        let maps = &self.maps;
        self.held
            .retain(|rg, held| maps.rg.get(*rg).is_some_and(|e| e.epoch == held.epoch));
        self.fence_removed(now);
        self.ensure_member_partitions();
        self.note_members(now);
        self.proposals_after_maps_change();
        self.finish_decided_exclusions();
        self.retry_waiting_decisions(now);
        self.retry_held_prepares(now);
    }

    /// A member that learns an epoch removing a brick takes no prepare in
    /// the group until every lease it granted that brick has run out: the
    /// removed brick must not serve a read that a write at the new epoch
    /// makes stale, whoever decided the removal.
    fn fence_removed(&mut self, now: Instant) {
        let mut fences = Vec::new();
        for (rg, entry) in self.maps.rg.iter() {
            if !entry.bricks.contains(&self.id) {
                continue;
            }
            let Some(old) = self.recovery_members(*rg) else {
                continue;
            };
            for gone in old.iter().filter(|b| !entry.bricks.contains(b)) {
                if let Some(granted) = self.granted.get(&(*rg, *gone)) {
                    let until = *granted + self.config.lease + limits::LEASE_MARGIN;
                    if until > now {
                        fences.push((*rg, until));
                    }
                }
            }
        }
        for (rg, until) in fences {
            let fence = self.membership.write_fence.entry(rg).or_insert(until);
            *fence = (*fence).max(until);
        }
        self.membership.write_fence.retain(|_, until| *until > now);
    }

    fn grant_lease(
        &mut self,
        now: Instant,
        rg: RgId,
        epoch: u64,
        from: BrickId,
        incarnation: u64,
        blank: Option<wire::Digest>,
    ) -> Reply {
        let Some(entry) = self.maps.rg.get(rg) else {
            return error(
                ErrorCode::Fenced,
                format!("{rg} is not in the maps of {}", self.id),
            );
        };
        if entry.epoch != epoch || !entry.bricks.contains(&from) || !entry.bricks.contains(&self.id)
        {
            if epoch > entry.epoch {
                // The asker knows a newer epoch; it will push its maps.
                return error(
                    ErrorCode::FingerprintMismatch,
                    format!("{} is behind on {rg}", self.id),
                );
            }
            return Reply::Error(ErrorReply {
                code: ErrorCode::Fenced,
                message: format!("{from} is not a member of {rg} at epoch {}", entry.epoch),
                maps: Some(self.maps.encode()),
            });
        }
        self.note_peer_blank(now, (rg, epoch, from), blank);
        // After the epoch check: "restarted" then also says that this
        // brick is a member at the asker's epoch, which is what a group
        // whose members all crashed needs to know (`revive_crashed_groups`).
        if let Some(reply) = self.amnesia_fence(rg) {
            return reply;
        }
        if self.exclusions.contains_key(&(rg, from)) || self.voted_out(rg, from) {
            return error(
                ErrorCode::Fenced,
                format!("{from} is being removed from {rg}"),
            );
        }
        if blank.is_some_and(|digest| self.lacks_data_held_here(rg, digest)) {
            // The asker lost the group's data (an emptied data folder) while
            // this brick kept it: it must be copied back, not served from.
            // Once the difference outlasts a renewal interval: in a new
            // cluster a table created at one member a moment before the
            // other makes their digests differ for that moment, and removing
            // a member for it costs a copy (and, should the other lose its
            // disk meanwhile, the group's data).
            let lasted =
                recovery::held_for(&mut self.recovery.blank_mismatch_since, (rg, from), now);
            if lasted >= self.config.lease / 4 && self.exclusion_leader(rg, from) == Some(self.id) {
                self.start_exclusion(now, rg, from, false);
            }
            return error(
                ErrorCode::Fenced,
                format!(
                    "{from} started without the data of {rg}, which {} holds: it is removed and copied back",
                    self.id
                ),
            );
        }
        self.recovery.blank_mismatch_since.remove(&(rg, from));
        let known = *self
            .peer_incarnations
            .entry((rg, epoch, from))
            .or_insert(incarnation);
        if known != incarnation {
            // The peer restarted within this epoch and may have lost prepared
            // writes: it must not serve reads until it has recovered.
            if self.exclusion_leader(rg, from) == Some(self.id) {
                self.start_exclusion(now, rg, from, false);
            }
            return error(
                ErrorCode::Fenced,
                format!("{from} restarted within epoch {epoch} of {rg}"),
            );
        }
        self.granted.insert((rg, from), now);
        Reply::Lease {
            duration_ms: self.config.lease.as_millis() as u32,
        }
    }

    // ----------------------------------------------------------------------
    // Peer replies and timers.

    fn send_peer(&mut self, peer: BrickId, request: Request, pending: PeerPending) {
        let request_id = self.peer_request_id(pending);
        self.transmits.push_back(Transmit::Peer {
            peer,
            request_id,
            request,
        });
    }

    /// A fresh id for a request to a peer, whose reply `pending` waits for.
    fn peer_request_id(&mut self, pending: PeerPending) -> u64 {
        let request_id = self.next_request_id;
        self.next_request_id += 1;
        self.peer_pending.insert(request_id, pending);
        request_id
    }

    /// A reply to a request this node sent to `peer`.
    pub fn handle_peer_reply(
        &mut self,
        now: Instant,
        peer: BrickId,
        request_id: u64,
        reply: Reply,
    ) {
        self.note_time(now);
        let Some(pending) = self.peer_pending.remove(&request_id) else {
            log::debug!(
                "{}: reply from {peer} to unknown request {request_id}",
                self.id
            );
            return;
        };
        match pending {
            PeerPending::Lease {
                rg,
                epoch,
                peer,
                sent_at,
            } => self.lease_reply(now, rg, epoch, peer, sent_at, reply),
            PeerPending::Probe { rg, peer } => {
                if matches!(reply, Reply::Pong) {
                    self.last_heard.insert((rg, peer), now);
                    if let Some(exclusion) = self.exclusions.get_mut(&(rg, peer)) {
                        if exclusion.probe && !exclusion.proposed {
                            exclusion.probe_answered = true;
                            self.cancel_exclusion(
                                rg,
                                peer,
                                &format!("{peer} answered a probe; it is alive"),
                            );
                        } else if exclusion.probe {
                            log::info!(
                                "{}: {peer} answered a probe after its removal from {rg} was put to the vote; the removal goes on",
                                self.id
                            );
                        }
                    }
                }
            }
            PeerPending::TxStatus { txid, peer } => {
                let state = match reply {
                    Reply::TxState(state) => Some(state),
                    _ => None,
                };
                self.status_reply(now, txid, peer, state);
            }
            PeerPending::PushMaps | PeerPending::CopyAbort => {}
            PeerPending::FetchMaps => {
                if let Reply::Maps(bytes) = reply {
                    self.push_maps(now, &bytes);
                }
            }
            PeerPending::Capacity { rg, peer } => {
                let held = match reply {
                    Reply::Capacity {
                        held_bytes,
                        holds_partition,
                    } => Some((held_bytes, holds_partition)),
                    _ => None,
                };
                self.capacity_answer(now, rg, peer, held);
            }
            PeerPending::CopyBegin {
                partition, session, ..
            } => self.copy_ready(now, partition, session, reply),
            PeerPending::CopyChunk {
                partition, session, ..
            } => self.copy_acked(now, partition, session, reply),
            PeerPending::ConfigVote {
                rg,
                epoch,
                ballot,
                peer,
            } => self.vote_answer(now, peer, rg, epoch, ballot, reply),
        }
    }

    fn lease_reply(
        &mut self,
        now: Instant,
        rg: RgId,
        epoch: u64,
        peer: BrickId,
        sent_at: Instant,
        reply: Reply,
    ) {
        match reply {
            Reply::Lease { duration_ms } => {
                self.last_heard.insert((rg, peer), now);
                let held = self.held.entry(rg).or_default();
                if held.epoch != epoch {
                    held.epoch = epoch;
                    held.until.clear();
                }
                let duration = Duration::from_millis(u64::from(duration_ms)).min(self.config.lease);
                // Counted from the send time, so the lease here ends no later
                // than the grant at the peer.
                held.until.insert(peer, sent_at + duration);
                self.note_empty_peer(rg, epoch, peer);
                self.retry_waiting_decisions(now);
            }
            Reply::Error(e) if e.code == ErrorCode::Restarted => {
                self.last_heard.insert((rg, peer), now);
                self.note_amnesiac_peer(rg, epoch, peer);
                // A peer that started without data, as this node did, or
                // whose data this node does not hold either, is not removed
                // for it: the group's members find that none of them holds
                // any (`note_peer_blank`). Until a renewal of the peer says
                // which it is, it is not removed either, for a lease period
                // at most: a blank brick answers "restarted" too, and in a
                // new cluster its first renewal may still be on its way.
                let blank_and_harmless = match self.peer_renewal_at(rg, epoch, peer) {
                    None => {
                        recovery::held_for(&mut self.recovery.restarted_unheard, (rg, peer), now)
                            < self.config.lease
                    }
                    Some(None) => false,
                    Some(Some(digest)) => !self.lacks_data_held_here(rg, digest),
                };
                if self
                    .maps
                    .rg
                    .get(rg)
                    .is_some_and(|en| en.epoch == epoch && en.bricks.contains(&peer))
                    && self.exclusion_leader(rg, peer) == Some(self.id)
                    && !blank_and_harmless
                {
                    self.start_exclusion(now, rg, peer, false);
                }
            }
            Reply::Error(e) => {
                self.last_heard.insert((rg, peer), now);
                if let Some(bytes) = e.maps {
                    if let Ok(other) = Maps::decode(&bytes) {
                        if self.maps.change().merge_newer(&other) {
                            self.maps_changed(now);
                        }
                    }
                }
                if e.code == ErrorCode::FingerprintMismatch {
                    let maps = self.maps.encode();
                    self.send_peer(peer, Request::PushMaps { maps }, PeerPending::PushMaps);
                }
            }
            _ => {}
        }
    }

    /// Every request this node had outstanding at `peer` is lost (the
    /// connection broke or could not be made).
    pub fn handle_peer_unreachable(&mut self, now: Instant, peer: BrickId) {
        self.keep_prepared_naming(peer, None);
        let lost: Vec<u64> = self
            .peer_pending
            .iter()
            .filter(|(_, p)| match p {
                PeerPending::Lease { peer: p, .. }
                | PeerPending::Probe { peer: p, .. }
                | PeerPending::TxStatus { peer: p, .. }
                | PeerPending::Capacity { peer: p, .. }
                | PeerPending::CopyBegin { peer: p, .. }
                | PeerPending::CopyChunk { peer: p, .. }
                | PeerPending::ConfigVote { peer: p, .. } => *p == peer,
                PeerPending::PushMaps | PeerPending::FetchMaps | PeerPending::CopyAbort => false,
            })
            .map(|(id, _)| *id)
            .collect();
        for request_id in lost {
            match self.peer_pending.remove(&request_id) {
                Some(PeerPending::TxStatus { txid, peer }) => {
                    self.status_reply(now, txid, peer, None)
                }
                Some(PeerPending::Capacity { rg, peer }) => {
                    self.capacity_answer(now, rg, peer, None)
                }
                Some(
                    PeerPending::CopyBegin {
                        partition, session, ..
                    }
                    | PeerPending::CopyChunk {
                        partition, session, ..
                    },
                ) => self.copy_peer_lost(partition, session),
                Some(PeerPending::Probe { rg, peer }) => {
                    // A broken connection is not an unanswered probe: ask
                    // again on a new one while there is time.
                    if let Some(exclusion) = self.exclusions.get_mut(&(rg, peer)) {
                        if exclusion.probe
                            && now < exclusion.probe_deadline
                            && exclusion.probes_sent < limits::PROBES_MAX
                        {
                            exclusion.probes_sent += 1;
                            self.send_peer(peer, Request::Ping, PeerPending::Probe { rg, peer });
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// The driver calls this when `poll_timeout` has passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.note_time(now);
        self.outcomes.expire(now);
        let tick = now >= self.next_renewal;
        if tick {
            self.next_renewal = now + self.config.renew_interval();
            self.renew_leases(now);
            self.watch_peers(now);
        }
        self.advance_exclusions(now);
        self.membership_tick(now);
        self.retry_waiting_decisions(now);
        self.retry_held_prepares(now);
        self.resolve_transactions(now);
        self.heal_tick(now, tick);
    }

    fn member_groups(&self) -> Vec<(RgId, u64, Vec<BrickId>)> {
        self.maps
            .rg
            .iter()
            .filter(|(_, entry)| entry.bricks.contains(&self.id))
            .map(|(rg, entry)| (*rg, entry.epoch, entry.bricks.clone()))
            .collect()
    }

    fn renew_leases(&mut self, now: Instant) {
        for (rg, epoch, bricks) in self.member_groups() {
            let me = self.id;
            for peer in bricks.into_iter().filter(|b| *b != me) {
                self.renew_lease(now, rg, epoch, peer);
            }
        }
        // Requests that were never answered are dropped after a while so
        // the table stays bounded.
        if self.peer_pending.len() > limits::PEER_PENDING_MAX {
            let cutoff = now.checked_sub(self.config.lease * 4);
            self.peer_pending.retain(|_, p| match p {
                PeerPending::Lease { sent_at, .. } => cutoff.is_none_or(|c| *sent_at > c),
                _ => true,
            });
        }
    }

    pub(super) fn renew_lease(&mut self, now: Instant, rg: RgId, epoch: u64, peer: BrickId) {
        let request = Request::LeaseRenew {
            rg,
            epoch,
            from: self.id,
            incarnation: self.config.incarnation,
            blank: self.blank_digest(rg),
        };
        self.last_heard.entry((rg, peer)).or_insert(now);
        self.send_peer(
            peer,
            request,
            PeerPending::Lease {
                rg,
                epoch,
                peer,
                sent_at: now,
            },
        );
    }

    /// Notices a stall of this node (SIGSTOP, or a starved process): the
    /// driver calls it at least once per renewal interval, so a longer gap
    /// means the node was not running. After one it leads no removal for a
    /// lease period and fetches every peer's maps, since the group may have
    /// removed it meanwhile.
    fn note_time(&mut self, now: Instant) {
        if now == self.last_active {
            // The requests of one batch share their time: one check does.
            return;
        }
        let gap = now.saturating_duration_since(self.last_active);
        self.last_active = now;
        if gap <= self.config.renew_interval() * 2 {
            return;
        }
        log::info!(
            "{}: stalled for {gap:?}; catching up with its peers",
            self.id
        );
        self.stalled_until = now + self.config.lease;
        for heard in self.last_heard.values_mut() {
            *heard = now;
        }
        // What this node saw before the stall is stale: a removal it was
        // driving starts over if the peer is still silent.
        let driving: Vec<(RgId, BrickId)> = self.exclusions.keys().copied().collect();
        for (rg, brick) in driving {
            self.cancel_exclusion(rg, brick, "this brick stalled while removing it");
        }
        let me = self.id;
        for brick in self.maps.bricks().into_iter().filter(|b| *b != me) {
            self.send_peer(brick, Request::GetMaps, PeerPending::FetchMaps);
        }
    }

    /// Starts removing peers that stopped answering, where this node leads
    /// their removal.
    fn watch_peers(&mut self, now: Instant) {
        // Silence counts only while this node was running: after a stall
        // (SIGSTOP, or a starved process) every peer gets a fresh chance,
        // or a resumed brick would try to remove the peers that removed it.
        let stalled = now.duration_since(self.last_watch) > self.config.renew_interval() * 2;
        self.last_watch = now;
        if stalled {
            log::info!(
                "{}: resumed after a stall; peers' silence is measured afresh",
                self.id
            );
            for heard in self.last_heard.values_mut() {
                *heard = now;
            }
            return;
        }
        for (rg, _, bricks) in self.member_groups() {
            if self.decides_nothing_in(rg) {
                continue;
            }
            let me = self.id;
            for peer in bricks.iter().copied().filter(|b| *b != me) {
                let heard = self.last_heard.get(&(rg, peer)).copied().unwrap_or(now);
                if now.duration_since(heard) > self.config.silence_limit()
                    && self.exclusion_leader(rg, peer) == Some(self.id)
                {
                    self.start_exclusion(now, rg, peer, true);
                }
            }
        }
    }

    fn resolve_transactions(&mut self, now: Instant) {
        let mut due: Vec<TxId> = self
            .prepared
            .iter()
            .filter(|(_, tx)| tx.deadline <= now)
            .map(|(txid, _)| *txid)
            .collect();
        // In id order, so that a seeded run replays exactly.
        due.sort_unstable();
        for txid in due {
            self.counters.resolutions += 1;
            let tx = &self.prepared[&txid];
            let primary = self.primary_of(tx);
            let partition = tx.partition;
            let asked: Vec<BrickId> = if primary == Some(self.id) {
                let entry = self.maps.rg.get(tx.rg);
                tx.participants
                    .iter()
                    .copied()
                    .filter(|b| *b != self.id && entry.is_some_and(|e| e.bricks.contains(b)))
                    .collect()
            } else {
                primary.into_iter().collect()
            };
            log::info!(
                "{}: transaction {} outlived its coordinator's silence; asking {:?}",
                self.id,
                txid.0,
                asked
            );
            if asked.is_empty() {
                // The primary is alone in the group: every other participant
                // was removed, so its own yes vote is the whole group's.
                self.finish(now, txid, TxState::Committed);
                continue;
            }
            let tx = self.prepared.get_mut(&txid).unwrap();
            // If some answer never comes, the round starts over then.
            tx.deadline = now + self.config.prepare_timeout;
            tx.round = Some(Box::new(StatusRound {
                waiting: asked.iter().copied().collect(),
                any_aborted: false,
                any_committed: false,
            }));
            for peer in asked {
                self.send_peer(
                    peer,
                    Request::TxStatus { txid, partition },
                    PeerPending::TxStatus { txid, peer },
                );
            }
        }
    }

    /// A peer's answer about a transaction this node is resolving; `None`
    /// when the peer could not be asked.
    fn status_reply(&mut self, now: Instant, txid: TxId, peer: BrickId, state: Option<TxState>) {
        let is_primary = match self.prepared.get(&txid) {
            Some(tx) => self.primary_of(tx) == Some(self.id),
            None => return,
        };
        let tx = self.prepared.get_mut(&txid).unwrap();
        let Some(round) = tx.round.as_mut() else {
            return;
        };
        if !round.waiting.remove(&peer) {
            return;
        }
        match state {
            Some(TxState::Committed) => round.any_committed = true,
            Some(TxState::Aborted) => round.any_aborted = true,
            Some(TxState::Prepared) => {}
            // A peer that cannot tell (it restarted after a crash) or could
            // not be asked: try again later; by then it may be removed from
            // the group and not asked at all.
            Some(TxState::Unknown) | None => {
                // Could not ask: try again later (the peer may be removed
                // from the group meanwhile, and then it is not asked).
                tx.round = None;
                tx.deadline = now + self.config.prepare_timeout / 2;
                return;
            }
        }
        if !round.waiting.is_empty() {
            return;
        }
        let (any_aborted, any_committed) = (round.any_aborted, round.any_committed);
        tx.round = None;
        let outcome = if any_committed {
            Some(TxState::Committed)
        } else if any_aborted {
            Some(TxState::Aborted)
        } else if is_primary {
            // Every participant is prepared, so every one voted yes.
            Some(TxState::Committed)
        } else {
            // The primary has not decided yet; ask again later.
            None
        };
        match outcome {
            Some(outcome) => {
                log::info!(
                    "{}: transaction {} resolved as {:?}",
                    self.id,
                    txid.0,
                    outcome
                );
                self.finish(now, txid, outcome);
            }
            None => tx.deadline = now + self.config.prepare_timeout / 2,
        }
    }

    fn stats(&self, now: Instant) -> Vec<(String, u64)> {
        let c = &self.counters;
        let mut out = vec![
            ("brick.id".to_string(), u64::from(self.id.0)),
            ("gets".to_string(), c.gets),
            ("prepares".to_string(), c.prepares),
            ("commits".to_string(), c.commits),
            ("aborts".to_string(), c.aborts),
            ("lock_conflicts".to_string(), c.lock_conflicts),
            (
                "fingerprint_mismatches".to_string(),
                c.fingerprint_mismatches,
            ),
            ("fenced_reads".to_string(), c.fenced),
            ("reads_waited".to_string(), c.reads_waited),
            ("exclusions".to_string(), c.exclusions),
            ("resolutions".to_string(), c.resolutions),
            ("prepared".to_string(), self.prepared.len() as u64),
            ("tables".to_string(), self.tables.len() as u64),
        ];
        self.recovery_stats(now, &mut out);
        self.membership_stats(&mut out);
        for (id, partition) in &self.partitions {
            let s = partition.stats();
            let p = id.0;
            out.push((format!("partition.{p}.keys"), s.keys));
            out.push((format!("partition.{p}.live_bytes"), s.live_bytes));
            out.push((format!("partition.{p}.dead_bytes"), s.dead_bytes));
            out.push((format!("partition.{p}.capacity_bytes"), s.capacity_bytes));
            out.push((format!("partition.{p}.compactions"), s.compactions));
        }
        out
    }
}

/// The first of `participants` that is one of the group's `members`.
fn primary_among(members: &[BrickId], participants: &[BrickId]) -> Option<BrickId> {
    participants.iter().copied().find(|b| members.contains(b))
}

fn error(code: ErrorCode, message: String) -> Reply {
    Reply::Error(ErrorReply {
        code,
        message,
        maps: None,
    })
}

fn store_error(partition: PartitionId, e: StoreError) -> Reply {
    match e {
        StoreError::Full { .. } => error(ErrorCode::PartitionFull, format!("{partition}: {e}")),
        other => error(ErrorCode::Internal, format!("{partition}: {other}")),
    }
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Why a table name is unusable, if it is.
pub fn invalid_table_name(name: &[u8]) -> Option<&'static str> {
    if name.is_empty() {
        Some("table name is empty")
    } else if name.len() > wire::limits::TABLE_NAME_SIZE_MAX {
        Some("table name is longer than 255 bytes")
    } else {
        None
    }
}
