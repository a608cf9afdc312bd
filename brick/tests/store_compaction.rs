//! Compaction of the partition store while writes go on, checked against a
//! `BTreeMap` model after every operation and after reopening, for file and
//! anonymous arenas. Random runs print their seed; `SEED=n` replays one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use brick::store::{record_bytes, Backing, CompactStatus, Partition, StoreError, HEADER_BYTES};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

const CAPACITY: u64 = 64 * 1024;

fn seed() -> u64 {
    let seed = match std::env::var("SEED") {
        Ok(s) => s.parse().expect("SEED is a u64"),
        Err(_) => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    };
    eprintln!("SEED={seed} (run with SEED={seed} to replay)");
    seed
}

/// The partition holds exactly the model: every key's value, no other key,
/// and the live byte count of those records; and its own invariants hold.
/// Prefetches of every key and of one absent key, in whichever arena their
/// records are, come first: they must change nothing.
fn check(p: &Partition, model: &Model, context: &str) {
    for record in [false, true] {
        for k in model.keys().chain([&b"absent".to_vec()]) {
            p.prefetch(k, record);
        }
    }
    for (k, v) in model {
        assert_eq!(
            p.get(k),
            Some(&v[..]),
            "{context}: key {}",
            String::from_utf8_lossy(k)
        );
    }
    let keys = p.keys_with_prefix(b"");
    assert!(
        keys.iter().eq(model.keys()),
        "{context}: the key sets differ"
    );
    let live: u64 = model
        .iter()
        .map(|(k, v)| record_bytes(k.len(), v.len()))
        .sum();
    let stats = p.stats();
    assert_eq!(stats.keys, model.len() as u64, "{context}: key count");
    assert_eq!(stats.live_bytes, live, "{context}: live bytes");
    assert_eq!(
        stats.used_bytes,
        stats.live_bytes + stats.dead_bytes,
        "{context}"
    );
    p.check_invariants();
}

/// The checksum of the model's contents written in reverse order into a
/// fresh partition: a different history with the same data.
fn model_checksum(model: &Model) -> (u32, u64) {
    let mut p = Partition::open(Backing::Anonymous, CAPACITY).unwrap().0;
    for (k, v) in model.iter().rev() {
        p.put(k, v).unwrap();
    }
    p.checksum()
}

fn compaction_file(path: &Path) -> PathBuf {
    PathBuf::from(format!("{}.compact", path.display()))
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    File,
    Anonymous,
}

#[derive(Debug, Default)]
struct Counts {
    finished: u32,
    synchronous: u32,
    full: u32,
    reopened_mid_compaction: u32,
    puts_during_compaction: u32,
    removes_during_compaction: u32,
}

/// Reopens `p` the way a restart would see it: for a file, after a clean
/// drop or after a crash (the value is leaked, so nothing is cleaned up);
/// for anonymous memory, from its bytes.
fn reopen(p: Partition, kind: Kind, path: &Path, crash: bool) -> Partition {
    match kind {
        Kind::File => {
            if crash {
                // A crashed process runs no destructor: the map and any
                // half-built compaction file stay as they are.
                std::mem::forget(p);
            } else {
                p.flush().unwrap();
                drop(p);
            }
            let (p, report) = Partition::open(Backing::File(path.to_path_buf()), CAPACITY).unwrap();
            assert_eq!(report.torn_tail_bytes, 0);
            assert!(
                !compaction_file(path).exists(),
                "the unfinished compaction was removed"
            );
            p
        }
        Kind::Anonymous => {
            let bytes = p.bytes().to_vec();
            drop(p);
            let (p, report) = Partition::reopen_anonymous(&bytes, CAPACITY).unwrap();
            assert_eq!(report.torn_tail_bytes, 0);
            p
        }
    }
}

fn random_key(rng: &mut ChaCha8Rng, key_count: u32) -> Vec<u8> {
    let n = rng.random_range(0..key_count);
    // Lengths from 2 to 14 bytes, fixed per key.
    format!("k{n}{}", "-".repeat((n % 7) as usize * 2)).into_bytes()
}

