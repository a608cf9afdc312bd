//! The closed loop, generic over the system under test.
//!
//! A target (`Target`) opens one `Service` per service thread; each service
//! keeps `outstanding` operations in flight and issues a new one as soon as
//! one completes, as the load generators of the DDS paper did. This module
//! times the operations into one histogram per service, counts outcomes,
//! runs the preload, and prints the progress line; it knows nothing about
//! any protocol. Targets live in their own modules (`redis.rs`), and the
//! report's shape in `report.rs`.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::error::BenchError;
use crate::keys::{value_of_size, KeyDist, KeyGen, Mix, OpSource};
use crate::limits::{
    DRAIN_TIMEOUT, DURATION_S_MAX, IN_FLIGHT_BYTES_MAX, KEYS_MAX, LATENCY_US_MAX, OUTSTANDING_MAX,
    POLL_INTERVAL, SERVICES_MAX, STALL_TIMEOUT, VALUE_SIZE_MAX,
};
use crate::report::{MemoryReport, PreloadReport, Report};

/// One operation on a key id; targets turn the id into bytes with
/// `keys::key_bytes`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Read the value of a key.
    Get(u64),
    /// Replace the value of a key. The value is shared by every put of a
    /// service, so issuing one costs no copy.
    Put(u64, Arc<[u8]>),
}

impl Op {
    /// The key id the operation is on.
    pub fn key(&self) -> u64 {
        match self {
            Op::Get(key) | Op::Put(key, _) => *key,
        }
    }
}

/// How one operation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Done: a read found its value or a write took effect.
    Ok,
    /// A read found no value for its key.
    NotFound,
    /// The target refused or failed the operation; the kind names why in a
    /// few words (`server_error`, `unexpected_reply`) and is what the report
    /// counts by.
    Error(&'static str),
}

/// One finished operation, named by the tag it was submitted with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Completion {
    pub tag: u64,
    pub outcome: Outcome,
}

/// One connection or handle to the system under test, driven by one thread.
///
/// The driver calls `submit` for every operation it can issue, then `poll`;
/// an implementation should buffer what `submit` gives it and send it all at
/// once at the start of `poll`, so a batch costs one write.
pub trait Service: Send {
    /// Issues one operation; `tag` comes back with its completion. Tags of
    /// operations in flight are distinct and below the `outstanding` count.
    fn submit(&mut self, op: Op, tag: u64) -> Result<(), BenchError>;

    /// Waits until at least one operation completes or `timeout` passes, and
    /// pushes the completions to `out`. An error ends the service's run and
    /// the whole bench: keep operation failures in `Outcome::Error`.
    fn poll(&mut self, out: &mut Vec<Completion>, timeout: Duration) -> Result<(), BenchError>;
}

/// A system under test: opens services and reports what it can about itself.
pub trait Target {
    /// A short name for reports: `redis`, `dds`.
    fn name(&self) -> &str;

    /// Opens one service, with its own connection.
    fn connect(&self) -> Result<Box<dyn Service>, BenchError>;

    /// Bytes of memory the server uses for data, if it can tell. Asked
    /// before and after the preload.
    fn used_memory_bytes(&self) -> Result<Option<u64>, BenchError> {
        Ok(None)
    }
}

/// The shape of one run.
#[derive(Clone, Debug)]
pub struct LoadConfig {
    /// Service threads, each with its own connection.
    pub services: usize,
    /// Operations each service keeps in flight.
    pub outstanding: usize,
    /// Bytes of every value written.
    pub value_size: usize,
    /// Key ids are `0..keys`.
    pub keys: u64,
    pub mix: Mix,
    pub dist: KeyDist,
    /// Write every key once before the warmup.
    pub preload: bool,
    /// Load that runs before the measurement and is not counted.
    pub warmup: Duration,
    /// The measured stretch.
    pub duration: Duration,
    /// Fixes every random choice of the run.
    pub seed: u64,
    /// A service with operations in flight and no completion for this long
    /// fails the run.
    pub stall_timeout: Duration,
    /// How long services may take, after the measurement, to finish what is
    /// in flight.
    pub drain_timeout: Duration,
}

