//! Checks that a recorded [`History`] is linearizable, key by key, with
//! stateright's `LinearizabilityTester` and a register specification.
//!
//! Linearizability is local (Herlihy and Wing): a history is linearizable if
//! and only if its restriction to each object is, so each key is checked on
//! its own.
//!
//! This module holds the register specification, the translation of a key's
//! history into events for the tester, and the report. It does not record
//! histories ([`crate::history`] does) and does not search for orders itself;
//! every search is stateright's.
//!
//! # Outcome-unknown operations
//!
//! stateright's tester treats an operation that was invoked and never
//! returned as one that may take effect at any point after its invocation or
//! not at all: its search may place such an operation once the operations
//! that finished before its invocation are placed, with whatever result the
//! specification gives, and it stops as soon as every returned operation is
//! placed, so an open one may also be left out (`serialize` in stateright's
//! `semantics/linearizability.rs`; the test
//! `stateright_treats_an_open_operation_as_maybe_happening_after_its_invocation`
//! pins this down). That is exactly the meaning of an unknown outcome, so
//! such an operation is invoked and never returned.
//!
//! The tester allows one open operation per thread, and a thread's
//! operations must not overlap. Client ids are therefore not used as
//! threads: each invocation gets a thread that is idle at that moment, and
//! the thread of an unknown operation is never reused. A thread then orders
//! only operations that real time already orders, so the partial order the
//! tester sees is exactly real-time order, whatever the clients did.
//!
//! # Making the search small
//!
//! The tester searches interleavings depth first and remembers nothing, so a
//! violation late in a long history makes it try every order of everything
//! before it. The checker therefore asks it only about short stretches of a
//! key's history, and leaves out what cannot change the verdict. All of
//! this is exact: the verdict is the one the tester would give on the whole
//! key's history at once (the test `random_histories_agree_with_a_plain_encoding`
//! compares the two). Below, "a write of x" is a put of x, or a remove for
//! x = absent.
//!
//! 1. An unknown `Get` is left out: it changed nothing and told nobody
//!    anything.
//! 2. An unknown write of x is left out unless some returned `Get` read x and
//!    returned after the write's invocation. In any valid order, the reads
//!    between a write and the next write return its value and return after
//!    its invocation; with none, deleting the write leaves the order valid,
//!    and an unknown write may always be left out.
//! 3. By the same argument, an unknown write of x that takes effect at all
//!    may be assumed to take effect before a read of x that returned after
//!    its invocation, so before the last return of such a read: its span
//!    ends there. When the write is the only put of its value, every read of
//!    x must follow it, so its span ends at the first return of such a read.
//!    (Distinct values per put keep spans short; tests should write them.)
//! 4. The returned operations are cut into segments where no returned
//!    operation's span crosses from one to the next: every returned
//!    operation of a segment comes before every one of the next in any
//!    valid order. What passes from one segment to the next is the
//!    register's value and the set of unknown writes that have not taken
//!    effect yet and may still (their span reaches a later segment).
//! 5. The checker walks the segments with the set of such states that the
//!    operations before can leave, starting from {absent, none pending}. In
//!    each segment, an unknown write whose span ends there is fed as open;
//!    one whose span goes on is either applied there or left pending, and
//!    both are tried. Applying it there is only tried where a read of its
//!    value returned after its invocation, and it is fed as returning by the
//!    last such read: in a valid order where it takes effect there but no
//!    read there follows it before the next write, it can as well take
//!    effect at the start of the next segment, or never. So no more writes
//!    of a value are applied there than it has reads of the value, and
//!    pending removes invoked earlier, being interchangeable, are tried by
//!    number only.
//!    For each start state and choice, the tester checks the segment
//!    followed by a read of each value the segment may end with (the values
//!    of writes that no returned write and no read of another value follows
//!    in real time, and the start value if no write must take effect).
//!    Answers are remembered per segment.
//! 6. The history is linearizable if and only if the last segment can be
//!    ordered from some state. A failure names the first segment no state
//!    lets the tester order.
//!
//! # Cost
//!
//! Before the tester first searches a set of operations, the checker counts
//! the most steps that search could take. The count ignores the register's
//! rules, which cut most searches far shorter, so it is pessimistic. A set
//! counted at more than [`CheckConfig::search_steps_max`] is not given to
//! the tester: the checker orders it itself, with a search that remembers
//! every state (operations placed, register value) it reaches and visits
//! each once (`Fed::orderable_remembering`), where the tester remembers
//! nothing and may try the same placements in every order, which is what
//! the count bounds. A long delay can leave dozens of operations on a key
//! overlapping: two simulator seeds had stretches of 46 and 40 operations,
//! counted at over 3·10⁹ steps, that this search ordered after visiting
//! under a hundred states. The tester stays the judge of everything within
//! the count; the test `random_histories_agree_with_a_plain_encoding` also
//! checks the remembering search against the plain encoding, with no
//! steps allowed to the tester. The other limits:
//! [`CheckConfig::remembered_states_max`] states for one remembering
//! search, [`CheckConfig::segment_ops_max`]
//! operations per segment, [`CheckConfig::ops_per_key_max`] per key,
//! [`UNKNOWN_WRITE_CHOICES_MAX`] ways to place unknown writes in one
//! segment, and [`SEARCHES_PER_KEY_MAX`] searches per key (their number
//! grows with the states passed between segments, values times pending
//! sets, which stay few when puts write distinct values). Reaching any of
//! them gives the verdict [`Verdict::TooLarge`], which names the limit and
//! is not a pass.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::fmt::Write as _;

use stateright::semantics::{ConsistencyTester, LinearizabilityTester, SequentialSpec};

use crate::history::{History, OpEnd, OpKind, OpResult, Operation};

/// The default for [`CheckConfig::search_steps_max`], past which a segment
/// is searched remembering its states instead of by the tester. On the
/// histories of `cargo run --release -p sim --example check_cost`,
/// segments counted at up to about this many steps were checked in under a
/// second.
pub const SEARCH_STEPS_MAX_DEFAULT: u64 = 100_000_000;

/// The environment variable that overrides [`SEARCH_STEPS_MAX_DEFAULT`].
pub const SEARCH_STEPS_MAX_ENV: &str = "DDS_CHECK_SEARCH_STEPS_MAX";

/// The default for [`CheckConfig::segment_ops_max`].
pub const SEGMENT_OPS_MAX_DEFAULT: usize = 64;

/// The largest [`CheckConfig::segment_ops_max`] there is: a segment's
/// operations and the final read are held in one 128-bit set.
pub const SEGMENT_OPS_LIMIT: usize = 127;

