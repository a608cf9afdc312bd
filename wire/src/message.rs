//! The messages of the protocol. Requests flow from a caller (ddslib, or a
//! brick asking a peer) to a brick; each reply carries the request id of the
//! request it answers. Body encoding is in this module too: fixed-width
//! little-endian integers, and byte strings as a u32 length then the bytes,
//! every length checked against [`crate::limits`] before it is used.

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
    Prepare {
        txid: TxId,
        partition: PartitionId,
        fingerprint: u32,
        table: Vec<u8>,
        key: Vec<u8>,
        write: Write,
        participants: Vec<BrickId>,
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
    LeaseRenew {
        rg: RgId,
        epoch: u64,
        from: BrickId,
    },
    /// Counters of the brick and of each partition it holds.
    Stats,
    /// A digest of a partition's live data, equal on replicas that hold the
    /// same data whatever order the records were written in.
    PartitionChecksum {
        partition: PartitionId,
    },
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
    Error(ErrorReply),
}

/// Either direction of a frame's body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    Request(Request),
    Reply(Reply),
}