impl Default for LoadConfig {
    /// The paper's shape: 4 services, 100 outstanding each, 150-byte values.
    fn default() -> LoadConfig {
        LoadConfig {
            services: 4,
            outstanding: 100,
            value_size: 150,
            keys: 100_000,
            mix: Mix::Read,
            dist: KeyDist::Uniform,
            preload: true,
            warmup: Duration::from_secs(2),
            duration: Duration::from_secs(10),
            seed: 1,
            stall_timeout: STALL_TIMEOUT,
            drain_timeout: DRAIN_TIMEOUT,
        }
    }
}

impl LoadConfig {
    /// Checks every field against its limit.
    pub fn validate(&self) -> Result<(), BenchError> {
        let problem = |text: String| Err(BenchError::Config(text));
        if !(1..=SERVICES_MAX).contains(&self.services) {
            return problem(format!(
                "services must be 1 to {SERVICES_MAX}, not {}",
                self.services
            ));
        }
        if !(1..=OUTSTANDING_MAX).contains(&self.outstanding) {
            return problem(format!(
                "outstanding must be 1 to {OUTSTANDING_MAX}, not {}",
                self.outstanding
            ));
        }
        if self.value_size > VALUE_SIZE_MAX {
            return problem(format!(
                "value size must be at most {VALUE_SIZE_MAX} bytes, not {}",
                self.value_size
            ));
        }
        if self.outstanding.saturating_mul(self.value_size) > IN_FLIGHT_BYTES_MAX {
            return problem(format!(
                "outstanding x value size must be at most {IN_FLIGHT_BYTES_MAX} bytes, not {}",
                self.outstanding.saturating_mul(self.value_size)
            ));
        }
        if !(1..=KEYS_MAX).contains(&self.keys) {
            return problem(format!("keys must be 1 to {KEYS_MAX}, not {}", self.keys));
        }
        let duration_max = Duration::from_secs(DURATION_S_MAX);
        if self.warmup > duration_max || self.duration > duration_max {
            return problem(format!(
                "warmup and duration must be at most {DURATION_S_MAX} s"
            ));
        }
        if self.duration.is_zero() {
            return problem("duration must be more than zero".to_string());
        }
        if self.stall_timeout.is_zero() || self.stall_timeout > duration_max {
            return problem(
                "the stall timeout must be more than zero and at most a day".to_string(),
            );
        }
        if self.drain_timeout > duration_max {
            return problem("the drain timeout must be at most a day".to_string());
        }
        Ok(())
    }
}

/// Counters the service threads share with the progress line.
#[derive(Default)]
pub struct Progress {
    /// Operations served (Ok or NotFound) since the phase began, measured or not.
    pub served: AtomicU64,
    /// Operations that ended in `Outcome::Error`.
    pub errors: AtomicU64,
    /// Set when one service fails, so that the others stop early.
    pub abort: AtomicBool,
}

/// When a service issues and which completions it counts.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    /// Completions before this are not measured (the warmup).
    pub measure_from: Instant,
    /// No operation is issued from here on, and completions from here on are
    /// not measured. `None`: run until the source is exhausted.
    pub stop_at: Option<Instant>,
    pub stall_timeout: Duration,
    pub drain_timeout: Duration,
}

/// What one service measured.
pub struct ServiceStats {
    /// Latency in microseconds of every measured served operation.
    pub histogram: Histogram<u64>,
    /// Measured reads served (found or not).
    pub reads: u64,
    /// Measured writes served.
    pub writes: u64,
    /// Measured reads that found no value.
    pub not_found: u64,
    /// Measured operations that failed, by kind.
    pub errors: BTreeMap<&'static str, u64>,
    /// Operations submitted, measured or not.
    pub issued: u64,
    /// Operations completed, measured or not.
    pub completed: u64,
    /// Operations still in flight when the drain timed out.
    pub unfinished: u64,
    /// Most operations in flight at once.
    pub outstanding_peak: usize,
}

