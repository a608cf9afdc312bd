//! The partition store through its public API: reads and writes, size
//! limits, full arenas, reopening files, torn tails, capacities and the
//! checksum. Compaction under load is in `store_compaction.rs`.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use brick::store::{
    record_bytes, Backing, ChunkCheck, Filling, IndexImage, IndexSnapshot, OpenReport, Partition,
    SnapshotRoom, StoreError, CAPACITY_MAX, COPY_CHUNK_BYTES, HEADER_BYTES, KEY_SIZE_MAX,
    RECORD_HEADER_BYTES_MAX, RECORD_HEADER_BYTES_MIN, VALUE_SIZE_MAX,
};

const CAPACITY: u64 = 1 << 20;

fn anonymous(capacity: u64) -> Partition {
    Partition::open(Backing::Anonymous, capacity)
        .expect("anonymous arena opens")
        .0
}

fn open_file(path: &Path, capacity: u64) -> (Partition, OpenReport) {
    Partition::open(Backing::File(path.to_path_buf()), capacity).expect("arena file opens")
}

fn key(i: usize) -> Vec<u8> {
    format!("key-{i:05}").into_bytes()
}

fn value(i: usize, len: usize) -> Vec<u8> {
    (0..len).map(|j| (i * 31 + j * 7) as u8 | 1).collect()
}

/// Everything observable about a partition: its (key, value) pairs, its
/// checksum, its end offset and its live bytes.
type Snapshot = (Vec<(Vec<u8>, Vec<u8>)>, (u32, u64), u64, u64);

fn snapshot(p: &Partition) -> Snapshot {
    let pairs = p
        .keys_with_prefix(b"")
        .into_iter()
        .map(|k| (k.clone(), p.get(&k).unwrap().to_vec()))
        .collect();
    (pairs, p.checksum(), p.end_offset(), p.stats().live_bytes)
}

#[test]
fn put_get_overwrite_and_remove() {
    let mut p = anonymous(CAPACITY);
    assert_eq!(p.get(b"a"), None);
    p.put(b"a", b"1").unwrap();
    assert_eq!(p.get(b"a"), Some(&b"1"[..]));
    p.put(b"a", b"22").unwrap();
    assert_eq!(p.get(b"a"), Some(&b"22"[..]));
    let stats = p.stats();
    assert_eq!(stats.keys, 1);
    assert_eq!(stats.live_bytes, record_bytes(1, 2));
    assert_eq!(stats.dead_bytes, record_bytes(1, 1));
    assert_eq!(stats.used_bytes, record_bytes(1, 1) + record_bytes(1, 2));
    assert_eq!(p.end_offset(), HEADER_BYTES + stats.used_bytes);

    assert!(p.remove(b"a").unwrap());
    assert_eq!(p.get(b"a"), None);
    let end = p.end_offset();
    assert_eq!(
        end,
        HEADER_BYTES + stats.used_bytes + record_bytes(1, 0),
        "one tombstone"
    );
    assert!(!p.remove(b"a").unwrap(), "a missing key is not removed");
    assert!(!p.remove(b"never").unwrap());
    assert_eq!(
        p.end_offset(),
        end,
        "removing a missing key appends nothing"
    );
    assert_eq!(p.stats().keys, 0);
    assert_eq!(p.stats().live_bytes, 0);

    // Empty keys and empty values are ordinary.
    p.put(b"", b"empty key").unwrap();
    p.put(b"empty value", b"").unwrap();
    assert_eq!(p.get(b""), Some(&b"empty key"[..]));
    assert_eq!(p.get(b"empty value"), Some(&b""[..]));
    assert!(p.remove(b"").unwrap());
    assert_eq!(p.get(b""), None);
    p.check_invariants();
}

#[test]
fn many_keys_survive_index_growth() {
    let mut p = anonymous(CAPACITY);
    for i in 0..5000 {
        p.put(&key(i), &value(i, i % 40)).unwrap();
    }
    for i in (0..5000).step_by(3) {
        assert!(p.remove(&key(i)).unwrap());
    }
    for i in 0..5000 {
        let expected = (i % 3 != 0).then(|| value(i, i % 40));
        assert_eq!(p.get(&key(i)).map(<[u8]>::to_vec), expected, "key {i}");
    }
    let stats = p.stats();
    assert_eq!(stats.keys, 5000 - 1667);
    // 5000 keys need at least 5715 slots at a load of at most 7/8, and the
    // table grows by an eighth, so it has fewer than 5715 * 9/8; removes do
    // not shrink it.
    let slots = stats.index_bytes / 8;
    assert!((5715..5715 * 9 / 8).contains(&slots), "{slots} slots");
    p.check_invariants();
}

#[test]
fn size_limits_are_enforced_and_change_nothing() {
    let mut p = anonymous(CAPACITY);
    let longest = vec![b'k'; KEY_SIZE_MAX];
    p.put(&longest, b"v").unwrap();
    assert_eq!(p.get(&longest), Some(&b"v"[..]));
    let before = snapshot(&p);

    let too_long = vec![b'k'; KEY_SIZE_MAX + 1];
    assert!(
        matches!(p.put(&too_long, b"v"), Err(StoreError::KeyTooLarge(n)) if n == KEY_SIZE_MAX + 1)
    );
    assert!(matches!(
        p.remove(&too_long),
        Err(StoreError::KeyTooLarge(_))
    ));
    assert_eq!(p.get(&too_long), None);
    let huge = vec![0u8; VALUE_SIZE_MAX + 1];
    assert!(
        matches!(p.put(b"k", &huge), Err(StoreError::ValueTooLarge(n)) if n == VALUE_SIZE_MAX + 1)
    );
    assert!(!p.can_fit(KEY_SIZE_MAX + 1, 1));
    assert!(!p.can_fit(1, VALUE_SIZE_MAX + 1));
    assert_eq!(snapshot(&p), before);

    let message = StoreError::KeyTooLarge(70_000).to_string();
    assert!(
        message.contains("70000") && message.contains("shorter key"),
        "{message}"
    );
}

#[test]
fn full_only_when_live_data_cannot_fit_and_a_failed_put_changes_nothing() {
    // 4096 - 64 = 4032 bytes for records: twelve records of 336 bytes.
    let capacity = 4096;
    let mut p = anonymous(capacity);
    let record = record_bytes(3, 326);
    assert_eq!(record, 336);
    for i in 0..12 {
        assert!(p.can_fit(3, 326), "record {i}");
        p.put(format!("k{i:02}").as_bytes(), &value(i, 326))
            .unwrap();
    }
    assert_eq!(p.end_offset(), capacity);
    assert!(!p.can_fit(0, 0));
    let before = snapshot(&p);
    match p.put(b"k99", &value(99, 1)) {
        Err(StoreError::Full { needed, free }) => {
            assert_eq!((needed, free), (record_bytes(3, 1), 0));
        }
        other => panic!("expected Full, got {other:?}"),
    }
    // An overwrite counts the old version as live too: it stays live until
    // the new record is in.
    assert!(matches!(p.put(b"k00", b""), Err(StoreError::Full { .. })));
    assert_eq!(snapshot(&p), before, "a failed put changes nothing");
    let message = p.put(b"k99", b"").unwrap_err().to_string();
    assert!(
        message.contains("partition full") && message.contains("split the partition"),
        "{message}"
    );

    // Removing frees live space even though the tail has no room for a
    // tombstone; the next put then compacts to make room at the tail.
    assert!(p.remove(b"k00").unwrap());
    assert_eq!(p.get(b"k00"), None);
    assert!(p.can_fit(3, 326));
    assert!(!p.can_fit(3, 327));
    p.put(b"k12", &value(12, 326)).unwrap();
    assert_eq!(p.get(b"k12"), Some(&value(12, 326)[..]));
    assert_eq!(p.end_offset(), capacity);
    for i in 1..12 {
        assert_eq!(
            p.get(format!("k{i:02}").as_bytes()),
            Some(&value(i, 326)[..])
        );
    }
    p.check_invariants();
}

