//! The one error type of the routing facts: refused edits of the DP and RG
//! maps, and encoded maps that do not decode. Configuration errors are
//! `config::ConfigError`, because they speak of a file and its keys.

use std::fmt;

use crate::ids::{BrickId, PartitionId, RgId};

/// Why an edit of the maps was refused, or why bytes are not valid maps.
///
/// Edits are refused whole: a map that returned an error is unchanged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MapError {
    /// The partition is not a leaf of the DP map (it was split, merged, or
    /// never existed).
    UnknownPartition(PartitionId),
    /// The leaf is already at `limits::DEPTH_MAX` and cannot be split.
    DepthMax(PartitionId),
    /// The DP map already holds `limits::PARTITIONS_MAX` leaves.
    PartitionsMax { partitions_max: usize },
    /// The two leaves are not the children of one parent.
    NotSiblings(PartitionId, PartitionId),
    /// The RG map has no entry for the group.
    UnknownRg(RgId),
    /// The group already exists, and insertion does not replace.
    RgExists(RgId),
    /// The RG map already holds `limits::RGS_MAX` groups.
    RgsMax { rgs_max: usize },
    /// The brick is not a member of the group.
    BrickAbsent { rg: RgId, brick: BrickId },
    /// The brick is already a member of the group.
    BrickPresent { rg: RgId, brick: BrickId },
    /// Removing the brick would leave the group with no replica.
    LastBrick { rg: RgId, brick: BrickId },
    /// The group would hold more than `limits::REPLICAS_MAX` bricks.
    ReplicasMax { rg: RgId, replicas_max: usize },
    /// A group was given no bricks.
    EmptyGroup(RgId),
    /// A group lists the same brick twice.
    DuplicateBrick { rg: RgId, brick: BrickId },
    /// The group's epoch is at `u64::MAX` and cannot be raised.
    EpochExhausted(RgId),
    /// An entry to install is not newer than the group's current one.
    StaleEpoch { rg: RgId, epoch: u64, current: u64 },
    /// The maps name more than `limits::BRICKS_MAX` distinct bricks.
    BricksMax { bricks: usize, bricks_max: usize },
    /// A leaf names a group that the RG map does not hold.
    MissingRg { partition: PartitionId, rg: RgId },
    /// The leaves leave part of the hash space uncovered, or cover part of
    /// it twice. The text says which.
    Coverage(String),
    /// The encoding starts with a format version this code does not read.
    UnknownFormat { version: u8 },
    /// The bytes end before the field named.
    Truncated { field: &'static str },
    /// Bytes are left over after the last field.
    TrailingBytes { count: usize },
    /// A count in the encoding is larger than its limit, or larger than the
    /// bytes that are left could hold.
    CountTooLarge {
        field: &'static str,
        count: u64,
        max: u64,
    },
    /// Leaves or groups are not in strictly ascending order, so the
    /// encoding is not canonical (and might hold duplicates).
    NotAscending { field: &'static str },
    /// The number is not a partition id (zero, or deeper than the limit).
    InvalidPartitionId(u64),
}

impl fmt::Display for MapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MapError::UnknownPartition(p) => {
                write!(f, "{p} is not a leaf of the DP map; refresh the maps and name a current leaf")
            }
            MapError::DepthMax(p) => write!(
                f,
                "cannot split {p}: it is at depth {}, the deepest a leaf may be",
                PartitionId::DEPTH_MAX
            ),
            MapError::PartitionsMax { partitions_max } => write!(
                f,
                "cannot split: the DP map already has {partitions_max} partitions, the most allowed; merge some first"
            ),
            MapError::NotSiblings(a, b) => write!(
                f,
                "cannot merge {a} and {b}: they are not sibling leaves (same depth, differing only in the deepest bit)"
            ),
            MapError::UnknownRg(rg) => write!(f, "{rg} is not in the RG map; refresh the maps and name a current group"),
            MapError::RgExists(rg) => write!(f, "{rg} is already in the RG map; pick an unused group id"),
            MapError::RgsMax { rgs_max } => {
                write!(f, "the RG map already has {rgs_max} groups, the most allowed; remove unused groups first")
            }
            MapError::BrickAbsent { rg, brick } => write!(f, "{brick} is not a member of {rg}; nothing to remove"),
            MapError::BrickPresent { rg, brick } => write!(f, "{brick} is already a member of {rg}; nothing to add"),
            MapError::LastBrick { rg, brick } => write!(
                f,
                "cannot remove {brick} from {rg}: it is the group's last replica; add a replacement first"
            ),
            MapError::ReplicasMax { rg, replicas_max } => {
                write!(f, "{rg} would have more than {replicas_max} bricks, the most a group may have")
            }
            MapError::EmptyGroup(rg) => write!(f, "{rg} has no bricks; a group needs at least one replica"),
            MapError::DuplicateBrick { rg, brick } => {
                write!(f, "{rg} lists {brick} twice; each replica must be on a different brick")
            }
            MapError::EpochExhausted(rg) => write!(f, "the epoch of {rg} is at its maximum and cannot be raised"),
            MapError::StaleEpoch { rg, epoch, current } => {
                write!(f, "{rg} is at epoch {current} already; epoch {epoch} is not newer")
            }
            MapError::BricksMax { bricks, bricks_max } => {
                write!(f, "the maps name {bricks} bricks, more than the {bricks_max} allowed")
            }
            MapError::MissingRg { partition, rg } => {
                write!(f, "{partition} is served by {rg}, which is not in the RG map")
            }
            MapError::Coverage(why) => write!(f, "the DP leaves do not cover the hash space exactly once: {why}"),
            MapError::UnknownFormat { version } => write!(
                f,
                "encoded maps have format version {version}, which this build does not read; upgrade every process to one version"
            ),
            MapError::Truncated { field } => write!(f, "encoded maps end before the {field}; the sender is broken"),
            MapError::TrailingBytes { count } => {
                write!(f, "encoded maps have {count} bytes after the last field; the sender is broken")
            }
            MapError::CountTooLarge { field, count, max } => write!(
                f,
                "encoded maps claim {count} {field}, more than the {max} that fit; the sender is broken"
            ),
            MapError::NotAscending { field } => {
                write!(f, "encoded maps list {field} out of order or twice; the sender is broken")
            }
            MapError::InvalidPartitionId(id) => write!(f, "{id:#x} is not a valid partition id"),
        }
    }
}

impl std::error::Error for MapError {}
