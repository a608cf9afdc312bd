//! Tests of the linearizability checker: hand-written histories whose verdict
//! is known, histories recorded from real threads, and seeded random
//! histories that are linearizable by construction, before and after a
//! mutation that makes them not linearizable.
//!
//! `cargo test -p sim --test checker` runs them; a random test prints its
//! seed, and `SEED=<n>` replays it. `CHECKER_ROUNDS=<n>` sets how many random
//! histories each random test checks, for a longer soak.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sim::generate::{break_one_read, linearizable_history, GenConfig, Mutation};
use sim::history::{History, HistoryRecorder, OpEnd, OpKind, OpResult, Operation};
use sim::linearizability::{
    check, check_with, CheckConfig, Limit, Register, RegisterOp, RegisterRet, Verdict,
};
use stateright::semantics::{ConsistencyTester, LinearizabilityTester};

// ----------------------------------------------------------------------
// Helpers to write histories by hand, on one key "k", times in ticks.

fn put(client: u64, value: &str, invoke: u64, ret: u64) -> Operation {
    returned(client, OpKind::Put(value.into()), invoke, ret, OpResult::Ok)
}

fn remove(client: u64, invoke: u64, ret: u64) -> Operation {
    returned(client, OpKind::Remove, invoke, ret, OpResult::Ok)
}

fn get(client: u64, invoke: u64, ret: u64, value: Option<&str>) -> Operation {
    let result = OpResult::Value(value.map(|v| v.as_bytes().to_vec()));
    returned(client, OpKind::Get, invoke, ret, result)
}

fn put_unknown(client: u64, value: &str, invoke: u64) -> Operation {
    unknown(client, OpKind::Put(value.into()), invoke)
}

fn returned(client: u64, kind: OpKind, invoke: u64, ret: u64, result: OpResult) -> Operation {
    Operation {
        client,
        session: 0,
        key: b"k".to_vec(),
        kind,
        invoke_ns: invoke,
        end: OpEnd::Returned { result, at_ns: ret },
    }
}

fn unknown(client: u64, kind: OpKind, invoke: u64) -> Operation {
    Operation {
        client,
        session: 0,
        key: b"k".to_vec(),
        kind,
        invoke_ns: invoke,
        end: OpEnd::Unknown,
    }
}

fn history(ops: Vec<Operation>) -> History {
    History { ops }
}

fn verdict(ops: Vec<Operation>) -> Verdict {
    let report = check_with(&history(ops), &CheckConfig::default());
    assert_eq!(report.keys.len(), 1, "these histories use one key");
    report.keys[0].verdict.clone()
}

#[track_caller]
fn assert_passes(ops: Vec<Operation>) {
    let report = check_with(&history(ops), &CheckConfig::default());
    assert!(report.is_ok(), "expected linearizable:\n{report}");
}

#[track_caller]
fn assert_rejected(ops: Vec<Operation>) {
    let report = check_with(&history(ops), &CheckConfig::default());
    assert!(
        !report.is_ok(),
        "expected a violation, the checker passed:\n{report}"
    );
    assert_eq!(report.keys[0].verdict, Verdict::NotLinearizable, "{report}");
    println!("{report}");
}

// ----------------------------------------------------------------------
// The register specification and stateright's treatment of open operations.

/// An operation invoked and never returned may take effect at any point after
/// its invocation, or never; once it has taken effect it stays in effect.
/// This is what the checker relies on for unknown outcomes.
#[test]
fn stateright_treats_an_open_operation_as_maybe_happening_after_its_invocation() {
    let tester = || LinearizabilityTester::<usize, Register>::new(Register::default());
    let read = |v: Option<u64>| RegisterRet::GetOk(v);

    // Left out: a later read sees the key still absent.
    let mut t = tester();
    t.on_invoke(0, RegisterOp::Put(1)).unwrap();
    t.on_invret(1, RegisterOp::Get, read(None)).unwrap();
    assert!(t.is_consistent());

    // Taken effect: a later read sees it.
    let mut t = tester();
    t.on_invoke(0, RegisterOp::Put(1)).unwrap();
    t.on_invret(1, RegisterOp::Get, read(Some(1))).unwrap();
    assert!(t.is_consistent());

    // Taken effect between two reads.
    let mut t = tester();
    t.on_invoke(0, RegisterOp::Put(1)).unwrap();
    t.on_invret(1, RegisterOp::Get, read(None)).unwrap();
    t.on_invret(1, RegisterOp::Get, read(Some(1))).unwrap();
    assert!(t.is_consistent());

    // Not before its invocation: a read that finished earlier cannot see it.
    let mut t = tester();
    t.on_invret(1, RegisterOp::Get, read(Some(1))).unwrap();
    t.on_invoke(0, RegisterOp::Put(1)).unwrap();
    assert!(!t.is_consistent());

    // Not undone: seen by one read, a later read cannot miss it.
    let mut t = tester();
    t.on_invoke(0, RegisterOp::Put(1)).unwrap();
    t.on_invret(1, RegisterOp::Get, read(Some(1))).unwrap();
    t.on_invret(2, RegisterOp::Get, read(None)).unwrap();
    assert!(!t.is_consistent());
}

