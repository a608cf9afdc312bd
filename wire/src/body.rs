//! The byte encoding of message bodies: encode into a caller's buffer,
//! decode from a body slice, and check a message against the limits before
//! it is sent. Frame headers and crc are not here (see [`crate::codec`]).
//!
//! Rules of the encoding:
//! - integers are fixed-width little-endian;
//! - a byte string is a u32 length then the bytes; a list is a u32 count then
//!   the items; an optional field is a tag byte 0 (absent) or 1 (present);
//! - enums (`Write`, `TxState`, `ErrorCode`) are one tag byte.
//!
//! Decoding is strict so that every accepted body has exactly one encoding:
//! every length is checked against its limit and against the bytes left
//! before anything is allocated, unknown tags are refused, text must be
//! UTF-8, and bytes left over after the message are an error. Encoding is
//! faithful: it never truncates, so a message that breaks a limit is sent as
//! it is and refused by the receiver. Callers that build messages from user
//! input run [`Request::check_limits`] first.

use std::fmt;

use byteorder::{ByteOrder, LittleEndian};
use maps::{BrickId, PartitionId, RgId};

use crate::limits::{
    COPY_CHUNK_SIZE_MAX, ERROR_MESSAGE_SIZE_MAX, KEY_SIZE_MAX, MAPS_SIZE_MAX, PARTICIPANTS_MAX,
    STATS_ENTRIES_MAX, STAT_NAME_SIZE_MAX, TABLE_NAME_SIZE_MAX, VALUE_SIZE_MAX,
};
use crate::message::{
    kind, kind_name, Accepted, Ballot, CopyChunkRef, CopyIndexRef, Digest, ErrorCode, ErrorReply,
    Message, PrepareRef, Reply, Request, TxId, TxState, Write,
};

/// What was wrong with a field of a body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeProblem {
    /// A byte string's length is over its limit.
    OverLimit { length: u64, limit: usize },
    /// A list's count is over its limit.
    CountOverLimit { count: u64, limit: usize },
    /// A byte string's length claims more bytes than the body has left.
    LengthPastEnd { length: u64, remaining: usize },
    /// A list's count claims more items than the bytes left could hold.
    CountPastEnd { count: u64, remaining: usize },
    /// A fixed-size field is cut off by the end of the body.
    Truncated { needed: usize, remaining: usize },
    /// An enum or option tag this version does not know.
    UnknownTag(u8),
    /// Text that is not UTF-8.
    InvalidUtf8,
    /// Bytes after the end of the message.
    TrailingBytes(usize),
    /// The header's kind names no message.
    UnknownKind(u8),
}

impl fmt::Display for DecodeProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeProblem::OverLimit { length, limit } => {
                write!(f, "length {length} is over the limit of {limit} bytes")
            }
            DecodeProblem::CountOverLimit { count, limit } => {
                write!(f, "count {count} is over the limit of {limit} entries")
            }
            DecodeProblem::LengthPastEnd { length, remaining } => {
                write!(
                    f,
                    "length {length} runs past the end of the body ({remaining} bytes left)"
                )
            }
            DecodeProblem::CountPastEnd { count, remaining } => {
                write!(
                    f,
                    "count {count} needs more than the {remaining} bytes left in the body"
                )
            }
            DecodeProblem::Truncated { needed, remaining } => {
                write!(
                    f,
                    "the body ends early: {needed} bytes needed, {remaining} left"
                )
            }
            DecodeProblem::UnknownTag(tag) => write!(f, "unknown tag {tag}"),
            DecodeProblem::InvalidUtf8 => write!(f, "text is not valid UTF-8"),
            DecodeProblem::TrailingBytes(count) => {
                let unit = if *count == 1 { "byte" } else { "bytes" };
                write!(f, "{count} {unit} left over after the message")
            }
            DecodeProblem::UnknownKind(kind) => write!(f, "unknown message kind {kind}"),
        }
    }
}

/// A body that could not be decoded: which field, and what was wrong. The
/// peer sent bytes this version does not accept; the connection should be
/// closed after answering `Malformed`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeError {
    /// The message and field, as in `"Prepare.key"`; just the message name
    /// for problems with the body as a whole.
    pub field: &'static str,
    pub problem: DecodeProblem,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.problem)
    }
}

impl std::error::Error for DecodeError {}

/// A message that breaks a limit and so would be refused by its receiver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LimitError {
    /// The message and field, as in `"Prepare.value"`.
    pub field: &'static str,
    /// The field's length in bytes, or its count of entries.
    pub size: usize,
    pub limit: usize,
    /// `"bytes"` or `"entries"`.
    pub unit: &'static str,
}

impl fmt::Display for LimitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} {} is over the limit of {} {}; make it smaller",
            self.field, self.size, self.unit, self.limit, self.unit
        )
    }
}

impl std::error::Error for LimitError {}

fn check_bytes(field: &'static str, size: usize, limit: usize) -> Result<(), LimitError> {
    if size > limit {
        return Err(LimitError {
            field,
            size,
            limit,
            unit: "bytes",
        });
    }
    Ok(())
}

