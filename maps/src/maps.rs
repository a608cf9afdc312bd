//! `Maps`: the DP map and the RG map together, as one set of routing facts
//! that a brick holds and a library caches. Here live what needs both
//! halves: routing a hash to bricks, the canonical encoding, the
//! fingerprints that tell two holders whether they agree, and the lazy
//! merge by which newer facts spread.
//!
//! # Encoding (format version 1)
//!
//! Little-endian throughout, no padding:
//!
//! ```text
//! u8  format version (1)
//! u64 dp_version
//! u32 leaf count, then per leaf in ascending partition id:
//!     u64 partition id, u32 rg id
//! u32 group count, then per group in ascending rg id:
//!     u32 rg id, u64 epoch, u8 brick count, then u32 brick id per brick
//! ```
//!
//! The encoding is canonical: a set of routing facts has exactly one, and
//! decoding refuses anything else (out-of-order or repeated ids, trailing
//! bytes). So `decode(b)` succeeding means `encode(decode(b)) == b`, and
//! equal facts give equal fingerprints everywhere.

use std::io::Write;

use byteorder::{LittleEndian, ReadBytesExt, WriteBytesExt};

use crate::dp::DpMap;
use crate::error::MapError;
use crate::ids::{BrickId, PartitionId, RgId};
use crate::limits::{
    BRICKS_MAX, ENCODED_HEADER_SIZE, ENCODED_LEAF_SIZE, ENCODED_RG_HEADER_SIZE, PARTITIONS_MAX,
    REPLICAS_MAX, RGS_MAX,
};
use crate::rg::{RgEntry, RgMap};

/// The format version written first in every encoding.
pub const FORMAT_VERSION: u8 = 1;

/// Where a hash goes: everything a client needs to send one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route<'a> {
    /// The DP leaf that covers the hash.
    pub partition: PartitionId,
    /// The group that serves the leaf.
    pub rg: RgId,
    /// The group's epoch.
    pub epoch: u64,
    /// The group's bricks, in order.
    pub bricks: &'a [BrickId],
    /// The partition's fingerprint; the request carries it so that a brick
    /// with different facts for this partition can refuse.
    pub fingerprint: u32,
}

/// The routing facts of a cluster.
///
/// The fields are public so that holders can read them and edit the RG
/// map in place (`maps.rg.exclude(..)`). Every edit through `DpMap` and
/// `RgMap` keeps each half valid; what ties the halves together (every
/// leaf's group exists) is checked by `validate`, and `decode` and
/// `merge_newer` never produce maps that fail it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Maps {
    /// Raised by one on every change of the DP map (split, merge, a leaf
    /// handed to another group). RG changes do not touch it: each group
    /// carries its own epoch.
    pub dp_version: u64,
    /// Which group serves each partition of the hash space.
    pub dp: DpMap,
    /// Which bricks form each group, with the group's epoch.
    pub rg: RgMap,
}

impl Maps {
    /// Puts the halves together, refusing maps that fail `validate`.
    pub fn new(dp_version: u64, dp: DpMap, rg: RgMap) -> Result<Maps, MapError> {
        let maps = Maps { dp_version, dp, rg };
        maps.validate()?;
        Ok(maps)
    }

    /// Checks each half, that every leaf's group exists, and that the
    /// groups name at most `BRICKS_MAX` distinct bricks.
    pub fn validate(&self) -> Result<(), MapError> {
        self.dp.validate()?;
        self.rg.validate()?;
        self.validate_links()
    }

    /// The checks that need both halves; each half is assumed valid.
    fn validate_links(&self) -> Result<(), MapError> {
        for (partition, rg) in self.dp.leaves() {
            if self.rg.get(rg).is_none() {
                return Err(MapError::MissingRg { partition, rg });
            }
        }
        let mut bricks: Vec<BrickId> = self
            .rg
            .iter()
            .flat_map(|(_, entry)| entry.bricks.iter().copied())
            .collect();
        bricks.sort_unstable();
        bricks.dedup();
        if bricks.len() > BRICKS_MAX {
            return Err(MapError::BricksMax {
                bricks: bricks.len(),
                bricks_max: BRICKS_MAX,
            });
        }
        Ok(())
    }

