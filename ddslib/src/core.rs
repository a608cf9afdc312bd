//! The library's protocol logic as a sans-IO state machine: routing, reads
//! spread over replicas, and the coordinator of two-phase commit.
//!
//! [`Core`] takes operations (`submit`), replies from bricks
//! (`handle_reply`), lost connections (`handle_unreachable`) and the passing
//! of time (`handle_timeout`), each with the current time, and produces
//! requests to send (`poll_transmit`), finished operations
//! (`poll_completion`) and its next deadline (`poll_timeout`). It does no
//! I/O and reads no clock: [`crate::Dds`] drives it with mio, and the
//! simulator drives it in tests.
//!
//! # A write, step by step
//!
//! 1. Route the key: hash → DP leaf → replica group → its bricks, and the
//!    partition's fingerprint.
//! 2. `Prepare` to every replica. Each locks the key without waiting and
//!    votes yes (`Voted`) or no (an error).
//! 3. Decide: commit iff every replica voted yes. Send the decision to the
//!    *primary* (the first participant still in the group) and wait for its
//!    answer: the primary's state is the transaction's outcome, and it may
//!    differ from the decision when the primary gave up on this coordinator
//!    and resolved the transaction with its peers first.
//! 4. Tell the caller: committed → done; aborted → the write did not happen
//!    anywhere, so it is retried after a jittered backoff.
//! 5. Send the outcome to the other participants. One that answers that it
//!    never prepared lost the write (it restarted): the library asks for its
//!    removal from the group.
//!
//! If the primary does not answer, the library asks the group's leader to
//! remove it, takes the new maps, and sends the decision to the new primary.
//! When the outcome cannot be learned within the retry budget the caller
//! gets [`DdsError::OutcomeUnknown`] rather than a guess.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Hash tables with a fast keyed hasher (the default one showed in
/// profiles of the request path).
type HashMap<K, V> = std::collections::HashMap<K, V, ahash::RandomState>;
use std::time::{Duration, Instant};

use maps::limits::REPLICAS_MAX;
use maps::{BrickId, Maps, PartitionId, RgId};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use wire::{ErrorCode, ErrorReply, PrepareRef, Reply, Request, TxId, TxState};

use crate::error::DdsError;
use crate::limits;

/// Names one submitted operation. A core numbers its operations 1, 2, 3...
/// in the order they are submitted, so an id is never given twice.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OpId(pub u64);

/// Where a live operation is: its slot in [`Ops`], and its id, which tells
/// it from an operation that held the slot before or holds it later. Timer
/// entries and queued prepares keep one, and find their operation by an
/// index and a comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct OpKey {
    slot: u32,
    id: OpId,
}

/// An operation on the hash table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Get {
        table: Vec<u8>,
        key: Vec<u8>,
    },
    Put {
        table: Vec<u8>,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Remove {
        table: Vec<u8>,
        key: Vec<u8>,
    },
    CreateTable {
        name: Vec<u8>,
    },
    DestroyTable {
        name: Vec<u8>,
    },
}

/// What a successful operation returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// The value of a `Get`; `None` if the key is absent.
    Value(Option<Vec<u8>>),
    /// A write or table operation took effect.
    Done,
}

/// Timing and retry budget of the library.
#[derive(Clone, Debug)]
pub struct CoreConfig {
    /// How long one request to one brick may take before it counts as lost.
    pub request_timeout: Duration,
    /// Attempts per operation (routing repairs, lock conflicts, replica
    /// changes) before it fails.
    pub retries_max: u32,
    /// First backoff after a conflict; doubled per attempt, with jitter.
    pub backoff_base: Duration,
    /// Seed for replica choice and backoff jitter.
    pub seed: u64,
    /// Test hook: stop every write after the other participants' votes are
    /// in, before the primary is asked to prepare and decide, so a test can
    /// kill the process between the two phases.
    pub halt_after_prepare: bool,
    /// Test-only, deliberately wrong: ask the primary to prepare and decide
    /// without waiting for the other participants' votes. The simulator
    /// must catch it.
    #[doc(hidden)]
    pub decide_without_votes: bool,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            request_timeout: Duration::from_millis(1000),
            retries_max: 8,
            backoff_base: Duration::from_millis(2),
            seed: 0,
            halt_after_prepare: false,
            decide_without_votes: false,
        }
    }
}

/// Where a key lives, as seen by this library's maps.
#[derive(Clone, Debug)]
struct Route {
    partition: PartitionId,
    rg: RgId,
    bricks: Replicas,
    fingerprint: u32,
}

/// A group's bricks, held inline: a group has at most `REPLICAS_MAX` of
/// them, and a write copies its route's bricks into each of its prepares,
/// which then allocate nothing for them.
#[derive(Clone, Copy, Debug)]
struct Replicas {
    len: u8,
    ids: [BrickId; REPLICAS_MAX],
}

impl Replicas {
    fn new(bricks: &[BrickId]) -> Replicas {
        let mut ids = [BrickId(0); REPLICAS_MAX];
        ids[..bricks.len()].copy_from_slice(bricks);
        Replicas {
            len: u8::try_from(bricks.len()).expect("REPLICAS_MAX fits in u8"),
            ids,
        }
    }
}

impl std::ops::Deref for Replicas {
    type Target = [BrickId];

    fn deref(&self) -> &[BrickId] {
        &self.ids[..usize::from(self.len)]
    }
}

#[derive(Debug)]
enum Phase {
    /// Waiting to (re)start after a backoff.
    Backoff,
    /// A read sent to `first`, then to each of `others` in turn (the last
    /// one asked is the one waited for). Nothing is allocated for a read
    /// answered by its first replica.
    Reading {
        first: BrickId,
        others: Vec<BrickId>,
    },
    /// Prepares sent; votes so far.
    Preparing(Prepare),
    /// The decision was sent to `primary`; waiting for the outcome.
    Deciding(Decide),
    /// Waiting for the group's leader to remove `brick`.
    Excluding(Decide),
    /// Table operations go to every brick; waiting for these.
    Broadcast {
        waiting: BTreeSet<BrickId>,
        first_error: Option<DdsError>,
    },
    /// Halted by the test hook.
    Halted,
}

impl Route {
    /// Where `brick` is in `bricks`.
    fn position(&self, brick: BrickId) -> Option<usize> {
        self.bricks.iter().position(|b| *b == brick)
    }
}

/// A request waiting to be sent.
enum Outgoing {
    Request(Request),
    /// A prepare, whose table, key and value stay in its operation until
    /// the driver encodes it ([`Core::poll_transmit_with`]).
    Prepare(PrepareHead),
}

/// A prepare's fields that are not its operation's bytes.
struct PrepareHead {
    op: OpKey,
    txid: TxId,
    partition: PartitionId,
    fingerprint: u32,
    participants: Replicas,
    decide: bool,
}

impl PrepareHead {
    fn new(op: OpKey, txid: TxId, route: &Route, decide: bool) -> PrepareHead {
        PrepareHead {
            op,
            txid,
            partition: route.partition,
            fingerprint: route.fingerprint,
            participants: route.bricks,
            decide,
        }
    }

    /// The prepare, its bytes lent by `op`; `None` unless `op` writes.
    fn lend<'a>(&'a self, op: &'a Op) -> Option<PrepareRef<'a>> {
        let (table, key, value) = match op {
            Op::Put { table, key, value } => (table, key, Some(value.as_slice())),
            Op::Remove { table, key } => (table, key, None),
            _ => return None,
        };
        Some(PrepareRef {
            txid: self.txid,
            partition: self.partition,
            fingerprint: self.fingerprint,
            table,
            key,
            value,
            participants: &self.participants[..],
            decide: self.decide,
        })
    }
}

/// A request handed to the driver by [`Core::poll_transmit_with`].
pub enum TransmitRef<'a> {
    Request(&'a Request),
    Prepare(PrepareRef<'a>),
}

impl TransmitRef<'_> {
    /// Appends its frame to `out`.
    pub fn encode(&self, request_id: u64, out: &mut Vec<u8>) {
        match self {
            TransmitRef::Request(request) => wire::encode_request(request_id, request, out),
            TransmitRef::Prepare(prepare) => wire::encode_prepare(request_id, prepare, out),
        }
    }
}

/// Some of a route's bricks, by their positions in `Route::bricks`: a
/// bit set, so that a write's votes allocate nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Positions(u32);

const _: () = assert!(maps::limits::REPLICAS_MAX <= u32::BITS as usize);

impl Positions {
    /// Positions `from..to`.
    fn range(from: usize, to: usize) -> Positions {
        Positions((from..to).fold(0, |bits, i| bits | 1 << i))
    }

    fn contains(self, i: usize) -> bool {
        self.0 & (1 << i) != 0
    }

    fn insert(&mut self, i: usize) {
        self.0 |= 1 << i;
    }

    /// Removes `i`; returns whether it was there.
    fn remove(&mut self, i: usize) -> bool {
        let was = self.contains(i);
        self.0 &= !(1 << i);
        was
    }

    fn is_empty(self) -> bool {
        self.0 == 0
    }
}

#[derive(Debug)]
struct Prepare {
    txid: TxId,
    route: Route,
    /// Positions in `route.bricks` that voted yes, and that have not voted.
    yes: Positions,
    no: Option<(BrickId, ErrorReply)>,
    waiting: Positions,
}

