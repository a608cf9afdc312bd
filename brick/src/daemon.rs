//! Startup of a brick process: configuration, arenas, node and server.
//! Kept apart from `main.rs` so that tests can start a brick in-process.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use maps::config::ClusterConfig;
use maps::BrickId;

use crate::node::{
    blank_marker_path, maps_path, partition_of_file_name, save_durably, votes_path, DataDir, Node,
    NodeConfig, RecoveryConfig, Storage,
};
use crate::server::Server;
use crate::slots::SlotFile;
use crate::store::{Backing, Partition};

/// Why a brick could not start or stopped with an error.
#[derive(Debug)]
pub enum DaemonError {
    Config(String),
    UnknownBrick(BrickId),
    DataDir(PathBuf, std::io::Error),
    Arena(PathBuf, String),
    Maps(PathBuf, String),
    Listen(String, std::io::Error),
    Serve(std::io::Error),
}

impl fmt::Display for DaemonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DaemonError::Config(e) => write!(f, "configuration: {e}"),
            DaemonError::UnknownBrick(id) => {
                write!(
                    f,
                    "{id} is not listed in the configuration; add a [[brick]] entry with id = {}",
                    id.0
                )
            }
            DaemonError::DataDir(p, e) => {
                write!(f, "cannot create data directory {}: {e}", p.display())
            }
            DaemonError::Arena(p, e) => write!(f, "cannot open arena {}: {e}", p.display()),
            DaemonError::Maps(p, e) => write!(f, "cannot read the saved file {}: {e}", p.display()),
            DaemonError::Listen(a, e) => {
                write!(
                    f,
                    "cannot listen on {a}: {e} (is another brick using that address?)"
                )
            }
            DaemonError::Serve(e) => write!(f, "event loop failed: {e}"),
        }
    }
}

impl std::error::Error for DaemonError {}

pub use crate::node::arena_path;