    /// Routes a key hash (see `key_hash`) to its partition and bricks.
    ///
    /// Panics only if the maps are invalid (a leaf names a missing group),
    /// which `decode` and `merge_newer` never produce.
    pub fn lookup(&self, hash: u64) -> Route<'_> {
        let (partition, _) = self.dp.lookup(hash);
        match self.route(partition) {
            Some(route) => route,
            None => panic!(
                "{partition} names a group missing from the RG map; the maps were never validated"
            ),
        }
    }

    /// The route of one partition, or `None` if it is not a current leaf
    /// (or, in invalid maps, if its group is missing).
    pub fn route(&self, partition: PartitionId) -> Option<Route<'_>> {
        let rg = self.dp.rg_of(partition)?;
        let entry = self.rg.get(rg)?;
        Some(Route {
            partition,
            rg,
            epoch: entry.epoch,
            bricks: &entry.bricks,
            fingerprint: partition_fingerprint_of(partition, rg, entry),
        })
    }

    /// The fingerprint of one partition's routing facts: crc32 over the
    /// canonical encoding of its id, its group id, the group's epoch and
    /// the group's brick list, in that order. `None` if the partition is
    /// not a current leaf.
    ///
    /// Per partition, so that excluding a brick from one group fails only
    /// the requests for that group's partitions, not every request in the
    /// cluster. A split or merge changes the ids of the leaves involved, so
    /// requests for them fail too, and only them.
    pub fn partition_fingerprint(&self, partition: PartitionId) -> Option<u32> {
        self.route(partition).map(|route| route.fingerprint)
    }

    /// The fingerprint of all routing facts: crc32 over `encode()`. Two
    /// holders with equal fingerprints hold equal maps, collisions aside.
    pub fn fingerprint(&self) -> u32 {
        crate::hash::crc32(&self.encode())
    }

    /// Every brick that some group lists, in ascending id order.
    pub fn bricks(&self) -> Vec<BrickId> {
        let mut bricks: Vec<BrickId> = self
            .rg
            .iter()
            .flat_map(|(_, e)| e.bricks.iter().copied())
            .collect();
        bricks.sort();
        bricks.dedup();
        bricks
    }

    /// The partitions whose group lists `brick`, in ascending id order:
    /// what the brick must hold.
    pub fn partitions_of(&self, brick: BrickId) -> Vec<PartitionId> {
        self.dp
            .leaves()
            .filter(|(_, rg)| {
                self.rg
                    .get(*rg)
                    .is_some_and(|entry| entry.bricks.contains(&brick))
            })
            .map(|(partition, _)| partition)
            .collect()
    }

    /// Lazy spreading: takes `other`'s DP map if its `dp_version` is
    /// higher, and per group whichever entry has the higher epoch (see
    /// `RgMap::merge_newer`). Returns whether anything changed.
    ///
    /// If the merged facts would be invalid (past a limit, or a leaf naming
    /// a missing group, possible only when `other` is itself invalid),
    /// nothing changes and the result is `false`: a holder must never be
    /// left with maps it cannot route by.
    pub fn merge_newer(&mut self, other: &Maps) -> bool {
        let take_dp = other.dp_version > self.dp_version;
        let newer_groups = other
            .rg
            .iter()
            .any(|(&rg, theirs)| self.rg.get(rg).is_none_or(|ours| theirs.epoch > ours.epoch));
        if !take_dp && !newer_groups {
            return false;
        }
        let mut merged = self.clone();
        if take_dp {
            merged.dp_version = other.dp_version;
            merged.dp = other.dp.clone();
        }
        if merged.rg.merge_newer(&other.rg).is_err() || merged.validate().is_err() {
            return false;
        }
        *self = merged;
        true
    }

    /// The canonical encoding (see the module doc).
    pub fn encode(&self) -> Vec<u8> {
        let bricks_total: usize = self.rg.iter().map(|(_, entry)| entry.bricks.len()).sum();
        let mut out = Vec::with_capacity(
            ENCODED_HEADER_SIZE
                + self.dp.len() * ENCODED_LEAF_SIZE
                + self.rg.len() * ENCODED_RG_HEADER_SIZE
                + bricks_total * 4,
        );
        out.push(FORMAT_VERSION);
        put_u64(&mut out, self.dp_version);
        put_u32(&mut out, count_u32(self.dp.len()));
        for (partition, rg) in self.dp.leaves() {
            put_leaf(&mut out, partition, rg);
        }
        put_u32(&mut out, count_u32(self.rg.len()));
        for (&rg, entry) in self.rg.iter() {
            put_rg(&mut out, rg, entry);
        }
        out
    }

    /// Decodes and validates maps from untrusted bytes. Never panics, and
    /// allocates only after checking a count against its limit and against
    /// the bytes left.
    pub fn decode(bytes: &[u8]) -> Result<Maps, MapError> {
        let mut input = bytes;
        let version = read_u8(&mut input, "format version")?;
        if version != FORMAT_VERSION {
            return Err(MapError::UnknownFormat { version });
        }
        let dp_version = read_u64(&mut input, "DP version")?;

        let leaf_count = read_count(&mut input, "leaves", PARTITIONS_MAX, ENCODED_LEAF_SIZE)?;
        let mut leaves = Vec::with_capacity(leaf_count);
        for _ in 0..leaf_count {
            let raw = read_u64(&mut input, "partition id")?;
            let partition = PartitionId::from_raw(raw).ok_or(MapError::InvalidPartitionId(raw))?;
            let rg = RgId(read_u32(&mut input, "leaf's rg id")?);
            if leaves
                .last()
                .is_some_and(|&(previous, _)| previous >= partition)
            {
                return Err(MapError::NotAscending {
                    field: "partitions",
                });
            }
            leaves.push((partition, rg));
        }
        let dp = DpMap::from_leaves(leaves)?;

        let rg_count = read_count(&mut input, "groups", RGS_MAX, ENCODED_RG_HEADER_SIZE)?;
        let mut groups = Vec::with_capacity(rg_count);
        for _ in 0..rg_count {
            let rg = RgId(read_u32(&mut input, "rg id")?);
            if groups.last().is_some_and(|&(previous, _)| previous >= rg) {
                return Err(MapError::NotAscending { field: "groups" });
            }
            let epoch = read_u64(&mut input, "epoch")?;
            let brick_count = read_u8(&mut input, "brick count")? as usize;
            if brick_count > REPLICAS_MAX || brick_count * 4 > input.len() {
                return Err(MapError::CountTooLarge {
                    field: "bricks",
                    count: brick_count as u64,
                    max: REPLICAS_MAX.min(input.len() / 4) as u64,
                });
            }
            let mut bricks = Vec::with_capacity(brick_count);
            for _ in 0..brick_count {
                bricks.push(BrickId(read_u32(&mut input, "brick id")?));
            }
            groups.push((rg, RgEntry { epoch, bricks }));
        }
        let rg = RgMap::from_groups(groups)?;
        if !input.is_empty() {
            return Err(MapError::TrailingBytes { count: input.len() });
        }
        // Each half validated itself as it was built.
        let maps = Maps { dp_version, dp, rg };
        maps.validate_links()?;
        Ok(maps)
    }
}