#[test]
fn register_specification_reads_the_last_write() {
    use stateright::semantics::SequentialSpec;
    let mut r = Register::default();
    assert_eq!(r.invoke(&RegisterOp::Get), RegisterRet::GetOk(None));
    assert_eq!(r.invoke(&RegisterOp::Put(7)), RegisterRet::PutOk);
    assert_eq!(r.invoke(&RegisterOp::Get), RegisterRet::GetOk(Some(7)));
    assert_eq!(r.invoke(&RegisterOp::Remove), RegisterRet::RemoveOk);
    assert_eq!(r.invoke(&RegisterOp::Get), RegisterRet::GetOk(None));
}

// ----------------------------------------------------------------------
// Hand-written histories.

#[test]
fn sequential_history_passes() {
    assert_passes(vec![
        get(1, 0, 1, None),
        put(1, "a", 2, 3),
        get(2, 4, 5, Some("a")),
        put(2, "b", 6, 7),
        get(1, 8, 9, Some("b")),
        remove(1, 10, 11),
        get(2, 12, 13, None),
    ]);
}

#[test]
fn overlapping_read_may_see_either_value() {
    // put b overlaps the read; the read may return the old or the new value.
    for seen in ["a", "b"] {
        assert_passes(vec![
            put(1, "a", 0, 10),
            put(1, "b", 20, 40),
            get(2, 25, 35, Some(seen)),
        ]);
    }
    // Two overlapping puts may take effect in either order.
    for last in ["a", "b"] {
        assert_passes(vec![
            put(1, "a", 0, 10),
            put(2, "b", 5, 15),
            get(3, 20, 30, Some(last)),
        ]);
    }
}

#[test]
fn stale_read_is_rejected() {
    assert_rejected(vec![
        put(1, "v1", 0, 10),
        put(1, "v2", 20, 30),
        get(2, 40, 50, Some("v1")),
    ]);
}

#[test]
fn lost_write_is_rejected() {
    // Absent although a put finished before the read began.
    assert_rejected(vec![put(1, "v1", 0, 10), get(2, 20, 30, None)]);
    // The earlier value, although a put finished before the read began.
    assert_rejected(vec![
        put(1, "v1", 0, 10),
        get(2, 12, 14, Some("v1")),
        put(1, "v2", 20, 30),
        get(2, 40, 50, Some("v1")),
    ]);
}

#[test]
fn read_of_a_value_never_written_is_rejected() {
    let ops = vec![put(1, "v1", 0, 10), get(2, 20, 30, Some("zz"))];
    assert_rejected(ops.clone());
    let report = check_with(&history(ops), &CheckConfig::default());
    let text = report.to_string();
    assert!(text.contains("\"zz\" (never written)"), "{text}");
    // Even with no write at all.
    assert_rejected(vec![get(2, 20, 30, Some("zz"))]);
}

#[test]
fn unknown_put_may_or_may_not_have_taken_effect() {
    let base = || vec![put(1, "v1", 0, 10), put_unknown(1, "v2", 20)];
    // Later reads that see it pass.
    let mut ops = base();
    ops.extend([get(2, 100, 110, Some("v2")), get(3, 120, 130, Some("v2"))]);
    assert_passes(ops);
    // Later reads that do not see it pass.
    let mut ops = base();
    ops.extend([get(2, 100, 110, Some("v1")), get(3, 120, 130, Some("v1"))]);
    assert_passes(ops);
    // It may take effect long after the client gave up.
    let mut ops = base();
    ops.extend([get(2, 100, 110, Some("v1")), get(3, 120, 130, Some("v2"))]);
    assert_passes(ops);
}

#[test]
fn unknown_put_seen_then_unseen_is_rejected() {
    // Seen by one read, missed by a later read that does not overlap it, and
    // nothing else writes.
    assert_rejected(vec![
        put(1, "v1", 0, 10),
        put_unknown(1, "v2", 20),
        get(2, 100, 110, Some("v2")),
        get(3, 120, 130, Some("v1")),
    ]);
    // Seen before it was invoked.
    assert_rejected(vec![
        put(1, "v1", 0, 10),
        get(2, 12, 18, Some("v2")),
        put_unknown(1, "v2", 20),
    ]);
}

#[test]
fn unknown_remove_and_unknown_get() {
    // An unknown remove may explain a read of absent.
    assert_passes(vec![
        put(1, "v1", 0, 10),
        unknown(1, OpKind::Remove, 20),
        get(2, 30, 40, None),
    ]);
    // An unknown get neither helps nor hurts.
    assert_passes(vec![put(1, "v1", 0, 10), unknown(2, OpKind::Get, 5)]);
    assert_rejected(vec![
        put(1, "v1", 0, 10),
        unknown(2, OpKind::Get, 12),
        get(3, 20, 30, None),
    ]);
}

