//! The DP map: a binary trie over the key hash whose leaves are the
//! partitions, each naming the replica group that serves it.
//!
//! The trie consumes hash bits from the LOWEST bit up: a leaf at depth `d`
//! covers every hash whose `d` low bits equal its prefix (see
//! [`PartitionId`]). Splitting a leaf looks at one more bit; merging two
//! sibling leaves looks at one bit fewer. The leaves always cover the hash
//! space exactly once; every edit checks it.
//!
//! This module knows nothing of bricks or epochs (that is `rg`), nor of
//! versions, encodings and fingerprints (that is `maps`).

use std::collections::{BTreeMap, VecDeque};

use crate::error::MapError;
use crate::ids::{PartitionId, RgId};
use crate::limits::{DEPTH_MAX, PARTITIONS_MAX};

/// Slots in the per-depth leaf count: depths 0 to `DEPTH_MAX`.
const DEPTHS: usize = DEPTH_MAX as usize + 1;

/// The DP map. Leaves are kept in a `BTreeMap` so that iteration (and so the
/// encoding) follows ascending partition id, which is depth first, then
/// prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DpMap {
    leaves: BTreeMap<PartitionId, RgId>,
    /// How many leaves sit at each depth. Lookup skips empty depths, and the
    /// coverage check sums over it.
    depth_counts: [u32; DEPTHS],
    /// The deepest leaf, where lookup stops.
    depth_max: u32,
}

impl DpMap {
    /// A trie of `partitions` leaves, the `i`-th leaf in ascending id order
    /// served by `rgs(i)`.
    ///
    /// A power of two gives every leaf the same depth, so leaf `i` covers
    /// the hashes whose low bits are `i`. Otherwise leaves are split
    /// breadth-first, shallowest first, until the count is reached, so
    /// depths differ by at most one.
    ///
    /// `partitions` must be in `1..=PARTITIONS_MAX`; configuration checks
    /// that before it gets here.
    pub fn uniform(partitions: u32, rgs: impl Fn(usize) -> RgId) -> DpMap {
        let count = partitions as usize;
        assert!(
            (1..=PARTITIONS_MAX).contains(&count),
            "partitions {count} out of 1..={PARTITIONS_MAX}"
        );
        let mut queue = VecDeque::from([PartitionId::ROOT]);
        // Each pass turns one leaf into two, so this ends after count - 1
        // passes.
        while queue.len() < count {
            let leaf = queue.pop_front().expect("the queue is never empty");
            let (lower, upper) = leaf
                .children()
                .expect("PARTITIONS_MAX fits well under DEPTH_MAX");
            queue.push_back(lower);
            queue.push_back(upper);
        }
        let mut ids: Vec<PartitionId> = queue.into();
        ids.sort_unstable();
        let mut map = DpMap::empty();
        for (i, leaf) in ids.into_iter().enumerate() {
            map.insert_leaf(leaf, rgs(i));
        }
        map.check_invariants();
        map
    }

    /// Builds a map from its leaves, refusing any set that does not cover
    /// the hash space exactly once. This is the entry for leaves that come
    /// from outside (decoding).
    pub fn from_leaves(
        leaves: impl IntoIterator<Item = (PartitionId, RgId)>,
    ) -> Result<DpMap, MapError> {
        let mut list = Vec::new();
        for (leaf, rg) in leaves {
            if leaf.depth().is_none() {
                return Err(MapError::InvalidPartitionId(leaf.0));
            }
            if list.len() == PARTITIONS_MAX {
                return Err(MapError::PartitionsMax {
                    partitions_max: PARTITIONS_MAX,
                });
            }
            list.push((leaf, rg));
        }
        // Sorting an already sorted list (as decoded ones are) is linear,
        // and a BTreeMap collected from sorted pairs is built in bulk.
        list.sort_unstable_by_key(|&(leaf, _)| leaf);
        if let Some(pair) = list.windows(2).find(|pair| pair[0].0 == pair[1].0) {
            return Err(MapError::Coverage(format!("{} is listed twice", pair[0].0)));
        }
        let mut map = DpMap {
            leaves: list.into_iter().collect(),
            depth_counts: [0; DEPTHS],
            depth_max: 0,
        };
        for &leaf in map.leaves.keys() {
            let depth = leaf.depth().expect("checked above");
            map.depth_counts[depth as usize] += 1;
            map.depth_max = map.depth_max.max(depth);
        }
        map.validate()?;
        Ok(map)
    }

