//! Messages for the wire tests: a hand-written sample of every variant,
//! including empty and largest-allowed fields, and a seeded random
//! generator for the fuzz test. Each test binary uses a different part.
#![allow(dead_code)]

use maps::{BrickId, PartitionId, RgId};
use rand::Rng;
use wire::limits::{
    COPY_CHUNK_SIZE_MAX, ERROR_MESSAGE_SIZE_MAX, KEY_SIZE_MAX, MAPS_SIZE_MAX, PARTICIPANTS_MAX,
    STATS_ENTRIES_MAX, STAT_NAME_SIZE_MAX, TABLE_NAME_SIZE_MAX, VALUE_SIZE_MAX,
};
use wire::{
    Accepted, Ballot, Digest, ErrorCode, ErrorReply, Message, Reply, Request, TxId, TxState, Write,
};

pub const ERROR_CODES: [ErrorCode; 14] = [
    ErrorCode::FingerprintMismatch,
    ErrorCode::LockConflict,
    ErrorCode::PartitionFull,
    ErrorCode::Busy,
    ErrorCode::NotReplica,
    ErrorCode::Malformed,
    ErrorCode::TableNotFound,
    ErrorCode::TableExists,
    ErrorCode::Fenced,
    ErrorCode::Refused,
    ErrorCode::UnknownTransaction,
    ErrorCode::Internal,
    ErrorCode::Restarted,
    ErrorCode::WritesHeld,
];

pub const TX_STATES: [TxState; 4] = [
    TxState::Unknown,
    TxState::Prepared,
    TxState::Committed,
    TxState::Aborted,
];

/// A byte string whose bytes differ from position to position, so a decoder
/// that shifted or mixed fields would be caught.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

pub fn prepare(key: Vec<u8>, write: Write) -> Request {
    Request::Prepare {
        txid: TxId(0x1122_3344_5566_7788),
        partition: PartitionId(0x8877_6655_4433_2211),
        fingerprint: 0xcafe_f00d,
        table: b"users".to_vec(),
        key,
        write,
        participants: vec![BrickId(1), BrickId(2), BrickId(u32::MAX)],
        decide: false,
    }
}

