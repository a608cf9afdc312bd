//! Bounds the library keeps on its own state. Protocol limits (key, value,
//! frame sizes) are in `wire::limits`.

/// Operations one handle may have in flight; `submit` past this waits for
/// completions first.
pub const OPS_IN_FLIGHT_MAX: usize = 4096;

/// Bytes queued for one brick before the handle stops taking new work
/// until the socket drains.
pub const QUEUED_BYTES_PER_BRICK_MAX: usize = 16 * 1024 * 1024;

/// Bytes read from a socket per readiness event before other sockets get
/// their turn.
pub const READ_BYTES_PER_EVENT_MAX: usize = 1024 * 1024;

/// Commits to non-primary participants whose answers are still awaited.
pub const FOLLOWUPS_MAX: usize = 65_536;
