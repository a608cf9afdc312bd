//! Every length and count the protocol allows, in one place. A frame whose
//! header claims more than these is refused before anything is allocated.

/// Longest key, in bytes (the table name is not counted).
pub const KEY_SIZE_MAX: usize = 1024;

/// Longest value, in bytes.
pub const VALUE_SIZE_MAX: usize = 1024 * 1024;

/// Longest table name, in bytes.
pub const TABLE_NAME_SIZE_MAX: usize = 255;

/// Longest encoded maps carried in one frame (a reply to `GetMaps` or the
/// brick's view in a fingerprint-mismatch error).
pub const MAPS_SIZE_MAX: usize = 1024 * 1024;

/// Most participants named in one prepare (the replication degree).
pub const PARTICIPANTS_MAX: usize = 16;

/// Longest error message text, in bytes.
pub const ERROR_MESSAGE_SIZE_MAX: usize = 1024;

/// Most entries in a stats reply.
pub const STATS_ENTRIES_MAX: usize = 4096;

/// Bytes of arena in one recovery copy chunk: room for the largest record
/// a brick stores (a value of `VALUE_SIZE_MAX` with the largest key, table
/// name and record header), which a chunk holds whole.
pub const COPY_CHUNK_SIZE_MAX: usize = VALUE_SIZE_MAX + 64 * 1024;

/// Longest frame body, in bytes: room for the largest value, key, table name
/// and the fixed fields of a prepare, with headroom for maps in an error.
pub const FRAME_BODY_SIZE_MAX: usize = VALUE_SIZE_MAX + MAPS_SIZE_MAX + 64 * 1024;

/// Requests one connection may have outstanding at a brick; past this the
/// brick answers `Busy`.
pub const OUTSTANDING_REQUESTS_PER_CONNECTION_MAX: usize = 1024;

/// Connections one brick accepts at once; past this new ones are closed.
pub const CONNECTIONS_PER_BRICK_MAX: usize = 1024;

/// Bytes of replies one connection may have queued for sending; past this
/// the brick stops reading from that connection until the peer drains it.
pub const QUEUED_BYTES_PER_CONNECTION_MAX: usize = 8 * 1024 * 1024;

const _: () = assert!(KEY_SIZE_MAX + TABLE_NAME_SIZE_MAX + VALUE_SIZE_MAX < FRAME_BODY_SIZE_MAX);
const _: () = assert!(MAPS_SIZE_MAX < FRAME_BODY_SIZE_MAX);
const _: () = assert!(FRAME_BODY_SIZE_MAX <= u32::MAX as usize);

/// Longest counter name in a stats reply, in bytes.
pub const STAT_NAME_SIZE_MAX: usize = 255;

// The largest body each message can have while every field is within its
// limit still fits a frame, so a message that passes `check_limits` is never
// refused for its frame size. The fixed-size fields are counted generously.
const _: () = assert!(
    64 + 4
        + TABLE_NAME_SIZE_MAX
        + 4
        + KEY_SIZE_MAX
        + 1
        + 4
        + VALUE_SIZE_MAX
        + 4
        + 4 * PARTICIPANTS_MAX
        <= FRAME_BODY_SIZE_MAX
);
const _: () =
    assert!(1 + 4 + ERROR_MESSAGE_SIZE_MAX + 1 + 4 + MAPS_SIZE_MAX <= FRAME_BODY_SIZE_MAX);
const _: () = assert!(4 + STATS_ENTRIES_MAX * (4 + STAT_NAME_SIZE_MAX + 8) <= FRAME_BODY_SIZE_MAX);
const _: () = assert!(8 + 8 + 4 + COPY_CHUNK_SIZE_MAX + 17 <= FRAME_BODY_SIZE_MAX);
const _: () =
    assert!(11 + 1 + TABLE_NAME_SIZE_MAX + KEY_SIZE_MAX + VALUE_SIZE_MAX <= COPY_CHUNK_SIZE_MAX);
const _: () = assert!(4 + 8 + 8 + 1 + 4 + MAPS_SIZE_MAX <= FRAME_BODY_SIZE_MAX);
