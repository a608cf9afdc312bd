//! The figures of one run and how they are printed: a short text for people
//! and one JSON object (`--json`) for scripts. Everything here is computed
//! from the merged `ServiceStats`; nothing is measured here.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use crate::driver::{LoadConfig, ServiceStats};

/// Everything one run measured.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub target: String,
    pub mix: &'static str,
    pub dist: &'static str,
    pub services: usize,
    pub outstanding: usize,
    pub value_size: usize,
    pub keys: u64,
    pub seed: u64,
    pub warmup_s: f64,
    /// The measured stretch; rates are over this.
    pub duration_s: f64,
    /// Measured operations served (reads + writes).
    pub ops: u64,
    pub reads: u64,
    pub writes: u64,
    pub ops_per_s: f64,
    pub reads_per_s: f64,
    pub writes_per_s: f64,
    pub latency_us: Latency,
    /// Measured reads that found no value (counted in `reads` too).
    pub not_found: u64,
    /// Measured operations that failed, by kind.
    pub errors: BTreeMap<String, u64>,
    /// Operations issued in warmup, measurement and drain together.
    pub issued: u64,
    /// Operations still in flight when the drain timed out.
    pub unfinished: u64,
    pub preload: Option<PreloadReport>,
    pub memory: Option<MemoryReport>,
}

/// Latency percentiles of the served operations, in microseconds.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Latency {
    pub p50: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub mean: f64,
}

/// How the preload went.
#[derive(Clone, Debug, Serialize)]
pub struct PreloadReport {
    pub keys_written: u64,
    pub seconds: f64,
    pub ops_per_s: f64,
    pub errors: BTreeMap<String, u64>,
}

/// What the server said about its memory around the preload. The growth is
/// only the cost of the keys on a server that held none of them before;
/// `vs-redis.sh` empties Redis before every run for that reason.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct MemoryReport {
    /// Before the preload.
    pub baseline_bytes: u64,
    /// After the preload.
    pub used_bytes: u64,
    /// `(used - baseline) / keys`.
    pub bytes_per_key: f64,
    /// Keys and values alone: `keys * (8 + value_size)`.
    pub payload_bytes: u64,
    /// `(used - baseline) / payload`: 1.0 would be no overhead at all.
    pub overhead_ratio: f64,
}

impl MemoryReport {
    pub fn new(baseline_bytes: u64, used_bytes: u64, keys: u64, value_size: usize) -> MemoryReport {
        let grown = used_bytes.saturating_sub(baseline_bytes) as f64;
        let payload_bytes = keys.saturating_mul(8 + value_size as u64);
        MemoryReport {
            baseline_bytes,
            used_bytes,
            bytes_per_key: grown / keys.max(1) as f64,
            payload_bytes,
            overhead_ratio: grown / payload_bytes.max(1) as f64,
        }
    }
}

impl PreloadReport {
    pub fn new(stats: &ServiceStats, seconds: f64) -> PreloadReport {
        PreloadReport {
            keys_written: stats.writes,
            seconds,
            ops_per_s: per_second(stats.writes, seconds),
            errors: owned_errors(&stats.errors),
        }
    }
}

impl Report {
    pub fn new(
        target: &str,
        config: &LoadConfig,
        stats: &ServiceStats,
        preload: Option<PreloadReport>,
        memory: Option<MemoryReport>,
    ) -> Report {
        let seconds = config.duration.as_secs_f64();
        let h = &stats.histogram;
        Report {
            target: target.to_string(),
            mix: config.mix.name(),
            dist: config.dist.name(),
            services: config.services,
            outstanding: config.outstanding,
            value_size: config.value_size,
            keys: config.keys,
            seed: config.seed,
            warmup_s: config.warmup.as_secs_f64(),
            duration_s: seconds,
            ops: stats.served(),
            reads: stats.reads,
            writes: stats.writes,
            ops_per_s: per_second(stats.served(), seconds),
            reads_per_s: per_second(stats.reads, seconds),
            writes_per_s: per_second(stats.writes, seconds),
            latency_us: Latency {
                p50: h.value_at_quantile(0.5),
                p99: h.value_at_quantile(0.99),
                p999: h.value_at_quantile(0.999),
                max: h.max(),
                mean: h.mean(),
            },
            not_found: stats.not_found,
            errors: owned_errors(&stats.errors),
            issued: stats.issued,
            unfinished: stats.unfinished,
            preload,
            memory,
        }
    }

    /// Measured errors of every kind, plus operations left unfinished.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum::<u64>() + self.unfinished
    }

    /// The report as one line of JSON.
    pub fn to_json(&self) -> String {
        // A struct of numbers, strings and string-keyed maps always serializes.
        serde_json::to_string(self).expect("the report serializes")
    }
}

fn per_second(count: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        count as f64 / seconds
    } else {
        0.0
    }
}

fn owned_errors(errors: &BTreeMap<&'static str, u64>) -> BTreeMap<String, u64> {
    errors
        .iter()
        .map(|(kind, count)| (kind.to_string(), *count))
        .collect()
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "target {}  mix {}  dist {}  services {} x {} outstanding  value {} B  keys {}  seed {}",
            self.target, self.mix, self.dist, self.services, self.outstanding, self.value_size, self.keys, self.seed
        )?;
        if let Some(p) = &self.preload {
            writeln!(
                f,
                "preload   {} keys in {:.2} s ({:.0} writes/s){}",
                p.keys_written,
                p.seconds,
                p.ops_per_s,
                errors_text(&p.errors)
            )?;
        }
        if let Some(m) = &self.memory {
            writeln!(
                f,
                "memory    {} B used ({} B before preload), {:.1} B/key, payload {} B, {:.2}x payload",
                m.used_bytes, m.baseline_bytes, m.bytes_per_key, m.payload_bytes, m.overhead_ratio
            )?;
        }
        writeln!(
            f,
            "measured  {:.1} s after {:.1} s warmup: {:.0} ops/s ({:.0} reads/s, {:.0} writes/s)",
            self.duration_s, self.warmup_s, self.ops_per_s, self.reads_per_s, self.writes_per_s
        )?;
        let l = &self.latency_us;
        writeln!(
            f,
            "latency   p50 {} us  p99 {} us  p999 {} us  max {} us  mean {:.1} us",
            l.p50, l.p99, l.p999, l.max, l.mean
        )?;
        write!(f, "errors    {}", self.error_count())?;
        if !self.errors.is_empty() {
            write!(f, "{}", errors_text(&self.errors))?;
        }
        if self.unfinished > 0 {
            write!(f, "  unfinished {}", self.unfinished)?;
        }
        if self.not_found > 0 {
            write!(f, "  (and {} reads found no value)", self.not_found)?;
        }
        Ok(())
    }
}

fn errors_text(errors: &BTreeMap<String, u64>) -> String {
    errors
        .iter()
        .map(|(kind, count)| format!("  {kind} {count}"))
        .collect()
}
