//! The RG map: for each replica group, its epoch and its ordered list of
//! bricks. Every change of membership raises the group's epoch by one, so
//! that whoever holds an older epoch can tell it is behind.
//!
//! This module knows nothing of partitions (that is `dp`) nor of encodings
//! and fingerprints (that is `maps`).

use crate::error::MapError;
use crate::ids::{BrickId, RgId};
use crate::limits::{REPLICAS_MAX, RGS_MAX};

/// One replica group: the bricks that hold copies of its partitions.
///
/// The list is ordered: the order is part of the routing facts (and of the
/// fingerprint), so that rules such as "the first live member leads" give
/// the same answer everywhere.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RgEntry {
    /// Raised by one on every change of `bricks`.
    pub epoch: u64,
    /// Distinct bricks, 1 to `REPLICAS_MAX` of them.
    pub bricks: Vec<BrickId>,
}

impl RgEntry {
    /// Checks the entry's own rules: at least one brick, at most
    /// `REPLICAS_MAX`, none twice.
    pub fn validate(&self, rg: RgId) -> Result<(), MapError> {
        if self.bricks.is_empty() {
            return Err(MapError::EmptyGroup(rg));
        }
        if self.bricks.len() > REPLICAS_MAX {
            return Err(MapError::ReplicasMax {
                rg,
                replicas_max: REPLICAS_MAX,
            });
        }
        // Quadratic, but over at most REPLICAS_MAX bricks.
        for (i, brick) in self.bricks.iter().enumerate() {
            if self.bricks[..i].contains(brick) {
                return Err(MapError::DuplicateBrick { rg, brick: *brick });
            }
        }
        Ok(())
    }
}

/// Every replica group by id: a vector sorted by id, without repeats, so
/// iteration (and so the encoding) is in ascending group id. Groups are
/// numbered from 0 as `cluster.toml` makes them, so group `i` is nearly
/// always at index `i`, and a lookup (several per request in a brick)
/// checks there before it searches; a `BTreeMap` lookup here was about 5%
/// of a brick's instructions per request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RgMap {
    groups: Vec<(RgId, RgEntry)>,
}

