//! `dds-status`: what a running cluster looks like, for an operator. It
//! asks every brick of a `cluster.toml` for its maps and its stats, and
//! reports each brick (answering or not, keys, prepared writes, groups it
//! waits to be copied back into, copies under way) and each replica group
//! (epoch, members, partitions, and whether it is short of members, has
//! a member that does not answer, or is known at an older epoch by some
//! brick). It also says whether the membership is settled: every brick
//! answers, holds every group's latest epoch and has no vote open.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use ddslib::{Dds, DdsError};
use maps::config::ClusterConfig;
use maps::{BrickId, Maps, RgId};
use serde::Serialize;
use wire::{Reply, Request};

/// How long one brick gets to answer a request for its stats.
const STATS_TIMEOUT: Duration = Duration::from_secs(2);

/// One brick as it answered (or did not).
#[derive(Clone, Debug, Serialize)]
pub struct BrickStatus {
    pub id: u32,
    pub address: String,
    /// Why the brick gave no stats; `None` when it answered.
    pub error: Option<String>,
    /// Live keys over the partitions it holds, table markers included.
    pub keys: u64,
    /// Writes prepared there, waiting for their outcome.
    pub prepared: u64,
    /// Shared groups it serves nothing in until it is copied back (it
    /// restarted after a crash).
    pub groups_waiting_for_a_copy: u64,
    /// Copies it sends now.
    pub copies_running: u64,
    /// How much longer it answers "unknown" about transactions it does not
    /// know, after a restart without its outcomes.
    pub forgotten_outcomes_ms_left: u64,
    /// Membership votes it leads, plus groups whose next epoch it accepted
    /// a value for without having seen it decided.
    pub votes_open: u64,
}

/// A brick whose maps hold a group at an older epoch than the newest.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Behind {
    pub brick: u32,
    /// `None` when its maps lack the group.
    pub epoch: Option<u64>,
}

/// One replica group, from the newest maps any brick holds.
#[derive(Clone, Debug, Serialize)]
pub struct GroupStatus {
    pub rg: u32,
    pub epoch: u64,
    /// The first is the primary of new writes.
    pub members: Vec<u32>,
    /// Partitions (DP leaves) the group serves, as printed in brick logs.
    pub partitions: Vec<String>,
    /// Members that gave no stats.
    pub silent_members: Vec<u32>,
    /// Answering bricks whose maps hold the group at an older epoch.
    pub behind: Vec<Behind>,
}

/// The cluster as the bricks describe it.
#[derive(Clone, Debug, Serialize)]
pub struct ClusterStatus {
    pub replicas: u32,
    pub bricks: Vec<BrickStatus>,
    /// Empty when no brick answered with its maps.
    pub groups: Vec<GroupStatus>,
}

impl ClusterStatus {
    /// Every brick answers, no brick waits for a copy, and every group has
    /// its full number of members, all of them answering.
    pub fn is_healthy(&self) -> bool {
        !self.groups.is_empty()
            && self
                .bricks
                .iter()
                .all(|b| b.error.is_none() && b.groups_waiting_for_a_copy == 0)
            && self
                .groups
                .iter()
                .all(|g| g.members.len() == self.replicas as usize && g.silent_members.is_empty())
    }

    /// A majority of bricks answers, and every brick that answers holds
    /// every group's latest epoch and has no membership vote open. Every
    /// decided membership was accepted by a majority, so by one of the
    /// bricks that answer, which then knows it as decided or has a vote
    /// open: a silent brick that loses its `maps` and `votes` forgets
    /// nothing the others do not know (README).
    pub fn is_settled(&self) -> bool {
        let answering = self.bricks.iter().filter(|b| b.error.is_none()).count();
        !self.groups.is_empty()
            && answering * 2 > self.bricks.len()
            && self
                .bricks
                .iter()
                .all(|b| b.error.is_some() || b.votes_open == 0)
            && self.groups.iter().all(|g| g.behind.is_empty())
    }

