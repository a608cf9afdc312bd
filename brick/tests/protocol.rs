//! A real brick process, driven through the wire protocol: tables, reads,
//! writes by two-phase commit, many requests outstanding on one connection.

mod common;

use brick::testkit::{ClusterSpec, TestCluster};
use common::{get, route, write, RawClient};
use wire::{ErrorCode, Reply, Request, TxId, TxState, Write};

fn single_brick() -> TestCluster {
    TestCluster::start(ClusterSpec {
        bricks: 1,
        replicas: 1,
        ..ClusterSpec::default()
    })
}

fn code(reply: &Reply) -> Option<ErrorCode> {
    match reply {
        Reply::Error(e) => Some(e.code),
        _ => None,
    }
}

#[test]
fn tables_get_put_remove() {
    let cluster = single_brick();
    let mut c = RawClient::connect(cluster.bricks[0].addr);
    let maps = c.maps();

    // Operations on a table that does not exist are refused by name.
    assert_eq!(
        code(&get(&mut c, &maps, b"users", b"k")),
        Some(ErrorCode::TableNotFound)
    );
    assert_eq!(
        c.call(&Request::CreateTable {
            name: b"users".to_vec()
        }),
        Reply::Ok
    );
    assert_eq!(
        code(&c.call(&Request::CreateTable {
            name: b"users".to_vec()
        })),
        Some(ErrorCode::TableExists)
    );

    assert_eq!(get(&mut c, &maps, b"users", b"alice"), Reply::NotFound);
    write(
        &mut c,
        &maps,
        1,
        b"users",
        b"alice",
        Write::Put(b"v1".to_vec()),
    );
    assert_eq!(
        get(&mut c, &maps, b"users", b"alice"),
        Reply::Value(b"v1".to_vec())
    );
    write(
        &mut c,
        &maps,
        2,
        b"users",
        b"alice",
        Write::Put(b"v2".to_vec()),
    );
    assert_eq!(
        get(&mut c, &maps, b"users", b"alice"),
        Reply::Value(b"v2".to_vec())
    );

    // Tables are separate namespaces.
    assert_eq!(
        c.call(&Request::CreateTable {
            name: b"other".to_vec()
        }),
        Reply::Ok
    );
    assert_eq!(get(&mut c, &maps, b"other", b"alice"), Reply::NotFound);

    write(&mut c, &maps, 3, b"users", b"alice", Write::Remove);
    assert_eq!(get(&mut c, &maps, b"users", b"alice"), Reply::NotFound);

    // Destroying a table frees its records.
    for i in 0..100u32 {
        write(
            &mut c,
            &maps,
            10 + u64::from(i),
            b"users",
            &i.to_be_bytes(),
            Write::Put(vec![7; 150]),
        );
    }
    let keys_before = total_keys(&mut c);
    assert!(keys_before >= 100, "stats count {keys_before} keys");
    assert_eq!(
        c.call(&Request::DestroyTable {
            name: b"users".to_vec()
        }),
        Reply::Ok
    );
    assert_eq!(
        code(&get(&mut c, &maps, b"users", &1u32.to_be_bytes())),
        Some(ErrorCode::TableNotFound)
    );
    assert!(total_keys(&mut c) < keys_before - 99);
    assert_eq!(
        code(&c.call(&Request::DestroyTable {
            name: b"users".to_vec()
        })),
        Some(ErrorCode::TableNotFound)
    );
}

fn total_keys(c: &mut RawClient) -> u64 {
    match c.call(&Request::Stats) {
        Reply::Stats(entries) => entries
            .iter()
            .filter(|(name, _)| name.starts_with("partition.") && name.ends_with(".keys"))
            .map(|(_, v)| *v)
            .sum(),
        other => panic!("stats answered {other:?}"),
    }
}

/// Key `k` of table `t` as the brick routes it.
struct KeyK {
    partition: maps::PartitionId,
    fingerprint: u32,
    bricks: Vec<maps::BrickId>,
}

impl KeyK {
    /// A client of the brick with table `t` created, and the key's route.
    fn create(cluster: &TestCluster) -> (RawClient, KeyK) {
        let (c, maps) = RawClient::with_table_t(cluster.bricks[0].addr);
        let (partition, fingerprint, bricks) = route(&maps, b"t", b"k");
        let k = KeyK {
            partition,
            fingerprint,
            bricks,
        };
        (c, k)
    }

