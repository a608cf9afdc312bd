//! Random histories that are linearizable by construction, to test the
//! checker and to measure its cost.
//!
//! A single-copy in-memory store serves several clients whose operations
//! overlap at random. Each operation takes effect at one instant between its
//! invocation and its return (its linearization point), so the history is
//! linearizable whatever the interleaving. Some operations end with an
//! unknown outcome, before or after they took effect, as a client that times
//! out would see them.
//!
//! [`break_one_read`] then changes one read so that the history is
//! certainly not linearizable, to test that the checker notices.
//!
//! This module does not drive bricks or libraries; that is the simulator's
//! job.

use std::collections::HashMap;

use rand::Rng;

use crate::history::{History, OpEnd, OpKind, OpResult, Operation};

/// The shape of a generated history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GenConfig {
    /// Clients with one operation in flight each; more clients, more overlap.
    pub clients: u32,
    /// Keys named `k0`, `k1`, ...
    pub keys: u32,
    /// Operations over all clients and keys.
    pub ops: u32,
    /// Out of 1,000 steps of an operation in flight (before and after it
    /// takes effect), how many end it with an unknown outcome instead.
    pub unknown_per_mille: u32,
    /// After this many invocations, clients invoke nothing new until every
    /// operation in flight has ended, so that the history has a quiet
    /// moment; 0 for never.
    pub quiesce_every_ops: u32,
}

impl Default for GenConfig {
    fn default() -> Self {
        GenConfig {
            clients: 4,
            keys: 2,
            ops: 60,
            unknown_per_mille: 20,
            quiesce_every_ops: 0,
        }
    }
}

/// An operation in flight at its client.
struct InFlight {
    index: usize,
    /// The result, once the operation has taken effect.
    result: Option<OpResult>,
}

/// Generates a history from `config` with randomness from `rng`. Every put
/// writes a value no other put writes (`v<n>`), so a read tells which put it
/// saw.
pub fn linearizable_history(rng: &mut impl Rng, config: &GenConfig) -> History {
    assert!(
        config.clients > 0 && config.keys > 0,
        "a history needs clients and keys"
    );
    let mut history = History::new();
    let mut store: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
    let mut in_flight: Vec<Option<InFlight>> = (0..config.clients).map(|_| None).collect();
    let mut sessions = vec![0u64; config.clients as usize];
    let mut ops_left = config.ops;
    let mut now_ns = 0u64;
    // Each operation needs at most three steps (invoke, take effect, end),
    // so this bound is never what stops the loop.
    let steps_max = 3 * u64::from(config.ops) + 1;
    for _ in 0..steps_max {
        let busy = in_flight.iter().filter(|f| f.is_some()).count();
        if ops_left == 0 && busy == 0 {
            break;
        }
        let invoked = config.ops - ops_left;
        let quiescing = config.quiesce_every_ops > 0
            && invoked > 0
            && invoked.is_multiple_of(config.quiesce_every_ops)
            && busy > 0;
        let may_invoke = ops_left > 0 && !quiescing;
        // Pick a client that has something to do.
        let candidates: Vec<usize> = (0..in_flight.len())
            .filter(|&c| in_flight[c].is_some() || may_invoke)
            .collect();
        let client = candidates[rng.random_range(0..candidates.len())];
        now_ns += rng.random_range(1..10);
        let unknown_now = rng.random_range(0..1000) < config.unknown_per_mille;
        match in_flight[client].take() {
            None => {
                ops_left -= 1;
                let key = format!("k{}", rng.random_range(0..config.keys)).into_bytes();
                let roll = rng.random_range(0..100);
                let kind = if roll < 40 {
                    OpKind::Get
                } else if roll < 85 {
                    OpKind::Put(format!("v{}", history.len()).into_bytes())
                } else {
                    OpKind::Remove
                };
                in_flight[client] = Some(InFlight {
                    index: history.len(),
                    result: None,
                });
                history.push(Operation {
                    client: client as u64,
                    session: sessions[client],
                    key,
                    kind,
                    invoke_ns: now_ns,
                    end: OpEnd::Unknown,
                });
            }
            Some(flight) if unknown_now => {
                // Given up, whether or not it took effect; the entry already
                // says unknown. The client carries on as a new session.
                debug_assert_eq!(history.ops[flight.index].end, OpEnd::Unknown);
                sessions[client] += 1;
            }
            Some(InFlight {
                index,
                result: None,
            }) => {
                let op = &history.ops[index];
                let result = match &op.kind {
                    OpKind::Get => OpResult::Value(store.get(&op.key).cloned()),
                    OpKind::Put(value) => {
                        store.insert(op.key.clone(), value.clone());
                        OpResult::Ok
                    }
                    OpKind::Remove => {
                        store.remove(&op.key);
                        OpResult::Ok
                    }
                };
                in_flight[client] = Some(InFlight {
                    index,
                    result: Some(result),
                });
            }
            Some(InFlight {
                index,
                result: Some(result),
            }) => {
                history.ops[index].end = OpEnd::Returned {
                    result,
                    at_ns: now_ns,
                };
            }
        }
    }
    history
}

