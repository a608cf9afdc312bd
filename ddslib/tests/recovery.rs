//! Recovery against real brick processes on 127.0.0.x: a killed brick
//! copies its partitions back and rejoins while reads and writes go on,
//! and so does one stopped cleanly; a brick that stays dead past
//! `heal_after` is replaced; a copy whose source dies mid-transfer leaves
//! nothing half-installed and is done again; a whole cluster stopped
//! cleanly and started again takes writes at once, and one whose bricks
//! were all killed at once comes back with every acknowledged write.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use brick::testkit::{ClusterSpec, TestCluster};
use common::{assert_replicas_identical, connect, ensure_table, eventually, stats};
use ddslib::{Dds, DdsError, Op};
use maps::{BrickId, PartitionId};
use wire::{Reply, Request};

fn value_of(key: &[u8]) -> Vec<u8> {
    let mut value = key.to_vec();
    value.resize(150, b'.');
    value
}

/// Writes `count` keys `p0..` with 150-byte values, many in flight.
fn preload(dds: &mut Dds, count: u64) {
    let mut done = Vec::new();
    let mut submitted = 0;
    let mut completed = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    while completed < count {
        assert!(Instant::now() < deadline, "preload did not finish");
        while submitted < count && dds.in_flight() < 200 {
            let key = format!("p{submitted}").into_bytes();
            dds.submit(Op::Put {
                table: b"t".to_vec(),
                value: value_of(&key),
                key,
            })
            .expect("submit");
            submitted += 1;
        }
        done.clear();
        dds.poll(&mut done, Duration::from_millis(100))
            .expect("poll");
        for (_, result) in &done {
            result.as_ref().expect("preload write");
        }
        completed += done.len() as u64;
    }
}

/// Reads preloaded keys `p<i>` for every `i` of `keys` and checks their values.
fn assert_preloaded(dds: &mut Dds, keys: impl IntoIterator<Item = u64>) {
    for i in keys {
        let key = format!("p{i}").into_bytes();
        assert_eq!(dds.get("t", &key), Ok(value_of(&key)), "preloaded p{i}");
    }
}

/// Waits (up to 30 s) until every key of `preload(count)` reads back its
/// value; a key found missing is lost, not late.
fn every_preloaded_key_readable(dds: &mut Dds, count: u64) {
    let mut next = 0;
    eventually(
        Duration::from_secs(30),
        "every preloaded key readable after the restart",
        || {
            while next < count {
                let key = format!("p{next}").into_bytes();
                match dds.get("t", &key) {
                    Ok(value) => {
                        assert_eq!(value, value_of(&key), "p{next}");
                        next += 1;
                    }
                    Err(DdsError::NotFound) => panic!("p{next} lost"),
                    Err(_) => return false,
                }
            }
            true
        },
    );
}

/// Starts every brick of the stopped `cluster` again and waits until every
/// preloaded key is readable; returns a handle and when the restart began.
fn restart_all_and_read_back(cluster: &mut TestCluster, keys: u64) -> (Dds, Instant) {
    let restarted_at = Instant::now();
    for index in 0..cluster.bricks.len() {
        cluster.restart(index);
    }
    let mut dds = connect(cluster);
    every_preloaded_key_readable(&mut dds, keys);
    eprintln!(
        "every key readable {:?} after the restart",
        restarted_at.elapsed()
    );
    (dds, restarted_at)
}

/// Writes `value` to keys `r0..r99`, each retried for up to 10 s.
fn write_r_keys(dds: &mut Dds, value: &[u8]) {
    for i in 0..100 {
        let key = format!("r{i}").into_bytes();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match dds.put("t", &key, value) {
                Ok(()) => break,
                Err(e) => assert!(Instant::now() < deadline, "write r{i}: {e}"),
            }
        }
    }
}

/// Whether every group of the current maps has `replicas` members, none of
/// them in `without`.
fn degree_back(dds: &mut Dds, replicas: usize, without: &[BrickId]) -> bool {
    dds.refresh_maps().is_ok()
        && dds.maps().rg.iter().all(|(_, e)| {
            e.bricks.len() == replicas && e.bricks.iter().all(|b| !without.contains(b))
        })
}