fn check_count(field: &'static str, size: usize, limit: usize) -> Result<(), LimitError> {
    if size > limit {
        return Err(LimitError {
            field,
            size,
            limit,
            unit: "entries",
        });
    }
    Ok(())
}

const WRITE_REMOVE: u8 = 0;
const WRITE_PUT: u8 = 1;
const OPTION_NONE: u8 = 0;
const OPTION_SOME: u8 = 1;

fn tx_state_tag(state: TxState) -> u8 {
    match state {
        TxState::Unknown => 0,
        TxState::Prepared => 1,
        TxState::Committed => 2,
        TxState::Aborted => 3,
    }
}

fn tx_state_from_tag(tag: u8) -> Option<TxState> {
    Some(match tag {
        0 => TxState::Unknown,
        1 => TxState::Prepared,
        2 => TxState::Committed,
        3 => TxState::Aborted,
        _ => return None,
    })
}

fn error_code_from_tag(tag: u8) -> Option<ErrorCode> {
    Some(match tag {
        1 => ErrorCode::FingerprintMismatch,
        2 => ErrorCode::LockConflict,
        3 => ErrorCode::PartitionFull,
        4 => ErrorCode::Busy,
        5 => ErrorCode::NotReplica,
        6 => ErrorCode::Malformed,
        7 => ErrorCode::TableNotFound,
        8 => ErrorCode::TableExists,
        9 => ErrorCode::Fenced,
        10 => ErrorCode::Refused,
        11 => ErrorCode::UnknownTransaction,
        12 => ErrorCode::Internal,
        13 => ErrorCode::Restarted,
        14 => ErrorCode::WritesHeld,
        _ => return None,
    })
}

// ---------------------------------------------------------------------------
// Encoding.

fn put_u8(out: &mut Vec<u8>, value: u8) {
    out.push(value);
}

fn put_u32(out: &mut Vec<u8>, value: u32) {
    out.extend_from_slice(&value.to_le_bytes());
}

fn put_u64(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(&value.to_le_bytes());
}

/// The u32 length prefix of a byte string or list. Limits are the
/// receiver's business, but a length that does not fit the prefix at all
/// cannot be encoded: only a programming mistake builds one.
fn length_prefix(length: usize) -> u32 {
    u32::try_from(length).expect("a byte string or list longer than u32::MAX cannot be encoded")
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_u32(out, length_prefix(bytes.len()));
    out.extend_from_slice(bytes);
}

/// Encoded size of a byte string: its length prefix and its bytes.
fn bytes_len(bytes: &[u8]) -> usize {
    4 + bytes.len()
}

fn put_digest(out: &mut Vec<u8>, digest: &Option<Digest>) {
    match digest {
        None => put_u8(out, OPTION_NONE),
        Some(d) => {
            put_u8(out, OPTION_SOME);
            put_u64(out, d.sum);
            put_u64(out, d.keys);
        }
    }
}

fn put_ballot(out: &mut Vec<u8>, ballot: &Ballot) {
    put_u64(out, ballot.round);
    put_u32(out, ballot.brick.0);
}

fn put_bricks(out: &mut Vec<u8>, bricks: &[BrickId]) {
    put_u32(out, length_prefix(bricks.len()));
    for brick in bricks {
        put_u32(out, brick.0);
    }
}

fn bricks_len(bricks: &[BrickId]) -> usize {
    4 + 4 * bricks.len()
}

fn digest_len(digest: &Option<Digest>) -> usize {
    if digest.is_some() {
        17
    } else {
        1
    }
}