    /// The leaf that covers `hash`, and its group.
    ///
    /// Walks the depths that hold leaves, from the root down, and probes the
    /// one candidate leaf at each: O(depth) probes at worst.
    pub fn lookup(&self, hash: u64) -> (PartitionId, RgId) {
        for depth in 0..=self.depth_max {
            if self.depth_counts[depth as usize] == 0 {
                continue;
            }
            let leaf = PartitionId::new(depth, hash & low_bits_mask(depth));
            if let Some(&rg) = self.leaves.get(&leaf) {
                return (leaf, rg);
            }
        }
        unreachable!("the DP map leaves hash {hash:#x} uncovered, so its invariant is broken");
    }

    /// Splits `leaf` in two. The lower child (bit `depth` clear) keeps the
    /// leaf's group; the upper child (bit set) goes to `new_rg_for_upper`.
    /// Returns `(lower, upper)`.
    ///
    /// The DP map knows no groups: the caller makes sure the RG map holds
    /// `new_rg_for_upper` (`Maps::validate` checks it).
    pub fn split(
        &mut self,
        leaf: PartitionId,
        new_rg_for_upper: RgId,
    ) -> Result<(PartitionId, PartitionId), MapError> {
        let rg = *self
            .leaves
            .get(&leaf)
            .ok_or(MapError::UnknownPartition(leaf))?;
        let (lower, upper) = leaf.children().ok_or(MapError::DepthMax(leaf))?;
        if self.leaves.len() >= PARTITIONS_MAX {
            return Err(MapError::PartitionsMax {
                partitions_max: PARTITIONS_MAX,
            });
        }
        self.remove_leaf(leaf);
        self.insert_leaf(lower, rg);
        self.insert_leaf(upper, new_rg_for_upper);
        self.check_invariants();
        Ok((lower, upper))
    }

    /// Merges two sibling leaves, given in either order, into their parent,
    /// which takes the lower child's group. Returns the parent.
    pub fn merge(
        &mut self,
        left: PartitionId,
        right: PartitionId,
    ) -> Result<PartitionId, MapError> {
        for leaf in [left, right] {
            if !self.leaves.contains_key(&leaf) {
                return Err(MapError::UnknownPartition(leaf));
            }
        }
        if left.sibling() != Some(right) {
            return Err(MapError::NotSiblings(left, right));
        }
        let parent = left.parent().expect("a leaf with a sibling has a parent");
        let (lower, upper) = parent.children().expect("a parent has children");
        let rg = self.leaves[&lower];
        self.remove_leaf(lower);
        self.remove_leaf(upper);
        self.insert_leaf(parent, rg);
        self.check_invariants();
        Ok(parent)
    }

    /// Hands `leaf` to group `rg`, returning the group that served it. As
    /// with `split`, the caller makes sure the RG map holds `rg`.
    pub fn assign(&mut self, leaf: PartitionId, rg: RgId) -> Result<RgId, MapError> {
        let slot = self
            .leaves
            .get_mut(&leaf)
            .ok_or(MapError::UnknownPartition(leaf))?;
        Ok(std::mem::replace(slot, rg))
    }

