//! Micro-benchmark of the partition store: puts of N keys (16 bytes) with
//! 150-byte values into file-backed partitions of 100 MiB in a temporary
//! directory, then N random gets, then a reopen of every partition. Prints
//! the rates and what the data costs in memory: the growth of the resident
//! set (which counts the arena pages touched, since they are mapped) over
//! the payload (key and value bytes), and the index bytes per key.
//!
//! ```text
//! cargo run --release -p brick --example store_bench -- [keys] [partitions] [dir]
//! ```
//!
//! `keys` defaults to 1,000,000; `partitions` to the smallest power of two
//! that keeps each arena under 90% full; `dir` to a fresh temporary
//! directory (removed at the end).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use brick::store::{record_bytes, Backing, Partition};
use xxhash_rust::xxh3::xxh3_64;

const CAPACITY_BYTES: u64 = 100 * 1024 * 1024;
const KEY_BYTES: usize = 16;
const VALUE_BYTES: usize = 150;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let keys: u64 = args
        .first()
        .map_or(1_000_000, |s| s.parse().expect("keys is a number"));
    let record = record_bytes(KEY_BYTES, VALUE_BYTES);
    let partitions: usize = match args.get(1) {
        Some(s) => s.parse().expect("partitions is a number"),
        None => (keys * record)
            .div_ceil(CAPACITY_BYTES * 9 / 10)
            .max(1)
            .next_power_of_two() as usize,
    };
    let temp = tempfile::tempdir().expect("a temporary directory");
    let dir = args
        .get(2)
        .map_or_else(|| temp.path().to_path_buf(), PathBuf::from);
    let paths: Vec<PathBuf> = (0..partitions)
        .map(|i| dir.join(format!("bench-{i}.arena")))
        .collect();
    for path in &paths {
        let _ = std::fs::remove_file(path);
    }
    println!(
        "{keys} keys of {KEY_BYTES} bytes with {VALUE_BYTES}-byte values in {partitions} file-backed partitions \
         of {} MiB in {}",
        CAPACITY_BYTES >> 20,
        dir.display()
    );

    let rss_before = rss_bytes();
    let (file_before, anon_before) = (status_bytes("RssFile:"), status_bytes("RssAnon:"));
    let mut stores: Vec<Partition> = paths
        .iter()
        .map(|path| {
            Partition::open(Backing::File(path.clone()), CAPACITY_BYTES)
                .expect("arena opens")
                .0
        })
        .collect();

    let mut key = [0u8; KEY_BYTES];
    let mut value = [0u8; VALUE_BYTES];
    let (mut slowest_put, mut slowest_at) = (Duration::ZERO, 0);
    let started = Instant::now();
    for i in 0..keys {
        fill_key(&mut key, i);
        fill_value(&mut value, i);
        let at = Instant::now();
        stores[partition_of(&key, partitions)]
            .put(&key, &value)
            .expect("the partitions have room");
        if at.elapsed() > slowest_put {
            (slowest_put, slowest_at) = (at.elapsed(), i);
        }
    }
    let put_time = started.elapsed();
    let rss_after = rss_bytes();
    let (file_after, anon_after) = (status_bytes("RssFile:"), status_bytes("RssAnon:"));

    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let mut checked = 0u64;
    let started = Instant::now();
    for _ in 0..keys {
        let i = splitmix(&mut rng) % keys;
        fill_key(&mut key, i);
        let got = stores[partition_of(&key, partitions)]
            .get(&key)
            .expect("every key was put");
        // Reading a byte of each value keeps the lookup honest.
        checked += u64::from(got[VALUE_BYTES - 1] == (i as u8) ^ 0x5A);
    }
    let get_time = started.elapsed();
    assert_eq!(checked, keys, "values read back wrong");

    let index_bytes: u64 = stores.iter().map(|s| s.stats().index_bytes).sum();
    let used_bytes: u64 = stores.iter().map(|s| s.stats().used_bytes).sum();
    let payload = keys * (KEY_BYTES + VALUE_BYTES) as u64;
    let growth = rss_after.saturating_sub(rss_before);

    for store in &stores {
        store.flush().expect("flush");
    }
    drop(stores);
    let started = Instant::now();
    let mut records = 0;
    for path in &paths {
        let (_, report) =
            Partition::open(Backing::File(path.clone()), CAPACITY_BYTES).expect("arena reopens");
        records += report.records;
    }
    let open_time = started.elapsed();

    println!(
        "put: {:.2} M ops/s ({:.2} s; slowest put {:.1} ms, the {slowest_at}th)",
        keys as f64 / put_time.as_secs_f64() / 1e6,
        put_time.as_secs_f64(),
        slowest_put.as_secs_f64() * 1e3
    );
    println!(
        "get: {:.2} M ops/s ({:.2} s, uniform random keys)",
        keys as f64 / get_time.as_secs_f64() / 1e6,
        get_time.as_secs_f64()
    );
    println!(
        "memory: resident set grew {:.1} MB for {:.1} MB of payload = {:.3}x (arena records {:.1} MB = {:.3}x; \
         index {:.1} MB = {:.1} bytes/key)",
        growth as f64 / 1e6,
        payload as f64 / 1e6,
        growth as f64 / payload as f64,
        used_bytes as f64 / 1e6,
        used_bytes as f64 / payload as f64,
        index_bytes as f64 / 1e6,
        index_bytes as f64 / keys as f64
    );
    println!(
        "        of which mapped file pages {:.1} MB, anonymous memory {:.1} MB",
        file_after.saturating_sub(file_before) as f64 / 1e6,
        anon_after.saturating_sub(anon_before) as f64 / 1e6
    );
    println!(
        "reopen: {records} records scanned and indexed in {:.2} s ({:.2} M records/s)",
        open_time.as_secs_f64(),
        records as f64 / open_time.as_secs_f64() / 1e6
    );
    for path in &paths {
        let _ = std::fs::remove_file(path);
    }
}

fn fill_key(key: &mut [u8; KEY_BYTES], i: u64) {
    key[..8].copy_from_slice(&i.to_le_bytes());
    key[8..].copy_from_slice(&i.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_le_bytes());
}

fn fill_value(value: &mut [u8; VALUE_BYTES], i: u64) {
    value.fill(i as u8);
    value[VALUE_BYTES - 1] = (i as u8) ^ 0x5A;
}

fn partition_of(key: &[u8], partitions: usize) -> usize {
    (xxh3_64(key) >> 32) as usize % partitions
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The resident set of this process in bytes, from /proc/self/statm.
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm (Linux only)");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("statm's second field");
    // SAFETY: sysconf has no preconditions.
    let page_bytes = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
    pages * page_bytes
}

/// A size field of /proc/self/status (given in kB), in bytes; 0 if absent.
fn status_bytes(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}