/// Iterator over an [`RgMap`]'s groups, in ascending id.
pub type Iter<'a> = std::iter::Map<
    std::slice::Iter<'a, (RgId, RgEntry)>,
    fn(&'a (RgId, RgEntry)) -> (&'a RgId, &'a RgEntry),
>;

fn pair_refs(pair: &(RgId, RgEntry)) -> (&RgId, &RgEntry) {
    (&pair.0, &pair.1)
}

impl RgMap {
    /// An RG map with no groups.
    pub fn new() -> RgMap {
        RgMap::default()
    }

    /// Builds a map from its groups, refusing invalid entries, repeated
    /// ids, and more than `RGS_MAX` groups. This is the entry for groups
    /// that come from outside (decoding).
    pub fn from_groups(
        groups: impl IntoIterator<Item = (RgId, RgEntry)>,
    ) -> Result<RgMap, MapError> {
        let mut list = Vec::new();
        for (rg, entry) in groups {
            entry.validate(rg)?;
            if list.len() == RGS_MAX {
                return Err(MapError::RgsMax { rgs_max: RGS_MAX });
            }
            list.push((rg, entry));
        }
        // Linear for sorted input, and a sorted collect builds in bulk.
        list.sort_by_key(|&(rg, _)| rg);
        if let Some(pair) = list.windows(2).find(|pair| pair[0].0 == pair[1].0) {
            return Err(MapError::RgExists(pair[0].0));
        }
        Ok(RgMap { groups: list })
    }

    /// Adds a new group. Refuses an id already present (use `include` and
    /// `exclude` to change a group), an invalid entry, and a map at
    /// `RGS_MAX`.
    pub fn insert(&mut self, rg: RgId, entry: RgEntry) -> Result<(), MapError> {
        entry.validate(rg)?;
        let Err(at) = self.position(rg) else {
            return Err(MapError::RgExists(rg));
        };
        if self.groups.len() >= RGS_MAX {
            return Err(MapError::RgsMax { rgs_max: RGS_MAX });
        }
        self.groups.insert(at, (rg, entry));
        Ok(())
    }

    /// Where `rg` is in `groups` (`Ok`), or where it would go (`Err`).
    fn position(&self, rg: RgId) -> Result<usize, usize> {
        let guess = rg.0 as usize;
        if self.groups.get(guess).is_some_and(|(id, _)| *id == rg) {
            return Ok(guess);
        }
        self.groups.binary_search_by_key(&rg, |(id, _)| *id)
    }

    /// The group's entry, if the group exists.
    pub fn get(&self, rg: RgId) -> Option<&RgEntry> {
        let at = self.position(rg).ok()?;
        Some(&self.groups[at].1)
    }

    fn get_mut(&mut self, rg: RgId) -> Option<&mut RgEntry> {
        let at = self.position(rg).ok()?;
        Some(&mut self.groups[at].1)
    }

    /// Every group in ascending id order.
    pub fn iter(&self) -> Iter<'_> {
        self.groups
            .iter()
            .map(pair_refs as fn(&(RgId, RgEntry)) -> (&RgId, &RgEntry))
    }

    /// The number of groups.
    pub fn len(&self) -> usize {
        self.groups.len()
    }

    /// Whether there are no groups (true only before the first insert).
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// Removes `brick` from the group and raises the epoch by one; the
    /// other bricks keep their order. Refuses to remove the last brick: a
    /// group with no replica would have lost its data.
    pub fn exclude(&mut self, rg: RgId, brick: BrickId) -> Result<&RgEntry, MapError> {
        let entry = self.get_mut(rg).ok_or(MapError::UnknownRg(rg))?;
        let position = entry
            .bricks
            .iter()
            .position(|b| *b == brick)
            .ok_or(MapError::BrickAbsent { rg, brick })?;
        if entry.bricks.len() == 1 {
            return Err(MapError::LastBrick { rg, brick });
        }
        let epoch = entry
            .epoch
            .checked_add(1)
            .ok_or(MapError::EpochExhausted(rg))?;
        entry.bricks.remove(position);
        entry.epoch = epoch;
        Ok(entry)
    }

    /// Appends `brick` to the group and raises the epoch by one. Appending
    /// keeps the existing members' positions, so a rule like "the first
    /// live member leads" does not move to the newcomer.
    pub fn include(&mut self, rg: RgId, brick: BrickId) -> Result<&RgEntry, MapError> {
        let entry = self.get_mut(rg).ok_or(MapError::UnknownRg(rg))?;
        if entry.bricks.contains(&brick) {
            return Err(MapError::BrickPresent { rg, brick });
        }
        if entry.bricks.len() >= REPLICAS_MAX {
            return Err(MapError::ReplicasMax {
                rg,
                replicas_max: REPLICAS_MAX,
            });
        }
        let epoch = entry
            .epoch
            .checked_add(1)
            .ok_or(MapError::EpochExhausted(rg))?;
        entry.bricks.push(brick);
        entry.epoch = epoch;
        Ok(entry)
    }

    /// Sets an existing group to `entry`, decided elsewhere (by a vote among
    /// the bricks). Only a later epoch replaces the current one.
    pub fn install(&mut self, rg: RgId, entry: RgEntry) -> Result<&RgEntry, MapError> {
        entry.validate(rg)?;
        let current = self.get_mut(rg).ok_or(MapError::UnknownRg(rg))?;
        if entry.epoch <= current.epoch {
            return Err(MapError::StaleEpoch {
                rg,
                epoch: entry.epoch,
                current: current.epoch,
            });
        }
        *current = entry;
        Ok(current)
    }

    /// Takes from `other` every group this map lacks, and every group whose
    /// epoch there is higher; returns whether anything changed.
    ///
    /// With equal epochs ours is kept even if the lists differ: one place
    /// decides each change of a group, so equal epochs mean equal entries,
    /// and keeping ours makes repeated merges settle instead of flapping.
    /// All or nothing: if the result would pass `RGS_MAX`, nothing changes.
    pub fn merge_newer(&mut self, other: &RgMap) -> Result<bool, MapError> {
        let newer: Vec<(RgId, &RgEntry)> = other
            .groups
            .iter()
            .filter(|(rg, theirs)| self.get(*rg).is_none_or(|ours| theirs.epoch > ours.epoch))
            .map(|(rg, theirs)| (*rg, theirs))
            .collect();
        let added = newer
            .iter()
            .filter(|(rg, _)| self.get(*rg).is_none())
            .count();
        if self.groups.len() + added > RGS_MAX {
            return Err(MapError::RgsMax { rgs_max: RGS_MAX });
        }
        // Groups held already are replaced while the vector is sorted; new
        // ones are appended and put in place with one sort, rather than
        // shifting the vector once each.
        let mut fresh = Vec::with_capacity(added);
        for (rg, theirs) in &newer {
            match self.get_mut(*rg) {
                Some(ours) => *ours = (*theirs).clone(),
                None => fresh.push((*rg, (*theirs).clone())),
            }
        }
        if !fresh.is_empty() {
            self.groups.append(&mut fresh);
            self.groups.sort_by_key(|(rg, _)| *rg);
        }
        Ok(!newer.is_empty())
    }

    /// Checks every entry and the group count.
    pub fn validate(&self) -> Result<(), MapError> {
        if self.groups.len() > RGS_MAX {
            return Err(MapError::RgsMax { rgs_max: RGS_MAX });
        }
        for (rg, entry) in &self.groups {
            entry.validate(*rg)?;
        }
        Ok(())
    }
}

