//! Every bound of the bench in one place: load shape, timeouts, RESP parsing
//! and the local-cluster launcher. The relations between them are checked at
//! compile time below. Defaults of the command line live in `main.rs`; this
//! module holds only the ceilings that keep a mistyped flag from exhausting
//! the machine.

use std::time::Duration;

/// Service threads, each with its own connection.
pub const SERVICES_MAX: usize = 1024;

/// Operations one service keeps outstanding.
pub const OUTSTANDING_MAX: usize = 65_536;

/// Bytes of one value.
pub const VALUE_SIZE_MAX: usize = 1 << 20;

/// Bytes of values one service may have in flight at once
/// (`outstanding * value_size`). Requests are written with blocking writes
/// while replies wait unread, so the batch must stay small enough for the
/// server to buffer.
pub const IN_FLIGHT_BYTES_MAX: usize = 64 << 20;

/// Distinct keys of a run.
pub const KEYS_MAX: u64 = 1 << 32;

/// Seconds of warmup or of measurement.
pub const DURATION_S_MAX: u64 = 24 * 3600;

/// How long a service waits in one `poll` before it looks at the clock again.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// A service with operations outstanding and no completion for this long is
/// reported as stalled instead of waited on forever.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(10);

/// After the measurement ends, how long services may take to finish the
/// operations still in flight; those left over are counted as `unfinished`.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest latency the histograms hold, in microseconds (one minute); larger
/// samples are clamped to it.
pub const LATENCY_US_MAX: u64 = 60_000_000;

/// Connecting to a target gives up after this.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Bytes read from a socket in one call.
pub const READ_CHUNK_SIZE: usize = 64 * 1024;

/// Longest RESP header line (`+OK`, `-ERR ...`, `:12`, `$150`), CRLF excluded.
pub const RESP_LINE_SIZE_MAX: usize = 64 * 1024;

/// Largest RESP bulk string accepted in a reply.
pub const RESP_BULK_SIZE_MAX: usize = 64 << 20;

/// Most elements of one RESP array in a reply.
pub const RESP_ARRAY_LEN_MAX: usize = 1 << 20;

/// Deepest nesting of RESP arrays in a reply.
pub const RESP_DEPTH_MAX: usize = 8;

/// Bytes of replies a connection buffers while waiting for one to complete:
/// one largest bulk string plus its header and a chunk of what follows it.
pub const RESP_BUFFER_SIZE_MAX: usize = RESP_BULK_SIZE_MAX + RESP_LINE_SIZE_MAX + READ_CHUNK_SIZE;

/// Bricks the launcher starts from one configuration.
pub const BRICKS_MAX: usize = 4096;

/// Bytes of a cluster configuration file the launcher reads.
pub const CONFIG_SIZE_MAX: u64 = 1 << 20;

/// How long the launcher waits for a brick to accept connections.
pub const BRICK_READY_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the launcher tries to connect to a brick that is starting.
pub const BRICK_READY_POLL_INTERVAL: Duration = Duration::from_millis(20);

/// How long a brick may take to exit after SIGTERM before it gets SIGKILL.
pub const BRICK_STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Bytes of a brick's log quoted in an error about it.
pub const LOG_TAIL_SIZE: u64 = 2048;

const _: () = assert!(IN_FLIGHT_BYTES_MAX >= VALUE_SIZE_MAX);
const _: () = assert!(RESP_BULK_SIZE_MAX >= VALUE_SIZE_MAX);
const _: () = assert!(READ_CHUNK_SIZE <= RESP_BUFFER_SIZE_MAX);
const _: () = assert!(POLL_INTERVAL.as_millis() < STALL_TIMEOUT.as_millis());
const _: () = assert!(BRICK_READY_POLL_INTERVAL.as_millis() < BRICK_READY_TIMEOUT.as_millis());
const _: () = assert!(OUTSTANDING_MAX as u64 <= u32::MAX as u64);
