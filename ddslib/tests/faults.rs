//! ddslib against real brick processes on 127.0.0.x: 3 bricks, 2 replicas.
//! Crashes (kill -9), pauses (SIGSTOP/SIGCONT), a client killed between the
//! two phases of a write, and stale maps.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use brick::testkit::{ClusterSpec, TestCluster};
use ddslib::{Dds, DdsError, Op};
use maps::{BrickId, Maps, PartitionId};
use wire::{ErrorCode, Reply, Request};

mod common;

use common::{assert_replicas_identical, cluster, connect, ensure_table, eventually, stats};

#[test]
fn concurrent_writers_lose_no_update_and_replicas_match() {
    let cluster = cluster();
    let mut dds = connect(&cluster);
    ensure_table(&mut dds, "t");
    let keys: Vec<Vec<u8>> = (0..8u64).map(|k| k.to_be_bytes().to_vec()).collect();
    let threads: Vec<_> = (0..4u32)
        .map(|w| {
            let config = cluster.config_path().to_path_buf();
            let keys = keys.clone();
            std::thread::spawn(move || {
                let mut dds = Dds::connect_config(&config).unwrap();
                // Each writer's last acknowledged value per key.
                let mut last = BTreeMap::new();
                for seq in 0..150u32 {
                    let key = &keys[(seq as usize * 7 + w as usize) % keys.len()];
                    let value = format!("w{w}-s{seq}").into_bytes();
                    match dds.put("t", key, &value) {
                        Ok(()) => {
                            last.insert(key.clone(), (seq, value));
                        }
                        Err(e) => panic!("writer {w}: put failed with no fault injected: {e}"),
                    }
                }
                last
            })
        })
        .collect();
    let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    // Every key's final value is one that some writer wrote last to it: no
    // acknowledged write vanished behind an older one.
    for key in &keys {
        let finals: Vec<Vec<u8>> = results
            .iter()
            .filter_map(|m| m.get(key).map(|(_, v)| v.clone()))
            .collect();
        let got = dds.get("t", key).expect("read back");
        assert!(
            finals.contains(&got),
            "key {key:?}: {got:?} is not any writer's last write"
        );
    }
    let live: Vec<BrickId> = (1..=3).map(BrickId).collect();
    assert_replicas_identical(&mut dds, &live);
}

#[test]
fn kill_one_brick_during_a_write_stream() {
    let mut cluster = cluster();
    let mut dds = connect(&cluster);
    ensure_table(&mut dds, "t");
    let config = cluster.config_path().to_path_buf();
    let writer = std::thread::spawn(move || {
        let mut dds = Dds::connect_config(&config).unwrap();
        let mut acked = Vec::new();
        let mut failed = 0;
        let start = Instant::now();
        let mut i = 0u64;
        while start.elapsed() < Duration::from_secs(6) {
            match dds.put("t", &i.to_be_bytes(), &i.to_le_bytes()) {
                Ok(()) => acked.push(i),
                Err(_) => failed += 1,
            }
            i += 1;
        }
        (acked, failed)
    });
    std::thread::sleep(Duration::from_millis(1500));
    cluster.bricks[1].kill();
    // Reads keep succeeding while the brick is removed.
    let reader_start = Instant::now();
    let mut reads = 0;
    while reader_start.elapsed() < Duration::from_secs(3) {
        match dds.get("t", &0u64.to_be_bytes()) {
            Ok(_) | Err(DdsError::NotFound) => reads += 1,
            Err(e) => panic!("a read failed after the kill: {e}"),
        }
    }
    assert!(reads > 0);
    let (acked, failed) = writer.join().unwrap();
    assert!(
        acked.len() > 100,
        "only {} writes were acknowledged",
        acked.len()
    );
    eprintln!("{} writes acknowledged, {failed} failed", acked.len());
    for i in &acked {
        assert_eq!(
            dds.get("t", &i.to_be_bytes()),
            Ok(i.to_le_bytes().to_vec()),
            "acknowledged key {i} lost"
        );
    }
    // The dead brick is out of every group, at a new epoch.
    eventually(
        Duration::from_secs(10),
        "brick 2 removed everywhere",
        || {
            dds.refresh_maps().is_ok()
                && dds
                    .maps()
                    .rg
                    .iter()
                    .all(|(_, e)| !e.bricks.contains(&BrickId(2)))
        },
    );
    let maps = dds.maps().clone();
    assert!(maps.rg.iter().any(|(_, e)| e.epoch > 1), "no epoch went up");
    assert_replicas_identical(&mut dds, &[BrickId(1), BrickId(3)]);
}

