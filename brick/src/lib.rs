//! The brick: a storage daemon that holds partitions of the hash table.
//!
//! Reading order: [`store`] (one partition's arena and index), [`limits`],
//! [`node`] (the sans-IO protocol state machine), [`slots`] (how it saves
//! its maps and votes), then [`server`] (the mio
//! event loop that drives it in production).

pub mod daemon;
pub mod limits;
pub mod node;
pub mod server;
pub mod slots;
pub mod store;
pub mod testkit;