#[derive(Debug)]
struct Decide {
    txid: TxId,
    route: Route,
    decision: TxState,
    /// The first no vote, and from whom, to choose what happens next.
    abort_reason: Option<(BrickId, ErrorReply)>,
    /// The participant that holds the decision: the primary.
    target: BrickId,
    /// Whether the target has not prepared: it is then sent the
    /// prepare-and-decide instead of the decision, built from the
    /// operation when it is sent (see [`prepare_request`]).
    prepare: bool,
    stage: Stage,
    /// While a removal is requested: the leader asked, and whom it removes.
    leader: Option<(BrickId, BrickId)>,
    attempts: u32,
}

#[derive(Debug)]
enum Stage {
    /// Waiting for the primary's answer to the decision.
    Primary,
    /// The primary aborted; waiting for these members to abort too.
    Others(BTreeSet<BrickId>),
}

struct OpState {
    id: OpId,
    op: Op,
    phase: Phase,
    attempts: u32,
    deadline: Instant,
    /// Whether the last thing that went wrong was a request left
    /// unanswered, so that giving up says `Timeout` rather than
    /// `Unavailable`.
    timed_out: bool,
    /// The requests this operation waits for the replies to: a reply is
    /// taken only if its brick and request id are here.
    sent: Sent,
}

/// Requests kept inline by [`Sent`]: a read waits for one, a write for two
/// at most.
const SENT_INLINE: usize = 4;

/// The (brick, request id) of each request one operation still waits for,
/// in no particular order: the first few inline, so that an operation
/// allocates nothing for them, any more in `spill`. A request leaves the
/// list when it is answered, lost or forgotten.
#[derive(Debug)]
struct Sent {
    inline: [(BrickId, u64); SENT_INLINE],
    len: usize,
    spill: Vec<(BrickId, u64)>,
}

impl Sent {
    fn new() -> Sent {
        Sent {
            inline: [(BrickId(0), 0); SENT_INLINE],
            len: 0,
            spill: Vec::new(),
        }
    }

    fn push(&mut self, key: (BrickId, u64)) {
        if self.len < SENT_INLINE {
            self.inline[self.len] = key;
            self.len += 1;
        } else {
            self.spill.push(key);
        }
    }

    fn iter(&self) -> impl Iterator<Item = &(BrickId, u64)> {
        self.inline[..self.len].iter().chain(&self.spill)
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Removes `key`; returns whether it was there. The last request takes
    /// its place, so the inline ones stay a prefix.
    fn remove(&mut self, key: (BrickId, u64)) -> bool {
        if let Some(i) = self.spill.iter().position(|k| *k == key) {
            self.spill.swap_remove(i);
            return true;
        }
        let Some(i) = self.inline[..self.len].iter().position(|k| *k == key) else {
            return false;
        };
        match self.spill.pop() {
            Some(last) => self.inline[i] = last,
            None => {
                self.len -= 1;
                self.inline[i] = self.inline[self.len];
            }
        }
        true
    }

    fn clear(&mut self) {
        self.len = 0;
        self.spill.clear();
    }
}

/// Low bits of a request id: the slot of the operation that sent it, so that
/// a reply finds its operation by an index. The high bits count requests, so
/// that no two requests in flight share an id.
const SLOT_BITS: u32 = 24;
const SLOT_MASK: u64 = (1 << SLOT_BITS) - 1;
/// The slot part of the ids of requests that belong to no operation:
/// commits sent after the caller was answered, fetches and pushes of maps,
/// removals asked after a commit went astray.
const NO_SLOT: u64 = SLOT_MASK;
/// Operations in flight at once; the last slot number is [`NO_SLOT`].
const SLOTS_MAX: usize = NO_SLOT as usize;
/// Bits of the request count: request ids stay below 2^63, where the
/// driver's own ids start. The count wraps after 2^39 requests; an id then
/// given again is only taken for a request still awaited by the operation
/// in its slot, and no request is awaited for anywhere near that long.
const REQUEST_COUNT_BITS: u32 = 63 - SLOT_BITS;

/// The operations in flight, each in a slot of `slots` from its submission
/// to its completion: its state is written once and not moved while it
/// lives. Freed slots are taken again before the vector grows, so it holds
/// at most as many slots as were ever in flight at once.
struct Ops {
    slots: Vec<Option<OpState>>,
    free: Vec<u32>,
    len: usize,
}

impl Ops {
    fn new() -> Ops {
        Ops {
            slots: Vec::new(),
            free: Vec::new(),
            len: 0,
        }
    }

    fn len(&self) -> usize {
        self.len
    }

    /// Puts `state` in a free slot; `None` if every slot is taken.
    fn insert(&mut self, state: OpState) -> Option<OpKey> {
        let id = state.id;
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot as usize] = Some(state);
                slot
            }
            None if self.slots.len() < SLOTS_MAX => {
                self.slots.push(Some(state));
                u32::try_from(self.slots.len() - 1).expect("SLOTS_MAX fits in u32")
            }
            None => return None,
        };
        self.len += 1;
        Some(OpKey { slot, id })
    }

    fn get(&self, key: OpKey) -> Option<&OpState> {
        self.slots
            .get(key.slot as usize)?
            .as_ref()
            .filter(|state| state.id == key.id)
    }

    fn get_mut(&mut self, key: OpKey) -> Option<&mut OpState> {
        self.slots
            .get_mut(key.slot as usize)?
            .as_mut()
            .filter(|state| state.id == key.id)
    }

    /// The operation in `slot`, whichever it is.
    fn in_slot_mut(&mut self, slot: u64) -> Option<&mut OpState> {
        self.slots.get_mut(usize::try_from(slot).ok()?)?.as_mut()
    }

    /// Drops the operation in place and frees its slot.
    fn remove(&mut self, key: OpKey) {
        if self.get(key).is_some() {
            self.slots[key.slot as usize] = None;
            self.free.push(key.slot);
            self.len -= 1;
        }
    }

    /// The live operations with their keys, in slot order.
    fn iter(&self) -> impl Iterator<Item = (OpKey, &OpState)> {
        self.slots.iter().zip(0..).filter_map(|(state, slot)| {
            let state = state.as_ref()?;
            Some((OpKey { slot, id: state.id }, state))
        })
    }
}

/// An error that ends the operation, or says to retry it.
enum Next {
    Retry,
    Fail(DdsError),
}

/// Attempts of one operation that may follow a refusal for stale maps
/// without a backoff.
const IMMEDIATE_RETRIES_MAX: u32 = 3;

/// The sans-IO client. See the module documentation.
pub struct Core {
    config: CoreConfig,
    maps: Maps,
    rng: ChaCha8Rng,
    client_id: u32,
    next_tx: u32,
    next_op: u64,
    /// Requests sent so far, the high bits of the next request id (see
    /// [`SLOT_BITS`]).
    next_request: u64,
    /// The operations in flight, by slot.
    ops: Ops,
    transmits: VecDeque<(BrickId, u64, Outgoing)>,
    completions: VecDeque<(OpId, Result<Output, DdsError>)>,
    /// Deadlines in the order they were set. Nearly every deadline is a
    /// request timeout from now, so they arrive in time order and a queue
    /// holds them sorted: no tree to keep per operation. An entry whose op
    /// is gone or has moved its deadline is stale and is dropped when it
    /// reaches the front.
    timers: VecDeque<(Instant, OpKey)>,
    /// The few deadlines that would break that order (a backoff shorter
    /// than the request timeout, for example), by time.
    early_timers: BTreeMap<(Instant, u64), OpKey>,
    next_read_replica: usize,
    /// Commits sent to non-primary participants after the caller was
    /// answered: (brick, request id) → (group, brick).
    followups: HashMap<(BrickId, u64), (RgId, BrickId)>,
    /// `GetMaps` requests sent outside any operation ([`Core::fetch_maps_from`]).
    maps_fetches: BTreeSet<(BrickId, u64)>,
}

impl Core {
    pub fn new(config: CoreConfig, maps: Maps) -> Core {
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        let client_id = rng.random();
        Core {
            config,
            maps,
            rng,
            client_id,
            next_tx: 0,
            next_op: 1,
            next_request: 1,
            ops: Ops::new(),
            transmits: VecDeque::new(),
            completions: VecDeque::new(),
            timers: VecDeque::new(),
            early_timers: BTreeMap::new(),
            next_read_replica: 0,
            followups: HashMap::default(),
            maps_fetches: BTreeSet::new(),
        }
    }

    pub fn maps(&self) -> &Maps {
        &self.maps
    }

    /// Takes routing facts that are newer than this core's.
    pub fn learn_newer_maps(&mut self, theirs: &Maps) -> bool {
        self.maps.merge_newer(theirs)
    }

    /// Operations submitted and not yet completed.
    pub fn in_flight(&self) -> usize {
        self.ops.len()
    }

    /// Starts an operation. Its result comes out of `poll_completion`.
    pub fn submit(&mut self, now: Instant, op: Op) -> OpId {
        let id = OpId(self.next_op);
        self.next_op += 1;
        if let Some(e) = check_op(&op) {
            self.completions.push_back((id, Err(e)));
            return id;
        }
        let inserted = self.ops.insert(OpState {
            id,
            op,
            phase: Phase::Backoff,
            attempts: 0,
            deadline: now,
            timed_out: false,
            sent: Sent::new(),
        });
        let Some(key) = inserted else {
            let message = format!("{SLOTS_MAX} operations in flight already");
            self.completions
                .push_back((id, Err(DdsError::Unavailable(message))));
            return id;
        };
        self.start(now, key);
        id
    }