#[test]
fn can_fit_reserved_counts_prepared_puts() {
    let mut p = anonymous(4096);
    p.put(b"a", &[1; 1000]).unwrap();
    let free = 4096 - HEADER_BYTES - record_bytes(1, 1000);
    let half = record_bytes(1, 1000);
    assert!(p.can_fit_reserved(0, 1, 1000));
    assert!(p.can_fit_reserved(free - half, 1, 1000));
    assert!(!p.can_fit_reserved(free - half + 1, 1, 1000));
    assert!(!p.can_fit_reserved(u64::MAX, 0, 0));
}

#[test]
fn a_full_tail_with_little_live_data_compacts_synchronously() {
    let mut p = anonymous(8192);
    let generation = p.generation();
    for i in 0..200 {
        p.put(b"hot", &value(i, 100)).unwrap();
        p.put(format!("cold{}", i % 3).as_bytes(), &value(i, 10))
            .unwrap();
    }
    assert_eq!(p.get(b"hot"), Some(&value(199, 100)[..]));
    assert_eq!(p.get(b"cold0"), Some(&value(198, 10)[..]));
    let stats = p.stats();
    assert!(stats.compactions >= 2, "{stats:?}");
    assert_eq!(p.generation(), generation + stats.compactions);
    assert_eq!(stats.keys, 4);
    p.check_invariants();
}

#[test]
fn a_remove_with_no_room_for_its_tombstone_still_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.arena");
    let (mut p, _) = open_file(&path, 4096);
    for i in 0..12 {
        p.put(format!("k{i:02}").as_bytes(), &value(i, 326))
            .unwrap();
    }
    assert!(
        p.end_offset() + record_bytes(3, 0) > 4096,
        "no room for a tombstone"
    );
    assert!(p.remove(b"k05").unwrap());
    assert_eq!(p.get(b"k05"), None);
    assert_eq!(p.stats().keys, 11);
    assert_eq!(p.stats().compactions, 1);
    assert_eq!(p.stats().dead_bytes, 0);
    p.check_invariants();
    let sum = p.checksum();
    drop(p);
    let (p, report) = open_file(&path, 4096);
    assert_eq!(report.live_keys, 11);
    assert_eq!(p.get(b"k05"), None, "the remove is durable");
    assert_eq!(p.checksum(), sum);
}

#[test]
fn ten_thousand_keys_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.arena");
    let (mut p, report) = open_file(&path, 4 * CAPACITY);
    assert_eq!(
        report,
        OpenReport {
            records: 0,
            live_keys: 0,
            torn_tail_bytes: 0,
            end_offset: HEADER_BYTES
        }
    );
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 4 * CAPACITY);
    for i in 0..10_000 {
        p.put(&key(i), &value(i, i % 150)).unwrap();
    }
    for i in (0..10_000).step_by(7) {
        p.put(&key(i), &value(i + 1, 20)).unwrap();
    }
    for i in (0..10_000).step_by(11) {
        p.remove(&key(i)).unwrap();
    }
    p.flush().unwrap();
    let (pairs, sum, end, live) = snapshot(&p);
    drop(p);

    let (p, report) = open_file(&path, 4 * CAPACITY);
    assert_eq!(report.live_keys, pairs.len() as u64);
    assert_eq!(report.records, 10_000 + 1429 + 910);
    assert_eq!(report.torn_tail_bytes, 0);
    assert_eq!(report.end_offset, end);
    assert_eq!(snapshot(&p), (pairs, sum, end, live));
    for i in 0..10_000 {
        let expected = match (i % 11, i % 7) {
            (0, _) => None,
            (_, 0) => Some(value(i + 1, 20)),
            _ => Some(value(i, i % 150)),
        };
        assert_eq!(p.get(&key(i)).map(<[u8]>::to_vec), expected, "key {i}");
    }
    p.check_invariants();
}

/// Writes `count` records to a fresh arena file and returns the offset of
/// the last one.
fn write_records(path: &Path, count: usize) -> u64 {
    let (mut p, _) = open_file(path, CAPACITY);
    for i in 0..count {
        p.put(&key(i), &value(i, 50)).unwrap();
    }
    p.flush().unwrap();
    p.end_offset() - record_bytes(key(0).len(), 50)
}

fn patch(path: &Path, offset: u64, bytes: &[u8]) {
    OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .write_all_at(bytes, offset)
        .unwrap();
}

/// Reopens after damage at the tail: everything before `last` is intact,
/// `cut` bytes were cut, a new put works and survives another reopen.
fn check_torn_tail(path: &Path, count: usize, last: u64, cut: u64) {
    let (mut p, report) = open_file(path, CAPACITY);
    assert_eq!(report.torn_tail_bytes, cut);
    assert_eq!(report.records, count as u64 - 1);
    assert_eq!(report.end_offset, last);
    for i in 0..count - 1 {
        assert_eq!(p.get(&key(i)), Some(&value(i, 50)[..]), "key {i}");
    }
    assert_eq!(p.get(&key(count - 1)), None);
    p.put(b"after", b"the cut").unwrap();
    p.flush().unwrap();
    drop(p);
    let (p, report) = open_file(path, CAPACITY);
    assert_eq!(report.torn_tail_bytes, 0, "the cut bytes were zeroed");
    assert_eq!(report.records, count as u64);
    assert_eq!(p.get(b"after"), Some(&b"the cut"[..]));
    assert_eq!(p.get(&key(0)), Some(&value(0, 50)[..]));
    p.check_invariants();
}

#[test]
fn a_partly_zeroed_last_record_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.arena");
    let last = write_records(&path, 100);
    let len = record_bytes(key(0).len(), 50);
    // The last five bytes never reached the disk.
    patch(&path, last + len - 5, &[0; 5]);
    check_torn_tail(&path, 100, last, len - 5);
}

#[test]
fn a_flipped_byte_in_the_last_record_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.arena");
    let last = write_records(&path, 100);
    let len = record_bytes(key(0).len(), 50);
    patch(&path, last + 20, &[0xEE]);
    check_torn_tail(&path, 100, last, len);
}

#[test]
fn a_missing_header_with_its_body_written_is_cut() {
    // A crash between writing a record's body and its header leaves a zero
    // header (the end marker) with bytes after it.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.arena");
    let last = write_records(&path, 100);
    let len = record_bytes(key(0).len(), 50);
    patch(&path, last, &[0; RECORD_HEADER_BYTES_MIN as usize]);
    check_torn_tail(&path, 100, last, len);
}

