//! The errors service code sees. Each says what happened and what to do.

use std::fmt;

/// Why an operation on the hash table failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DdsError {
    /// The key is not in the table.
    NotFound,
    /// The table does not exist: create it first.
    TableNotFound(String),
    /// `create_table` of a name that exists.
    TableExists(String),
    /// No replica could serve the operation within the retry budget; the
    /// write, if it was one, did not take effect.
    Unavailable(String),
    /// Requests kept going unanswered; a write did not take effect.
    Timeout(String),
    /// A write whose fate could not be learned: it may or may not have
    /// taken effect. Read the key to find out before writing again.
    OutcomeUnknown(String),
    /// The partition has no room for the value.
    PartitionFull(String),
    /// The arguments break a limit (key, value or table name size).
    InvalidArgument(String),
    /// A brick answered something the protocol does not allow.
    Protocol(String),
    /// The cluster configuration or the seed bricks could not be used.
    Config(String),
    /// A local I/O failure of the library (its event loop).
    Io(String),
}

impl fmt::Display for DdsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DdsError::NotFound => write!(f, "key not found"),
            DdsError::TableNotFound(m) => {
                write!(f, "table not found ({m}); create it with create_table")
            }
            DdsError::TableExists(m) => write!(f, "table exists ({m})"),
            DdsError::Unavailable(m) => write!(
                f,
                "unavailable: {m}; the write did not take effect, retry later"
            ),
            DdsError::Timeout(m) => write!(
                f,
                "timed out: {m}; the write did not take effect, retry later"
            ),
            DdsError::OutcomeUnknown(m) => {
                write!(f, "outcome unknown: {m}; the write may or may not have taken effect, read the key before retrying")
            }
            DdsError::PartitionFull(m) => write!(f, "partition full: {m}"),
            DdsError::InvalidArgument(m) => write!(f, "invalid argument: {m}"),
            DdsError::Protocol(m) => write!(f, "protocol error: {m}"),
            DdsError::Config(m) => write!(f, "configuration: {m}"),
            DdsError::Io(m) => write!(f, "I/O error: {m}"),
        }
    }
}

impl std::error::Error for DdsError {}

impl DdsError {
    /// A short stable name of the kind, for counting errors.
    pub fn kind(&self) -> &'static str {
        match self {
            DdsError::NotFound => "not_found",
            DdsError::TableNotFound(_) => "table_not_found",
            DdsError::TableExists(_) => "table_exists",
            DdsError::Unavailable(_) => "unavailable",
            DdsError::Timeout(_) => "timeout",
            DdsError::OutcomeUnknown(_) => "outcome_unknown",
            DdsError::PartitionFull(_) => "partition_full",
            DdsError::InvalidArgument(_) => "invalid_argument",
            DdsError::Protocol(_) => "protocol",
            DdsError::Config(_) => "config",
            DdsError::Io(_) => "io",
        }
    }
}
