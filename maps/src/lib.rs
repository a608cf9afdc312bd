//! Routing facts of a DDS cluster, as pure data: the stable key hash, the DP
//! trie, the RG map, their canonical encoding and fingerprints, and the
//! `cluster.toml` configuration. Nothing here does I/O or reads a clock.

pub mod ids;

pub use ids::{BrickId, PartitionId, RgId};