#[test]
fn a_bad_record_in_the_middle_cuts_everything_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.arena");
    let last = write_records(&path, 100);
    let len = record_bytes(key(0).len(), 50);
    let bad = HEADER_BYTES + 50 * len;
    patch(&path, bad + 4, &[0x80, 0x00]); // a key length in a longer form
    let (p, report) = open_file(&path, CAPACITY);
    assert_eq!(report.records, 50);
    assert_eq!(report.torn_tail_bytes, last + len - bad);
    assert_eq!(p.get(&key(49)), Some(&value(49, 50)[..]));
    assert_eq!(p.get(&key(50)), None);
}

#[test]
fn bad_headers_are_errors_that_say_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.arena");
    write_records(&path, 3);
    patch(&path, 0, b"X");
    let e = Partition::open(Backing::File(path.clone()), CAPACITY)
        .err()
        .expect("bad magic is refused");
    assert!(matches!(e, StoreError::Corrupt { offset: 0, .. }), "{e:?}");
    assert!(e.to_string().contains("move the file aside"), "{e}");

    let short = dir.path().join("short.arena");
    std::fs::write(&short, b"DDSARENA").unwrap();
    let e = Partition::open(Backing::File(short), CAPACITY)
        .err()
        .expect("a short file is refused");
    assert!(matches!(e, StoreError::Corrupt { offset: 0, .. }), "{e:?}");

    // An all-zero header page with records after it: the header was lost.
    let headless = dir.path().join("headless.arena");
    write_records(&headless, 3);
    patch(&headless, 0, &[0; 64]);
    let e = Partition::open(Backing::File(headless), CAPACITY)
        .err()
        .expect("a lost header is refused");
    assert!(matches!(e, StoreError::Corrupt { offset: 0, .. }), "{e:?}");

    // A file whose length disagrees with its header.
    let cut = dir.path().join("cut.arena");
    write_records(&cut, 3);
    OpenOptions::new()
        .write(true)
        .open(&cut)
        .unwrap()
        .set_len(CAPACITY / 2)
        .unwrap();
    let e = Partition::open(Backing::File(cut), CAPACITY)
        .err()
        .expect("a truncated file is refused");
    assert!(matches!(e, StoreError::Corrupt { offset: 0, .. }), "{e:?}");
}

#[test]
fn arenas_grow_but_never_shrink() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.arena");
    write_records(&path, 10);
    let (mut p, report) = open_file(&path, 2 * CAPACITY);
    assert_eq!(report.live_keys, 10);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 2 * CAPACITY);
    assert_eq!(p.stats().capacity_bytes, 2 * CAPACITY);
    p.put(b"big", &vec![7; CAPACITY as usize]).unwrap();
    drop(p);
    let (p, _) = open_file(&path, 2 * CAPACITY);
    assert_eq!(p.get(b"big").map(<[u8]>::len), Some(CAPACITY as usize));
    drop(p);

    let e = Partition::open(Backing::File(path), CAPACITY)
        .err()
        .expect("shrinking is refused");
    assert!(
        matches!(e, StoreError::CapacityMismatch { file_bytes, configured_bytes }
            if file_bytes == 2 * CAPACITY && configured_bytes == CAPACITY),
        "{e:?}"
    );
    let message = e.to_string();
    assert!(
        message.contains(&(2 * CAPACITY).to_string()) && message.contains(&CAPACITY.to_string()),
        "{message}"
    );

    for capacity in [0, 100, CAPACITY_MAX + 1] {
        let e = Partition::open(Backing::Anonymous, capacity)
            .err()
            .expect("capacity out of range");
        assert!(
            matches!(e, StoreError::CapacityOutOfRange { configured_bytes } if configured_bytes == capacity)
        );
    }
}

#[test]
fn a_leftover_compaction_file_is_removed_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.arena");
    write_records(&path, 10);
    let leftover = PathBuf::from(format!("{}.compact", path.display()));
    std::fs::write(&leftover, b"half a compaction").unwrap();
    let (p, report) = open_file(&path, CAPACITY);
    assert_eq!(report.live_keys, 10);
    assert!(!leftover.exists());
    assert_eq!(p.get(&key(9)), Some(&value(9, 50)[..]));
}

#[test]
fn anonymous_bytes_reopen_like_a_file() {
    let mut p = anonymous(CAPACITY);
    for i in 0..300 {
        p.put(&key(i), &value(i, 60)).unwrap();
    }
    p.remove(&key(7)).unwrap();
    let bytes = p.bytes().to_vec();
    assert_eq!(bytes.len() as u64, p.end_offset());
    let (q, report) = Partition::reopen_anonymous(&bytes, CAPACITY).unwrap();
    assert_eq!(report.live_keys, 299);
    assert_eq!(report.torn_tail_bytes, 0);
    assert_eq!(snapshot(&q), snapshot(&p));

    // Bytes cut in the middle of the last record: a torn tail.
    let (q, report) = Partition::reopen_anonymous(&bytes[..bytes.len() - 3], CAPACITY).unwrap();
    assert_eq!(report.records, 300);
    assert_eq!(report.torn_tail_bytes, record_bytes(key(0).len(), 0) - 3);
    assert_eq!(
        q.get(&key(7)),
        Some(&value(7, 60)[..]),
        "the tombstone was cut"
    );
    q.check_invariants();

    // No bytes at all: a fresh partition. Too many: refused.
    let (q, report) = Partition::reopen_anonymous(&[], CAPACITY).unwrap();
    assert_eq!((report.live_keys, q.end_offset()), (0, HEADER_BYTES));
    assert!(matches!(
        Partition::reopen_anonymous(&bytes, 8192).err(),
        Some(StoreError::CapacityMismatch { .. })
    ));
}

#[test]
fn keys_with_prefix_are_sorted_and_exact() {
    let mut p = anonymous(CAPACITY);
    for name in ["t2/b", "t1/b", "t1/a", "t10/a", "t1", "u"] {
        p.put(name.as_bytes(), b"v").unwrap();
    }
    p.remove(b"t1/b").unwrap();
    let keys: Vec<String> = p
        .keys_with_prefix(b"t1/")
        .into_iter()
        .map(|k| String::from_utf8(k).unwrap())
        .collect();
    assert_eq!(keys, ["t1/a"]);
    assert_eq!(p.keys_with_prefix(b"t1").len(), 3);
    assert_eq!(p.keys_with_prefix(b"").len(), 5);
    assert!(p.keys_with_prefix(b"v").is_empty());
}

#[test]
fn the_checksum_depends_on_contents_only() {
    let mut a = anonymous(CAPACITY);
    let mut b = anonymous(CAPACITY);
    for i in 0..500 {
        a.put(&key(i), &value(i, 30)).unwrap();
        a.put(&key(i), &value(i + 1, 30)).unwrap();
    }
    for i in (0..500).step_by(5) {
        a.remove(&key(i)).unwrap();
    }
    for i in (0..500).rev().filter(|i| i % 5 != 0) {
        b.put(&key(i), &value(i + 1, 30)).unwrap();
    }
    assert_ne!(a.end_offset(), b.end_offset(), "different histories");
    assert_eq!(a.checksum(), b.checksum());
    assert_eq!(a.checksum().1, 400);

    b.put(&key(1), &value(1, 30)).unwrap();
    assert_ne!(
        a.checksum(),
        b.checksum(),
        "a changed value changes the checksum"
    );
    b.put(&key(1), &value(2, 30)).unwrap();
    assert_eq!(a.checksum(), b.checksum());

    // Where the key ends and the value begins counts.
    let mut c = anonymous(CAPACITY);
    let mut d = anonymous(CAPACITY);
    c.put(b"ab", b"c").unwrap();
    d.put(b"a", b"bc").unwrap();
    assert_ne!(c.checksum(), d.checksum());
}