impl Request {
    /// A `Prepare` as a [`PrepareRef`] borrowing from it; `None` for any
    /// other request.
    pub fn as_prepare_ref(&self) -> Option<PrepareRef<'_>> {
        match self {
            Request::Prepare {
                txid,
                partition,
                fingerprint,
                table,
                key,
                write,
                participants,
                decide,
            } => Some(PrepareRef {
                txid: *txid,
                partition: *partition,
                fingerprint: *fingerprint,
                table,
                key,
                value: match write {
                    Write::Put(value) => Some(value),
                    Write::Remove => None,
                },
                participants,
                decide: *decide,
            }),
            _ => None,
        }
    }

    /// Appends the body of this request to `out`. Nothing is allocated but
    /// the growth of `out`; lengths over the limits are encoded as they are
    /// (see [`Request::check_limits`]).
    pub fn encode_body(&self, out: &mut Vec<u8>) {
        match self {
            Request::Ping | Request::GetMaps | Request::Stats => {}
            Request::CreateTable { name } | Request::DestroyTable { name } => put_bytes(out, name),
            Request::Get {
                partition,
                fingerprint,
                table,
                key,
            } => {
                put_u64(out, partition.0);
                put_u32(out, *fingerprint);
                put_bytes(out, table);
                put_bytes(out, key);
            }
            Request::Prepare { .. } => self.as_prepare_ref().unwrap().encode_body(out),
            Request::Commit { txid, partition }
            | Request::Abort { txid, partition }
            | Request::TxStatus { txid, partition } => {
                put_u64(out, txid.0);
                put_u64(out, partition.0);
            }
            Request::Exclude { rg, epoch, brick } => {
                put_u32(out, rg.0);
                put_u64(out, *epoch);
                put_u32(out, brick.0);
            }
            Request::PushMaps { maps } => put_bytes(out, maps),
            Request::LeaseRenew {
                rg,
                epoch,
                from,
                incarnation,
                blank,
            } => {
                put_u32(out, rg.0);
                put_u64(out, *epoch);
                put_u32(out, from.0);
                put_u64(out, *incarnation);
                put_digest(out, blank);
            }
            Request::PartitionChecksum { partition }
            | Request::CopyAbort { partition }
            | Request::Capacity { partition } => put_u64(out, partition.0),
            Request::CopyBegin {
                rg,
                epoch,
                partition,
                full,
                keys,
                maps,
            } => {
                put_u32(out, rg.0);
                put_u64(out, *epoch);
                put_u64(out, partition.0);
                put_u8(out, u8::from(*full));
                put_u64(out, *keys);
                put_bytes(out, maps);
            }
            Request::ConfigVote {
                rg,
                epoch,
                ballot,
                value,
            } => {
                put_u32(out, rg.0);
                put_u64(out, *epoch);
                put_ballot(out, ballot);
                match value {
                    None => put_u8(out, OPTION_NONE),
                    Some(bricks) => {
                        put_u8(out, OPTION_SOME);
                        put_bricks(out, bricks);
                    }
                }
            }
            Request::CopyChunk {
                partition,
                offset,
                bytes,
                end,
            } => {
                put_u64(out, partition.0);
                put_u64(out, *offset);
                put_bytes(out, bytes);
                put_digest(out, end);
            }
            Request::CopyIndex {
                partition,
                end,
                slots,
                bits,
                first,
                bytes,
            } => {
                put_u64(out, partition.0);
                put_u64(out, *end);
                put_u64(out, *slots);
                put_u8(out, *bits);
                put_u64(out, *first);
                put_bytes(out, bytes);
            }
        }
    }

    /// The exact number of bytes [`Request::encode_body`] appends, so that a
    /// caller can reserve once.
    pub fn body_len(&self) -> usize {
        match self {
            Request::Ping | Request::GetMaps | Request::Stats => 0,
            Request::CreateTable { name } | Request::DestroyTable { name } => bytes_len(name),
            Request::Get { table, key, .. } => 8 + 4 + bytes_len(table) + bytes_len(key),
            Request::Prepare { .. } => self.as_prepare_ref().unwrap().body_len(),
            Request::Commit { .. } | Request::Abort { .. } | Request::TxStatus { .. } => 16,
            Request::Exclude { .. } => 16,
            Request::LeaseRenew { blank, .. } => 24 + digest_len(blank),
            Request::PushMaps { maps } => bytes_len(maps),
            Request::PartitionChecksum { .. }
            | Request::CopyAbort { .. }
            | Request::Capacity { .. } => 8,
            Request::CopyBegin { maps, .. } => 4 + 8 + 8 + 1 + 8 + bytes_len(maps),
            Request::CopyChunk { bytes, end, .. } => 8 + 8 + bytes_len(bytes) + digest_len(end),
            Request::CopyIndex { bytes, .. } => 8 + 8 + 8 + 1 + 8 + bytes_len(bytes),
            Request::ConfigVote { value, .. } => {
                4 + 8 + 12 + 1 + value.as_deref().map_or(0, bricks_len)
            }
        }
    }

    /// Checks every length and count against [`crate::limits`], so that a
    /// request built from user input can be refused with a clear error
    /// before it is sent. A request that passes is never refused by its
    /// receiver for its size.
    pub fn check_limits(&self) -> Result<(), LimitError> {
        match self {
            Request::Ping
            | Request::GetMaps
            | Request::Stats
            | Request::Commit { .. }
            | Request::Abort { .. }
            | Request::TxStatus { .. }
            | Request::Exclude { .. }
            | Request::LeaseRenew { .. }
            | Request::PartitionChecksum { .. }
            | Request::CopyAbort { .. }
            | Request::Capacity { .. } => Ok(()),
            Request::CopyBegin { maps, .. } => {
                check_bytes("CopyBegin.maps", maps.len(), MAPS_SIZE_MAX)
            }
            Request::ConfigVote { value, .. } => check_count(
                "ConfigVote.value",
                value.as_ref().map_or(0, Vec::len),
                PARTICIPANTS_MAX,
            ),
            Request::CopyChunk { bytes, .. } => {
                check_bytes("CopyChunk.bytes", bytes.len(), COPY_CHUNK_SIZE_MAX)
            }
            Request::CopyIndex { bytes, .. } => {
                check_bytes("CopyIndex.bytes", bytes.len(), COPY_CHUNK_SIZE_MAX)
            }
            Request::CreateTable { name } => {
                check_bytes("CreateTable.name", name.len(), TABLE_NAME_SIZE_MAX)
            }
            Request::DestroyTable { name } => {
                check_bytes("DestroyTable.name", name.len(), TABLE_NAME_SIZE_MAX)
            }
            Request::Get { table, key, .. } => {
                check_bytes("Get.table", table.len(), TABLE_NAME_SIZE_MAX)?;
                check_bytes("Get.key", key.len(), KEY_SIZE_MAX)
            }
            Request::Prepare {
                table,
                key,
                write,
                participants,
                ..
            } => {
                check_bytes("Prepare.table", table.len(), TABLE_NAME_SIZE_MAX)?;
                check_bytes("Prepare.key", key.len(), KEY_SIZE_MAX)?;
                if let Write::Put(value) = write {
                    check_bytes("Prepare.value", value.len(), VALUE_SIZE_MAX)?;
                }
                check_count("Prepare.participants", participants.len(), PARTICIPANTS_MAX)
            }
            Request::PushMaps { maps } => check_bytes("PushMaps.maps", maps.len(), MAPS_SIZE_MAX),
        }
    }
}

