//! The DDS target: one `ddslib::Dds` handle per service, driven through its
//! pipelined form (`submit` / `poll`), so each service keeps its operations
//! in flight on its own connections the way the original system's load
//! generators did.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ddslib::{Dds, DdsError, Op as DdsOp, OpId, Output};

use crate::driver::{Completion, Op, Outcome, Service, Target};
use crate::error::BenchError;
use crate::keys::key_bytes;

/// The table every bench run uses.
pub const TABLE: &str = "bench";

/// A DDS cluster described by a `cluster.toml`.
pub struct DdsTarget {
    config_path: PathBuf,
    /// Brick processes whose resident memory is reported, when known.
    brick_pids: Vec<u32>,
    replicas: u64,
}

/// The DDS target for the cluster of `config_path`; creates the bench's
/// table if it does not exist. `brick_pids` are the bricks' processes when
/// this machine runs them (for the memory figure).
pub fn dds_target(config_path: &Path, brick_pids: Vec<u32>) -> Result<Box<dyn Target>, BenchError> {
    let config =
        maps::ClusterConfig::load(config_path).map_err(|e| BenchError::Config(e.to_string()))?;
    let mut dds = Dds::connect_config(config_path).map_err(dds_error)?;
    match dds.create_table(TABLE) {
        Ok(()) | Err(DdsError::TableExists(_)) => {}
        Err(e) => return Err(dds_error(e)),
    }
    Ok(Box::new(DdsTarget {
        config_path: config_path.to_path_buf(),
        brick_pids,
        replicas: u64::from(config.cluster.replicas),
    }))
}

fn dds_error(e: DdsError) -> BenchError {
    BenchError::TargetUnavailable(format!("DDS: {e}"))
}

impl Target for DdsTarget {
    fn name(&self) -> &str {
        "dds"
    }

    fn connect(&self) -> Result<Box<dyn Service>, BenchError> {
        let dds = Dds::connect_config(&self.config_path).map_err(dds_error)?;
        Ok(Box::new(DdsService {
            dds,
            tags: HashMap::new(),
            done: Vec::new(),
        }))
    }

    /// The bricks' resident memory divided by the replication degree: the
    /// memory one copy of the data costs.
    fn used_memory_bytes(&self) -> Result<Option<u64>, BenchError> {
        if self.brick_pids.is_empty() {
            return Ok(None);
        }
        let mut total = 0;
        for pid in &self.brick_pids {
            total += resident_bytes(*pid)?;
        }
        Ok(Some(total / self.replicas.max(1)))
    }
}

/// Resident memory of a process, from `/proc/<pid>/statm`.
fn resident_bytes(pid: u32) -> Result<u64, BenchError> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/statm")).map_err(|e| {
        BenchError::TargetUnavailable(format!("memory of brick process {pid}: {e}"))
    })?;
    let pages: u64 = text
        .split_whitespace()
        .nth(1)
        .and_then(|f| f.parse().ok())
        .ok_or_else(|| BenchError::TargetUnavailable(format!("cannot parse /proc/{pid}/statm")))?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Ok(pages * page.max(4096) as u64)
}

struct DdsService {
    dds: Dds,
    tags: HashMap<OpId, u64>,
    done: Vec<(OpId, Result<Output, DdsError>)>,
}

impl Service for DdsService {
    fn submit(&mut self, op: Op, tag: u64) -> Result<(), BenchError> {
        let op = match op {
            Op::Get(key) => DdsOp::Get {
                table: TABLE.as_bytes().to_vec(),
                key: key_bytes(key).to_vec(),
            },
            Op::Put(key, value) => DdsOp::Put {
                table: TABLE.as_bytes().to_vec(),
                key: key_bytes(key).to_vec(),
                value: value.to_vec(),
            },
        };
        let id = self.dds.submit(op).map_err(dds_error)?;
        self.tags.insert(id, tag);
        Ok(())
    }

    fn poll(&mut self, out: &mut Vec<Completion>, timeout: Duration) -> Result<(), BenchError> {
        self.dds.poll(&mut self.done, timeout).map_err(dds_error)?;
        for (id, result) in self.done.drain(..) {
            let Some(tag) = self.tags.remove(&id) else {
                continue;
            };
            let outcome = match result {
                Ok(Output::Value(Some(_))) | Ok(Output::Done) => Outcome::Ok,
                Ok(Output::Value(None)) | Err(DdsError::NotFound) => Outcome::NotFound,
                Err(e) => Outcome::Error(e.kind()),
            };
            out.push(Completion { tag, outcome });
        }
        Ok(())
    }
}
