//! Micro-benchmark of the receiving side of a recovery copy, without the
//! network: a file-backed partition of N keys (16 bytes) with 150-byte
//! values is cut into chunks as the source does, and the chunks are
//! appended to a second file-backed partition that held the same data
//! before (a restarted brick's old copy, reopened and reset, as in the
//! recovery bench), or with `fresh` to a new file (a spare brick healing a
//! group). The target's index is sized for the source's keys first, as a
//! brick receiving a copy does, and each record's structure is checked
//! but not its crc, as a brick does (the frame's crc covered the bytes).
//! Prints how long the source's cut into chunks took, and the append rate
//! next to a plain memory copy of the same bytes into fresh memory,
//! measured in the same run. Each round appends three times: on this
//! thread alone; as a brick does without its source's index, with the
//! records indexed on a helper thread (`Filling`); and as a brick does
//! with the source's index, which the helper checks against the records
//! (`Filling::use_index`). Later appends go over the pages the first one
//! wrote. Each append shows its wall time and the CPU time of all
//! threads. Also
//! prints how long the target's reopen took (the load a restarting brick
//! does).
//!
//! ```text
//! cargo run --release -p brick --example copy_bench -- [keys] [rounds] [fresh]
//! ```

use std::time::{Duration, Instant};

use brick::store::{Backing, ChunkCheck, IndexImage, Partition};

