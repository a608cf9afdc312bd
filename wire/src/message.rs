//! The messages of the protocol and their kind bytes. Requests flow from a
//! caller (ddslib, or a brick asking a peer) to a brick; each reply carries
//! the request id of the request it answers.
//!
//! The body encoding lives in the `body` module: fixed-width little-endian
//! integers, and byte strings as a u32 length then the bytes, every length
//! checked against [`crate::limits`] before it is used. Framing is in
//! [`crate::header`] and [`crate::codec`].

use maps::{BrickId, PartitionId, RgId};

/// A two-phase-commit transaction, named by its coordinator. ddslib builds it
/// from a random 32-bit client id and a per-client counter, so that ids from
/// different clients do not meet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TxId(pub u64);

/// What a prepared write does to its key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Write {
    Put(Vec<u8>),
    Remove,
}

/// The fate of a transaction at one participant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxState {
    /// The participant never saw a prepare for it (or forgot it after abort).
    Unknown,
    /// Voted yes and holds the key's lock, waiting for the outcome.
    Prepared,
    Committed,
    Aborted,
}

/// A request to a brick.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// Liveness probe; answered by `Pong`.
    Ping,
    /// Ask for the brick's maps; answered by `Maps`.
    GetMaps,
    CreateTable {
        name: Vec<u8>,
    },
    DestroyTable {
        name: Vec<u8>,
    },
    /// Read one key. `fingerprint` is the caller's fingerprint of the
    /// partition (its DP leaf plus its RG entry).
    Get {
        partition: PartitionId,
        fingerprint: u32,
        table: Vec<u8>,
        key: Vec<u8>,
    },
    /// Phase one of a write: lock the key (without waiting) and vote.
    /// `participants` are every replica asked, so that a participant whose
    /// coordinator vanished knows whom to ask about the outcome.
    ///
    /// With `decide` set (sent as its own kind, `PrepareDecide`), the
    /// receiver is the transaction's primary and every other participant
    /// has voted yes already: it prepares and, on its own yes, commits at
    /// once, answering with the transaction's state (`TxState`) instead of
    /// a vote. A no is answered with the error, as for a plain prepare.
    Prepare {
        txid: TxId,
        partition: PartitionId,
        fingerprint: u32,
        table: Vec<u8>,
        key: Vec<u8>,
        write: Write,
        participants: Vec<BrickId>,
        decide: bool,
    },
    /// Phase two: apply the prepared write and release the lock.
    Commit {
        txid: TxId,
        partition: PartitionId,
    },
    /// Phase two: drop the prepared write and release the lock.
    Abort {
        txid: TxId,
        partition: PartitionId,
    },
    /// A participant asks a peer what it knows of a transaction.
    TxStatus {
        txid: TxId,
        partition: PartitionId,
    },
    /// Ask a replica of `rg` to remove `brick` from it, moving the group from
    /// `epoch` to `epoch + 1`. Answered by `Maps` with the result (which may
    /// be a different, newer membership that some other caller installed).
    Exclude {
        rg: RgId,
        epoch: u64,
        brick: BrickId,
    },
    /// A peer pushes its maps; the receiver keeps, per RG, the newer epoch.
    PushMaps {
        maps: Vec<u8>,
    },
    /// A replica asks a peer in `rg` at `epoch` to extend its read lease.
    /// `incarnation` changes every time the asker's process starts, so the
    /// peer can tell a restarted brick from one that kept its state.
    /// `blank`: the asker started without data for the group's partition
    /// (an emptied data folder, or a new cluster) and has not received it
    /// since; with the digest of what it holds there, so that a peer whose
    /// data differs has it copied back rather than take it for a current
    /// member.
    LeaseRenew {
        rg: RgId,
        epoch: u64,
        from: BrickId,
        incarnation: u64,
        blank: Option<Digest>,
    },
    /// Counters of the brick and of each partition it holds.
    Stats,
    /// A digest of a partition's live data, equal on replicas that hold the
    /// same data whatever order the records were written in.
    PartitionChecksum {
        partition: PartitionId,
    },
    /// A replica of `rg` (the source) tells a brick it is about to copy
    /// `partition` to it, ahead of adding it to the group at a new epoch.
    /// `maps` are the source's maps. With `full` false the receiver may keep
    /// data it already holds and answers with its digest, so the source can
    /// skip the copy if the data is current. `keys` is how many keys the
    /// source holds as the copy starts, so the receiver can size its index
    /// once (a hint: a wrong one only costs time). Answered by `CopyReady`.
    CopyBegin {
        rg: RgId,
        epoch: u64,
        partition: PartitionId,
        full: bool,
        keys: u64,
        maps: Vec<u8>,
    },
    /// The next stretch of the source's arena: records from `offset`, whole
    /// ones, at most `COPY_CHUNK_SIZE_MAX` bytes. `end` is set on the last
    /// chunk, sent while the source holds the partition's write lease, with
    /// the digest the copy must have. Answered by `CopyAck`.
    CopyChunk {
        partition: PartitionId,
        offset: u64,
        bytes: Vec<u8>,
        end: Option<Digest>,
    },
    /// A part of the source's index table, sent ahead of a full copy's
    /// first chunk so that the receiver need not index the records below
    /// `end` itself: the table has `slots` slots of `bits`-bit locations
    /// (the index as it was when the arena's end was `end`), and `bytes`
    /// holds slots from `first` on, as little-endian u64s, at most
    /// `COPY_CHUNK_SIZE_MAX` bytes. The receiver checks every entry against
    /// the records before it counts on one, and may ignore the table and
    /// index the records itself. Answered by `CopyAck`.
    CopyIndex {
        partition: PartitionId,
        end: u64,
        slots: u64,
        bits: u8,
        first: u64,
        bytes: Vec<u8>,
    },
    /// The source gave up on a copy: the receiver drops what it received.
    CopyAbort {
        partition: PartitionId,
    },
    /// How many bytes of arenas the brick holds, and whether it holds data
    /// of `partition`: what the leader of a group that lost a replica asks
    /// to choose the brick to copy it to. Answered by `Capacity`.
    Capacity {
        partition: PartitionId,
    },
    /// One round of the vote that decides a replica group's membership at
    /// `epoch` (single-decree Paxos among all bricks). Without `value` it
    /// asks the receiver to promise `ballot` (phase one); with it, to accept
    /// `value` at `ballot` (phase two). Answered by `ConfigVote`, or by
    /// `Maps` when the receiver already knows the group at `epoch` or later.
    ConfigVote {
        rg: RgId,
        epoch: u64,
        ballot: Ballot,
        value: Option<Vec<BrickId>>,
    },
}

