//! The local-cluster launcher behind `bench --spawn`: starts one brick
//! process per `[[brick]]` of a cluster configuration, waits until each
//! accepts TCP connections, and stops them all when dropped (SIGTERM, then
//! SIGKILL after a grace period), so a failing run leaves nothing behind.
//!
//! It reads only the fields it needs from the configuration (brick ids and
//! addresses, `cluster.data_dir`) and ignores the rest; checking the whole
//! file is the brick's job, and a brick that refuses it exits with the
//! reason in its log, which the launcher quotes. It does not talk the DDS
//! protocol: "ready" means "accepts a TCP connection".

use std::ffi::OsString;
use std::fmt;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::error::BenchError;

use crate::limits::{
    BRICKS_MAX, BRICK_READY_POLL_INTERVAL, BRICK_READY_TIMEOUT, BRICK_STOP_TIMEOUT,
    CONFIG_SIZE_MAX, LOG_TAIL_SIZE,
};

/// Why the local cluster could not be started.
#[derive(Debug)]
pub enum ClusterError {
    /// The configuration could not be read or lacks what the launcher needs.
    Config { path: PathBuf, problem: String },
    /// No brick executable next to the bench executable.
    BrickBinaryNotFound { looked_at: PathBuf },
    /// Creating the data folder or a log file failed.
    Io { what: String, error: io::Error },
    /// Something already accepts connections on a brick's address.
    AddressInUse { id: u32, address: SocketAddr },
    /// The brick process could not be started.
    Spawn {
        id: u32,
        program: PathBuf,
        error: io::Error,
    },
    /// A brick exited before it accepted connections.
    BrickExited {
        id: u32,
        status: ExitStatus,
        log_path: PathBuf,
        log_tail: String,
    },
    /// A brick did not accept connections before the deadline.
    BrickNotReady {
        id: u32,
        address: SocketAddr,
        waited: Duration,
        log_path: PathBuf,
        log_tail: String,
    },
}

impl fmt::Display for ClusterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClusterError::Config { path, problem } => {
                write!(f, "cannot use cluster configuration {}: {problem}", path.display())
            }
            ClusterError::BrickBinaryNotFound { looked_at } => write!(
                f,
                "brick binary not found next to bench (looked for {}); run `cargo build --release -p brick`",
                looked_at.display()
            ),
            ClusterError::Io { what, error } => write!(f, "cannot {what}: {error}"),
            ClusterError::AddressInUse { id, address } => write!(
                f,
                "something already listens on {address}, the address of brick {id}; stop it (a brick from an earlier run?) or change the configuration"
            ),
            ClusterError::Spawn { id, program, error } => {
                write!(f, "cannot start brick {id} from {}: {error}", program.display())
            }
            ClusterError::BrickExited { id, status, log_path, log_tail } => write!(
                f,
                "brick {id} exited before it accepted connections ({status}); the end of {}:\n{log_tail}",
                log_path.display()
            ),
            ClusterError::BrickNotReady { id, address, waited, log_path, log_tail } => write!(
                f,
                "brick {id} did not accept connections on {address} within {} ms; the end of {}:\n{log_tail}",
                waited.as_millis(),
                log_path.display()
            ),
        }
    }
}

impl std::error::Error for ClusterError {}

/// How to start one brick: `program args.. --config <path> --id <N>`.
#[derive(Clone, Debug)]
pub struct BrickCommand {
    pub program: PathBuf,
    /// Arguments placed before `--config` and `--id`.
    pub args: Vec<OsString>,
}

impl BrickCommand {
    /// The brick daemon itself.
    pub fn brick(binary: &Path) -> BrickCommand {
        BrickCommand {
            program: binary.to_path_buf(),
            args: Vec::new(),
        }
    }
}

/// Deadlines of the launcher; the defaults come from `limits.rs`.
#[derive(Clone, Copy, Debug)]
pub struct LaunchOptions {
    /// How long all bricks together may take to accept connections.
    pub ready_timeout: Duration,
    /// How often a starting brick is tried.
    pub ready_poll_interval: Duration,
    /// How long bricks may take to exit after SIGTERM.
    pub stop_timeout: Duration,
    /// Refuse to start when something already listens on a brick's address,
    /// since the readiness check would mistake it for the new brick.
    pub refuse_busy_addresses: bool,
}

