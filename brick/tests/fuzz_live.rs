//! Seeded fuzzing of a live brick over TCP: streams of valid requests of
//! every kind with random fields, each stream ended by a frame that is
//! mutated (bit flips, lying lengths, truncation, garbage). The brick must
//! not crash, must answer or close only the offending connection, and must
//! keep serving a bystander connection throughout.
//!
//! `FUZZ_FRAMES` sets the number of frames (100,000 by default); `SEED`
//! replays a run.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use brick::testkit::{ClusterSpec, TestCluster};
use common::{get, RawClient};
use maps::{BrickId, PartitionId, RgId};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use wire::codec::encode_request;
use wire::{Reply, Request, TxId, Write as WireWrite};

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn random_bytes(rng: &mut ChaCha8Rng, max: usize) -> Vec<u8> {
    let len = rng.random_range(0..=max);
    (0..len).map(|_| rng.random()).collect()
}

/// A well-formed request with random contents; `partitions` are the real
/// leaves, used half of the time so requests reach the store.
fn random_request(rng: &mut ChaCha8Rng, partitions: &[(PartitionId, u32)]) -> Request {
    let (partition, fingerprint) = if rng.random_bool(0.5) {
        partitions[rng.random_range(0..partitions.len())]
    } else {
        (PartitionId(rng.random()), rng.random())
    };
    let table = if rng.random_bool(0.8) {
        b"t".to_vec()
    } else {
        random_bytes(rng, 8)
    };
    let key = random_bytes(rng, 24);
    match rng.random_range(0..14) {
        0 => Request::Ping,
        1 => Request::GetMaps,
        2 => Request::Stats,
        3..=5 => Request::Get {
            partition,
            fingerprint,
            table,
            key,
        },
        6..=7 => Request::Prepare {
            txid: TxId(rng.random()),
            partition,
            fingerprint,
            table,
            key,
            write: if rng.random_bool(0.8) {
                WireWrite::Put(random_bytes(rng, 200))
            } else {
                WireWrite::Remove
            },
            participants: vec![BrickId(rng.random_range(0..3))],
            decide: rng.random_bool(0.3),
        },
        8 => Request::Commit {
            txid: TxId(rng.random()),
            partition,
        },
        9 => Request::Abort {
            txid: TxId(rng.random()),
            partition,
        },
        10 => Request::TxStatus {
            txid: TxId(rng.random()),
            partition,
        },
        11 => Request::PushMaps {
            maps: random_bytes(rng, 64),
        },
        12 => Request::LeaseRenew {
            rg: RgId(rng.random_range(0..10)),
            epoch: rng.random_range(0..3),
            from: BrickId(rng.random_range(0..5)),
            incarnation: rng.random(),
            blank: rng.random_bool(0.5).then(|| wire::Digest {
                sum: rng.random(),
                keys: rng.random(),
            }),
        },
        _ => Request::PartitionChecksum { partition },
    }
}

/// Damages one encoded frame in one of several ways.
fn mutate(rng: &mut ChaCha8Rng, frame: &mut Vec<u8>) {
    match rng.random_range(0..5) {
        0 => {
            for _ in 0..rng.random_range(1..4) {
                let i = rng.random_range(0..frame.len());
                frame[i] ^= 1 << rng.random_range(0..8);
            }
        }
        1 => {
            // A lying body length.
            let len: u32 = rng.random();
            frame[8..12].copy_from_slice(&len.to_le_bytes());
        }
        2 => {
            let cut = rng.random_range(0..frame.len());
            frame.truncate(cut);
        }
        3 => {
            let at = rng.random_range(0..=frame.len());
            let junk = random_bytes(rng, 16);
            frame.splice(at..at, junk);
        }
        _ => *frame = random_bytes(rng, 64),
    }
}

#[test]
fn a_live_brick_survives_fuzzed_frames() {
    let seed = env_u64("SEED").unwrap_or(1);
    let frames_max = env_u64("FUZZ_FRAMES").unwrap_or(100_000);
    let mut cluster = TestCluster::start(ClusterSpec {
        bricks: 1,
        replicas: 1,
        ..ClusterSpec::default()
    });
    let addr = cluster.bricks[0].addr;
    let (mut bystander, maps) = RawClient::with_table_t(addr);
    let partitions: Vec<(PartitionId, u32)> = maps
        .dp
        .leaves()
        .map(|(p, _)| (p, maps.partition_fingerprint(p).unwrap()))
        .collect();

    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (mut frames, mut connections, mut closed_by_brick) = (0u64, 0u64, 0u64);
    let mut out = Vec::new();
    let mut sink = vec![0u8; 64 * 1024];
    while frames < frames_max {
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        connections += 1;
        out.clear();
        let valid = rng.random_range(50..400);
        for i in 0..valid {
            encode_request(i, &random_request(&mut rng, &partitions), &mut out);
        }
        let mut bad = Vec::new();
        encode_request(valid, &random_request(&mut rng, &partitions), &mut bad);
        mutate(&mut rng, &mut bad);
        out.extend_from_slice(&bad);
        frames += valid + 1;
        // The brick may close the connection before reading everything.
        let _ = stream.write_all(&out);
        let _ = stream.shutdown(std::net::Shutdown::Write);
        // Drain replies until the brick closes or goes quiet.
        loop {
            match stream.read(&mut sink) {
                Ok(0) => {
                    closed_by_brick += 1;
                    break;
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        if connections % 50 == 0 {
            // The bystander is served throughout.
            assert_eq!(
                bystander.call(&Request::Ping),
                Reply::Pong,
                "after {frames} frames (seed {seed})"
            );
        }
    }
    let brick = &mut cluster.bricks[0];
    assert!(
        brick.is_running(),
        "the brick died (seed {seed}); its log:\n{}",
        brick.log()
    );
    assert_eq!(bystander.call(&Request::Ping), Reply::Pong);
    assert!(matches!(
        get(&mut bystander, &maps, b"t", b"x"),
        Reply::Value(_) | Reply::NotFound
    ));
    println!("fuzz_live: {frames} frames on {connections} connections, seed {seed}, {closed_by_brick} closed by the brick");
}