    fn prepare(&self, txid: u64, value: &[u8], decide: bool) -> Request {
        Request::Prepare {
            txid: TxId(txid),
            partition: self.partition,
            fingerprint: self.fingerprint,
            table: b"t".to_vec(),
            key: b"k".to_vec(),
            write: Write::Put(value.to_vec()),
            participants: self.bricks.clone(),
            decide,
        }
    }

    fn get(&self, fingerprint: u32) -> Request {
        Request::Get {
            partition: self.partition,
            fingerprint,
            table: b"t".to_vec(),
            key: b"k".to_vec(),
        }
    }
}

#[test]
fn lock_conflict_and_abort() {
    let cluster = single_brick();
    let (mut c, k) = KeyK::create(&cluster);
    let (partition, fingerprint) = (k.partition, k.fingerprint);
    let prepare = |txid: u64, value: &[u8]| k.prepare(txid, value, false);
    assert_eq!(c.call(&prepare(1, b"a")), Reply::Voted);
    // A second writer on the same key votes no at once: no waiting.
    assert_eq!(
        code(&c.call(&prepare(2, b"b"))),
        Some(ErrorCode::LockConflict)
    );
    // A read of the locked key waits for the outcome; abort releases it.
    let read = c.send(&k.get(fingerprint));
    assert_eq!(
        c.call(&Request::Abort {
            txid: TxId(1),
            partition
        }),
        Reply::TxState(TxState::Aborted)
    );
    assert_eq!(c.recv(read), Reply::NotFound);
    // An aborted transaction cannot be prepared again.
    assert_eq!(code(&c.call(&prepare(1, b"a"))), Some(ErrorCode::Refused));
    // A stale fingerprint is refused with the brick's maps attached.
    let stale = c.call(&k.get(fingerprint ^ 1));
    match stale {
        Reply::Error(e) => {
            assert_eq!(e.code, ErrorCode::FingerprintMismatch);
            assert!(e.maps.is_some(), "mismatch carries the brick's maps");
        }
        other => panic!("stale fingerprint answered {other:?}"),
    }
}

#[test]
fn a_prepare_that_decides_commits_at_once_and_its_outcome_stands() {
    let cluster = single_brick();
    let (mut c, k) = KeyK::create(&cluster);
    let partition = k.partition;
    let prepare = |txid: u64, value: &[u8], decide: bool| k.prepare(txid, value, decide);
    let get = || k.get(k.fingerprint);
    // Prepared and committed in one step: the answer is the outcome.
    assert_eq!(
        c.call(&prepare(1, b"a", true)),
        Reply::TxState(TxState::Committed)
    );
    assert_eq!(c.call(&get()), Reply::Value(b"a".to_vec()));
    // Asked again (a lost answer), the outcome stands and nothing is
    // applied twice.
    assert_eq!(
        c.call(&prepare(1, b"a", true)),
        Reply::TxState(TxState::Committed)
    );
    // A no is answered with the reason, and the transaction is aborted
    // here: asked again it says so.
    assert_eq!(c.call(&prepare(2, b"x", false)), Reply::Voted);
    assert_eq!(
        code(&c.call(&prepare(3, b"b", true))),
        Some(ErrorCode::LockConflict)
    );
    assert_eq!(
        c.call(&prepare(3, b"b", true)),
        Reply::TxState(TxState::Aborted)
    );
    assert_eq!(
        c.call(&Request::Abort {
            txid: TxId(2),
            partition
        }),
        Reply::TxState(TxState::Aborted)
    );
    // A participant that timed out asked about transaction 4 before its
    // prepare-and-decide arrived: it is aborted here, and the late one is
    // answered so, without applying the write.
    assert_eq!(
        c.call(&Request::TxStatus {
            txid: TxId(4),
            partition
        }),
        Reply::TxState(TxState::Aborted)
    );
    assert_eq!(
        c.call(&prepare(4, b"late", true)),
        Reply::TxState(TxState::Aborted)
    );
    assert_eq!(c.call(&get()), Reply::Value(b"a".to_vec()));
}