fn random_value(rng: &mut ChaCha8Rng) -> Vec<u8> {
    let len = match rng.random_range(0..100) {
        0..70 => rng.random_range(0..100),
        70..95 => rng.random_range(100..1500),
        _ => rng.random_range(1500..8000),
    };
    let fill: u8 = rng.random();
    (0..len).map(|i| fill.wrapping_add(i as u8)).collect()
}

/// `ops` random operations on keys drawn from `key_count`: with few keys the
/// arena has room and background compaction does most of the work; with
/// many it runs near full, and puts are refused or compact synchronously.
fn run(kind: Kind, seed: u64, ops: usize, key_count: u32) -> Counts {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.arena");
    let backing = match kind {
        Kind::File => Backing::File(path.clone()),
        Kind::Anonymous => Backing::Anonymous,
    };
    let (mut p, _) = Partition::open(backing, CAPACITY).unwrap();
    let mut model = Model::new();
    let mut counts = Counts::default();
    for step in 0..ops {
        let context = format!("{kind:?} seed {seed} step {step}");
        let roll = rng.random_range(0..100);
        let compacting = p.compaction_in_progress();
        if roll < 40 {
            let (k, v) = (random_key(&mut rng, key_count), random_value(&mut rng));
            let fits = p.can_fit(k.len(), v.len());
            let live_before = p.stats().live_bytes;
            let generation = p.generation();
            match p.put(&k, &v) {
                Ok(()) => {
                    assert!(fits, "{context}: a put that can_fit refused succeeded");
                    model.insert(k, v);
                    counts.puts_during_compaction += u32::from(compacting);
                }
                Err(StoreError::Full { needed, free }) => {
                    assert!(!fits, "{context}: can_fit said yes but the put was refused");
                    assert_eq!(needed, record_bytes(k.len(), v.len()), "{context}");
                    assert_eq!(free, CAPACITY - HEADER_BYTES - live_before, "{context}");
                    assert!(needed > free, "{context}");
                    assert_eq!(
                        p.generation(),
                        generation,
                        "{context}: a refused put compacted"
                    );
                    counts.full += 1;
                }
                Err(e) => panic!("{context}: {e}"),
            }
            counts.synchronous += (p.generation() - generation) as u32;
        } else if roll < 60 {
            let k = random_key(&mut rng, key_count);
            let generation = p.generation();
            let removed = p.remove(&k).unwrap_or_else(|e| panic!("{context}: {e}"));
            assert_eq!(
                removed,
                model.remove(&k).is_some(),
                "{context}: remove's answer"
            );
            counts.synchronous += (p.generation() - generation) as u32;
            counts.removes_during_compaction += u32::from(compacting && removed);
        } else if roll < 95 {
            let budget = rng.random_range(1..3000usize);
            let generation = p.generation();
            let mut status = p.compact_step(budget);
            // A file's sync runs on a helper thread, and the operations here
            // follow each other far faster than a disk syncs: half the time
            // the test waits for it to end, as an idle event loop would.
            if status == CompactStatus::Syncing && rng.random_bool(0.5) {
                let mut waits = 0;
                while status == CompactStatus::Syncing {
                    waits += 1;
                    assert!(waits < 10_000, "{context}: the sync does not end");
                    std::thread::sleep(std::time::Duration::from_millis(1));
                    status = p.compact_step(budget);
                }
            }
            let copied = p.stats().last_step_copied_bytes;
            // A step stops once it copied its budget, so it overshoots by
            // less than one record (at most 11 + 14 + 8000 bytes here).
            assert!(
                copied < budget as u64 + 8100,
                "{context}: a step copied {copied} bytes on a budget of {budget}"
            );
            match status {
                CompactStatus::Finished => {
                    counts.finished += 1;
                    assert_eq!(p.generation(), generation + 1, "{context}");
                    assert!(!p.compaction_in_progress());
                }
                CompactStatus::InProgress | CompactStatus::Syncing => {
                    assert!(p.compaction_in_progress(), "{context}")
                }
                CompactStatus::Idle => assert_eq!(copied, 0, "{context}"),
            }
        } else if roll < 97 {
            let generation = p.generation();
            p.set_compaction_paused(true);
            assert!(!p.compaction_wanted(), "{context}");
            assert_eq!(p.compact_step(100_000), CompactStatus::Idle, "{context}");
            assert_eq!(p.generation(), generation, "{context}");
            p.set_compaction_paused(false);
        } else {
            counts.reopened_mid_compaction += u32::from(compacting);
            p = reopen(p, kind, &path, rng.random_bool(0.5));
        }
        check(&p, &model, &context);
    }
    let context = format!("{kind:?} seed {seed} at the end");
    p = reopen(p, kind, &path, false);
    check(&p, &model, &context);
    assert_eq!(
        p.checksum(),
        model_checksum(&model),
        "{context}: checksum against a fresh history"
    );
    counts
}