/// How [`break_one_read`] changed a read. Each makes any history not
/// linearizable, whatever the rest of it looks like, provided every put
/// writes a value no other put writes (as [`linearizable_history`] does).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Mutation {
    /// The read returns a value whose only put returned before another
    /// returned write was invoked, which returned before the read was
    /// invoked.
    Stale,
    /// The read returns absent, although a put returned before it was
    /// invoked and the key has no remove at all.
    LostWrite,
    /// The read returns a value no put wrote.
    NeverWritten,
}

/// Changes the result of one returned get so that the history is certainly
/// not linearizable; returns the operation's index and the kind of change,
/// or `None` if the history has no returned get. Stale reads and lost writes
/// are preferred, a value never written is the fallback.
pub fn break_one_read(history: &mut History, rng: &mut impl Rng) -> Option<(usize, Mutation)> {
    let gets: Vec<usize> = (0..history.len())
        .filter(|&i| history.ops[i].kind == OpKind::Get && history.ops[i].return_ns().is_some())
        .collect();
    if gets.is_empty() {
        return None;
    }
    let first = rng.random_range(0..gets.len());
    let mut kinds = [Mutation::Stale, Mutation::LostWrite];
    if rng.random_bool(0.5) {
        kinds.swap(0, 1);
    }
    let mut change = None;
    'reads: for &g in gets.iter().cycle().skip(first).take(gets.len()) {
        let read = &history.ops[g];
        let same_key: Vec<&Operation> =
            history.ops.iter().filter(|op| op.key == read.key).collect();
        for kind in kinds {
            let value = match kind {
                Mutation::Stale => stale_value(&same_key, read.invoke_ns).map(Some),
                _ => lost_write(&same_key, read.invoke_ns).then_some(None),
            };
            if let Some(value) = value {
                change = Some((g, kind, value));
                break 'reads;
            }
        }
    }
    let (g, kind, value) = change.unwrap_or_else(|| {
        (
            gets[first],
            Mutation::NeverWritten,
            Some(b"never written".to_vec()),
        )
    });
    let at_ns = history.ops[g]
        .return_ns()
        .expect("chosen among returned gets");
    history.ops[g].end = OpEnd::Returned {
        result: OpResult::Value(value),
        at_ns,
    };
    Some((g, kind))
}

/// A value whose put returned before another returned write of the key was
/// invoked, which returned before `read_invoke_ns`.
fn stale_value(same_key: &[&Operation], read_invoke_ns: u64) -> Option<Vec<u8>> {
    same_key.iter().find_map(|old| {
        let OpKind::Put(value) = &old.kind else {
            return None;
        };
        let old_return_ns = old.return_ns()?;
        let overwritten = same_key.iter().any(|newer| {
            newer.is_write()
                && newer.kind != old.kind
                && newer.invoke_ns > old_return_ns
                && newer.return_ns().is_some_and(|t| t < read_invoke_ns)
        });
        overwritten.then(|| value.clone())
    })
}

/// Whether a put of the key returned before `read_invoke_ns` and the key has
/// no remove at all.
fn lost_write(same_key: &[&Operation], read_invoke_ns: u64) -> bool {
    same_key.iter().all(|op| op.kind != OpKind::Remove)
        && same_key
            .iter()
            .any(|op| op.is_write() && op.return_ns().is_some_and(|t| t < read_invoke_ns))
}
