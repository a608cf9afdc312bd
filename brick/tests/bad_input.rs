//! Bad input against a live brick: each case gets an error reply or a close
//! of that one connection and a warning in the log, and a second connection
//! keeps being served throughout.

mod common;

use std::time::Duration;

use brick::testkit::{ClusterSpec, TestCluster};
use common::{get, RawClient};
use wire::codec::encode_request;
use wire::limits::{KEY_SIZE_MAX, VALUE_SIZE_MAX};
use wire::{ErrorCode, Reply, Request, TxId, Write, HEADER_SIZE};

/// A header built by hand, so tests can lie in any field.
fn header(kind: u8, body_len: u32, request_id: u64, crc: u32) -> Vec<u8> {
    let mut h = Vec::with_capacity(HEADER_SIZE);
    h.extend_from_slice(&0x3153_4444u32.to_le_bytes());
    h.push(1); // version
    h.push(kind);
    h.extend_from_slice(&0u16.to_le_bytes()); // flags
    h.extend_from_slice(&body_len.to_le_bytes());
    h.extend_from_slice(&request_id.to_le_bytes());
    h.extend_from_slice(&crc.to_le_bytes());
    assert_eq!(h.len(), HEADER_SIZE);
    h
}

fn frame(request_id: u64, request: &Request) -> Vec<u8> {
    let mut out = Vec::new();
    encode_request(request_id, request, &mut out);
    out
}

struct Fixture {
    cluster: TestCluster,
    /// A connection that must keep working through every case.
    bystander: RawClient,
    maps: maps::Maps,
}

fn fixture() -> Fixture {
    let cluster = TestCluster::start(ClusterSpec {
        bricks: 1,
        replicas: 1,
        ..ClusterSpec::default()
    });
    let (bystander, maps) = RawClient::with_table_t(cluster.bricks[0].addr);
    Fixture {
        cluster,
        bystander,
        maps,
    }
}

impl Fixture {
    fn attacker(&self) -> RawClient {
        RawClient::connect(self.cluster.bricks[0].addr)
    }

    /// The bystander still gets answers, and a fresh connection works too.
    fn assert_others_served(&mut self) {
        assert_eq!(
            get(&mut self.bystander, &self.maps, b"t", b"x"),
            Reply::NotFound
        );
        let mut fresh = self.attacker();
        assert_eq!(fresh.call(&Request::Ping), Reply::Pong);
    }