    /// A plain-text table of bricks, then one of groups, then a verdict.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<6} {:<22} {:<12} {:>10} {:>9} {:>13} {:>8} {:>16} {:>7}",
            "brick",
            "address",
            "state",
            "keys",
            "prepared",
            "waiting_copy",
            "copying",
            "forgetting_ms",
            "voting"
        );
        for b in &self.bricks {
            match &b.error {
                Some(e) => {
                    let _ = writeln!(out, "{:<6} {:<22} no answer: {e}", b.id, b.address);
                }
                None => {
                    let _ = writeln!(
                        out,
                        "{:<6} {:<22} {:<12} {:>10} {:>9} {:>13} {:>8} {:>16} {:>7}",
                        b.id,
                        b.address,
                        "up",
                        b.keys,
                        b.prepared,
                        b.groups_waiting_for_a_copy,
                        b.copies_running,
                        b.forgotten_outcomes_ms_left,
                        b.votes_open
                    );
                }
            }
        }
        out.push('\n');
        if self.groups.is_empty() {
            out.push_str("no brick answered with its maps\n");
        } else {
            let _ = writeln!(
                out,
                "{:<6} {:>6} {:<14} {:<30} note",
                "group", "epoch", "members", "partitions"
            );
        }
        for g in &self.groups {
            let members: Vec<String> = g.members.iter().map(u32::to_string).collect();
            let mut notes = Vec::new();
            if g.members.len() < self.replicas as usize {
                notes.push(format!("short: {} of {}", g.members.len(), self.replicas));
            }
            if !g.silent_members.is_empty() {
                notes.push(format!("not answering: {:?}", g.silent_members));
            }
            if !g.behind.is_empty() {
                let behind: Vec<String> = g
                    .behind
                    .iter()
                    .map(|b| match b.epoch {
                        Some(epoch) => format!("{} at {epoch}", b.brick),
                        None => format!("{} without it", b.brick),
                    })
                    .collect();
                notes.push(format!("older maps: {}", behind.join(", ")));
            }
            let _ = writeln!(
                out,
                "{:<6} {:>6} {:<14} {:<30} {}",
                g.rg,
                g.epoch,
                members.join(" "),
                g.partitions.join(" "),
                notes.join("; ")
            );
        }
        out.push('\n');
        out.push_str(if self.is_healthy() {
            "healthy: every brick answers and every group has all its members\n"
        } else {
            "degraded: see the rows above\n"
        });
        out.push_str(if self.is_settled() {
            "settled: a majority answers, each knows every group's latest epoch, none has a vote open\n"
        } else {
            "not settled: most bricks are silent, or one holds older maps or has a vote open\n"
        });
        out
    }
}

/// Asks every brick of the cluster at `config` for its maps and stats.
/// Fails only when the file cannot be read; bricks that do not answer are
/// reported as such.
pub fn cluster_status(config: &Path) -> Result<ClusterStatus, String> {
    let cluster = ClusterConfig::load(config).map_err(|e| e.to_string())?;
    let directory = cluster.brick_directory();
    // Fails when no brick answers with its maps: every brick is then
    // reported as silent.
    let mut dds = Dds::connect_config(config).ok();
    let mut bricks = Vec::new();
    let mut brick_maps: BTreeMap<BrickId, Maps> = BTreeMap::new();
    for (id, addr) in &directory {
        let reply = match dds.as_mut() {
            Some(dds) => dds
                .call(*id, Request::Stats, STATS_TIMEOUT)
                .map_err(|e| match e {
                    DdsError::Timeout(_) => format!("no reply within {STATS_TIMEOUT:?}"),
                    other => other.to_string(),
                }),
            None => Err("no brick of the cluster answers".to_string()),
        };
        let mut status = brick_status(*id, addr.to_string(), reply);
        if status.error.is_none() {
            // Its own maps, to see which groups it knows at an older epoch.
            match dds
                .as_mut()
                .map(|d| d.call(*id, Request::GetMaps, STATS_TIMEOUT))
            {
                Some(Ok(Reply::Maps(bytes))) => match Maps::decode(&bytes) {
                    Ok(maps) => {
                        brick_maps.insert(*id, maps);
                    }
                    Err(e) => status.error = Some(format!("its maps do not decode: {e}")),
                },
                Some(Ok(other)) => {
                    status.error = Some(format!("answered {other:?} to a request for maps"))
                }
                Some(Err(e)) => status.error = Some(format!("no maps: {e}")),
                None => {}
            }
        }
        bricks.push(status);
    }
    let silent: Vec<u32> = bricks
        .iter()
        .filter(|b| b.error.is_some())
        .map(|b| b.id)
        .collect();
    let groups = match dds.as_ref() {
        Some(dds) => {
            let maps = dds.maps();
            let mut partitions: BTreeMap<RgId, Vec<String>> = BTreeMap::new();
            for (leaf, rg) in maps.dp.leaves() {
                partitions.entry(rg).or_default().push(leaf.to_string());
            }
            maps.rg
                .iter()
                .map(|(rg, entry)| GroupStatus {
                    rg: rg.0,
                    epoch: entry.epoch,
                    members: entry.bricks.iter().map(|b| b.0).collect(),
                    partitions: partitions.remove(rg).unwrap_or_default(),
                    silent_members: entry
                        .bricks
                        .iter()
                        .map(|b| b.0)
                        .filter(|b| silent.contains(b))
                        .collect(),
                    behind: behind(&brick_maps, *rg, entry.epoch),
                })
                .collect()
        }
        None => Vec::new(),
    };
    Ok(ClusterStatus {
        replicas: cluster.cluster.replicas,
        bricks,
        groups,
    })
}

/// The bricks whose maps hold `rg` at an epoch older than `epoch`.
fn behind(brick_maps: &BTreeMap<BrickId, Maps>, rg: RgId, epoch: u64) -> Vec<Behind> {
    brick_maps
        .iter()
        .filter_map(|(brick, maps)| {
            let known = maps.rg.get(rg).map(|e| e.epoch);
            (known < Some(epoch)).then_some(Behind {
                brick: brick.0,
                epoch: known,
            })
        })
        .collect()
}