impl Default for LaunchOptions {
    fn default() -> LaunchOptions {
        LaunchOptions {
            ready_timeout: BRICK_READY_TIMEOUT,
            ready_poll_interval: BRICK_READY_POLL_INTERVAL,
            stop_timeout: BRICK_STOP_TIMEOUT,
            refuse_busy_addresses: true,
        }
    }
}

/// The part of `cluster.toml` the launcher reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaunchConfig {
    /// Already resolved against the configuration file's folder.
    pub data_dir: PathBuf,
    /// `(id, address)` of every brick, in file order.
    pub bricks: Vec<(u32, SocketAddr)>,
}

#[derive(Deserialize)]
struct RawConfig {
    #[serde(default)]
    cluster: RawCluster,
    #[serde(default)]
    brick: Vec<RawBrick>,
}

#[derive(Deserialize)]
#[serde(default)]
struct RawCluster {
    data_dir: PathBuf,
}

impl Default for RawCluster {
    fn default() -> RawCluster {
        RawCluster {
            data_dir: PathBuf::from("data"),
        }
    }
}

#[derive(Deserialize)]
struct RawBrick {
    id: u32,
    address: SocketAddr,
}

impl LaunchConfig {
    /// Reads the brick list and data folder from a configuration file. A
    /// relative `data_dir` is taken from the file's folder, as the bricks do.
    pub fn load(path: &Path) -> Result<LaunchConfig, ClusterError> {
        let problem = |problem: String| ClusterError::Config {
            path: path.to_path_buf(),
            problem,
        };
        let file = File::open(path).map_err(|e| problem(e.to_string()))?;
        let mut text = String::new();
        file.take(CONFIG_SIZE_MAX + 1)
            .read_to_string(&mut text)
            .map_err(|e| problem(e.to_string()))?;
        if text.len() as u64 > CONFIG_SIZE_MAX {
            return Err(problem(format!("larger than {CONFIG_SIZE_MAX} bytes")));
        }
        let raw: RawConfig = toml::from_str(&text).map_err(|e| problem(e.to_string()))?;
        if raw.brick.is_empty() {
            return Err(problem(
                "no [[brick]] sections; add one per brick with id and address".to_string(),
            ));
        }
        if raw.brick.len() > BRICKS_MAX {
            return Err(problem(format!(
                "{} bricks, more than {BRICKS_MAX}",
                raw.brick.len()
            )));
        }
        let mut data_dir = raw.cluster.data_dir;
        if data_dir.is_relative() {
            data_dir = path.parent().unwrap_or(Path::new("")).join(data_dir);
        }
        Ok(LaunchConfig {
            data_dir,
            bricks: raw.brick.into_iter().map(|b| (b.id, b.address)).collect(),
        })
    }
}

/// The brick executable next to the running one: where cargo puts every
/// binary of the workspace.
///
/// When bench runs under `cargo run` (cargo sets `CARGO`), the brick binary
/// is built first with the same profile, so the README's one command needs
/// no separate build step and never runs a stale brick.
pub fn find_brick_binary() -> Result<PathBuf, ClusterError> {
    let exe = std::env::current_exe().map_err(|error| ClusterError::Io {
        what: "find the path of the running executable".to_string(),
        error,
    })?;
    let dir = exe.parent().unwrap_or(Path::new("."));
    if let Some(cargo) = std::env::var_os("CARGO") {
        let mut command = std::process::Command::new(cargo);
        command.args(["build", "--quiet", "-p", "brick", "--bin", "brick"]);
        if dir.ends_with("release") {
            command.arg("--release");
        }
        let status = command.status().map_err(|error| ClusterError::Io {
            what: "run cargo build -p brick".to_string(),
            error,
        })?;
        if !status.success() {
            return Err(ClusterError::Io {
                what: "build the brick binary".to_string(),
                error: std::io::Error::other(format!("cargo build -p brick exited with {status}")),
            });
        }
    }
    find_brick_binary_in(dir)
}

/// The brick executable in `dir`, if there is one.
pub fn find_brick_binary_in(dir: &Path) -> Result<PathBuf, ClusterError> {
    let candidate = dir.join(format!("brick{}", std::env::consts::EXE_SUFFIX));
    if candidate.is_file() {
        Ok(candidate)
    } else {
        Err(ClusterError::BrickBinaryNotFound {
            looked_at: candidate,
        })
    }
}

