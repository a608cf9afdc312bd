//! Helpers shared by the real-process tests of ddslib.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use brick::testkit::{ClusterSpec, TestCluster};
use ddslib::{Dds, DdsError};
use maps::BrickId;
use wire::{Reply, Request};

pub fn cluster() -> TestCluster {
    TestCluster::start(ClusterSpec::default())
}

/// A client of the test cluster. Its log (info and up, or `RUST_LOG`) is
/// captured with the test's output, so a failing test shows what the
/// client saw.
pub fn connect(cluster: &TestCluster) -> Dds {
    let _ = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .is_test(true)
        .try_init();
    Dds::connect_config(cluster.config_path()).expect("connect to the test cluster")
}

/// Polls `f` until it returns true, for at most `timeout`.
pub fn eventually(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn stats(dds: &mut Dds, brick: BrickId) -> BTreeMap<String, u64> {
    match dds.call(brick, Request::Stats, Duration::from_secs(2)) {
        Ok(Reply::Stats(entries)) => entries.into_iter().collect(),
        other => panic!("stats of {brick}: {other:?}"),
    }
}

/// Per-partition checksums of the live replicas, or the first difference.
pub fn replica_difference(dds: &mut Dds, live: &[BrickId]) -> Option<String> {
    dds.refresh_maps().expect("refresh maps");
    let maps = dds.maps().clone();
    for (leaf, rg) in maps.dp.leaves() {
        let entry = maps.rg.get(rg).expect("rg of a leaf");
        let mut sums = Vec::new();
        for brick in entry.bricks.iter().filter(|b| live.contains(b)) {
            match dds.call(
                *brick,
                Request::PartitionChecksum { partition: leaf },
                Duration::from_secs(2),
            ) {
                Ok(Reply::Checksum { crc, keys }) => sums.push((*brick, crc, keys)),
                other => return Some(format!("checksum of {leaf} at {brick}: {other:?}")),
            }
        }
        if sums
            .windows(2)
            .any(|w| (w[0].1, w[0].2) != (w[1].1, w[1].2))
        {
            return Some(format!("replicas of {leaf} differ: {sums:?}"));
        }
    }
    None
}

/// Once no write is in flight (no brick holds a prepared transaction, and
/// the commits sent after acknowledging have arrived), the live replicas
/// of every partition hold the same data.
pub fn assert_replicas_identical(dds: &mut Dds, live: &[BrickId]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let quiet = live
            .iter()
            .all(|b| stats(dds, *b).get("prepared") == Some(&0));
        let difference = replica_difference(dds, live);
        match difference {
            None if quiet => return,
            _ if Instant::now() > deadline => panic!("replicas never converged: {difference:?}"),
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

pub fn ensure_table(dds: &mut Dds, name: &str) {
    match dds.create_table(name) {
        Ok(()) | Err(DdsError::TableExists(_)) => {}
        Err(e) => panic!("create_table: {e}"),
    }
}
