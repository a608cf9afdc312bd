//! `cluster.toml`: the bricks of a cluster, their addresses, and the settings
//! every process of the cluster must agree on. Parsing checks every key and
//! names the offending one in its error; unknown keys are errors too, so a
//! misspelt setting cannot be silently ignored.
//!
//! From a configuration come the brick directory (id to address) and the
//! initial maps. Reading the file is the only I/O here; what the processes
//! do with the settings is theirs.
//!
//! # Keys
//!
//! ```toml
//! [cluster]                  # optional; every key has a default
//! replicas = 2               # bricks per replica group; 1..=16, at most the brick count (default 2)
//! partitions = 8             # initial DP leaves; 1..=65536 (default 8)
//! partition_capacity_mb = 100  # arena size of one partition; 1..=65536 (default 100)
//! data_dir = "data"          # brick N keeps its arenas in data_dir/brick-N/ (default "data")
//!
//! [timeouts]                 # optional; every key has a default; each 1..=3600000 ms
//! request_ms = 1000          # ddslib gives up on one attempt of a request
//! prepare_ms = 2000          # a prepared participant asks its peers after this
//! lease_ms = 1500            # a read lease granted by peers lasts this long
//! probe_ms = 300             # a liveness probe before an exclusion waits this long
//! retries_max = 8            # ddslib attempts an operation at most 1 + this; 0..=1000
//!
//! [[brick]]                  # one section per brick, at least one, at most 4096
//! id = 1                     # a u32, unique in the file
//! address = "127.0.0.1:7101" # ip:port it listens on and is reached at, unique
//! ```
//!
//! A relative `data_dir` is taken from the folder of the configuration file
//! (by `ClusterConfig::load`), so a cluster works the same from any current
//! directory.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::{self, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::dp::DpMap;
use crate::ids::{BrickId, RgId};
use crate::limits::{
    BRICKS_MAX, CONFIG_SIZE_MAX, COPY_RATE_MB_S_MAX, PARTITIONS_MAX, PARTITION_CAPACITY_MB_MAX,
    REPLICAS_MAX, RETRIES_MAX, TIMEOUT_MS_MAX,
};
use crate::maps::Maps;
use crate::rg::{RgEntry, RgMap};

/// A parsed and validated `cluster.toml`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterConfig {
    /// The `[cluster]` section.
    pub cluster: ClusterSettings,
    /// The `[timeouts]` section.
    pub timeouts: Timeouts,
    /// The `[recovery]` section.
    pub recovery: Recovery,
    /// The `[[brick]]` sections, in file order.
    pub bricks: Vec<BrickConfig>,
}

/// The `[cluster]` section: shape and storage of the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSettings {
    /// Bricks per replica group: how many copies of each partition exist.
    /// At least 1, at most `REPLICAS_MAX` (16) and at most the number of
    /// bricks. Default 2, as in the paper.
    pub replicas: u32,
    /// DP leaves (partitions) of the initial maps, 1 to `PARTITIONS_MAX`
    /// (65536). A power of two gives partitions of equal share. Default 8.
    pub partitions: u32,
    /// Capacity of one partition's arena in megabytes (MiB), 1 to
    /// `PARTITION_CAPACITY_MB_MAX` (65536). Default 100, as in the paper.
    pub partition_capacity_mb: u64,
    /// Where bricks keep their data: brick N uses `data_dir/brick-N/`.
    /// Relative paths are taken from the configuration file's folder.
    /// Default `data`.
    pub data_dir: PathBuf,
}

impl Default for ClusterSettings {
    fn default() -> ClusterSettings {
        ClusterSettings {
            replicas: 2,
            partitions: 8,
            partition_capacity_mb: 100,
            data_dir: PathBuf::from("data"),
        }
    }
}

