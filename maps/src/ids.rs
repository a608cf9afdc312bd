//! Identifiers shared by every crate: bricks, replica groups and partitions.
//! They are plain numbers with a type each, so that a brick id can never be
//! passed where a replica group id is meant.

use std::fmt;

/// A storage daemon, numbered as in `cluster.toml`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BrickId(pub u32);

/// A replica group: an ordered list of bricks that hold the same partitions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RgId(pub u32);

/// A leaf of the DP trie, and so one partition of the hash space.
///
/// The id is the leaf's prefix with a marker bit above it:
/// `id = (1 << depth) | prefix`, where `prefix` holds the `depth` lowest bits
/// of every hash that the leaf covers. The root (depth 0) is `1`. This makes
/// every leaf of every trie a distinct number, and a leaf's children are
/// `prefix | (1 << (depth + 1))` plus the new bit, computed without a table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PartitionId(pub u64);

impl PartitionId {
    /// The deepest trie the id can encode: 63 bits of prefix and one marker.
    pub const DEPTH_MAX: u32 = 63;

    /// The root of the trie: depth 0, covering every hash.
    pub const ROOT: PartitionId = PartitionId(1);

    /// Builds the id of the leaf at `depth` whose low bits are `prefix`.
    pub fn new(depth: u32, prefix: u64) -> PartitionId {
        assert!(depth <= Self::DEPTH_MAX);
        assert!(prefix >> depth == 0, "prefix wider than depth");
        PartitionId((1u64 << depth) | prefix)
    }

    /// How many hash bits the leaf fixes. `None` for the invalid id 0.
    pub fn depth(self) -> Option<u32> {
        if self.0 == 0 {
            None
        } else {
            Some(63 - self.0.leading_zeros())
        }
    }

    /// The low `depth` bits that every hash under this leaf shares.
    pub fn prefix(self) -> u64 {
        match self.depth() {
            Some(depth) => self.0 & ((1u64 << depth) - 1),
            None => 0,
        }
    }

    /// Whether `hash` falls under this leaf.
    pub fn covers(self, hash: u64) -> bool {
        match self.depth() {
            Some(0) => true,
            Some(depth) => hash & ((1u64 << depth) - 1) == self.prefix(),
            None => false,
        }
    }
}

impl fmt::Display for BrickId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "brick {}", self.0)
    }
}

impl fmt::Display for RgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rg {}", self.0)
    }
}

impl fmt::Display for PartitionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.depth() {
            Some(depth) if depth > 0 => {
                write!(f, "partition {:0width$b}", self.prefix(), width = depth as usize)
            }
            Some(_) => write!(f, "partition root"),
            None => write!(f, "partition invalid"),
        }
    }
}