impl Reply {
    /// Appends the body of this reply to `out`. Nothing is allocated but the
    /// growth of `out`; lengths over the limits are encoded as they are (see
    /// [`Reply::check_limits`]).
    pub fn encode_body(&self, out: &mut Vec<u8>) {
        match self {
            Reply::Ok | Reply::Pong | Reply::NotFound | Reply::Voted => {}
            Reply::Value(value) => put_bytes(out, value),
            Reply::Maps(maps) => put_bytes(out, maps),
            Reply::TxState(state) => put_u8(out, tx_state_tag(*state)),
            Reply::Lease { duration_ms } => put_u32(out, *duration_ms),
            Reply::Stats(entries) => {
                put_u32(out, length_prefix(entries.len()));
                for (name, value) in entries {
                    put_bytes(out, name.as_bytes());
                    put_u64(out, *value);
                }
            }
            Reply::Checksum { crc, keys } => {
                put_u32(out, *crc);
                put_u64(out, *keys);
            }
            Reply::CopyReady { local } => put_digest(out, local),
            Reply::CopyAck { end } => put_u64(out, *end),
            Reply::Capacity {
                held_bytes,
                holds_partition,
            } => {
                put_u64(out, *held_bytes);
                put_u8(out, u8::from(*holds_partition));
            }
            Reply::ConfigVote {
                granted,
                promised,
                accepted,
            } => {
                put_u8(out, u8::from(*granted));
                put_ballot(out, promised);
                match accepted {
                    None => put_u8(out, OPTION_NONE),
                    Some(a) => {
                        put_u8(out, OPTION_SOME);
                        put_ballot(out, &a.ballot);
                        put_bricks(out, &a.bricks);
                    }
                }
            }
            Reply::Error(error) => {
                put_u8(out, error.code as u8);
                put_bytes(out, error.message.as_bytes());
                match &error.maps {
                    None => put_u8(out, OPTION_NONE),
                    Some(maps) => {
                        put_u8(out, OPTION_SOME);
                        put_bytes(out, maps);
                    }
                }
            }
        }
    }

    /// The exact number of bytes [`Reply::encode_body`] appends.
    pub fn body_len(&self) -> usize {
        match self {
            Reply::Ok | Reply::Pong | Reply::NotFound | Reply::Voted => 0,
            Reply::Value(value) => bytes_len(value),
            Reply::Maps(maps) => bytes_len(maps),
            Reply::TxState(_) => 1,
            Reply::Lease { .. } => 4,
            Reply::Stats(entries) => {
                4 + entries
                    .iter()
                    .map(|(name, _)| bytes_len(name.as_bytes()) + 8)
                    .sum::<usize>()
            }
            Reply::Checksum { .. } => 12,
            Reply::CopyReady { local } => digest_len(local),
            Reply::CopyAck { .. } => 8,
            Reply::Capacity { .. } => 9,
            Reply::ConfigVote { accepted, .. } => {
                1 + 12 + 1 + accepted.as_ref().map_or(0, |a| 12 + bricks_len(&a.bricks))
            }
            Reply::Error(error) => {
                let maps_len = match &error.maps {
                    None => 1,
                    Some(maps) => 1 + bytes_len(maps),
                };
                1 + bytes_len(error.message.as_bytes()) + maps_len
            }
        }
    }