/// Every request variant at least once, with edge cases: empty and
/// largest-allowed byte strings, extreme integers.
pub fn sample_requests() -> Vec<Request> {
    vec![
        Request::Ping,
        Request::GetMaps,
        Request::CreateTable {
            name: b"t".to_vec(),
        },
        Request::CreateTable {
            name: pattern(TABLE_NAME_SIZE_MAX, 1),
        },
        Request::DestroyTable { name: Vec::new() },
        Request::DestroyTable {
            name: b"users".to_vec(),
        },
        Request::Get {
            partition: PartitionId(7),
            fingerprint: 0xdead_beef,
            table: b"users".to_vec(),
            key: b"alice".to_vec(),
        },
        Request::Get {
            partition: PartitionId(u64::MAX),
            fingerprint: 0,
            table: Vec::new(),
            key: pattern(KEY_SIZE_MAX, 2),
        },
        prepare(b"k".to_vec(), Write::Put(pattern(150, 3))),
        prepare(b"k".to_vec(), Write::Put(Vec::new())),
        prepare(
            pattern(KEY_SIZE_MAX, 4),
            Write::Put(pattern(VALUE_SIZE_MAX, 5)),
        ),
        prepare(b"gone".to_vec(), Write::Remove),
        Request::Prepare {
            txid: TxId(0),
            partition: PartitionId(0),
            fingerprint: u32::MAX,
            table: Vec::new(),
            key: Vec::new(),
            write: Write::Remove,
            participants: Vec::new(),
            decide: true,
        },
        Request::Prepare {
            txid: TxId(u64::MAX),
            partition: PartitionId(3),
            fingerprint: 1,
            table: b"t".to_vec(),
            key: b"k".to_vec(),
            write: Write::Put(b"v".to_vec()),
            participants: (0..PARTICIPANTS_MAX as u32).map(BrickId).collect(),
            decide: false,
        },
        Request::Commit {
            txid: TxId(42),
            partition: PartitionId(9),
        },
        Request::Abort {
            txid: TxId(u64::MAX),
            partition: PartitionId(1),
        },
        Request::TxStatus {
            txid: TxId(1 << 63),
            partition: PartitionId(12345),
        },
        Request::Exclude {
            rg: RgId(3),
            epoch: 17,
            brick: BrickId(5),
        },
        Request::PushMaps {
            maps: pattern(1000, 6),
        },
        Request::PushMaps {
            maps: pattern(MAPS_SIZE_MAX, 7),
        },
        Request::LeaseRenew {
            rg: RgId(u32::MAX),
            epoch: u64::MAX,
            from: BrickId(0),
            incarnation: u64::MAX,
            blank: Some(Digest {
                sum: u64::MAX,
                keys: u64::MAX,
            }),
        },
        Request::Stats,
        Request::PartitionChecksum {
            partition: PartitionId(99),
        },
        Request::CopyBegin {
            rg: RgId(2),
            epoch: 9,
            partition: PartitionId(5),
            full: true,
            keys: 600_000,
            maps: pattern(MAPS_SIZE_MAX, 14),
        },
        Request::CopyBegin {
            rg: RgId(u32::MAX),
            epoch: u64::MAX,
            partition: PartitionId(0),
            full: false,
            keys: u64::MAX,
            maps: Vec::new(),
        },
        Request::CopyChunk {
            partition: PartitionId(5),
            offset: 64,
            bytes: pattern(COPY_CHUNK_SIZE_MAX, 15),
            end: None,
        },
        Request::CopyChunk {
            partition: PartitionId(u64::MAX),
            offset: u64::MAX,
            bytes: Vec::new(),
            end: Some(Digest {
                sum: u64::MAX,
                keys: 3,
            }),
        },
        Request::CopyIndex {
            partition: PartitionId(5),
            end: 1 << 20,
            slots: 1 << 17,
            bits: 28,
            first: 0,
            bytes: pattern(COPY_CHUNK_SIZE_MAX, 16),
        },
        Request::CopyIndex {
            partition: PartitionId(u64::MAX),
            end: u64::MAX,
            slots: u64::MAX,
            bits: u8::MAX,
            first: u64::MAX,
            bytes: Vec::new(),
        },
        Request::CopyAbort {
            partition: PartitionId(5),
        },
        Request::Capacity {
            partition: PartitionId(u64::MAX),
        },
        Request::ConfigVote {
            rg: RgId(3),
            epoch: 9,
            ballot: Ballot {
                round: 2,
                brick: BrickId(1),
            },
            value: None,
        },
        Request::ConfigVote {
            rg: RgId(u32::MAX),
            epoch: u64::MAX,
            ballot: Ballot {
                round: u64::MAX,
                brick: BrickId(u32::MAX),
            },
            value: Some(vec![BrickId(0), BrickId(2)]),
        },
    ]
}

/// Every reply variant at least once, every error code and transaction
/// state, with edge cases.
pub fn sample_replies() -> Vec<Reply> {
    let mut replies = vec![
        Reply::Ok,
        Reply::Pong,
        Reply::Value(Vec::new()),
        Reply::Value(pattern(150, 8)),
        Reply::Value(pattern(VALUE_SIZE_MAX, 9)),
        Reply::NotFound,
        Reply::Maps(pattern(300, 10)),
        Reply::Maps(pattern(MAPS_SIZE_MAX, 11)),
        Reply::Voted,
        Reply::Lease { duration_ms: 0 },
        Reply::Lease {
            duration_ms: u32::MAX,
        },
        Reply::Stats(Vec::new()),
        Reply::Stats(vec![
            ("gets".to_string(), 10),
            ("partition.3.keys".to_string(), u64::MAX),
        ]),
        Reply::Stats(
            (0..STATS_ENTRIES_MAX)
                .map(|i| {
                    (
                        format!("{i:0>width$}", width = STAT_NAME_SIZE_MAX),
                        i as u64,
                    )
                })
                .collect(),
        ),
        Reply::Checksum {
            crc: 0x1234_5678,
            keys: 0,
        },
        Reply::Checksum {
            crc: u32::MAX,
            keys: u64::MAX,
        },
        Reply::Error(ErrorReply {
            code: ErrorCode::FingerprintMismatch,
            message: "maps differ".to_string(),
            maps: Some(pattern(500, 12)),
        }),
        Reply::Error(ErrorReply {
            code: ErrorCode::Fenced,
            message: "é".repeat(ERROR_MESSAGE_SIZE_MAX / 2),
            maps: Some(pattern(MAPS_SIZE_MAX, 13)),
        }),
        Reply::Error(ErrorReply {
            code: ErrorCode::Internal,
            message: String::new(),
            maps: Some(Vec::new()),
        }),
        Reply::CopyReady { local: None },
        Reply::CopyReady {
            local: Some(Digest { sum: 1, keys: 0 }),
        },
        Reply::CopyAck { end: u64::MAX },
        Reply::Capacity {
            held_bytes: 0,
            holds_partition: true,
        },
        Reply::ConfigVote {
            granted: false,
            promised: Ballot::ZERO,
            accepted: None,
        },
        Reply::ConfigVote {
            granted: true,
            promised: Ballot {
                round: 7,
                brick: BrickId(2),
            },
            accepted: Some(Accepted {
                ballot: Ballot {
                    round: 6,
                    brick: BrickId(1),
                },
                bricks: vec![BrickId(1), BrickId(2)],
            }),
        },
    ];
    for state in TX_STATES {
        replies.push(Reply::TxState(state));
    }
    for code in ERROR_CODES {
        replies.push(Reply::Error(ErrorReply {
            code,
            message: format!("{code:?} happened"),
            maps: None,
        }));
    }
    replies
}