/// A partition with overwrites and removes, so its arena holds dead
/// records and tombstones as well as live ones.
fn churned(count: usize) -> Partition {
    let mut p = anonymous(CAPACITY);
    for i in 0..count {
        p.put(&key(i), &value(i, 1 + i % 300)).unwrap();
    }
    for i in (0..count).step_by(3) {
        p.put(&key(i), &value(i + 1, 40)).unwrap();
    }
    for i in (0..count).step_by(5) {
        p.remove(&key(i)).unwrap();
    }
    p
}

#[test]
fn a_copy_by_chunks_rebuilds_the_same_partition() {
    let source = churned(2000);
    for (chunk_bytes, reserve) in [(1, false), (100, true), (4096, false), (1 << 20, true)] {
        let mut copy = anonymous(CAPACITY);
        if reserve {
            // Sized up front, as a copy's target is for the keys its source
            // holds; here for the 2000 keys the records hold at their most
            // (before the removes), so that the index never grows.
            copy.reserve_keys(2000);
        }
        let index_bytes = copy.stats().index_bytes;
        let mut offset = HEADER_BYTES;
        while offset < source.end_offset() {
            let chunk = source.chunk(offset, chunk_bytes);
            assert!(!chunk.is_empty(), "a chunk always holds a record");
            assert!(
                chunk.len() <= chunk_bytes.max(RECORD_HEADER_BYTES_MAX as usize + 9 + 300),
                "a chunk of {} bytes for a budget of {chunk_bytes}",
                chunk.len()
            );
            copy.append_chunk(offset, chunk).unwrap();
            offset += chunk.len() as u64;
        }
        copy.check_invariants();
        assert_eq!(
            snapshot(&copy),
            snapshot(&source),
            "chunks of {chunk_bytes}"
        );
        assert_eq!(copy.digest(), source.digest());
        if reserve {
            assert_eq!(
                copy.stats().index_bytes,
                index_bytes,
                "the index never grew"
            );
        }
    }
}

/// The key count a copy's source announces sizes the target's index, but
/// a count no arena of this capacity could hold is cut down to one key
/// per `RESERVE_BYTES_PER_KEY` bytes.
#[test]
fn a_reservation_is_capped_by_the_capacity() {
    let mut p = anonymous(CAPACITY);
    p.reserve_keys(u64::MAX);
    let most_keys = CAPACITY / brick::store::RESERVE_BYTES_PER_KEY;
    let bytes = p.stats().index_bytes;
    assert!(
        bytes >= most_keys * 8 * 8 / 7 && bytes <= most_keys * 8 * 8 / 7 + 64,
        "{bytes} bytes of index"
    );
    for i in 0..50 {
        p.put(&key(i), &value(i, 10)).unwrap();
    }
    p.check_invariants();
    assert_eq!(p.stats().index_bytes, bytes);
}

/// The receiving side learns every record's key and liveness from the
/// append itself (a brick tracks its tables that way), in order, and
/// nothing from a chunk it refuses.
#[test]
fn an_appended_chunk_reports_each_key_once_accepted() {
    let mut source = anonymous(CAPACITY);
    source.put(b"a", b"1").unwrap();
    source.put(b"b", b"2").unwrap();
    source.remove(b"a").unwrap();
    source.put(b"c", b"").unwrap();
    let chunk = source.chunk(HEADER_BYTES, 1 << 20).to_vec();
    let mut copy = anonymous(CAPACITY);
    let mut seen = Vec::new();
    let mut cut = chunk.clone();
    cut.pop();
    assert!(copy
        .append_chunk_with(HEADER_BYTES, &cut, ChunkCheck::Structure, |live, key| seen
            .push((live, key.to_vec())))
        .is_err());
    assert_eq!(seen, Vec::new(), "a refused chunk reports no key");
    copy.append_chunk_with(HEADER_BYTES, &chunk, ChunkCheck::Structure, |live, key| {
        seen.push((live, key.to_vec()))
    })
    .unwrap();
    let expected: Vec<(bool, Vec<u8>)> = vec![
        (true, b"a".to_vec()),
        (true, b"b".to_vec()),
        (false, b"a".to_vec()),
        (true, b"c".to_vec()),
    ];
    assert_eq!(seen, expected);
}

#[test]
fn a_corrupt_cut_or_misplaced_chunk_changes_nothing() {
    let source = churned(200);
    let chunk = source.chunk(HEADER_BYTES, 4096).to_vec();
    let mut copy = anonymous(CAPACITY);
    let before = snapshot(&copy);
    let refused =
        |copy: &mut Partition, offset: u64, bytes: &[u8]| match copy.append_chunk(offset, bytes) {
            Err(StoreError::Corrupt { .. }) => {}
            other => panic!("{other:?}"),
        };
    // A flipped byte in the middle fails that record's crc.
    let mut flipped = chunk.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x40;
    refused(&mut copy, HEADER_BYTES, &flipped);
    // A chunk cut inside a record.
    refused(&mut copy, HEADER_BYTES, &chunk[..chunk.len() - 3]);
    // Zeros where a record should be.
    refused(&mut copy, HEADER_BYTES, &[0; 64]);
    // Bytes meant for another offset.
    refused(&mut copy, HEADER_BYTES + 11, &chunk);
    assert_eq!(snapshot(&copy), before, "a refused chunk wrote nothing");
    copy.check_invariants();
    // Checking the structure only, a cut chunk, zeros and a misplaced
    // chunk are refused alike; a byte flipped in the last record's key or
    // value is not seen (a crc over the whole chunk is what covers that, on
    // the wire), where checking the records refuses it.
    for (offset, bytes) in [
        (HEADER_BYTES, &chunk[..chunk.len() - 3]),
        (HEADER_BYTES, &[0; 64][..]),
        (HEADER_BYTES + 11, &chunk[..]),
    ] {
        assert!(matches!(
            copy.append_chunk_with(offset, bytes, ChunkCheck::Structure, |_, _| {}),
            Err(StoreError::Corrupt { .. })
        ));
    }
    assert_eq!(snapshot(&copy), before, "a refused chunk wrote nothing");
    let mut in_value = chunk.clone();
    let last = in_value.len() - 1;
    in_value[last] ^= 0x40;
    assert!(copy.append_chunk(HEADER_BYTES, &in_value).is_err());
    let mut taken = anonymous(CAPACITY);
    taken
        .append_chunk_with(HEADER_BYTES, &in_value, ChunkCheck::Structure, |_, _| {})
        .unwrap();
    taken.check_invariants();
    // The good chunk still goes in.
    copy.append_chunk(HEADER_BYTES, &chunk).unwrap();
    copy.check_invariants();
}

