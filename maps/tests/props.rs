//! Property tests of the routing facts: random tries built by random
//! splits, random groups, and random bytes. Each test prints its seed; set
//! `SEED=<n>` to replay a failure exactly.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};

use maps::limits::DEPTH_MAX;
use maps::{BrickId, DpMap, Maps, PartitionId, RgEntry, RgId, RgMap};
use proptest::prelude::*;
use proptest::test_runner::RngSeed;

/// The test configuration: `cases` cases from the seed in `SEED`, or a
/// fresh one, printed so that a failure can be replayed.
fn config(cases: u32) -> ProptestConfig {
    let seed = match std::env::var("SEED") {
        Ok(text) => text.trim().parse().expect("SEED must be a u64"),
        Err(_) => RandomState::new().build_hasher().finish(),
    };
    eprintln!("seed: SEED={seed} replays this test");
    ProptestConfig {
        cases,
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// How to build one random `Maps`.
#[derive(Clone, Debug)]
struct Recipe {
    /// Leaves of the starting uniform map.
    initial: u32,
    /// Per split: which leaf (an index, taken modulo the leaf count), or
    /// the deepest leaf when the flag is set, so deep tries occur too.
    splits: Vec<(usize, bool)>,
    /// Epoch and bricks for group i; groups past the last used one are
    /// kept as unused groups, as merges leave them.
    groups: Vec<(u64, Vec<u32>)>,
    dp_version: u64,
}

/// Groups enough for 8 initial leaves, 40 splits and a few unused groups.
const GROUPS: usize = 52;

fn recipe() -> impl Strategy<Value = Recipe> {
    let group = (
        1u64..1_000_000,
        proptest::sample::subsequence((1u32..=20).collect::<Vec<_>>(), 1..=4).prop_shuffle(),
    );
    (
        1u32..=8,
        proptest::collection::vec((any::<usize>(), proptest::bool::weighted(0.3)), 0..40),
        proptest::collection::vec(group, GROUPS),
        1u64..1000,
    )
        .prop_map(|(initial, splits, groups, dp_version)| Recipe {
            initial,
            splits,
            groups,
            dp_version,
        })
}

fn build(recipe: &Recipe) -> Maps {
    let mut dp = DpMap::uniform(recipe.initial, |i| RgId(i as u32));
    let mut next_rg = recipe.initial;
    for &(index, deepest) in &recipe.splits {
        let leaves: Vec<PartitionId> = dp.leaves().map(|(leaf, _)| leaf).collect();
        // Ascending ids are depth first, so the last leaf is a deepest one.
        let leaf = if deepest {
            *leaves.last().unwrap()
        } else {
            leaves[index % leaves.len()]
        };
        if leaf.depth().unwrap() < DEPTH_MAX {
            dp.split(leaf, RgId(next_rg)).unwrap();
            next_rg += 1;
        }
    }
    let mut rg = RgMap::new();
    // A few groups beyond the used ones stay unused.
    let groups = (next_rg as usize + 3).min(GROUPS);
    for (i, (epoch, bricks)) in recipe.groups.iter().take(groups).enumerate() {
        let entry = RgEntry {
            epoch: *epoch,
            bricks: bricks.iter().map(|&b| BrickId(b)).collect(),
        };
        rg.insert(RgId(i as u32), entry).unwrap();
    }
    Maps::new(recipe.dp_version, dp, rg).unwrap()
}

fn leaves_of(maps: &Maps) -> Vec<PartitionId> {
    maps.dp.leaves().map(|(leaf, _)| leaf).collect()
}

/// A copy of `map` with group `rg`'s entry changed by `change`.
fn with_entry(map: &RgMap, rg: RgId, change: impl Fn(&mut RgEntry)) -> RgMap {
    let mut out = RgMap::new();
    for (&id, entry) in map.iter() {
        let mut entry = entry.clone();
        if id == rg {
            change(&mut entry);
        }
        out.insert(id, entry).unwrap();
    }
    out
}

/// Every leaf's fingerprint.
fn partition_fingerprints(maps: &Maps) -> Vec<(PartitionId, u32)> {
    maps.dp
        .leaves()
        .map(|(leaf, _)| (leaf, maps.partition_fingerprint(leaf).unwrap()))
        .collect()
}

/// One change of a routing fact.
#[derive(Clone, Copy, Debug)]
enum Change {
    Epoch,
    ReplaceBrick,
    SwapBricks,
    LeafGroup,
    Split,
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        Just(Change::Epoch),
        Just(Change::ReplaceBrick),
        Just(Change::SwapBricks),
        Just(Change::LeafGroup),
        Just(Change::Split),
    ]
}

proptest! {
    #![proptest_config(config(256))]

    /// Splitting a leaf and merging its children gives back the same map,
    /// down to the bytes of its encoding.
    #[test]
    fn split_then_merge_restores(recipe in recipe(), pick in any::<usize>(), upper_rg in any::<usize>()) {
        let maps = build(&recipe);
        let leaves = leaves_of(&maps);
        let leaf = leaves[pick % leaves.len()];
        prop_assume!(leaf.depth().unwrap() < DEPTH_MAX);
        let groups: Vec<RgId> = maps.rg.iter().map(|(&rg, _)| rg).collect();
        let mut changed = maps.clone();
        let (lower, upper) = changed.dp.split(leaf, groups[upper_rg % groups.len()]).unwrap();
        prop_assert_eq!(changed.dp.len(), maps.dp.len() + 1);
        prop_assert_eq!(changed.dp.merge(lower, upper).unwrap(), leaf);
        prop_assert_eq!(&changed, &maps);
        prop_assert_eq!(changed.encode(), maps.encode());
    }

    /// Every hash lands on exactly one leaf, and lookup finds that leaf:
    /// checked against a scan of all leaves, for arbitrary hashes and for
    /// hashes aimed under each leaf (so deep leaves are hit too).
    #[test]
    fn every_hash_lands_on_exactly_one_leaf(
        recipe in recipe(),
        hashes in proptest::collection::vec(any::<u64>(), 32),
        high_bits in any::<u64>(),
    ) {
        let maps = build(&recipe);
        let mut probes = hashes;
        for leaf in leaves_of(&maps) {
            let depth = leaf.depth().unwrap();
            probes.push(high_bits.checked_shl(depth).unwrap_or(0) | leaf.prefix());
        }
        for hash in probes {
            let covering: Vec<(PartitionId, RgId)> = maps.dp.leaves().filter(|(leaf, _)| leaf.covers(hash)).collect();
            prop_assert_eq!(covering.len(), 1, "hash {:#x} is covered by {:?}", hash, covering);
            prop_assert_eq!(maps.dp.lookup(hash), covering[0]);
            let route = maps.lookup(hash);
            prop_assert_eq!((route.partition, route.rg), covering[0]);
            let entry = maps.rg.get(route.rg).unwrap();
            prop_assert_eq!((route.epoch, route.bricks), (entry.epoch, &entry.bricks[..]));
            prop_assert_eq!(Some(route.fingerprint), maps.partition_fingerprint(route.partition));
        }
    }

    /// Encoding then decoding gives the same maps, the same bytes and the
    /// same fingerprint.
    #[test]
    fn encode_decode_round_trips(recipe in recipe()) {
        let maps = build(&recipe);
        let bytes = maps.encode();
        let decoded = Maps::decode(&bytes).unwrap();
        prop_assert_eq!(&decoded, &maps);
        prop_assert_eq!(decoded.encode(), bytes);
        prop_assert_eq!(decoded.fingerprint(), maps.fingerprint());
    }

    /// Changing any routing fact changes the fingerprint of every partition
    /// it concerns and of the whole map, and leaves every other partition's
    /// fingerprint alone.
    #[test]
    fn changed_facts_change_fingerprints(recipe in recipe(), change in change(), pick in any::<usize>(), slot in any::<usize>()) {
        let maps = build(&recipe);
        let leaves = leaves_of(&maps);
        let leaf = leaves[pick % leaves.len()];
        let rg = maps.dp.rg_of(leaf).unwrap();
        let mut changed = maps.clone();
        // The leaves whose fingerprint must change (or disappear).
        let affected: Vec<PartitionId> = match change {
            Change::Epoch | Change::ReplaceBrick | Change::SwapBricks => {
                let bricks = &maps.rg.get(rg).unwrap().bricks;
                let len = bricks.len();
                changed.rg = match change {
                    Change::Epoch => with_entry(&maps.rg, rg, |e| e.epoch += 1 + slot as u64 % 1000),
                    // Bricks in recipes are 1..=20, so 21 and up are new.
                    Change::ReplaceBrick => with_entry(&maps.rg, rg, |e| e.bricks[slot % len] = BrickId(21 + slot as u32 % 100)),
                    _ => {
                        prop_assume!(len >= 2);
                        with_entry(&maps.rg, rg, |e| e.bricks.swap(slot % len, (slot + 1) % len))
                    }
                };
                maps.dp.leaves().filter(|(_, r)| *r == rg).map(|(leaf, _)| leaf).collect()
            }
            Change::LeafGroup => {
                // A new group with the very same entry: only the id differs.
                let fresh = RgId(maps.rg.iter().map(|(r, _)| r.0).max().unwrap() + 1);
                changed.rg.insert(fresh, maps.rg.get(rg).unwrap().clone()).unwrap();
                changed.dp.assign(leaf, fresh).unwrap();
                vec![leaf]
            }
            Change::Split => {
                prop_assume!(leaf.depth().unwrap() < DEPTH_MAX);
                // Same group on both halves, same dp_version: only the
                // shape of the trie changes.
                changed.dp.split(leaf, rg).unwrap();
                vec![leaf]
            }
        };
        changed.validate().unwrap();
        prop_assert_ne!(changed.fingerprint(), maps.fingerprint());
        for (partition, before) in partition_fingerprints(&maps) {
            let after = changed.partition_fingerprint(partition);
            if affected.contains(&partition) {
                prop_assert_ne!(after, Some(before), "{} kept its fingerprint after {:?}", partition, change);
            } else {
                prop_assert_eq!(after, Some(before), "{} changed its fingerprint after {:?}", partition, change);
            }
        }
    }

    /// Merging is idempotent and never leaves invalid maps.
    #[test]
    fn merge_newer_settles(a in recipe(), b in recipe()) {
        let mut ours = build(&a);
        let theirs = build(&b);
        ours.merge_newer(&theirs);
        ours.validate().unwrap();
        prop_assert!(!ours.merge_newer(&theirs), "a second merge of the same maps changed something");
        if b.dp_version > a.dp_version {
            prop_assert_eq!(&ours.dp, &theirs.dp);
        }
        for (rg, entry) in theirs.rg.iter() {
            prop_assert!(ours.rg.get(*rg).unwrap().epoch >= entry.epoch);
        }
    }

    /// Random bytes never make decode panic; whatever it accepts is valid
    /// and re-encodes to the same bytes (the encoding is canonical).
    #[test]
    fn decode_of_random_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        if let Ok(maps) = Maps::decode(&bytes) {
            maps.validate().unwrap();
            prop_assert_eq!(maps.encode(), bytes);
        }
    }

    /// Valid encodings with bytes flipped, counts overwritten, the tail cut
    /// or bytes inserted never make decode panic; whatever it accepts is
    /// valid and canonical.
    #[test]
    fn decode_of_mutated_maps_never_panics(
        recipe in recipe(),
        flips in proptest::collection::vec((any::<usize>(), 1u8..=255), 0..4),
        count in proptest::option::of((any::<usize>(), any::<u32>())),
        cut in proptest::option::of(any::<usize>()),
        insert in proptest::option::of((any::<usize>(), any::<u8>())),
    ) {
        let mut bytes = build(&recipe).encode();
        for (at, xor) in flips {
            let at = at % bytes.len();
            bytes[at] ^= xor;
        }
        if let Some((at, value)) = count {
            // Any four bytes may be read as a count.
            let at = at % (bytes.len() - 3);
            bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
        }
        if let Some(cut) = cut {
            bytes.truncate(cut % (bytes.len() + 1));
        }
        if let Some((at, value)) = insert {
            bytes.insert(at % (bytes.len() + 1), value);
        }
        if let Ok(maps) = Maps::decode(&bytes) {
            maps.validate().unwrap();
            prop_assert_eq!(maps.encode(), bytes);
        }
    }
}
