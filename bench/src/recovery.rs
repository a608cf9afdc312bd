//! `bench --recovery`: how fast a partition is copied to a brick that comes
//! back, and what the copy costs the clients meanwhile.
//!
//! One run, on one machine:
//!
//! 1. **Baseline**: the loopback bulk TCP rate — one thread writes 1 GiB in
//!    1 MiB writes to another that reads it — the most any copy between two
//!    processes on this machine could reach. It is measured again (256 MiB)
//!    while the clients' load runs, just before the fault, to tell a slow
//!    copy from a busy machine.
//! 2. A local cluster of three bricks, two replicas, **one partition** (on
//!    bricks 1 and 2), filled with about 100 MiB of 150-byte values.
//! 3. Readers and writers run against it; brick 2 is killed (SIGKILL), the
//!    survivor removes it, writes go on, brick 2 is started again and brick
//!    1 copies the whole partition to it (`grace_ms = 0`: always in full).
//!    This is one round; `rounds` of them run in turn, each after its own
//!    measure of the bulk rate under the load, because one copy's ratio
//!    moves a lot with what else the two cores are doing at that moment.
//! 4. Reported: each round's copy bytes, time and rate (from brick 1's
//!    stats) next to the bulk rate, and how long brick 1 held the
//!    partition's writes; the median of the rounds' ratios; over all
//!    rounds, the longest write as seen by a client from the moment brick
//!    2 accepts connections again (its start-up done; the copy begins at
//!    brick 1's next probe of it, up to a second later) to its joining the
//!    group: the whole copy, its write lease and the vote on adding brick
//!    2. Also the longest write from brick 2's restart on, which adds the
//!    restarted process's scan of its old arena (100 MiB read, checked and
//!    indexed in about 0.3 s), a cost to the clients here only because
//!    every brick shares this machine's two cores; and the reads and
//!    writes done and failed meanwhile.
//! 5. For reference, with the clients stopped: brick 2 is killed and
//!    restarted once more, and that copy's time and rate are reported, the
//!    copy's own cost without the clients' share of the cores.
//!
//! Targets (issue "recovery"): copy rate ≥ 50% of the bulk rate, longest
//! write stall ≤ 10 ms, no failed read.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ddslib::{Dds, Op};
use maps::BrickId;
use wire::{Reply, Request};

use crate::cluster::{find_brick_binary, LocalCluster};
use crate::error::BenchError;

/// One copy under load.
#[derive(Clone, Debug, Default)]
pub struct CopyRound {
    /// The bulk transfer (256 MiB) while the clients' load runs, just
    /// before the fault: what the copy competes with for the cores.
    pub loaded_bulk_bytes_per_s: f64,
    pub copy_bytes: u64,
    pub copy_ms: u64,
    /// How long the source held the partition's writes.
    pub write_lease_us: u64,
}

impl CopyRound {
    pub fn copy_bytes_per_s(&self) -> f64 {
        self.copy_bytes as f64 / (self.copy_ms.max(1) as f64 / 1000.0)
    }

    /// The copy's rate over the bulk rate under the same load.
    pub fn loaded_ratio(&self) -> f64 {
        self.copy_bytes_per_s() / self.loaded_bulk_bytes_per_s.max(1.0)
    }
}

/// What one recovery run measured.
#[derive(Clone, Debug, Default)]
pub struct RecoveryReport {
    pub bulk_bytes_per_s: f64,
    pub keys: u64,
    /// The copies under load, in the order they ran.
    pub rounds: Vec<CopyRound>,
    /// The same copy again once the load has stopped (brick 2 killed and
    /// restarted a second time): what the copy itself costs, without the
    /// clients' share of the two cores.
    pub idle_copy_bytes: u64,
    pub idle_copy_ms: u64,
    /// The longest a client write took while the brick was recovering:
    /// from its restart (which loads its old data) to its joining.
    pub longest_write_us: u64,
    /// The longest client write that began once the returning brick
    /// accepted connections, its start-up done, and ended by its joining:
    /// the copy (which begins only after that), its write lease and the
    /// vote, without the restarted process's scan of its old arena, which
    /// competes with the clients here only because every brick shares
    /// this machine's cores.
    pub longest_ready_write_us: u64,
    /// Rounds whose copy had begun before the bench saw the returning
    /// brick listen: their first writes of the copy count only in
    /// `longest_write_us`.
    pub copies_begun_before_ready: u64,
    /// The longest time between two completed writes in that window.
    pub longest_write_gap_us: u64,
    /// The longest client write in one second of the same load before the
    /// fault: what scheduling on a shared machine costs without a copy.
    pub baseline_longest_write_us: u64,
    pub reads: u64,
    pub failed_reads: u64,
    pub writes: u64,
    pub failed_writes: u64,
    pub first_errors: Vec<String>,
}