/// A Paxos ballot: rounds first, the proposing brick breaks ties.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ballot {
    pub round: u64,
    pub brick: BrickId,
}

impl Ballot {
    /// Below every ballot a proposer uses (rounds start at 1).
    pub const ZERO: Ballot = Ballot {
        round: 0,
        brick: BrickId(0),
    };
}

/// A membership an acceptor accepted, and at which ballot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accepted {
    pub ballot: Ballot,
    pub bricks: Vec<BrickId>,
}

/// A `CopyChunk` request whose bytes are borrowed from the frame they came
/// in, so that a receiver writes them where they belong without first
/// copying them into a message of their own (see
/// [`crate::FrameDecoder::next_frame_lending`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CopyChunkRef<'a> {
    pub partition: PartitionId,
    pub offset: u64,
    pub bytes: &'a [u8],
    pub end: Option<Digest>,
}

impl CopyChunkRef<'_> {
    /// The same request, owning a copy of its bytes.
    pub fn to_request(&self) -> Request {
        Request::CopyChunk {
            partition: self.partition,
            offset: self.offset,
            bytes: self.bytes.to_vec(),
            end: self.end,
        }
    }
}

/// A `CopyIndex` request whose bytes are borrowed from where they lie: at
/// a source, its snapshot of the index, encoded straight from there (see
/// [`crate::codec::copy_index_frame_around`]); at a target, the frame they
/// came in (see [`crate::FrameDecoder::next_frame_lending`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CopyIndexRef<'a> {
    pub partition: PartitionId,
    pub end: u64,
    pub slots: u64,
    pub bits: u8,
    pub first: u64,
    pub bytes: &'a [u8],
}

