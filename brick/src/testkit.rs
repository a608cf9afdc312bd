//! Support for tests that run real brick processes: a configuration written
//! to a temporary folder with addresses no other test uses, child processes
//! that are killed when their guard drops, readiness by polling with a
//! deadline, and the signals of fault tests (kill -9, SIGSTOP, SIGCONT).
//!
//! Used by the integration tests of `brick`, `ddslib` and `sim`; not part of
//! the daemon.

use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// How long a brick may take to start listening.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The brick executable: `$DDS_BRICK_BIN`, else `brick` in the cargo target
/// folder that holds the running test.
pub fn brick_binary() -> PathBuf {
    if let Ok(path) = std::env::var("DDS_BRICK_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test> → target/<profile>/brick
    let mut dir = exe
        .parent()
        .expect("test binary has a folder")
        .to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join("brick");
    assert!(
        path.exists(),
        "brick binary not found at {}; build it with `cargo build -p brick` (cargo test --workspace does)",
        path.display()
    );
    path
}

/// A loopback address block of its own for each cluster a test process
/// starts: 127.<a>.<b>.<brick> with `a` from the process id and `b` from a
/// counter, so concurrent tests and test binaries do not collide.
fn next_ip_prefix() -> (u8, u8) {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let a = 10 + (std::process::id() % 200) as u8;
    (a, (n % 250) as u8 + 1)
}

/// A free port on `ip`, found by binding port 0.
fn free_port(ip: &str) -> u16 {
    let listener = TcpListener::bind(format!("{ip}:0")).expect("bind a loopback address");
    listener.local_addr().unwrap().port()
}

/// Shape of a test cluster.
#[derive(Clone, Debug)]
pub struct ClusterSpec {
    pub bricks: u32,
    pub replicas: u32,
    pub partitions: u32,
    pub partition_capacity_mb: u64,
    pub request_ms: u64,
    pub prepare_ms: u64,
    pub lease_ms: u64,
    pub probe_ms: u64,
    pub retries_max: u32,
    pub heal_after_ms: u64,
    pub grace_ms: u64,
    pub copy_lease_ms: u64,
    pub copy_rate_mb_s: u64,
}

impl Default for ClusterSpec {
    fn default() -> Self {
        ClusterSpec {
            bricks: 3,
            replicas: 2,
            partitions: 4,
            partition_capacity_mb: 8,
            request_ms: 500,
            prepare_ms: 600,
            lease_ms: 600,
            probe_ms: 200,
            retries_max: 12,
            heal_after_ms: 30_000,
            grace_ms: 10_000,
            copy_lease_ms: 1000,
            copy_rate_mb_s: 0,
        }
    }
}

/// One brick process, killed (SIGKILL) when dropped.
pub struct BrickProcess {
    pub id: u32,
    pub addr: SocketAddr,
    child: Option<Child>,
    log: PathBuf,
}

impl BrickProcess {
    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }

    fn signal(&self, signal: i32) {
        if let Some(pid) = self.pid() {
            // SAFETY: kill(2) on a child we own.
            unsafe {
                libc::kill(pid, signal);
            }
        }
    }

    /// kill -9, and reap the process.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
    }

    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    /// SIGTERM, then wait up to `timeout` for a clean exit; returns whether
    /// it exited with status 0.
    pub fn terminate(&mut self, timeout: Duration) -> bool {
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + timeout;
        while let Some(child) = self.child.as_mut() {
            match child.try_wait() {
                Ok(Some(status)) => {
                    self.child = None;
                    return status.success();
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    self.kill();
                    return false;
                }
            }
        }
        false
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// The brick's log so far (stderr and stdout).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for BrickProcess {
    fn drop(&mut self) {
        self.signal(libc::SIGCONT);
        self.kill();
    }
}

/// A cluster of real brick processes on loopback addresses of its own, with
/// its configuration and data in a temporary folder removed on drop. A
/// test that fails (panics) while holding one prints the end of each
/// brick's log first, since the folder goes with the cluster.
pub struct TestCluster {
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub bricks: Vec<BrickProcess>,
    pub spec: ClusterSpec,
}

/// Lines of each brick's log that a failed test prints.
const FAILED_TEST_LOG_LINES: usize = 150;