impl ServiceStats {
    fn new() -> ServiceStats {
        ServiceStats {
            histogram: new_histogram(),
            reads: 0,
            writes: 0,
            not_found: 0,
            errors: BTreeMap::new(),
            issued: 0,
            completed: 0,
            unfinished: 0,
            outstanding_peak: 0,
        }
    }

    /// Adds another service's figures to these.
    pub fn merge(&mut self, other: &ServiceStats) {
        // Both histograms have the same bounds, so adding cannot fail.
        self.histogram
            .add(&other.histogram)
            .expect("histograms of equal bounds");
        self.reads += other.reads;
        self.writes += other.writes;
        self.not_found += other.not_found;
        for (kind, count) in &other.errors {
            *self.errors.entry(kind).or_insert(0) += count;
        }
        self.issued += other.issued;
        self.completed += other.completed;
        self.unfinished += other.unfinished;
        self.outstanding_peak = self.outstanding_peak.max(other.outstanding_peak);
    }

    /// Measured operations served.
    pub fn served(&self) -> u64 {
        self.reads + self.writes
    }
}

/// An empty latency histogram: 1 µs to `LATENCY_US_MAX`, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).expect("constant bounds are valid")
}

/// An operation in flight: when it was issued and whether it reads.
#[derive(Clone, Copy)]
struct InFlight {
    issued_at: Instant,
    read: bool,
}

/// Runs one service's closed loop: keeps up to `outstanding` operations from
/// `source` in flight until the source ends or `window.stop_at`, then waits
/// for the rest up to the drain timeout.
pub fn drive(
    service: &mut dyn Service,
    source: &mut OpSource,
    outstanding: usize,
    window: Window,
    progress: &Progress,
) -> Result<ServiceStats, BenchError> {
    assert!((1..=OUTSTANDING_MAX).contains(&outstanding));
    let mut stats = ServiceStats::new();
    // Tags are slot indexes: a slot is busy while its operation is in flight.
    let mut slots: Vec<Option<InFlight>> = vec![None; outstanding];
    let mut free: Vec<u64> = (0..outstanding as u64).rev().collect();
    let mut completions: Vec<Completion> = Vec::with_capacity(outstanding);
    let mut source_done = false;
    let mut last_completion_at = Instant::now();
    let mut drain_deadline: Option<Instant> = None;

    loop {
        let now = Instant::now();
        if progress.abort.load(Ordering::Relaxed) {
            break;
        }
        let stopping = window.stop_at.is_some_and(|stop| now >= stop);
        if stopping && drain_deadline.is_none() {
            drain_deadline = Some(now + window.drain_timeout);
        }
        if !stopping && !source_done {
            while let Some(&tag) = free.last() {
                let Some(op) = source.next_op() else {
                    source_done = true;
                    break;
                };
                free.pop();
                let read = matches!(op, Op::Get(_));
                slots[tag as usize] = Some(InFlight {
                    issued_at: Instant::now(),
                    read,
                });
                service.submit(op, tag)?;
                stats.issued += 1;
            }
        }
        let in_flight = outstanding - free.len();
        assert!(
            in_flight <= outstanding,
            "more operations in flight than slots"
        );
        stats.outstanding_peak = stats.outstanding_peak.max(in_flight);
        if in_flight == 0 && (source_done || stopping) {
            break;
        }
        if let Some(deadline) = drain_deadline {
            if now >= deadline {
                stats.unfinished = in_flight as u64;
                break;
            }
        }
        if in_flight > 0 && now.duration_since(last_completion_at) >= window.stall_timeout {
            return Err(BenchError::Stalled {
                outstanding: in_flight,
                waited: window.stall_timeout,
            });
        }

        // Wake for whichever comes first: the poll interval, the end of the
        // measurement, the drain deadline, or the stall deadline.
        let mut wake_at = now + POLL_INTERVAL;
        for at in [window.stop_at.filter(|_| !stopping), drain_deadline]
            .into_iter()
            .flatten()
            .chain([last_completion_at + window.stall_timeout])
        {
            wake_at = wake_at.min(at);
        }
        let timeout = wake_at
            .saturating_duration_since(now)
            .max(Duration::from_millis(1));

        completions.clear();
        service.poll(&mut completions, timeout)?;
        if completions.is_empty() {
            continue;
        }
        let done_at = Instant::now();
        last_completion_at = done_at;
        let measured =
            done_at >= window.measure_from && window.stop_at.is_none_or(|stop| done_at < stop);
        let (mut served, mut failed) = (0u64, 0u64);
        for completion in &completions {
            let flight = slots
                .get_mut(completion.tag as usize)
                .and_then(Option::take)
                .ok_or(BenchError::UnknownTag(completion.tag))?;
            free.push(completion.tag);
            stats.completed += 1;
            match completion.outcome {
                Outcome::Ok | Outcome::NotFound => served += 1,
                Outcome::Error(_) => failed += 1,
            }
            if !measured {
                continue;
            }
            match completion.outcome {
                Outcome::Ok | Outcome::NotFound => {
                    let latency_us = done_at.duration_since(flight.issued_at).as_micros() as u64;
                    stats
                        .histogram
                        .saturating_record(latency_us.clamp(1, LATENCY_US_MAX));
                    if flight.read {
                        stats.reads += 1;
                    } else {
                        stats.writes += 1;
                    }
                    if completion.outcome == Outcome::NotFound {
                        stats.not_found += 1;
                    }
                }
                Outcome::Error(kind) => *stats.errors.entry(kind).or_insert(0) += 1,
            }
        }
        progress.served.fetch_add(served, Ordering::Relaxed);
        progress.errors.fetch_add(failed, Ordering::Relaxed);
    }
    Ok(stats)
}