pub fn sample_messages() -> Vec<Message> {
    let mut messages: Vec<Message> = sample_requests()
        .into_iter()
        .map(Message::Request)
        .collect();
    messages.extend(sample_replies().into_iter().map(Message::Reply));
    messages
}

/// A byte string of random length up to `max`, usually short: most frames
/// in a real stream are small, and large ones make a fuzz run slow.
pub fn random_bytes<R: Rng>(rng: &mut R, max: usize) -> Vec<u8> {
    let len = match rng.random_range(0..1000) {
        0 => max,
        1..=9 => rng.random_range(0..=max),
        _ => rng.random_range(0..=max.min(64)),
    };
    let mut bytes = vec![0; len];
    rng.fill(&mut bytes[..]);
    bytes
}

/// Random text of at most `max` bytes, with multi-byte characters so that a
/// decoder that cut text would produce invalid UTF-8.
pub fn random_text<R: Rng>(rng: &mut R, max: usize) -> String {
    let chars = ['a', 'z', '.', '_', '0', 'é', '€', '𝄞'];
    let mut text = String::new();
    let target = rng.random_range(0..=max.min(40));
    for _ in 0..100 {
        let c = chars[rng.random_range(0..chars.len())];
        if text.len() + c.len_utf8() > target {
            break;
        }
        text.push(c);
    }
    text
}

fn random_ballot<R: Rng>(rng: &mut R) -> Ballot {
    Ballot {
        round: rng.random(),
        brick: BrickId(rng.random()),
    }
}

fn random_bricks<R: Rng>(rng: &mut R, max: usize) -> Vec<BrickId> {
    (0..rng.random_range(0..=max))
        .map(|_| BrickId(rng.random()))
        .collect()
}