fn removed_everywhere(dds: &mut Dds, brick: BrickId) -> bool {
    dds.refresh_maps().is_ok()
        && dds
            .maps()
            .rg
            .iter()
            .all(|(_, e)| !e.bricks.contains(&brick))
}

fn sum_stat(dds: &mut Dds, bricks: &[u32], name: &str) -> u64 {
    bricks
        .iter()
        .map(|b| stats(dds, BrickId(*b)).get(name).copied().unwrap_or(0))
        .sum()
}

/// Reads of preloaded keys in a loop until `stop`: (reads, failures).
fn reader(config: std::path::PathBuf, keys: u64, stop: Arc<AtomicBool>) -> (u64, Vec<String>) {
    let mut dds = Dds::connect_config(&config).unwrap();
    let (mut reads, mut failures) = (0, Vec::new());
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let key = format!("p{}", (i * 7919) % keys).into_bytes();
        match dds.get("t", &key) {
            Ok(v) if v == value_of(&key) => reads += 1,
            Ok(v) => failures.push(format!("{key:?} read {} bytes of another value", v.len())),
            Err(e) => failures.push(format!("{}: {e}", String::from_utf8_lossy(&key))),
        }
        i += 1;
    }
    (reads, failures)
}

/// Writes fresh keys `w0..` one after another until `stop`: the keys whose
/// write was acknowledged.
fn writer(config: std::path::PathBuf, stop: Arc<AtomicBool>) -> (Vec<u64>, u64) {
    let mut dds = Dds::connect_config(&config).unwrap();
    let (mut acked, mut failed) = (Vec::new(), 0);
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let key = format!("w{i}").into_bytes();
        match dds.put("t", &key, &value_of(&key)) {
            Ok(()) => acked.push(i),
            Err(_) => failed += 1,
        }
        i += 1;
    }
    (acked, failed)
}

/// Runs a reader of the preloaded keys and a writer of fresh ones while
/// `faults` runs, and a moment after; then checks that no read failed, that
/// enough was done, and that every acknowledged write reads back.
fn under_load(
    dds: &mut Dds,
    cluster: &mut TestCluster,
    keys: u64,
    faults: impl FnOnce(&mut TestCluster, &mut Dds),
) {
    let stop = Arc::new(AtomicBool::new(false));
    let config = cluster.config_path().to_path_buf();
    let reading = {
        let (config, stop) = (config.clone(), Arc::clone(&stop));
        std::thread::spawn(move || reader(config, keys, stop))
    };
    let writing = {
        let (config, stop) = (config.clone(), Arc::clone(&stop));
        std::thread::spawn(move || writer(config, stop))
    };
    faults(cluster, dds);
    // Load on the new membership for a moment, then stop.
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let (reads, read_failures) = reading.join().unwrap();
    let (acked, write_failures) = writing.join().unwrap();
    eprintln!(
        "{reads} reads, {} failed; {} writes acknowledged, {write_failures} failed",
        read_failures.len(),
        acked.len()
    );
    assert!(read_failures.is_empty(), "reads failed: {read_failures:?}");
    assert!(reads > 100, "only {reads} reads");
    assert!(acked.len() > 50, "only {} writes acknowledged", acked.len());
    for i in &acked {
        let key = format!("w{i}").into_bytes();
        assert_eq!(dds.get("t", &key), Ok(value_of(&key)), "acknowledged w{i}");
    }
}