    fn assert_logged(&self, needle: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let log = self.cluster.bricks[0].log();
            if log
                .lines()
                .any(|l| l.contains("WARN") && l.contains(needle))
            {
                return;
            }
            if std::time::Instant::now() > deadline {
                panic!("no warning containing {needle:?} in the brick log:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn malformed(reply: Option<(u64, Reply)>) -> String {
    match reply {
        Some((_, Reply::Error(e))) => {
            assert_eq!(e.code, ErrorCode::Malformed, "{e:?}");
            e.message
        }
        other => panic!("expected a Malformed reply, got {other:?}"),
    }
}

#[test]
fn garbage_bytes_close_the_connection() {
    let mut f = fixture();
    let mut a = f.attacker();
    a.send_raw(b"GET / HTTP/1.1\r\nHost: brick\r\n\r\n");
    let message = malformed(a.recv_any());
    assert!(message.contains("magic"), "{message}");
    assert!(a.closed_within(Duration::from_secs(5)));
    f.assert_logged("magic");
    f.assert_others_served();
}

#[test]
fn header_claiming_4_gib_is_refused_before_allocation() {
    let mut f = fixture();
    let mut a = f.attacker();
    a.send_raw(&header(1, u32::MAX, 7, 0));
    let message = malformed(a.recv_any());
    assert!(
        message.contains("length") || message.contains("limit"),
        "{message}"
    );
    assert!(a.closed_within(Duration::from_secs(5)));
    f.assert_logged("closing");
    f.assert_others_served();
}

#[test]
fn truncated_frame_then_hang_up() {
    let mut f = fixture();
    {
        let mut a = f.attacker();
        let whole = frame(
            1,
            &Request::CreateTable {
                name: b"never".to_vec(),
            },
        );
        a.send_raw(&whole[..whole.len() - 3]);
        // Dropping the connection mid-frame.
    }
    f.assert_logged("middle of a frame");
    f.assert_others_served();
    // The half-sent request had no effect.
    assert_eq!(
        f.bystander.call(&Request::CreateTable {
            name: b"never".to_vec()
        }),
        Reply::Ok
    );
}

#[test]
fn unknown_kind() {
    let mut f = fixture();
    let mut a = f.attacker();
    a.send_raw(&header(63, 0, 9, crc32fast::hash(&[])));
    let message = malformed(a.recv_any());
    assert!(message.contains("kind"), "{message}");
    assert!(a.closed_within(Duration::from_secs(5)));
    f.assert_logged("kind");
    f.assert_others_served();
}

#[test]
fn body_crc_mismatch() {
    let mut f = fixture();
    let mut a = f.attacker();
    let mut bytes = frame(
        11,
        &Request::CreateTable {
            name: b"crc".to_vec(),
        },
    );
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    a.send_raw(&bytes);
    let (id, reply) = a.recv_any().expect("a reply before the close");
    assert_eq!(id, 11, "the reply names the offending request");
    match reply {
        Reply::Error(e) => {
            assert_eq!(e.code, ErrorCode::Malformed);
            assert!(e.message.contains("crc"), "{}", e.message);
        }
        other => panic!("{other:?}"),
    }
    assert!(a.closed_within(Duration::from_secs(5)));
    f.assert_logged("crc");
    f.assert_others_served();
    // Nothing was created from the corrupt frame.
    assert_eq!(
        f.bystander.call(&Request::CreateTable {
            name: b"crc".to_vec()
        }),
        Reply::Ok
    );
}

/// Encodes a prepare whose key and value lengths are whatever the test says,
/// bypassing the encoder's own limit checks.
fn oversized_prepare(f: &Fixture, key_len: usize, value_len: usize) -> Vec<u8> {
    let (partition, fingerprint, bricks) = common::route(&f.maps, b"t", b"k");
    let small = Request::Prepare {
        txid: TxId(5),
        partition,
        fingerprint,
        table: b"t".to_vec(),
        key: vec![b'k'; key_len],
        write: Write::Put(vec![b'v'; value_len]),
        participants: bricks,
        decide: false,
    };
    frame(5, &small)
}

#[test]
fn key_over_the_limit() {
    let mut f = fixture();
    let mut a = f.attacker();
    a.send_raw(&oversized_prepare(&f, KEY_SIZE_MAX + 1, 10));
    let message = malformed(a.recv_any());
    assert!(message.contains("key"), "{message}");
    f.assert_logged("key");
    f.assert_others_served();
}

#[test]
fn value_over_the_limit() {
    let mut f = fixture();
    let mut a = f.attacker();
    a.send_raw(&oversized_prepare(&f, 8, VALUE_SIZE_MAX + 1));
    let message = malformed(a.recv_any());
    assert!(message.contains("value"), "{message}");
    f.assert_logged("value");
    f.assert_others_served();
}

#[test]
fn partition_not_held() {
    let mut f = fixture();
    let mut a = f.attacker();
    // A partition id that is not a leaf of the brick's trie.
    let reply = a.call(&Request::Get {
        partition: maps::PartitionId::new(20, 12345),
        fingerprint: 0,
        table: b"t".to_vec(),
        key: b"k".to_vec(),
    });
    match reply {
        Reply::Error(e) => assert_eq!(e.code, ErrorCode::NotReplica, "{e:?}"),
        other => panic!("{other:?}"),
    }
    f.assert_logged("not a partition");
    // The connection stays open for correct requests.
    assert_eq!(a.call(&Request::Ping), Reply::Pong);
    f.assert_others_served();
}

#[test]
fn bad_reads_in_one_batch_with_good_ones_are_each_refused() {
    let mut f = fixture();
    let mut a = f.attacker();
    let (partition, fingerprint, _) = common::route(&f.maps, b"t", b"k");
    let get = |table: &[u8], key: &[u8]| Request::Get {
        partition,
        fingerprint,
        table: table.to_vec(),
        key: key.to_vec(),
    };
    // One write, so the brick reads them as one batch and prefetches for
    // each before handling any: an empty table name, the longest table
    // name with the longest key, and a good read between them.
    let ids = a.send_batch(&[
        get(b"", b"k"),
        get(b"t", b"k"),
        get(&[b'x'; 255], &vec![b'k'; KEY_SIZE_MAX]),
    ]);
    let mut replies = std::collections::HashMap::new();
    for _ in 0..ids.len() {
        let (id, reply) = a.recv_any().expect("a reply to each request");
        replies.insert(id, reply);
    }
    for id in [ids[0], ids[2]] {
        match &replies[&id] {
            Reply::Error(e) => assert_eq!(e.code, ErrorCode::TableNotFound, "{e:?}"),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(replies[&ids[1]], Reply::NotFound);
    assert_eq!(a.call(&Request::Ping), Reply::Pong);
    f.assert_others_served();
}