impl RecoveryReport {
    /// The median of the rounds' ratios to the bulk rate under the same
    /// load (the lower middle one for an even count); 0 with no round.
    pub fn median_loaded_ratio(&self) -> f64 {
        let mut ratios: Vec<f64> = self.rounds.iter().map(CopyRound::loaded_ratio).collect();
        ratios.sort_by(f64::total_cmp);
        match ratios.len() {
            0 => 0.0,
            n => ratios[(n - 1) / 2],
        }
    }

    pub fn idle_copy_bytes_per_s(&self) -> f64 {
        self.idle_copy_bytes as f64 / (self.idle_copy_ms.max(1) as f64 / 1000.0)
    }

    /// The copy's rate with no load over the idle bulk rate.
    pub fn idle_ratio(&self) -> f64 {
        self.idle_copy_bytes_per_s() / self.bulk_bytes_per_s.max(1.0)
    }

    pub fn to_json(&self) -> String {
        let rounds: Vec<serde_json::Value> = self
            .rounds
            .iter()
            .map(|r| {
                serde_json::json!({
                    "loaded_bulk_tcp_mib_per_s": mib(r.loaded_bulk_bytes_per_s),
                    "copy_bytes": r.copy_bytes,
                    "copy_ms": r.copy_ms,
                    "copy_mib_per_s": mib(r.copy_bytes_per_s()),
                    "copy_to_loaded_bulk_ratio": r.loaded_ratio(),
                    "write_lease_us": r.write_lease_us,
                })
            })
            .collect();
        serde_json::json!({
            "bulk_tcp_mib_per_s": mib(self.bulk_bytes_per_s),
            "keys": self.keys,
            "rounds": rounds,
            "median_copy_to_loaded_bulk_ratio": self.median_loaded_ratio(),
            "idle_copy_bytes": self.idle_copy_bytes,
            "idle_copy_ms": self.idle_copy_ms,
            "idle_copy_mib_per_s": mib(self.idle_copy_bytes_per_s()),
            "idle_copy_to_bulk_ratio": self.idle_ratio(),
            "longest_write_us": self.longest_write_us,
            "longest_ready_write_us": self.longest_ready_write_us,
            "copies_begun_before_ready": self.copies_begun_before_ready,
            "longest_write_gap_us": self.longest_write_gap_us,
            "baseline_longest_write_us": self.baseline_longest_write_us,
            "reads": self.reads,
            "failed_reads": self.failed_reads,
            "writes": self.writes,
            "failed_writes": self.failed_writes,
            "first_errors": self.first_errors,
        })
        .to_string()
    }
}