    /// Checks every length and count against [`crate::limits`]; a reply that
    /// passes is never refused by its receiver for its size.
    pub fn check_limits(&self) -> Result<(), LimitError> {
        match self {
            Reply::Ok
            | Reply::Pong
            | Reply::NotFound
            | Reply::Voted
            | Reply::TxState(_)
            | Reply::Lease { .. }
            | Reply::Checksum { .. }
            | Reply::CopyReady { .. }
            | Reply::CopyAck { .. }
            | Reply::Capacity { .. } => Ok(()),
            Reply::ConfigVote { accepted, .. } => check_count(
                "ConfigVoteReply.accepted",
                accepted.as_ref().map_or(0, |a| a.bricks.len()),
                PARTICIPANTS_MAX,
            ),
            Reply::Value(value) => check_bytes("Value.value", value.len(), VALUE_SIZE_MAX),
            Reply::Maps(maps) => check_bytes("Maps.maps", maps.len(), MAPS_SIZE_MAX),
            Reply::Stats(entries) => {
                check_count("StatsReply.entries", entries.len(), STATS_ENTRIES_MAX)?;
                for (name, _) in entries {
                    check_bytes("StatsReply.name", name.len(), STAT_NAME_SIZE_MAX)?;
                }
                Ok(())
            }
            Reply::Error(error) => {
                check_bytes("Error.message", error.message.len(), ERROR_MESSAGE_SIZE_MAX)?;
                if let Some(maps) = &error.maps {
                    check_bytes("Error.maps", maps.len(), MAPS_SIZE_MAX)?;
                }
                Ok(())
            }
        }
    }
}

impl Message {
    /// Appends the body of this message to `out`.
    pub fn encode_body(&self, out: &mut Vec<u8>) {
        match self {
            Message::Request(request) => request.encode_body(out),
            Message::Reply(reply) => reply.encode_body(out),
        }
    }

    /// The exact number of bytes [`Message::encode_body`] appends.
    pub fn body_len(&self) -> usize {
        match self {
            Message::Request(request) => request.body_len(),
            Message::Reply(reply) => reply.body_len(),
        }
    }

    /// Checks every length and count against [`crate::limits`].
    pub fn check_limits(&self) -> Result<(), LimitError> {
        match self {
            Message::Request(request) => request.check_limits(),
            Message::Reply(reply) => reply.check_limits(),
        }
    }