/// One brick process.
struct RunningBrick {
    id: u32,
    address: SocketAddr,
    child: Child,
    log_path: PathBuf,
}

/// Brick processes of one cluster; dropping it stops them.
pub struct LocalCluster {
    bricks: Vec<RunningBrick>,
    stop_timeout: Duration,
    config_path: PathBuf,
    command: BrickCommand,
    options: LaunchOptions,
}

impl LocalCluster {
    /// Starts the real brick daemon for every brick of `config_path` and
    /// waits until all accept connections.
    pub fn start(config_path: &Path, brick_binary: &Path) -> Result<LocalCluster, ClusterError> {
        LocalCluster::start_with(
            config_path,
            &BrickCommand::brick(brick_binary),
            LaunchOptions::default(),
        )
    }

    /// Like `start`, with any command standing in for the brick.
    pub fn start_with(
        config_path: &Path,
        command: &BrickCommand,
        options: LaunchOptions,
    ) -> Result<LocalCluster, ClusterError> {
        let config = LaunchConfig::load(config_path)?;
        if options.refuse_busy_addresses {
            for &(id, address) in &config.bricks {
                if TcpStream::connect_timeout(&address, options.ready_poll_interval).is_ok() {
                    return Err(ClusterError::AddressInUse { id, address });
                }
            }
        }
        std::fs::create_dir_all(&config.data_dir).map_err(|error| ClusterError::Io {
            what: format!("create the data folder {}", config.data_dir.display()),
            error,
        })?;

        // Bricks already started are stopped by `Drop` if a later one fails.
        let mut cluster = LocalCluster {
            bricks: Vec::with_capacity(config.bricks.len()),
            stop_timeout: options.stop_timeout,
            config_path: config_path.to_path_buf(),
            command: command.clone(),
            options,
        };
        for &(id, address) in &config.bricks {
            let log_path = config.data_dir.join(format!("brick-{id}.log"));
            let brick = cluster.spawn(id, address, log_path, false)?;
            cluster.bricks.push(brick);
        }

        // The bricks start in parallel, so one deadline covers them all.
        let started = Instant::now();
        let deadline = started + options.ready_timeout;
        for brick in &mut cluster.bricks {
            wait_until_ready(brick, deadline, options.ready_poll_interval, started)?;
        }
        Ok(cluster)
    }

    /// `(id, address)` of every brick.
    pub fn bricks(&self) -> Vec<(u32, SocketAddr)> {
        self.bricks.iter().map(|b| (b.id, b.address)).collect()
    }

    /// Process ids of the bricks.
    pub fn pids(&self) -> Vec<u32> {
        self.bricks.iter().map(|b| b.child.id()).collect()
    }

    /// Starts one brick process, logging to `log_path` (appended to with
    /// `append`, as after a restart).
    fn spawn(
        &self,
        id: u32,
        address: SocketAddr,
        log_path: PathBuf,
        append: bool,
    ) -> Result<RunningBrick, ClusterError> {
        let log_error = |error| ClusterError::Io {
            what: format!("create the log {}", log_path.display()),
            error,
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(&log_path)
            .map_err(log_error)?;
        let log_for_stderr = log.try_clone().map_err(log_error)?;
        let child = Command::new(&self.command.program)
            .args(&self.command.args)
            .arg("--config")
            .arg(&self.config_path)
            .arg("--id")
            .arg(id.to_string())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_for_stderr)
            .spawn()
            .map_err(|error| ClusterError::Spawn {
                id,
                program: self.command.program.clone(),
                error,
            })?;
        Ok(RunningBrick {
            id,
            address,
            child,
            log_path,
        })
    }

    fn index_of(&self, id: u32) -> usize {
        self.bricks
            .iter()
            .position(|b| b.id == id)
            .unwrap_or_else(|| panic!("brick {id} is not in this cluster"))
    }

    /// Kills brick `id` with SIGKILL, as a crash would, and reaps it.
    pub fn kill(&mut self, id: u32) {
        let index = self.index_of(id);
        let brick = &mut self.bricks[index];
        let _ = brick.child.kill();
        let _ = brick.child.wait();
    }

