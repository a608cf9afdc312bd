//! Measures the costs that matter on the request path and when maps
//! travel: key hash, route lookup, encoding and decoding, fingerprints, and
//! a split (which checks the whole trie). Run with
//! `cargo run --release -p maps --example measure`.

use std::hint::black_box;
use std::time::Instant;

use maps::config::ClusterConfig;
use maps::{key_hash, u64_key, Maps, PartitionId, RgId};

/// Runs `f` `iterations` times and returns nanoseconds per call.
fn per_call_ns(iterations: u64, mut f: impl FnMut(u64)) -> f64 {
    let start = Instant::now();
    for i in 0..iterations {
        f(i);
    }
    start.elapsed().as_nanos() as f64 / iterations as f64
}

fn cluster(bricks: u32, partitions: u32) -> Maps {
    ClusterConfig::for_simulation(bricks, 2, partitions).initial_maps()
}

fn main() {
    let ns = per_call_ns(1_000_000, |i| {
        black_box(key_hash(b"users", &u64_key(i)));
    });
    println!("key_hash, 5-byte table, 8-byte key: {ns:.1} ns");

    for (bricks, partitions) in [(3, 8), (128, 1024), (4096, 65536)] {
        let maps = cluster(bricks, partitions);
        let ns = per_call_ns(1_000_000, |i| {
            black_box(maps.lookup(key_hash(b"t", &u64_key(i))));
        });
        let bytes = maps.encode();
        let encode_us = per_call_ns(100, |_| {
            black_box(maps.encode());
        }) / 1000.0;
        let decode_us = per_call_ns(100, |_| {
            black_box(Maps::decode(&bytes).unwrap());
        }) / 1000.0;
        let fingerprint_us = per_call_ns(100, |_| {
            black_box(maps.fingerprint());
        }) / 1000.0;
        println!(
            "{partitions} partitions on {bricks} bricks: hash+lookup+partition fingerprint {ns:.1} ns, \
             encoded {} bytes, encode {encode_us:.1} us, decode+validate {decode_us:.1} us, \
             whole fingerprint {fingerprint_us:.1} us",
            bytes.len()
        );
    }

    // A split checks the whole trie, so its cost grows with the leaf count.
    let mut maps = cluster(4096, 32768);
    let leaves: Vec<PartitionId> = maps.dp.leaves().map(|(leaf, _)| leaf).take(100).collect();
    let start = Instant::now();
    for leaf in &leaves {
        maps.dp.split(*leaf, RgId(0)).unwrap();
    }
    let split_ms = start.elapsed().as_secs_f64() * 1000.0 / leaves.len() as f64;
    println!("split at ~32768 partitions (whole-trie check included): {split_ms:.2} ms");

    // The deepest possible trie: lookup walks all 64 depths.
    let mut deep = cluster(3, 1);
    let mut leaf = PartitionId::ROOT;
    for _ in 0..PartitionId::DEPTH_MAX {
        leaf = deep.dp.split(leaf, RgId(0)).unwrap().0;
    }
    let ns = per_call_ns(1_000_000, |i| {
        black_box(deep.dp.lookup(black_box(i << 20)));
    });
    println!("DP lookup in a 63-deep chain, hashes reaching the bottom: {ns:.1} ns");
}