    /// Decodes the body of a frame whose header said `kind`. Only byte
    /// strings are allocated, each after its length has been checked against
    /// its limit and against the bytes left.
    pub fn decode(kind: u8, body: &[u8]) -> Result<Message, DecodeError> {
        let Some(name) = kind_name(kind) else {
            return Err(DecodeError {
                field: "kind",
                problem: DecodeProblem::UnknownKind(kind),
            });
        };
        let mut r = Reader { body, pos: 0 };
        let message = match kind {
            kind::PING => Message::Request(Request::Ping),
            kind::GET_MAPS => Message::Request(Request::GetMaps),
            kind::CREATE_TABLE => Message::Request(Request::CreateTable {
                name: r.bytes("CreateTable.name", TABLE_NAME_SIZE_MAX)?,
            }),
            kind::DESTROY_TABLE => Message::Request(Request::DestroyTable {
                name: r.bytes("DestroyTable.name", TABLE_NAME_SIZE_MAX)?,
            }),
            kind::GET => Message::Request(Request::Get {
                partition: PartitionId(r.u64("Get.partition")?),
                fingerprint: r.u32("Get.fingerprint")?,
                table: r.bytes("Get.table", TABLE_NAME_SIZE_MAX)?,
                key: r.bytes("Get.key", KEY_SIZE_MAX)?,
            }),
            kind::PREPARE | kind::PREPARE_DECIDE => {
                let txid = TxId(r.u64("Prepare.txid")?);
                let partition = PartitionId(r.u64("Prepare.partition")?);
                let fingerprint = r.u32("Prepare.fingerprint")?;
                let table = r.bytes("Prepare.table", TABLE_NAME_SIZE_MAX)?;
                let key = r.bytes("Prepare.key", KEY_SIZE_MAX)?;
                let write = match r.u8("Prepare.write")? {
                    WRITE_REMOVE => Write::Remove,
                    WRITE_PUT => Write::Put(r.bytes("Prepare.value", VALUE_SIZE_MAX)?),
                    tag => return Err(r.error("Prepare.write", DecodeProblem::UnknownTag(tag))),
                };
                let participants = r.bricks("Prepare.participants")?;
                Message::Request(Request::Prepare {
                    txid,
                    partition,
                    fingerprint,
                    table,
                    key,
                    write,
                    participants,
                    decide: kind == kind::PREPARE_DECIDE,
                })
            }
            kind::COMMIT => Message::Request(Request::Commit {
                txid: TxId(r.u64("Commit.txid")?),
                partition: PartitionId(r.u64("Commit.partition")?),
            }),
            kind::ABORT => Message::Request(Request::Abort {
                txid: TxId(r.u64("Abort.txid")?),
                partition: PartitionId(r.u64("Abort.partition")?),
            }),
            kind::TX_STATUS => Message::Request(Request::TxStatus {
                txid: TxId(r.u64("TxStatus.txid")?),
                partition: PartitionId(r.u64("TxStatus.partition")?),
            }),
            kind::EXCLUDE => Message::Request(Request::Exclude {
                rg: RgId(r.u32("Exclude.rg")?),
                epoch: r.u64("Exclude.epoch")?,
                brick: BrickId(r.u32("Exclude.brick")?),
            }),
            kind::PUSH_MAPS => Message::Request(Request::PushMaps {
                maps: r.bytes("PushMaps.maps", MAPS_SIZE_MAX)?,
            }),
            kind::LEASE_RENEW => Message::Request(Request::LeaseRenew {
                rg: RgId(r.u32("LeaseRenew.rg")?),
                epoch: r.u64("LeaseRenew.epoch")?,
                from: BrickId(r.u32("LeaseRenew.from")?),
                incarnation: r.u64("LeaseRenew.incarnation")?,
                blank: r.digest("LeaseRenew.blank")?,
            }),
            kind::STATS => Message::Request(Request::Stats),
            kind::CAPACITY => Message::Request(Request::Capacity {
                partition: PartitionId(r.u64("Capacity.partition")?),
            }),
            kind::COPY_BEGIN => Message::Request(Request::CopyBegin {
                rg: RgId(r.u32("CopyBegin.rg")?),
                epoch: r.u64("CopyBegin.epoch")?,
                partition: PartitionId(r.u64("CopyBegin.partition")?),
                full: r.bool("CopyBegin.full")?,
                keys: r.u64("CopyBegin.keys")?,
                maps: r.bytes("CopyBegin.maps", MAPS_SIZE_MAX)?,
            }),
            kind::COPY_CHUNK => Message::Request(r.copy_chunk()?.to_request()),
            kind::COPY_INDEX => Message::Request(r.copy_index()?.to_request()),
            kind::CONFIG_VOTE => Message::Request(Request::ConfigVote {
                rg: RgId(r.u32("ConfigVote.rg")?),
                epoch: r.u64("ConfigVote.epoch")?,
                ballot: r.ballot("ConfigVote.ballot")?,
                value: match r.u8("ConfigVote.value")? {
                    OPTION_NONE => None,
                    OPTION_SOME => Some(r.bricks("ConfigVote.value")?),
                    tag => return Err(r.error("ConfigVote.value", DecodeProblem::UnknownTag(tag))),
                },
            }),
            kind::COPY_ABORT => Message::Request(Request::CopyAbort {
                partition: PartitionId(r.u64("CopyAbort.partition")?),
            }),
            kind::PARTITION_CHECKSUM => Message::Request(Request::PartitionChecksum {
                partition: PartitionId(r.u64("PartitionChecksum.partition")?),
            }),
            kind::OK => Message::Reply(Reply::Ok),
            kind::PONG => Message::Reply(Reply::Pong),
            kind::VALUE => Message::Reply(Reply::Value(r.bytes("Value.value", VALUE_SIZE_MAX)?)),
            kind::NOT_FOUND => Message::Reply(Reply::NotFound),
            kind::MAPS => Message::Reply(Reply::Maps(r.bytes("Maps.maps", MAPS_SIZE_MAX)?)),
            kind::VOTED => Message::Reply(Reply::Voted),
            kind::TX_STATE => {
                let tag = r.u8("TxState.state")?;
                let state = tx_state_from_tag(tag)
                    .ok_or_else(|| r.error("TxState.state", DecodeProblem::UnknownTag(tag)))?;
                Message::Reply(Reply::TxState(state))
            }
            kind::LEASE => Message::Reply(Reply::Lease {
                duration_ms: r.u32("Lease.duration_ms")?,
            }),
            kind::STATS_REPLY => {
                // Each entry takes at least its name's length prefix and the
                // value, which bounds the count by the bytes left.
                let count = r.count("StatsReply.entries", STATS_ENTRIES_MAX, 4 + 8)?;
                let mut entries = Vec::with_capacity(count);
                for _ in 0..count {
                    let name = r.string("StatsReply.name", STAT_NAME_SIZE_MAX)?;
                    let value = r.u64("StatsReply.value")?;
                    entries.push((name, value));
                }
                Message::Reply(Reply::Stats(entries))
            }
            kind::CHECKSUM => Message::Reply(Reply::Checksum {
                crc: r.u32("Checksum.crc")?,
                keys: r.u64("Checksum.keys")?,
            }),
            kind::COPY_READY => Message::Reply(Reply::CopyReady {
                local: r.digest("CopyReady.local")?,
            }),
            kind::COPY_ACK => Message::Reply(Reply::CopyAck {
                end: r.u64("CopyAck.end")?,
            }),
            kind::CAPACITY_REPLY => Message::Reply(Reply::Capacity {
                held_bytes: r.u64("CapacityReply.held_bytes")?,
                holds_partition: r.bool("CapacityReply.holds_partition")?,
            }),
            kind::CONFIG_VOTE_REPLY => Message::Reply(Reply::ConfigVote {
                granted: r.bool("ConfigVoteReply.granted")?,
                promised: r.ballot("ConfigVoteReply.promised")?,
                accepted: match r.u8("ConfigVoteReply.accepted")? {
                    OPTION_NONE => None,
                    OPTION_SOME => Some(Accepted {
                        ballot: r.ballot("ConfigVoteReply.accepted")?,
                        bricks: r.bricks("ConfigVoteReply.accepted")?,
                    }),
                    tag => {
                        return Err(
                            r.error("ConfigVoteReply.accepted", DecodeProblem::UnknownTag(tag))
                        )
                    }
                },
            }),
            kind::ERROR => {
                let tag = r.u8("Error.code")?;
                let code = error_code_from_tag(tag)
                    .ok_or_else(|| r.error("Error.code", DecodeProblem::UnknownTag(tag)))?;
                let message = r.string("Error.message", ERROR_MESSAGE_SIZE_MAX)?;
                let maps = match r.u8("Error.maps")? {
                    OPTION_NONE => None,
                    OPTION_SOME => Some(r.bytes("Error.maps", MAPS_SIZE_MAX)?),
                    tag => return Err(r.error("Error.maps", DecodeProblem::UnknownTag(tag))),
                };
                Message::Reply(Reply::Error(ErrorReply {
                    code,
                    message,
                    maps,
                }))
            }
            _ => unreachable!("kind_name accepted kind {kind} that decode does not handle"),
        };
        r.finish(name)?;
        Ok(message)
    }
}