/// The default for [`CheckConfig::remembered_states_max`]: about 100 MB of
/// remembered states at most.
pub const REMEMBERED_STATES_MAX_DEFAULT: usize = 2_000_000;

/// The environment variable that overrides [`SEGMENT_OPS_MAX_DEFAULT`].
pub const SEGMENT_OPS_MAX_ENV: &str = "DDS_CHECK_SEGMENT_OPS_MAX";

/// The default for [`CheckConfig::ops_per_key_max`].
pub const OPS_PER_KEY_MAX_DEFAULT: usize = 100_000;

/// The environment variable that overrides [`OPS_PER_KEY_MAX_DEFAULT`].
pub const OPS_PER_KEY_MAX_ENV: &str = "DDS_CHECK_OPS_PER_KEY_MAX";

/// The most ways of choosing, in one segment, which unknown writes take
/// effect there and which later; each is searched, so this is a fixed
/// limit, not a setting.
pub const UNKNOWN_WRITE_CHOICES_MAX: u64 = 256;

/// The most searches the checker runs for one key; the number grows with
/// the states passed between segments, which unknown outcomes multiply.
pub const SEARCHES_PER_KEY_MAX: u64 = 100_000;

/// Limits of a check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckConfig {
    /// The most steps one search of the tester may take in the worst case,
    /// as counted before it runs; a segment counted higher is searched
    /// remembering its states (see "Cost" in the module documentation).
    pub search_steps_max: u64,
    /// The most operations one segment (a stretch of overlapping operations,
    /// see the module documentation) may have; values above
    /// [`SEGMENT_OPS_LIMIT`] act as that.
    pub segment_ops_max: usize,
    /// The most operations a key may have in all.
    pub ops_per_key_max: usize,
    /// The most states (operations placed, register value) the search of
    /// one segment whose tester's count is over `search_steps_max` may
    /// reach.
    pub remembered_states_max: usize,
}

impl Default for CheckConfig {
    fn default() -> Self {
        CheckConfig {
            search_steps_max: SEARCH_STEPS_MAX_DEFAULT,
            segment_ops_max: SEGMENT_OPS_MAX_DEFAULT,
            ops_per_key_max: OPS_PER_KEY_MAX_DEFAULT,
            remembered_states_max: REMEMBERED_STATES_MAX_DEFAULT,
        }
    }
}

impl CheckConfig {
    /// The default limits, with `DDS_CHECK_SEARCH_STEPS_MAX`,
    /// `DDS_CHECK_SEGMENT_OPS_MAX` and `DDS_CHECK_OPS_PER_KEY_MAX` applied if
    /// set.
    pub fn from_env() -> Result<CheckConfig, CheckConfigError> {
        let read = |name: &'static str, max: u64| -> Result<Option<u64>, CheckConfigError> {
            let Ok(value) = std::env::var(name) else {
                return Ok(None);
            };
            match value.trim().parse::<u64>() {
                Ok(n) if n > 0 && n <= max => Ok(Some(n)),
                _ => Err(CheckConfigError { name, value, max }),
            }
        };
        let mut config = CheckConfig::default();
        if let Some(n) = read(SEARCH_STEPS_MAX_ENV, u64::MAX)? {
            config.search_steps_max = n;
        }
        if let Some(n) = read(SEGMENT_OPS_MAX_ENV, SEGMENT_OPS_LIMIT as u64)? {
            config.segment_ops_max = n as usize;
        }
        if let Some(n) = read(OPS_PER_KEY_MAX_ENV, usize::MAX as u64)? {
            config.ops_per_key_max = n as usize;
        }
        Ok(config)
    }
}

/// The environment holds a limit that is not a whole number in its range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckConfigError {
    pub name: &'static str,
    pub value: String,
    pub max: u64,
}

impl fmt::Display for CheckConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}={:?} is not a whole number from 1 to {}; set it to one, or unset it for \
             the default",
            self.name, self.value, self.max
        )
    }
}

impl std::error::Error for CheckConfigError {}

/// A value as the specification sees it: the values of one key numbered in
/// the order they first appear, so that the search clones numbers, not
/// byte strings.
pub type ValueId = u64;

/// The sequential specification of one key: a register that holds a value
/// or is absent, and starts absent.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Register {
    pub value: Option<ValueId>,
}

/// An operation on a [`Register`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RegisterOp {
    Get,
    Put(ValueId),
    Remove,
}

/// The answer of a [`RegisterOp`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RegisterRet {
    GetOk(Option<ValueId>),
    PutOk,
    RemoveOk,
}

impl SequentialSpec for Register {
    type Op = RegisterOp;
    type Ret = RegisterRet;

    fn invoke(&mut self, op: &RegisterOp) -> RegisterRet {
        match op {
            RegisterOp::Get => RegisterRet::GetOk(self.value),
            RegisterOp::Put(value) => {
                self.value = Some(*value);
                RegisterRet::PutOk
            }
            RegisterOp::Remove => {
                self.value = None;
                RegisterRet::RemoveOk
            }
        }
    }
}

/// The outcome of checking one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    /// No order of the operations respects both real time and the register.
    NotLinearizable,
    /// A limit was reached before the check could finish; this is not a
    /// pass. `found` is what was met (one more than `max` when only "more
    /// than the limit" is known).
    TooLarge {
        limit: Limit,
        found: u64,
        max: u64,
    },
    /// The history itself is impossible (a return before its invocation, a
    /// result that does not fit the operation).
    Malformed {
        reason: String,
    },
}

/// The limits that can stop a check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Limit {
    /// [`CheckConfig::ops_per_key_max`]: operations on one key.
    OpsPerKey,
    /// [`CheckConfig::segment_ops_max`]: operations in one segment.
    SegmentOps,
    /// [`CheckConfig::remembered_states_max`]: states one remembering
    /// search may reach.
    RememberedStates,
    /// [`UNKNOWN_WRITE_CHOICES_MAX`]: ways of choosing which unknown
    /// writes take effect in a segment and which later.
    UnknownWriteChoices,
    /// [`SEARCHES_PER_KEY_MAX`]: searches for one key.
    SearchesPerKey,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Linearizable => write!(f, "linearizable"),
            Verdict::NotLinearizable => write!(f, "NOT linearizable"),
            Verdict::TooLarge { limit, found, max } => {
                write!(f, "too large to check: ")?;
                match limit {
                    Limit::OpsPerKey => write!(
                        f,
                        "{found} operations on the key, the limit is {max}; spread the workload \
                         over more keys or raise {OPS_PER_KEY_MAX_ENV}"
                    ),
                    Limit::SegmentOps => write!(
                        f,
                        "{found} overlapping operations to order at once, the limit is {max}; use \
                         fewer concurrent clients per key or raise {SEGMENT_OPS_MAX_ENV} (at most \
                         {SEGMENT_OPS_LIMIT})"
                    ),
                    Limit::RememberedStates => write!(
                        f,
                        "ordering one stretch of overlapping operations reached more than {max} \
                         states (operations placed, value); use fewer concurrent clients per key \
                         or let them pause together now and then"
                    ),
                    Limit::UnknownWriteChoices => write!(
                        f,
                        "{found} ways for writes with unknown outcome to take effect in one \
                         stretch of operations or later, the limit is {max}; inject fewer faults \
                         per key"
                    ),
                    Limit::SearchesPerKey => write!(
                        f,
                        "more than {max} searches for one key; inject fewer faults per key or \
                         write a distinct value with every put"
                    ),
                }
            }
            Verdict::Malformed { reason } => write!(f, "malformed history: {reason}"),
        }
    }
}