#[test]
fn a_killed_brick_copies_its_partitions_back_and_rejoins_under_load() {
    const KEYS: u64 = 3000;
    let mut cluster = TestCluster::start(ClusterSpec {
        partitions: 3,
        // Always a full copy, never the shortcut for unchanged data.
        grace_ms: 0,
        heal_after_ms: 600_000,
        ..ClusterSpec::default()
    });
    let mut dds = connect(&cluster);
    ensure_table(&mut dds, "t");
    preload(&mut dds, KEYS);
    let groups_of_2 = dds.maps().partitions_of(BrickId(2)).len();
    assert!(groups_of_2 > 0);

    under_load(&mut dds, &mut cluster, KEYS, |cluster, dds| {
        std::thread::sleep(Duration::from_millis(500));
        cluster.bricks[1].kill();
        eventually(Duration::from_secs(15), "brick 2 removed", || {
            removed_everywhere(dds, BrickId(2))
        });
        // Writes go on while it is down, so its data is out of date.
        std::thread::sleep(Duration::from_millis(800));
        let restarted_at = Instant::now();
        cluster.restart(1);
        eventually(
            Duration::from_secs(30),
            "brick 2 back in its groups",
            || {
                dds.refresh_maps().is_ok()
                    && dds.maps().partitions_of(BrickId(2)).len() == groups_of_2
            },
        );
        eprintln!(
            "brick 2 rejoined {:?} after its restart",
            restarted_at.elapsed()
        );
    });

    // The copies were real: brick 2 received bytes and installed one copy
    // per group it holds, and the sources counted them as finished.
    let s2 = stats(&mut dds, BrickId(2));
    assert!(s2["copy_bytes_received"] > 0, "{s2:?}");
    assert_eq!(s2["copies_installed"], groups_of_2 as u64, "{s2:?}");
    // Each came with its source's index, which brick 2 checked against the
    // records instead of indexing them.
    assert_eq!(
        s2["copies_installed_with_index"], groups_of_2 as u64,
        "{s2:?}"
    );
    assert!(sum_stat(&mut dds, &[1, 3], "copy_index_bytes_sent") > 0);
    assert!(sum_stat(&mut dds, &[1, 3], "copies_finished") >= groups_of_2 as u64);

    assert_preloaded(&mut dds, 0..KEYS);
    assert_replicas_identical(&mut dds, &[BrickId(1), BrickId(2), BrickId(3)]);
}

#[test]
fn a_brick_dead_past_heal_after_is_replaced() {
    const KEYS: u64 = 500;
    let mut cluster = TestCluster::start(ClusterSpec {
        partitions: 3,
        heal_after_ms: 1500,
        ..ClusterSpec::default()
    });
    let mut dds = connect(&cluster);
    ensure_table(&mut dds, "t");
    preload(&mut dds, KEYS);
    cluster.bricks[2].kill();
    let killed_at = Instant::now();
    eventually(
        Duration::from_secs(30),
        "every group back to 2 members without brick 3",
        || degree_back(&mut dds, 2, &[BrickId(3)]),
    );
    let healed_in = killed_at.elapsed();
    eprintln!("degree restored {healed_in:?} after the kill");
    assert!(
        healed_in >= Duration::from_millis(1500),
        "healed before heal_after: {healed_in:?}"
    );
    assert!(sum_stat(&mut dds, &[1, 2], "copies_finished") >= 2);
    assert_preloaded(&mut dds, 0..KEYS);
    dds.put("t", b"after", b"healing").unwrap();
    assert_replicas_identical(&mut dds, &[BrickId(1), BrickId(2)]);

    // Brick 3 comes back, replaced in every group it held: it lets go of
    // its old partitions and deletes their arena files.
    let arenas = |cluster: &TestCluster| {
        std::fs::read_dir(cluster.data_dir(3))
            .unwrap()
            .filter(|e| {
                let name = e.as_ref().unwrap().file_name();
                name.to_string_lossy().ends_with(".arena")
            })
            .count()
    };
    assert!(arenas(&cluster) > 0);
    cluster.restart(2);
    eventually(
        Duration::from_secs(20),
        "brick 3 let go of the partitions it was replaced in",
        || match dds.call(BrickId(3), Request::Stats, Duration::from_secs(2)) {
            Ok(Reply::Stats(s)) => {
                s.iter().any(|(k, n)| k == "partitions_let_go" && *n > 0)
                    && !s.iter().any(|(k, _)| k.starts_with("partition."))
            }
            _ => false,
        },
    );
    assert_eq!(arenas(&cluster), 0);
    assert!(dds.maps().partitions_of(BrickId(3)).is_empty());
    assert_preloaded(&mut dds, 0..KEYS);
    assert_replicas_identical(&mut dds, &[BrickId(1), BrickId(2)]);
}

