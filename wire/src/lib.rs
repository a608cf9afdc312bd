//! The DDS wire protocol, shared by bricks and by ddslib: a fixed frame
//! header, the request and reply messages, their byte encoding, and the
//! limits that bound every length. Nothing here does I/O; a connection's
//! bytes go in and frames come out (see [`codec`]).

pub mod codec;
pub mod header;
pub mod limits;
pub mod message;

pub use header::{Header, HEADER_SIZE};
pub use message::*;