    /// Every leaf with its group, in ascending partition id order.
    pub fn leaves(&self) -> impl ExactSizeIterator<Item = (PartitionId, RgId)> + '_ {
        self.leaves.iter().map(|(&leaf, &rg)| (leaf, rg))
    }

    /// The number of leaves (partitions); at least one.
    pub fn len(&self) -> usize {
        self.leaves.len()
    }

    /// Always false: a valid map has at least the root. Present because a
    /// `len` without it surprises readers and linters alike.
    pub fn is_empty(&self) -> bool {
        self.leaves.is_empty()
    }

    /// The group of `leaf`, or `None` when it is not a current leaf.
    pub fn rg_of(&self, leaf: PartitionId) -> Option<RgId> {
        self.leaves.get(&leaf).copied()
    }

    /// The depth of the deepest leaf.
    pub fn depth_max(&self) -> u32 {
        self.depth_max
    }

    /// Checks that the leaves cover the hash space exactly once: no leaf
    /// lies under another, and the leaves' shares of the space (2^-depth
    /// each) sum to exactly one. Together these mean every hash has exactly
    /// one leaf: disjoint sets whose sizes add up to the whole space.
    pub fn validate(&self) -> Result<(), MapError> {
        if self.leaves.is_empty() {
            return Err(MapError::Coverage("there are no leaves".to_string()));
        }
        if self.leaves.len() > PARTITIONS_MAX {
            return Err(MapError::PartitionsMax {
                partitions_max: PARTITIONS_MAX,
            });
        }
        let mut counts = [0u32; DEPTHS];
        for &leaf in self.leaves.keys() {
            let depth = leaf.depth().ok_or(MapError::InvalidPartitionId(leaf.0))?;
            counts[depth as usize] += 1;
        }
        for &leaf in self.leaves.keys() {
            let depth = leaf.depth().expect("checked above");
            // Only depths that hold leaves can hold an ancestor.
            for ancestor_depth in (0..depth).filter(|&d| counts[d as usize] > 0) {
                let ancestor = PartitionId::new(
                    ancestor_depth,
                    leaf.prefix() & low_bits_mask(ancestor_depth),
                );
                if self.leaves.contains_key(&ancestor) {
                    return Err(MapError::Coverage(format!("{leaf} lies under {ancestor}")));
                }
            }
        }
        // A leaf at depth d covers 2^(63 - d) of 2^63 parts of the space.
        // At most PARTITIONS_MAX * 2^63 < 2^80, so u128 cannot overflow.
        let whole: u128 = 1 << DEPTH_MAX;
        let covered: u128 = counts
            .iter()
            .enumerate()
            .map(|(d, &n)| u128::from(n) << (DEPTH_MAX as usize - d))
            .sum();
        if covered != whole {
            return Err(MapError::Coverage(format!(
                "the leaves cover {covered} of {whole} equal parts of the hash space"
            )));
        }
        Ok(())
    }

    /// Asserts that the map is valid and its cached counts are right. A
    /// failure here after an edit that was accepted is a bug in this module.
    pub fn check_invariants(&self) {
        if let Err(e) = self.validate() {
            panic!("DP map invariant broken: {e}");
        }
        let mut counts = [0u32; DEPTHS];
        for leaf in self.leaves.keys() {
            counts[leaf.depth().expect("validated") as usize] += 1;
        }
        assert_eq!(counts, self.depth_counts, "DP map depth counts out of date");
        let deepest = counts
            .iter()
            .rposition(|&n| n > 0)
            .expect("validated as non-empty") as u32;
        assert_eq!(deepest, self.depth_max, "DP map depth_max out of date");
    }

    fn empty() -> DpMap {
        DpMap {
            leaves: BTreeMap::new(),
            depth_counts: [0; DEPTHS],
            depth_max: 0,
        }
    }

    fn insert_leaf(&mut self, leaf: PartitionId, rg: RgId) {
        let depth = leaf.depth().expect("callers pass valid ids");
        let previous = self.leaves.insert(leaf, rg);
        assert!(previous.is_none(), "{leaf} inserted twice");
        self.depth_counts[depth as usize] += 1;
        self.depth_max = self.depth_max.max(depth);
    }

    fn remove_leaf(&mut self, leaf: PartitionId) {
        let depth = leaf.depth().expect("callers pass valid ids");
        self.leaves
            .remove(&leaf)
            .expect("callers remove existing leaves");
        self.depth_counts[depth as usize] -= 1;
        if depth == self.depth_max {
            self.depth_max = self.depth_counts.iter().rposition(|&n| n > 0).unwrap_or(0) as u32;
        }
    }
}