/// The most bytes one partition's facts encode to: one leaf and one group
/// with `REPLICAS_MAX` bricks.
const PARTITION_FACTS_SIZE_MAX: usize =
    ENCODED_LEAF_SIZE + ENCODED_RG_HEADER_SIZE + REPLICAS_MAX * 4;

/// The partition fingerprint from its parts; see `Maps::partition_fingerprint`.
fn partition_fingerprint_of(partition: PartitionId, rg: RgId, entry: &RgEntry) -> u32 {
    // On the stack: this runs for every request a client sends.
    let mut buffer = [0u8; PARTITION_FACTS_SIZE_MAX];
    let mut out = &mut buffer[..];
    put_leaf(&mut out, partition, rg);
    put_rg(&mut out, rg, entry);
    let used = PARTITION_FACTS_SIZE_MAX - out.len();
    crate::hash::crc32(&buffer[..used])
}

fn put_leaf(out: &mut impl Write, partition: PartitionId, rg: RgId) {
    put_u64(out, partition.0);
    put_u32(out, rg.0);
}

fn put_rg(out: &mut impl Write, rg: RgId, entry: &RgEntry) {
    put_u32(out, rg.0);
    put_u64(out, entry.epoch);
    let count = u8::try_from(entry.bricks.len()).expect("REPLICAS_MAX fits in u8");
    out.write_u8(count).expect(ROOM);
    for brick in &entry.bricks {
        put_u32(out, brick.0);
    }
}