#[test]
fn remove_sets_the_key_absent() {
    assert_passes(vec![
        put(1, "v1", 0, 10),
        remove(1, 20, 30),
        get(2, 40, 50, None),
    ]);
    assert_rejected(vec![
        put(1, "v1", 0, 10),
        remove(1, 20, 30),
        get(2, 40, 50, Some("v1")),
    ]);
    // A remove overlapping the read may go either way.
    for seen in [None, Some("v1")] {
        assert_passes(vec![
            put(1, "v1", 0, 10),
            remove(1, 20, 30),
            get(2, 25, 50, seen),
        ]);
    }
}

#[test]
fn keys_are_independent() {
    let mut on_j = put(1, "j1", 0, 10);
    on_j.key = b"j".to_vec();
    let mut read_j = get(2, 20, 30, Some("v1"));
    read_j.key = b"j".to_vec();
    // "v1" was written to k, not to j: only j fails.
    let report = check_with(
        &history(vec![
            put(1, "v1", 0, 10),
            get(2, 20, 30, Some("v1")),
            on_j,
            read_j,
        ]),
        &CheckConfig::default(),
    );
    assert!(!report.is_ok());
    assert_eq!(report.key(b"k").unwrap().verdict, Verdict::Linearizable);
    assert_eq!(report.key(b"j").unwrap().verdict, Verdict::NotLinearizable);
    assert_eq!(report.failures().count(), 1);
    assert_eq!(report.ops(), 4);
}

#[test]
fn malformed_histories_are_reported_not_passed() {
    match verdict(vec![put(1, "v1", 10, 5)]) {
        Verdict::Malformed { reason } => {
            assert!(reason.contains("before its invocation"), "{reason}")
        }
        other => panic!("expected malformed, got {other}"),
    }
    match verdict(vec![returned(1, OpKind::Get, 0, 1, OpResult::Ok)]) {
        Verdict::Malformed { reason } => assert!(reason.contains("is a get"), "{reason}"),
        other => panic!("expected malformed, got {other}"),
    }
    let report = check_with(
        &history(vec![returned(
            1,
            OpKind::Put(b"x".to_vec()),
            0,
            1,
            OpResult::Value(None),
        )]),
        &CheckConfig::default(),
    );
    assert!(!report.is_ok());
    assert!(report.to_string().contains("malformed"), "{report}");
}

#[test]
fn segment_over_the_limit_is_too_large_not_a_pass() {
    // Four overlapping puts form one segment.
    let ops = vec![
        put(1, "a", 0, 10),
        put(2, "b", 1, 11),
        put(3, "c", 2, 12),
        put(4, "d", 3, 13),
    ];
    let config = |segment_ops_max| CheckConfig {
        segment_ops_max,
        ..CheckConfig::default()
    };
    let report = check_with(&history(ops.clone()), &config(3));
    assert!(!report.is_ok());
    assert_eq!(
        report.keys[0].verdict,
        Verdict::TooLarge {
            limit: Limit::SegmentOps,
            found: 4,
            max: 3
        }
    );
    assert!(
        report.to_string().contains("too large to check"),
        "{report}"
    );
    // At the limit it is checked.
    assert!(check_with(&history(ops), &config(4)).is_ok());
    // Operations one after another form segments of one.
    let sequential = vec![
        put(1, "a", 0, 1),
        put(1, "b", 2, 3),
        get(2, 4, 5, Some("b")),
        get(1, 6, 7, Some("b")),
    ];
    let report = check_with(&history(sequential), &config(1));
    assert!(report.is_ok(), "{report}");
    assert_eq!(
        (report.keys[0].segments, report.keys[0].segment_ops_largest),
        (4, 1)
    );
}

#[test]
fn search_steps_are_counted_before_the_search_and_limit_the_tester() {
    // Two overlapping puts, then a read. The first segment is searched with
    // a final read of the value it leaves: from nothing placed, a or b, then
    // both (two ways), then the final read (two ways): 1 + 2 + 2 + 2 = 7
    // steps. The second segment, the read alone, takes 2.
    let ops = vec![
        put(1, "a", 0, 10),
        put(2, "b", 5, 15),
        get(3, 20, 30, Some("b")),
    ];
    let report = check_with(&history(ops.clone()), &CheckConfig::default());
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.keys[0].search_steps_largest, 7);
    let config = |search_steps_max| CheckConfig {
        search_steps_max,
        ..CheckConfig::default()
    };
    let report = check_with(&history(ops.clone()), &config(7));
    assert!(report.is_ok());
    assert_eq!(report.keys[0].remembering_searches, 0);
    // Over the limit, the segment is searched remembering its states, and
    // decided all the same.
    let report = check_with(&history(ops.clone()), &config(6));
    assert!(report.is_ok(), "{report}");
    assert!(report.keys[0].remembering_searches >= 1);
    assert_eq!(report.keys[0].search_steps_largest, 2, "only the read's");
    // A stale read is still refused that way.
    let stale = vec![
        put(1, "a", 0, 10),
        put(2, "b", 5, 15),
        get(3, 20, 30, Some("b")),
        put(1, "c", 40, 50),
        get(2, 45, 55, Some("c")),
        get(3, 60, 70, Some("b")),
    ];
    let report = check_with(&history(stale), &config(0));
    assert_eq!(report.keys[0].verdict, Verdict::NotLinearizable);
    assert!(report.keys[0].remembering_searches >= 1);
    // The remembering search has a limit of its own.
    let report = check_with(
        &history(ops),
        &CheckConfig {
            remembered_states_max: 2,
            ..config(0)
        },
    );
    assert_eq!(
        report.keys[0].verdict,
        Verdict::TooLarge {
            limit: Limit::RememberedStates,
            found: 3,
            max: 2
        }
    );
    assert!(!report.is_ok());
    assert!(
        report.to_string().contains("reached more than 2 states"),
        "{report}"
    );

    // Six clients that all overlap, three times over: far more orders.
    let mut wide = Vec::new();
    for round in 0..3u64 {
        for c in 0..6u64 {
            let t = round * 100 + c;
            wide.push(put(c, &format!("v{round}-{c}"), t, t + 50));
        }
    }
    let report = check_with(&history(wide), &CheckConfig::default());
    assert!(report.is_ok(), "{report}");
    assert!(
        report.keys[0].search_steps_largest > 1000,
        "{:?}",
        report.keys[0]
    );
}