/// The outcome of checking one key, with what a person needs to debug it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyReport {
    pub key: Vec<u8>,
    /// All operations recorded on the key.
    pub ops: usize,
    /// Operations whose outcome is unknown.
    pub unknown_ops: usize,
    /// Operations handed to the search, after leaving out unknown ones that
    /// cannot change the verdict.
    pub ops_checked: usize,
    /// Stretches of overlapping operations, checked one after another.
    pub segments: usize,
    /// Operations in the largest segment.
    pub segment_ops_largest: usize,
    /// The most steps the tester's search could take on one segment, as
    /// counted before it ran, among those within the limit (0 when nothing
    /// was counted).
    pub search_steps_largest: u64,
    /// Searches made by remembering states, for segments whose count was
    /// over [`CheckConfig::search_steps_max`].
    pub remembering_searches: u64,
    pub verdict: Verdict,
    /// For a key that is not linearizable or malformed: its history as a
    /// table, one operation a line, ordered by invocation.
    pub rendering: Option<String>,
}

impl KeyReport {
    pub fn is_ok(&self) -> bool {
        self.verdict == Verdict::Linearizable
    }
}

/// The outcome of checking a whole history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckReport {
    /// One entry per key, in key byte order.
    pub keys: Vec<KeyReport>,
    pub config: CheckConfig,
}

impl CheckReport {
    /// True when every key is linearizable; a key too large to check is not
    /// a pass.
    pub fn is_ok(&self) -> bool {
        self.keys.iter().all(KeyReport::is_ok)
    }

    /// The keys that did not pass.
    pub fn failures(&self) -> impl Iterator<Item = &KeyReport> {
        self.keys.iter().filter(|k| !k.is_ok())
    }

    /// The report of one key, if the history had operations on it.
    pub fn key(&self, key: &[u8]) -> Option<&KeyReport> {
        self.keys.iter().find(|k| k.key == key)
    }

    /// The total number of operations in the checked history.
    pub fn ops(&self) -> usize {
        self.keys.iter().map(|k| k.ops).sum()
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let failed = self.failures().count();
        write!(
            f,
            "linearizability: {} keys, {} operations: ",
            self.keys.len(),
            self.ops()
        )?;
        if failed == 0 {
            return writeln!(f, "all linearizable");
        }
        writeln!(f, "{failed} of {} keys did not pass", self.keys.len())?;
        for key in &self.keys {
            writeln!(
                f,
                "  key {}: {} ({} operations, {} with unknown outcome, {} ordered in {} \
                 segments of at most {})",
                show_value(&key.key),
                key.verdict,
                key.ops,
                key.unknown_ops,
                key.ops_checked,
                key.segments,
                key.segment_ops_largest,
            )?;
        }
        for key in self.failures() {
            if let Some(rendering) = &key.rendering {
                writeln!(
                    f,
                    "history of key {} ({}):",
                    show_value(&key.key),
                    key.verdict
                )?;
                f.write_str(rendering)?;
            }
        }
        Ok(())
    }
}

/// Checks every key of `history`, with the limits from the environment.
///
/// # Panics
///
/// If `DDS_CHECK_SEGMENT_OPS_MAX` or `DDS_CHECK_OPS_PER_KEY_MAX` is set to
/// something that is not a positive number: a test run with a mistyped
/// limit stops and says so rather than checking with a limit nobody asked
/// for. Use [`check_with`] to pass limits explicitly.
pub fn check(history: &History) -> CheckReport {
    let config = CheckConfig::from_env().unwrap_or_else(|e| panic!("{e}"));
    check_with(history, &config)
}

/// Checks every key of `history` with the given limits.
pub fn check_with(history: &History, config: &CheckConfig) -> CheckReport {
    let mut by_key: BTreeMap<&[u8], Vec<&Operation>> = BTreeMap::new();
    for op in &history.ops {
        by_key.entry(op.key.as_slice()).or_default().push(op);
    }
    let keys = by_key
        .into_iter()
        .map(|(key, ops)| check_key(key, ops, config))
        .collect();
    CheckReport {
        keys,
        config: *config,
    }
}

/// One operation as the search sees it.
#[derive(Clone, Debug)]
struct Entry {
    /// Position in the key's operations, sorted by invocation.
    index: usize,
    op: RegisterOp,
    /// `None` for an operation with an unknown outcome.
    ret: Option<RegisterRet>,
    invoke_ns: u64,
    return_ns: Option<u64>,
    /// The end of the span the operation is placed in: its return, or for
    /// an unknown write the last return of a read it can explain.
    span_end_ns: u64,
}

impl Entry {
    /// The value the register holds after this operation, for writes.
    fn written(&self) -> Option<Option<ValueId>> {
        match self.op {
            RegisterOp::Get => None,
            RegisterOp::Put(value) => Some(Some(value)),
            RegisterOp::Remove => Some(None),
        }
    }
}