impl PrepareRef<'_> {
    /// Appends the body of the `Prepare` this stands for to `out`: the same
    /// bytes as [`Request::encode_body`] of [`PrepareRef::to_request`].
    pub fn encode_body(&self, out: &mut Vec<u8>) {
        put_u64(out, self.txid.0);
        put_u64(out, self.partition.0);
        put_u32(out, self.fingerprint);
        put_bytes(out, self.table);
        put_bytes(out, self.key);
        match self.value {
            None => put_u8(out, WRITE_REMOVE),
            Some(value) => {
                put_u8(out, WRITE_PUT);
                put_bytes(out, value);
            }
        }
        put_bricks(out, self.participants);
    }

    /// The exact number of bytes [`PrepareRef::encode_body`] appends.
    pub fn body_len(&self) -> usize {
        let write_len = self.value.map_or(1, |v| 1 + bytes_len(v));
        8 + 8
            + 4
            + bytes_len(self.table)
            + bytes_len(self.key)
            + write_len
            + 4
            + 4 * self.participants.len()
    }
}

impl CopyChunkRef<'_> {
    /// Appends the body of the `CopyChunk` this stands for to `out`: the
    /// same bytes as [`Request::encode_body`] of
    /// [`CopyChunkRef::to_request`].
    pub fn encode_body(&self, out: &mut Vec<u8>) {
        let mut tail = Vec::new();
        self.encode_body_around(out, &mut tail);
        out.extend_from_slice(self.bytes);
        out.extend_from_slice(&tail);
    }

    /// The body's fields before its bytes, appended to `head`, and after
    /// them, to `tail`: [`CopyChunkRef::encode_body`] without the bytes.
    pub fn encode_body_around(&self, head: &mut Vec<u8>, tail: &mut Vec<u8>) {
        put_u64(head, self.partition.0);
        put_u64(head, self.offset);
        put_u32(head, length_prefix(self.bytes.len()));
        put_digest(tail, &self.end);
    }

    /// The exact number of bytes [`CopyChunkRef::encode_body`] appends.
    pub fn body_len(&self) -> usize {
        8 + 8 + bytes_len(self.bytes) + digest_len(&self.end)
    }
}

impl CopyIndexRef<'_> {
    /// The body's fields before its bytes, appended to `head`: the body of
    /// the `CopyIndex` this stands for ends with its bytes.
    pub fn encode_body_head(&self, head: &mut Vec<u8>) {
        put_u64(head, self.partition.0);
        put_u64(head, self.end);
        put_u64(head, self.slots);
        put_u8(head, self.bits);
        put_u64(head, self.first);
        put_u32(head, length_prefix(self.bytes.len()));
    }

    /// The exact number of bytes of the body.
    pub fn body_len(&self) -> usize {
        8 + 8 + 8 + 1 + 8 + bytes_len(self.bytes)
    }
}

impl<'a> CopyIndexRef<'a> {
    /// Decodes the body of a `CopyIndex` frame, borrowing its bytes: the
    /// same checks, and the same errors, as [`Message::decode`].
    pub fn decode(body: &'a [u8]) -> Result<CopyIndexRef<'a>, DecodeError> {
        let mut r = Reader { body, pos: 0 };
        let part = r.copy_index()?;
        r.finish("CopyIndex")?;
        Ok(part)
    }
}

impl<'a> CopyChunkRef<'a> {
    /// Decodes the body of a `CopyChunk` frame, borrowing its bytes: the
    /// same checks, and the same errors, as [`Message::decode`].
    pub fn decode(body: &'a [u8]) -> Result<CopyChunkRef<'a>, DecodeError> {
        let mut r = Reader { body, pos: 0 };
        let chunk = r.copy_chunk()?;
        r.finish("CopyChunk")?;
        Ok(chunk)
    }
}

// ---------------------------------------------------------------------------
// Decoding.

/// A cursor over a body. Every read checks the bytes left first.
struct Reader<'a> {
    body: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.body.len() - self.pos
    }

    fn error(&self, field: &'static str, problem: DecodeProblem) -> DecodeError {
        DecodeError { field, problem }
    }

