//! `dds-status`: prints what every brick of a cluster reports about itself
//! and about the replica groups (`bench::status`).
//!
//! Exit status: 0 when every brick answers and every group has all its
//! members, 1 when the cluster is degraded, 2 when `cluster.toml` cannot
//! be read.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "dds-status",
    about = "What the bricks of a DDS cluster report: bricks, groups, copies"
)]
struct Args {
    /// Cluster configuration.
    #[arg(long, default_value = "cluster.toml")]
    config: PathBuf,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let status = match bench::status::cluster_status(&args.config) {
        Ok(status) => status,
        Err(e) => {
            eprintln!("dds-status: {}: {e}", args.config.display());
            return ExitCode::from(2);
        }
    };
    if args.json {
        match serde_json::to_string_pretty(&status) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("dds-status: {e}");
                return ExitCode::from(2);
            }
        }
    } else {
        print!("{}", status.render());
    }
    if status.is_healthy() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