fn check_key(key: &[u8], mut ops: Vec<&Operation>, config: &CheckConfig) -> KeyReport {
    // Invocation order makes the rendering, the segments and the event order
    // independent of the order the operations were recorded in.
    ops.sort_by_key(|op| op.invoke_ns);
    let mut report = KeyReport {
        key: key.to_vec(),
        ops: ops.len(),
        unknown_ops: ops.iter().filter(|op| op.end == OpEnd::Unknown).count(),
        ops_checked: 0,
        segments: 0,
        segment_ops_largest: 0,
        search_steps_largest: 0,
        remembering_searches: 0,
        verdict: Verdict::Linearizable,
        rendering: None,
    };
    let values = Values::of(&ops);

    if let Some(reason) = ops.iter().enumerate().find_map(|(i, op)| malformed(i, op)) {
        report.verdict = Verdict::Malformed { reason };
        report.rendering = Some(render(&ops, &values, None));
        return report;
    }
    if ops.len() > config.ops_per_key_max {
        report.verdict = Verdict::TooLarge {
            limit: Limit::OpsPerKey,
            found: ops.len() as u64,
            max: config.ops_per_key_max as u64,
        };
        return report;
    }

    let entries = entries_to_order(&ops, &values);
    report.ops_checked = entries.len();
    let plan = Plan::new(&entries);
    report.segments = plan.segments.len();
    report.segment_ops_largest = plan.segments.iter().map(|s| s.ops()).max().unwrap_or(0);
    let segment_ops_max = config.segment_ops_max.min(SEGMENT_OPS_LIMIT);
    if report.segment_ops_largest > segment_ops_max {
        report.verdict = Verdict::TooLarge {
            limit: Limit::SegmentOps,
            found: report.segment_ops_largest as u64,
            max: segment_ops_max as u64,
        };
        return report;
    }
    // What may pass from one segment to the next: the register's value and
    // the unknown writes that have not taken effect yet and still may.
    let mut states: BTreeSet<(Option<ValueId>, Vec<usize>)> = BTreeSet::from([(None, Vec::new())]);
    let mut searches: u64 = 0;
    for (number, segment) in plan.segments.iter().enumerate() {
        let last = number + 1 == plan.segments.len();
        let mut next_states = BTreeSet::new();
        let mut memo: HashMap<Call, bool> = HashMap::new();
        // Each set of operations fed is counted once, before its first
        // search: whether the tester's search of it stays within the limit.
        let mut counted: HashMap<(Vec<usize>, Vec<usize>), bool> = HashMap::new();
        let mut orderable = |call: Call| -> Result<bool, Limit> {
            if let Some(&known) = memo.get(&call) {
                return Ok(known);
            }
            if searches == SEARCHES_PER_KEY_MAX {
                return Err(Limit::SearchesPerKey);
            }
            searches += 1;
            let fed = Fed {
                entries: &entries,
                returned: &segment.returned,
                open: &call.open,
                applied: &call.applied,
            };
            let answer = if call.remembering {
                report.remembering_searches += 1;
                fed.orderable_remembering(call.start, call.end, config.remembered_states_max)
                    .ok_or(Limit::RememberedStates)?
            } else {
                fed.orderable(call.start, call.end)
            };
            memo.insert(call, answer);
            Ok(answer)
        };
        for (start, pending) in &states {
            let choices = match plan.choices(&entries, number, pending) {
                Ok(choices) => choices,
                Err(count) => {
                    report.verdict = Verdict::TooLarge {
                        limit: Limit::UnknownWriteChoices,
                        found: count,
                        max: UNKNOWN_WRITE_CHOICES_MAX,
                    };
                    return report;
                }
            };
            for choice in choices {
                let fed = Fed {
                    entries: &entries,
                    returned: &segment.returned,
                    open: &choice.open,
                    applied: &choice.applied,
                };
                let key = (choice.open.clone(), choice.applied.clone());
                let remembering = match counted.get(&key) {
                    Some(&within) => !within,
                    None => {
                        let bound = fed.search_steps_bound(!last, config.search_steps_max);
                        if let Some(steps) = bound {
                            report.search_steps_largest = report.search_steps_largest.max(steps);
                        }
                        counted.insert(key, bound.is_some());
                        bound.is_none()
                    }
                };
                let call = |end| Call {
                    start: *start,
                    end,
                    open: choice.open.clone(),
                    applied: choice.applied.clone(),
                    remembering,
                };
                match orderable(call(None)) {
                    Err(limit) => return too_large(report, limit, config),
                    Ok(false) => continue,
                    Ok(true) if last => return report,
                    Ok(true) => {}
                }
                for end in fed.end_candidates(*start) {
                    let state = (end, choice.pending.clone());
                    if next_states.contains(&state) {
                        continue;
                    }
                    match orderable(call(Some(end))) {
                        Err(limit) => return too_large(report, limit, config),
                        Ok(true) => {
                            next_states.insert(state);
                        }
                        Ok(false) => {}
                    }
                }
            }
        }
        if last || next_states.is_empty() {
            report.verdict = Verdict::NotLinearizable;
            let mut indices: HashSet<usize> =
                segment.returned.iter().map(|&i| entries[i].index).collect();
            indices.extend(segment.carried.iter().map(|&u| entries[u].index));
            let starts = states.iter().map(|(value, _)| *value).collect();
            let failed = Failed { indices, starts };
            report.rendering = Some(render(&ops, &values, Some(&failed)));
            return report;
        }
        states = next_states;
    }
    // Only a key without operations to order gets here.
    report
}

/// The verdict for a search stopped by `limit`.
fn too_large(mut report: KeyReport, limit: Limit, config: &CheckConfig) -> KeyReport {
    let max = match limit {
        Limit::RememberedStates => config.remembered_states_max as u64,
        _ => SEARCHES_PER_KEY_MAX,
    };
    report.verdict = Verdict::TooLarge {
        limit,
        found: max + 1,
        max,
    };
    report
}

/// One question to the tester about a segment, remembered per segment
/// because different states often ask the same one.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Call {
    start: Option<ValueId>,
    end: Option<Option<ValueId>>,
    open: Vec<usize>,
    applied: Vec<usize>,
    /// Asked of [`Fed::orderable_remembering`], not of the tester: the
    /// tester's search of these operations could be too long.
    remembering: bool,
}

/// One way to treat the unknown writes that may take effect in a segment.
struct Choice {
    /// Fed as open: they may take effect here or never.
    open: Vec<usize>,
    /// Fed as returning by the last read of their value here: they take
    /// effect here.
    applied: Vec<usize>,
    /// Not fed: they may take effect in a later segment.
    pending: Vec<usize>,
}

/// The values of one key, numbered for the specification.
struct Values<'a> {
    ids: HashMap<Option<&'a [u8]>, ValueId>,
    /// How many puts write each value; a value read but never written is
    /// marked in renderings.
    puts: HashMap<&'a [u8], usize>,
}