fn brick_status(id: BrickId, address: String, reply: Result<Reply, String>) -> BrickStatus {
    let mut status = BrickStatus {
        id: id.0,
        address,
        error: None,
        keys: 0,
        prepared: 0,
        groups_waiting_for_a_copy: 0,
        copies_running: 0,
        forgotten_outcomes_ms_left: 0,
        votes_open: 0,
    };
    let entries = match reply {
        Ok(Reply::Stats(entries)) => entries,
        Ok(other) => {
            status.error = Some(format!("answered {other:?} to a request for stats"));
            return status;
        }
        Err(e) => {
            status.error = Some(e);
            return status;
        }
    };
    for (name, value) in entries {
        match name.as_str() {
            "prepared" => status.prepared = value,
            "groups_waiting_for_a_copy" => status.groups_waiting_for_a_copy = value,
            "forgotten_outcomes_ms_left" => status.forgotten_outcomes_ms_left = value,
            "votes_under_way" | "votes_undecided" => status.votes_open += value,
            _ if name.starts_with("partition.") && name.ends_with(".keys") => {
                status.keys += value;
            }
            _ if name.starts_with("copy.") && name.ends_with(".phase") => {
                status.copies_running += 1;
            }
            _ => {}
        }
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(entries: &[(&str, u64)]) -> Result<Reply, String> {
        Ok(Reply::Stats(
            entries.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        ))
    }

    #[test]
    fn stats_are_summed_per_brick_and_silence_is_reported() {
        let b = brick_status(
            BrickId(2),
            "127.0.0.1:7102".into(),
            answered(&[
                ("prepared", 3),
                ("partition.1.keys", 10),
                ("partition.2.keys", 5),
                ("copy.1.phase", 1),
                ("groups_waiting_for_a_copy", 2),
                ("forgotten_outcomes_ms_left", 900),
                ("votes_under_way", 1),
                ("votes_undecided", 2),
            ]),
        );
        assert_eq!(
            (
                b.keys,
                b.prepared,
                b.copies_running,
                b.groups_waiting_for_a_copy,
                b.forgotten_outcomes_ms_left,
                b.votes_open
            ),
            (15, 3, 1, 2, 900, 3)
        );
        let silent = brick_status(BrickId(3), "x".into(), Err("timed out".into()));
        assert_eq!(silent.error.as_deref(), Some("timed out"));
        let status = ClusterStatus {
            replicas: 2,
            bricks: vec![b, silent],
            groups: vec![GroupStatus {
                rg: 0,
                epoch: 4,
                members: vec![2],
                partitions: vec!["partition 0".into()],
                silent_members: vec![],
                behind: vec![],
            }],
        };
        assert!(!status.is_healthy());
        assert!(!status.is_settled());
        let text = status.render();
        assert!(text.contains("no answer: timed out"), "{text}");
        assert!(text.contains("short: 1 of 2"), "{text}");
        assert!(text.contains("degraded: see the rows above\n"), "{text}");
        // One of two bricks answers: not a majority.
        assert!(
            text.ends_with(
                "not settled: most bricks are silent, or one holds older maps or has a vote open\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn settled_needs_the_latest_epochs_everywhere_and_no_open_vote() {
        let quiet = |id| {
            brick_status(
                BrickId(id),
                "x".into(),
                answered(&[("partition.1.keys", 1)]),
            )
        };
        let group = |behind| GroupStatus {
            rg: 0,
            epoch: 5,
            members: vec![1, 2],
            partitions: vec!["partition 0".into()],
            silent_members: vec![],
            behind,
        };
        let mut status = ClusterStatus {
            replicas: 2,
            bricks: vec![quiet(1), quiet(2)],
            groups: vec![group(vec![])],
        };
        assert!(status.is_healthy() && status.is_settled());
        assert!(status.render().ends_with("none has a vote open\n"));
        // A silent brick among three leaves a majority.
        status
            .bricks
            .push(brick_status(BrickId(3), "x".into(), Err("down".into())));
        assert!(!status.is_healthy() && status.is_settled());
        status
            .bricks
            .push(brick_status(BrickId(4), "x".into(), Err("down".into())));
        assert!(!status.is_settled());
        status.bricks.truncate(2);

        let maps_at = |epoch| {
            let mut rg = maps::RgMap::new();
            let bricks = vec![BrickId(1), BrickId(2)];
            rg.insert(RgId(0), maps::RgEntry { epoch, bricks }).unwrap();
            Maps::new(1, maps::DpMap::uniform(1, |_| RgId(0)), rg).unwrap()
        };
        let maps = BTreeMap::from([(BrickId(1), maps_at(5)), (BrickId(2), maps_at(4))]);
        let late = behind(&maps, RgId(0), 5);
        assert_eq!(
            late,
            vec![Behind {
                brick: 2,
                epoch: Some(4)
            }]
        );
        assert_eq!(behind(&maps, RgId(1), 5)[0].epoch, None);
        status.groups = vec![group(late)];
        assert!(status.is_healthy() && !status.is_settled());
        assert!(status.render().contains("older maps: 2 at 4"));

        status.groups = vec![group(vec![])];
        status.bricks[1].votes_open = 1;
        assert!(!status.is_settled());
    }
}
