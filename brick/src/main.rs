//! `brick --config cluster.toml --id N`: the storage daemon.
//!
//! Opens (or creates) the arenas of the partitions this brick holds under
//! `<data_dir>/brick-<id>/`, listens on its address from the configuration,
//! and serves until SIGTERM or SIGINT, after which it stops accepting,
//! finishes what is in flight, flushes its arenas and exits 0.

/// The daemon's allocator: see ARCHITECTURE.md, "Allocator".
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use clap::Parser;
use maps::BrickId;

#[derive(Parser, Debug)]
#[command(name = "brick", about = "DDS storage daemon")]
struct Args {
    /// Path to cluster.toml.
    #[arg(long, default_value = "cluster.toml")]
    config: std::path::PathBuf,
    /// This brick's id in cluster.toml.
    #[arg(long)]
    id: u32,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .init();
    let args = Args::parse();
    match brick::daemon::run(&args.config, BrickId(args.id), Instant::now(), stop_flag()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            eprintln!("brick: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A flag set by SIGTERM or SIGINT.
fn stop_flag() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        if let Err(e) = signal_hook::flag::register(signal, Arc::clone(&stop)) {
            eprintln!("brick: cannot install a handler for signal {signal}: {e}");
        }
    }
    stop
}