pub fn random_request<R: Rng>(rng: &mut R) -> Request {
    match rng.random_range(0..20) {
        0 => Request::Ping,
        1 => Request::GetMaps,
        2 => Request::CreateTable {
            name: random_bytes(rng, TABLE_NAME_SIZE_MAX),
        },
        3 => Request::DestroyTable {
            name: random_bytes(rng, TABLE_NAME_SIZE_MAX),
        },
        4 => Request::Get {
            partition: PartitionId(rng.random()),
            fingerprint: rng.random(),
            table: random_bytes(rng, TABLE_NAME_SIZE_MAX),
            key: random_bytes(rng, KEY_SIZE_MAX),
        },
        5 => Request::Prepare {
            txid: TxId(rng.random()),
            partition: PartitionId(rng.random()),
            fingerprint: rng.random(),
            table: random_bytes(rng, TABLE_NAME_SIZE_MAX),
            key: random_bytes(rng, KEY_SIZE_MAX),
            write: if rng.random_bool(0.8) {
                Write::Put(random_bytes(rng, VALUE_SIZE_MAX))
            } else {
                Write::Remove
            },
            participants: (0..rng.random_range(0..=PARTICIPANTS_MAX))
                .map(|_| BrickId(rng.random()))
                .collect(),
            decide: rng.random_bool(0.5),
        },
        6 => Request::Commit {
            txid: TxId(rng.random()),
            partition: PartitionId(rng.random()),
        },
        7 => Request::Abort {
            txid: TxId(rng.random()),
            partition: PartitionId(rng.random()),
        },
        8 => Request::TxStatus {
            txid: TxId(rng.random()),
            partition: PartitionId(rng.random()),
        },
        9 => Request::Exclude {
            rg: RgId(rng.random()),
            epoch: rng.random(),
            brick: BrickId(rng.random()),
        },
        10 => Request::PushMaps {
            maps: random_bytes(rng, MAPS_SIZE_MAX),
        },
        11 => Request::LeaseRenew {
            rg: RgId(rng.random()),
            epoch: rng.random(),
            from: BrickId(rng.random()),
            incarnation: rng.random(),
            blank: rng.random_bool(0.5).then(|| Digest {
                sum: rng.random(),
                keys: rng.random(),
            }),
        },
        12 => Request::Stats,
        13 => Request::CopyBegin {
            rg: RgId(rng.random()),
            epoch: rng.random(),
            partition: PartitionId(rng.random()),
            full: rng.random(),
            keys: rng.random(),
            maps: random_bytes(rng, MAPS_SIZE_MAX),
        },
        14 => Request::CopyChunk {
            partition: PartitionId(rng.random()),
            offset: rng.random(),
            bytes: random_bytes(rng, COPY_CHUNK_SIZE_MAX),
            end: random_digest(rng),
        },
        15 => Request::CopyAbort {
            partition: PartitionId(rng.random()),
        },
        16 => Request::Capacity {
            partition: PartitionId(rng.random()),
        },
        17 => Request::ConfigVote {
            rg: RgId(rng.random()),
            epoch: rng.random(),
            ballot: random_ballot(rng),
            value: rng
                .random::<bool>()
                .then(|| random_bricks(rng, PARTICIPANTS_MAX)),
        },
        18 => Request::CopyIndex {
            partition: PartitionId(rng.random()),
            end: rng.random(),
            slots: rng.random(),
            bits: rng.random(),
            first: rng.random(),
            bytes: random_bytes(rng, COPY_CHUNK_SIZE_MAX),
        },
        _ => Request::PartitionChecksum {
            partition: PartitionId(rng.random()),
        },
    }
}

pub fn random_reply<R: Rng>(rng: &mut R) -> Reply {
    match rng.random_range(0..15) {
        0 => Reply::Ok,
        1 => Reply::Pong,
        2 => Reply::Value(random_bytes(rng, VALUE_SIZE_MAX)),
        3 => Reply::NotFound,
        4 => Reply::Maps(random_bytes(rng, MAPS_SIZE_MAX)),
        5 => Reply::Voted,
        6 => Reply::TxState(TX_STATES[rng.random_range(0..TX_STATES.len())]),
        7 => Reply::Lease {
            duration_ms: rng.random(),
        },
        8 => {
            let count = if rng.random_range(0..100) == 0 {
                rng.random_range(0..=STATS_ENTRIES_MAX)
            } else {
                rng.random_range(0..8)
            };
            Reply::Stats(
                (0..count)
                    .map(|_| (random_text(rng, STAT_NAME_SIZE_MAX), rng.random()))
                    .collect(),
            )
        }
        9 => Reply::Checksum {
            crc: rng.random(),
            keys: rng.random(),
        },
        10 => Reply::CopyReady {
            local: random_digest(rng),
        },
        11 => Reply::CopyAck { end: rng.random() },
        12 => Reply::Capacity {
            held_bytes: rng.random(),
            holds_partition: rng.random(),
        },
        13 => Reply::ConfigVote {
            granted: rng.random(),
            promised: random_ballot(rng),
            accepted: rng.random::<bool>().then(|| Accepted {
                ballot: random_ballot(rng),
                bricks: random_bricks(rng, PARTICIPANTS_MAX),
            }),
        },
        _ => Reply::Error(ErrorReply {
            code: ERROR_CODES[rng.random_range(0..ERROR_CODES.len())],
            message: random_text(rng, ERROR_MESSAGE_SIZE_MAX),
            maps: if rng.random_bool(0.3) {
                Some(random_bytes(rng, MAPS_SIZE_MAX))
            } else {
                None
            },
        }),
    }
}

fn random_digest<R: Rng>(rng: &mut R) -> Option<Digest> {
    rng.random_bool(0.5).then(|| Digest {
        sum: rng.random(),
        keys: rng.random(),
    })
}

pub fn random_message<R: Rng>(rng: &mut R) -> Message {
    if rng.random_bool(0.5) {
        Message::Request(random_request(rng))
    } else {
        Message::Reply(random_reply(rng))
    }
}