/// A partition emptied in place for a copy reads, after a reopen, as what
/// was copied so far: none of the old records past it come back.
#[test]
fn a_partition_reset_for_a_copy_reopens_without_its_old_records() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.arena");
    let (mut target, _) = open_file(&path, CAPACITY);
    for i in 0..500 {
        target.put(&key(i), &value(i, 100)).unwrap();
    }
    let source = churned(300);
    target.reset();
    assert_eq!(target.stats().keys, 0);
    assert_eq!(target.end_offset(), HEADER_BYTES);
    // Half of the source's records, then a reopen, as after a crash
    // in the middle of a copy.
    let half = source.chunk(HEADER_BYTES, (source.end_offset() / 2) as usize);
    target.append_chunk(HEADER_BYTES, half).unwrap();
    let expected_end = target.end_offset();
    target.flush().unwrap();
    drop(target);
    let (reopened, report) = open_file(&path, CAPACITY);
    assert_eq!(
        report.end_offset, expected_end,
        "stops where the copy stopped"
    );
    // The old records past the mark are cut off as a torn tail.
    assert!(report.torn_tail_bytes > 0);
    reopened.check_invariants();
    for i in 300..500 {
        assert_eq!(reopened.get(&key(i)), None, "old key {i} came back");
    }
    // A whole copy over a reset partition equals the source.
    let mut again = reopened;
    again.reset();
    let mut offset = HEADER_BYTES;
    while offset < source.end_offset() {
        let chunk = source.chunk(offset, 4096);
        again.append_chunk(offset, chunk).unwrap();
        offset += chunk.len() as u64;
    }
    again.check_invariants();
    assert_eq!(snapshot(&again), snapshot(&source));
}

/// Sends `source`'s records into `filling` in chunks of `chunk_bytes`.
fn fill_from(filling: &mut Filling, source: &Partition, chunk_bytes: usize) {
    let mut offset = HEADER_BYTES;
    while offset < source.end_offset() {
        let chunk = source.chunk(offset, chunk_bytes);
        filling
            .append_chunk_with(offset, chunk, ChunkCheck::Structure, |_, _| {})
            .unwrap();
        offset += chunk.len() as u64;
    }
}

/// A copy received as a brick receives one, its records indexed on a
/// helper thread, comes back equal to the source: into memory, into a
/// fresh file, and over a file that held other data (which a reopen then
/// does not bring back).
#[test]
fn a_copy_indexed_on_a_helper_thread_equals_the_source() {
    let source = churned(2000);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.arena");
    let (mut old, _) = open_file(&path, CAPACITY);
    for i in 0..3000 {
        old.put(&key(i), &value(i, 100)).unwrap();
    }
    old.reset();
    let fresh = open_file(&dir.path().join("fresh.arena"), CAPACITY).0;
    for (name, mut target, chunk_bytes) in [
        ("memory", anonymous(CAPACITY), 100),
        ("a fresh file", fresh, 1 << 20),
        ("old data", old, 4096),
    ] {
        target.set_compaction_paused(true);
        target.reserve_keys(2000);
        let index_bytes = target.stats().index_bytes;
        let mut filling = target.into_filling().unwrap();
        assert_eq!(filling.capacity_bytes(), CAPACITY);
        fill_from(&mut filling, &source, chunk_bytes);
        let (copy, _) = filling.finish().unwrap();
        copy.check_invariants();
        assert_eq!(snapshot(&copy), snapshot(&source), "{name}");
        assert_eq!(copy.digest(), source.digest(), "{name}");
        assert_eq!(copy.end_offset(), source.end_offset(), "{name}");
        assert_eq!(copy.stats().index_bytes, index_bytes, "{name}: no growth");
        if name == "old data" {
            copy.flush().unwrap();
            drop(copy);
            let (reopened, report) = open_file(&path, CAPACITY);
            assert_eq!(report.end_offset, source.end_offset());
            reopened.check_invariants();
            assert_eq!(snapshot(&reopened), snapshot(&source), "reopened");
        }
    }
}

/// A chunk the helper-thread path refuses changes nothing, and the copy
/// goes on with the right chunk; the keys are reported once a chunk is
/// written, and none of a refused one.
#[test]
fn a_copy_on_a_helper_thread_refuses_bad_chunks_and_goes_on() {
    let source = churned(300);
    let chunk = source.chunk(HEADER_BYTES, 4096).to_vec();
    let mut filling = anonymous(CAPACITY).into_filling().unwrap();
    let mut seen = 0;
    for (offset, bytes) in [
        (HEADER_BYTES, &chunk[..chunk.len() - 3]),
        (HEADER_BYTES, &[0; 64][..]),
        (HEADER_BYTES + 11, &chunk[..]),
    ] {
        assert!(matches!(
            filling.append_chunk_with(offset, bytes, ChunkCheck::Structure, |_, _| seen += 1),
            Err(StoreError::Corrupt { .. })
        ));
    }
    assert_eq!(seen, 0, "a refused chunk reports no key");
    let mut flipped = chunk.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x40;
    assert!(matches!(
        filling.append_chunk_with(HEADER_BYTES, &flipped, ChunkCheck::Records, |_, _| {}),
        Err(StoreError::Corrupt { .. })
    ));
    filling
        .append_chunk_with(HEADER_BYTES, &chunk, ChunkCheck::Structure, |_, _| {
            seen += 1
        })
        .unwrap();
    assert!(seen > 0);
    let mut offset = HEADER_BYTES + chunk.len() as u64;
    // A chunk too large for the room left.
    let huge = vec![0; CAPACITY as usize];
    assert!(matches!(
        filling.append_chunk_with(offset, &huge, ChunkCheck::Structure, |_, _| {}),
        Err(StoreError::Full { .. })
    ));
    while offset < source.end_offset() {
        let next = source.chunk(offset, 4096);
        filling
            .append_chunk_with(offset, next, ChunkCheck::Structure, |_, _| {})
            .unwrap();
        offset += next.len() as u64;
    }
    let (copy, _) = filling.finish().unwrap();
    copy.check_invariants();
    assert_eq!(snapshot(&copy), snapshot(&source));
}

/// A copy abandoned half way (its `Filling` dropped, as when the source
/// goes silent) stops its helper, and the file reopens as what was
/// written: none of the old records past it come back.
#[test]
fn a_copy_dropped_half_way_reopens_as_what_was_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.arena");
    let (mut target, _) = open_file(&path, CAPACITY);
    for i in 0..500 {
        target.put(&key(i), &value(i, 100)).unwrap();
    }
    target.flush().unwrap();
    target.reset();
    let source = churned(300);
    let mut filling = target.into_filling().unwrap();
    let mut offset = HEADER_BYTES;
    while offset < source.end_offset() / 2 {
        let chunk = source.chunk(offset, 512);
        filling
            .append_chunk_with(offset, chunk, ChunkCheck::Structure, |_, _| {})
            .unwrap();
        offset += chunk.len() as u64;
    }
    drop(filling);
    let (reopened, report) = open_file(&path, CAPACITY);
    assert_eq!(report.end_offset, offset, "stops where the copy stopped");
    assert!(
        report.torn_tail_bytes > 0,
        "the old records are a torn tail"
    );
    reopened.check_invariants();
    for i in 300..500 {
        assert_eq!(reopened.get(&key(i)), None, "old key {i} came back");
    }
}