impl<'a> Values<'a> {
    fn of(ops: &[&'a Operation]) -> Values<'a> {
        let mut values = Values {
            ids: HashMap::new(),
            puts: HashMap::new(),
        };
        for op in ops {
            if let OpKind::Put(value) = &op.kind {
                *values.puts.entry(value.as_slice()).or_insert(0) += 1;
                values.id(Some(value));
            }
            if let OpEnd::Returned {
                result: OpResult::Value(Some(value)),
                ..
            } = &op.end
            {
                // A value read but never written gets a number no put has,
                // so no order can explain the read.
                values.id(Some(value));
            }
        }
        values
    }

    fn id(&mut self, value: Option<&'a [u8]>) -> ValueId {
        let next = self.ids.len() as ValueId;
        *self.ids.entry(value).or_insert(next)
    }

    fn put_count(&self, value: &[u8]) -> usize {
        self.puts.get(value).copied().unwrap_or(0)
    }

    fn get(&self, value: &'a [u8]) -> ValueId {
        self.ids[&Some(value)]
    }

    fn name(&self, id: Option<ValueId>) -> String {
        match id {
            None => "absent".to_string(),
            Some(id) => self
                .ids
                .iter()
                .find(|(_, v)| **v == id)
                .and_then(|(value, _)| *value)
                .map_or_else(|| format!("value #{id}"), show_value),
        }
    }
}

/// Why operation `i` (in invocation order) cannot have happened, if it
/// cannot.
fn malformed(i: usize, op: &Operation) -> Option<String> {
    let OpEnd::Returned { result, at_ns } = &op.end else {
        return None;
    };
    if *at_ns < op.invoke_ns {
        return Some(format!(
            "operation #{i} returns at {at_ns} ns, before its invocation at {} ns",
            op.invoke_ns
        ));
    }
    let fits = matches!(
        (&op.kind, result),
        (OpKind::Get, OpResult::Value(_)) | (OpKind::Put(_) | OpKind::Remove, OpResult::Ok)
    );
    if !fits {
        return Some(format!(
            "operation #{i} is a {} but returned {result:?}; record a get with \
             OpResult::Value and a put or remove with OpResult::Ok",
            kind_name(&op.kind)
        ));
    }
    None
}

/// The operations the search has to order, in invocation order: all but the
/// unknown ones that cannot change the verdict, with unknown writes' spans
/// cut short (rules 1 to 3 of the module documentation).
fn entries_to_order(ops: &[&Operation], values: &Values) -> Vec<Entry> {
    // For each value read (absent included), the return times of its reads.
    let mut reads: HashMap<Option<&[u8]>, Vec<u64>> = HashMap::new();
    for op in ops {
        if let OpEnd::Returned {
            result: OpResult::Value(value),
            at_ns,
        } = &op.end
        {
            reads.entry(value.as_deref()).or_default().push(*at_ns);
        }
    }
    let mut entries = Vec::with_capacity(ops.len());
    for (index, op) in ops.iter().enumerate() {
        let register_op = match &op.kind {
            OpKind::Get => RegisterOp::Get,
            OpKind::Put(value) => RegisterOp::Put(values.get(value)),
            OpKind::Remove => RegisterOp::Remove,
        };
        let entry = match &op.end {
            OpEnd::Returned { result, at_ns } => {
                let ret = match (result, &op.kind) {
                    (OpResult::Value(value), _) => {
                        RegisterRet::GetOk(value.as_deref().map(|v| values.get(v)))
                    }
                    (OpResult::Ok, OpKind::Remove) => RegisterRet::RemoveOk,
                    (OpResult::Ok, _) => RegisterRet::PutOk,
                };
                Entry {
                    index,
                    op: register_op,
                    ret: Some(ret),
                    invoke_ns: op.invoke_ns,
                    return_ns: Some(*at_ns),
                    span_end_ns: *at_ns,
                }
            }
            OpEnd::Unknown => {
                let written = match &op.kind {
                    OpKind::Get => continue,
                    OpKind::Put(value) => Some(value.as_slice()),
                    OpKind::Remove => None,
                };
                // The reads that returned after the invocation are the ones
                // this write can explain.
                let explained: Vec<u64> = reads
                    .get(&written)
                    .into_iter()
                    .flatten()
                    .copied()
                    .filter(|&t| t > op.invoke_ns)
                    .collect();
                let span_end_ns = if written.is_some_and(|v| values.put_count(v) == 1) {
                    explained.iter().min()
                } else {
                    explained.iter().max()
                };
                let Some(&span_end_ns) = span_end_ns else {
                    continue;
                };
                Entry {
                    index,
                    op: register_op,
                    ret: None,
                    invoke_ns: op.invoke_ns,
                    return_ns: None,
                    span_end_ns,
                }
            }
        };
        entries.push(entry);
    }
    entries
}

/// How a key's operations are cut into segments.
struct Plan {
    segments: Vec<Segment>,
    /// For each unknown write (by entry position), the last segment it may
    /// take effect in.
    last_segment: HashMap<usize, usize>,
}

/// A stretch of returned operations that overlap one another.
struct Segment {
    /// Entry positions of its returned operations.
    returned: Vec<usize>,
    /// Unknown writes invoked before its first return and after the previous
    /// segment's last return.
    born: Vec<usize>,
    /// Every unknown write that may take effect in it.
    carried: Vec<usize>,
}

impl Segment {
    fn ops(&self) -> usize {
        self.returned.len() + self.carried.len()
    }
}

impl Plan {
    /// Cuts the returned entries (in invocation order) where no returned
    /// operation's span crosses, spans that touch overlapping; then places
    /// each unknown write from the segment it was invoked in (or the next
    /// one, when invoked between two) to the segment its span ends in.
    fn new(entries: &[Entry]) -> Plan {
        let mut segments: Vec<Segment> = Vec::new();
        let mut last_return_ns: Vec<u64> = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            let Some(return_ns) = entry.return_ns else {
                continue;
            };
            match last_return_ns.last_mut() {
                Some(end_ns) if entry.invoke_ns <= *end_ns => {
                    *end_ns = (*end_ns).max(return_ns);
                    segments
                        .last_mut()
                        .expect("one end per segment")
                        .returned
                        .push(i);
                }
                _ => {
                    last_return_ns.push(return_ns);
                    segments.push(Segment {
                        returned: vec![i],
                        born: Vec::new(),
                        carried: Vec::new(),
                    });
                }
            }
        }
        // The first segment whose last return is at or after a time.
        let segment_at = |t: u64| last_return_ns.partition_point(|&end_ns| end_ns < t);
        let mut last_segment = HashMap::new();
        for (u, entry) in entries.iter().enumerate() {
            if entry.return_ns.is_some() {
                continue;
            }
            // Rule 2 kept the write because a read returned after its
            // invocation, and its span ends at such a return, so both
            // segments exist.
            let (born, last) = (segment_at(entry.invoke_ns), segment_at(entry.span_end_ns));
            segments[born].born.push(u);
            for segment in &mut segments[born..=last] {
                segment.carried.push(u);
            }
            last_segment.insert(u, last);
        }
        Plan {
            segments,
            last_segment,
        }
    }

    /// The ways to treat the unknown writes that may take effect in segment
    /// `number`, given those still pending from earlier segments.
    ///
    /// A write whose last segment this is goes in open. Any other is either
    /// applied here or left pending, but applying it here is only tried
    /// when a read of this segment returned its value after its invocation:
    /// otherwise, in any valid order, it is followed here by a write before
    /// any read (and can be deleted) or by nothing (and can as well take
    /// effect at the start of the next segment). For the same reason each
    /// write applied here is followed by reads of its value of its own, so
    /// no more writes of a value are applied than this segment has reads of
    /// it. Pending removes invoked before this segment are interchangeable
    /// from here on (all were invoked before anything here, and all can
    /// explain the same reads of absent), so only how many of them are
    /// applied is tried.
    ///
    /// Fails with the number of choices when that is more than
    /// [`UNKNOWN_WRITE_CHOICES_MAX`].
    fn choices(
        &self,
        entries: &[Entry],
        number: usize,
        pending: &[usize],
    ) -> Result<Vec<Choice>, u64> {
        let segment = &self.segments[number];
        let last = number + 1 == self.segments.len();
        let mut reads_of: HashMap<Option<ValueId>, usize> = HashMap::new();
        for &i in &segment.returned {
            if let Some(RegisterRet::GetOk(value)) = entries[i].ret {
                *reads_of.entry(value).or_insert(0) += 1;
            }
        }
        let mut open = Vec::new();
        let mut deferred = Vec::new();
        let mut removes_before = Vec::new();
        // The other writes that may be applied here, by value.
        let mut groups: BTreeMap<Option<ValueId>, Vec<usize>> = BTreeMap::new();
        for &u in pending.iter().chain(&segment.born) {
            let entry = &entries[u];
            let written = entry.written();
            let read_here = segment.returned.iter().any(|&i| {
                entries[i].return_ns.is_some_and(|t| t > entry.invoke_ns)
                    && matches!(&entries[i].ret, Some(RegisterRet::GetOk(v)) if Some(*v) == written)
            });
            if last || self.last_segment[&u] == number {
                open.push(u);
            } else if !read_here {
                deferred.push(u);
            } else if entry.op == RegisterOp::Remove && pending.contains(&u) {
                removes_before.push(u);
            } else if let Some(value) = written {
                groups.entry(value).or_default().push(u);
            }
        }
        let cap = |value: Option<ValueId>| reads_of.get(&value).copied().unwrap_or(0);
        // Count first, then build, so that a segment with many choices costs
        // nothing before it is refused.
        let removes_here = groups.get(&None).map_or(0, Vec::len);
        let mut count: u64 = (0..=removes_before.len().min(cap(None)))
            .map(|j| subsets_up_to_count(removes_here, cap(None) - j))
            .fold(0, u64::saturating_add);
        for (&value, group) in &groups {
            if value.is_some() {
                count = count.saturating_mul(subsets_up_to_count(group.len(), cap(value)));
            }
        }
        if count > UNKNOWN_WRITE_CHOICES_MAX {
            return Err(count);
        }

        open.sort_unstable();
        removes_before.sort_unstable();
        // Every combination of: a number j of the earlier removes, removes
        // of this segment, and writes of each other value.
        let mut partial: Vec<Vec<usize>> = Vec::new();
        let no_removes_here = Vec::new();
        let removes_here = groups.get(&None).unwrap_or(&no_removes_here);
        for j in 0..=removes_before.len().min(cap(None)) {
            for mut subset in subsets_up_to(removes_here, cap(None) - j) {
                subset.extend_from_slice(&removes_before[..j]);
                partial.push(subset);
            }
        }
        for (&value, group) in &groups {
            if value.is_none() {
                continue;
            }
            let subsets = subsets_up_to(group, cap(value));
            partial = partial
                .iter()
                .flat_map(|base| {
                    subsets
                        .iter()
                        .map(move |subset| [base.as_slice(), subset].concat())
                })
                .collect();
        }
        let choices = partial
            .into_iter()
            .map(|mut applied| {
                applied.sort_unstable();
                let mut pending: Vec<usize> = deferred
                    .iter()
                    .chain(&removes_before)
                    .chain(groups.values().flatten())
                    .copied()
                    .filter(|u| !applied.contains(u))
                    .collect();
                pending.sort_unstable();
                Choice {
                    open: open.clone(),
                    applied,
                    pending,
                }
            })
            .collect();
        Ok(choices)
    }
}

/// The number of subsets of `n` items with at most `size_max` members,
/// saturating.
fn subsets_up_to_count(n: usize, size_max: usize) -> u64 {
    // C(n, j) for j = 0, 1, ..., built up one factor at a time.
    let mut total: u64 = 0;
    let mut binomial: u64 = 1;
    for j in 0..=n.min(size_max) {
        total = total.saturating_add(binomial);
        binomial = binomial.saturating_mul((n - j) as u64) / (j as u64 + 1);
    }
    total
}

/// The subsets of `items` with at most `size_max` members.
fn subsets_up_to(items: &[usize], size_max: usize) -> Vec<Vec<usize>> {
    let mut subsets = vec![Vec::new()];
    for &item in items {
        let with: Vec<Vec<usize>> = subsets
            .iter()
            .filter(|s| s.len() < size_max)
            .map(|s| [s.as_slice(), &[item]].concat())
            .collect();
        subsets.extend(with);
    }
    subsets
}

/// The operations of one segment as one call to the tester sees them.
struct Fed<'a> {
    entries: &'a [Entry],
    returned: &'a [usize],
    /// Unknown writes that may take effect here or not at all.
    open: &'a [usize],
    /// Unknown writes that take effect here.
    applied: &'a [usize],
}