/// Writes go to a `Vec` or to a buffer sized for its content, so they
/// cannot fail.
const ROOM: &str = "the output has room";

fn put_u32(out: &mut impl Write, value: u32) {
    out.write_u32::<LittleEndian>(value).expect(ROOM);
}

fn put_u64(out: &mut impl Write, value: u64) {
    out.write_u64::<LittleEndian>(value).expect(ROOM);
}

/// A count as u32; the limits assert at compile time that every count fits.
fn count_u32(count: usize) -> u32 {
    u32::try_from(count).expect("counts are limited far below u32::MAX")
}

fn read_u8(input: &mut &[u8], field: &'static str) -> Result<u8, MapError> {
    input.read_u8().map_err(|_| MapError::Truncated { field })
}

fn read_u32(input: &mut &[u8], field: &'static str) -> Result<u32, MapError> {
    input
        .read_u32::<LittleEndian>()
        .map_err(|_| MapError::Truncated { field })
}

fn read_u64(input: &mut &[u8], field: &'static str) -> Result<u64, MapError> {
    input
        .read_u64::<LittleEndian>()
        .map_err(|_| MapError::Truncated { field })
}

/// Reads a u32 count of items at least `item_size` bytes each, refusing it
/// if it passes `max` or if the bytes left could not hold that many items.
/// This is what keeps a lying count from causing a huge allocation.
fn read_count(
    input: &mut &[u8],
    field: &'static str,
    max: usize,
    item_size: usize,
) -> Result<usize, MapError> {
    let count = read_u32(input, field)? as usize;
    let fit = input.len() / item_size;
    if count > max || count > fit {
        return Err(MapError::CountTooLarge {
            field,
            count: count as u64,
            max: max.min(fit) as u64,
        });
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three_groups() -> Maps {
        let dp = DpMap::uniform(3, |i| RgId(i as u32));
        let mut rg = RgMap::new();
        for i in 0..3u32 {
            rg.insert(
                RgId(i),
                RgEntry {
                    epoch: 1,
                    bricks: vec![BrickId(i), BrickId((i + 1) % 3)],
                },
            )
            .unwrap();
        }
        Maps::new(1, dp, rg).unwrap()
    }

    #[test]
    fn encoding_layout_is_as_documented() {
        let maps = three_groups();
        let bytes = maps.encode();
        assert_eq!(bytes[0], FORMAT_VERSION);
        assert_eq!(&bytes[1..9], &1u64.to_le_bytes());
        assert_eq!(&bytes[9..13], &3u32.to_le_bytes());
        // First leaf in ascending id order: depth 1, prefix 1, id 0b11.
        assert_eq!(&bytes[13..21], &3u64.to_le_bytes());
        assert_eq!(&bytes[21..25], &0u32.to_le_bytes());
        let expected_len =
            ENCODED_HEADER_SIZE + 3 * ENCODED_LEAF_SIZE + 3 * (ENCODED_RG_HEADER_SIZE + 2 * 4);
        assert_eq!(bytes.len(), expected_len);
        assert_eq!(Maps::decode(&bytes), Ok(maps));
    }

    #[test]
    fn decode_refuses_lying_counts_before_allocating() {
        let mut bytes = three_groups().encode();
        bytes[9..13].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            Maps::decode(&bytes),
            Err(MapError::CountTooLarge {
                field: "leaves",
                ..
            })
        ));
        let mut bytes = three_groups().encode();
        bytes[9..13].copy_from_slice(&4u32.to_le_bytes());
        assert!(Maps::decode(&bytes).is_err());
    }

    #[test]
    fn decode_refuses_unknown_format_and_trailing_bytes() {
        let mut bytes = three_groups().encode();
        bytes[0] = 2;
        assert_eq!(
            Maps::decode(&bytes),
            Err(MapError::UnknownFormat { version: 2 })
        );
        let mut bytes = three_groups().encode();
        bytes.push(0);
        assert_eq!(
            Maps::decode(&bytes),
            Err(MapError::TrailingBytes { count: 1 })
        );
        assert_eq!(
            Maps::decode(&[]),
            Err(MapError::Truncated {
                field: "format version"
            })
        );
    }

    #[test]
    fn decode_refuses_a_leaf_without_its_group() {
        let dp = DpMap::uniform(2, |i| RgId(i as u32));
        let mut rg = RgMap::new();
        rg.insert(
            RgId(0),
            RgEntry {
                epoch: 1,
                bricks: vec![BrickId(1)],
            },
        )
        .unwrap();
        let maps = Maps {
            dp_version: 1,
            dp,
            rg,
        };
        let partition = PartitionId::new(1, 1);
        assert_eq!(
            maps.validate(),
            Err(MapError::MissingRg {
                partition,
                rg: RgId(1)
            })
        );
        assert_eq!(
            Maps::decode(&maps.encode()),
            Err(MapError::MissingRg {
                partition,
                rg: RgId(1)
            })
        );
    }

    #[test]
    fn merge_newer_takes_newer_halves_and_settles() {
        let mut ours = three_groups();
        let mut theirs = three_groups();
        theirs.rg.exclude(RgId(1), BrickId(1)).unwrap();
        assert!(ours.merge_newer(&theirs));
        assert_eq!(ours, theirs);
        assert!(!ours.merge_newer(&theirs), "a second merge changes nothing");

        let mut split = three_groups();
        split.dp.split(PartitionId::new(1, 1), RgId(2)).unwrap();
        split.dp_version += 1;
        assert!(ours.merge_newer(&split));
        assert_eq!(ours.dp, split.dp);
        assert_eq!(ours.rg, theirs.rg, "the newer RG entry stays");
        assert!(
            !ours.merge_newer(&three_groups()),
            "older facts change nothing"
        );
    }

    #[test]
    fn merge_newer_refuses_invalid_results() {
        let mut ours = three_groups();
        let mut broken = three_groups();
        broken.dp_version = 9;
        broken.dp.assign(PartitionId::new(1, 1), RgId(77)).unwrap();
        assert!(!ours.merge_newer(&broken));
        assert_eq!(ours, three_groups());
    }

    #[test]
    fn partitions_of_lists_the_leaves_a_brick_serves() {
        let maps = three_groups();
        // Groups: 0 -> [0, 1], 1 -> [1, 2], 2 -> [2, 0]; leaves in order.
        let leaves: Vec<PartitionId> = maps.dp.leaves().map(|(p, _)| p).collect();
        assert_eq!(maps.partitions_of(BrickId(1)), vec![leaves[0], leaves[1]]);
        assert_eq!(maps.partitions_of(BrickId(0)), vec![leaves[0], leaves[2]]);
        assert_eq!(maps.partitions_of(BrickId(9)), Vec::<PartitionId>::new());
    }
}