    /// Starts brick `id` again (after `kill`) with the same configuration
    /// and data, and waits until it accepts connections.
    pub fn restart(&mut self, id: u32) -> Result<(), ClusterError> {
        let index = self.index_of(id);
        self.kill(id);
        let (address, log_path) = {
            let brick = &self.bricks[index];
            (brick.address, brick.log_path.clone())
        };
        self.bricks[index] = self.spawn(id, address, log_path, true)?;
        let started = Instant::now();
        let deadline = started + self.options.ready_timeout;
        let poll = self.options.ready_poll_interval;
        wait_until_ready(&mut self.bricks[index], deadline, poll, started)
    }
}

/// Polls a brick's address until it accepts a connection, the brick exits,
/// or the deadline passes.
fn wait_until_ready(
    brick: &mut RunningBrick,
    deadline: Instant,
    poll_interval: Duration,
    started: Instant,
) -> Result<(), ClusterError> {
    loop {
        if let Some(status) = exited(&mut brick.child) {
            return Err(ClusterError::BrickExited {
                id: brick.id,
                status,
                log_path: brick.log_path.clone(),
                log_tail: log_tail(&brick.log_path),
            });
        }
        if TcpStream::connect_timeout(&brick.address, poll_interval).is_ok() {
            return Ok(());
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(ClusterError::BrickNotReady {
                id: brick.id,
                address: brick.address,
                waited: now.duration_since(started),
                log_path: brick.log_path.clone(),
                log_tail: log_tail(&brick.log_path),
            });
        }
        std::thread::sleep(poll_interval.min(deadline - now));
    }
}

/// The exit status if the child has exited. An error asking is taken as
/// "still running"; the deadlines bound the wait either way.
fn exited(child: &mut Child) -> Option<ExitStatus> {
    child.try_wait().ok().flatten()
}