    /// The next request to send, as a request of its own (for the
    /// simulator and tests; the driver uses
    /// [`Core::poll_transmit_with`]).
    pub fn poll_transmit(&mut self) -> Option<(BrickId, u64, Request)> {
        loop {
            let sent = self.poll_transmit_with(|brick, request_id, request| {
                let request = match request {
                    TransmitRef::Request(request) => request.clone(),
                    TransmitRef::Prepare(prepare) => prepare.to_request(),
                };
                (brick, request_id, request)
            });
            match sent {
                Some(Some(transmit)) => return Some(transmit),
                Some(None) => continue,
                None => return None,
            }
        }
    }

    /// The brick the next request goes to, so that a driver can connect to
    /// it before [`Core::poll_transmit_with`].
    pub fn next_transmit_brick(&self) -> Option<BrickId> {
        self.transmits.front().map(|(brick, _, _)| *brick)
    }

    /// Hands the next request to `f`, borrowed: a prepare is lent from its
    /// operation's own table, key and value, which the driver encodes
    /// straight into a connection's buffer (two prepares per write each
    /// copied three of them into a request before). `None` when nothing
    /// waits; `Some(None)` for a prepare whose operation ended before it
    /// was sent, which is dropped (nothing waits for its answer, and a
    /// prepare not sent locks nothing).
    pub fn poll_transmit_with<R>(
        &mut self,
        f: impl FnOnce(BrickId, u64, TransmitRef<'_>) -> R,
    ) -> Option<Option<R>> {
        let (brick, request_id, outgoing) = self.transmits.pop_front()?;
        let request = match &outgoing {
            Outgoing::Request(request) => TransmitRef::Request(request),
            Outgoing::Prepare(head) => {
                let Some(prepare) = self.ops.get(head.op).and_then(|state| head.lend(&state.op))
                else {
                    return Some(None);
                };
                TransmitRef::Prepare(prepare)
            }
        };
        Some(Some(f(brick, request_id, request)))
    }

    pub fn poll_completion(&mut self) -> Option<(OpId, Result<Output, DdsError>)> {
        self.completions.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let queued = self.timers.front().map(|(at, _)| *at);
        let early = self.early_timers.keys().next().map(|(at, _)| *at);
        match (queued, early) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The bricks this core has requests outstanding at.
    pub fn bricks_in_use(&self) -> std::collections::HashSet<BrickId> {
        self.ops
            .iter()
            .flat_map(|(_, state)| state.sent.iter().map(|(brick, _)| *brick))
            .collect()
    }

    /// A new request id, naming `slot` (an operation's, or [`NO_SLOT`]).
    fn request_id(&mut self, slot: u64) -> u64 {
        let count = self.next_request;
        self.next_request = (count + 1) & ((1 << REQUEST_COUNT_BITS) - 1);
        (count << SLOT_BITS) | slot
    }

    fn route(&self, table: &[u8], key: &[u8]) -> Option<Route> {
        let hash = maps::key_hash(table, key);
        let route = self.maps.lookup(hash);
        Some(Route {
            partition: route.partition,
            rg: route.rg,
            bricks: Replicas::new(route.bricks),
            fingerprint: route.fingerprint,
        })
    }

    fn send(&mut self, op: OpKey, brick: BrickId, request: Request) -> u64 {
        self.send_outgoing(op, brick, Outgoing::Request(request))
    }

    fn send_outgoing(&mut self, op: OpKey, brick: BrickId, outgoing: Outgoing) -> u64 {
        let request_id = self.request_id(u64::from(op.slot));
        if let Some(state) = self.ops.get_mut(op) {
            state.sent.push((brick, request_id));
        }
        self.transmits.push_back((brick, request_id, outgoing));
        request_id
    }

    /// Sends a prepare of `txid` (with `decide`, the prepare-and-decide of
    /// the primary) for operation `op`, a put or a removal.
    fn send_prepare(&mut self, op: OpKey, brick: BrickId, txid: TxId, route: &Route, decide: bool) {
        let head = PrepareHead::new(op, txid, route, decide);
        self.send_outgoing(op, brick, Outgoing::Prepare(head));
    }

    /// Moves the op's timer to `at`; the entry of its earlier deadline is
    /// left to go stale.
    fn set_deadline(&mut self, id: OpKey, at: Instant) {
        let Some(state) = self.ops.get_mut(id) else {
            return;
        };
        let before = std::mem::replace(&mut state.deadline, at);
        if !self.early_timers.is_empty() {
            self.early_timers.remove(&(before, id.id.0));
        }
        if self.timers.back().is_none_or(|(last, _)| *last <= at) {
            self.timers.push_back((at, id));
        } else {
            self.early_timers.insert((at, id.id.0), id);
        }
    }

    /// Whether a timer entry still stands: its op lives and has not moved
    /// its deadline.
    fn timer_stands(&self, at: Instant, id: OpKey) -> bool {
        self.ops.get(id).is_some_and(|state| state.deadline == at)
    }

    /// Drops stale entries at the front of the queue, as operations end.
    /// They end in about the order they started, so this keeps the queue
    /// near the number of operations in flight; behind one that waits for
    /// its timeout it grows for at most that timeout.
    fn drop_stale_timers(&mut self) {
        while let Some(&(at, id)) = self.timers.front() {
            if self.timer_stands(at, id) {
                break;
            }
            self.timers.pop_front();
        }
    }

    /// Ends the operation: its slot is freed, and with it the requests it
    /// waited for, so replies to them are ignored.
    fn complete(&mut self, id: OpKey, result: Result<Output, DdsError>) {
        let Some(state) = self.ops.get(id) else {
            return;
        };
        let deadline = state.deadline;
        self.ops.remove(id);
        self.early_timers.remove(&(deadline, id.id.0));
        self.drop_stale_timers();
        self.completions.push_back((id.id, result));
    }

    /// Stops waiting for the replies to every request `id` sent so far.
    fn forget_requests(&mut self, id: OpKey) {
        if let Some(state) = self.ops.get_mut(id) {
            state.sent.clear();
        }
    }

    /// Whether some request `id` sent is still unanswered.
    fn awaits_replies(&self, id: OpKey) -> bool {
        self.ops.get(id).is_some_and(|state| !state.sent.is_empty())
    }

    /// Starts (or restarts) an operation from its first step.
    fn start(&mut self, now: Instant, id: OpKey) {
        let Some(state) = self.ops.get_mut(id) else {
            return;
        };
        state.attempts += 1;
        if state.attempts > self.config.retries_max {
            let what = describe(&state.op);
            let message = format!("{what}: gave up after {} attempts", self.config.retries_max);
            let error = if state.timed_out {
                DdsError::Timeout(message)
            } else {
                DdsError::Unavailable(message)
            };
            self.complete(id, Err(error));
            return;
        }
        let deadline = now + self.config.request_timeout;
        // Taken out while the requests are built from it (each needs its own
        // copy of the bytes), rather than copied whole; put back below.
        // Nothing below starts an operation again before that.
        debug_assert!(
            !matches!(&state.op, Op::Get { table, .. } if table.is_empty()),
            "an operation started again while it was taken out"
        );
        let mut votes_in = false;
        let op = std::mem::replace(
            &mut state.op,
            Op::Get {
                table: Vec::new(),
                key: Vec::new(),
            },
        );
        match &op {
            Op::Get { table, key } => {
                // The hot path: the route is read in place, not copied.
                let route = self.maps.lookup(maps::key_hash(table, key));
                self.next_read_replica = self.next_read_replica.wrapping_add(1);
                let brick = route.bricks[self.next_read_replica % route.bricks.len()];
                let request = Request::Get {
                    partition: route.partition,
                    fingerprint: route.fingerprint,
                    table: table.clone(),
                    key: key.clone(),
                };
                self.ops.get_mut(id).unwrap().phase = Phase::Reading {
                    first: brick,
                    others: Vec::new(),
                };
                self.send(id, brick, request);
            }
            Op::Put { table, key, .. } | Op::Remove { table, key } => {
                votes_in = self.start_prepare(id, table, key);
            }
            Op::CreateTable { name } | Op::DestroyTable { name } => {
                let create = matches!(op, Op::CreateTable { .. });
                let bricks = self.all_bricks();
                self.ops.get_mut(id).unwrap().phase = Phase::Broadcast {
                    waiting: bricks.iter().copied().collect(),
                    first_error: None,
                };
                for brick in bricks {
                    let request = if create {
                        Request::CreateTable { name: name.clone() }
                    } else {
                        Request::DestroyTable { name: name.clone() }
                    };
                    self.send(id, brick, request);
                }
            }
        }
        if let Some(state) = self.ops.get_mut(id) {
            state.op = op;
        }
        self.set_deadline(id, deadline);
        // A write with no vote to wait for decides now, with the operation
        // back in place: the primary's prepare is built from it.
        if votes_in {
            self.votes_in(now, id);
        }
    }

    fn all_bricks(&self) -> Vec<BrickId> {
        self.maps.bricks()
    }

    /// Reads are spread over the replicas in turn, skipping those tried.
    fn pick_replica(&mut self, bricks: &[BrickId], tried: &[BrickId]) -> BrickId {
        let candidates: Vec<BrickId> = bricks
            .iter()
            .copied()
            .filter(|b| !tried.contains(b))
            .collect();
        let pool = if candidates.is_empty() {
            bricks
        } else {
            &candidates
        };
        self.next_read_replica = self.next_read_replica.wrapping_add(1);
        pool[self.next_read_replica % pool.len()]
    }

    /// Phase one: every participant but the primary is asked to prepare.
    /// Once they all voted yes, the primary is asked to prepare and decide
    /// in one step (see [`Core::votes_in`]). A retry asks every participant
    /// at once, the primary too, as the decision then goes to a prepared
    /// primary: when something went wrong (a participant that does not
    /// answer, maps gone stale), the primary's own vote says so at once
    /// (with its maps) rather than after the others'.
    /// Starts a write (a put or a removal). Returns whether
    /// there is no vote to wait for, so that the caller decides at once.
    fn start_prepare(&mut self, id: OpKey, table: &[u8], key: &[u8]) -> bool {
        let route = self.route(table, key).expect("maps cover every hash");
        self.next_tx = self.next_tx.wrapping_add(1);
        let txid = TxId((u64::from(self.client_id) << 32) | u64::from(self.next_tx));
        let retry = self.ops.get(id).is_some_and(|state| state.attempts > 1);
        let first = usize::from(!retry);
        let others = &route.bricks[first..];
        for &brick in others {
            self.send_prepare(id, brick, txid, &route, false);
        }
        let no_votes = others.is_empty();
        let waiting = if self.config.decide_without_votes {
            // The deliberately broken variant: no waiting for votes.
            Positions::default()
        } else {
            Positions::range(first, route.bricks.len())
        };
        self.ops.get_mut(id).unwrap().phase = Phase::Preparing(Prepare {
            txid,
            route,
            yes: Positions::default(),
            no: None,
            waiting,
        });
        self.config.decide_without_votes || no_votes
    }

    /// Takes newer routing facts from a brick's reply. If the brick is the
    /// one behind, pushes this library's maps to it.
    fn learn_maps(&mut self, brick: BrickId, bytes: Option<&[u8]>) {
        let Some(bytes) = bytes else {
            return;
        };
        match Maps::decode(bytes) {
            Ok(theirs) => {
                let changed = self.maps.merge_newer(&theirs);
                let mut check = theirs;
                if !changed && check.merge_newer(&self.maps) {
                    // The brick is behind: it learns from us.
                    let maps = self.maps.encode();
                    let request_id = self.request_id(NO_SLOT);
                    self.transmits.push_back((
                        brick,
                        request_id,
                        Outgoing::Request(Request::PushMaps { maps }),
                    ));
                }
            }
            Err(e) => log::warn!("{brick} sent maps that do not decode: {e}"),
        }
    }

    /// A reply from `brick` to request `request_id`.
    pub fn handle_reply(&mut self, now: Instant, brick: BrickId, request_id: u64, reply: Reply) {
        let slot = request_id & SLOT_MASK;
        if slot == NO_SLOT {
            if let Some((rg, participant)) = self.followups.remove(&(brick, request_id)) {
                self.followup_reply(rg, participant, reply);
            } else if self.maps_fetches.remove(&(brick, request_id)) {
                if let Reply::Maps(bytes) = &reply {
                    self.learn_maps(brick, Some(bytes));
                }
            }
            return; // Or late, or a reply to a push.
        }
        // The slot's operation, if it still waits for this very request: a
        // late reply finds it answered, lost or forgotten, or finds another
        // operation in the slot, which never sent this id.
        let Some(state) = self.ops.in_slot_mut(slot) else {
            return;
        };
        if !state.sent.remove((brick, request_id)) {
            return;
        }
        let id = OpKey {
            slot: slot as u32,
            id: state.id,
        };
        state.timed_out = false;
        match &mut state.phase {
            Phase::Reading { .. } => self.read_reply(now, id, brick, Some(reply)),
            Phase::Preparing(_) => self.vote(now, id, brick, Some(reply)),
            Phase::Deciding(_) => self.decision_reply(now, id, brick, Some(reply)),
            Phase::Excluding(_) => self.exclusion_reply(now, id, brick, Some(reply)),
            Phase::Broadcast { .. } => self.broadcast_reply(now, id, brick, Some(reply)),
            Phase::Backoff | Phase::Halted => {}
        }
    }

    /// A participant answered a commit sent after the caller was told. One
    /// that did not commit lost the write: ask the group to remove it.
    fn followup_reply(&mut self, rg: RgId, participant: BrickId, reply: Reply) {
        if matches!(reply, Reply::TxState(TxState::Committed)) {
            return;
        }
        log::warn!(
            "{participant} did not apply a committed write ({reply:?}); asking for its removal"
        );
        let Some(entry) = self.maps.rg.get(rg) else {
            return;
        };
        if let Some(leader) = entry.bricks.iter().copied().find(|b| *b != participant) {
            let request = Request::Exclude {
                rg,
                epoch: entry.epoch,
                brick: participant,
            };
            let request_id = self.request_id(NO_SLOT);
            self.transmits
                .push_back((leader, request_id, Outgoing::Request(request)));
        }
    }

    /// Asks `brick` for its maps, outside any operation; newer ones are
    /// taken when they come (see [`Core::handle_reply`]).
    fn fetch_maps_from(&mut self, brick: BrickId) {
        let request_id = self.request_id(NO_SLOT);
        if self.maps_fetches.len() >= limits::FOLLOWUPS_MAX {
            // Unanswered fetches are only a hint; drop them.
            self.maps_fetches.clear();
        }
        self.maps_fetches.insert((brick, request_id));
        self.transmits
            .push_back((brick, request_id, Outgoing::Request(Request::GetMaps)));
    }

    /// Every request outstanding at `brick` is lost.
    pub fn handle_unreachable(&mut self, now: Instant, brick: BrickId) {
        self.followups.retain(|(b, _), _| *b != brick);
        self.maps_fetches.retain(|(b, _)| *b != brick);
        let mut lost: Vec<(u64, OpKey)> = self
            .ops
            .iter()
            .flat_map(|(id, state)| {
                state
                    .sent
                    .iter()
                    .filter(|(b, _)| *b == brick)
                    .map(move |(_, request_id)| (*request_id, id))
            })
            .collect();
        // In the order the requests were sent, so a run replays exactly.
        lost.sort_unstable_by_key(|(request_id, _)| request_id >> SLOT_BITS);
        for (request_id, id) in lost {
            if let Some(state) = self.ops.get_mut(id) {
                state.sent.remove((brick, request_id));
            }
            self.lost(now, id, brick);
        }
    }

    fn lost(&mut self, now: Instant, id: OpKey, brick: BrickId) {
        let Some(state) = self.ops.get(id) else {
            return;
        };
        match &state.phase {
            Phase::Reading { .. } => self.read_reply(now, id, brick, None),
            Phase::Preparing(_) => self.vote(now, id, brick, None),
            Phase::Deciding(_) => self.decision_reply(now, id, brick, None),
            Phase::Excluding(_) => self.exclusion_reply(now, id, brick, None),
            Phase::Broadcast { .. } => self.broadcast_reply(now, id, brick, None),
            Phase::Backoff | Phase::Halted => {}
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some((at, id)) = self.next_due(now) {
            if !self.timer_stands(at, id) {
                continue; // Superseded.
            }
            let Some(state) = self.ops.get(id) else {
                continue;
            };
            match &state.phase {
                Phase::Backoff => self.start(now, id),
                Phase::Halted => {}
                _ => {
                    // Every request still outstanding for the op is lost.
                    let mut lost: Vec<(BrickId, u64)> = state.sent.iter().copied().collect();
                    lost.sort_unstable();
                    if lost.is_empty() {
                        // Nothing outstanding (a push, for example): restart.
                        self.start(now, id);
                    }
                    if let Some(state) = self.ops.get_mut(id) {
                        state.timed_out = true;
                    }
                    for (brick, request_id) in lost {
                        if let Some(state) = self.ops.get_mut(id) {
                            state.sent.remove((brick, request_id));
                        }
                        self.lost(now, id, brick);
                    }
                }
            }
        }
    }

    /// Takes the earliest timer entry due at `now`, from either table.
    fn next_due(&mut self, now: Instant) -> Option<(Instant, OpKey)> {
        let queued = self.timers.front().map(|(at, _)| *at);
        let early = self.early_timers.keys().next().copied();
        match (queued, early) {
            (Some(q), Some((e, _))) if e < q => (e <= now).then(|| self.pop_early()),
            (Some(q), _) => (q <= now).then(|| self.timers.pop_front().expect("a front")),
            (None, Some((e, _))) => (e <= now).then(|| self.pop_early()),
            (None, None) => None,
        }
    }

    fn pop_early(&mut self) -> (Instant, OpKey) {
        let ((at, _), id) = self.early_timers.pop_first().expect("an early timer");
        (at, id)
    }

    fn backoff(&mut self, now: Instant, id: OpKey) {
        let Some(state) = self.ops.get_mut(id) else {
            return;
        };
        state.phase = Phase::Backoff;
        let exp = state.attempts.min(10);
        let base = self.config.backoff_base * (1u32 << exp.min(8));
        let jitter = self.rng.random_range(0..=base.as_micros() as u64);
        let at = now + base / 2 + Duration::from_micros(jitter / 2);
        self.set_deadline(id, at);
    }

    /// What an error reply means for the operation.
    fn classify(&mut self, brick: BrickId, e: &ErrorReply) -> Next {
        match e.code {
            ErrorCode::FingerprintMismatch | ErrorCode::NotReplica | ErrorCode::Fenced => {
                self.learn_maps(brick, e.maps.as_deref());
                Next::Retry
            }
            ErrorCode::LockConflict
            | ErrorCode::Busy
            | ErrorCode::Refused
            | ErrorCode::Restarted
            | ErrorCode::WritesHeld => Next::Retry,
            ErrorCode::PartitionFull => Next::Fail(DdsError::PartitionFull(e.message.clone())),
            ErrorCode::TableNotFound => Next::Fail(DdsError::TableNotFound(e.message.clone())),
            ErrorCode::TableExists => Next::Fail(DdsError::TableExists(e.message.clone())),
            ErrorCode::Malformed | ErrorCode::UnknownTransaction | ErrorCode::Internal => {
                Next::Fail(DdsError::Protocol(format!("{brick}: {}", e.message)))
            }
        }
    }

    fn read_reply(&mut self, now: Instant, id: OpKey, brick: BrickId, reply: Option<Reply>) {
        match reply {
            Some(Reply::Value(value)) => self.complete(id, Ok(Output::Value(Some(value)))),
            Some(Reply::NotFound) => self.complete(id, Ok(Output::Value(None))),
            Some(Reply::Error(e)) => match self.classify(brick, &e) {
                Next::Retry if matches!(e.code, ErrorCode::Fenced | ErrorCode::Restarted) => {
                    self.read_elsewhere(now, id, brick)
                }
                Next::Retry => self.backoff(now, id),
                Next::Fail(err) => self.complete(id, Err(err)),
            },
            Some(other) => self.complete(
                id,
                Err(DdsError::Protocol(format!(
                    "{brick} answered a read with {other:?}"
                ))),
            ),
            None => self.read_elsewhere(now, id, brick),
        }
    }

    /// A replica could not answer a read: ask the next one at once, or back
    /// off once every replica was tried.
    fn read_elsewhere(&mut self, now: Instant, id: OpKey, brick: BrickId) {
        let Some(state) = self.ops.get(id) else {
            return;
        };
        let (Op::Get { table, key }, Phase::Reading { first, others }) = (&state.op, &state.phase)
        else {
            return;
        };
        let first = *first;
        let mut tried = others.clone();
        tried.insert(0, first);
        let (table, key) = (table.clone(), key.clone());
        let route = self.route(&table, &key).expect("maps cover every hash");
        if route.bricks.iter().all(|b| tried.contains(b)) {
            log::debug!(
                "read of {} failed at every replica (last {brick}); backing off",
                describe(&state.op)
            );
            self.backoff(now, id);
            return;
        }
        let next = self.pick_replica(&route.bricks, &tried);
        tried.push(next);
        tried.remove(0);
        self.ops.get_mut(id).unwrap().phase = Phase::Reading {
            first,
            others: tried,
        };
        self.send(
            id,
            next,
            Request::Get {
                partition: route.partition,
                fingerprint: route.fingerprint,
                table,
                key,
            },
        );
        self.set_deadline(id, now + self.config.request_timeout);
    }

    fn vote(&mut self, now: Instant, id: OpKey, brick: BrickId, reply: Option<Reply>) {
        let Some(OpState {
            phase: Phase::Preparing(prepare),
            ..
        }) = self.ops.get_mut(id)
        else {
            return;
        };
        let Some(at) = prepare.route.position(brick) else {
            return;
        };
        if !prepare.waiting.remove(at) {
            return;
        }
        match reply {
            Some(Reply::Voted) => {
                prepare.yes.insert(at);
            }
            Some(Reply::Error(e)) => {
                if prepare.no.is_none() {
                    prepare.no = Some((brick, e));
                }
            }
            Some(other) => {
                prepare.no.get_or_insert((
                    brick,
                    ErrorReply {
                        code: ErrorCode::Internal,
                        message: format!("{brick} answered a prepare with {other:?}"),
                        maps: None,
                    },
                ));
            }
            None => {
                // A missing vote counts as no.
                prepare.no.get_or_insert((
                    brick,
                    ErrorReply {
                        code: ErrorCode::Busy,
                        message: format!("{brick} did not vote in time"),
                        maps: None,
                    },
                ));
            }
        }
        if prepare.waiting.is_empty() {
            self.votes_in(now, id);
        }
    }

    /// Every participant but the primary has voted: on all yes, the primary
    /// is asked to prepare and decide; on a no, the abort goes to the
    /// primary first (it records the transaction as aborted, fencing a late
    /// prepare), then to the others.
    fn votes_in(&mut self, now: Instant, id: OpKey) {
        let state = self.ops.get_mut(id).expect("a live operation");
        let Phase::Preparing(prepare) = &mut state.phase else {
            unreachable!("called in the prepare phase");
        };
        if self.config.halt_after_prepare && prepare.no.is_none() {
            log::warn!(
                "halting transaction {} after prepare (test hook)",
                prepare.txid.0
            );
            state.phase = Phase::Halted;
            return;
        }
        let decision = if prepare.no.is_none() {
            TxState::Committed
        } else {
            TxState::Aborted
        };
        let primary = prepare.route.bricks[0];
        let primary_prepared = prepare.yes.contains(0);
        state.phase = Phase::Deciding(Decide {
            txid: prepare.txid,
            route: prepare.route.clone(),
            decision,
            abort_reason: prepare.no.take(),
            target: primary,
            prepare: decision == TxState::Committed && !primary_prepared,
            stage: Stage::Primary,
            leader: None,
            attempts: 0,
        });
        self.send_decision(now, id);
    }

    fn decision_request(decide: &Decide, decision: TxState) -> Request {
        match decision {
            TxState::Committed => Request::Commit {
                txid: decide.txid,
                partition: decide.route.partition,
            },
            _ => Request::Abort {
                txid: decide.txid,
                partition: decide.route.partition,
            },
        }
    }

    /// Puts `decide` back in its operation, waiting for the decision.
    fn set_deciding(&mut self, id: OpKey, decide: Decide) {
        if let Some(state) = self.ops.get_mut(id) {
            state.phase = Phase::Deciding(decide);
        }
    }

    /// Sends the operation's decision to the primary, or the abort to the
    /// others. The decision is read where it lies, in the `Deciding` phase.
    fn send_decision(&mut self, now: Instant, id: OpKey) {
        let Some(decide) = self.deciding(id) else {
            return;
        };
        // Empty (no allocation) for the usual case, the primary alone.
        let others: Vec<BrickId> = match &decide.stage {
            Stage::Primary => Vec::new(),
            Stage::Others(waiting) => waiting.iter().copied().collect(),
        };
        let to_primary = match decide.stage {
            Stage::Primary if decide.prepare => Some(Outgoing::Prepare(PrepareHead::new(
                id,
                decide.txid,
                &decide.route,
                true,
            ))),
            Stage::Primary => Some(Outgoing::Request(Self::decision_request(
                decide,
                decide.decision,
            ))),
            Stage::Others(_) => None,
        };
        let target = decide.target;
        let abort = Self::decision_request(decide, TxState::Aborted);
        self.forget_requests(id);
        if let Some(outgoing) = to_primary {
            self.send_outgoing(id, target, outgoing);
        }
        for other in others {
            self.send(id, other, abort.clone());
        }
        self.set_deadline(id, now + self.config.request_timeout);
    }

    /// The operation's decision, where it lies while it is being decided.
    fn deciding(&self, id: OpKey) -> Option<&Decide> {
        match &self.ops.get(id)?.phase {
            Phase::Deciding(decide) => Some(decide),
            _ => None,
        }
    }

    fn take_decide(&mut self, id: OpKey) -> Option<Decide> {
        let state = self.ops.get_mut(id)?;
        match std::mem::replace(&mut state.phase, Phase::Backoff) {
            Phase::Deciding(d) | Phase::Excluding(d) => Some(d),
            other => {
                state.phase = other;
                None
            }
        }
    }

    fn decision_reply(&mut self, now: Instant, id: OpKey, brick: BrickId, reply: Option<Reply>) {
        let Some(decide) = self.deciding(id) else {
            return;
        };
        // The usual answer, the primary's commit, is taken with the decision
        // left in place; the others as below.
        if matches!(decide.stage, Stage::Primary)
            && brick == decide.target
            && matches!(reply, Some(Reply::TxState(TxState::Committed)))
        {
            self.committed(now, id);
            return;
        }
        let Some(mut decide) = self.take_decide(id) else {
            return;
        };
        let state = match &reply {
            Some(Reply::TxState(state)) => Some(*state),
            _ => None,
        };
        match &mut decide.stage {
            Stage::Primary => {
                if brick != decide.target {
                    self.set_deciding(id, decide);
                    return;
                }
                // The primary, asked to prepare and decide, voted no: it
                // recorded the transaction as aborted.
                let no_vote = match &reply {
                    Some(Reply::Error(e)) if decide.prepare && e.code != ErrorCode::Fenced => {
                        Some(e.clone())
                    }
                    _ => None,
                };
                if let Some(e) = no_vote {
                    decide.prepare = false;
                    decide.decision = TxState::Aborted;
                    decide.abort_reason = Some((brick, e));
                    self.abort_at_others(now, id, decide);
                    return;
                }
                match state {
                    Some(TxState::Committed) => {
                        self.set_deciding(id, decide);
                        self.committed(now, id);
                    }
                    Some(TxState::Aborted) => self.abort_at_others(now, id, decide),
                    // The primary could not tell (it restarted), did not
                    // answer, or may not decide (fenced: removed, or
                    // without a lease): have it removed, then ask the
                    // next one, which voted yes.
                    _ => {
                        log::info!(
                            "primary {brick} of transaction {} answered {state:?}",
                            decide.txid.0
                        );
                        // A fenced primary sends its maps: it may have been
                        // removed, and the next member is to be asked.
                        if let Some(Reply::Error(e)) = &reply {
                            self.learn_maps(brick, e.maps.as_deref());
                        }
                        self.request_exclusion(now, id, decide, brick);
                    }
                }
            }
            Stage::Others(waiting) => {
                if !waiting.contains(&brick) {
                    self.set_deciding(id, decide);
                    return;
                }
                match state {
                    // A member resolved the transaction as committed after
                    // the primary was removed: that is its outcome.
                    Some(TxState::Committed) => {
                        self.set_deciding(id, decide);
                        self.committed(now, id);
                    }
                    Some(TxState::Aborted) | Some(TxState::Unknown) => {
                        waiting.remove(&brick);
                        self.continue_abort(now, id, decide);
                    }
                    _ => self.request_exclusion(now, id, decide, brick),
                }
            }
        }
    }

    /// The primary aborted: final there. The caller hears of it once every
    /// other member has dropped the write too, so that a retry cannot apply
    /// it twice.
    fn abort_at_others(&mut self, now: Instant, id: OpKey, mut decide: Decide) {
        let entry = self.maps.rg.get(decide.route.rg).cloned();
        let waiting: BTreeSet<BrickId> = decide
            .route
            .bricks
            .iter()
            .copied()
            .filter(|b| *b != decide.target && entry.as_ref().is_some_and(|e| e.bricks.contains(b)))
            .collect();
        decide.stage = Stage::Others(waiting);
        self.continue_abort(now, id, decide);
    }

    /// The transaction committed: answer the caller, then tell the other
    /// participants. One that says it never prepared lost the write (it
    /// restarted) and is reported for removal.
    fn committed(&mut self, _now: Instant, id: OpKey) {
        let Some(decide) = self.deciding(id) else {
            return;
        };
        let (rg, bricks, target) = (decide.route.rg, decide.route.bricks, decide.target);
        let commit = Self::decision_request(decide, TxState::Committed);
        for other in bricks.iter().copied().filter(|b| *b != target) {
            let request_id = self.request_id(NO_SLOT);
            if self.followups.len() >= limits::FOLLOWUPS_MAX {
                // Unanswered follow-ups are only a hint; drop them.
                self.followups.clear();
            }
            self.followups.insert((other, request_id), (rg, other));
            self.transmits
                .push_back((other, request_id, Outgoing::Request(commit.clone())));
        }
        self.complete(id, Ok(Output::Done));
    }

    /// Waits for the remaining members to acknowledge the abort; when none
    /// is left, retries the write or fails it.
    fn continue_abort(&mut self, now: Instant, id: OpKey, decide: Decide) {
        let done = matches!(&decide.stage, Stage::Others(w) if w.is_empty());
        if !done {
            self.set_deciding(id, decide);
            // Replies to requests already sent are still expected; a new
            // round is sent only after an exclusion (see exclusion_reply).
            if !self.awaits_replies(id) {
                self.send_decision(now, id);
            }
            return;
        }
        let repaired = decide.abort_reason.as_ref().is_some_and(|(_, reason)| {
            matches!(
                reason.code,
                ErrorCode::FingerprintMismatch | ErrorCode::NotReplica
            )
        });
        let next = match decide.abort_reason.clone() {
            Some((brick, reason)) => self.classify(brick, &reason),
            None => Next::Retry,
        };
        let attempts = self.ops.get(id).map_or(0, |state| state.attempts);
        match next {
            // Stale maps were just repaired (or pushed to a brick that was
            // behind, ahead of the retry on the same connection): nothing
            // to wait for. At a membership change a write can meet stale
            // maps twice (at the old member, then at the new one), so the
            // first few such refusals retry at once; later ones back off.
            Next::Retry if repaired && attempts <= IMMEDIATE_RETRIES_MAX => self.start(now, id),
            Next::Retry => self.backoff(now, id),
            Next::Fail(e) => self.complete(id, Err(e)),
        }
    }

    /// Asks the group's leader to remove `target`, which did not answer.
    fn request_exclusion(&mut self, now: Instant, id: OpKey, mut decide: Decide, target: BrickId) {
        decide.attempts += 1;
        if decide.attempts > self.config.retries_max {
            self.complete(
                id,
                Err(DdsError::OutcomeUnknown(format!(
                    "transaction {}: {target} did not answer and could not be replaced",
                    decide.txid.0
                ))),
            );
            return;
        }
        let Some(entry) = self.maps.rg.get(decide.route.rg).cloned() else {
            self.complete(
                id,
                Err(DdsError::OutcomeUnknown(
                    "replica group vanished from the maps".into(),
                )),
            );
            return;
        };
        if !entry.bricks.contains(&target) {
            self.after_removal(now, id, decide, target, &entry.bricks);
            return;
        }
        let Some(leader) = entry.bricks.iter().copied().find(|b| *b != target) else {
            // These maps may be stale: a brick that restarted says it cannot
            // tell the outcome of a transaction it does not know while its
            // group has another member, before it looks at the route. The
            // next operation must not meet the same answer for want of the
            // group's current members.
            self.fetch_maps_from(target);
            self.complete(
                id,
                Err(DdsError::OutcomeUnknown(format!(
                    "{target} is the only replica left in this library's maps and did not answer, or could not tell the outcome; the maps are being refreshed"
                ))),
            );
            return;
        };
        let request = Request::Exclude {
            rg: decide.route.rg,
            epoch: entry.epoch,
            brick: target,
        };
        decide.leader = Some((leader, target));
        self.ops.get_mut(id).unwrap().phase = Phase::Excluding(decide);
        self.forget_requests(id);
        self.send(id, leader, request);
        // A removal waits for a probe and for leases to run out.
        self.set_deadline(id, now + self.config.request_timeout * 4);
    }

    /// `target` is no longer a member: carry on without it.
    fn after_removal(
        &mut self,
        now: Instant,
        id: OpKey,
        mut decide: Decide,
        target: BrickId,
        members: &[BrickId],
    ) {
        match &mut decide.stage {
            Stage::Primary => match decide
                .route
                .bricks
                .iter()
                .copied()
                .find(|b| members.contains(b))
            {
                Some(next) => {
                    // The next member is a participant that voted yes: it
                    // is prepared, so it gets the decision itself.
                    decide.target = next;
                    decide.prepare = false;
                    self.set_deciding(id, decide);
                    self.send_decision(now, id);
                }
                None => self.complete(
                    id,
                    Err(DdsError::OutcomeUnknown(format!(
                        "transaction {}: no participant is left in the group",
                        decide.txid.0
                    ))),
                ),
            },
            Stage::Others(waiting) => {
                waiting.remove(&target);
                waiting.retain(|b| members.contains(b));
                if waiting.is_empty() {
                    self.continue_abort(now, id, decide);
                } else {
                    self.set_deciding(id, decide);
                    self.send_decision(now, id);
                }
            }
        }
    }

    fn exclusion_reply(&mut self, now: Instant, id: OpKey, brick: BrickId, reply: Option<Reply>) {
        let Some(mut decide) = self.take_decide(id) else {
            return;
        };
        let Some((leader, target)) = decide.leader else {
            self.ops.get_mut(id).unwrap().phase = Phase::Excluding(decide);
            return;
        };
        if brick != leader {
            self.ops.get_mut(id).unwrap().phase = Phase::Excluding(decide);
            return;
        }
        decide.leader = None;
        match reply {
            Some(Reply::Maps(bytes)) => {
                if let Ok(theirs) = Maps::decode(&bytes) {
                    self.maps.merge_newer(&theirs);
                }
                let members = self
                    .maps
                    .rg
                    .get(decide.route.rg)
                    .map(|e| e.bricks.clone())
                    .unwrap_or_default();
                if members.contains(&target) {
                    self.request_exclusion(now, id, decide, target);
                } else {
                    self.after_removal(now, id, decide, target, &members);
                }
            }
            // The target is alive after all: ask it again.
            Some(Reply::Error(e)) if e.code == ErrorCode::Refused => {
                self.set_deciding(id, decide);
                self.send_decision(now, id);
            }
            _ => self.request_exclusion(now, id, decide, target),
        }
    }

    fn broadcast_reply(&mut self, now: Instant, id: OpKey, brick: BrickId, reply: Option<Reply>) {
        let Some(OpState {
            phase:
                Phase::Broadcast {
                    waiting,
                    first_error,
                },
            ..
        }) = self.ops.get_mut(id)
        else {
            return;
        };
        waiting.remove(&brick);
        let err = match reply {
            Some(Reply::Ok) => None,
            Some(Reply::Error(e)) => Some(match e.code {
                ErrorCode::TableExists => DdsError::TableExists(e.message),
                ErrorCode::TableNotFound => DdsError::TableNotFound(e.message),
                _ => DdsError::Unavailable(format!("{brick}: {}", e.message)),
            }),
            Some(other) => Some(DdsError::Protocol(format!(
                "{brick} answered with {other:?}"
            ))),
            None => Some(DdsError::Unavailable(format!("{brick} did not answer"))),
        };
        if first_error.is_none() {
            *first_error = err;
        }
        if waiting.is_empty() {
            let result = match first_error.take() {
                None => Ok(Output::Done),
                Some(e) => Err(e),
            };
            let _ = now;
            self.complete(id, result);
        }
    }
}

/// Checks an operation against the protocol's limits before anything is
/// sent, so the caller gets a clear error.
fn check_op(op: &Op) -> Option<DdsError> {
    let (table, key, value) = match op {
        Op::Get { table, key } | Op::Remove { table, key } => (table, Some(key), None),
        Op::Put { table, key, value } => (table, Some(key), Some(value)),
        Op::CreateTable { name } | Op::DestroyTable { name } => (name, None, None),
    };
    if table.is_empty() || table.len() > wire::limits::TABLE_NAME_SIZE_MAX {
        return Some(DdsError::InvalidArgument(format!(
            "table name must be 1 to {} bytes, not {}",
            wire::limits::TABLE_NAME_SIZE_MAX,
            table.len()
        )));
    }
    if let Some(key) = key {
        if key.len() > wire::limits::KEY_SIZE_MAX {
            return Some(DdsError::InvalidArgument(format!(
                "key is {} bytes; the limit is {}",
                key.len(),
                wire::limits::KEY_SIZE_MAX
            )));
        }
    }
    if let Some(value) = value {
        if value.len() > wire::limits::VALUE_SIZE_MAX {
            return Some(DdsError::InvalidArgument(format!(
                "value is {} bytes; the limit is {}",
                value.len(),
                wire::limits::VALUE_SIZE_MAX
            )));
        }
    }
    None
}

fn describe(op: &Op) -> &'static str {
    match op {
        Op::Get { .. } => "get",
        Op::Put { .. } => "put",
        Op::Remove { .. } => "remove",
        Op::CreateTable { .. } => "create_table",
        Op::DestroyTable { .. } => "destroy_table",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wire::Write;

    fn maps() -> Maps {
        maps::ClusterConfig::for_simulation(3, 2, 4).initial_maps()
    }

    /// The key of live operation `id`.
    fn key(core: &Core, id: OpId) -> OpKey {
        core.ops
            .iter()
            .find(|(key, _)| key.id == id)
            .expect("a live operation")
            .0
    }

    /// Runs the core's timers until `op` completes, answering nothing.
    fn run_silent(core: &mut Core, mut now: Instant, op: OpId) -> Result<Output, DdsError> {
        for _ in 0..10_000 {
            while core.poll_transmit().is_some() {}
            if let Some((id, result)) = core.poll_completion() {
                assert_eq!(id, op);
                return result;
            }
            now = core
                .poll_timeout()
                .expect("a pending operation has a deadline")
                .max(now);
            core.handle_timeout(now);
        }
        panic!("the operation never completed");
    }

    /// Answers every request `core` sends with `answer(request)` until
    /// `op` completes; returns its result and the requests sent.
    fn run_answering(
        core: &mut Core,
        now: Instant,
        op: OpId,
        answer: impl Fn(&Request) -> Reply,
    ) -> (Result<Output, DdsError>, Vec<(BrickId, Request)>) {
        let mut sent = Vec::new();
        for _ in 0..100 {
            if let Some((id, result)) = core.poll_completion() {
                assert_eq!(id, op);
                return (result, sent);
            }
            let (brick, request_id, request) =
                core.poll_transmit().expect("an operation in flight sends");
            core.handle_reply(now, brick, request_id, answer(&request));
            sent.push((brick, request));
        }
        panic!("the operation never completed");
    }

    #[test]
    fn sent_keeps_every_key_past_its_inline_ones_until_removed() {
        let mut sent = Sent::new();
        let keys: Vec<(BrickId, u64)> = (0..SENT_INLINE as u64 + 3)
            .map(|i| (BrickId(i as u32 % 3), 100 + i))
            .collect();
        let held = |sent: &Sent| {
            let mut held: Vec<(BrickId, u64)> = sent.iter().copied().collect();
            held.sort_unstable_by_key(|(_, request_id)| *request_id);
            held
        };
        for (i, key) in keys.iter().enumerate() {
            sent.push(*key);
            assert_eq!(held(&sent), keys[..=i]);
        }
        // Removing an inline key while some spilled keeps all the others.
        assert!(sent.remove(keys[1]));
        assert!(!sent.remove(keys[1]), "removed already");
        assert!(!sent.remove((BrickId(9), keys[2].1)), "another brick's");
        let mut left: Vec<_> = keys.iter().copied().filter(|k| *k != keys[1]).collect();
        assert_eq!(held(&sent), left);
        for key in [keys[SENT_INLINE + 1], keys[0], keys[SENT_INLINE + 2]] {
            assert!(sent.remove(key));
            left.retain(|k| *k != key);
            assert_eq!(held(&sent), left);
        }
        assert!(!sent.is_empty());
        sent.clear();
        assert!(sent.is_empty() && sent.iter().next().is_none());
        sent.push(keys[0]);
        assert_eq!(held(&sent), [keys[0]]);
    }

    fn is_prepare(request: &Request, decides: bool) -> bool {
        matches!(request, Request::Prepare { decide, .. } if *decide == decides)
    }

    #[test]
    fn a_write_prepares_at_the_others_then_has_the_primary_prepare_and_decide() {
        let mut core = Core::new(CoreConfig::default(), maps());
        let now = Instant::now();
        let (table, key, value) = (b"t".to_vec(), b"k".to_vec(), b"v".to_vec());
        let primary = core.maps().lookup(maps::key_hash(&table, &key)).bricks[0];
        let op = core.submit(
            now,
            Op::Put {
                table,
                key,
                value: value.clone(),
            },
        );
        let (result, sent) = run_answering(&mut core, now, op, |request| match request {
            Request::Prepare { decide: false, .. } => Reply::Voted,
            _ => Reply::TxState(TxState::Committed),
        });
        assert_eq!(result, Ok(Output::Done));
        // The other participant's prepare, the primary's prepare-and-decide
        // carrying the value, then the commit that follows the answer.
        assert_eq!(sent.len(), 2);
        assert!(sent[0].0 != primary && is_prepare(&sent[0].1, false));
        assert!(sent[1].0 == primary && is_prepare(&sent[1].1, true));
        assert!(matches!(&sent[1].1, Request::Prepare { write: Write::Put(v), .. } if *v == value));
        let (brick, _, commit) = core.poll_transmit().expect("the follow-up commit");
        assert!(brick == sent[0].0 && matches!(commit, Request::Commit { .. }));
    }

    #[test]
    fn a_prepare_is_lent_from_its_operation_and_dropped_once_that_ended() {
        let mut core = Core::new(CoreConfig::default(), maps());
        let now = Instant::now();
        let put = |key: &[u8]| Op::Put {
            table: b"t".to_vec(),
            key: key.to_vec(),
            value: b"value".to_vec(),
        };
        core.submit(now, put(b"a"));
        let mut lent = Vec::new();
        let (request_id, owned) = core
            .poll_transmit_with(|_, request_id, request| {
                request.encode(request_id, &mut lent);
                let TransmitRef::Prepare(prepare) = request else {
                    panic!("a write starts with a prepare");
                };
                (request_id, prepare.to_request())
            })
            .expect("a request to send")
            .expect("its operation is still there");
        assert!(is_prepare(&owned, false));
        assert!(matches!(&owned, Request::Prepare { write: Write::Put(v), .. } if v == b"value"));
        let mut encoded = Vec::new();
        wire::encode_request(request_id, &owned, &mut encoded);
        assert!(lent == encoded, "the lent prepare encodes as its request");

        let ended = core.submit(now, put(b"b"));
        core.complete(
            key(&core, ended),
            Err(DdsError::Timeout("ended".to_string())),
        );
        assert!(
            matches!(core.poll_transmit_with(|_, _, _| ()), Some(None)),
            "the prepare of an ended operation is dropped"
        );
        assert!(core.poll_transmit_with(|_, _, _| ()).is_none());
    }

    #[test]
    fn positions_hold_what_was_put_in() {
        let mut p = Positions::range(1, 4);
        assert!(!p.contains(0) && p.contains(1) && p.contains(3) && !p.contains(4));
        assert!(p.remove(2));
        assert!(!p.remove(2), "removed already");
        p.insert(15);
        assert!(p.contains(15));
        for i in [1, 3, 15] {
            assert!(p.remove(i));
        }
        assert!(p.is_empty());
        assert!(Positions::range(2, 2).is_empty());
    }

    #[test]
    fn a_write_with_one_replica_has_it_prepare_and_decide_at_once() {
        let maps = maps::ClusterConfig::for_simulation(1, 1, 2).initial_maps();
        let mut core = Core::new(CoreConfig::default(), maps);
        let now = Instant::now();
        let op = core.submit(
            now,
            Op::Remove {
                table: b"t".to_vec(),
                key: b"k".to_vec(),
            },
        );
        let (result, sent) =
            run_answering(&mut core, now, op, |_| Reply::TxState(TxState::Committed));
        assert_eq!(result, Ok(Output::Done));
        assert_eq!(sent.len(), 1);
        assert!(matches!(
            &sent[0].1,
            Request::Prepare {
                write: Write::Remove,
                decide: true,
                ..
            }
        ));
    }

    /// A brick that restarted answers "unknown" to a prepare-and-decide of
    /// a transaction it does not know while its group has another member,
    /// before it looks at the route. With maps that list it alone, the
    /// write ends "outcome unknown", and the library fetches the brick's
    /// maps, so the next write goes to the group's current primary.
    #[test]
    fn an_unknown_answer_from_the_only_replica_in_stale_maps_refreshes_them() {
        let mut stale = maps();
        let key = |i: u32| format!("k{i}").into_bytes();
        let route = stale.lookup(maps::key_hash(b"t", &key(0)));
        let (rg, old_members) = (route.rg, route.bricks.to_vec());
        stale.rg.exclude(rg, old_members[1]).unwrap();
        let alone = old_members[0];
        // Since then the group took a second member back, first in order.
        let mut current = stale.clone();
        let entry = current.rg.get(rg).unwrap().clone();
        let mut bricks = vec![old_members[1]];
        bricks.extend(entry.bricks.iter().copied());
        current
            .rg
            .install(
                rg,
                maps::RgEntry {
                    epoch: entry.epoch + 1,
                    bricks,
                },
            )
            .unwrap();
        let mut core = Core::new(CoreConfig::default(), stale);
        let now = Instant::now();
        let put = Op::Put {
            table: b"t".to_vec(),
            key: key(0),
            value: b"v".to_vec(),
        };
        let op = core.submit(now, put.clone());
        let (result, sent) =
            run_answering(&mut core, now, op, |_| Reply::TxState(TxState::Unknown));
        assert!(
            matches!(&result, Err(DdsError::OutcomeUnknown(m)) if m.contains("refreshed")),
            "{result:?}"
        );
        assert_eq!(sent.len(), 1);
        assert!(sent[0].0 == alone && is_prepare(&sent[0].1, true));
        let (brick, request_id, fetch) = core.poll_transmit().expect("a fetch of the maps");
        assert_eq!((brick, fetch), (alone, Request::GetMaps));
        core.handle_reply(now, brick, request_id, Reply::Maps(current.encode()));
        assert_eq!(core.maps().rg.get(rg), current.rg.get(rg));
        // The next write prepares at the member that left and came back,
        // now the group's primary, and at the other.
        let op = core.submit(now, put);
        let (result, sent) = run_answering(&mut core, now, op, |request| match request {
            Request::Prepare { decide: false, .. } => Reply::Voted,
            _ => Reply::TxState(TxState::Committed),
        });
        assert_eq!(result, Ok(Output::Done));
        assert!(sent[0].0 == alone && is_prepare(&sent[0].1, false));
        assert!(sent[1].0 == old_members[1] && is_prepare(&sent[1].1, true));
    }

    #[test]
    fn unanswered_requests_end_in_timeout() {
        let start = Instant::now();
        let mut core = Core::new(CoreConfig::default(), maps());
        let op = core.submit(
            start,
            Op::Get {
                table: b"t".to_vec(),
                key: b"k".to_vec(),
            },
        );
        assert!(matches!(
            run_silent(&mut core, start, op),
            Err(DdsError::Timeout(_))
        ));
    }

    #[test]
    fn timers_fire_in_time_order_and_moved_ones_are_skipped() {
        let start = Instant::now();
        let timeout = CoreConfig::default().request_timeout;
        let mut core = Core::new(CoreConfig::default(), maps());
        let get = |k: &[u8]| Op::Get {
            table: b"t".to_vec(),
            key: k.to_vec(),
        };
        let submit = |core: &mut Core, op| {
            let id = core.submit(start, op);
            key(core, id)
        };
        let (a, b, c) = (
            submit(&mut core, get(b"a")),
            submit(&mut core, get(b"b")),
            submit(&mut core, get(b"c")),
        );
        // A deadline earlier than those queued goes to the early table.
        let soon = start + Duration::from_millis(5);
        core.set_deadline(b, soon);
        assert_eq!(core.early_timers.len(), 1);
        assert_eq!(core.poll_timeout(), Some(soon));
        assert_eq!(core.next_due(soon - Duration::from_millis(1)), None);
        assert_eq!(core.next_due(soon), Some((soon, b)));
        assert_eq!(core.next_due(soon), None);
        // b's first deadline is still queued (behind a's), but no longer
        // stands.
        let mut due = Vec::new();
        while let Some((at, id)) = core.next_due(start + timeout) {
            due.push((id, core.timer_stands(at, id)));
        }
        assert_eq!(due, vec![(a, true), (b, false), (c, true)]);
        // Entries of ended operations wait behind a live one at the front,
        // and go once it ends.
        let later = start + timeout * 2;
        core.set_deadline(a, later);
        let ids: Vec<OpKey> = (0..1000u32)
            .map(|i| {
                let id = core.submit(later, get(&i.to_be_bytes()));
                key(&core, id)
            })
            .collect();
        for id in ids {
            core.complete(id, Ok(Output::Done));
        }
        assert_eq!(core.timers.len(), 1 + 1000);
        for id in [a, b, c] {
            core.complete(id, Ok(Output::Done));
        }
        assert!(core.timers.is_empty(), "{} left", core.timers.len());
        assert!(core.early_timers.is_empty());
        assert_eq!(core.poll_timeout(), None);
    }

    #[test]
    fn an_operation_holds_at_most_one_early_timer() {
        let start = Instant::now();
        let mut core = Core::new(CoreConfig::default(), maps());
        let get = Op::Get {
            table: b"t".to_vec(),
            key: b"k".to_vec(),
        };
        let id = core.submit(start, get);
        let id = key(&core, id);
        for ms in [5, 3, 4] {
            core.set_deadline(id, start + Duration::from_millis(ms));
            assert_eq!(core.early_timers.len(), 1);
        }
        core.complete(id, Ok(Output::Done));
        assert!(core.early_timers.is_empty());
    }

    #[test]
    fn unreachable_bricks_end_in_unavailable() {
        let start = Instant::now();
        let mut core = Core::new(CoreConfig::default(), maps());
        let op = core.submit(
            start,
            Op::Get {
                table: b"t".to_vec(),
                key: b"k".to_vec(),
            },
        );
        let mut now = start;
        for _ in 0..10_000 {
            while let Some((brick, _, _)) = core.poll_transmit() {
                core.handle_unreachable(now, brick);
            }
            if let Some((id, result)) = core.poll_completion() {
                assert_eq!(id, op);
                assert!(
                    matches!(result, Err(DdsError::Unavailable(_))),
                    "{result:?}"
                );
                return;
            }
            if let Some(at) = core.poll_timeout() {
                now = at.max(now);
                core.handle_timeout(now);
            }
        }
        panic!("the operation never completed");
    }

    #[test]
    fn a_late_reply_to_an_ended_operation_is_ignored_by_the_next_in_its_slot() {
        let mut core = Core::new(CoreConfig::default(), maps());
        let start = Instant::now();
        let put = Op::Put {
            table: b"t".to_vec(),
            key: b"k".to_vec(),
            value: b"v".to_vec(),
        };
        let first = core.submit(start, put.clone());
        let (brick, late_id, request) = core.poll_transmit().expect("a prepare");
        assert!(is_prepare(&request, false));
        // Nothing is answered: the first write gives up.
        assert!(run_silent(&mut core, start, first).is_err());
        while core.poll_transmit().is_some() {}
        assert_eq!(core.in_flight(), 0);

        let second = core.submit(start, put);
        assert_ne!(second, first);
        let (same_brick, request_id, request) = core.poll_transmit().expect("a prepare");
        assert!(same_brick == brick && is_prepare(&request, false));
        assert_eq!(
            request_id & SLOT_MASK,
            late_id & SLOT_MASK,
            "the second write took the first one's slot"
        );
        assert_ne!(request_id, late_id);
        // The first write's vote comes in late: the second does not take it.
        core.handle_reply(start, brick, late_id, Reply::Voted);
        assert!(core.poll_transmit().is_none(), "no decision yet");
        assert!(core.poll_completion().is_none());
        assert_eq!(core.bricks_in_use(), [brick].into());
        // Nor does it take its own request id from another brick.
        core.handle_reply(start, BrickId(brick.0 + 1), request_id, Reply::Voted);
        assert!(core.poll_transmit().is_none(), "no decision yet");
        // Its own vote moves it on to the primary's prepare-and-decide.
        core.handle_reply(start, brick, request_id, Reply::Voted);
        let (primary, _, request) = core.poll_transmit().expect("the decision");
        assert!(primary != brick && is_prepare(&request, true));
        assert_eq!(core.bricks_in_use(), [primary].into());
    }

    #[test]
    fn ids_stay_unique_as_slots_are_reused_and_slots_grow_only_to_the_peak() {
        let mut core = Core::new(CoreConfig::default(), maps());
        let now = Instant::now();
        let get = |i: u32| Op::Get {
            table: b"t".to_vec(),
            key: i.to_be_bytes().to_vec(),
        };
        let mut ids = BTreeSet::new();
        let mut request_ids = BTreeSet::new();
        let mut live = VecDeque::new();
        // Up to five in flight at a time, then down to two, then up to six.
        for (round, peak) in [5, 2, 6, 3].into_iter().enumerate() {
            for i in 0..20u32 {
                while live.len() >= peak {
                    let id = live.pop_front().expect("one in flight");
                    core.complete(key(&core, id), Ok(Output::Done));
                    assert_eq!(core.poll_completion().map(|(id, _)| id), Some(id));
                }
                let id = core.submit(now, get(i));
                assert!(ids.insert(id), "{id:?} given twice");
                let (_, request_id, _) = core.poll_transmit().expect("a read");
                assert!(request_ids.insert(request_id));
                assert!(request_id < 1 << 63, "below the driver's own ids");
                live.push_back(id);
                assert_eq!(core.in_flight(), live.len());
            }
            let most = [5, 5, 6, 6][round];
            assert_eq!(core.ops.slots.len(), most, "round {round}");
        }
        // Ids count up from 1 in the order of submission.
        assert!(ids.into_iter().eq((1..=80).map(OpId)));
    }

    #[test]
    fn limits_are_checked_before_sending() {
        let mut core = Core::new(CoreConfig::default(), maps());
        let key = vec![0u8; wire::limits::KEY_SIZE_MAX + 1];
        let op = core.submit(
            Instant::now(),
            Op::Get {
                table: b"t".to_vec(),
                key,
            },
        );
        assert!(core.poll_transmit().is_none());
        let (id, result) = core.poll_completion().unwrap();
        assert_eq!(id, op);
        assert!(matches!(result, Err(DdsError::InvalidArgument(_))));
    }
}
