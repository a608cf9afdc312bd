//! Measures what the linearizability checker costs as histories overlap
//! more: for each shape, generated single-key histories are checked as
//! recorded (linearizable) and after one read is broken (not linearizable),
//! with no limits (the tester searches every segment), and the slowest
//! check of each kind is printed with the largest search-step count, and
//! how many of the histories have a segment over the default step limit.
//! The same histories are then checked with the default limits, which
//! hand such segments to the search that remembers its states: its slowest
//! check of either kind is the last column but one.
//!
//! `cargo run --release -p sim --example check_cost [seed]`
//!
//! A shape whose slowest check passes `SLOW_CHECK_MS_MAX` ends the sweep for
//! that client count, so the run stays short on any machine.

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng;
use sim::generate::{break_one_read, linearizable_history, GenConfig};
use sim::linearizability::{check_with, CheckConfig, SEARCH_STEPS_MAX_DEFAULT};

const HISTORIES_PER_SHAPE: usize = 20;
const OPS_PER_HISTORY: u32 = 200;
const SLOW_CHECK_MS_MAX: u128 = 2_000;

fn main() {
    let seed: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    println!(
        "seed {seed}; {HISTORIES_PER_SHAPE} histories of {OPS_PER_HISTORY} operations on one key \
         per shape; \"quiet every\" 0 means never"
    );
    println!(
        "clients  quiet every  largest segment  most steps  over default  slowest pass  \
         slowest rejection  slowest, default limits  verdicts right"
    );
    let config = CheckConfig {
        search_steps_max: u64::MAX,
        segment_ops_max: usize::MAX,
        ops_per_key_max: usize::MAX,
        remembered_states_max: usize::MAX,
    };
    for clients in [2, 3, 4, 5, 6] {
        for quiesce_every_ops in [4, 8, 12, 16, 24, 32, 48, 0] {
            let mut rng = StdRng::seed_from_u64(seed);
            let shape = GenConfig {
                clients,
                keys: 1,
                ops: OPS_PER_HISTORY,
                unknown_per_mille: 20,
                quiesce_every_ops,
            };
            let (mut largest, mut steps, mut over_default) = (0, 0, 0);
            let (mut slowest_pass, mut slowest_reject) = (Duration::ZERO, Duration::ZERO);
            let mut slowest_default = Duration::ZERO;
            let mut by_default = |history: &sim::history::History, linearizable: bool| {
                let started = Instant::now();
                let report = check_with(history, &CheckConfig::default());
                slowest_default = slowest_default.max(started.elapsed());
                report.is_ok() == linearizable
            };
            let mut verdicts_right = true;
            for _ in 0..HISTORIES_PER_SHAPE {
                let mut history = linearizable_history(&mut rng, &shape);
                let started = Instant::now();
                let report = check_with(&history, &config);
                slowest_pass = slowest_pass.max(started.elapsed());
                verdicts_right &= report.is_ok();
                let key = &report.keys[0];
                largest = largest.max(key.segment_ops_largest);
                steps = steps.max(key.search_steps_largest);
                if key.search_steps_largest > SEARCH_STEPS_MAX_DEFAULT {
                    over_default += 1;
                }
                verdicts_right &= by_default(&history, true);
                if break_one_read(&mut history, &mut rng).is_some() {
                    let started = Instant::now();
                    let report = check_with(&history, &config);
                    slowest_reject = slowest_reject.max(started.elapsed());
                    verdicts_right &= !report.is_ok();
                    verdicts_right &= by_default(&history, false);
                }
            }
            println!(
                "{clients:>7}  {quiesce_every_ops:>11}  {largest:>15}  {steps:>10}  \
                 {over_default:>9}/{HISTORIES_PER_SHAPE}  {slowest_pass:>12.1?}  \
                 {slowest_reject:>17.1?}  {slowest_default:>23.1?}  {verdicts_right}"
            );
            if slowest_pass.max(slowest_reject).as_millis() > SLOW_CHECK_MS_MAX {
                break;
            }
        }
    }
}
