//! `bench`: runs the closed-loop load against Redis (`--target redis`) or a
//! DDS cluster (`--target dds`, optionally started here with `--spawn`) and
//! prints the figures, as text or as one JSON object (`--json`).
//!
//! Exit status: 0 for a run without failed operations, 1 when the run could
//! not be done, 2 when it was done but some operations failed.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use bench::cluster::{find_brick_binary, LocalCluster, ScratchConfig};
use bench::driver::{LoadConfig, Target};
use bench::keys::{KeyDist, Mix};
use bench::redis::RedisTarget;
use bench::BenchError;
use clap::{ArgAction, Parser, ValueEnum};

/// The load generator's allocator is the bricks' (ARCHITECTURE.md,
/// "Allocator"): every DDS operation it starts owns its table, key and
/// value until it ends, so with hundreds in flight the C library's
/// per-thread cache of freed blocks is always empty and each allocation
/// takes its slow path. The Redis side allocates nothing per operation.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum TargetKind {
    Redis,
    Dds,
}

#[derive(Parser, Debug)]
#[command(name = "bench", about = "Closed-loop load generator for DDS and Redis")]
struct Args {
    /// What to measure.
    #[arg(long, value_enum, default_value = "dds")]
    target: TargetKind,
    /// Address of the Redis server (with --target redis).
    #[arg(long, default_value = "127.0.0.1:6379")]
    redis_addr: SocketAddr,
    /// Cluster configuration (with --target dds).
    #[arg(long, default_value = "cluster.toml")]
    config: PathBuf,
    /// Start the bricks of --config as child processes for the run and stop
    /// them after (with --target dds). The brick binary must sit next to bench.
    #[arg(long)]
    spawn: bool,
    /// With --spawn: keep the bricks' data in the `data_dir` of --config
    /// (and start from what is there) instead of a fresh scratch folder
    /// removed after the run.
    #[arg(long)]
    keep_data: bool,
    /// Service threads, each with its own connection.
    #[arg(long, default_value_t = 4)]
    services: usize,
    /// Operations each service keeps in flight.
    #[arg(long, default_value_t = 100)]
    outstanding: usize,
    /// Bytes of every value written.
    #[arg(long, default_value_t = 150)]
    value_size: usize,
    /// read, 95-5, 50-50 or write: the percentage of reads and writes.
    #[arg(long, default_value = "read")]
    mix: Mix,
    /// Number of distinct keys; key ids are 0..keys.
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
    /// uniform or zipfian (exponent 0.99, key 0 hottest).
    #[arg(long, default_value = "uniform")]
    dist: KeyDist,
    /// Write every key once before measuring: --preload false to skip.
    #[arg(long, default_value_t = true, action = ArgAction::Set)]
    preload: bool,
    /// Seconds of unmeasured load before the measurement.
    #[arg(long, default_value_t = 2.0)]
    warmup_s: f64,
    /// Seconds of measurement.
    #[arg(long, default_value_t = 10.0)]
    duration_s: f64,
    /// Seed of every random choice; the same seed gives the same operations.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Measure recovery instead: a local cluster of its own (one partition
    /// filled with --recovery-keys values), a brick killed and restarted
    /// under load, and its partition's copy next to the loopback bulk TCP
    /// rate. Ignores the load options above.
    #[arg(long)]
    recovery: bool,
    /// Keys of 150 bytes that fill the partition for --recovery (600,000
    /// make about 100 MiB).
    #[arg(long, default_value_t = 600_000)]
    recovery_keys: u64,
    /// Cap on the copy's rate for --recovery in MiB/s (the cluster's
    /// `recovery.copy_rate_mb_s`); 0 for none.
    #[arg(long, default_value_t = 0)]
    recovery_rate_mb_s: u64,
    /// Copies under load for --recovery (brick 2 killed and restarted that
    /// many times), each with its own measure of the bulk rate under the
    /// load; the report gives each and their median ratio.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=20))]
    recovery_rounds: u64,
}

fn main() -> ExitCode {
    env_logger::Builder::from_default_env()
        .format_timestamp_millis()
        .init();
    let args = Args::parse();
    match run(&args) {
        Ok(0) => ExitCode::SUCCESS,
        Ok(failed) => {
            eprintln!("bench: {failed} operations failed; see the errors line of the report");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the bench and prints its report; returns the number of failed operations.
fn run(args: &Args) -> Result<u64, BenchError> {
    if args.recovery {
        let report = bench::recovery::run(
            args.recovery_keys,
            args.recovery_rate_mb_s,
            args.recovery_rounds as usize,
            !args.json,
        )?;
        if args.json {
            println!("{}", report.to_json());
        } else {
            println!("{report}");
        }
        return Ok(report.failed_reads);
    }
    let config = LoadConfig {
        services: args.services,
        outstanding: args.outstanding,
        value_size: args.value_size,
        keys: args.keys,
        mix: args.mix,
        dist: args.dist,
        preload: args.preload,
        warmup: seconds("--warmup-s", args.warmup_s)?,
        duration: seconds("--duration-s", args.duration_s)?,
        seed: args.seed,
        ..LoadConfig::default()
    };
    config.validate()?;
    if args.spawn && args.target != TargetKind::Dds {
        return Err(BenchError::Config(
            "--spawn starts DDS bricks; it needs --target dds".to_string(),
        ));
    }

    // A spawned cluster keeps its data in a fresh folder, so every run
    // starts empty (memory per key is measured from there) and a run never
    // restarts bricks on a previous run's data. Dropped last: the folder
    // goes after the bricks have stopped.
    let scratch = if args.spawn && !args.keep_data {
        Some(ScratchConfig::new(&args.config)?)
    } else {
        None
    };
    let config_path = scratch.as_ref().map_or(args.config.clone(), |s| s.path());
    // Held until the end of the run; dropping it stops the bricks.
    let cluster = if args.spawn {
        Some(LocalCluster::start(&config_path, &find_brick_binary()?)?)
    } else {
        None
    };
    let target: Box<dyn Target> = match args.target {
        TargetKind::Redis => Box::new(RedisTarget::new(args.redis_addr)),
        TargetKind::Dds => {
            let pids = cluster.as_ref().map(|c| c.pids()).unwrap_or_default();
            bench::dds::dds_target(&config_path, pids)?
        }
    };

    let show_progress = !args.json && std::io::stdout().is_terminal();
    let report = bench::run(target.as_ref(), &config, show_progress)?;
    if args.json {
        println!("{}", report.to_json());
    } else {
        println!("{report}");
    }
    Ok(report.error_count())
}

/// A duration from seconds on the command line.
fn seconds(flag: &str, value: f64) -> Result<Duration, BenchError> {
    Duration::try_from_secs_f64(value)
        .map_err(|_| BenchError::Config(format!("{flag} must be a number of seconds, not {value}")))
}