/// The last `LOG_TAIL_SIZE` bytes of a log, or why they cannot be read.
fn log_tail(path: &Path) -> String {
    let read = || -> io::Result<String> {
        let mut file = File::open(path)?;
        let size = file.metadata()?.len();
        file.seek(SeekFrom::Start(size.saturating_sub(LOG_TAIL_SIZE)))?;
        let mut bytes = Vec::new();
        file.take(LOG_TAIL_SIZE).read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    read().unwrap_or_else(|e| format!("(cannot read the log: {e})"))
}

impl Drop for LocalCluster {
    /// Sends SIGTERM to every brick, waits up to the stop timeout for all of
    /// them, then kills the rest.
    fn drop(&mut self) {
        for brick in &mut self.bricks {
            if exited(&mut brick.child).is_none() {
                // The child has not been waited for, so its pid cannot have
                // been reused by another process. A failure means it exited
                // just now, which is what we want anyway.
                let pid = brick.child.id() as libc::pid_t;
                // SAFETY: kill(2) takes plain integers and touches no memory.
                unsafe {
                    libc::kill(pid, libc::SIGTERM);
                }
            }
        }
        let deadline = Instant::now() + self.stop_timeout;
        for brick in &mut self.bricks {
            while exited(&mut brick.child).is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if exited(&mut brick.child).is_none() {
                // SIGKILL, then reap; neither can meaningfully fail here.
                let _ = brick.child.kill();
                let _ = brick.child.wait();
            }
        }
    }
}

/// A copy of a cluster configuration whose `data_dir` is a fresh folder of
/// its own, removed (with the copy) when this is dropped.
pub struct ScratchConfig {
    dir: PathBuf,
}

impl ScratchConfig {
    pub fn new(config: &Path) -> Result<ScratchConfig, BenchError> {
        let text = std::fs::read_to_string(config)
            .map_err(|e| BenchError::Config(format!("read {}: {e}", config.display())))?;
        let mut table: toml::Table = text
            .parse()
            .map_err(|e| BenchError::Config(format!("{}: {e}", config.display())))?;
        let dir = std::env::temp_dir().join(format!("dds-bench-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .map_err(|e| BenchError::Config(format!("create {}: {e}", dir.display())))?;
        let scratch = ScratchConfig { dir };
        let data = scratch.dir.join("data").to_string_lossy().into_owned();
        match table.get_mut("cluster").and_then(toml::Value::as_table_mut) {
            Some(cluster) => {
                cluster.insert("data_dir".to_string(), toml::Value::String(data));
            }
            None => {
                return Err(BenchError::Config(format!(
                    "{} has no [cluster] section",
                    config.display()
                )))
            }
        }
        std::fs::write(scratch.path(), table.to_string())
            .map_err(|e| BenchError::Config(format!("write {}: {e}", scratch.path().display())))?;
        Ok(scratch)
    }

    /// The copy of the configuration.
    pub fn path(&self) -> PathBuf {
        self.dir.join("cluster.toml")
    }
}

impl Drop for ScratchConfig {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A configuration for bricks at `addresses` with data in `dir/data`.
    fn write_config(dir: &Path, addresses: &[SocketAddr]) -> PathBuf {
        let mut text = String::from("[cluster]\nreplicas = 1\ndata_dir = \"data\"\n");
        for (i, address) in addresses.iter().enumerate() {
            text.push_str(&format!(
                "\n[[brick]]\nid = {}\naddress = \"{address}\"\n",
                i + 1
            ));
        }
        let path = dir.join("cluster.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    fn shell(script: &str) -> BrickCommand {
        BrickCommand {
            program: PathBuf::from("sh"),
            args: vec!["-c".into(), script.into(), "sh".into()],
        }
    }

    /// An address nobody listens on: bound, read, released.
    fn free_address() -> SocketAddr {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    }

    fn alive(pid: u32) -> bool {
        // SAFETY: signal 0 only checks that the process exists.
        unsafe { libc::kill(pid as libc::pid_t, 0) == 0 }
    }

    fn quick() -> LaunchOptions {
        LaunchOptions {
            ready_timeout: Duration::from_secs(5),
            stop_timeout: Duration::from_secs(2),
            refuse_busy_addresses: false,
            ..LaunchOptions::default()
        }
    }

    #[test]
    fn reads_bricks_and_resolves_data_dir_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let a = "127.0.0.1:7101".parse().unwrap();
        let b = "127.0.0.2:7102".parse().unwrap();
        let path = write_config(dir.path(), &[a, b]);
        let config = LaunchConfig::load(&path).unwrap();
        assert_eq!(
            config,
            LaunchConfig {
                data_dir: dir.path().join("data"),
                bricks: vec![(1, a), (2, b)]
            }
        );

        std::fs::write(
            &path,
            "[cluster]\ndata_dir = \"/abs/d\"\n[[brick]]\nid = 4\naddress = \"127.0.0.1:1\"\n",
        )
        .unwrap();
        assert_eq!(
            LaunchConfig::load(&path).unwrap().data_dir,
            PathBuf::from("/abs/d")
        );

        for bad in [
            "[cluster]\n",
            "[[brick]]\nid = 1\naddress = \"nowhere\"\n",
            "not toml [",
        ] {
            std::fs::write(&path, bad).unwrap();
            assert!(
                matches!(LaunchConfig::load(&path), Err(ClusterError::Config { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn finds_the_brick_binary_only_where_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let error = find_brick_binary_in(dir.path()).unwrap_err();
        assert!(
            error.to_string().contains("cargo build --release -p brick"),
            "{error}"
        );
        let binary = dir
            .path()
            .join(format!("brick{}", std::env::consts::EXE_SUFFIX));
        std::fs::write(&binary, "").unwrap();
        assert_eq!(find_brick_binary_in(dir.path()).unwrap(), binary);
    }

    /// The fake bricks are `sleep`s; the test holds their listeners, which
    /// is all the readiness check looks at.
    #[test]
    fn starts_bricks_waits_for_them_and_stops_them_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let listeners: Vec<TcpListener> = (0..2)
            .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let addresses: Vec<SocketAddr> =
            listeners.iter().map(|l| l.local_addr().unwrap()).collect();
        let path = write_config(dir.path(), &addresses);
        let cluster = LocalCluster::start_with(
            &path,
            &shell("echo \"fake brick $*\"; exec sleep 30"),
            quick(),
        )
        .unwrap();
        assert_eq!(cluster.bricks(), vec![(1, addresses[0]), (2, addresses[1])]);
        let pids = cluster.pids();
        assert!(pids.iter().all(|&pid| alive(pid)));

        // Both children got their arguments and write to their own log.
        for id in 1..=2 {
            let log_path = dir.path().join("data").join(format!("brick-{id}.log"));
            let deadline = Instant::now() + Duration::from_secs(5);
            let want = format!("fake brick --config {} --id {id}", path.display());
            while !std::fs::read_to_string(&log_path)
                .unwrap_or_default()
                .contains(&want)
            {
                assert!(
                    Instant::now() < deadline,
                    "{} never said {want:?}",
                    log_path.display()
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        }

        let stopping = Instant::now();
        drop(cluster);
        assert!(
            stopping.elapsed() < Duration::from_secs(2),
            "sleep should die on SIGTERM at once"
        );
        assert!(
            pids.iter().all(|&pid| !alive(pid)),
            "bricks survived the drop"
        );
    }

    #[test]
    fn a_brick_that_exits_early_is_an_error_with_its_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_config(dir.path(), &[free_address()]);
        let started = Instant::now();
        let error =
            LocalCluster::start_with(&path, &shell("echo bad-config-line >&2; exit 3"), quick())
                .err()
                .expect("the brick exited");
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "an exit must not wait for the deadline"
        );
        match &error {
            ClusterError::BrickExited {
                id: 1,
                status,
                log_tail,
                ..
            } => {
                assert_eq!(status.code(), Some(3));
                assert!(log_tail.contains("bad-config-line"), "{log_tail:?}");
            }
            other => panic!("expected an early exit, got {other}"),
        }
        assert!(error.to_string().contains("bad-config-line"));
    }

    #[test]
    fn a_brick_that_never_listens_times_out_and_is_killed() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_config(dir.path(), &[free_address()]);
        let pid_file = dir.path().join("pid");
        let script = format!(
            "echo $$ > {}; echo still-starting; exec sleep 30",
            pid_file.display()
        );
        let options = LaunchOptions {
            ready_timeout: Duration::from_millis(500),
            ..quick()
        };
        let started = Instant::now();
        let error = LocalCluster::start_with(&path, &shell(&script), options)
            .err()
            .expect("never ready");
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(500) && waited < Duration::from_secs(3),
            "{waited:?}"
        );
        match &error {
            ClusterError::BrickNotReady {
                id: 1, log_tail, ..
            } => assert!(log_tail.contains("still-starting")),
            other => panic!("expected a readiness timeout, got {other}"),
        }
        let pid: u32 = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(!alive(pid), "the brick that was never ready still runs");
    }

    #[test]
    fn a_brick_that_ignores_sigterm_gets_sigkill() {
        let dir = tempfile::tempdir().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let path = write_config(dir.path(), &[listener.local_addr().unwrap()]);
        let options = LaunchOptions {
            stop_timeout: Duration::from_millis(200),
            ..quick()
        };
        // An ignored signal stays ignored across exec, so `sleep` ignores
        // SIGTERM. The test's listener makes the brick "ready" at once, so
        // wait until the shell has set the trap before stopping it.
        let marker = dir.path().join("trapped");
        let script = format!("trap '' TERM; touch {}; exec sleep 30", marker.display());
        let cluster = LocalCluster::start_with(&path, &shell(&script), options).unwrap();
        let pid = cluster.pids()[0];
        let deadline = Instant::now() + Duration::from_secs(5);
        while !marker.exists() {
            assert!(
                Instant::now() < deadline,
                "the fake brick never set its trap"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let stopping = Instant::now();
        drop(cluster);
        let took = stopping.elapsed();
        assert!(
            took >= Duration::from_millis(200),
            "killed before the grace period: {took:?}"
        );
        assert!(took < Duration::from_secs(2), "{took:?}");
        assert!(!alive(pid));
    }

    #[test]
    fn refuses_an_address_something_already_listens_on() {
        let dir = tempfile::tempdir().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let path = write_config(dir.path(), &[address]);
        let marker = dir.path().join("ran");
        let script = format!("touch {}; exec sleep 30", marker.display());
        let options = LaunchOptions {
            refuse_busy_addresses: true,
            ..quick()
        };
        match LocalCluster::start_with(&path, &shell(&script), options) {
            Err(ClusterError::AddressInUse { id: 1, address: a }) => assert_eq!(a, address),
            Err(other) => panic!("expected address in use, got {other}"),
            Ok(_) => panic!("started on a busy address"),
        }
        assert!(
            !marker.exists(),
            "no brick may be started when an address is busy"
        );
    }
}
