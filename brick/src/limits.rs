//! Every bound the brick keeps on its own state, in one place. The protocol's
//! limits (key, value and frame sizes, connections) are in `wire::limits`.

use std::time::Duration;

/// Reads that may wait at once for locked keys to be resolved.
pub const WAITING_READS_MAX: usize = 65_536;

/// Transactions that may be prepared at once on one brick.
pub const PREPARED_MAX: usize = 65_536;

/// Outcomes other than commits remembered at once (each ~40 bytes).
pub const OUTCOMES_MAX: usize = 1 << 20;

/// Blocks of commit bits remembered at once (each 512 bytes for 4,096
/// transactions of one coordinator).
pub const OUTCOME_BLOCKS_MAX: usize = 1 << 16;

/// Client requests that may wait for one exclusion to finish.
pub const EXCLUSION_WAITERS_MAX: usize = 1024;

/// Requests to peers that may be outstanding before unanswered lease
/// renewals are dropped.
pub const PEER_PENDING_MAX: usize = 65_536;

/// Bytes of records that one compaction step copies, so that an event-loop
/// pass stays short (about a millisecond of memory copying).
pub const COMPACTION_STEP_BYTES: usize = 256 * 1024;

/// Slots of an outgrown index table that one idle event-loop pass moves to
/// the grown table (whole probe runs; a fraction of a millisecond), so a
/// partition that stops growing does not keep both tables.
pub const INDEX_GROWTH_STEP_SLOTS: usize = 4096;

/// Extra wait past a lease's end before a brick that granted it treats it
/// as expired, for clocks that run at slightly different rates.
pub const LEASE_MARGIN: Duration = Duration::from_millis(50);

const _: () = assert!(WAITING_READS_MAX <= PREPARED_MAX * 16);

/// Probes one exclusion sends when connections to the target keep breaking.
pub const PROBES_MAX: u32 = 4;

/// Copies a brick receives at once.
pub const INCOMING_COPIES_MAX: usize = 4;

/// Prepares that may wait at once for a held partition (the last stretch
/// of a copy, a membership vote) before they are refused with `WritesHeld`.
pub const HELD_PREPARES_MAX: usize = 65_536;

/// How long a prepare waits for a held partition before it is refused with
/// `WritesHeld` (the client then backs off and retries): longer than a
/// copy's usual hold of a few milliseconds, far shorter than a client's
/// request timeout.
pub const PREPARE_HOLD_WAIT: Duration = Duration::from_millis(50);