#[test]
fn the_digest_depends_on_the_data_not_on_the_order_it_was_written() {
    let mut forward = anonymous(CAPACITY);
    let mut backward = anonymous(CAPACITY);
    for i in 0..200 {
        forward.put(&key(i), &value(i, 40)).unwrap();
        backward.put(&key(199 - i), &value(199 - i, 40)).unwrap();
    }
    assert_eq!(forward.digest(), backward.digest());
    assert_eq!(forward.digest().1, 200);

    // One value differing in one byte, or in its length, or one key
    // missing: the digests differ.
    let mut changed = value(7, 40);
    changed[39] ^= 1;
    backward.put(&key(7), &changed).unwrap();
    assert_ne!(forward.digest(), backward.digest());
    backward.put(&key(7), &value(7, 41)).unwrap();
    assert_ne!(forward.digest(), backward.digest());
    backward.put(&key(7), &value(7, 40)).unwrap();
    assert_eq!(forward.digest(), backward.digest());
    backward.remove(&key(8)).unwrap();
    assert_ne!(forward.digest().0, backward.digest().0);
    backward.put(&key(8), &value(8, 40)).unwrap();
    assert_eq!(forward.digest(), backward.digest());
}

/// What an appended chunk may do, with either check: go in whole, keeping
/// every invariant, or be refused as corrupt having written nothing.
fn append_or_refuse(bytes: &[u8]) {
    for check in [ChunkCheck::Records, ChunkCheck::Structure] {
        let mut copy = anonymous(CAPACITY);
        let before = snapshot(&copy);
        match copy.append_chunk_with(HEADER_BYTES, bytes, check, |_, _| {}) {
            Ok(()) => copy.check_invariants(),
            Err(StoreError::Corrupt { .. }) => {
                assert_eq!(snapshot(&copy), before, "a refused chunk wrote nothing");
                assert_eq!(copy.end_offset(), HEADER_BYTES);
            }
            Err(other) => panic!("{check:?}: {other:?}"),
        }
        // The same through a helper thread, as a brick receives a copy.
        let mut filling = anonymous(CAPACITY).into_filling().unwrap();
        let taken = filling.append_chunk_with(HEADER_BYTES, bytes, check, |_, _| {});
        let (copy, _) = filling.finish().unwrap();
        match taken {
            Ok(()) => copy.check_invariants(),
            Err(StoreError::Corrupt { .. }) => {
                assert_eq!(snapshot(&copy), before, "a refused chunk wrote nothing");
                assert_eq!(copy.end_offset(), HEADER_BYTES);
            }
            Err(other) => panic!("{check:?} on a helper thread: {other:?}"),
        }
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig {
        failure_persistence: None,
        ..proptest::prelude::ProptestConfig::default()
    })]

    /// A copy chunk is bytes from the network: any bytes at all are
    /// refused or taken, never a panic.
    #[test]
    fn any_bytes_as_a_chunk_are_refused_or_taken(
        bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600),
    ) {
        append_or_refuse(&bytes);
    }

    /// A good chunk with bytes overwritten anywhere (lengths, crcs, keys,
    /// values) is refused or taken whole, never half.
    #[test]
    fn a_damaged_chunk_is_refused_or_taken_whole(
        edits in proptest::collection::vec(
            (proptest::prelude::any::<proptest::sample::Index>(), proptest::prelude::any::<u8>()),
            1..4,
        ),
    ) {
        let source = churned(40);
        let mut chunk = source.chunk(HEADER_BYTES, 4096).to_vec();
        for (at, byte) in edits {
            let at = at.index(chunk.len());
            chunk[at] = byte;
        }
        append_or_refuse(&chunk);
    }
}

fn tail_free(p: &Partition) -> u64 {
    let stats = p.stats();
    stats.capacity_bytes - HEADER_BYTES - stats.used_bytes
}

#[test]
fn a_full_arena_compacts_and_removes_while_the_index_grows_in_steps() {
    // The first new key that starts a growth in steps (the table is then
    // past 4,096 slots): growth depends only on the number of keys.
    let starts_growth = {
        let mut p = anonymous(CAPACITY);
        (0..).find(|&i| {
            p.put(&key(i), &value(i, 4)).unwrap();
            p.index_growing()
        })
    }
    .unwrap();
    // The arena has room for those keys, 30 records more and 5 bytes.
    // While entries move, overwrites fill the tail and compact
    // synchronously, and a remove that finds no room for its tombstone
    // compacts without its key.
    let rec = record_bytes(9, 4);
    let mut p = anonymous(HEADER_BYTES + (starts_growth as u64 + 31) * rec + 5);
    let mut model = BTreeMap::new();
    let put = |p: &mut Partition, model: &mut BTreeMap<_, _>, i: usize, v: usize| {
        p.put(&key(i), &value(v, 4)).unwrap();
        model.insert(key(i), value(v, 4));
    };
    for i in 0..starts_growth {
        put(&mut p, &mut model, i, i);
    }
    assert!(!p.index_growing());
    put(&mut p, &mut model, starts_growth, 0);
    assert!(p.index_growing(), "{:?}", p.stats());
    let n = starts_growth + 1;
    let (mut compactions, mut removes_compacting) = (0, 0);
    let mut round = 0;
    while p.index_growing() {
        round += 1;
        // Overwrites until the tail has no room for a tombstone.
        while tail_free(&p) >= record_bytes(9, 0) {
            let generation = p.generation();
            put(&mut p, &mut model, (round * 7919) % n, round);
            compactions += p.generation() - generation;
            round += 1;
        }
        let generation = p.generation();
        let gone = key((round * 104_729) % n);
        assert_eq!(p.remove(&gone).unwrap(), model.remove(&gone).is_some());
        removes_compacting += p.generation() - generation;
        compactions += p.generation() - generation;
        p.check_invariants();
        for (k, v) in &model {
            assert_eq!(p.get(k), Some(&v[..]), "key {k:?} in round {round}");
        }
        assert_eq!(p.stats().keys, model.len() as u64);
        assert!(round < 100_000, "the index never finished growing");
    }
    assert!(compactions >= 3, "{compactions} compactions while growing");
    assert!(removes_compacting >= 1, "no remove compacted while growing");
    let digest = p.digest();
    let (p, _) = Partition::reopen_anonymous(p.bytes(), p.stats().capacity_bytes).unwrap();
    assert_eq!(p.digest(), digest);
    p.check_invariants();
}

#[test]
fn idle_steps_end_an_index_growth_and_free_the_old_table() {
    let mut p = anonymous(CAPACITY);
    let mut i = 0;
    while !p.index_growing() {
        p.put(&key(i), &value(i, 4)).unwrap();
        i += 1;
    }
    let growing_bytes = p.stats().index_bytes;
    let mut steps = 0;
    while p.grow_index_step(256) {
        steps += 1;
        assert!(steps < 100, "the growth does not end");
    }
    assert!(
        steps >= 2,
        "{steps} steps of 256 slots moved a table of 4,096 or more"
    );
    assert!(!p.index_growing());
    let stats = p.stats();
    // Only the grown table is left: about 9/8 of the old one's slots, where
    // both made about 17/8.
    let share = stats.index_bytes as f64 / growing_bytes as f64;
    assert!(
        (share - 9.0 / 17.0).abs() < 0.01,
        "{share} of {growing_bytes} bytes left"
    );
    for j in 0..i {
        assert_eq!(p.get(&key(j)), Some(&value(j, 4)[..]), "key {j}");
    }
    p.check_invariants();
}

