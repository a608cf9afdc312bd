//! The fixed 24-byte frame header and its validation. Every frame on a
//! connection is one header followed by `body_len` bytes of body; the header
//! says what the body is and how long, so a reader can refuse a frame from
//! these 24 bytes alone, before it allocates anything for the body.
//!
//! This module does not know how bodies are encoded (see [`crate::message`]
//! and the `body` module) nor how bytes arrive (see [`crate::codec`]).
//!
//! Layout, all integers little-endian:
//!
//! | offset | size | field        |
//! |--------|------|--------------|
//! | 0      | 4    | `magic`      |
//! | 4      | 1    | `version`    |
//! | 5      | 1    | `kind`       |
//! | 6      | 2    | `flags`      |
//! | 8      | 4    | `body_len`   |
//! | 12     | 8    | `request_id` |
//! | 20     | 4    | `body_crc`   |

use std::fmt;

use byteorder::{ByteOrder, LittleEndian};

use crate::limits::FRAME_BODY_SIZE_MAX;
use crate::message::kind_name;

/// Size of the frame header, in bytes.
pub const HEADER_SIZE: usize = 24;

/// The first four bytes of every frame: "DDS1" as bytes on the wire.
pub const MAGIC: u32 = 0x3153_4444;

/// The protocol version this crate speaks. A peer with another version is
/// refused rather than guessed at.
pub const VERSION: u8 = 1;

/// Every field of a header as it sits on the wire, before validation. Tests
/// and tools use it to build headers that lie; everyone else uses [`Header`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawHeader {
    pub magic: u32,
    pub version: u8,
    pub kind: u8,
    pub flags: u16,
    pub body_len: u32,
    pub request_id: u64,
    pub body_crc: u32,
}

impl RawHeader {
    /// Reads the fields without judging them.
    pub fn from_bytes(bytes: &[u8; HEADER_SIZE]) -> RawHeader {
        RawHeader {
            magic: LittleEndian::read_u32(&bytes[0..4]),
            version: bytes[4],
            kind: bytes[5],
            flags: LittleEndian::read_u16(&bytes[6..8]),
            body_len: LittleEndian::read_u32(&bytes[8..12]),
            request_id: LittleEndian::read_u64(&bytes[12..20]),
            body_crc: LittleEndian::read_u32(&bytes[20..24]),
        }
    }

    /// Writes the fields as they are, valid or not.
    pub fn to_bytes(&self, out: &mut [u8; HEADER_SIZE]) {
        LittleEndian::write_u32(&mut out[0..4], self.magic);
        out[4] = self.version;
        out[5] = self.kind;
        LittleEndian::write_u16(&mut out[6..8], self.flags);
        LittleEndian::write_u32(&mut out[8..12], self.body_len);
        LittleEndian::write_u64(&mut out[12..20], self.request_id);
        LittleEndian::write_u32(&mut out[20..24], self.body_crc);
    }

    /// Why this header must be refused, or `None` if it is acceptable. The
    /// checks look only at the header, so they run before any allocation;
    /// the body's crc is checked once the body has arrived.
    pub fn invalid(&self) -> Option<&'static str> {
        if self.magic != MAGIC {
            return Some("bad magic: the peer is not speaking the DDS protocol");
        }
        if self.version != VERSION {
            return Some("unsupported protocol version: the peer runs another DDS version");
        }
        if kind_name(self.kind).is_none() {
            return Some("unknown message kind");
        }
        if self.flags != 0 {
            return Some("nonzero flags: no flags are defined in this version");
        }
        if self.body_len as usize > FRAME_BODY_SIZE_MAX {
            return Some("body length is over the limit FRAME_BODY_SIZE_MAX");
        }
        None
    }
}

/// A validated frame header: the fields that vary from frame to frame. The
/// magic, version and flags are implied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Which message the body holds (see [`crate::message::kind`]).
    pub kind: u8,
    /// Length of the body in bytes, at most `FRAME_BODY_SIZE_MAX`.
    pub body_len: u32,
    /// Chosen by the sender of a request and echoed by the reply.
    pub request_id: u64,
    /// CRC-32 (IEEE) of the body (`maps::crc32`).
    pub body_crc: u32,
}

impl Header {
    /// Writes the header with this crate's magic and version.
    pub fn encode(&self, out: &mut [u8; HEADER_SIZE]) {
        RawHeader {
            magic: MAGIC,
            version: VERSION,
            kind: self.kind,
            flags: 0,
            body_len: self.body_len,
            request_id: self.request_id,
            body_crc: self.body_crc,
        }
        .to_bytes(out);
    }