#[test]
fn key_over_the_operation_limit_is_too_large_not_a_pass() {
    let ops = vec![
        put(1, "a", 0, 1),
        put(1, "b", 2, 3),
        get(1, 4, 5, Some("b")),
    ];
    let config = |ops_per_key_max| CheckConfig {
        ops_per_key_max,
        ..CheckConfig::default()
    };
    let report = check_with(&history(ops.clone()), &config(2));
    assert_eq!(
        report.keys[0].verdict,
        Verdict::TooLarge {
            limit: Limit::OpsPerKey,
            found: 3,
            max: 2
        }
    );
    assert!(!report.is_ok());
    assert!(check_with(&history(ops), &config(3)).is_ok());
}

#[test]
fn ways_to_place_unknown_writes_are_limited() {
    // Unknown removes invoked during a put, reads of absent in the same
    // stretch, and another read of absent much later: each remove may take
    // effect in the first stretch or the second. At most one remove per read
    // of absent is tried in the first stretch.
    let removes = |n: u64, reads: u64| {
        let mut ops = vec![put(1, "a", 0, 100)];
        for i in 0..n {
            ops.push(unknown(10 + i, OpKind::Remove, 10 + i));
        }
        for r in 0..reads {
            ops.push(get(20 + r, 50 + r, 60 + r, None));
        }
        ops.push(get(2, 200, 210, None));
        history(ops)
    };
    // Nine removes, one read: nine ways to take one effect, or none.
    let report = check_with(&removes(9, 1), &CheckConfig::default());
    assert!(report.is_ok(), "{report}");
    // Nine removes, nine reads: 512 ways.
    let report = check_with(&removes(9, 9), &CheckConfig::default());
    assert_eq!(
        report.keys[0].verdict,
        Verdict::TooLarge {
            limit: Limit::UnknownWriteChoices,
            found: 512,
            max: 256
        }
    );
    assert!(
        report.to_string().contains("inject fewer faults per key"),
        "{report}"
    );
}

#[test]
fn unknown_operations_that_cannot_matter_do_not_count_against_the_limit() {
    // Ten unknown puts nobody read, an unknown remove with no read of absent
    // after it, and ten unknown gets: only the two returned operations need
    // ordering.
    let mut ops = vec![
        get(9, 0, 1, None),
        put(1, "v1", 2, 10),
        get(2, 20, 30, Some("v1")),
    ];
    for i in 0..10 {
        ops.push(put_unknown(10 + i, &format!("u{i}"), 5));
        ops.push(unknown(30 + i, OpKind::Get, 5));
    }
    ops.push(unknown(50, OpKind::Remove, 5));
    let config = CheckConfig {
        segment_ops_max: 1,
        ..CheckConfig::default()
    };
    let report = check_with(&history(ops), &config);
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.keys[0].ops, 24);
    assert_eq!(report.keys[0].unknown_ops, 21);
    assert_eq!(report.keys[0].ops_checked, 3);
}

#[test]
fn unknown_write_is_applied_once_across_segments() {
    // Seen, overwritten by a put that returned, then seen again: a write
    // takes effect once, so this is a violation even though each stretch of
    // overlapping operations alone can be ordered.
    assert_rejected(vec![
        put(1, "v1", 0, 10),
        put_unknown(2, "v2", 20),
        get(3, 30, 40, Some("v2")),
        put(3, "v3", 50, 60),
        get(3, 70, 80, Some("v2")),
    ]);
    // Not seen until after the later put: it took effect after that put.
    assert_passes(vec![
        put(1, "v1", 0, 10),
        put_unknown(2, "v2", 20),
        get(3, 30, 40, Some("v1")),
        put(3, "v3", 50, 60),
        get(3, 70, 80, Some("v2")),
        get(3, 90, 100, Some("v2")),
    ]);
    // An unknown remove: absent for a while, then the old value again.
    let base = || {
        vec![
            put(1, "v1", 0, 10),
            unknown(2, OpKind::Remove, 20),
            get(3, 30, 40, Some("v1")),
        ]
    };
    let mut ops = base();
    ops.extend([get(3, 50, 60, None), get(4, 70, 80, None)]);
    assert_passes(ops.clone());
    ops.push(get(3, 90, 100, Some("v1")));
    assert_rejected(ops);
}