/// Runs brick `id` of the cluster in `config_path` until `stop` is set.
pub fn run(
    config_path: &Path,
    id: BrickId,
    now: Instant,
    stop: Arc<AtomicBool>,
) -> Result<(), DaemonError> {
    let config =
        ClusterConfig::load(config_path).map_err(|e| DaemonError::Config(e.to_string()))?;
    let directory = config.brick_directory();
    let addr = *directory.get(&id).ok_or(DaemonError::UnknownBrick(id))?;
    let mut maps = config.initial_maps();
    let dir = config.cluster.data_dir.join(format!("brick-{}", id.0));
    std::fs::create_dir_all(&dir).map_err(|e| DaemonError::DataDir(dir.clone(), e))?;
    // The memberships this brick knew when it stopped: newer than the
    // initial ones wherever a group changed.
    let saved_maps = maps_path(&dir);
    match SlotFile::read(&saved_maps) {
        Ok(Some(bytes)) => {
            let saved = maps::Maps::decode(&bytes).map_err(|e| {
                DaemonError::Maps(
                    saved_maps.clone(),
                    format!("{e}; move the file aside to start from cluster.toml's maps"),
                )
            })?;
            if maps.merge_newer(&saved) {
                log::info!("{id}: took the maps it saved before it stopped");
            }
        }
        Ok(None) => {}
        Err(e) => {
            return Err(DaemonError::Maps(
                saved_maps,
                format!("{e}; move the file aside to start from cluster.toml's maps"),
            ))
        }
    }
    let capacity = config.cluster.partition_capacity_mb * 1024 * 1024;
    // A brick that held data and did not stop cleanly crashed: it may have
    // lost prepared transactions, so it starts amnesiac.
    let marker = dir.join(CLEAN_SHUTDOWN_MARKER);
    let clean = marker.exists();
    let start_fence = start_fence(&marker, Duration::from_millis(config.timeouts.lease_ms));
    let _ = std::fs::remove_file(&marker);
    // The outcomes the clean stop saved; removed like the marker, so that
    // a crash later does not take back what is stale by then.
    let outcomes_file = dir.join(SAVED_OUTCOMES);
    let saved_outcomes = if clean {
        std::fs::read(&outcomes_file).ok()
    } else {
        None
    };
    let _ = std::fs::remove_file(&outcomes_file);
    let mut had_data = false;
    let mut partitions = BTreeMap::new();
    // The partitions of the initial maps, and any other this brick received
    // by a copy before it stopped.
    let mut wanted: std::collections::BTreeSet<maps::PartitionId> =
        maps.partitions_of(id).into_iter().collect();
    let entries = std::fs::read_dir(&dir).map_err(|e| DaemonError::DataDir(dir.clone(), e))?;
    for entry in entries.flatten() {
        if let Some(partition) = entry.file_name().to_str().and_then(partition_of_file_name) {
            if maps.dp.rg_of(partition).is_some() {
                wanted.insert(partition);
            }
        }
    }
    // Partitions without an arena file (an emptied data folder, or a new
    // brick), or whose arena was created so at an earlier start and has not
    // received its group's data since: the brick is blank in them
    // (`Node::blank_in`). The marker goes first, so that a crash cannot
    // leave an empty arena that a next start takes for data.
    let mut blank = std::collections::BTreeSet::new();
    for partition in wanted {
        let path = arena_path(&dir, partition);
        let marker = blank_marker_path(&dir, partition);
        if !path.exists() {
            save_durably(&marker, b"")
                .map_err(|e| DaemonError::Arena(marker.clone(), e.to_string()))?;
        }
        if marker.exists() {
            blank.insert(partition);
        } else {
            had_data = true;
        }
        let (store, report) = Partition::open(Backing::File(path.clone()), capacity)
            .map_err(|e| DaemonError::Arena(path.clone(), e.to_string()))?;
        log::info!(
            "{id}: opened {partition}: {} live keys in {} records",
            report.live_keys,
            report.records
        );
        if report.torn_tail_bytes > 0 {
            log::warn!(
                "{id}: {partition}: cut a torn tail of {} bytes at offset {}; the records before it are intact",
                report.torn_tail_bytes,
                report.end_offset
            );
        }
        partitions.insert(partition, store);
    }
    let t = &config.timeouts;
    let r = &config.recovery;
    let node_config = NodeConfig {
        lease: Duration::from_millis(t.lease_ms),
        prepare_timeout: Duration::from_millis(t.prepare_ms),
        probe_timeout: Duration::from_millis(t.probe_ms),
        outcome_retention: Duration::from_secs(60),
        incarnation: incarnation(),
        amnesiac: had_data && !clean,
        blank,
        restarted: had_data,
        start_fence,
        replicas: config.cluster.replicas as usize,
        bricks: directory.keys().copied().collect(),
        partition_capacity: capacity,
        storage: Storage::Dir(DataDir::new(dir.clone())),
        recovery: RecoveryConfig {
            heal_after: Duration::from_millis(r.heal_after_ms),
            grace: Duration::from_millis(r.grace_ms),
            copy_lease: Duration::from_millis(r.copy_lease_ms),
            copy_rate: r.copy_rate_mb_s * 1024 * 1024,
        },
    };
    if had_data && !clean {
        log::warn!(
            "{id}: no clean shutdown recorded: serving only groups it is alone in until recovered"
        );
    }
    let mut node = Node::new(id, node_config, maps, partitions, now);
    // The promises and acceptances of membership votes it made: forgetting
    // one could let two memberships be decided for one epoch.
    let saved_votes = votes_path(&dir);
    let cannot_vote = |e: String| {
        DaemonError::Maps(
            saved_votes.clone(),
            format!("{e}; the brick cannot vote safely without it"),
        )
    };
    match SlotFile::read(&saved_votes) {
        Ok(Some(bytes)) => node
            .restore_votes(&bytes, now)
            .map_err(|e| cannot_vote(e.to_string()))?,
        Ok(None) => {}
        Err(e) => return Err(cannot_vote(e.to_string())),
    }
    match saved_outcomes.as_deref().map(|bytes| restore_outcomes(&mut node, bytes, now)) {
        Some(Ok(())) => log::info!("{id}: took back the outcomes of transactions saved at its clean stop"),
        Some(Err(e)) => log::warn!(
            "{id}: cannot take back the outcomes saved at its clean stop ({e}): it answers \"unknown\" about transactions it does not know"
        ),
        None => {}
    }
    let server = Server::bind(addr, node, directory, stop)
        .map_err(|e| DaemonError::Listen(addr.to_string(), e))?;
    log::info!("{id}: listening on {}", server.local_addr());
    let stopped = server.run().map_err(DaemonError::Serve)?;
    let Some(outcomes) = stopped.outcomes else {
        // A prepared write, or what the brick forgot in a crash before,
        // would be lost: the next start is a crash's.
        log::warn!(
            "{id}: stopped with transactions still prepared, or before it was copied back into its groups after a crash; not recorded as a clean stop, so the next start recovers as after a crash"
        );
        return Ok(());
    };
    let now_ms = wall_clock_ms(SystemTime::now());
    let mut saved = now_ms.to_le_bytes().to_vec();
    saved.extend_from_slice(&outcomes);
    if let Err(e) = save_durably(&outcomes_file, &saved) {
        log::warn!(
            "{id}: cannot save the outcomes of transactions at {}: {e}",
            outcomes_file.display()
        );
    }
    // Written after the arenas were flushed: the next start may trust them.
    // It holds the wall-clock time (ms since the Unix epoch) until which a
    // read lease this brick granted may still run, so that a start after
    // that takes writes at once.
    let until_ms = stopped.leases_granted_until.map_or(0, |until| {
        let left = until.saturating_duration_since(Instant::now());
        wall_clock_ms(SystemTime::now() + left)
    });
    if let Err(e) = std::fs::write(&marker, until_ms.to_string()) {
        log::warn!(
            "{id}: cannot record the clean shutdown at {}: {e}",
            marker.display()
        );
    }
    Ok(())
}