#[test]
fn a_copy_whose_source_dies_is_never_half_installed_and_is_redone() {
    const KEYS: u64 = 12_000;
    let mut cluster = TestCluster::start(ClusterSpec {
        // One partition, on bricks 1 and 2.
        partitions: 1,
        partition_capacity_mb: 16,
        grace_ms: 0,
        heal_after_ms: 600_000,
        // About two seconds for the partition, so the source can die
        // in the middle.
        copy_rate_mb_s: 1,
        ..ClusterSpec::default()
    });
    let mut dds = connect(&cluster);
    ensure_table(&mut dds, "t");
    preload(&mut dds, KEYS);
    let partition = PartitionId(1);
    assert_eq!(
        dds.maps().partitions_of(BrickId(2)),
        vec![partition],
        "the one partition is on brick 2"
    );
    cluster.bricks[1].kill();
    eventually(Duration::from_secs(15), "brick 2 removed", || {
        removed_everywhere(&mut dds, BrickId(2))
    });
    dds.put("t", b"while-down", b"x").unwrap();
    cluster.restart(1);
    let received = format!("copy.{}.received_bytes", partition.0);
    eventually(Duration::from_secs(15), "the copy under way", || {
        stats(&mut dds, BrickId(2))
            .get(&received)
            .is_some_and(|b| *b > 0)
    });
    // The source dies in the middle of the transfer.
    cluster.bricks[0].kill();
    let s2 = stats(&mut dds, BrickId(2));
    assert_eq!(
        s2["copies_installed"], 0,
        "installed before the source died"
    );

    // Brick 2 holds part of the partition and must serve none of it.
    let fingerprint = dds.maps().partition_fingerprint(partition).unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut refused = 0;
    while Instant::now() < deadline {
        let reply = dds.call(
            BrickId(2),
            Request::Get {
                partition,
                fingerprint,
                table: b"t".to_vec(),
                key: b"p1".to_vec(),
            },
            Duration::from_secs(2),
        );
        match reply {
            Ok(Reply::Error(_)) => refused += 1,
            other => panic!("a half-copied partition answered a read: {other:?}"),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(refused > 5);

    // The source comes back (alone in its group) and copies again, from
    // the start.
    cluster.restart(0);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(dds.refresh_maps().is_ok() && dds.maps().partitions_of(BrickId(2)) == vec![partition]) {
        if Instant::now() > deadline {
            for b in &cluster.bricks {
                eprintln!("--- brick {}\n{}", b.id, b.log());
            }
            panic!("brick 2 never rejoined the group");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let s2 = stats(&mut dds, BrickId(2));
    // The half copy was never installed (checked above); the copy redone
    // was, once, or again if its vote could not start at first (see
    // `a_brick_back_within_grace_with_current_data_rejoins_without_a_copy`).
    assert!(s2["copies_installed"] >= 1, "{s2:?}");
    assert_preloaded(&mut dds, (0..KEYS).step_by(97));
    assert_eq!(dds.get("t", b"while-down"), Ok(b"x".to_vec()));
    match dds.get("t", b"never-written") {
        Err(DdsError::NotFound) => {}
        other => panic!("{other:?}"),
    }
    assert_replicas_identical(&mut dds, &[BrickId(1), BrickId(2)]);
}

/// Two bricks, one partition; `k` written, then brick 2 killed and removed
/// by a vote while writes go on.
fn two_bricks_with_brick_2_removed() -> (TestCluster, Dds) {
    let mut cluster = TestCluster::start(ClusterSpec {
        bricks: 2,
        partitions: 1,
        heal_after_ms: 600_000,
        ..ClusterSpec::default()
    });
    let mut dds = connect(&cluster);
    ensure_table(&mut dds, "t");
    dds.put("t", b"k", b"before").unwrap();
    cluster.bricks[1].kill();
    eventually(Duration::from_secs(15), "brick 2 removed", || {
        let _ = dds.put("t", b"k", b"during");
        removed_everywhere(&mut dds, BrickId(2))
    });
    (cluster, dds)
}

/// A brick keeps the memberships it installed across a crash: the last
/// member of a group, killed and restarted while its partner is still
/// dead, knows it is alone and serves again (with the initial maps it
/// would wait for a partner that is not coming back).
#[test]
fn a_restarted_brick_remembers_the_memberships_it_installed() {
    let (mut cluster, mut dds) = two_bricks_with_brick_2_removed();
    dds.put("t", b"k", b"alone").unwrap();
    cluster.restart(0);
    let mut fresh = connect(&cluster);
    let maps = fresh.maps().clone();
    let entry = maps.rg.iter().next().unwrap().1.clone();
    assert_eq!(entry.bricks, vec![BrickId(1)], "epoch {}", entry.epoch);
    assert!(entry.epoch > 1);
    assert_eq!(fresh.get("t", b"k"), Ok(b"alone".to_vec()));
    fresh.put("t", b"k", b"after").unwrap();
    assert_eq!(fresh.get("t", b"k"), Ok(b"after".to_vec()));
}

/// The maps and votes files hold two slots each, saved in turn in place
/// (`brick::slots`). A votes file with neither slot whole (damage: a crash
/// tears only the slot it was saving) stops the brick at its start with an
/// error naming the file, since it cannot vote safely without its votes.
#[test]
fn a_brick_refuses_to_start_with_a_votes_file_neither_slot_of_which_is_whole() {
    let (mut cluster, _) = two_bricks_with_brick_2_removed();
    cluster.bricks[0].kill();
    let dir = cluster.data_dir(1);
    let mut damaged = 0;
    for name in ["maps", "votes"] {
        let path = dir.join(name);
        let mut bytes = std::fs::read(&path).unwrap();
        let half = bytes.len() / 2;
        assert!(
            !bytes.is_empty() && bytes.len().is_multiple_of(8192),
            "{name}: {} bytes, not two slots of whole pages",
            bytes.len()
        );
        for at in [0, half] {
            if name == "votes" && bytes[at..at + 8] == *b"DDSSLOT1" {
                // The first byte past the slot's header.
                bytes[at + 24] ^= 1;
                damaged += 1;
            }
        }
        if name == "votes" {
            std::fs::write(&path, &bytes).unwrap();
        } else {
            assert!(bytes[..8] == *b"DDSSLOT1" || bytes[half..half + 8] == *b"DDSSLOT1");
        }
    }
    assert!(damaged >= 1, "no saved slot in the votes file");
    cluster.spawn_again(0);
    let deadline = Instant::now() + Duration::from_secs(20);
    while cluster.bricks[0].is_running() {
        assert!(
            Instant::now() < deadline,
            "brick 1 started with damaged votes"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = cluster.bricks[0].log();
    assert!(
        log.contains("votes") && log.contains("neither of its two slots holds a whole save"),
        "{log}"
    );
    assert!(log.contains("cannot vote safely"), "{log}");
}

/// A brick stopped cleanly and started again within the grace period,
/// with no write to its partitions meanwhile, proves its data current by
/// digest and rejoins without a byte copied.
#[test]
fn a_brick_back_within_grace_with_current_data_rejoins_without_a_copy() {
    let mut cluster = TestCluster::start(ClusterSpec {
        bricks: 3,
        partitions: 1,
        grace_ms: 60_000,
        heal_after_ms: 600_000,
        ..ClusterSpec::default()
    });
    let mut dds = connect(&cluster);
    ensure_table(&mut dds, "t");
    preload(&mut dds, 300);
    assert!(
        cluster.bricks[1].terminate(Duration::from_secs(10)),
        "clean stop"
    );
    // Reads only while it is away: its data stays current. The removal is
    // driven by the survivor's lease renewals.
    eventually(Duration::from_secs(15), "brick 2 removed", || {
        let _ = dds.get("t", b"p1");
        removed_everywhere(&mut dds, BrickId(2))
    });
    cluster.restart(1);
    eventually(Duration::from_secs(30), "brick 2 back in the group", || {
        dds.refresh_maps().is_ok() && dds.maps().partitions_of(BrickId(2)).len() == 1
    });
    let s1 = stats(&mut dds, BrickId(1));
    let s2 = stats(&mut dds, BrickId(2));
    assert_eq!(s1["copies_caught_up"], 1, "{s1:?}");
    assert_eq!(s1["last_copy_bytes"], 0, "{s1:?}");
    assert_eq!(s2["copy_bytes_received"], 0, "{s2:?}");
    // At least once: a catch-up whose vote cannot start (the vote that
    // removed the brick still under way, on a slow machine) is abandoned
    // and offered again, and the target installs each offer, none of them
    // with a byte copied (above).
    assert!(s2["copies_installed"] >= 1, "{s2:?}");
    dds.put("t", b"after", b"rejoin").unwrap();
    assert_preloaded(&mut dds, (0..300).step_by(7));
    assert_replicas_identical(&mut dds, &[BrickId(1), BrickId(2)]);
}

/// The whole cluster stopped cleanly after writes and started again takes
/// writes at once, many in flight, every one of them on its first try or
/// after a retry: a brick that stopped cleanly forgot no transaction, so
/// it must not answer "unknown" about the ones it never saw (that left
/// the other replica's locks held and every write failing).
#[test]
fn a_cluster_stopped_cleanly_and_started_again_takes_writes_at_once() {
    let mut cluster = TestCluster::start(ClusterSpec::default());
    let mut dds = connect(&cluster);
    ensure_table(&mut dds, "t");
    preload(&mut dds, 500);
    drop(dds);
    for index in 0..cluster.bricks.len() {
        assert!(
            cluster.bricks[index].terminate(Duration::from_secs(10)),
            "brick {} stops cleanly",
            index + 1
        );
    }
    for index in 0..cluster.bricks.len() {
        cluster.restart(index);
    }
    let mut dds = connect(&cluster);
    // Writes straight away, while the bricks still wait out the leases
    // they granted before the stop: they are held or refused and retried.
    // Each to a key of its own: two writes of one key in flight at once
    // may land in either order.
    let mut done = Vec::new();
    let (mut submitted, mut completed) = (0u64, 0u64);
    let deadline = Instant::now() + Duration::from_secs(60);
    while completed < 2000 {
        assert!(
            Instant::now() < deadline,
            "{completed} of 2000 writes in 60 s"
        );
        while submitted < 2000 && dds.in_flight() < 100 {
            let key = format!("q{submitted}").into_bytes();
            dds.submit(Op::Put {
                table: b"t".to_vec(),
                key,
                value: format!("after-{submitted}").into_bytes(),
            })
            .expect("submit");
            submitted += 1;
        }
        done.clear();
        dds.poll(&mut done, Duration::from_millis(100))
            .expect("poll");
        for (_, result) in &done {
            result.as_ref().expect("a write after the restart");
        }
        completed += done.len() as u64;
    }
    for i in (0..2000).step_by(37) {
        let key = format!("q{i}").into_bytes();
        assert_eq!(
            dds.get("t", &key),
            Ok(format!("after-{i}").into_bytes()),
            "q{i}"
        );
    }
    assert_preloaded(&mut dds, (0..500).step_by(37));
    assert_replicas_identical(&mut dds, &[BrickId(1), BrickId(2), BrickId(3)]);
}

/// One brick stopped cleanly under reads and writes and started again:
/// it is removed, copied back and rejoins, and meanwhile no read fails and
/// every acknowledged write is there afterwards on every replica.
#[test]
fn a_brick_stopped_cleanly_under_load_rejoins_and_loses_nothing() {
    const KEYS: u64 = 1000;
    let mut cluster = TestCluster::start(ClusterSpec {
        partitions: 3,
        heal_after_ms: 600_000,
        ..ClusterSpec::default()
    });
    let mut dds = connect(&cluster);
    ensure_table(&mut dds, "t");
    preload(&mut dds, KEYS);
    let groups_of_2 = dds.maps().partitions_of(BrickId(2)).len();
    under_load(&mut dds, &mut cluster, KEYS, |cluster, dds| {
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            cluster.bricks[1].terminate(Duration::from_secs(10)),
            "clean stop"
        );
        std::thread::sleep(Duration::from_millis(800));
        cluster.restart(1);
        eventually(
            Duration::from_secs(30),
            "brick 2 back in its groups",
            || {
                dds.refresh_maps().is_ok()
                    && dds.maps().partitions_of(BrickId(2)).len() == groups_of_2
            },
        );
    });
    assert_replicas_identical(&mut dds, &[BrickId(1), BrickId(2), BrickId(3)]);
}

/// Every brick killed at once (kill -9) and started again from its data.
/// No group has a live member to be copied back from, so each group's
/// first member, which commits every write before anyone is told, takes
/// its group alone once the others answered that they restarted too:
/// every acknowledged write is readable again within seconds, and writes
/// go on. Each group is then copied back to two members, and they are
/// identical.
#[test]
fn a_cluster_whose_bricks_all_crashed_comes_back_with_every_acknowledged_write() {
    const KEYS: u64 = 500;
    let mut cluster = TestCluster::start(ClusterSpec::default());
    let mut dds = connect(&cluster);
    ensure_table(&mut dds, "t");
    preload(&mut dds, KEYS);
    drop(dds);
    for brick in cluster.bricks.iter_mut() {
        brick.kill();
    }
    let (mut dds, restarted_at) = restart_all_and_read_back(&mut cluster, KEYS);
    // Each group's first member took it, so no brick waits for a copy;
    // each still says "unknown" about what it does not know, for a while.
    eventually(
        Duration::from_secs(10),
        "no brick waits to be copied back",
        || sum_stat(&mut dds, &[1, 2, 3], "groups_waiting_for_a_copy") == 0,
    );
    for b in 1..=3 {
        let left = stats(&mut dds, BrickId(b))["forgotten_outcomes_ms_left"];
        assert!(left > 0 && left <= 60_000, "brick {b}: {left} ms");
    }
    write_r_keys(&mut dds, b"after the crash");
    eventually(
        Duration::from_secs(30),
        "every group back to 2 members",
        || degree_back(&mut dds, 2, &[]),
    );
    eprintln!(
        "degree restored {:?} after the restart",
        restarted_at.elapsed()
    );
    assert_preloaded(&mut dds, 0..KEYS);
    for i in 0..100 {
        let key = format!("r{i}").into_bytes();
        assert_eq!(dds.get("t", &key), Ok(b"after the crash".to_vec()), "r{i}");
    }
    assert_replicas_identical(&mut dds, &[BrickId(1), BrickId(2), BrickId(3)]);
}

/// Restarts every brick, brick 2 with its data folder emptied first (a
/// replaced disk); `crash` kills the others with kill -9 instead of
/// stopping them cleanly. Then every preloaded key must be readable and
/// stay so, writes must go on, and brick 2 must end up copied back into
/// its groups with replicas identical to its partners'.
fn restart_with_brick_2_emptied(crash: bool) {
    const KEYS: u64 = 500;
    let mut cluster = TestCluster::start(ClusterSpec::default());
    let mut dds = connect(&cluster);
    ensure_table(&mut dds, "t");
    preload(&mut dds, KEYS);
    let groups_of_2 = dds.maps().partitions_of(BrickId(2)).len();
    assert!(groups_of_2 > 0);
    drop(dds);
    for (index, brick) in cluster.bricks.iter_mut().enumerate() {
        if crash && index != 1 {
            brick.kill();
        } else {
            assert!(brick.terminate(Duration::from_secs(10)), "clean stop");
        }
    }
    std::fs::remove_dir_all(cluster.data_dir(2)).expect("empty brick 2's data folder");
    let (mut dds, restarted_at) = restart_all_and_read_back(&mut cluster, KEYS);
    eventually(
        Duration::from_secs(30),
        "brick 2 back in its groups, every group with 2 members",
        || {
            degree_back(&mut dds, 2, &[])
                && dds.maps().partitions_of(BrickId(2)).len() == groups_of_2
                && sum_stat(&mut dds, &[1, 2, 3], "groups_waiting_for_a_copy") == 0
        },
    );
    eprintln!(
        "brick 2 back in its groups {:?} after the restart",
        restarted_at.elapsed()
    );
    write_r_keys(&mut dds, b"after the restart");
    // Every key, on every replica: reads are spread over the members.
    for _ in 0..3 {
        assert_preloaded(&mut dds, 0..KEYS);
    }
    assert_replicas_identical(&mut dds, &[BrickId(1), BrickId(2), BrickId(3)]);
}

/// A brick whose data folder was emptied (a replaced disk), started again
/// together with its partners after a clean stop of all: they do not
/// remember its old incarnation, but it says it started empty, and they
/// hold data, so it is removed and copied back instead of serving empty
/// partitions.
#[test]
fn a_brick_started_empty_with_its_partners_is_copied_back() {
    restart_with_brick_2_emptied(false);
}

/// The same with its partners killed (kill -9): they restart amnesiac, and
/// the empty brick must not take their groups alone and copy its empty
/// partitions over their data; the groups' members with data take them.
#[test]
fn a_brick_started_empty_while_its_partners_crashed_copies_nothing_over_them() {
    restart_with_brick_2_emptied(true);
}
