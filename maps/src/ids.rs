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

    /// The id for a raw number read from outside, or `None` for 0, the one
    /// number that is not a partition id.
    pub fn from_raw(raw: u64) -> Option<PartitionId> {
        (raw != 0).then_some(PartitionId(raw))
    }

    /// The two halves of this leaf: the lower child has a 0 at bit
    /// `depth`, the upper child a 1. `None` at `DEPTH_MAX` and for id 0.
    pub fn children(self) -> Option<(PartitionId, PartitionId)> {
        let depth = self.depth()?;
        if depth == Self::DEPTH_MAX {
            return None;
        }
        let prefix = self.prefix();
        Some((
            PartitionId::new(depth + 1, prefix),
            PartitionId::new(depth + 1, prefix | (1u64 << depth)),
        ))
    }

    /// The leaf this one was split from: one bit shorter. `None` for the
    /// root and for id 0.
    pub fn parent(self) -> Option<PartitionId> {
        match self.depth()? {
            0 => None,
            depth => Some(PartitionId::new(
                depth - 1,
                self.prefix() & ((1u64 << (depth - 1)) - 1),
            )),
        }
    }

    /// The other child of this leaf's parent: the same prefix with the
    /// deepest bit flipped. `None` for the root and for id 0.
    pub fn sibling(self) -> Option<PartitionId> {
        match self.depth()? {
            0 => None,
            depth => Some(PartitionId(self.0 ^ (1u64 << (depth - 1)))),
        }
    }

    /// Whether `self` is `other` or lies above it in the trie, so that every
    /// hash `other` covers, `self` covers too.
    pub fn contains(self, other: PartitionId) -> bool {
        match (self.depth(), other.depth()) {
            (Some(depth), Some(other_depth)) if depth <= other_depth => {
                other.prefix() & ((1u64 << depth) - 1) == self.prefix()
            }
            _ => false,
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
                write!(
                    f,
                    "partition {:0width$b}",
                    self.prefix(),
                    width = depth as usize
                )
            }
            Some(_) => write!(f, "partition root"),
            None => write!(f, "partition invalid"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_parent_and_sibling_agree() {
        let leaf = PartitionId::new(3, 0b101);
        let (lower, upper) = leaf.children().unwrap();
        assert_eq!(lower, PartitionId::new(4, 0b0101));
        assert_eq!(upper, PartitionId::new(4, 0b1101));
        assert_eq!(lower.parent(), Some(leaf));
        assert_eq!(upper.parent(), Some(leaf));
        assert_eq!(lower.sibling(), Some(upper));
        assert_eq!(upper.sibling(), Some(lower));
        assert!(leaf.contains(lower) && leaf.contains(upper) && leaf.contains(leaf));
        assert!(!lower.contains(leaf) && !lower.contains(upper));
        assert!(PartitionId::ROOT.contains(upper));
    }

    #[test]
    fn edges_have_no_relatives() {
        assert_eq!(PartitionId::ROOT.parent(), None);
        assert_eq!(PartitionId::ROOT.sibling(), None);
        assert_eq!(PartitionId(u64::MAX).children(), None);
        assert_eq!(PartitionId(0).children(), None);
        assert_eq!(PartitionId(0).parent(), None);
        assert_eq!(PartitionId::from_raw(0), None);
        assert_eq!(PartitionId(u64::MAX).depth(), Some(PartitionId::DEPTH_MAX));
        assert!(!PartitionId(0).contains(PartitionId::ROOT));
    }
}