/// The `[timeouts]` section. Every timeout is in milliseconds, 1 to
/// `TIMEOUT_MS_MAX` (one hour).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    /// How long ddslib waits for the answer to one attempt of a request
    /// before it tries again. Default 1000.
    pub request_ms: u64,
    /// How long a participant stays prepared without hearing the outcome
    /// before it asks its peers. Default 2000.
    pub prepare_ms: u64,
    /// How long a read lease granted by a brick's peers lasts. Default 1500.
    pub lease_ms: u64,
    /// How long a liveness probe waits for an answer before the silent
    /// brick is excluded from its groups. Default 300.
    pub probe_ms: u64,
    /// How many times ddslib retries one operation (after the first
    /// attempt) before it reports the cluster unavailable; 0 to
    /// `RETRIES_MAX` (1000). Default 8.
    pub retries_max: u32,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            request_ms: 1000,
            prepare_ms: 2000,
            lease_ms: 1500,
            probe_ms: 300,
            retries_max: 8,
        }
    }
}

/// The `[recovery]` section: how replica groups that lost a brick get
/// their replication degree back. Times in milliseconds.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Recovery {
    /// How long a group may run short of `replicas` before its partitions
    /// are copied to another live brick (the one holding the fewest bytes).
    /// Until then only the brick that left may come back. Default 30000.
    pub heal_after_ms: u64,
    /// A brick that comes back within this time of leaving offers the data
    /// it kept; if its digest equals the live replica's, it rejoins without
    /// a copy. Later, or with a different digest, it copies in full; 0
    /// always copies. Default 10000.
    pub grace_ms: u64,
    /// The longest a copy may hold a partition's writes for its last
    /// stretch; past it the copy is abandoned and writes resume. Default
    /// 1000.
    pub copy_lease_ms: u64,
    /// A cap on a copy's rate in MiB/s, so a copy does not starve the
    /// brick's clients; 0 means no cap. Default 0.
    pub copy_rate_mb_s: u64,
}

impl Default for Recovery {
    fn default() -> Recovery {
        Recovery {
            heal_after_ms: 30_000,
            grace_ms: 10_000,
            copy_lease_ms: 1000,
            copy_rate_mb_s: 0,
        }
    }
}

/// One `[[brick]]` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrickConfig {
    /// The brick's id, unique in the file.
    pub id: BrickId,
    /// Where the brick listens and where everyone reaches it: an IP address
    /// and a fixed port, unique in the file. Host names are not resolved,
    /// so that every process routes to the same place.
    pub address: SocketAddr,
}

/// The `[[brick]]` section as written, before its address is parsed, so
/// that a bad address gets an error that names the brick.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBrick {
    id: u32,
    address: String,
}

/// The file as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    cluster: ClusterSettings,
    #[serde(default)]
    timeouts: Timeouts,
    #[serde(default)]
    recovery: Recovery,
    #[serde(default)]
    brick: Vec<RawBrick>,
}

/// Why a configuration was refused.
#[derive(Debug)]
pub enum ConfigError {
    /// The file could not be read.
    Read { path: PathBuf, error: io::Error },
    /// The file is larger than `CONFIG_SIZE_MAX`.
    TooLarge { path: PathBuf, size_max: u64 },
    /// The text is not TOML, has a value of the wrong type, or has a key
    /// that does not exist. `line` and `column` count from 1.
    Syntax {
        path: Option<PathBuf>,
        line: Option<usize>,
        column: Option<usize>,
        message: String,
    },
    /// A value is out of range or conflicts with another. `field` is its
    /// path in the file, like `brick[2].address` (bricks count from 0).
    Invalid {
        path: Option<PathBuf>,
        field: String,
        problem: String,
    },
}

