//! bench: a closed-loop load generator that measures DDS and Redis with the
//! same load shape (the DDS paper's: services keeping 100 operations in
//! flight each, 150-byte values), and a launcher for a local cluster of
//! brick processes.
//!
//! Reading order: [`driver`] (the `Service` and `Target` traits and the
//! closed loop), [`keys`] (what the load asks for), [`report`], then the
//! targets [`redis`] (with its protocol in [`resp`]) and [`dds`],
//! [`cluster`] for `bench --spawn`, and [`recovery`] for `bench
//! --recovery`. [`status`] is `dds-status`, for operators. Bounds are in
//! [`limits`].

pub mod cluster;
pub mod dds;
pub mod driver;
pub mod error;
pub mod keys;
pub mod limits;
pub mod recovery;
pub mod redis;
pub mod report;
pub mod resp;
pub mod status;

pub use crate::cluster::{ClusterError, LocalCluster};
pub use crate::driver::{run, Completion, LoadConfig, Op, Outcome, Service, Target};
pub use crate::error::BenchError;
pub use crate::report::Report;

/// The seed of a randomized test: `SEED` from the environment to replay a
/// failure, otherwise a fresh one. Printed either way, so a failing run
/// shows what to replay.
#[cfg(test)]
pub(crate) fn test_seed() -> u64 {
    let seed = match std::env::var("SEED") {
        Ok(text) => text
            .parse()
            .unwrap_or_else(|_| panic!("SEED={text:?} is not a u64")),
        Err(_) => rand::random(),
    };
    println!("SEED={seed}");
    seed
}
