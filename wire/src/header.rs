//! Frame header: to be written.
pub const HEADER_SIZE: usize = 24; pub struct Header;