impl std::fmt::Display for RecoveryReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "recovery of one partition ({} keys × 150 B) under load",
            self.keys
        )?;
        writeln!(
            f,
            "loopback bulk TCP     {:>10.0} MiB/s idle",
            mib(self.bulk_bytes_per_s)
        )?;
        for (i, r) in self.rounds.iter().enumerate() {
            writeln!(
                f,
                "copy, round {}         {:>10} bytes in {} ms: {:.0} MiB/s; bulk TCP under the same load {:.0} MiB/s: {:.2}x; writes held {:.2} ms",
                i + 1,
                r.copy_bytes,
                r.copy_ms,
                mib(r.copy_bytes_per_s()),
                mib(r.loaded_bulk_bytes_per_s),
                r.loaded_ratio(),
                r.write_lease_us as f64 / 1000.0
            )?;
        }
        writeln!(
            f,
            "copy rate / bulk rate {:>10.2}x under the same load, median of {} rounds (target >= 0.5)",
            self.median_loaded_ratio(),
            self.rounds.len()
        )?;
        writeln!(
            f,
            "longest write         {:>10.2} ms from the returning brick's start-up to its join: \
             the copy, its write lease and the vote (target <= 10; over all rounds)",
            self.longest_ready_write_us as f64 / 1000.0,
        )?;
        if self.copies_begun_before_ready > 0 {
            writeln!(
                f,
                "  (in {} rounds the copy began before the bench saw the brick listen: \
                 the line below counts their first writes)",
                self.copies_begun_before_ready
            )?;
        }
        writeln!(
            f,
            "  from the restart    {:>10.2} ms (with the restarted brick's scan of its old arena \
             on the same cores); longest gap between writes {:.2} ms",
            self.longest_write_us as f64 / 1000.0,
            self.longest_write_gap_us as f64 / 1000.0
        )?;
        writeln!(
            f,
            "  same load, no copy  {:>10.2} ms (the longest write in 1 s before the fault)",
            self.baseline_longest_write_us as f64 / 1000.0
        )?;
        writeln!(
            f,
            "during the recoveries {} reads ({} failed, target 0), {} writes ({} failed)",
            self.reads, self.failed_reads, self.writes, self.failed_writes
        )?;
        for e in &self.first_errors {
            writeln!(f, "  error: {e}")?;
        }
        writeln!(
            f,
            "copy with no load     {:>10} bytes in {} ms: {:.0} MiB/s, {:.2}x bulk idle (for reference)",
            self.idle_copy_bytes,
            self.idle_copy_ms,
            mib(self.idle_copy_bytes_per_s()),
            self.idle_ratio()
        )?;
        Ok(())
    }
}

fn mib(bytes_per_s: f64) -> f64 {
    bytes_per_s / 1048576.0
}

/// Bytes sent through one loopback TCP connection per second, 1 MiB writes.
pub fn bulk_tcp_rate(total: u64) -> Result<f64, BenchError> {
    let io = |what: &str, e: std::io::Error| BenchError::Config(format!("bulk TCP {what}: {e}"));
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| io("bind", e))?;
    let addr = listener.local_addr().map_err(|e| io("address", e))?;
    let sender = std::thread::spawn(move || -> std::io::Result<()> {
        let mut stream = TcpStream::connect(addr)?;
        let buf = vec![0x5au8; 1 << 20];
        let mut sent = 0;
        while sent < total {
            stream.write_all(&buf)?;
            sent += buf.len() as u64;
        }
        Ok(())
    });
    let (mut stream, _) = listener.accept().map_err(|e| io("accept", e))?;
    let started = Instant::now();
    let mut buf = vec![0u8; 1 << 20];
    let mut received = 0u64;
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => received += n as u64,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io("read", e)),
        }
    }
    let took = started.elapsed();
    sender
        .join()
        .map_err(|_| BenchError::Config("bulk TCP sender panicked".to_string()))?
        .map_err(|e| io("write", e))?;
    Ok(received as f64 / took.as_secs_f64())
}

/// A free port on 127.0.0.1, found by binding port 0.
fn free_port() -> Result<u16, BenchError> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .map_err(|e| BenchError::Config(format!("no free loopback port: {e}")))?;
    Ok(listener
        .local_addr()
        .map_err(|e| BenchError::Config(e.to_string()))?
        .port())
}

/// Writes the run's cluster configuration into `dir`; `rate_mb_s` caps the
/// copy (0: no cap).
fn write_config(dir: &Path, rate_mb_s: u64) -> Result<PathBuf, BenchError> {
    let mut text = format!(
        "[cluster]\nreplicas = 2\npartitions = 1\npartition_capacity_mb = 160\ndata_dir = \"data\"\n\n\
         [recovery]\nheal_after_ms = 600000\ngrace_ms = 0\ncopy_lease_ms = 1000\ncopy_rate_mb_s = {rate_mb_s}\n\n",
    );
    for id in 1..=3 {
        let address = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        text.push_str(&format!(
            "[[brick]]\nid = {id}\naddress = \"{address}\"\n\n"
        ));
    }
    let path = dir.join("cluster.toml");
    std::fs::write(&path, text)
        .map_err(|e| BenchError::Config(format!("write {}: {e}", path.display())))?;
    Ok(path)
}

fn value_of(i: u64) -> Vec<u8> {
    let mut value = format!("value-{i}-").into_bytes();
    value.resize(150, b'.');
    value
}