impl ConfigError {
    /// The path of the offending key, for `Invalid` errors.
    pub fn field(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { field, .. } => Some(field),
            _ => None,
        }
    }

    fn invalid(field: impl Into<String>, problem: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: None,
            field: field.into(),
            problem: problem.into(),
        }
    }

    fn in_file(self, file: &Path) -> ConfigError {
        match self {
            ConfigError::Syntax {
                line,
                column,
                message,
                ..
            } => ConfigError::Syntax {
                path: Some(file.to_path_buf()),
                line,
                column,
                message,
            },
            ConfigError::Invalid { field, problem, .. } => ConfigError::Invalid {
                path: Some(file.to_path_buf()),
                field,
                problem,
            },
            other => other,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Read { path, error } => {
                write!(f, "cannot read the cluster configuration {}: {error}", path.display())
            }
            ConfigError::TooLarge { path, size_max } => write!(
                f,
                "{} is larger than {size_max} bytes, too large to be a cluster configuration; check the path",
                path.display()
            ),
            ConfigError::Syntax { path, line, column, message } => {
                if let Some(path) = path {
                    write!(f, "{}: ", path.display())?;
                }
                match (line, column) {
                    (Some(line), Some(column)) => write!(f, "line {line}, column {column}: {message}"),
                    _ => write!(f, "{message}"),
                }
            }
            ConfigError::Invalid { path, field, problem } => {
                if let Some(path) = path {
                    write!(f, "{}: ", path.display())?;
                }
                write!(f, "{field}: {problem}")
            }
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConfigError::Read { error, .. } => Some(error),
            _ => None,
        }
    }
}

