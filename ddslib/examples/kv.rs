//! A small program a service author can copy: connects to the cluster in
//! `cluster.toml`, makes sure a table exists, and runs one command.
//!
//! ```sh
//! cargo run --example kv -- --config cluster.toml put users alice '{"visits": 1}'
//! cargo run --example kv -- --config cluster.toml get users alice
//! cargo run --example kv -- --config cluster.toml remove users alice
//! ```

use std::process::ExitCode;

use ddslib::{Dds, DdsError};

fn usage() -> ExitCode {
    eprintln!("usage: kv [--config PATH] [--halt-after-prepare] (get TABLE KEY | put TABLE KEY VALUE | remove TABLE KEY)");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut config = "cluster.toml".to_string();
    let mut halt_after_prepare = false;
    loop {
        match args.first().map(String::as_str) {
            Some("--config") if args.len() > 1 => {
                config = args[1].clone();
                args.drain(..2);
            }
            // Test hook: stop after every replica voted, before the decision,
            // so a fault test can kill this process between the two phases.
            Some("--halt-after-prepare") => {
                halt_after_prepare = true;
                args.remove(0);
            }
            _ => break,
        }
    }
    let mut dds =
        match Dds::connect_config_with(&config, |c| c.halt_after_prepare = halt_after_prepare) {
            Ok(dds) => dds,
            Err(e) => {
                eprintln!("kv: {e}");
                return ExitCode::FAILURE;
            }
        };
    let result = match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["get", table, key] => ensure_table(&mut dds, table)
            .and_then(|_| dds.get(table, key.as_bytes()))
            .map(|v| {
                println!("{}", String::from_utf8_lossy(&v));
            }),
        ["put", table, key, value] => {
            if halt_after_prepare {
                println!("halting after prepare");
            }
            ensure_table(&mut dds, table)
                .and_then(|_| dds.put(table, key.as_bytes(), value.as_bytes()))
        }
        ["remove", table, key] => {
            ensure_table(&mut dds, table).and_then(|_| dds.remove(table, key.as_bytes()))
        }
        _ => return usage(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(DdsError::NotFound) => {
            eprintln!("kv: not found");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("kv: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Creates the table unless it exists.
fn ensure_table(dds: &mut Dds, table: &str) -> Result<(), DdsError> {
    match dds.create_table(table) {
        Ok(()) | Err(DdsError::TableExists(_)) => Ok(()),
        Err(e) => Err(e),
    }
}