impl<'a> IntoIterator for &'a RgMap {
    type Item = (&'a RgId, &'a RgEntry);
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map_with(rg: u32, epoch: u64, bricks: &[u32]) -> RgMap {
        let mut map = RgMap::new();
        map.insert(
            RgId(rg),
            RgEntry {
                epoch,
                bricks: bricks.iter().map(|&b| BrickId(b)).collect(),
            },
        )
        .unwrap();
        map
    }

    fn entry(epoch: u64, bricks: &[u32]) -> RgEntry {
        RgEntry {
            epoch,
            bricks: bricks.iter().map(|&b| BrickId(b)).collect(),
        }
    }

    #[test]
    fn groups_numbered_with_gaps_are_found_and_kept_in_order() {
        // Ids that are not their own index, inserted out of order, then
        // merged with groups that fall between them and one newer epoch.
        let mut ours = RgMap::new();
        for rg in [9, 0, 5] {
            ours.insert(RgId(rg), entry(1, &[rg + 1])).unwrap();
        }
        let mut theirs = RgMap::new();
        for (rg, epoch) in [(7, 1), (5, 2), (3, 1), (12, 1)] {
            theirs.insert(RgId(rg), entry(epoch, &[rg + 100])).unwrap();
        }
        assert!(ours.merge_newer(&theirs).unwrap());
        let ids: Vec<u32> = ours.iter().map(|(rg, _)| rg.0).collect();
        assert_eq!(ids, [0, 3, 5, 7, 9, 12]);
        for rg in [0, 9] {
            assert_eq!(ours.get(RgId(rg)), Some(&entry(1, &[rg + 1])));
        }
        for (rg, epoch) in [(3, 1), (5, 2), (7, 1), (12, 1)] {
            assert_eq!(ours.get(RgId(rg)), Some(&entry(epoch, &[rg + 100])));
        }
        for absent in [1, 2, 4, 6, 8, 10, 11, 13] {
            assert_eq!(ours.get(RgId(absent)), None);
        }
        assert!(matches!(
            ours.insert(RgId(7), entry(1, &[1])),
            Err(MapError::RgExists(RgId(7)))
        ));
        // Merging the same again changes nothing.
        assert!(!ours.merge_newer(&theirs).unwrap());
        assert_eq!(ours.len(), 6);
    }

    #[test]
    fn exclude_and_include_raise_the_epoch_and_keep_order() {
        let mut map = map_with(0, 1, &[3, 1, 2]);
        let entry = map.exclude(RgId(0), BrickId(1)).unwrap();
        assert_eq!(
            (entry.epoch, entry.bricks.clone()),
            (2, vec![BrickId(3), BrickId(2)])
        );
        let entry = map.include(RgId(0), BrickId(7)).unwrap();
        assert_eq!(
            (entry.epoch, entry.bricks.clone()),
            (3, vec![BrickId(3), BrickId(2), BrickId(7)])
        );
    }

    #[test]
    fn exhausted_epoch_is_an_error_not_an_overflow() {
        let mut map = map_with(0, u64::MAX, &[1, 2]);
        assert_eq!(
            map.exclude(RgId(0), BrickId(1)),
            Err(MapError::EpochExhausted(RgId(0)))
        );
        assert_eq!(
            map.include(RgId(0), BrickId(3)),
            Err(MapError::EpochExhausted(RgId(0)))
        );
        assert_eq!(map, map_with(0, u64::MAX, &[1, 2]));
    }

    #[test]
    fn include_stops_at_replicas_max() {
        let full: Vec<u32> = (0..REPLICAS_MAX as u32).collect();
        let mut map = map_with(0, 1, &full);
        assert_eq!(
            map.include(RgId(0), BrickId(1000)),
            Err(MapError::ReplicasMax {
                rg: RgId(0),
                replicas_max: REPLICAS_MAX
            })
        );
    }

    #[test]
    fn insert_refuses_bad_entries() {
        let mut map = map_with(0, 1, &[1]);
        let entry = |bricks: &[u32]| RgEntry {
            epoch: 1,
            bricks: bricks.iter().map(|&b| BrickId(b)).collect(),
        };
        assert_eq!(
            map.insert(RgId(0), entry(&[2])),
            Err(MapError::RgExists(RgId(0)))
        );
        assert_eq!(
            map.insert(RgId(1), entry(&[])),
            Err(MapError::EmptyGroup(RgId(1)))
        );
        assert_eq!(
            map.insert(RgId(1), entry(&[4, 5, 4])),
            Err(MapError::DuplicateBrick {
                rg: RgId(1),
                brick: BrickId(4)
            })
        );
        assert_eq!(map.len(), 1);
    }
}
