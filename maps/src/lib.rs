//! Routing facts of a DDS cluster, as pure data: the stable key hash, the DP
//! trie, the RG map, their canonical encoding and fingerprints, and the
//! `cluster.toml` configuration. Nothing here does I/O (except reading the
//! configuration file when asked), reads a clock or draws a random number,
//! so every process computes the same routes from the same facts.
//!
//! Reading order: `ids`, `hash`, `dp`, `rg`, `maps`, `config`; `limits` and
//! `error` as they come up.

pub mod config;
pub mod dp;
pub mod error;
pub mod hash;
pub mod ids;
pub mod limits;
pub mod maps;
pub mod rg;

pub use crate::config::{ClusterConfig, ConfigError};
pub use crate::dp::DpMap;
pub use crate::error::MapError;
pub use crate::hash::{crc32, key_hash, u64_key};
pub use crate::ids::{BrickId, PartitionId, RgId};
pub use crate::maps::{Maps, Route};
pub use crate::rg::{RgEntry, RgMap};