#[test]
fn order_of_concurrent_writes_is_settled_by_later_reads() {
    // Two overlapping puts, then reads much later: either order will do, but
    // all later reads must agree with one.
    let base = || vec![put(1, "a", 0, 10), put(2, "b", 5, 15)];
    for last in ["a", "b"] {
        let mut ops = base();
        ops.extend([get(3, 100, 110, Some(last)), get(1, 120, 130, Some(last))]);
        assert_passes(ops);
    }
    let mut ops = base();
    ops.extend([get(3, 100, 110, Some("a")), get(1, 120, 130, Some("b"))]);
    assert_rejected(ops);
}

#[test]
fn violation_report_shows_the_history_of_the_key() {
    let report = check_with(
        &history(vec![
            put(1, "v1", 1000, 1010),
            put_unknown(3, "v2", 1015),
            put(1, "v2", 1020, 1030),
            get(2, 1040, 1050, Some("v1")),
        ]),
        &CheckConfig::default(),
    );
    let text = report.to_string();
    println!("{text}");
    assert!(text.contains("1 of 1 keys did not pass"), "{text}");
    assert!(text.contains("history of key \"k\""), "{text}");
    // One line per operation, times relative to the key's first invocation.
    let rows: Vec<Vec<&str>> = text
        .lines()
        .filter(|line| line.contains(" -> "))
        .map(|line| line.split_whitespace().collect())
        .collect();
    // The read is the stretch no order explains; "*" marks it.
    let expected: [&[&str]; 4] = [
        &["0", "c1/s0", "0", "10", "put", "\"v1\"", "->", "ok"],
        &[
            "1", "c3/s0", "15", "?", "put", "\"v2\"", "->", "outcome", "unknown",
        ],
        &["2", "c1/s0", "20", "30", "put", "\"v2\"", "->", "ok"],
        &["*", "3", "c2/s0", "40", "50", "get", "->", "\"v1\""],
    ];
    assert_eq!(rows, expected, "{text}");
    assert!(
        text.contains("the operations before it can leave: \"v2\""),
        "{text}"
    );
}

#[test]
fn long_and_binary_values_are_shortened() {
    use sim::linearizability::show_value;
    assert_eq!(show_value(b"abc"), "\"abc\"");
    assert_eq!(show_value(&[0, 1, 0xff]), "0x0001ff");
    let long = show_value(&[b'x'; 100]);
    assert!(long.ends_with("…(100 bytes)"), "{long}");
    assert!(
        long.starts_with(&format!("\"{}\"", "x".repeat(24))) && long.len() < 50,
        "{long}"
    );
}

// ----------------------------------------------------------------------
// Histories recorded from threads.

const THREADS: u64 = 4;
const OPS_PER_THREAD: u64 = 40;
const KEYS: u64 = 4;