impl Drop for TestCluster {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for brick in &self.bricks {
            let log = brick.log();
            let lines: Vec<&str> = log.lines().collect();
            let from = lines.len().saturating_sub(FAILED_TEST_LOG_LINES);
            eprintln!(
                "--- the last {} lines of brick {}'s log ---\n{}",
                lines.len() - from,
                brick.id,
                lines[from..].join("\n")
            );
        }
    }
}

impl TestCluster {
    /// Writes the configuration and starts every brick, waiting until each
    /// accepts connections.
    pub fn start(spec: ClusterSpec) -> TestCluster {
        let dir = tempfile::tempdir().expect("temporary folder");
        let (a, b) = next_ip_prefix();
        let mut toml = String::new();
        writeln!(
            toml,
            "[cluster]\nreplicas = {}\npartitions = {}\npartition_capacity_mb = {}\ndata_dir = \"data\"\n",
            spec.replicas, spec.partitions, spec.partition_capacity_mb
        )
        .unwrap();
        writeln!(
            toml,
            "[timeouts]\nrequest_ms = {}\nprepare_ms = {}\nlease_ms = {}\nprobe_ms = {}\nretries_max = {}\n",
            spec.request_ms, spec.prepare_ms, spec.lease_ms, spec.probe_ms, spec.retries_max
        )
        .unwrap();
        writeln!(
            toml,
            "[recovery]\nheal_after_ms = {}\ngrace_ms = {}\ncopy_lease_ms = {}\ncopy_rate_mb_s = {}\n",
            spec.heal_after_ms, spec.grace_ms, spec.copy_lease_ms, spec.copy_rate_mb_s
        )
        .unwrap();
        let mut addrs = Vec::new();
        for id in 1..=spec.bricks {
            let ip = format!("127.{a}.{b}.{id}");
            let port = free_port(&ip);
            let addr: SocketAddr = format!("{ip}:{port}").parse().unwrap();
            writeln!(toml, "[[brick]]\nid = {id}\naddress = \"{addr}\"\n").unwrap();
            addrs.push(addr);
        }
        let config_path = dir.path().join("cluster.toml");
        std::fs::write(&config_path, toml).expect("write cluster.toml");
        let mut cluster = TestCluster {
            dir,
            config_path,
            bricks: Vec::new(),
            spec,
        };
        for (i, addr) in addrs.into_iter().enumerate() {
            let brick = cluster.spawn(i as u32 + 1, addr);
            cluster.bricks.push(brick);
        }
        for i in 0..cluster.bricks.len() {
            cluster.wait_ready(i);
        }
        cluster
    }

    fn spawn(&self, id: u32, addr: SocketAddr) -> BrickProcess {
        let log = self.dir.path().join(format!("brick-{id}.log"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("open brick log");
        let child = Command::new(brick_binary())
            .arg("--config")
            .arg(&self.config_path)
            .arg("--id")
            .arg(id.to_string())
            .env(
                "RUST_LOG",
                std::env::var("BRICK_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("spawn brick");
        BrickProcess {
            id,
            addr,
            child: Some(child),
            log,
        }
    }

    /// Polls until brick `index` accepts a connection; panics with its log
    /// if it exits or the deadline passes.
    pub fn wait_ready(&mut self, index: usize) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let brick = &mut self.bricks[index];
            if TcpStream::connect_timeout(&brick.addr, Duration::from_millis(100)).is_ok() {
                return;
            }
            if !brick.is_running() {
                panic!(
                    "brick {} exited during start; its log:\n{}",
                    brick.id,
                    brick.log()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "brick {} did not listen within {START_TIMEOUT:?}; its log:\n{}",
                    brick.id,
                    brick.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts brick `index` again (after a kill or terminate) on the same
    /// address and data.
    pub fn restart(&mut self, index: usize) {
        let (id, addr) = (self.bricks[index].id, self.bricks[index].addr);
        self.bricks[index].kill();
        self.bricks[index] = self.spawn(id, addr);
        self.wait_ready(index);
    }

    /// Starts brick `index` again without waiting for it to listen (for a
    /// start that is expected to fail: see [`BrickProcess::is_running`]).
    pub fn spawn_again(&mut self, index: usize) {
        let (id, addr) = (self.bricks[index].id, self.bricks[index].addr);
        self.bricks[index].kill();
        self.bricks[index] = self.spawn(id, addr);
    }

    /// The data folder of brick `id`.
    pub fn data_dir(&self, id: u32) -> PathBuf {
        self.dir.path().join("data").join(format!("brick-{id}"))
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }
}