fn run_and_check_coverage(kind: Kind) {
    let seed = seed();
    let mut total = Counts::default();
    for run_index in 0..4 {
        let c = run(
            kind,
            seed.wrapping_add(run_index),
            2500,
            [80, 250][run_index as usize % 2],
        );
        total.finished += c.finished;
        total.synchronous += c.synchronous;
        total.full += c.full;
        total.reopened_mid_compaction += c.reopened_mid_compaction;
        total.puts_during_compaction += c.puts_during_compaction;
        total.removes_during_compaction += c.removes_during_compaction;
    }
    eprintln!("{kind:?}: {total:?}");
    // The runs are only worth something if they reached the interesting
    // cases; with these sizes every seed does, many times over.
    assert!(total.finished >= 2, "{total:?}");
    assert!(total.synchronous >= 1, "{total:?}");
    assert!(total.full >= 1, "{total:?}");
    assert!(total.reopened_mid_compaction >= 1, "{total:?}");
    assert!(total.puts_during_compaction >= 20, "{total:?}");
    assert!(total.removes_during_compaction >= 5, "{total:?}");
}

#[test]
fn compaction_of_a_file_agrees_with_a_model() {
    run_and_check_coverage(Kind::File);
}

#[test]
fn compaction_of_anonymous_memory_agrees_with_a_model() {
    run_and_check_coverage(Kind::Anonymous);
}

/// Churn on a few keys until background compaction is wanted.
fn churn(p: &mut Partition, model: &mut Model) {
    for i in 0..10_000 {
        if p.compaction_wanted() {
            return;
        }
        let k = format!("key{}", i % 20).into_bytes();
        let v = vec![i as u8; 500];
        p.put(&k, &v).unwrap();
        model.insert(k, v);
    }
    panic!("compaction never became wanted");
}

/// A file-backed partition (in a folder that lives as long as the returned
/// guard) that [`churn`] made ready to compact, and its model.
fn churned_file_partition() -> (tempfile::TempDir, PathBuf, Partition, Model) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.arena");
    let (mut p, _) = Partition::open(Backing::File(path.clone()), CAPACITY).unwrap();
    let mut model = Model::new();
    churn(&mut p, &mut model);
    (dir, path, p, model)
}