/// Runs a whole bench: connects the services, preloads, measures, reports.
/// With `show_progress`, prints a progress line to stdout once a second.
pub fn run(
    target: &dyn Target,
    config: &LoadConfig,
    show_progress: bool,
) -> Result<Report, BenchError> {
    config.validate()?;
    let mut services = Vec::with_capacity(config.services);
    for _ in 0..config.services {
        services.push(target.connect()?);
    }
    let value = value_of_size(config.value_size);

    let baseline_bytes = target.used_memory_bytes()?;
    let mut preload = None;
    if config.preload {
        let started = Instant::now();
        let window = Window {
            measure_from: started,
            stop_at: None,
            stall_timeout: config.stall_timeout,
            drain_timeout: config.drain_timeout,
        };
        let step = config.services as u64;
        let sources = (0..config.services as u64)
            .map(|s| OpSource::Sequential {
                next: s,
                end: config.keys,
                step,
                value: Arc::clone(&value),
            })
            .collect();
        let stats = run_phase(
            &mut services,
            sources,
            config.outstanding,
            window,
            show_progress,
            "preload",
        )?;
        let seconds = started.elapsed().as_secs_f64();
        preload = Some(PreloadReport::new(&stats, seconds));
    }
    let memory = match (baseline_bytes, target.used_memory_bytes()?) {
        (Some(before), Some(after)) if config.preload => Some(MemoryReport::new(
            before,
            after,
            config.keys,
            config.value_size,
        )),
        _ => None,
    };

    let started = Instant::now();
    let measure_from = started + config.warmup;
    let window = Window {
        measure_from,
        stop_at: Some(measure_from + config.duration),
        stall_timeout: config.stall_timeout,
        drain_timeout: config.drain_timeout,
    };
    let sources = (0..config.services as u64)
        .map(|s| OpSource::Mixed {
            keys: KeyGen::new(config.dist, config.keys, config.seed, s),
            read_percent: config.mix.read_percent(),
            value: Arc::clone(&value),
        })
        .collect();
    let stats = run_phase(
        &mut services,
        sources,
        config.outstanding,
        window,
        show_progress,
        "run",
    )?;
    Ok(Report::new(target.name(), config, &stats, preload, memory))
}

