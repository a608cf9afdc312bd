//! Restart of a real brick: after a clean stop everything is there; after
//! kill -9 and a torn arena tail, everything before the tail is there and the
//! brick starts.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use brick::testkit::{ClusterSpec, TestCluster};
use common::{get, route, RawClient};
use wire::{Reply, Request, TxId, TxState, Write};

fn value_of(i: u32) -> Vec<u8> {
    // No zero bytes, so the end of data in an arena is the last nonzero byte.
    format!("value-{i:08}-").repeat(10).into_bytes()
}

/// Writes keys `range` with pipelined prepares and commits.
fn put_range(c: &mut RawClient, maps: &maps::Maps, range: std::ops::Range<u32>) {
    let keys: Vec<u32> = range.collect();
    for chunk in keys.chunks(500) {
        let prepares: Vec<Request> = chunk
            .iter()
            .map(|i| {
                let key = i.to_be_bytes();
                let (partition, fingerprint, bricks) = route(maps, b"t", &key);
                Request::Prepare {
                    txid: TxId(u64::from(*i) + 1),
                    partition,
                    fingerprint,
                    table: b"t".to_vec(),
                    key: key.to_vec(),
                    write: Write::Put(value_of(*i)),
                    participants: bricks,
                    decide: false,
                }
            })
            .collect();
        for id in c.send_batch(&prepares) {
            assert_eq!(c.recv(id), Reply::Voted);
        }
        let commits: Vec<Request> = chunk
            .iter()
            .map(|i| Request::Commit {
                txid: TxId(u64::from(*i) + 1),
                partition: route(maps, b"t", &i.to_be_bytes()).0,
            })
            .collect();
        for id in c.send_batch(&commits) {
            assert_eq!(c.recv(id), Reply::TxState(TxState::Committed));
        }
    }
}

fn count_present(c: &mut RawClient, maps: &maps::Maps, range: std::ops::Range<u32>) -> Vec<u32> {
    let mut missing = Vec::new();
    for i in range {
        match get(c, maps, b"t", &i.to_be_bytes()) {
            Reply::Value(v) => assert_eq!(v, value_of(i), "key {i} has a wrong value"),
            Reply::NotFound => missing.push(i),
            other => panic!("get {i}: {other:?}"),
        }
    }
    missing
}

#[test]
fn restart_after_sigterm_and_after_kill_with_torn_tail() {
    let mut cluster = TestCluster::start(ClusterSpec {
        bricks: 1,
        replicas: 1,
        partitions: 4,
        partition_capacity_mb: 16,
        ..ClusterSpec::default()
    });
    let maps = {
        let mut c = RawClient::connect(cluster.bricks[0].addr);
        assert_eq!(
            c.call(&Request::CreateTable {
                name: b"t".to_vec()
            }),
            Reply::Ok
        );
        let maps = c.maps();
        put_range(&mut c, &maps, 0..10_000);
        maps
    };

    // A clean stop: exit status 0, and every key is there after restart.
    assert!(
        cluster.bricks[0].terminate(Duration::from_secs(10)),
        "brick did not exit 0 on SIGTERM"
    );
    cluster.restart(0);
    let mut c = RawClient::connect(cluster.bricks[0].addr);
    assert_eq!(count_present(&mut c, &maps, 0..10_000), Vec::<u32>::new());

    // More writes, then kill -9 and tear the tail of one arena.
    put_range(&mut c, &maps, 10_000..10_200);
    drop(c);
    cluster.bricks[0].kill();

    // The last key written to each partition sits at its arena's tail.
    let mut last_in_partition: HashMap<maps::PartitionId, u32> = HashMap::new();
    for i in 10_000..10_200u32 {
        last_in_partition.insert(route(&maps, b"t", &i.to_be_bytes()).0, i);
    }
    let (torn_partition, torn_key) = last_in_partition
        .iter()
        .map(|(p, k)| (*p, *k))
        .next()
        .unwrap();
    let path = brick::daemon::arena_path(&cluster.data_dir(1), torn_partition);
    let mut bytes = std::fs::read(&path).expect("read arena");
    let end = bytes.iter().rposition(|b| *b != 0).expect("arena has data") + 1;
    // Zero the last 20 bytes of the final record, as a crash mid-write would
    // leave it.
    for b in &mut bytes[end - 20..end] {
        *b = 0;
    }
    std::fs::write(&path, &bytes).expect("write arena");

    cluster.restart(0);
    let mut c = RawClient::connect(cluster.bricks[0].addr);
    assert_eq!(count_present(&mut c, &maps, 0..10_000), Vec::<u32>::new());
    let missing = count_present(&mut c, &maps, 10_000..10_200);
    assert_eq!(missing, vec![torn_key], "only the torn record is lost");
    let log = cluster.bricks[0].log();
    assert!(
        log.lines()
            .any(|l| l.contains("WARN") && l.contains("torn")),
        "the cut is logged:\n{log}"
    );
    // The brick takes writes again at the cut point.
    put_range(&mut c, &maps, torn_key..torn_key + 1);
    assert_eq!(
        count_present(&mut c, &maps, 10_000..10_200),
        Vec::<u32>::new()
    );
}