/// An index snapshot as a copy's target receives it: in parts of
/// `part_slots` slots, in order.
fn image_of(slots: &[u64], part_slots: usize) -> IndexImage {
    let mut image = IndexImage::new(slots.len() as u64).unwrap();
    for (i, part) in slots.chunks(part_slots).enumerate() {
        assert!(!image.is_complete());
        let bytes: Vec<u8> = part.iter().flat_map(|s| s.to_le_bytes()).collect();
        image.write((i * part_slots) as u64, &bytes).unwrap();
    }
    assert!(image.is_complete());
    image
}

/// Sends every chunk of `source` to `filling`, stopping at the first one
/// refused; returns the keys reported with the prefix `\xff` and the first
/// error.
fn send_all(
    filling: &mut Filling,
    source: &Partition,
    chunk_bytes: usize,
) -> (Vec<(bool, Vec<u8>)>, Option<StoreError>) {
    let mut marked = Vec::new();
    let mut offset = HEADER_BYTES;
    while offset < source.end_offset() {
        let chunk = source.chunk(offset, chunk_bytes);
        let result =
            filling.append_chunk_with(offset, chunk, ChunkCheck::Structure, |live, key| {
                if key.first() == Some(&0xff) {
                    marked.push((live, key.to_vec()));
                }
            });
        if let Err(e) = result {
            return (marked, Some(e));
        }
        offset += chunk.len() as u64;
    }
    (marked, None)
}

/// A source whose arena was compacted once, so its generation's parity
/// differs from a new arena's.
fn compacted_source() -> Partition {
    let mut p = churned(1000);
    for round in 0..100 {
        for i in 0..1000 {
            p.put(&key(i), &value(i + round, 200)).unwrap();
        }
        if p.generation() == 1 {
            return p;
        }
    }
    panic!("the arena never compacted");
}