impl Request {
    /// A `CopyIndex` request as the part it carries, borrowing its bytes;
    /// `None` for any other request.
    pub fn as_copy_index(&self) -> Option<CopyIndexRef<'_>> {
        match self {
            Request::CopyIndex {
                partition,
                end,
                slots,
                bits,
                first,
                bytes,
            } => Some(CopyIndexRef {
                partition: *partition,
                end: *end,
                slots: *slots,
                bits: *bits,
                first: *first,
                bytes,
            }),
            _ => None,
        }
    }
}

impl CopyIndexRef<'_> {
    /// The same request, owning a copy of its bytes.
    pub fn to_request(&self) -> Request {
        Request::CopyIndex {
            partition: self.partition,
            end: self.end,
            slots: self.slots,
            bits: self.bits,
            first: self.first,
            bytes: self.bytes.to_vec(),
        }
    }
}

/// A `Prepare` (a `PrepareDecide` with `decide` set) whose bytes are
/// borrowed from where the caller keeps them, so that a client encodes it
/// straight into a connection's buffer without first copying the table,
/// key and value into a [`Request`] of their own (see
/// [`crate::encode_prepare`]). Encoded, it is the same frame as the
/// request it stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrepareRef<'a> {
    pub txid: TxId,
    pub partition: PartitionId,
    pub fingerprint: u32,
    pub table: &'a [u8],
    pub key: &'a [u8],
    /// The value written; `None` for a removal.
    pub value: Option<&'a [u8]>,
    pub participants: &'a [BrickId],
    pub decide: bool,
}

impl PrepareRef<'_> {
    /// The same request, owning copies of its bytes.
    pub fn to_request(&self) -> Request {
        Request::Prepare {
            txid: self.txid,
            partition: self.partition,
            fingerprint: self.fingerprint,
            table: self.table.to_vec(),
            key: self.key.to_vec(),
            write: self.value.map_or(Write::Remove, |v| Write::Put(v.to_vec())),
            participants: self.participants.to_vec(),
            decide: self.decide,
        }
    }

    /// Its frame kind: `Prepare` or `PrepareDecide`.
    pub fn kind(&self) -> u8 {
        if self.decide {
            kind::PREPARE_DECIDE
        } else {
            kind::PREPARE
        }
    }
}

/// A digest of a partition's live data that does not depend on the order
/// of writes or on compaction: equal on replicas holding the same data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Digest {
    pub sum: u64,
    pub keys: u64,
}

/// Why a request was refused. The numeric codes are part of the protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ErrorCode {
    /// The caller's fingerprint differs from the brick's; the reply carries
    /// the brick's maps so the caller can repair its own.
    FingerprintMismatch = 1,
    /// The key is locked by another prepared write.
    LockConflict = 2,
    /// The partition's arena cannot fit the write even after compaction.
    PartitionFull = 3,
    /// The brick is over a limit for this connection; retry later.
    Busy = 4,
    /// The brick holds no replica of that partition.
    NotReplica = 5,
    /// The request could not be decoded or broke a limit.
    Malformed = 6,
    TableNotFound = 7,
    TableExists = 8,
    /// The brick's lease on the partition lapsed, or it was excluded; it will
    /// not answer until it has caught up with its peers.
    Fenced = 9,
    /// A membership change was refused (for example, the brick to exclude
    /// answered a probe and is alive).
    Refused = 10,
    /// The request named a transaction the brick does not know.
    UnknownTransaction = 11,
    Internal = 12,
    /// The brick restarted after a crash and lost its transaction table: it
    /// serves nothing in groups with other members until it has recovered.
    Restarted = 13,
    /// The partition's writes are held for a moment: the last stretch of a
    /// recovery copy, or a change of its group's membership being decided;
    /// retry shortly.
    WritesHeld = 14,
}

/// An error reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorReply {
    pub code: ErrorCode,
    /// Human-readable detail for logs; at most `ERROR_MESSAGE_SIZE_MAX` bytes.
    pub message: String,
    /// The brick's encoded maps, with `FingerprintMismatch` and `Fenced`.
    pub maps: Option<Vec<u8>>,
}

