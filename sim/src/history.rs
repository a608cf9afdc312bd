//! Histories of client operations on the key-value store, as the clients saw
//! them, and a thread-safe recorder that produces them.
//!
//! Each key is an independent register: `Get` reads it, `Put` sets it,
//! `Remove` sets it to absent, and every key starts absent. An operation has
//! an invocation time and either a return (its result and time) or an
//! outcome-unknown end: the client gave up (a timeout, a lost connection) and
//! the operation may or may not have taken effect.
//!
//! This module holds the data and the recorder only; deciding whether a
//! history is linearizable is [`crate::linearizability`]'s job.
//!
//! # What a recorder user must guarantee
//!
//! The checker derives real-time order from the recorded times alone, so:
//!
//! - call [`HistoryRecorder::invoke`] before the request can reach any brick
//!   (before it is written to a socket or handed to the simulated network);
//! - call [`HistoryRecorder::complete`] only after the reply has been
//!   received, with exactly what the client was told;
//! - call [`HistoryRecorder::unknown`] whenever the client cannot tell whether
//!   the operation took effect, never `complete` with a guessed result.
//!
//! Clients need not be sequential for the checker, which assigns operations
//! to its own sequential threads; the client id and session only label the
//! rendering of a failed check. A client whose operation ended unknown is
//! moved to a fresh session automatically, so the labels show where a client
//! carried on after giving up.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

/// Who issued an operation: a client thread, a simulated client, a process.
pub type ClientId = u64;

/// What an operation asked for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum OpKind {
    /// Read the register.
    Get,
    /// Set the register to this value.
    Put(Vec<u8>),
    /// Set the register to absent.
    Remove,
}

/// What a returned operation answered.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum OpResult {
    /// The answer of a `Get`: the value, or `None` for an absent key.
    Value(Option<Vec<u8>>),
    /// The answer of a `Put` or `Remove` that took effect.
    Ok,
}

/// How an operation ended.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum OpEnd {
    /// The client received an answer at `at_ns`.
    Returned { result: OpResult, at_ns: u64 },
    /// The client gave up without an answer; the operation may have taken
    /// effect at any time after its invocation, or never.
    Unknown,
}

/// One operation of a history.
///
/// Times are in nanoseconds on one clock shared by every operation of the
/// history; only their order matters to the checker. An invocation and a
/// return at the same time count as overlapping.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Operation {
    pub client: ClientId,
    /// Starts at 0 and goes up each time the client carries on after an
    /// operation with an unknown outcome.
    pub session: u64,
    pub key: Vec<u8>,
    pub kind: OpKind,
    pub invoke_ns: u64,
    pub end: OpEnd,
}

impl Operation {
    /// Whether the operation can change the register (`Put` or `Remove`).
    pub fn is_write(&self) -> bool {
        !matches!(self.kind, OpKind::Get)
    }

    /// The return time, or `None` for an unknown outcome.
    pub fn return_ns(&self) -> Option<u64> {
        match self.end {
            OpEnd::Returned { at_ns, .. } => Some(at_ns),
            OpEnd::Unknown => None,
        }
    }
}

/// A recorded history: operations on any number of keys, in invocation order
/// when it came from a [`HistoryRecorder`], in any order when built by hand.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct History {
    pub ops: Vec<Operation>,
}

impl History {
    pub fn new() -> History {
        History::default()
    }

    /// Appends an operation; a test can build a history by hand this way.
    pub fn push(&mut self, op: Operation) {
        self.ops.push(op);
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The distinct keys, in byte order.
    pub fn keys(&self) -> BTreeSet<&[u8]> {
        self.ops.iter().map(|op| op.key.as_slice()).collect()
    }

    /// The operations on one key, in the order they were recorded.
    pub fn ops_on<'a>(&'a self, key: &'a [u8]) -> impl Iterator<Item = &'a Operation> + 'a {
        self.ops.iter().filter(move |op| op.key == key)
    }
}

/// Tells which recorder issued a handle, so that a handle given to the wrong
/// recorder is caught instead of ending some other operation.
static RECORDER_ID_NEXT: AtomicU64 = AtomicU64::new(1);

/// An operation that has been invoked and not yet ended. Hand it back to the
/// recorder that issued it, exactly once, with `complete` or `unknown`; one
/// that is never handed back is recorded as unknown by
/// [`HistoryRecorder::finish`].
#[derive(Debug, PartialEq, Eq, Hash)]
#[must_use = "end the operation with HistoryRecorder::complete or HistoryRecorder::unknown"]
pub struct OpHandle {
    recorder_id: u64,
    index: usize,
}