/// A copy that comes with its source's index, taken part way (writes go
/// on after it: new keys, overwrites, removes), comes back equal to the
/// source: into memory, into a fresh file, over old data, from a source of
/// the other arena parity, with chunks that cross the index's end. The
/// markers below the index's end come back from `finish` in arena order,
/// those past it from the chunks.
/// Waits, a bounded time, for a snapshot room's memory to be faulted in.
fn ready(room: SnapshotRoom) -> SnapshotRoom {
    for _ in 0..1000 {
        if room.is_ready() {
            return room;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    panic!("the snapshot room's thread did not finish in 2 s");
}

#[test]
fn an_index_snapshot_is_the_same_in_any_room() {
    let mut p = anonymous(CAPACITY);
    p.put(b"first", b"1").unwrap();
    let slots_at_first = p.index_snapshot().unwrap().slots.len();
    let small = ready(p.index_snapshot_room());
    for i in 0..30_000 {
        p.put(&key(i), &value(i, 10)).unwrap();
    }
    let expected = p.index_snapshot().unwrap();
    assert!(expected.slots.len() > slots_at_first, "the index grew");
    assert_eq!(expected.slots.iter().filter(|&&s| s != 0).count(), 30_001);
    let room = ready(p.index_snapshot_room());
    assert_eq!(p.index_snapshot_in(room).unwrap(), expected, "a ready room");
    assert_eq!(
        p.index_snapshot_in(small).unwrap(),
        expected,
        "a room too small"
    );
    let unready = p.index_snapshot_room();
    assert_eq!(p.index_snapshot_in(unready).unwrap(), expected);
    assert_eq!(
        p.index_snapshot_in(SnapshotRoom::default()).unwrap(),
        expected
    );
    assert!(!SnapshotRoom::default().is_ready());
}

#[test]
fn a_copy_with_its_sources_index_equals_the_source() {
    let dir = tempfile::tempdir().unwrap();
    let (mut old, _) = open_file(&dir.path().join("old.arena"), CAPACITY);
    for i in 0..3000 {
        old.put(&key(i), &value(i, 100)).unwrap();
    }
    old.reset();
    let fresh = open_file(&dir.path().join("fresh.arena"), CAPACITY).0;
    for (name, mut source, target, chunk_bytes) in [
        ("memory", churned(2000), anonymous(CAPACITY), 100),
        ("a fresh file", compacted_source(), fresh, 4096),
        ("old data", churned(2000), old, 1 << 20),
    ] {
        source.put(b"\xffone", b"").unwrap();
        source.put(b"\xfftwo", b"").unwrap();
        source.remove(b"\xfftwo").unwrap();
        let snap: IndexSnapshot = source.index_snapshot().unwrap();
        assert_eq!(snap.end, source.end_offset());
        for i in 0..300 {
            source.put(&key(i * 7), &value(i, 30)).unwrap();
            source.put(&key(5000 + i), &value(i, 20)).unwrap();
            source.remove(&key(i * 11 + 1)).unwrap();
        }
        source.remove(b"\xffone").unwrap();
        let mut target = target;
        target.set_compaction_paused(true);
        let mut filling = target.into_filling().unwrap();
        let image = image_of(&snap.slots, 7);
        assert!(
            filling.use_index(image, snap.end, snap.location_bits, b"\xff"),
            "{name}"
        );
        assert!(filling.uses_index());
        let (past, error) = send_all(&mut filling, &source, chunk_bytes);
        assert!(error.is_none(), "{name}: {error:?}");
        let (copy, below) = filling.finish().unwrap();
        copy.check_invariants();
        assert_eq!(snapshot(&copy), snapshot(&source), "{name}");
        assert_eq!(copy.digest(), source.digest(), "{name}");
        let one = b"\xffone".to_vec();
        let two = b"\xfftwo".to_vec();
        assert_eq!(
            below,
            [(true, one.clone()), (true, two.clone()), (false, two)],
            "{name}"
        );
        assert_eq!(past, [(false, one)], "{name}");
    }
}

/// An index that does not describe the records it came with is never
/// taken: an entry inside a record, at a tombstone, past the index's end,
/// twice at one record, a record damaged below the end, a table too full
/// to probe. Each fails the copy. A missing entry passes the check but
/// not the digest, which the brick compares with the source's.
#[test]
fn a_copy_refuses_an_index_that_does_not_match_its_records() {
    let mut source = churned(2000);
    let tombstone = source.end_offset();
    source.remove(&key(1)).unwrap();
    let snap = source.index_snapshot().unwrap();
    let offset_bits = snap.location_bits - 1;
    let with_offset = |slot: u64, offset: u64| (slot & !((1 << offset_bits) - 1)) | offset;
    let offset_of = |slot: u64| slot & ((1 << offset_bits) - 1);
    let entries: Vec<usize> = (0..snap.slots.len())
        .filter(|&i| snap.slots[i] != 0)
        .collect();
    let (a, b) = (entries[3], entries[4]);
    let changed = |change: &dyn Fn(&mut Vec<u64>)| {
        let mut slots = snap.slots.clone();
        change(&mut slots);
        slots
    };
    let cases: Vec<(&str, Vec<u64>)> = vec![
        (
            "inside a record",
            changed(&|s| s[a] = with_offset(s[a], offset_of(s[a]) + 1)),
        ),
        (
            "at a tombstone",
            changed(&|s| s[a] = with_offset(s[a], tombstone)),
        ),
        (
            "past the end",
            changed(&|s| s[a] = with_offset(s[a], snap.end)),
        ),
        ("in the header", changed(&|s| s[a] = with_offset(s[a], 8))),
        (
            "twice at a record",
            changed(&|s| s[a] = with_offset(s[a], offset_of(s[b]))),
        ),
    ];
    for (name, slots) in cases {
        let mut filling = anonymous(CAPACITY).into_filling().unwrap();
        assert!(filling.use_index(image_of(&slots, 64), snap.end, snap.location_bits, b""));
        let (_, error) = send_all(&mut filling, &source, 4096);
        let finished = filling.finish();
        assert!(
            matches!(error, Some(StoreError::Corrupt { .. }))
                || matches!(finished, Err(StoreError::Corrupt { .. })),
            "{name}: {error:?}"
        );
    }

    // A record damaged below the index's end (its key length past the
    // limit), though the index is right.
    let mut filling = anonymous(CAPACITY).into_filling().unwrap();
    assert!(filling.use_index(image_of(&snap.slots, 64), snap.end, snap.location_bits, b""));
    let mut first = source.chunk(HEADER_BYTES, 4096).to_vec();
    first[4..7].copy_from_slice(&[0xff, 0xff, 0x7f]);
    filling
        .append_chunk_with(HEADER_BYTES, &first, ChunkCheck::Structure, |_, _| {})
        .expect("below the index's end the helper checks the records");
    assert!(matches!(filling.finish(), Err(StoreError::Corrupt { .. })));

    // A table with no empty slot, whose probes would never end.
    let mut filling = anonymous(CAPACITY).into_filling().unwrap();
    let full = vec![with_offset(1 << 40, HEADER_BYTES); 16];
    assert!(filling.use_index(image_of(&full, 16), snap.end, snap.location_bits, b""));
    let (_, error) = send_all(&mut filling, &source, 4096);
    assert!(error.is_some() || filling.finish().is_err());

    // A missing entry: every check passes, the digest does not.
    let mut filling = anonymous(CAPACITY).into_filling().unwrap();
    let missing = changed(&|s| s[a] = 0);
    assert!(filling.use_index(image_of(&missing, 64), snap.end, snap.location_bits, b""));
    assert!(send_all(&mut filling, &source, 4096).1.is_none());
    let (copy, _) = filling.finish().unwrap();
    assert_ne!(copy.digest(), source.digest());
}

/// An index the target cannot use is not taken, and the copy goes on as
/// without one: incomplete, of other location bits, describing more than
/// the arena holds, or arriving after the first chunk. Parts out of order
/// or too large are refused.
#[test]
fn an_index_that_cannot_be_used_is_left_aside() {
    let source = churned(500);
    let snap = source.index_snapshot().unwrap();
    let mut filling = anonymous(CAPACITY).into_filling().unwrap();
    let mut partial = IndexImage::new(snap.slots.len() as u64).unwrap();
    assert!(partial.write(1, &[0; 8]).is_err(), "out of order");
    assert!(partial.write(0, &[0; 7]).is_err(), "not whole slots");
    let too_many = vec![0; (snap.slots.len() + 1) * 8];
    assert!(partial.write(0, &too_many).is_err(), "past the table");
    partial.write(0, &[0; 8]).unwrap();
    assert!(!filling.use_index(partial, snap.end, snap.location_bits, b""));
    let bits = snap.location_bits + 1;
    assert!(!filling.use_index(image_of(&snap.slots, 64), snap.end, bits, b""));
    let beyond = CAPACITY + 1;
    assert!(!filling.use_index(image_of(&snap.slots, 64), beyond, snap.location_bits, b""));
    assert!(IndexImage::new(3).is_none(), "fewer slots than any table");
    let first = source.chunk(HEADER_BYTES, 4096);
    filling
        .append_chunk_with(HEADER_BYTES, first, ChunkCheck::Structure, |_, _| {})
        .unwrap();
    assert!(!filling.use_index(image_of(&snap.slots, 64), snap.end, snap.location_bits, b""));
    assert!(!filling.uses_index());
    let mut offset = HEADER_BYTES + first.len() as u64;
    while offset < source.end_offset() {
        let chunk = source.chunk(offset, 4096);
        filling
            .append_chunk_with(offset, chunk, ChunkCheck::Structure, |_, _| {})
            .unwrap();
        offset += chunk.len() as u64;
    }
    let (copy, below) = filling.finish().unwrap();
    assert!(below.is_empty());
    assert_eq!(snapshot(&copy), snapshot(&source));
}

/// A copy's chunks cover the arena in order whatever it went through
/// (appends, a reopen, more appends, a compaction, a reset), every chunk
/// whose crc the arena kept carries its bytes' crc, and a chunk walked
/// from the records ends where such a kept one begins.
#[test]
fn copy_chunks_cover_the_arena_and_carry_their_bytes_crc_when_kept() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.arena");
    let capacity = 8 << 20;
    // Returns how many chunks came with a kept crc and how many were walked.
    let chunks = |p: &Partition| {
        let (mut offset, mut kept, mut walked) = (HEADER_BYTES, 0, 0);
        let mut all = Vec::new();
        while offset < p.end_offset() {
            let (bytes, crc) = p.copy_chunk(offset, COPY_CHUNK_BYTES);
            assert!(!bytes.is_empty() && bytes.len() <= COPY_CHUNK_BYTES);
            assert_eq!(bytes, p.chunk(offset, COPY_CHUNK_BYTES), "the same records");
            match crc {
                Some(crc) => {
                    assert_eq!(crc, crc32fast::hash(bytes), "at {offset}");
                    kept += 1;
                }
                None => walked += 1,
            }
            all.extend_from_slice(bytes);
            offset += bytes.len() as u64;
        }
        assert_eq!(all, p.bytes()[HEADER_BYTES as usize..]);
        (kept, walked)
    };
    let (mut p, _) = open_file(&path, capacity);
    for i in 0..20_000 {
        p.put(&key(i), &value(i, 150)).unwrap();
    }
    let (kept, walked) = chunks(&p);
    assert!(kept >= 5, "{kept}");
    assert_eq!(walked, 1, "only the stretch still open");

    // Reopened, the records found are cut as the appends were, and the
    // appends after that go on from where the scan left off.
    drop(p);
    let (mut p, _) = open_file(&path, capacity);
    assert_eq!(chunks(&p), (kept, walked));
    for i in 0..10_000 {
        p.put(&key(i), &value(i + 1, 150)).unwrap();
    }
    let (more, walked) = chunks(&p);
    assert!(more >= kept + 2 && walked == 1, "{more} {walked}");

    // A compaction's new arena is cut as its records are copied in.
    let generation = p.generation();
    for round in 0..20 {
        for i in 0..20_000 {
            p.put(&key(i), &value(i + round, 150)).unwrap();
        }
        if p.generation() != generation {
            break;
        }
    }
    assert_ne!(p.generation(), generation, "compacted");
    let (kept, _) = chunks(&p);
    assert!(kept >= 2, "{kept}");

    p.reset();
    assert_eq!(chunks(&p), (0, 0));
    for i in 0..5_000 {
        p.put(&key(i), &value(i, 150)).unwrap();
    }
    let (kept, walked) = chunks(&p);
    assert!(kept >= 1 && walked == 1, "{kept} {walked}");
}