fn key_of(i: u64) -> Vec<u8> {
    i.to_be_bytes().to_vec()
}

fn dds_error(e: ddslib::DdsError) -> BenchError {
    BenchError::Config(format!("ddslib: {e}"))
}

/// Writes keys `0..keys` with 150-byte values, many in flight.
fn preload(dds: &mut Dds, keys: u64) -> Result<(), BenchError> {
    let (mut submitted, mut completed) = (0, 0);
    let mut done = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(600);
    while completed < keys {
        if Instant::now() > deadline {
            return Err(BenchError::Config(
                "preload took over 10 minutes".to_string(),
            ));
        }
        while submitted < keys && dds.in_flight() < 400 {
            dds.submit(Op::Put {
                table: b"bench".to_vec(),
                key: key_of(submitted),
                value: value_of(submitted),
            })
            .map_err(dds_error)?;
            submitted += 1;
        }
        done.clear();
        dds.poll(&mut done, Duration::from_millis(100))
            .map_err(dds_error)?;
        for (_, result) in &done {
            if let Err(e) = result {
                return Err(BenchError::Config(format!("preload write failed: {e}")));
            }
        }
        completed += done.len() as u64;
    }
    Ok(())
}

fn stats(dds: &mut Dds, brick: u32) -> BTreeMap<String, u64> {
    match dds.call(BrickId(brick), Request::Stats, Duration::from_secs(2)) {
        Ok(Reply::Stats(entries)) => entries.into_iter().collect(),
        _ => BTreeMap::new(),
    }
}