impl ClusterConfig {
    /// Parses and validates the text of a `cluster.toml`. A relative
    /// `data_dir` stays relative; `load` resolves it.
    pub fn parse(text: &str) -> Result<ClusterConfig, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| syntax_error(text, &e))?;
        let mut bricks = Vec::with_capacity(raw.brick.len().min(BRICKS_MAX));
        for (i, brick) in raw.brick.iter().enumerate() {
            bricks.push(BrickConfig {
                id: BrickId(brick.id),
                address: parse_address(i, &brick.address)?,
            });
        }
        let config = ClusterConfig {
            cluster: raw.cluster,
            timeouts: raw.timeouts,
            recovery: raw.recovery,
            bricks,
        };
        config.validate()?;
        Ok(config)
    }

    /// Reads, parses and validates the file at `path`, and resolves a
    /// relative `data_dir` against the file's folder. Errors name the file.
    pub fn load(path: impl AsRef<Path>) -> Result<ClusterConfig, ConfigError> {
        let path = path.as_ref();
        let read_error = |error| ConfigError::Read {
            path: path.to_path_buf(),
            error,
        };
        let file = std::fs::File::open(path).map_err(read_error)?;
        let mut text = String::new();
        // Reading one byte past the limit tells a file at the limit from a
        // larger one without trusting the size the file system reports.
        file.take(CONFIG_SIZE_MAX + 1)
            .read_to_string(&mut text)
            .map_err(read_error)?;
        if text.len() as u64 > CONFIG_SIZE_MAX {
            return Err(ConfigError::TooLarge {
                path: path.to_path_buf(),
                size_max: CONFIG_SIZE_MAX,
            });
        }
        let mut config = ClusterConfig::parse(&text).map_err(|e| e.in_file(path))?;
        if config.cluster.data_dir.is_relative() {
            let folder = path.parent().unwrap_or(Path::new(""));
            config.cluster.data_dir = folder.join(&config.cluster.data_dir);
        }
        Ok(config)
    }

    /// A valid configuration of `bricks` bricks (ids 1..=bricks on
    /// 127.0.0.1, ports from 7101) with default timeouts, for simulations
    /// and tests that need maps but no files. Panics on a shape that
    /// `validate` refuses; callers pick the shape, so that is their bug.
    pub fn for_simulation(bricks: u32, replicas: u32, partitions: u32) -> ClusterConfig {
        let config = ClusterConfig {
            cluster: ClusterSettings {
                replicas,
                partitions,
                ..ClusterSettings::default()
            },
            timeouts: Timeouts::default(),
            recovery: Recovery::default(),
            bricks: (1..=bricks)
                .map(|id| BrickConfig {
                    id: BrickId(id),
                    // The modulo keeps the sum under 65536 even for brick
                    // counts that validate then refuses.
                    address: SocketAddr::from(([127, 0, 0, 1], 7100 + (id % 50000) as u16)),
                })
                .collect(),
        };
        if let Err(e) = config.validate() {
            panic!("for_simulation({bricks}, {replicas}, {partitions}): {e}");
        }
        config
    }

    /// Checks every value and every relation between values; the first
    /// problem found is returned. `parse` and `load` call it.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let cluster = &self.cluster;
        check_range(
            "cluster.replicas",
            u64::from(cluster.replicas),
            REPLICAS_MAX as u64,
        )?;
        check_range(
            "cluster.partitions",
            u64::from(cluster.partitions),
            PARTITIONS_MAX as u64,
        )?;
        check_range(
            "cluster.partition_capacity_mb",
            cluster.partition_capacity_mb,
            PARTITION_CAPACITY_MB_MAX,
        )?;
        if cluster.data_dir.as_os_str().is_empty() {
            return Err(ConfigError::invalid(
                "cluster.data_dir",
                "must not be empty; \"data\" is the usual choice",
            ));
        }
        let t = &self.timeouts;
        for (field, value) in [
            ("timeouts.request_ms", t.request_ms),
            ("timeouts.prepare_ms", t.prepare_ms),
            ("timeouts.lease_ms", t.lease_ms),
            ("timeouts.probe_ms", t.probe_ms),
        ] {
            check_range(field, value, TIMEOUT_MS_MAX)?;
        }
        let r = &self.recovery;
        for (field, value) in [
            ("recovery.heal_after_ms", r.heal_after_ms),
            ("recovery.copy_lease_ms", r.copy_lease_ms),
        ] {
            check_range(field, value, TIMEOUT_MS_MAX)?;
        }
        if r.grace_ms > TIMEOUT_MS_MAX {
            return Err(ConfigError::invalid(
                "recovery.grace_ms",
                format!("{} is more than the {TIMEOUT_MS_MAX} allowed", r.grace_ms),
            ));
        }
        if r.copy_rate_mb_s > COPY_RATE_MB_S_MAX {
            return Err(ConfigError::invalid(
                "recovery.copy_rate_mb_s",
                format!(
                    "{} is more than the {COPY_RATE_MB_S_MAX} allowed; 0 means no cap",
                    r.copy_rate_mb_s
                ),
            ));
        }
        if t.retries_max > RETRIES_MAX {
            return Err(ConfigError::invalid(
                "timeouts.retries_max",
                format!("{} is more than the {RETRIES_MAX} allowed", t.retries_max),
            ));
        }
        if self.bricks.is_empty() {
            return Err(ConfigError::invalid(
                "brick",
                "the cluster needs at least one [[brick]] section",
            ));
        }
        if self.bricks.len() > BRICKS_MAX {
            return Err(ConfigError::invalid(
                "brick",
                format!(
                    "{} bricks is more than the {BRICKS_MAX} allowed",
                    self.bricks.len()
                ),
            ));
        }
        let mut ids: HashMap<BrickId, usize> = HashMap::new();
        let mut addresses: HashMap<SocketAddr, usize> = HashMap::new();
        for (i, brick) in self.bricks.iter().enumerate() {
            check_address(i, brick.address)?;
            if let Some(first) = ids.insert(brick.id, i) {
                return Err(ConfigError::invalid(
                    format!("brick[{i}].id"),
                    format!("duplicate brick id {} (also brick[{first}])", brick.id.0),
                ));
            }
            if let Some(first) = addresses.insert(brick.address, i) {
                return Err(ConfigError::invalid(
                    format!("brick[{i}].address"),
                    format!("duplicate address {} (also brick[{first}])", brick.address),
                ));
            }
        }
        if cluster.replicas as usize > self.bricks.len() {
            return Err(ConfigError::invalid(
                "cluster.replicas",
                format!(
                    "{} is larger than the number of bricks ({})",
                    cluster.replicas,
                    self.bricks.len()
                ),
            ));
        }
        Ok(())
    }

    /// Every brick's address by id.
    pub fn brick_directory(&self) -> BTreeMap<BrickId, SocketAddr> {
        self.bricks
            .iter()
            .map(|brick| (brick.id, brick.address))
            .collect()
    }

    /// The maps a new cluster starts with: `dp_version` 1, one group per
    /// partition (`RgId(i)` serves the `i`-th leaf in ascending partition
    /// id), every group at epoch 1.
    ///
    /// Placement is round-robin over the bricks sorted by id: replica `j`
    /// of group `i` is brick number `(i * replicas + j) % n`. The
    /// `partitions * replicas` placements walk the bricks in a circle, so
    /// every brick holds the same number of replicas, give or take one; a
    /// group's replicas are consecutive on the circle, and since
    /// `replicas <= n` no group has two replicas on one brick.
    ///
    /// Panics if the configuration does not pass `validate`.
    pub fn initial_maps(&self) -> Maps {
        if let Err(e) = self.validate() {
            panic!("initial_maps of an invalid configuration: {e}");
        }
        let mut ids: Vec<BrickId> = self.bricks.iter().map(|brick| brick.id).collect();
        ids.sort_unstable();
        let replicas = self.cluster.replicas as usize;
        let dp = DpMap::uniform(self.cluster.partitions, |i| RgId(i as u32));
        let mut rg = RgMap::new();
        for i in 0..self.cluster.partitions as usize {
            let bricks = (0..replicas)
                .map(|j| ids[(i * replicas + j) % ids.len()])
                .collect();
            rg.insert(RgId(i as u32), RgEntry { epoch: 1, bricks })
                .expect("a validated configuration places validly");
        }
        Maps::new(1, dp, rg).expect("a validated configuration gives valid maps")
    }
}