fn kv_binary() -> std::path::PathBuf {
    let bin = brick::testkit::brick_binary();
    let path = bin.parent().unwrap().join("examples").join("kv");
    assert!(
        path.exists(),
        "{} missing: build with `cargo test --workspace`",
        path.display()
    );
    path
}

/// A child process that is killed when the test ends, also when it fails
/// half-way.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A client answered for its write sends the other replica's commit before
/// it returns to the caller, not with its next call: a service that writes
/// and then goes quiet leaves no key locked (with a prepare timeout of a
/// minute, only the client's commit can release it within the test).
#[test]
fn a_client_quiet_after_a_write_leaves_no_replica_locked() {
    let cluster = TestCluster::start(ClusterSpec {
        prepare_ms: 60_000,
        ..ClusterSpec::default()
    });
    let mut watcher = connect(&cluster);
    ensure_table(&mut watcher, "t");
    let all: Vec<BrickId> = (1..=3).map(BrickId).collect();
    let no_prepared = |dds: &mut Dds| {
        all.iter()
            .all(|b| stats(dds, *b).get("prepared") == Some(&0))
    };
    // Blocking calls.
    let mut writer = connect(&cluster);
    for k in 0..4u8 {
        writer.put("t", &[b'k', k], b"v").unwrap();
        eventually(
            Duration::from_secs(5),
            "no replica holds a prepared write",
            || no_prepared(&mut watcher),
        );
    }
    // The polling interface, once nothing is left in flight.
    let put = |k: u8| Op::Put {
        table: b"t".to_vec(),
        key: vec![b'p', k],
        value: b"v".to_vec(),
    };
    let ids: Vec<_> = (0..4u8).map(|k| writer.submit(put(k)).unwrap()).collect();
    let mut done = Vec::new();
    while done.len() < ids.len() {
        writer.poll(&mut done, Duration::from_secs(1)).unwrap();
    }
    assert!(done.iter().all(|(_, r)| r.is_ok()), "{done:?}");
    eventually(
        Duration::from_secs(5),
        "no replica holds a prepared write",
        || no_prepared(&mut watcher),
    );
    drop(writer);
}

