//! Test support for DDS: recorded histories of client operations and an
//! independent linearizability checker for them, used by the deterministic
//! simulator and by the real-process fault tests of `brick` and `ddslib`.
//!
//! Reading order: [`history`] (what is recorded and how), then
//! [`linearizability`] (how a history is judged), then [`generate`] (random
//! histories that are linearizable by construction, to test the checker).

pub mod cluster;
pub mod generate;
pub mod history;
pub mod linearizability;
