//! The errors that end a bench run. Errors of single operations (a server
//! that answers one request with an error, a key that is missing) are not
//! here: they are counted by kind in the report and the run goes on.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use crate::cluster::ClusterError;

/// Why a bench run stopped.
#[derive(Debug)]
pub enum BenchError {
    /// The command line asked for something out of range.
    Config(String),
    /// A connection to the target could not be opened.
    Connect {
        address: SocketAddr,
        error: io::Error,
    },
    /// Reading or writing an open connection failed.
    Io {
        address: SocketAddr,
        error: io::Error,
    },
    /// The target closed a connection.
    ConnectionClosed { address: SocketAddr },
    /// The target answered with bytes that are not its protocol.
    Protocol {
        address: SocketAddr,
        problem: String,
    },
    /// Operations were outstanding and none completed for `waited`.
    Stalled {
        outstanding: usize,
        waited: Duration,
    },
    /// A service reported a completion for a tag it was never given: a bug
    /// in that service's implementation.
    UnknownTag(u64),
    /// The target was asked for but is not available in this build.
    TargetUnavailable(String),
    /// The local cluster could not be started.
    Cluster(ClusterError),
}

impl fmt::Display for BenchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BenchError::Config(problem) => write!(f, "{problem}; see `bench --help`"),
            BenchError::Connect { address, error } => write!(
                f,
                "cannot connect to {address}: {error}; start the server there or pass its address"
            ),
            BenchError::Io { address, error } => write!(
                f,
                "connection to {address} failed: {error}; check that the server is still running"
            ),
            BenchError::ConnectionClosed { address } => write!(
                f,
                "{address} closed the connection; check the server's log (a client output buffer limit or a restart?)"
            ),
            BenchError::Protocol { address, problem } => write!(
                f,
                "{address} sent a reply that is not RESP2 ({problem}); is that port really a Redis server?"
            ),
            BenchError::Stalled { outstanding, waited } => write!(
                f,
                "{outstanding} operations outstanding and none completed in {} ms; the server is stuck or overloaded",
                waited.as_millis()
            ),
            BenchError::UnknownTag(tag) => write!(
                f,
                "a service completed tag {tag}, which it was never given; this is a bug in that service"
            ),
            BenchError::TargetUnavailable(what) => write!(f, "{what}"),
            BenchError::Cluster(error) => write!(f, "{error}"),
        }
    }
}

impl std::error::Error for BenchError {}

impl From<ClusterError> for BenchError {
    fn from(error: ClusterError) -> BenchError {
        BenchError::Cluster(error)
    }
}