impl Fed<'_> {
    /// When an applied write has taken effect at the latest: by the last
    /// return of a read of its value here that returned after its
    /// invocation. Applied writes are only tried where such a read exists,
    /// and one that no such read follows before the next write could as
    /// well not take effect here (see [`Plan::choices`]).
    fn applied_return_ns(&self, u: usize) -> u64 {
        let entry = &self.entries[u];
        let written = entry.written();
        self.returned
            .iter()
            .map(|&i| &self.entries[i])
            .filter(|r| matches!(r.ret, Some(RegisterRet::GetOk(v)) if Some(v) == written))
            .filter_map(|r| r.return_ns)
            .filter(|&t| t > entry.invoke_ns)
            .max()
            .unwrap_or(u64::MAX - 1)
    }

    /// (invocation, return) of each operation as [`Fed::orderable`] feeds
    /// it, returned ones first, then open ones (which never return), then
    /// applied ones (which return by their last read here).
    fn spans(&self) -> Vec<(u64, Option<u64>)> {
        let returned = self
            .returned
            .iter()
            .map(|&i| (self.entries[i].invoke_ns, self.entries[i].return_ns));
        let open = self.open.iter().map(|&u| (self.entries[u].invoke_ns, None));
        let applied = self
            .applied
            .iter()
            .map(|&u| (self.entries[u].invoke_ns, Some(self.applied_return_ns(u))));
        returned.chain(open).chain(applied).collect()
    }

    /// Counts the steps the tester's search could take on these operations
    /// before it runs, with the final read if `with_end`: `None` if more
    /// than `steps_max`.
    ///
    /// The search places one operation at a time, any whose predecessors in
    /// real time are placed, backtracks on a dead end and remembers nothing,
    /// so in the worst case it visits every sequence of placements once: as
    /// many steps as there are paths from the empty set to any reachable set
    /// of placed operations, ending where every returned operation is
    /// placed. A layer-by-layer count over those sets gives that number
    /// exactly, before the register's rules prune anything, so it is an
    /// upper bound.
    fn search_steps_bound(&self, with_end: bool, steps_max: u64) -> Option<u64> {
        // The final read comes after everything.
        let mut spans = self.spans();
        if with_end {
            spans.push((u64::MAX, Some(u64::MAX)));
        }
        let (must, before) = real_time_order(&spans);
        let bit = |i: usize| 1u128 << i;
        let mut steps: u64 = 0;
        let mut layer: HashMap<u128, u64> = HashMap::from([(0, 1)]);
        while !layer.is_empty() {
            let mut next: HashMap<u128, u64> = HashMap::new();
            for (&placed, &paths) in &layer {
                steps = steps.saturating_add(paths);
                if steps > steps_max || next.len() > SEARCH_SETS_MAX {
                    return None;
                }
                // The search stops once every returned operation is placed.
                if placed & must == must {
                    continue;
                }
                for (i, &needed) in before.iter().enumerate() {
                    if placed & bit(i) == 0 && placed & needed == needed {
                        let count = next.entry(placed | bit(i)).or_insert(0);
                        *count = count.saturating_add(paths);
                    }
                }
            }
            layer = next;
        }
        Some(steps)
    }

    /// The values the segment may leave in the register when it started with
    /// `start`: those of writes that no returned write of the segment follows
    /// in real time, and `start` itself if no write must take effect.
    fn end_candidates(&self, start: Option<ValueId>) -> BTreeSet<Option<ValueId>> {
        let returned_writes: Vec<&Entry> = self
            .returned
            .iter()
            .map(|&i| &self.entries[i])
            .filter(|e| e.written().is_some())
            .collect();
        let reads: Vec<(u64, Option<ValueId>)> = self
            .returned
            .iter()
            .filter_map(|&i| match self.entries[i].ret {
                Some(RegisterRet::GetOk(value)) => Some((self.entries[i].invoke_ns, value)),
                _ => None,
            })
            .collect();
        // A write is not the last one if a returned write was invoked after
        // its span ended, nor if a read invoked after that returned another
        // value.
        let may_be_last = |end_ns: u64, value: Option<ValueId>| {
            !returned_writes.iter().any(|later| later.invoke_ns > end_ns)
                && !reads
                    .iter()
                    .any(|&(invoke_ns, read)| invoke_ns > end_ns && read != value)
        };
        let mut ends = BTreeSet::new();
        for entry in returned_writes
            .iter()
            .copied()
            .chain(self.open.iter().map(|&u| &self.entries[u]))
        {
            if let Some(value) = entry.written() {
                if may_be_last(entry.span_end_ns, value) {
                    ends.insert(value);
                }
            }
        }
        for &u in self.applied {
            if let Some(value) = self.entries[u].written() {
                if may_be_last(self.applied_return_ns(u), value) {
                    ends.insert(value);
                }
            }
        }
        // With no write taking effect, every read returns the start value.
        if returned_writes.is_empty()
            && self.applied.is_empty()
            && reads.iter().all(|&(_, read)| read == start)
        {
            ends.insert(start);
        }
        ends
    }

    /// Asks stateright whether the operations can be ordered, starting from
    /// `start` and, if `end` is given, leaving `end` in the register (a read
    /// invoked after everything else must return it).
    fn orderable(&self, start: Option<ValueId>, end: Option<Option<ValueId>>) -> bool {
        // Events sort by time; at equal times invocations go first, so that
        // an invocation at the instant of another operation's return counts
        // as overlapping it, the reading that accepts more histories.
        let mut events: Vec<(u64, u8, usize)> = Vec::new();
        for &i in self.returned {
            let entry = &self.entries[i];
            events.push((entry.invoke_ns, 0, i));
            events.push((
                entry.return_ns.expect("returned entries have a return"),
                1,
                i,
            ));
        }
        for &u in self.open {
            events.push((self.entries[u].invoke_ns, 0, u));
        }
        for &u in self.applied {
            events.push((self.entries[u].invoke_ns, 0, u));
            events.push((self.applied_return_ns(u), 1, u));
        }
        events.sort_unstable();

        let mut tester = LinearizabilityTester::new(Register { value: start });
        let mut thread_of: HashMap<usize, usize> = HashMap::new();
        let mut idle_threads: Vec<usize> = Vec::new();
        let mut threads = 0;
        for (_, class, i) in events {
            let entry = &self.entries[i];
            if class == 0 {
                let thread = idle_threads.pop().unwrap_or_else(|| {
                    threads += 1;
                    threads - 1
                });
                thread_of.insert(i, thread);
                tester
                    .on_invoke(thread, entry.op.clone())
                    .expect("an idle thread has no operation in flight");
            } else {
                let ret = match (&entry.ret, &entry.op) {
                    (Some(ret), _) => ret.clone(),
                    (None, RegisterOp::Remove) => RegisterRet::RemoveOk,
                    (None, _) => RegisterRet::PutOk,
                };
                tester
                    .on_return(thread_of[&i], ret)
                    .expect("a return follows its own invocation on its thread");
                // The thread of an open operation never gets here, so it is
                // never reused and its operation stays open to the end.
                idle_threads.push(thread_of[&i]);
            }
        }
        if let Some(end) = end {
            tester
                .on_invret(threads, RegisterOp::Get, RegisterRet::GetOk(end))
                .expect("a fresh thread has no operation in flight");
        }
        tester.is_consistent()
    }
}