    /// Reads and validates a header. An error means the connection cannot be
    /// trusted to be in step any more: the frame's length is unknown, so
    /// nothing after it can be found.
    pub fn decode(bytes: &[u8; HEADER_SIZE]) -> Result<Header, HeaderError> {
        let raw = RawHeader::from_bytes(bytes);
        if let Some(reason) = raw.invalid() {
            return Err(HeaderError {
                reason,
                kind: raw.kind,
                body_len: raw.body_len,
            });
        }
        Ok(Header {
            kind: raw.kind,
            body_len: raw.body_len,
            request_id: raw.request_id,
            body_crc: raw.body_crc,
        })
    }
}

/// A header that was refused, with the reason for the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeaderError {
    /// What was wrong, as returned by [`RawHeader::invalid`].
    pub reason: &'static str,
    /// The kind byte as received, for the log.
    pub kind: u8,
    /// The body length as received, for the log.
    pub body_len: u32,
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "bad frame header ({}; kind {}, body length {}); the connection cannot continue, check that the peer is a DDS node of the same version",
            self.reason, self.kind, self.body_len
        )
    }
}

impl std::error::Error for HeaderError {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::kind;

    fn valid() -> RawHeader {
        RawHeader {
            magic: MAGIC,
            version: VERSION,
            kind: kind::GET,
            flags: 0,
            body_len: 17,
            request_id: 0x0102_0304_0506_0708,
            body_crc: 0xdead_beef,
        }
    }

    fn reason_of(raw: RawHeader) -> &'static str {
        let mut bytes = [0; HEADER_SIZE];
        raw.to_bytes(&mut bytes);
        Header::decode(&bytes)
            .expect_err("the header should be refused")
            .reason
    }

    #[test]
    fn layout_is_little_endian_and_starts_with_dds1() {
        let mut bytes = [0; HEADER_SIZE];
        Header {
            kind: kind::GET,
            body_len: 17,
            request_id: 0x0102_0304_0506_0708,
            body_crc: 0xdead_beef,
        }
        .encode(&mut bytes);
        assert_eq!(&bytes[0..4], b"DDS1");
        assert_eq!(bytes[4], 1);
        assert_eq!(bytes[5], kind::GET);
        assert_eq!(&bytes[6..8], &[0, 0]);
        assert_eq!(&bytes[8..12], &[17, 0, 0, 0]);
        assert_eq!(&bytes[12..20], &[8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(&bytes[20..24], &[0xef, 0xbe, 0xad, 0xde]);
        assert_eq!(RawHeader::from_bytes(&bytes), valid());
    }

    #[test]
    fn valid_header_round_trips() {
        let mut bytes = [0; HEADER_SIZE];
        valid().to_bytes(&mut bytes);
        let header = Header::decode(&bytes).unwrap();
        assert_eq!(header.kind, kind::GET);
        assert_eq!(header.body_len, 17);
        assert_eq!(header.request_id, 0x0102_0304_0506_0708);
        assert_eq!(header.body_crc, 0xdead_beef);
    }

    #[test]
    fn each_bad_field_is_named() {
        let cases: Vec<(RawHeader, &str)> = vec![
            (
                RawHeader {
                    magic: 0x5454_4847,
                    ..valid()
                },
                "bad magic",
            ),
            (
                RawHeader {
                    version: 2,
                    ..valid()
                },
                "unsupported protocol version",
            ),
            (
                RawHeader {
                    version: 0,
                    ..valid()
                },
                "unsupported protocol version",
            ),
            (RawHeader { kind: 0, ..valid() }, "unknown message kind"),
            (
                RawHeader {
                    kind: 63,
                    ..valid()
                },
                "unknown message kind",
            ),
            (
                RawHeader {
                    kind: 255,
                    ..valid()
                },
                "unknown message kind",
            ),
            (
                RawHeader {
                    flags: 1,
                    ..valid()
                },
                "nonzero flags",
            ),
            (
                RawHeader {
                    flags: 0x8000,
                    ..valid()
                },
                "nonzero flags",
            ),
            (
                RawHeader {
                    body_len: u32::MAX,
                    ..valid()
                },
                "body length is over the limit",
            ),
            (
                RawHeader {
                    body_len: FRAME_BODY_SIZE_MAX as u32 + 1,
                    ..valid()
                },
                "body length is over the limit",
            ),
        ];
        for (raw, expected) in cases {
            let reason = reason_of(raw);
            assert!(
                reason.starts_with(expected),
                "{raw:?}: got {reason:?}, expected {expected:?}"
            );
        }
    }

    #[test]
    fn longest_allowed_body_is_accepted() {
        let raw = RawHeader {
            body_len: FRAME_BODY_SIZE_MAX as u32,
            ..valid()
        };
        assert_eq!(raw.invalid(), None);
    }

    #[test]
    fn display_carries_the_reason_and_what_to_do() {
        let error = HeaderError {
            reason: "bad magic: the peer is not speaking the DDS protocol",
            kind: 7,
            body_len: 3,
        };
        let text = error.to_string();
        assert!(text.contains("bad magic"), "{text}");
        assert!(text.contains("same version"), "{text}");
    }
}