/// Present in a brick's data directory only after a clean stop.
const CLEAN_SHUTDOWN_MARKER: &str = "clean-shutdown";

/// The outcomes of finished transactions a clean stop saved: the wall-clock
/// time of the save (ms since the Unix epoch, u64 little-endian), then
/// [`Node::outcomes_for_a_clean_stop`].
const SAVED_OUTCOMES: &str = "outcomes";

fn wall_clock_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Gives `node` the outcomes saved at a clean stop, less the time since.
fn restore_outcomes(node: &mut Node, saved: &[u8], now: Instant) -> Result<(), String> {
    let (at, outcomes) = saved
        .split_first_chunk::<8>()
        .ok_or("the file is shorter than its time of saving")?;
    // A clock set back since the save counts as no time down: outcomes
    // kept longer are only more answers right.
    let down_ms = wall_clock_ms(SystemTime::now()).saturating_sub(u64::from_le_bytes(*at));
    node.restore_outcomes(outcomes, now, Duration::from_millis(down_ms))
}

/// How long a starting brick takes no writes in shared groups: what is left
/// of the leases it granted before a clean stop (recorded in the marker, by
/// the wall clock, plus the lease margin for clocks), or a whole lease
/// period if it does not know.
fn start_fence(marker: &Path, lease: Duration) -> Duration {
    let unknown = lease + crate::limits::LEASE_MARGIN;
    let Some(until_ms) = std::fs::read_to_string(marker)
        .ok()
        .and_then(|text| text.trim().parse::<u64>().ok())
    else {
        return unknown;
    };
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(u64::MAX, |d| d.as_millis() as u64);
    if until_ms <= now_ms {
        return Duration::ZERO;
    }
    (Duration::from_millis(until_ms - now_ms) + crate::limits::LEASE_MARGIN).min(unknown)
}

/// A number that differs between runs of the process.
fn incarnation() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    nanos ^ (u64::from(std::process::id()) << 32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_start_fence_is_what_is_left_of_the_recorded_leases() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join(CLEAN_SHUTDOWN_MARKER);
        let lease = Duration::from_millis(1500);
        let full = lease + crate::limits::LEASE_MARGIN;
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        // Leases that ran out before the start: no fence.
        std::fs::write(&marker, (now_ms - 10).to_string()).unwrap();
        assert_eq!(start_fence(&marker, lease), Duration::ZERO);
        // No grant at all ("0"): no fence.
        std::fs::write(&marker, "0").unwrap();
        assert_eq!(start_fence(&marker, lease), Duration::ZERO);
        // Leases still running: what is left, plus the margin.
        std::fs::write(&marker, (now_ms + 1000).to_string()).unwrap();
        let fence = start_fence(&marker, lease);
        assert!(
            fence > Duration::from_millis(900) && fence <= full,
            "{fence:?}"
        );
        // A time past a whole lease (a clock stepped back): one lease.
        std::fs::write(&marker, (now_ms + 60_000).to_string()).unwrap();
        assert_eq!(start_fence(&marker, lease), full);
        // An unreadable record or none: one lease.
        std::fs::write(&marker, "").unwrap();
        assert_eq!(start_fence(&marker, lease), full);
        std::fs::remove_file(&marker).unwrap();
        assert_eq!(start_fence(&marker, lease), full);
    }
}