impl Fed<'_> {
    /// [`Fed::orderable`], decided by a search of its own that remembers
    /// every (operations placed, register value) pair it has reached and
    /// visits each once, where the tester's search remembers nothing and
    /// may try the same placements in every order. For segments whose
    /// count of the tester's steps is over the limit: the number of such
    /// pairs is at most the placed sets the count walks times the values,
    /// and is usually far smaller, since the register's rules cut most
    /// placements. `None` past `states_max` pairs.
    ///
    /// An operation may be placed once every operation that returned
    /// before its invocation is placed (real-time order, with an
    /// invocation at the instant of a return counting as overlapping, as
    /// in [`Fed::orderable`]); a returned read only where the register
    /// holds what it read; an open write, which never returns, at any such
    /// time or never; an applied write returns by
    /// [`Fed::applied_return_ns`]. The order is found once every operation
    /// that returns is placed and, with `end`, the register holds `end`
    /// (a final read, invoked after every return).
    fn orderable_remembering(
        &self,
        start: Option<ValueId>,
        end: Option<Option<ValueId>>,
        states_max: usize,
    ) -> Option<bool> {
        // Each operation and its answer if it returned, in the order of
        // `spans`; only returned reads have an answer that matters.
        let returned = self
            .returned
            .iter()
            .map(|&i| (&self.entries[i].op, self.entries[i].ret.as_ref()));
        let unknown = (self.open.iter().chain(self.applied)).map(|&u| (&self.entries[u].op, None));
        let ops: Vec<(&RegisterOp, Option<&RegisterRet>)> = returned.chain(unknown).collect();
        let (must, before) = real_time_order(&self.spans());
        let bit = |i: usize| 1u128 << i;
        let mut seen: HashSet<(u128, Option<ValueId>)> = HashSet::from([(0, start)]);
        let mut stack = vec![(0u128, start)];
        while let Some((placed, value)) = stack.pop() {
            if placed & must == must && end.is_none_or(|end| end == value) {
                return Some(true);
            }
            for (i, &(op, ret)) in ops.iter().enumerate() {
                if placed & bit(i) != 0 || placed & before[i] != before[i] {
                    continue;
                }
                let after = match (op, ret) {
                    (RegisterOp::Get, Some(RegisterRet::GetOk(read))) if *read == value => value,
                    // A read of another value cannot be placed now; an
                    // unknown read (never fed) would change nothing.
                    (RegisterOp::Get, _) => continue,
                    (RegisterOp::Put(v), _) => Some(*v),
                    (RegisterOp::Remove, _) => None,
                };
                if seen.insert((placed | bit(i), after)) {
                    if seen.len() > states_max {
                        return None;
                    }
                    stack.push((placed | bit(i), after));
                }
            }
        }
        Some(false)
    }
}