/// The mask of the `depth` lowest bits; 0 for the root.
fn low_bits_mask(depth: u32) -> u64 {
    debug_assert!(depth <= DEPTH_MAX);
    (1u64 << depth) - 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rg(i: usize) -> RgId {
        RgId(i as u32)
    }

    #[test]
    fn uniform_power_of_two_has_equal_depths_and_prefix_order() {
        let map = DpMap::uniform(8, rg);
        assert_eq!(map.len(), 8);
        assert_eq!(map.depth_max(), 3);
        for (i, (leaf, group)) in map.leaves().enumerate() {
            assert_eq!(leaf, PartitionId::new(3, i as u64));
            assert_eq!(group, RgId(i as u32));
        }
    }

    #[test]
    fn uniform_other_counts_differ_in_depth_by_at_most_one() {
        for partitions in 1..=100u32 {
            let map = DpMap::uniform(partitions, rg);
            assert_eq!(map.len(), partitions as usize);
            let depths: Vec<u32> = map
                .leaves()
                .map(|(leaf, _)| leaf.depth().unwrap())
                .collect();
            let (min, max) = (depths.iter().min().unwrap(), depths.iter().max().unwrap());
            assert!(
                max - min <= 1,
                "{partitions} partitions: depths {min}..={max}"
            );
        }
    }

    #[test]
    fn lookup_follows_low_bits() {
        let map = DpMap::uniform(4, rg);
        assert_eq!(map.lookup(0b1110), (PartitionId::new(2, 0b10), RgId(2)));
        assert_eq!(map.lookup(u64::MAX), (PartitionId::new(2, 0b11), RgId(3)));
        assert_eq!(map.lookup(0), (PartitionId::new(2, 0), RgId(0)));
    }

    #[test]
    fn depth_max_follows_merges() {
        let mut map = DpMap::uniform(1, rg);
        let (lower, _) = map.split(PartitionId::ROOT, RgId(1)).unwrap();
        let (a, b) = map.split(lower, RgId(2)).unwrap();
        assert_eq!(map.depth_max(), 2);
        map.merge(b, a).unwrap();
        assert_eq!(map.depth_max(), 1);
    }

    #[test]
    fn validate_names_overlap_and_gap() {
        let overlap = DpMap::from_leaves([
            (PartitionId::ROOT, RgId(0)),
            (PartitionId::new(1, 1), RgId(1)),
        ]);
        assert!(
            matches!(overlap, Err(MapError::Coverage(ref why)) if why.contains("lies under")),
            "{overlap:?}"
        );
        let gap = DpMap::from_leaves([(PartitionId::new(1, 1), RgId(1))]);
        assert!(
            matches!(gap, Err(MapError::Coverage(ref why)) if why.contains("cover")),
            "{gap:?}"
        );
        let none = DpMap::from_leaves([]);
        assert!(matches!(none, Err(MapError::Coverage(_))), "{none:?}");
        let zero = DpMap::from_leaves([(PartitionId(0), RgId(0))]);
        assert_eq!(zero, Err(MapError::InvalidPartitionId(0)));
    }

    #[test]
    fn a_refused_edit_leaves_the_map_unchanged() {
        let mut map = DpMap::uniform(4, rg);
        let before = map.clone();
        assert!(map.split(PartitionId::ROOT, RgId(9)).is_err());
        assert!(map
            .merge(PartitionId::new(2, 0), PartitionId::new(2, 1))
            .is_err());
        assert!(map.assign(PartitionId::new(1, 0), RgId(9)).is_err());
        assert_eq!(map, before);
    }
}