/// A reply from a brick.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// The request was carried out (create, destroy, commit, abort, push).
    Ok,
    Pong,
    Value(Vec<u8>),
    NotFound,
    Maps(Vec<u8>),
    /// A yes vote to a prepare (a no vote is an `Error`).
    Voted,
    TxState(TxState),
    /// The lease is extended by `duration_ms` from when the request was sent.
    Lease {
        duration_ms: u32,
    },
    Stats(Vec<(String, u64)>),
    Checksum {
        crc: u32,
        keys: u64,
    },
    /// The receiver of `CopyBegin` is ready; `local` is the digest of the
    /// partition it already holds, when the request allowed keeping it.
    CopyReady {
        local: Option<Digest>,
    },
    /// The receiver holds the copy up to `end`; after the last chunk, the
    /// copy is verified and installed.
    CopyAck {
        end: u64,
    },
    /// Bytes of partition arenas the brick holds, and whether one of them
    /// is of the partition asked about (it was a replica before).
    Capacity {
        held_bytes: u64,
        holds_partition: bool,
    },
    /// The answer to `ConfigVote`: whether the promise or the acceptance was
    /// given, the highest ballot the receiver has promised, and the value
    /// it accepted for that epoch, if any.
    ConfigVote {
        granted: bool,
        promised: Ballot,
        accepted: Option<Accepted>,
    },
    Error(ErrorReply),
}

/// Either direction of a frame's body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    Request(Request),
    Reply(Reply),
}

/// The kind byte of each message in a frame header: requests in 1..=63,
/// replies in 64..=127, so a reader can tell the direction from the kind
/// alone. The numbers are part of the protocol; never reuse a retired one.
pub mod kind {
    pub const PING: u8 = 1;
    pub const GET_MAPS: u8 = 2;
    pub const CREATE_TABLE: u8 = 3;
    pub const DESTROY_TABLE: u8 = 4;
    pub const GET: u8 = 5;
    pub const PREPARE: u8 = 6;
    pub const COMMIT: u8 = 7;
    pub const ABORT: u8 = 8;
    pub const TX_STATUS: u8 = 9;
    pub const EXCLUDE: u8 = 10;
    pub const PUSH_MAPS: u8 = 11;
    pub const LEASE_RENEW: u8 = 12;
    pub const STATS: u8 = 13;
    pub const PARTITION_CHECKSUM: u8 = 14;
    pub const COPY_BEGIN: u8 = 15;
    pub const COPY_CHUNK: u8 = 16;
    pub const COPY_ABORT: u8 = 17;
    pub const CAPACITY: u8 = 18;
    pub const CONFIG_VOTE: u8 = 19;
    pub const PREPARE_DECIDE: u8 = 20;
    pub const COPY_INDEX: u8 = 21;

    pub const OK: u8 = 64;
    pub const PONG: u8 = 65;
    pub const VALUE: u8 = 66;
    pub const NOT_FOUND: u8 = 67;
    pub const MAPS: u8 = 68;
    pub const VOTED: u8 = 69;
    pub const TX_STATE: u8 = 70;
    pub const LEASE: u8 = 71;
    pub const STATS_REPLY: u8 = 72;
    pub const CHECKSUM: u8 = 73;
    pub const ERROR: u8 = 74;
    pub const COPY_READY: u8 = 75;
    pub const COPY_ACK: u8 = 76;
    pub const CAPACITY_REPLY: u8 = 77;
    pub const CONFIG_VOTE_REPLY: u8 = 78;

    /// The first kind number of a reply; below it are requests.
    pub const REPLY_MIN: u8 = 64;
}