/// Polls `f` every 20 ms until it holds or `timeout` passes.
fn wait_for(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) -> Result<(), BenchError> {
    let deadline = Instant::now() + timeout;
    while !f() {
        if Instant::now() > deadline {
            return Err(BenchError::Config(format!("timed out waiting for {what}")));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Kills brick 2 again with the clients stopped, has brick 1 remove it
/// (a write every 20 ms meanwhile, so that it notices), restarts it, and
/// returns the bytes and milliseconds of that copy, brick 1's `nth`.
fn copy_without_load(
    cluster: &mut LocalCluster,
    dds: &mut Dds,
    nth: u64,
    step: &dyn Fn(&str),
) -> Result<(u64, u64), BenchError> {
    step("killing brick 2 again, with no load; brick 1 copies the partition again");
    cluster.kill(2);
    let mut i = 0;
    wait_for(
        Duration::from_secs(30),
        "brick 1 to remove brick 2 again",
        || {
            i += 1;
            let _ = dds.put("bench", &key_of(i), &value_of(i));
            stats(dds, 1).get("exclusions").is_some_and(|n| *n >= nth)
        },
    )?;
    cluster.restart(2)?;
    wait_for(
        Duration::from_secs(300),
        "the second copy to finish",
        || {
            stats(dds, 1)
                .get("copies_finished")
                .is_some_and(|n| *n >= nth)
        },
    )?;
    let source = stats(dds, 1);
    Ok((
        source.get("last_copy_bytes").copied().unwrap_or(0),
        source.get("last_copy_ms").copied().unwrap_or(0),
    ))
}

/// Which window the client threads count in.
const IDLE: u8 = 0;
const BASELINE: u8 = 1;
const RECOVERY: u8 = 2;

/// A write during a recovery that takes longer than this is logged (at
/// debug level, `RUST_LOG=bench=debug`), with its end time in the line.
const SLOW_WRITE: Duration = Duration::from_millis(5);

/// What the client threads saw in one window.
#[derive(Default)]
struct Seen {
    reads: u64,
    failed_reads: u64,
    writes: u64,
    failed_writes: u64,
    longest_write: Duration,
    longest_ready_write: Duration,
    longest_gap: Duration,
    errors: Vec<String>,
}

fn note_error(seen: &Mutex<Seen>, error: String) {
    let mut seen = seen.lock().unwrap();
    if seen.errors.len() < 5 {
        seen.errors.push(error);
    }
}

/// Runs the whole recovery benchmark; `keys` values of 150 bytes fill the
/// partition, `rate_mb_s` caps the copy's rate (0: no cap), and `rounds`
/// copies run under load (at least one).
pub fn run(
    keys: u64,
    rate_mb_s: u64,
    rounds: usize,
    show_steps: bool,
) -> Result<RecoveryReport, BenchError> {
    let rounds = rounds.max(1);
    let step = |text: &str| {
        if show_steps {
            eprintln!("recovery: {text}");
        }
    };
    step("measuring the loopback bulk TCP rate");
    let bulk = bulk_tcp_rate(1 << 30)?;

    let dir = std::env::temp_dir().join(format!("dds-recovery-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)
        .map_err(|e| BenchError::Config(format!("create {}: {e}", dir.display())))?;
    let result = run_in(&dir, keys, rate_mb_s, rounds, bulk, &step);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn run_in(
    dir: &Path,
    keys: u64,
    rate_mb_s: u64,
    rounds: usize,
    bulk: f64,
    step: &dyn Fn(&str),
) -> Result<RecoveryReport, BenchError> {
    let config = write_config(dir, rate_mb_s)?;
    let mut cluster = LocalCluster::start(&config, &find_brick_binary()?)?;
    let mut dds = Dds::connect_config(&config).map_err(dds_error)?;
    dds.create_table("bench").map_err(dds_error)?;
    step(&format!("preloading {keys} keys"));
    preload(&mut dds, keys)?;

    let stop = Arc::new(AtomicBool::new(false));
    let window = Arc::new(AtomicU8::new(IDLE));
    // Set once the restarted brick accepts connections, until its join.
    let ready = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let baseline = Arc::new(Mutex::new(Seen::default()));
    let mut threads = Vec::new();
    for t in 0..4u64 {
        let (config, stop, window, ready, recovery_seen, baseline) = (
            config.clone(),
            Arc::clone(&stop),
            Arc::clone(&window),
            Arc::clone(&ready),
            Arc::clone(&seen),
            Arc::clone(&baseline),
        );
        let writer = t % 2 == 1;
        threads.push(std::thread::spawn(move || {
            let Ok(mut dds) = Dds::connect_config(&config) else {
                note_error(&recovery_seen, "a client could not connect".to_string());
                return;
            };
            let mut i = t;
            let mut last_write = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                let key = key_of((i * 7919) % keys);
                i += 1;
                let began_ready = ready.load(Ordering::Relaxed);
                let started = Instant::now();
                let result = if writer {
                    dds.put("bench", &key, &value_of(i)).err()
                } else {
                    dds.get("bench", &key).err()
                };
                let now = Instant::now();
                let seen = match window.load(Ordering::Relaxed) {
                    BASELINE => &baseline,
                    RECOVERY => &recovery_seen,
                    _ => {
                        last_write = now;
                        continue;
                    }
                };
                let mut s = seen.lock().unwrap();
                match (writer, result) {
                    (false, None) => s.reads += 1,
                    (false, Some(e)) => {
                        s.failed_reads += 1;
                        drop(s);
                        note_error(seen, format!("read: {e}"));
                    }
                    (true, None) => {
                        if now - started > SLOW_WRITE {
                            // The log line's time is the write's end.
                            log::debug!("a write took {:?}", now - started);
                        }
                        s.writes += 1;
                        s.longest_write = s.longest_write.max(now - started);
                        if began_ready {
                            s.longest_ready_write = s.longest_ready_write.max(now - started);
                        }
                        s.longest_gap = s.longest_gap.max(now - last_write);
                        last_write = now;
                    }
                    (true, Some(e)) => {
                        s.failed_writes += 1;
                        drop(s);
                        note_error(seen, format!("write: {e}"));
                    }
                }
            }
        }));
    }

    std::thread::sleep(Duration::from_millis(300));
    window.store(BASELINE, Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs(1));
    window.store(IDLE, Ordering::Relaxed);
    let mut copies = Vec::new();
    let mut copies_begun_before_ready = 0;
    for round in 1..=rounds as u64 {
        step(&format!(
            "round {round}: measuring the loopback bulk TCP rate under the same load"
        ));
        let loaded_bulk = bulk_tcp_rate(256 << 20)?;
        step(&format!("round {round}: killing brick 2 (SIGKILL)"));
        cluster.kill(2);
        wait_for(Duration::from_secs(30), "brick 1 to remove brick 2", || {
            stats(&mut dds, 1)
                .get("exclusions")
                .is_some_and(|n| *n >= round)
        })?;
        // Writes go on without brick 2, so its data is out of date.
        std::thread::sleep(Duration::from_millis(500));
        step(&format!(
            "round {round}: restarting brick 2; brick 1 copies the partition to it"
        ));
        window.store(RECOVERY, Ordering::Relaxed);
        cluster.restart(2)?;
        ready.store(true, Ordering::Relaxed);
        // The copy begins at brick 1's next probe of brick 2 (once a
        // second), so almost always after the bench sees brick 2 listen
        // (polled every 20 ms); a round where it did not is reported.
        if stats(&mut dds, 1)
            .get("copies_started")
            .is_some_and(|n| *n >= round)
        {
            copies_begun_before_ready += 1;
        }
        wait_for(Duration::from_secs(300), "the copy to start", || {
            stats(&mut dds, 1)
                .get("copies_started")
                .is_some_and(|n| *n >= round)
        })?;
        wait_for(Duration::from_secs(300), "the copy to finish", || {
            stats(&mut dds, 1)
                .get("copies_finished")
                .is_some_and(|n| *n >= round)
        })?;
        // Clients on the new membership for a moment.
        std::thread::sleep(Duration::from_millis(300));
        ready.store(false, Ordering::Relaxed);
        window.store(IDLE, Ordering::Relaxed);
        let source = stats(&mut dds, 1);
        copies.push(CopyRound {
            loaded_bulk_bytes_per_s: loaded_bulk,
            copy_bytes: source.get("last_copy_bytes").copied().unwrap_or(0),
            copy_ms: source.get("last_copy_ms").copied().unwrap_or(0),
            write_lease_us: source.get("last_write_lease_us").copied().unwrap_or(0),
        });
    }
    stop.store(true, Ordering::Relaxed);
    for thread in threads {
        let _ = thread.join();
    }
    let seen = seen.lock().unwrap();
    let baseline = baseline.lock().unwrap();
    let (idle_copy_bytes, idle_copy_ms) =
        copy_without_load(&mut cluster, &mut dds, rounds as u64 + 1, &step)?;
    drop(cluster);
    Ok(RecoveryReport {
        bulk_bytes_per_s: bulk,
        keys,
        rounds: copies,
        idle_copy_bytes,
        idle_copy_ms,
        longest_write_us: seen.longest_write.as_micros() as u64,
        longest_ready_write_us: seen.longest_ready_write.as_micros() as u64,
        copies_begun_before_ready,
        longest_write_gap_us: seen.longest_gap.as_micros() as u64,
        baseline_longest_write_us: baseline.longest_write.as_micros() as u64,
        reads: seen.reads,
        failed_reads: seen.failed_reads,
        writes: seen.writes,
        failed_writes: seen.failed_writes,
        first_errors: seen.errors.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A round whose copy ran at `ratio` of a 1,000-byte/s bulk rate.
    fn round(ratio: f64) -> CopyRound {
        CopyRound {
            loaded_bulk_bytes_per_s: 1000.0,
            copy_bytes: (ratio * 1000.0) as u64,
            copy_ms: 1000,
            write_lease_us: 0,
        }
    }

    #[test]
    fn the_median_ratio_is_the_middle_round_or_the_lower_middle_one() {
        let report = |ratios: &[f64]| RecoveryReport {
            rounds: ratios.iter().copied().map(round).collect(),
            ..RecoveryReport::default()
        };
        assert_eq!(report(&[]).median_loaded_ratio(), 0.0);
        assert_eq!(report(&[0.3]).median_loaded_ratio(), 0.3);
        assert_eq!(report(&[0.5, 0.3, 0.4]).median_loaded_ratio(), 0.4);
        assert_eq!(report(&[0.6, 0.2]).median_loaded_ratio(), 0.2);
        let text = report(&[0.5, 0.3, 0.4]).to_string();
        assert!(text.contains("copy, round 3"), "{text}");
        assert!(
            text.contains("0.40x under the same load, median of 3 rounds"),
            "{text}"
        );
        let json: serde_json::Value = serde_json::from_str(&report(&[0.5]).to_json()).unwrap();
        assert_eq!(json["rounds"].as_array().map(Vec::len), Some(1));
        assert_eq!(json["median_copy_to_loaded_bulk_ratio"], 0.5);
    }
}