/// The real-time order of operations given as (invocation, return) spans,
/// as bit sets over their positions: those that return (and so must be
/// placed), and for each operation those that returned before it was
/// invoked (and so must be placed before it).
fn real_time_order(spans: &[(u64, Option<u64>)]) -> (u128, Vec<u128>) {
    assert!(
        spans.len() <= 128,
        "segments are capped at SEGMENT_OPS_LIMIT operations"
    );
    let bit = |i: usize| 1u128 << i;
    let must = (0..spans.len())
        .filter(|&i| spans[i].1.is_some())
        .map(bit)
        .sum();
    let before = spans
        .iter()
        .map(|&(invoke_ns, _)| {
            (0..spans.len())
                .filter(|&j| spans[j].1.is_some_and(|return_ns| return_ns < invoke_ns))
                .map(bit)
                .sum()
        })
        .collect();
    (must, before)
}

/// The most sets of placed operations `Fed::search_steps_bound` keeps in one
/// layer; more means a search far beyond any sensible step limit.
const SEARCH_SETS_MAX: usize = 1 << 20;

fn kind_name(kind: &OpKind) -> &'static str {
    match kind {
        OpKind::Get => "get",
        OpKind::Put(_) => "put",
        OpKind::Remove => "remove",
    }
}

/// The segment no order explains, for the rendering.
struct Failed {
    indices: HashSet<usize>,
    starts: BTreeSet<Option<ValueId>>,
}

/// One key's history as a table, times relative to its first invocation.
fn render(ops: &[&Operation], values: &Values, failed: Option<&Failed>) -> String {
    let start_ns = ops.first().map_or(0, |op| op.invoke_ns);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "    {:>4}  {:<16} {:>14} {:>14}  operation   (times in ns since the key's first invocation)",
        "#", "client/session", "invoked", "returned"
    );
    for (i, op) in ops.iter().enumerate() {
        let mark = if failed.is_some_and(|f| f.indices.contains(&i)) {
            "*"
        } else {
            " "
        };
        let who = format!("c{}/s{}", op.client, op.session);
        let invoked = op.invoke_ns.saturating_sub(start_ns).to_string();
        let returned = op.return_ns().map_or_else(
            || "?".to_string(),
            |t| t.saturating_sub(start_ns).to_string(),
        );
        let what = match &op.kind {
            OpKind::Get => "get".to_string(),
            OpKind::Put(value) => format!("put {}", show_value(value)),
            OpKind::Remove => "remove".to_string(),
        };
        let answer = match &op.end {
            OpEnd::Unknown => "outcome unknown".to_string(),
            OpEnd::Returned {
                result: OpResult::Ok,
                ..
            } => "ok".to_string(),
            OpEnd::Returned {
                result: OpResult::Value(None),
                ..
            } => "absent".to_string(),
            OpEnd::Returned {
                result: OpResult::Value(Some(value)),
                ..
            } => {
                if values.put_count(value) > 0 {
                    show_value(value)
                } else {
                    format!("{} (never written)", show_value(value))
                }
            }
        };
        let _ = writeln!(
            out,
            "  {mark} {i:>4}  {who:<16} {invoked:>14} {returned:>14}  {what} -> {answer}"
        );
    }
    if let Some(failed) = failed {
        let starts: Vec<String> = failed.starts.iter().map(|v| values.name(*v)).collect();
        let _ = writeln!(
            out,
            "  * marks the first stretch of overlapping operations that no order explains, \
             starting from any value the operations before it can leave: {}",
            starts.join(", ")
        );
    }
    out
}

/// Values longer than this are shortened in renderings.
const SHOWN_BYTES_MAX: usize = 24;

/// A value or key for a person: quoted text when it is printable ASCII,
/// hex otherwise, shortened past 24 bytes with its length.
pub fn show_value(bytes: &[u8]) -> String {
    let shown = &bytes[..bytes.len().min(SHOWN_BYTES_MAX)];
    let mut out = if shown.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
        format!("{:?}", String::from_utf8_lossy(shown))
    } else {
        let mut hex = String::from("0x");
        for b in shown {
            let _ = write!(hex, "{b:02x}");
        }
        hex
    };
    if bytes.len() > SHOWN_BYTES_MAX {
        let _ = write!(out, "…({} bytes)", bytes.len());
    }
    out
}