/// The name of the message a kind byte stands for, or `None` for a kind this
/// version does not know. Reply names that clash with a request's carry a
/// `Reply` suffix.
pub fn kind_name(kind: u8) -> Option<&'static str> {
    let name = match kind {
        kind::PING => "Ping",
        kind::GET_MAPS => "GetMaps",
        kind::CREATE_TABLE => "CreateTable",
        kind::DESTROY_TABLE => "DestroyTable",
        kind::GET => "Get",
        kind::PREPARE => "Prepare",
        kind::PREPARE_DECIDE => "PrepareDecide",
        kind::COMMIT => "Commit",
        kind::ABORT => "Abort",
        kind::TX_STATUS => "TxStatus",
        kind::EXCLUDE => "Exclude",
        kind::PUSH_MAPS => "PushMaps",
        kind::LEASE_RENEW => "LeaseRenew",
        kind::STATS => "Stats",
        kind::PARTITION_CHECKSUM => "PartitionChecksum",
        kind::COPY_BEGIN => "CopyBegin",
        kind::COPY_CHUNK => "CopyChunk",
        kind::COPY_ABORT => "CopyAbort",
        kind::COPY_INDEX => "CopyIndex",
        kind::CAPACITY => "Capacity",
        kind::CONFIG_VOTE => "ConfigVote",
        kind::OK => "Ok",
        kind::PONG => "Pong",
        kind::VALUE => "Value",
        kind::NOT_FOUND => "NotFound",
        kind::MAPS => "Maps",
        kind::VOTED => "Voted",
        kind::TX_STATE => "TxState",
        kind::LEASE => "Lease",
        kind::STATS_REPLY => "StatsReply",
        kind::CHECKSUM => "Checksum",
        kind::ERROR => "Error",
        kind::COPY_READY => "CopyReady",
        kind::COPY_ACK => "CopyAck",
        kind::CAPACITY_REPLY => "CapacityReply",
        kind::CONFIG_VOTE_REPLY => "ConfigVoteReply",
        _ => return None,
    };
    Some(name)
}

impl Request {
    /// The kind byte of this request in a frame header.
    pub fn kind(&self) -> u8 {
        match self {
            Request::Ping => kind::PING,
            Request::GetMaps => kind::GET_MAPS,
            Request::CreateTable { .. } => kind::CREATE_TABLE,
            Request::DestroyTable { .. } => kind::DESTROY_TABLE,
            Request::Get { .. } => kind::GET,
            Request::Prepare { decide: false, .. } => kind::PREPARE,
            Request::Prepare { decide: true, .. } => kind::PREPARE_DECIDE,
            Request::Commit { .. } => kind::COMMIT,
            Request::Abort { .. } => kind::ABORT,
            Request::TxStatus { .. } => kind::TX_STATUS,
            Request::Exclude { .. } => kind::EXCLUDE,
            Request::PushMaps { .. } => kind::PUSH_MAPS,
            Request::LeaseRenew { .. } => kind::LEASE_RENEW,
            Request::Stats => kind::STATS,
            Request::PartitionChecksum { .. } => kind::PARTITION_CHECKSUM,
            Request::CopyBegin { .. } => kind::COPY_BEGIN,
            Request::CopyChunk { .. } => kind::COPY_CHUNK,
            Request::CopyIndex { .. } => kind::COPY_INDEX,
            Request::CopyAbort { .. } => kind::COPY_ABORT,
            Request::Capacity { .. } => kind::CAPACITY,
            Request::ConfigVote { .. } => kind::CONFIG_VOTE,
        }
    }
}

impl Reply {
    /// The kind byte of this reply in a frame header.
    pub fn kind(&self) -> u8 {
        match self {
            Reply::Ok => kind::OK,
            Reply::Pong => kind::PONG,
            Reply::Value(_) => kind::VALUE,
            Reply::NotFound => kind::NOT_FOUND,
            Reply::Maps(_) => kind::MAPS,
            Reply::Voted => kind::VOTED,
            Reply::TxState(_) => kind::TX_STATE,
            Reply::Lease { .. } => kind::LEASE,
            Reply::Stats(_) => kind::STATS_REPLY,
            Reply::Checksum { .. } => kind::CHECKSUM,
            Reply::Error(_) => kind::ERROR,
            Reply::CopyReady { .. } => kind::COPY_READY,
            Reply::CopyAck { .. } => kind::COPY_ACK,
            Reply::Capacity { .. } => kind::CAPACITY_REPLY,
            Reply::ConfigVote { .. } => kind::CONFIG_VOTE_REPLY,
        }
    }
}

impl Message {
    /// The kind byte of this message in a frame header.
    pub fn kind(&self) -> u8 {
        match self {
            Message::Request(request) => request.kind(),
            Message::Reply(reply) => reply.kind(),
        }
    }
}