const CAPACITY_BYTES: u64 = 160 * 1024 * 1024;
const CHUNK_BYTES: usize = 512 * 1024;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let keys: u64 = args
        .first()
        .map_or(600_000, |s| s.parse().expect("keys is a number"));
    let rounds: usize = args
        .get(1)
        .map_or(1, |s| s.parse().expect("rounds is a number"))
        .max(1);
    let fresh = args.get(2).is_some_and(|a| a == "fresh");
    let temp = tempfile::tempdir().expect("a temporary directory");
    let source_path = temp.path().join("source.arena");
    let target_path = temp.path().join("target.arena");
    let mut source = fill(&source_path, keys);
    if !fresh {
        drop(fill(&target_path, keys));
    }
    for i in 0..keys / 10 {
        // Some overwrites, as a load running before the copy leaves.
        let (key, value) = entry(i * 7 % keys, 1);
        source.put(&key, &value).expect("room for the overwrites");
    }
    let reopen = Instant::now();
    let (mut target, report) =
        Partition::open(Backing::File(target_path), CAPACITY_BYTES).expect("target reopens");
    let reopened = reopen.elapsed();
    // A brick's start then looks for its table names, keys that begin with
    // one byte (here the keys whose first byte happens to be that one).
    let scan = Instant::now();
    let marked = target.keys_with_prefix(&[0xff]).len();
    let scanned = scan.elapsed();

    // The source's side: cutting the arena into chunks of whole records.
    // Its pages are not in the processor's caches, as on a brick whose
    // arena is much larger than they are.
    let cut = Instant::now();
    let (mut offset, mut cuts) = (64, 0);
    while offset < source.end_offset() {
        offset += source.chunk(offset, CHUNK_BYTES).len() as u64;
        cuts += 1;
    }
    let cut = cut.elapsed();
    std::hint::black_box(cuts);

    let mut chunks = Vec::new();
    let mut offset = 64;
    while offset < source.end_offset() {
        let chunk = source.chunk(offset, CHUNK_BYTES).to_vec();
        offset += chunk.len() as u64;
        chunks.push(chunk);
    }
    let bytes: usize = chunks.iter().map(Vec::len).sum();

    let started = Instant::now();
    let mut plain = vec![0u8; bytes];
    let mut at = 0;
    for chunk in &chunks {
        plain[at..at + chunk.len()].copy_from_slice(chunk);
        at += chunk.len();
    }
    let memcpy = started.elapsed();
    std::hint::black_box(&plain);

    // Each round appends on this thread alone, then as a brick does, with
    // the index built on a helper thread (`Filling`), then with the
    // source's index, which the helper checks.
    let snapshot_started = Instant::now();
    let snapshot = source.index_snapshot().expect("the source's index");
    let into_fresh = snapshot_started.elapsed();
    let room = source.index_snapshot_room();
    for _ in 0..100 {
        if room.is_ready() {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let snapshot_started = Instant::now();
    let again = source.index_snapshot_in(room).expect("the source's index");
    let into_room = snapshot_started.elapsed();
    assert_eq!(again, snapshot);
    println!(
        "source's index snapshot ({} slots, {:.1} MiB): {:.2} ms into fresh memory, \
         {:.2} ms into memory faulted in ahead",
        snapshot.slots.len(),
        (snapshot.slots.len() * 8) as f64 / (1024.0 * 1024.0),
        into_fresh.as_secs_f64() * 1e3,
        into_room.as_secs_f64() * 1e3,
    );
    let image_bytes: Vec<u8> = snapshot
        .slots
        .iter()
        .flat_map(|s| s.to_le_bytes())
        .collect();
    let mut append = Vec::new();
    for _ in 0..rounds {
        for mode in [Mode::OneThread, Mode::Helper, Mode::WithIndex] {
            let started = Instant::now();
            let cpu_started = process_cpu();
            target.reset();
            target.reserve_keys(source.digest().1);
            let mut offset = 64;
            if mode != Mode::OneThread {
                let mut filling = target.into_filling().expect("the helper starts");
                if mode == Mode::WithIndex {
                    let mut image =
                        IndexImage::new(snapshot.slots.len() as u64).expect("an index's size");
                    for (i, part) in image_bytes.chunks(CHUNK_BYTES).enumerate() {
                        image
                            .write((i * CHUNK_BYTES / 8) as u64, part)
                            .expect("parts in order");
                    }
                    assert!(filling.use_index(
                        image,
                        snapshot.end,
                        snapshot.location_bits,
                        &[0xff]
                    ));
                }
                for chunk in &chunks {
                    filling
                        .append_chunk_with(offset, chunk, ChunkCheck::Structure, |_, _| {})
                        .expect("chunk appends");
                    offset += chunk.len() as u64;
                }
                target = filling.finish().expect("the helper indexed every chunk").0;
            } else {
                for chunk in &chunks {
                    // As a brick does: the frame's crc covered the bytes.
                    target
                        .append_chunk_with(offset, chunk, ChunkCheck::Structure, |_, _| {})
                        .expect("chunk appends");
                    offset += chunk.len() as u64;
                }
            }
            append.push((mode, started.elapsed(), process_cpu() - cpu_started));
            assert_eq!(target.digest(), source.digest(), "the copy differs");
        }
    }

    let mib = bytes as f64 / 1048576.0;
    println!(
        "{keys} keys, {} chunks, {mib:.1} MiB; plain memory copy into fresh memory {:.1} ms = {:.0} MiB/s",
        chunks.len(),
        memcpy.as_secs_f64() * 1e3,
        mib / memcpy.as_secs_f64(),
    );
    println!(
        "source cut them in {:.1} ms (walking its records to end each chunk on a record's end)",
        cut.as_secs_f64() * 1e3
    );
    if !fresh {
        println!(
            "target reopened in {:.1} ms ({} records checked, {} keys indexed, as a brick's start does), \
             then {marked} keys with a given first byte found in {:.1} ms",
            reopened.as_secs_f64() * 1e3,
            report.records,
            report.live_keys,
            scanned.as_secs_f64() * 1e3
        );
    }
    for (i, (mode, took, cpu)) in append.iter().enumerate() {
        let round = i / 3;
        println!(
            "append round {}, {}{}: {:.1} ms = {:.0} MiB/s, {:.2}x the plain copy, {:.1} ms of CPU",
            round + 1,
            match mode {
                Mode::OneThread => "on one thread",
                Mode::Helper => "indexed on a helper thread",
                Mode::WithIndex => "with the source's index, checked on a helper thread",
            },
            if i == 0 && fresh {
                " (a fresh file)"
            } else if i == 0 {
                " (pages not yet written)"
            } else {
                ""
            },
            took.as_secs_f64() * 1e3,
            mib / took.as_secs_f64(),
            memcpy.as_secs_f64() / took.as_secs_f64(),
            cpu.as_secs_f64() * 1e3
        );
    }
}

/// CPU time of the whole process, every thread's.
fn process_cpu() -> std::time::Duration {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec for the call to fill.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut t) };
    assert_eq!(rc, 0, "clock_gettime");
    std::time::Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    OneThread,
    Helper,
    WithIndex,
}

fn fill(path: &std::path::Path, keys: u64) -> Partition {
    let (mut store, _) =
        Partition::open(Backing::File(path.to_path_buf()), CAPACITY_BYTES).expect("arena opens");
    for i in 0..keys {
        let (key, value) = entry(i, 0);
        store.put(&key, &value).expect("the partition has room");
    }
    store.flush().expect("flush");
    store
}

fn entry(i: u64, version: u8) -> ([u8; 16], [u8; 150]) {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&i.to_le_bytes());
    key[8..].copy_from_slice(&i.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_le_bytes());
    let mut value = [version; 150];
    value[149] = i as u8;
    (key, value)
}