/// Runs `THREADS` threads that each issue `OPS_PER_THREAD` operations on
/// `KEYS` keys against `store`, recording them. The store's lock is taken
/// only between invoke and complete, so operations overlap in the record.
/// Each thread reads a key eight operations after it wrote it.
fn record_workload(store: Arc<dyn Store>, with_removes: bool) -> History {
    let recorder = Arc::new(HistoryRecorder::new());
    let start = Arc::new(Barrier::new(THREADS as usize));
    let threads: Vec<_> = (0..THREADS)
        .map(|client| {
            let (recorder, store, start) = (recorder.clone(), store.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                for i in 0..OPS_PER_THREAD {
                    let key = format!("k{}", (client + i) % KEYS).into_bytes();
                    let kind = match (client + i) % 3 {
                        0 => OpKind::Get,
                        1 => OpKind::Put(format!("c{client}-{i}").into_bytes()),
                        _ if with_removes && i % 7 == 0 => OpKind::Remove,
                        _ => OpKind::Get,
                    };
                    let handle = recorder.invoke(client, key.clone(), kind.clone());
                    let result = store.apply(&key, &kind);
                    recorder.complete(handle, result);
                    // Short pauses let the threads interleave.
                    if i % 5 == 0 {
                        std::thread::yield_now();
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("a workload thread panicked");
    }
    recorder.finish()
}

trait Store: Send + Sync {
    fn apply(&self, key: &[u8], kind: &OpKind) -> OpResult;
}

/// A correct store: one map behind one lock.
struct LockedMap(Mutex<HashMap<Vec<u8>, Vec<u8>>>);

impl Store for LockedMap {
    fn apply(&self, key: &[u8], kind: &OpKind) -> OpResult {
        let mut map = self.0.lock().unwrap();
        match kind {
            OpKind::Get => OpResult::Value(map.get(key).cloned()),
            OpKind::Put(value) => {
                map.insert(key.to_vec(), value.clone());
                OpResult::Ok
            }
            OpKind::Remove => {
                map.remove(key);
                OpResult::Ok
            }
        }
    }
}

/// A broken store: writes go to the map, reads answer from a copy taken
/// before the workload started (empty), so they lose every write.
struct StaleReads {
    map: LockedMap,
    snapshot: HashMap<Vec<u8>, Vec<u8>>,
}

impl Store for StaleReads {
    fn apply(&self, key: &[u8], kind: &OpKind) -> OpResult {
        match kind {
            OpKind::Get => OpResult::Value(self.snapshot.get(key).cloned()),
            _ => self.map.apply(key, kind),
        }
    }
}

#[test]
fn recorder_from_threads_against_a_locked_map_passes() {
    let history = record_workload(Arc::new(LockedMap(Mutex::default())), true);
    assert_eq!(history.len() as u64, THREADS * OPS_PER_THREAD);
    assert!(history
        .ops
        .iter()
        .all(|op| matches!(op.end, OpEnd::Returned { .. })));
    // The recorder's clock gives every event its own time.
    let mut times: Vec<u64> = history.ops.iter().map(|op| op.invoke_ns).collect();
    times.extend(history.ops.iter().filter_map(|op| op.return_ns()));
    let count = times.len();
    times.sort_unstable();
    times.dedup();
    assert_eq!(times.len(), count, "two events share a time");
    let report = check(&history);
    println!("{report}");
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.keys.len() as u64, KEYS);
}

#[test]
fn recorder_from_threads_against_a_stale_store_is_rejected() {
    let store = StaleReads {
        map: LockedMap(Mutex::default()),
        snapshot: HashMap::new(),
    };
    // Without removes, a read that answers "absent" after a put to its key
    // returned is a violation whatever the other threads did, and each
    // thread reads every key it wrote eight operations later.
    let history = record_workload(Arc::new(store), false);
    let report = check(&history);
    assert!(!report.is_ok(), "{report}");
    assert!(
        report
            .failures()
            .all(|k| k.verdict == Verdict::NotLinearizable),
        "{report}"
    );
}

#[test]
fn recorder_sessions_and_unfinished_operations() {
    let recorder = HistoryRecorder::new();
    let a = recorder.invoke(7, "k", OpKind::Put(b"x".to_vec()));
    recorder.unknown(a);
    let b = recorder.invoke(7, "k", OpKind::Get);
    recorder.complete(b, OpResult::Value(Some(b"x".to_vec())));
    recorder.retire_client(7);
    let c = recorder.invoke(7, b"k".to_vec(), OpKind::Get);
    let history = recorder.finish();
    assert_eq!(
        history.ops.iter().map(|op| op.session).collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
    // The operation not yet ended is unknown in the copy.
    assert_eq!(history.ops[2].end, OpEnd::Unknown);
    assert!(check(&history).is_ok());
    recorder.complete(c, OpResult::Value(None));
    assert!(
        !check(&recorder.finish()).is_ok(),
        "x was seen, then missed, with no remove"
    );
}

#[test]
#[should_panic(expected = "recorder that issued it")]
fn handle_from_another_recorder_is_a_programming_error() {
    let one = HistoryRecorder::new();
    let other = HistoryRecorder::new();
    let handle = one.invoke(1, "k", OpKind::Get);
    other.complete(handle, OpResult::Value(None));
}

// ----------------------------------------------------------------------
// Seeded random histories.

fn seed() -> u64 {
    let seed = match std::env::var("SEED") {
        Ok(text) => text
            .parse()
            .unwrap_or_else(|_| panic!("SEED={text:?} is not a number")),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64),
    };
    println!("seed {seed} (replay with SEED={seed})");
    seed
}

/// How many random histories a test checks: `default`, or `CHECKER_ROUNDS`
/// for a longer soak.
fn rounds(default: usize) -> usize {
    match std::env::var("CHECKER_ROUNDS") {
        Ok(text) => text
            .parse()
            .unwrap_or_else(|_| panic!("CHECKER_ROUNDS={text:?} is not a number")),
        Err(_) => default,
    }
}

/// Shapes whose segments stay well within the default search limit (see
/// the table printed by `cargo run --release -p sim --example check_cost`):
/// two clients overlap freely, more need quiet moments.
fn random_config(rng: &mut StdRng) -> GenConfig {
    let clients = rng.random_range(1..=6);
    let quiesce_every_ops = match clients {
        1 | 2 => [0, 4, 8, 16][rng.random_range(0..4)],
        3 => [4, 6][rng.random_range(0..2)],
        _ => 4,
    };
    GenConfig {
        clients,
        keys: rng.random_range(1..=3),
        ops: rng.random_range(5..=80),
        unknown_per_mille: [0, 20, 80][rng.random_range(0..3)],
        quiesce_every_ops,
    }
}

/// The most steps the plain encoding's search may take on one history.
const PLAIN_SEARCH_STEPS_MAX: u64 = 2_000_000;

/// The steps stateright's search could take on the plain encoding of a
/// one-key history, counted without running it (saturating): paths through
/// the sets of operations it may have placed, each operation placeable once
/// every operation that returned before its invocation is placed, stopping
/// when every returned operation is placed.
fn plain_search_steps(history: &History) -> u64 {
    let ops = &history.ops;
    assert!(ops.len() <= 64, "the plain encoding is for small histories");
    let before: Vec<u64> = ops
        .iter()
        .map(|op| {
            (0..ops.len())
                .filter(|&j| ops[j].return_ns().is_some_and(|t| t < op.invoke_ns))
                .map(|j| 1u64 << j)
                .sum()
        })
        .collect();
    let must: u64 = (0..ops.len())
        .filter(|&j| ops[j].return_ns().is_some())
        .map(|j| 1u64 << j)
        .sum();
    let mut steps = 0u64;
    let mut layer: HashMap<u64, u64> = HashMap::from([(0, 1)]);
    while !layer.is_empty() && steps <= PLAIN_SEARCH_STEPS_MAX {
        let mut next: HashMap<u64, u64> = HashMap::new();
        for (&placed, &paths) in &layer {
            steps = steps.saturating_add(paths);
            if placed & must == must {
                continue;
            }
            for (i, &needed) in before.iter().enumerate() {
                if placed & (1 << i) == 0 && placed & needed == needed {
                    let count = next.entry(placed | (1 << i)).or_insert(0);
                    *count = count.saturating_add(paths);
                }
            }
        }
        layer = next;
    }
    steps
}

/// An independent, plainer encoding for cross-checking: every operation gets
/// its own stateright thread and nothing is left out.
fn plain_verdict(history: &History) -> bool {
    let mut by_key: BTreeMap<&[u8], Vec<&Operation>> = BTreeMap::new();
    for op in &history.ops {
        by_key.entry(&op.key).or_default().push(op);
    }
    by_key.values().all(|ops| {
        let mut ids: HashMap<Vec<u8>, u64> = HashMap::new();
        let mut id = |v: &Vec<u8>| {
            let next = ids.len() as u64;
            *ids.entry(v.clone()).or_insert(next)
        };
        let mut events: Vec<(u64, u8, usize)> = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            events.push((op.invoke_ns, 0, i));
            if let Some(t) = op.return_ns() {
                events.push((t, 1, i));
            }
        }
        events.sort_unstable();
        let mut tester = LinearizabilityTester::<usize, Register>::new(Register::default());
        for (_, class, i) in events {
            let op = ops[i];
            if class == 0 {
                let register_op = match &op.kind {
                    OpKind::Get => RegisterOp::Get,
                    OpKind::Put(v) => RegisterOp::Put(id(v)),
                    OpKind::Remove => RegisterOp::Remove,
                };
                tester.on_invoke(i, register_op).unwrap();
            } else {
                let ret = match (&op.kind, &op.end) {
                    (
                        OpKind::Get,
                        OpEnd::Returned {
                            result: OpResult::Value(v),
                            ..
                        },
                    ) => RegisterRet::GetOk(v.as_ref().map(&mut id)),
                    (OpKind::Put(_), _) => RegisterRet::PutOk,
                    (OpKind::Remove, _) => RegisterRet::RemoveOk,
                    other => panic!("generated histories are well formed: {other:?}"),
                };
                tester.on_return(i, ret).unwrap();
            }
        }
        tester.is_consistent()
    })
}

const RANDOM_HISTORIES: usize = 300;

#[test]
fn random_linearizable_histories_pass_and_mutated_ones_are_rejected() {
    let seed = seed();
    let rounds = rounds(RANDOM_HISTORIES);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut mutations: BTreeMap<Mutation, usize> = BTreeMap::new();
    let mut unknown_ops = 0;
    let mut slowest = Duration::ZERO;
    for round in 0..rounds {
        let config = random_config(&mut rng);
        let mut history = linearizable_history(&mut rng, &config);
        unknown_ops += history
            .ops
            .iter()
            .filter(|op| op.end == OpEnd::Unknown)
            .count();
        let started = Instant::now();
        let report = check_with(&history, &CheckConfig::default());
        slowest = slowest.max(started.elapsed());
        assert!(
            report.is_ok(),
            "seed {seed} round {round} {config:?}: generated history rejected\n{report}"
        );

        let Some((index, mutation)) = break_one_read(&mut history, &mut rng) else {
            continue;
        };
        *mutations.entry(mutation).or_default() += 1;
        let started = Instant::now();
        let report = check_with(&history, &CheckConfig::default());
        slowest = slowest.max(started.elapsed());
        assert!(
            !report.is_ok(),
            "seed {seed} round {round} {config:?}: {mutation:?} at operation {index} passed\n{report}"
        );
        let key = &history.ops[index].key;
        assert_eq!(
            report.key(key).unwrap().verdict,
            Verdict::NotLinearizable,
            "seed {seed} round {round}"
        );
        assert_eq!(
            report.failures().count(),
            1,
            "seed {seed} round {round}: only the mutated key fails"
        );
    }
    println!(
        "{rounds} histories, {unknown_ops} unknown outcomes, mutations {mutations:?}, \
         slowest check {slowest:?}"
    );
    // The test must not pass by mutating nothing.
    let mutated: usize = mutations.values().sum();
    assert!(
        mutated > rounds / 2,
        "seed {seed}: only {mutated} histories mutated"
    );
    let (stale, lost) = (
        mutations.get(&Mutation::Stale),
        mutations.get(&Mutation::LostWrite),
    );
    assert!(
        stale.is_some_and(|&n| n > rounds / 30),
        "seed {seed}: {mutations:?}"
    );
    assert!(
        lost.is_some_and(|&n| n > rounds / 30),
        "seed {seed}: {mutations:?}"
    );
    assert!(
        unknown_ops > 0,
        "seed {seed}: no unknown outcomes generated"
    );
}

#[test]
fn random_histories_agree_with_a_plain_encoding() {
    // Small histories, so that the plain encoding (no pruning, one thread per
    // operation) stays cheap; mutated or not, with many unknown outcomes and
    // random results, both must give the same verdict.
    let seed = seed();
    let rounds = rounds(300);
    let mut rng = StdRng::seed_from_u64(seed);
    let (mut passed, mut failed, mut too_costly) = (0, 0, 0);
    let mut remembering_searches = 0;
    for round in 0..rounds {
        let config = GenConfig {
            clients: rng.random_range(1..=3),
            keys: 1,
            ops: rng.random_range(2..=14),
            unknown_per_mille: [0, 50, 150][rng.random_range(0..3)],
            quiesce_every_ops: [2, 3, 4][rng.random_range(0..3)],
        };
        let mut history = linearizable_history(&mut rng, &config);
        // A third of the time, let puts write only three values, renaming
        // in reads alike (the same order still explains the history), so
        // that values repeat.
        if rng.random_bool(0.3) {
            let rename = |value: &mut Vec<u8>| {
                let n: usize = String::from_utf8_lossy(&value[1..]).parse().unwrap_or(0);
                *value = format!("v{}", n % 3).into_bytes();
            };
            for op in &mut history.ops {
                if let OpKind::Put(value) = &mut op.kind {
                    rename(value);
                }
                if let OpEnd::Returned {
                    result: OpResult::Value(Some(value)),
                    ..
                } = &mut op.end
                {
                    rename(value);
                }
            }
        }
        // Half the time, replace one read's result by a random value written
        // to the key (or absent), which may or may not break linearizability.
        if rng.random_bool(0.5) {
            let values: Vec<Option<Vec<u8>>> = std::iter::once(None)
                .chain(history.ops.iter().filter_map(|op| match &op.kind {
                    OpKind::Put(v) => Some(Some(v.clone())),
                    _ => None,
                }))
                .collect();
            let reads: Vec<usize> = (0..history.len())
                .filter(|&i| {
                    history.ops[i].kind == OpKind::Get && history.ops[i].return_ns().is_some()
                })
                .collect();
            if !reads.is_empty() {
                let r = reads[rng.random_range(0..reads.len())];
                let at_ns = history.ops[r].return_ns().unwrap();
                let value = values[rng.random_range(0..values.len())].clone();
                history.ops[r].end = OpEnd::Returned {
                    result: OpResult::Value(value),
                    at_ns,
                };
            }
        }
        // The plain encoding has no limit of its own; a history it could
        // take minutes on is left out, and counted.
        if plain_search_steps(&history) > PLAIN_SEARCH_STEPS_MAX {
            too_costly += 1;
            continue;
        }
        let ours = check_with(&history, &CheckConfig::default());
        let plain = plain_verdict(&history);
        assert_eq!(
            ours.is_ok(),
            plain,
            "seed {seed} round {round} {config:?}: verdicts differ\n{ours}"
        );
        // With no steps allowed to the tester, every segment is searched
        // remembering its states instead: the same verdict.
        let remembering = check_with(
            &history,
            &CheckConfig {
                search_steps_max: 0,
                ..CheckConfig::default()
            },
        );
        assert_eq!(
            remembering.is_ok(),
            plain,
            "seed {seed} round {round} {config:?}: the remembering search differs\n{remembering}"
        );
        remembering_searches += remembering
            .keys
            .iter()
            .map(|k| k.remembering_searches)
            .sum::<u64>();
        if plain {
            passed += 1;
        } else {
            failed += 1;
        }
    }
    println!(
        "plain encoding agreed: {passed} linearizable, {failed} not, {too_costly} left out as \
         too costly for it"
    );
    // Nearly every history was compared, and both verdicts were exercised.
    assert!(
        too_costly <= rounds / 50,
        "seed {seed}: {too_costly} left out"
    );
    assert!(
        passed > 30 && failed > 30,
        "seed {seed}: {passed} passed, {failed} failed"
    );
    assert!(
        remembering_searches as usize > rounds,
        "seed {seed}: {remembering_searches} remembering searches"
    );
}
