//! The brick's maps, with each partition's routing facts as the request
//! path checks them worked out once per change of the maps rather than on
//! every request: the partition's group, its fingerprint (a crc32 over its
//! encoded facts) and whether this brick is a member. Checking a request's
//! route took about 580 instructions, a tenth of a brick's work per
//! request (ARCHITECTURE.md, "Fingerprints per partition").
//!
//! [`NodeMaps`] derefs to [`Maps`] for reading; the one way to change them,
//! [`NodeMaps::change`], forgets every cached fact first, so no fact can
//! outlive the maps it came from.

use std::ops::Deref;

use maps::{BrickId, Maps, PartitionId, RgId};

use super::HashMap;

/// What a request's route is checked against, for one partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct RouteFacts {
    pub rg: RgId,
    pub fingerprint: u32,
    /// Whether this brick is a member of `rg`.
    pub member: bool,
}

pub(super) struct NodeMaps {
    maps: Maps,
    id: BrickId,
    /// Facts of the partitions asked about since the maps last changed;
    /// only partitions of the maps are kept, so it holds at most one entry
    /// per leaf whatever requests name.
    facts: HashMap<PartitionId, RouteFacts>,
}

impl NodeMaps {
    pub fn new(maps: Maps, id: BrickId) -> NodeMaps {
        NodeMaps {
            maps,
            id,
            facts: HashMap::default(),
        }
    }

    /// The maps, to change: every cached fact is forgotten first.
    pub fn change(&mut self) -> &mut Maps {
        self.facts.clear();
        &mut self.maps
    }

    /// `partition`'s facts, or `None` if it is not a leaf of the maps.
    pub fn route_facts(&mut self, partition: PartitionId) -> Option<RouteFacts> {
        if let Some(facts) = self.facts.get(&partition) {
            return Some(*facts);
        }
        let facts = compute(&self.maps, self.id, partition)?;
        self.facts.insert(partition, facts);
        Some(facts)
    }
}

impl Deref for NodeMaps {
    type Target = Maps;

    fn deref(&self) -> &Maps {
        &self.maps
    }
}

fn compute(maps: &Maps, id: BrickId, partition: PartitionId) -> Option<RouteFacts> {
    let rg = maps.dp.rg_of(partition)?;
    let fingerprint = maps.partition_fingerprint(partition)?;
    let member = maps
        .rg
        .get(rg)
        .is_some_and(|entry| entry.bricks.contains(&id));
    Some(RouteFacts {
        rg,
        fingerprint,
        member,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use maps::ClusterConfig;

    #[test]
    fn facts_follow_every_change_of_the_maps() {
        let maps = ClusterConfig::for_simulation(3, 2, 4).initial_maps();
        let (partition, rg) = maps.dp.leaves().next().unwrap();
        let member = maps.rg.get(rg).unwrap().bricks[0];
        let mut node_maps = NodeMaps::new(maps.clone(), member);
        let before = node_maps.route_facts(partition).unwrap();
        assert_eq!(before, compute(&maps, member, partition).unwrap());
        assert!(before.member);
        // Asked again, the cached facts; then the group loses this brick.
        assert_eq!(node_maps.route_facts(partition), Some(before));
        node_maps.change().rg.exclude(rg, member).unwrap();
        let after = node_maps.route_facts(partition).unwrap();
        assert!(!after.member);
        assert_ne!(after.fingerprint, before.fingerprint);
        assert_eq!(after, compute(&node_maps, member, partition).unwrap());
        // A partition that is no leaf of the maps has no facts, and none
        // are kept for it.
        let stranger = (0..)
            .map(PartitionId)
            .find(|p| node_maps.dp.rg_of(*p).is_none())
            .unwrap();
        assert_eq!(node_maps.route_facts(stranger), None);
        assert!(!node_maps.facts.contains_key(&stranger));
    }
}