/// Steps the running compaction to its end, waiting out its background
/// sync; returns the steps that copied records.
fn step_to_the_end(p: &mut Partition, budget: usize) -> u32 {
    let (mut steps, mut waits) = (0, 0);
    loop {
        match p.compact_step(budget) {
            CompactStatus::Finished => return steps,
            CompactStatus::InProgress => steps += 1,
            CompactStatus::Syncing => {
                waits += 1;
                assert!(waits < 10_000, "the sync does not end");
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            CompactStatus::Idle => panic!("the compaction was dropped"),
        }
        assert!(steps < 100, "compaction does not end");
    }
}

#[test]
fn a_finished_compaction_keeps_only_live_data() {
    let (_dir, path, mut p, model) = churned_file_partition();
    let before = p.stats();
    assert!(before.dead_bytes >= CAPACITY / 32, "{before:?}");

    assert_eq!(p.compact_step(1000), CompactStatus::InProgress);
    assert!(
        compaction_file(&path).exists(),
        "the next generation is built beside the arena"
    );
    let steps = 1 + step_to_the_end(&mut p, 1000);
    assert!(
        steps >= 2,
        "a 1000-byte budget cannot copy {} live bytes at once",
        before.live_bytes
    );
    let after = p.stats();
    assert_eq!(after.dead_bytes, 0, "{after:?}");
    assert_eq!(after.live_bytes, before.live_bytes);
    assert_eq!(after.compactions, 1);
    assert_eq!(p.generation(), 1);
    assert!(!compaction_file(&path).exists());
    assert_eq!(std::fs::metadata(&path).unwrap().len(), CAPACITY);
    assert!(!p.compaction_wanted());
    assert_eq!(p.compact_step(1000), CompactStatus::Idle);
    check(&p, &model, "after compaction");
    drop(p);
    let (p, report) = Partition::open(Backing::File(path), CAPACITY).unwrap();
    assert_eq!(p.generation(), 1);
    assert_eq!(report.records, model.len() as u64);
    check(&p, &model, "reopened");
}

/// A file-backed compaction syncs its new arena on a helper thread; writes
/// made meanwhile go to the old arena, are copied after the sync, and are
/// in the installed arena, before and after a reopen.
#[test]
fn writes_during_the_background_sync_are_in_the_installed_arena() {
    let (_dir, path, mut p, mut model) = churned_file_partition();
    let mut steps = 0;
    while p.compact_step(100_000) != CompactStatus::Syncing {
        steps += 1;
        assert!(steps < 100, "the compaction never reached its sync");
    }
    assert!(p.compaction_in_progress());
    assert_eq!(p.generation(), 0, "installed before its sync");
    for i in 0..50u32 {
        let key = format!("during-sync-{i}").into_bytes();
        let value = format!("value {i}").into_bytes();
        p.put(&key, &value).unwrap();
        model.insert(key, value);
    }
    assert!(p.remove(b"key3").unwrap());
    model.remove(&b"key3"[..]);
    check(&p, &model, "during the sync");
    step_to_the_end(&mut p, 100_000);
    assert_eq!(p.generation(), 1);
    assert!(!compaction_file(&path).exists());
    check(&p, &model, "installed");
    drop(p);
    let (p, _) = Partition::open(Backing::File(path), CAPACITY).unwrap();
    assert_eq!(p.generation(), 1);
    check(&p, &model, "reopened");
}

#[test]
fn pausing_holds_a_compaction_where_it_is() {
    let mut p = Partition::open(Backing::Anonymous, CAPACITY).unwrap().0;
    let mut model = Model::new();
    churn(&mut p, &mut model);
    assert_eq!(p.compact_step(500), CompactStatus::InProgress);
    p.set_compaction_paused(true);
    let copied = p.stats().compaction_copied_bytes;
    for _ in 0..10 {
        assert_eq!(p.compact_step(500), CompactStatus::Idle);
    }
    p.put(b"during", b"the pause").unwrap();
    model.insert(b"during".to_vec(), b"the pause".to_vec());
    assert!(p.remove(b"key3").unwrap());
    model.remove(&b"key3"[..]);
    assert_eq!(
        p.stats().compaction_copied_bytes,
        copied,
        "a paused compaction copies nothing"
    );
    assert_eq!(p.generation(), 0);
    check(&p, &model, "paused");
    p.set_compaction_paused(false);
    let mut steps = 0;
    while p.compact_step(500) != CompactStatus::Finished {
        steps += 1;
        assert!(steps < 200, "compaction does not end");
    }
    assert_eq!(p.generation(), 1);
    check(&p, &model, "resumed");
}

#[test]
fn dropping_a_partition_mid_compaction_removes_the_unfinished_file() {
    let (_dir, path, mut p, model) = churned_file_partition();
    assert_eq!(p.compact_step(100), CompactStatus::InProgress);
    assert!(compaction_file(&path).exists());
    drop(p);
    assert!(!compaction_file(&path).exists());
    let (p, _) = Partition::open(Backing::File(path), CAPACITY).unwrap();
    assert_eq!(p.generation(), 0);
    check(&p, &model, "reopened");
}
