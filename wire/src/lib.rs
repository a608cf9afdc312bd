//! The DDS wire protocol, shared by bricks and by ddslib: a fixed frame
//! header, the request and reply messages, their byte encoding, and the
//! limits that bound every length. Nothing here does I/O; a connection's
//! bytes go in and frames come out (see [`codec`]).
//!
//! Reading order: [`limits`], [`message`] (the types and kind bytes), the
//! body encoding (`body.rs`), [`header`], then [`codec`].

mod body;
pub mod codec;
pub mod header;
pub mod limits;
pub mod message;

pub use body::{DecodeError, DecodeProblem, LimitError};
pub use codec::{
    copy_chunk_frame_around, copy_index_frame_head, encode_copy_chunk, encode_frame,
    encode_prepare, encode_reply, encode_request, Frame, FrameDecoder, FrameError,
};
pub use header::{Header, HeaderError, HEADER_SIZE};
pub use message::*;