#[test]
fn client_killed_between_prepare_and_commit() {
    let cluster = cluster();
    let mut dds = connect(&cluster);
    ensure_table(&mut dds, "t");
    dds.put("t", b"k", b"before").unwrap();
    let mut child = KillOnDrop(
        Command::new(kv_binary())
            .args(["--config"])
            .arg(cluster.config_path())
            .args(["--halt-after-prepare", "put", "t", "k", "halted"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn kv example"),
    );
    // Wait until the other replica holds the prepared write: the client
    // halts before it asks the primary to prepare and decide.
    let maps = dds.maps().clone();
    let replicas = maps.lookup(maps::key_hash(b"t", b"k")).bricks.to_vec();
    let (primary, other) = (replicas[0], replicas[1]);
    eventually(
        Duration::from_secs(10),
        "the other replica prepared",
        || stats(&mut dds, other).get("prepared") == Some(&1),
    );
    assert_eq!(stats(&mut dds, primary).get("prepared"), Some(&0));
    let _ = child.0.kill(); // kill -9
    let _ = child.0.wait();
    let killed_at = Instant::now();
    // The prepared replica times out and asks the primary, which never saw
    // the write: the write aborts, and the lock is released within the
    // timeouts.
    eventually(Duration::from_secs(10), "locks released", || {
        replicas
            .iter()
            .all(|b| stats(&mut dds, *b).get("prepared") == Some(&0))
    });
    let resolved_in = killed_at.elapsed();
    let bound = Duration::from_millis(cluster.spec.prepare_ms * 2 + cluster.spec.request_ms);
    assert!(
        resolved_in <= bound + Duration::from_secs(2),
        "took {resolved_in:?}"
    );
    assert_eq!(dds.get("t", b"k").unwrap(), b"before");
    dds.put("t", b"k", b"after").unwrap();
    assert_eq!(dds.get("t", b"k").unwrap(), b"after");
    let live: Vec<BrickId> = (1..=3).map(BrickId).collect();
    assert_replicas_identical(&mut dds, &live);
}

#[test]
fn stale_maps_are_repaired_by_the_library() {
    let mut cluster = cluster();
    let mut fresh = connect(&cluster);
    ensure_table(&mut fresh, "t");
    // These handles take their maps now and keep them: one writes, one
    // reads.
    let mut stale = connect(&cluster);
    let stale_maps: Maps = stale.maps().clone();
    let mut stale_reader = connect(&cluster);
    cluster.bricks[2].kill();
    // The fresh handle's writes drive the removal of brick 3.
    eventually(Duration::from_secs(15), "brick 3 removed", || {
        let _ = fresh.put("t", b"probe", b"x");
        fresh.refresh_maps().is_ok()
            && fresh
                .maps()
                .rg
                .iter()
                .all(|(_, e)| !e.bricks.contains(&BrickId(3)))
    });
    assert_ne!(stale.maps().fingerprint(), fresh.maps().fingerprint());
    let mismatches_before: u64 = [1, 2]
        .iter()
        .map(|b| stats(&mut fresh, BrickId(*b))["fingerprint_mismatches"])
        .sum();
    // Every key through the stale handle works, repairing as it goes: a
    // write whose other participant is the removed brick learns the maps
    // from the group's leader when it asks for the removal; one that meets
    // a live brick with the stale fingerprint is refused with the maps.
    for i in 0..50u64 {
        stale
            .put("t", &i.to_be_bytes(), b"v")
            .expect("put through stale maps");
        assert_eq!(stale.get("t", &i.to_be_bytes()).unwrap(), b"v");
    }
    assert_ne!(
        stale.maps().fingerprint(),
        stale_maps.fingerprint(),
        "the stale handle repaired its maps"
    );
    assert_eq!(stale.maps().fingerprint(), fresh.maps().fingerprint());
    // Reads through stale maps meet the live replica's fingerprint check.
    for i in 0..50u64 {
        assert_eq!(
            stale_reader.get("t", &i.to_be_bytes()).unwrap(),
            b"v",
            "read through stale maps"
        );
    }
    let mismatches_after: u64 = [1, 2]
        .iter()
        .map(|b| stats(&mut fresh, BrickId(*b))["fingerprint_mismatches"])
        .sum();
    assert!(
        mismatches_after > mismatches_before,
        "the stale reader was never refused"
    );
    assert_eq!(
        stale_reader.maps().fingerprint(),
        fresh.maps().fingerprint()
    );
}

#[test]
fn paused_and_removed_brick_serves_no_stale_read() {
    let cluster = cluster();
    let mut dds = connect(&cluster);
    ensure_table(&mut dds, "t");
    // A key replicated on brick 2.
    let maps = dds.maps().clone();
    let key = (0..1000u64)
        .map(|i| i.to_be_bytes())
        .find(|k| {
            maps.lookup(maps::key_hash(b"t", k))
                .bricks
                .contains(&BrickId(2))
        })
        .unwrap();
    let route = maps.lookup(maps::key_hash(b"t", &key));
    let (partition, old_fingerprint): (PartitionId, u32) = (route.partition, route.fingerprint);
    dds.put("t", &key, b"old").unwrap();

    cluster.bricks[1].pause();
    // Writing while brick 2 is stopped removes it from the group.
    dds.put("t", &key, b"new")
        .expect("write while a replica is paused");
    eventually(Duration::from_secs(15), "brick 2 removed", || {
        dds.refresh_maps().is_ok()
            && dds
                .maps()
                .rg
                .iter()
                .all(|(_, e)| !e.bricks.contains(&BrickId(2)))
    });
    cluster.bricks[1].resume();
    // Ask brick 2 directly, with the routing facts it last knew, over and
    // over while it catches up: it must never return the old value.
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut answers = 0;
    while Instant::now() < deadline {
        let reply = dds.call(
            BrickId(2),
            Request::Get {
                partition,
                fingerprint: old_fingerprint,
                table: b"t".to_vec(),
                key: key.to_vec(),
            },
            Duration::from_secs(2),
        );
        match reply {
            Ok(Reply::Value(v)) => panic!(
                "removed brick answered a read with {:?}",
                String::from_utf8_lossy(&v)
            ),
            Ok(Reply::Error(e)) => {
                assert!(
                    matches!(
                        e.code,
                        ErrorCode::Fenced | ErrorCode::FingerprintMismatch | ErrorCode::NotReplica
                    ),
                    "{e:?}"
                );
                answers += 1;
            }
            Ok(other) => panic!("{other:?}"),
            Err(_) => {}
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        answers > 10,
        "the resumed brick answered only {answers} times"
    );
    assert_eq!(dds.get("t", &key).unwrap(), b"new");
}