/// Records a [`History`] from any number of threads.
///
/// A single mutex guards the log; each call holds it for a push or an update
/// of one entry, so recording costs far less than any operation it records.
/// The recorder stamps times itself, under the mutex, from one monotonic
/// clock and strictly increasing, so the recorded order of calls is the
/// real-time order the checker uses.
#[derive(Debug)]
pub struct HistoryRecorder {
    id: u64,
    start: Instant,
    log: Mutex<Log>,
}

#[derive(Debug, Default)]
struct Log {
    ops: Vec<Operation>,
    /// Whether each entry of `ops` is still waiting for its end.
    pending: Vec<bool>,
    last_ns: u64,
    sessions: HashMap<ClientId, u64>,
}

impl Log {
    /// The next timestamp: nanoseconds since the recorder started, at least
    /// one more than the previous one so that no two events tie.
    fn stamp(&mut self, elapsed_ns: u64) -> u64 {
        self.last_ns = elapsed_ns.max(self.last_ns + 1);
        self.last_ns
    }

    fn new_session(&mut self, client: ClientId) {
        *self.sessions.entry(client).or_insert(0) += 1;
    }
}

impl Default for HistoryRecorder {
    fn default() -> Self {
        HistoryRecorder::new()
    }
}

impl HistoryRecorder {
    pub fn new() -> HistoryRecorder {
        HistoryRecorder {
            id: RECORDER_ID_NEXT.fetch_add(1, Ordering::Relaxed),
            start: Instant::now(),
            log: Mutex::new(Log::default()),
        }
    }

    /// Records that `client` invoked `kind` on `key`. Call it before the
    /// request can reach a brick.
    pub fn invoke(&self, client: ClientId, key: impl Into<Vec<u8>>, kind: OpKind) -> OpHandle {
        let key = key.into();
        let mut log = self.lock();
        let invoke_ns = log.stamp(self.elapsed_ns());
        let session = log.sessions.get(&client).copied().unwrap_or(0);
        let index = log.ops.len();
        log.ops.push(Operation {
            client,
            session,
            key,
            kind,
            invoke_ns,
            end: OpEnd::Unknown,
        });
        log.pending.push(true);
        OpHandle {
            recorder_id: self.id,
            index,
        }
    }

    /// Records the answer the client received. Call it after the reply
    /// arrived.
    pub fn complete(&self, handle: OpHandle, result: OpResult) {
        let mut log = self.lock();
        let index = self.take_pending(&mut log, handle);
        let at_ns = log.stamp(self.elapsed_ns());
        log.ops[index].end = OpEnd::Returned { result, at_ns };
    }

    /// Records that the client gave up on the operation without knowing
    /// whether it took effect. Later operations of the same client are
    /// recorded under a new session.
    pub fn unknown(&self, handle: OpHandle) {
        let mut log = self.lock();
        let index = self.take_pending(&mut log, handle);
        let client = log.ops[index].client;
        log.new_session(client);
    }

    /// Records later operations of `client` under a new session, for a
    /// client that starts over for a reason of its own (a reconnect). After
    /// [`HistoryRecorder::unknown`] this happens by itself.
    pub fn retire_client(&self, client: ClientId) {
        self.lock().new_session(client);
    }

    /// The number of operations invoked so far.
    pub fn len(&self) -> usize {
        self.lock().ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A copy of the history so far. Operations not yet ended are given an
    /// unknown outcome in the copy, which is what they are if the run stops
    /// here; the recorder itself keeps them open.
    pub fn finish(&self) -> History {
        History {
            ops: self.lock().ops.clone(),
        }
    }

    fn take_pending(&self, log: &mut Log, handle: OpHandle) -> usize {
        assert_eq!(
            handle.recorder_id, self.id,
            "an OpHandle goes back to the recorder that issued it"
        );
        // A handle is not Clone and is consumed here, so an entry can only be
        // ended twice through a bug in this module.
        assert!(
            log.pending[handle.index],
            "operation {} ended twice",
            handle.index
        );
        log.pending[handle.index] = false;
        handle.index
    }

    fn elapsed_ns(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn lock(&self) -> MutexGuard<'_, Log> {
        // A thread that panicked while holding the lock left the log
        // consistent (every update is a single push or assignment), so the
        // others carry on recording.
        self.log
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