/// Runs one phase on every service in its own thread and merges what they
/// measured. The first service error stops the others and is returned.
fn run_phase(
    services: &mut [Box<dyn Service>],
    sources: Vec<OpSource>,
    outstanding: usize,
    window: Window,
    show_progress: bool,
    phase: &str,
) -> Result<ServiceStats, BenchError> {
    let progress = Progress::default();
    let results: Vec<Result<ServiceStats, BenchError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = services
            .iter_mut()
            .zip(sources)
            .map(|(service, mut source)| {
                let progress = &progress;
                scope.spawn(move || {
                    let result =
                        drive(service.as_mut(), &mut source, outstanding, window, progress);
                    if result.is_err() {
                        progress.abort.store(true, Ordering::Relaxed);
                    }
                    result
                })
            })
            .collect();
        if show_progress {
            print_progress_until_done(&handles, &progress, window, phase);
        }
        handles
            .into_iter()
            .map(|handle| {
                handle
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    });
    let mut merged = ServiceStats::new();
    for result in results {
        merged.merge(&result?);
    }
    Ok(merged)
}

/// Prints one progress line a second, overwriting the last, until every
/// service thread has finished. The threads end by their own deadlines, so
/// this loop ends too.
fn print_progress_until_done<T>(
    handles: &[std::thread::ScopedJoinHandle<'_, T>],
    progress: &Progress,
    window: Window,
    phase: &str,
) {
    let started = Instant::now();
    let mut last_print = started;
    let mut last_served = 0u64;
    let mut stdout = std::io::stdout();
    while !handles.iter().all(|h| h.is_finished()) {
        std::thread::sleep(Duration::from_millis(50));
        let now = Instant::now();
        if now.duration_since(last_print) < Duration::from_secs(1) {
            continue;
        }
        let served = progress.served.load(Ordering::Relaxed);
        let rate = (served - last_served) as f64 / now.duration_since(last_print).as_secs_f64();
        let label = match window.stop_at {
            None => phase,
            Some(_) if now < window.measure_from => "warmup",
            Some(stop) if now < stop => "measure",
            Some(_) => "drain",
        };
        // Progress is a courtesy: a closed or full stdout must not stop the run.
        let _ = write!(
            stdout,
            "\r{label:>8} {:6.1} s  {rate:>12.0} ops/s  {:>10} errors   ",
            now.duration_since(started).as_secs_f64(),
            progress.errors.load(Ordering::Relaxed)
        );
        let _ = stdout.flush();
        last_print = now;
        last_served = served;
    }
    let _ = write!(stdout, "\r{:70}\r", "");
    let _ = stdout.flush();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_seed;
    use std::collections::{HashSet, VecDeque};
    use std::sync::Mutex;

    /// What the fake services saw, shared with the test.
    #[derive(Default)]
    struct FakeLog {
        submits: u64,
        completions: u64,
        /// Keys of every put, in the order they were submitted.
        put_keys: Vec<u64>,
        /// Keys that have been written, so reads of others are NotFound.
        stored: HashSet<u64>,
        /// Most operations one service had in flight.
        peak: usize,
        /// The first operations of each service, by service index.
        first_ops: Vec<Vec<Op>>,
    }

    #[derive(Clone, Copy)]
    struct Behaviour {
        delay: Duration,
        /// Every n-th completion is an `Outcome::Error("fake_error")`.
        fail_every: Option<u64>,
        /// `submit` fails after this many operations (on service 0 only).
        break_after: Option<u64>,
        /// Never complete anything.
        silent: bool,
        /// Complete with a tag that was never submitted.
        bad_tag: bool,
    }

    const NORMAL: Behaviour = Behaviour {
        delay: Duration::from_micros(200),
        fail_every: None,
        break_after: None,
        silent: false,
        bad_tag: false,
    };

    struct FakeTarget {
        outstanding: usize,
        behaviour: Behaviour,
        log: Arc<Mutex<FakeLog>>,
        connected: Mutex<usize>,
    }

    impl FakeTarget {
        fn new(outstanding: usize, behaviour: Behaviour) -> FakeTarget {
            FakeTarget {
                outstanding,
                behaviour,
                log: Arc::default(),
                connected: Mutex::new(0),
            }
        }
    }

    impl Target for FakeTarget {
        fn name(&self) -> &str {
            "fake"
        }
        fn connect(&self) -> Result<Box<dyn Service>, BenchError> {
            let mut connected = self.connected.lock().unwrap();
            let index = *connected;
            *connected += 1;
            self.log.lock().unwrap().first_ops.push(Vec::new());
            Ok(Box::new(FakeService {
                index,
                outstanding: self.outstanding,
                behaviour: self.behaviour,
                log: Arc::clone(&self.log),
                pending: VecDeque::new(),
                submitted: 0,
                completed: 0,
            }))
        }
    }

    /// Completes each operation `delay` after its submission.
    struct FakeService {
        index: usize,
        outstanding: usize,
        behaviour: Behaviour,
        log: Arc<Mutex<FakeLog>>,
        pending: VecDeque<(Instant, u64, Op)>,
        submitted: u64,
        completed: u64,
    }

    impl Service for FakeService {
        fn submit(&mut self, op: Op, tag: u64) -> Result<(), BenchError> {
            if self.index == 0 && self.behaviour.break_after == Some(self.submitted) {
                return Err(BenchError::ConnectionClosed {
                    address: "127.0.0.1:1".parse().unwrap(),
                });
            }
            assert!(
                self.pending.len() < self.outstanding,
                "the driver exceeded {} outstanding",
                self.outstanding
            );
            assert!((tag as usize) < self.outstanding, "tag {tag} out of range");
            assert!(
                self.pending.iter().all(|(_, t, _)| *t != tag),
                "tag {tag} reused while in flight"
            );
            self.submitted += 1;
            let mut log = self.log.lock().unwrap();
            log.submits += 1;
            if let Op::Put(key, _) = &op {
                log.put_keys.push(*key);
            }
            let first = &mut log.first_ops[self.index];
            if first.len() < 300 {
                first.push(op.clone());
            }
            log.peak = log.peak.max(self.pending.len() + 1);
            self.pending
                .push_back((Instant::now() + self.behaviour.delay, tag, op));
            Ok(())
        }

        fn poll(&mut self, out: &mut Vec<Completion>, timeout: Duration) -> Result<(), BenchError> {
            if self.behaviour.bad_tag {
                out.push(Completion {
                    tag: u64::MAX,
                    outcome: Outcome::Ok,
                });
                return Ok(());
            }
            let first_ready = match self.pending.front() {
                Some((ready_at, _, _)) if !self.behaviour.silent => *ready_at,
                _ => {
                    std::thread::sleep(timeout);
                    return Ok(());
                }
            };
            let now = Instant::now();
            if first_ready > now {
                std::thread::sleep((first_ready - now).min(timeout));
            }
            let now = Instant::now();
            let mut log = self.log.lock().unwrap();
            while self
                .pending
                .front()
                .is_some_and(|(ready_at, _, _)| *ready_at <= now)
            {
                let (_, tag, op) = self.pending.pop_front().unwrap();
                self.completed += 1;
                log.completions += 1;
                let outcome = match op {
                    _ if self
                        .behaviour
                        .fail_every
                        .is_some_and(|n| self.completed % n == 0) =>
                    {
                        Outcome::Error("fake_error")
                    }
                    Op::Get(key) if !log.stored.contains(&key) => Outcome::NotFound,
                    Op::Get(_) => Outcome::Ok,
                    Op::Put(key, _) => {
                        log.stored.insert(key);
                        Outcome::Ok
                    }
                };
                out.push(Completion { tag, outcome });
            }
            Ok(())
        }
    }

    fn short_config(seed: u64) -> LoadConfig {
        LoadConfig {
            services: 3,
            outstanding: 8,
            value_size: 150,
            keys: 500,
            mix: Mix::Half,
            dist: KeyDist::Zipfian,
            preload: true,
            warmup: Duration::from_millis(100),
            duration: Duration::from_millis(400),
            seed,
            stall_timeout: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(5),
        }
    }

    #[test]
    fn counts_every_operation_and_keeps_k_in_flight() {
        let seed = test_seed();
        let config = short_config(seed);
        let target = FakeTarget::new(config.outstanding, NORMAL);
        let report = run(&target, &config, false).unwrap();
        let log = target.log.lock().unwrap();

        // The preload wrote every key exactly once, before anything else.
        let mut preloaded = log.put_keys[..500].to_vec();
        preloaded.sort_unstable();
        assert_eq!(preloaded, (0..500).collect::<Vec<u64>>());
        let preload = report.preload.as_ref().unwrap();
        assert_eq!(preload.keys_written, 500);
        assert!(preload.errors.is_empty());

        // Everything issued was completed, and the driver's counts match
        // what the services saw.
        assert_eq!(log.submits, 500 + report.issued, "seed {seed}");
        assert_eq!(log.completions, log.submits, "seed {seed}");
        assert_eq!(report.unfinished, 0);
        assert_eq!(
            log.peak, config.outstanding,
            "the closed loop keeps K in flight"
        );

        // The measured operations are a part of those issued, split by mix.
        assert!(report.ops > 0 && report.ops < report.issued, "{report:?}");
        assert_eq!(report.ops, report.reads + report.writes);
        let read_share = report.reads as f64 / report.ops as f64;
        assert!(
            (0.4..0.6).contains(&read_share),
            "50-50 mix read {read_share}, seed {seed}"
        );
        assert_eq!(report.not_found, 0, "every key was preloaded");
        assert_eq!(report.error_count(), 0);
        assert!((report.ops_per_s - report.ops as f64 / 0.4).abs() < 1e-6);

        // Latency: no operation completes before the fake's delay.
        assert!(report.latency_us.p50 >= 200, "{:?}", report.latency_us);
        assert!(report.latency_us.p50 <= report.latency_us.p99);
        assert!(report.latency_us.p99 <= report.latency_us.p999);
        assert!(report.latency_us.p999 <= report.latency_us.max);
        assert!(report.memory.is_none(), "the fake reports no memory");
        drop(log);

        let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
        assert_eq!(json["ops"], report.ops);
        assert_eq!(json["mix"], "50-50");
    }

    #[test]
    fn one_seed_gives_the_same_operations() {
        let seed = test_seed();
        let mut config = short_config(seed);
        config.preload = false;
        config.warmup = Duration::ZERO;
        config.duration = Duration::from_millis(200);
        let first_ops = |config: &LoadConfig| {
            let target = FakeTarget::new(config.outstanding, NORMAL);
            run(&target, config, false).unwrap();
            let log = target.log.lock().unwrap();
            log.first_ops
                .iter()
                .map(|ops| ops[..100].to_vec())
                .collect::<Vec<_>>()
        };
        let a = first_ops(&config);
        assert_eq!(a, first_ops(&config), "seed {seed}");
        assert_ne!(a[0], a[1], "services draw different sequences, seed {seed}");
        config.seed = seed.wrapping_add(1);
        assert_ne!(a, first_ops(&config), "seed {seed}");
    }

    #[test]
    fn reads_without_preload_find_nothing() {
        let mut config = short_config(test_seed());
        config.preload = false;
        config.mix = Mix::Read;
        let target = FakeTarget::new(config.outstanding, NORMAL);
        let report = run(&target, &config, false).unwrap();
        assert!(report.preload.is_none());
        assert!(report.ops > 0);
        assert_eq!(report.writes, 0);
        assert_eq!(report.not_found, report.reads);
        assert!(target.log.lock().unwrap().put_keys.is_empty());
    }

    #[test]
    fn failed_operations_are_counted_by_kind_and_not_as_served() {
        let mut config = short_config(test_seed());
        config.preload = false;
        config.mix = Mix::Write;
        let behaviour = Behaviour {
            fail_every: Some(4),
            ..NORMAL
        };
        let target = FakeTarget::new(config.outstanding, behaviour);
        let report = run(&target, &config, false).unwrap();
        let failed = report.errors.get("fake_error").copied().unwrap_or(0);
        assert!(failed > 0, "{report:?}");
        assert_eq!(report.error_count(), failed);
        // One in four fails; allow for the warmup and drain edges.
        let share = failed as f64 / (failed + report.ops) as f64;
        assert!((0.2..0.3).contains(&share), "failed share {share}");
        assert!(report.to_string().contains("fake_error"));
    }

    #[test]
    fn a_broken_service_stops_the_whole_run() {
        let mut config = short_config(test_seed());
        config.duration = Duration::from_secs(20);
        let behaviour = Behaviour {
            break_after: Some(600),
            ..NORMAL
        };
        let target = FakeTarget::new(config.outstanding, behaviour);
        let started = Instant::now();
        let result = run(&target, &config, false);
        assert!(
            matches!(result, Err(BenchError::ConnectionClosed { .. })),
            "{:?}",
            result.err()
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the other services did not stop early"
        );
    }

    #[test]
    fn a_silent_service_is_reported_as_stalled() {
        let mut config = short_config(test_seed());
        config.stall_timeout = Duration::from_millis(300);
        let target = FakeTarget::new(
            config.outstanding,
            Behaviour {
                silent: true,
                ..NORMAL
            },
        );
        let started = Instant::now();
        match run(&target, &config, false) {
            Err(BenchError::Stalled { outstanding, .. }) => {
                assert_eq!(outstanding, config.outstanding)
            }
            other => panic!("expected a stall, got {:?}", other.err()),
        }
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(300) && took < Duration::from_secs(3),
            "{took:?}"
        );
    }

    #[test]
    fn a_completion_for_an_unknown_tag_is_an_error() {
        let config = short_config(test_seed());
        let target = FakeTarget::new(
            config.outstanding,
            Behaviour {
                bad_tag: true,
                ..NORMAL
            },
        );
        assert!(matches!(
            run(&target, &config, false),
            Err(BenchError::UnknownTag(u64::MAX))
        ));
    }

    #[test]
    fn operations_still_in_flight_after_the_drain_are_unfinished() {
        let mut config = short_config(test_seed());
        config.preload = false;
        config.warmup = Duration::ZERO;
        config.duration = Duration::from_millis(100);
        config.drain_timeout = Duration::from_millis(50);
        let behaviour = Behaviour {
            delay: Duration::from_millis(400),
            ..NORMAL
        };
        let target = FakeTarget::new(config.outstanding, behaviour);
        let report = run(&target, &config, false).unwrap();
        assert_eq!(report.ops, 0);
        assert_eq!(
            report.unfinished,
            (config.services * config.outstanding) as u64
        );
        assert_eq!(report.error_count(), report.unfinished);
    }

    #[test]
    fn out_of_range_settings_are_refused() {
        let good = LoadConfig::default();
        assert!(good.validate().is_ok());
        let bad = [
            LoadConfig {
                services: 0,
                ..good.clone()
            },
            LoadConfig {
                outstanding: OUTSTANDING_MAX + 1,
                ..good.clone()
            },
            LoadConfig {
                value_size: VALUE_SIZE_MAX + 1,
                ..good.clone()
            },
            LoadConfig {
                outstanding: 10_000,
                value_size: VALUE_SIZE_MAX,
                ..good.clone()
            },
            LoadConfig {
                keys: 0,
                ..good.clone()
            },
            LoadConfig {
                duration: Duration::ZERO,
                ..good.clone()
            },
            LoadConfig {
                warmup: Duration::from_secs(DURATION_S_MAX + 1),
                ..good.clone()
            },
        ];
        for config in bad {
            assert!(
                matches!(config.validate(), Err(BenchError::Config(_))),
                "{config:?}"
            );
        }
    }
}