/// `value` must be in `1..=max`.
fn check_range(field: &str, value: u64, max: u64) -> Result<(), ConfigError> {
    if value == 0 {
        return Err(ConfigError::invalid(field, "must be at least 1"));
    }
    if value > max {
        return Err(ConfigError::invalid(
            field,
            format!("{value} is more than the {max} allowed"),
        ));
    }
    Ok(())
}

fn parse_address(i: usize, text: &str) -> Result<SocketAddr, ConfigError> {
    text.parse().map_err(|_| {
        ConfigError::invalid(
            format!("brick[{i}].address"),
            format!("{text:?} is not a socket address (ip:port, such as \"127.0.0.1:7101\")"),
        )
    })
}

/// A brick's address must be one that others can connect to.
fn check_address(i: usize, address: SocketAddr) -> Result<(), ConfigError> {
    if address.port() == 0 {
        return Err(ConfigError::invalid(
            format!("brick[{i}].address"),
            format!(
                "{address} has port 0, which lets the system pick; give the brick a fixed port"
            ),
        ));
    }
    if address.ip().is_unspecified() {
        return Err(ConfigError::invalid(
            format!("brick[{i}].address"),
            format!(
                "{address} is not an address others can connect to; give the brick's own address"
            ),
        ));
    }
    Ok(())
}

/// A TOML or serde error as one line, with its position in `text`.
fn syntax_error(text: &str, error: &toml::de::Error) -> ConfigError {
    let (line, column) = match error.span() {
        Some(span) => {
            let before = &text.as_bytes()[..span.start.min(text.len())];
            let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
            let line_start = before
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |p| p + 1);
            (
                Some(line),
                Some(span.start.min(text.len()) - line_start + 1),
            )
        }
        None => (None, None),
    };
    ConfigError::Syntax {
        path: None,
        line,
        column,
        message: error.message().trim().to_string(),
    }
}