#[test]
fn many_requests_outstanding_on_one_connection() {
    let cluster = single_brick();
    let (mut c, maps) = RawClient::with_table_t(cluster.bricks[0].addr);
    // 500 prepares in one write, then 500 commits, then 500 reads.
    let n = 500u64;
    let prepares: Vec<Request> = (0..n)
        .map(|i| {
            let key = i.to_be_bytes();
            let (partition, fingerprint, bricks) = route(&maps, b"t", &key);
            Request::Prepare {
                txid: TxId(1000 + i),
                partition,
                fingerprint,
                table: b"t".to_vec(),
                key: key.to_vec(),
                write: Write::Put(format!("value-{i}").into_bytes()),
                participants: bricks,
                decide: false,
            }
        })
        .collect();
    let ids = c.send_batch(&prepares);
    for id in ids {
        assert_eq!(c.recv(id), Reply::Voted);
    }
    let commits: Vec<Request> = (0..n)
        .map(|i| Request::Commit {
            txid: TxId(1000 + i),
            partition: route(&maps, b"t", &i.to_be_bytes()).0,
        })
        .collect();
    for id in c.send_batch(&commits) {
        assert_eq!(c.recv(id), Reply::TxState(TxState::Committed));
    }
    let gets: Vec<Request> = (0..n)
        .map(|i| {
            let key = i.to_be_bytes();
            let (partition, fingerprint, _) = route(&maps, b"t", &key);
            Request::Get {
                partition,
                fingerprint,
                table: b"t".to_vec(),
                key: key.to_vec(),
            }
        })
        .collect();
    let ids = c.send_batch(&gets);
    // Collect in arrival order; each reply must match its own request.
    for (i, id) in ids.into_iter().enumerate().rev() {
        assert_eq!(c.recv(id), Reply::Value(format!("value-{i}").into_bytes()));
    }
}

/// Copy requests that do not fit the brick's state are refused by name and
/// change nothing; a corrupt chunk is refused and the copy dropped.
#[test]
fn copy_requests_out_of_turn_are_refused() {
    let cluster = TestCluster::start(ClusterSpec {
        bricks: 2,
        replicas: 1,
        partitions: 2,
        ..ClusterSpec::default()
    });
    let mut c = RawClient::connect(cluster.bricks[1].addr);
    let maps = c.maps();
    let (theirs, rg) = maps
        .dp
        .leaves()
        .find(|(_, rg)| !maps.rg.get(*rg).unwrap().bricks.contains(&maps::BrickId(2)))
        .expect("a partition brick 2 does not hold");
    let epoch = maps.rg.get(rg).unwrap().epoch;
    let chunk = |offset: u64, bytes: Vec<u8>| Request::CopyChunk {
        partition: theirs,
        offset,
        bytes,
        end: None,
    };
    // A chunk with no copy begun.
    assert_eq!(
        code(&c.call(&chunk(64, Vec::new()))),
        Some(ErrorCode::Refused)
    );
    // Maps that do not decode.
    let garbage = Request::CopyBegin {
        rg,
        epoch,
        partition: theirs,
        full: true,
        keys: 0,
        maps: vec![0xff; 40],
    };
    assert_eq!(code(&c.call(&garbage)), Some(ErrorCode::Malformed));
    // A copy of a group it is already in.
    let (own, own_rg) = maps.dp.leaves().find(|(p, _)| *p != theirs).unwrap();
    let member = Request::CopyBegin {
        rg: own_rg,
        epoch: maps.rg.get(own_rg).unwrap().epoch,
        partition: own,
        full: true,
        keys: 0,
        maps: maps.encode(),
    };
    assert_eq!(code(&c.call(&member)), Some(ErrorCode::Refused));
    // A proper begin, then a chunk that is not records: refused, and the
    // copy is dropped, so even a good chunk after it is refused.
    let begin = Request::CopyBegin {
        rg,
        epoch,
        partition: theirs,
        full: true,
        keys: 0,
        maps: maps.encode(),
    };
    assert_eq!(c.call(&begin), Reply::CopyReady { local: None });
    assert_eq!(
        code(&c.call(&chunk(64, vec![0x5a; 100]))),
        Some(ErrorCode::Malformed)
    );
    assert_eq!(
        code(&c.call(&chunk(64, Vec::new()))),
        Some(ErrorCode::Refused)
    );
    // The brick still serves its own partition.
    assert!(matches!(
        c.call(&Request::Capacity { partition: own }),
        Reply::Capacity { held_bytes, holds_partition: true } if held_bytes > 0
    ));
    assert!(cluster.bricks[1].log().contains("refusing a chunk"));
}