    fn take(&mut self, field: &'static str, count: usize) -> Result<&'a [u8], DecodeError> {
        let remaining = self.remaining();
        if count > remaining {
            return Err(self.error(
                field,
                DecodeProblem::Truncated {
                    needed: count,
                    remaining,
                },
            ));
        }
        let bytes = &self.body[self.pos..self.pos + count];
        self.pos += count;
        Ok(bytes)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(field, 1)?[0])
    }

    fn bool(&mut self, field: &'static str) -> Result<bool, DecodeError> {
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            tag => Err(self.error(field, DecodeProblem::UnknownTag(tag))),
        }
    }

    fn ballot(&mut self, field: &'static str) -> Result<Ballot, DecodeError> {
        Ok(Ballot {
            round: self.u64(field)?,
            brick: BrickId(self.u32(field)?),
        })
    }

    /// A list of brick ids, at most `PARTICIPANTS_MAX`.
    fn bricks(&mut self, field: &'static str) -> Result<Vec<BrickId>, DecodeError> {
        let count = self.count(field, PARTICIPANTS_MAX, 4)?;
        let mut bricks = Vec::with_capacity(count);
        for _ in 0..count {
            bricks.push(BrickId(self.u32(field)?));
        }
        Ok(bricks)
    }

    fn digest(&mut self, field: &'static str) -> Result<Option<Digest>, DecodeError> {
        match self.u8(field)? {
            OPTION_NONE => Ok(None),
            OPTION_SOME => Ok(Some(Digest {
                sum: self.u64(field)?,
                keys: self.u64(field)?,
            })),
            tag => Err(self.error(field, DecodeProblem::UnknownTag(tag))),
        }
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        Ok(LittleEndian::read_u32(self.take(field, 4)?))
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        Ok(LittleEndian::read_u64(self.take(field, 8)?))
    }

    /// A byte string's contents, borrowed from the body, after its length
    /// has passed both checks.
    fn slice(&mut self, field: &'static str, limit: usize) -> Result<&'a [u8], DecodeError> {
        let length = self.u32(field)?;
        if length as usize > limit {
            return Err(self.error(
                field,
                DecodeProblem::OverLimit {
                    length: length.into(),
                    limit,
                },
            ));
        }
        let remaining = self.remaining();
        if length as usize > remaining {
            return Err(self.error(
                field,
                DecodeProblem::LengthPastEnd {
                    length: length.into(),
                    remaining,
                },
            ));
        }
        self.take(field, length as usize)
    }

    fn copy_index(&mut self) -> Result<CopyIndexRef<'a>, DecodeError> {
        Ok(CopyIndexRef {
            partition: PartitionId(self.u64("CopyIndex.partition")?),
            end: self.u64("CopyIndex.end")?,
            slots: self.u64("CopyIndex.slots")?,
            bits: self.u8("CopyIndex.bits")?,
            first: self.u64("CopyIndex.first")?,
            bytes: self.slice("CopyIndex.bytes", COPY_CHUNK_SIZE_MAX)?,
        })
    }

    fn copy_chunk(&mut self) -> Result<CopyChunkRef<'a>, DecodeError> {
        Ok(CopyChunkRef {
            partition: PartitionId(self.u64("CopyChunk.partition")?),
            offset: self.u64("CopyChunk.offset")?,
            bytes: self.slice("CopyChunk.bytes", COPY_CHUNK_SIZE_MAX)?,
            end: self.digest("CopyChunk.end")?,
        })
    }

    fn bytes(&mut self, field: &'static str, limit: usize) -> Result<Vec<u8>, DecodeError> {
        Ok(self.slice(field, limit)?.to_vec())
    }

    fn string(&mut self, field: &'static str, limit: usize) -> Result<String, DecodeError> {
        let bytes = self.slice(field, limit)?;
        match std::str::from_utf8(bytes) {
            Ok(text) => Ok(text.to_owned()),
            Err(_) => Err(self.error(field, DecodeProblem::InvalidUtf8)),
        }
    }

    /// A list's count, checked against its limit and against the bytes
    /// left given the smallest encoding of one item, so that the caller can
    /// reserve the list without trusting the count further.
    fn count(
        &mut self,
        field: &'static str,
        limit: usize,
        item_size_min: usize,
    ) -> Result<usize, DecodeError> {
        let count = self.u32(field)?;
        if count as usize > limit {
            return Err(self.error(
                field,
                DecodeProblem::CountOverLimit {
                    count: count.into(),
                    limit,
                },
            ));
        }
        let remaining = self.remaining();
        if count as usize * item_size_min > remaining {
            return Err(self.error(
                field,
                DecodeProblem::CountPastEnd {
                    count: count.into(),
                    remaining,
                },
            ));
        }
        Ok(count as usize)
    }

    fn finish(&self, name: &'static str) -> Result<(), DecodeError> {
        let remaining = self.remaining();
        if remaining > 0 {
            return Err(self.error(name, DecodeProblem::TrailingBytes(remaining)));
        }
        Ok(())
    }
}
