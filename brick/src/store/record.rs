//! The byte layout of an arena: its header page and its records.
//!
//! This module holds the format only — encoding, decoding and validation of
//! bytes — and knows nothing of files, maps or indexes. All integers are
//! little-endian.
//!
//! ```text
//! header page (64 bytes):
//!   0..8    magic "DDSARENA"
//!   8..12   format version (u32)
//!   12..16  zero
//!   16..24  capacity in bytes (u64), equal to the file's length
//!   24..32  generation (u64), bumped by every compaction
//!   32..60  zero
//!   60..64  crc32 of bytes 0..60
//!
//! record (from offset 64 on, back to back):
//!   [crc32 u32][flags u8][key_len u16][value_len u32][key][value]
//! ```
//!
//! A record's crc covers everything after the crc itself (flags to the end
//! of the value). Flags bit 0 set means a live record; clear means a
//! tombstone, which never has a value. Any other flag bit makes the record
//! invalid, so a later format can add flags that this one refuses to guess
//! at. The end of the data is a record header of eleven zero bytes: no real
//! record looks like that, because the crc of seven zero bytes (the only
//! possible tombstone with an empty key) is not zero.

use byteorder::{ByteOrder, LittleEndian};

/// Bytes of the header page at the start of every arena.
pub const HEADER_BYTES: u64 = 64;

/// Bytes of a record's header: crc (4), flags (1), key length (2), value
/// length (4).
pub const RECORD_HEADER_BYTES: u64 = 11;

/// Largest key a record can hold. The key length field is a u16; the wire
/// layer enforces the smaller user limit, and the table name prefix the node
/// adds is why this is not the user limit itself.
pub const KEY_SIZE_MAX: usize = u16::MAX as usize;

/// Largest value a record can hold. The wire layer enforces the smaller user
/// limit; this one keeps a corrupt length field from claiming gigabytes.
pub const VALUE_SIZE_MAX: usize = 64 << 20;

/// Smallest arena capacity: the header page plus room for a few records.
pub const CAPACITY_MIN: u64 = 4096;

/// Largest arena capacity. Index entries keep a record's offset in 39 bits
/// (the 40th says which of two arenas during compaction), so 512 GiB.
pub const CAPACITY_MAX: u64 = 1 << 39;

/// The format this code writes and the only one it reads.
pub const FORMAT_VERSION: u32 = 1;

/// Flags bit 0: a live record (set) or a tombstone (clear).
pub const FLAG_LIVE: u8 = 1;

const MAGIC: [u8; 8] = *b"DDSARENA";
const HEADER_CRC_AT: usize = 60;

const _: () = assert!(HEADER_BYTES as usize == HEADER_CRC_AT + 4);
const _: () = assert!(CAPACITY_MIN > HEADER_BYTES + RECORD_HEADER_BYTES);
const _: () = assert!(CAPACITY_MAX <= 1 << 39);
const _: () = assert!(VALUE_SIZE_MAX <= u32::MAX as usize);
const _: () = assert!(usize::BITS >= 64);

/// Bytes a record with these field sizes takes in the arena.
pub fn record_bytes(key_len: usize, value_len: usize) -> u64 {
    RECORD_HEADER_BYTES + key_len as u64 + value_len as u64
}

/// What the header page says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub capacity: u64,
    pub generation: u64,
}

/// Writes a header page into `page` (at least 64 bytes).
pub fn encode_header(page: &mut [u8], header: Header) {
    let page = &mut page[..HEADER_BYTES as usize];
    page.fill(0);
    page[0..8].copy_from_slice(&MAGIC);
    LittleEndian::write_u32(&mut page[8..12], FORMAT_VERSION);
    LittleEndian::write_u64(&mut page[16..24], header.capacity);
    LittleEndian::write_u64(&mut page[24..32], header.generation);
    let crc = crc32fast::hash(&page[..HEADER_CRC_AT]);
    LittleEndian::write_u32(&mut page[HEADER_CRC_AT..], crc);
}

/// Reads a header page. `Ok(None)` means the page is all zero: an arena
/// that was created but never initialised. An error says what is wrong.
pub fn decode_header(page: &[u8]) -> Result<Option<Header>, &'static str> {
    let page = &page[..HEADER_BYTES as usize];
    if page.iter().all(|&b| b == 0) {
        return Ok(None);
    }
    if page[0..8] != MAGIC {
        return Err("not an arena: the magic bytes are wrong");
    }
    if crc32fast::hash(&page[..HEADER_CRC_AT]) != LittleEndian::read_u32(&page[HEADER_CRC_AT..]) {
        return Err("the header page's checksum does not match");
    }
    if LittleEndian::read_u32(&page[8..12]) != FORMAT_VERSION {
        return Err("the arena has a format version this brick does not read");
    }
    Ok(Some(Header {
        capacity: LittleEndian::read_u64(&page[16..24]),
        generation: LittleEndian::read_u64(&page[24..32]),
    }))
}

/// The result of checking the bytes at one offset of an arena.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A valid record of `len` bytes.
    Record { live: bool, len: u64 },
    /// Eleven zero bytes (or too few bytes left for a header, all zero): the
    /// end of the data.
    End,
    /// Bytes that are neither a record nor the end, and why.
    Invalid(&'static str),
}

/// Checks the record at `offset` of `arena` (the whole arena, so its length
/// is the capacity), including its crc. Used when loading bytes that came
/// from disk; records written since are trusted.
pub fn parse(arena: &[u8], offset: u64) -> Parsed {
    let capacity = arena.len() as u64;
    let at = offset as usize;
    if offset + RECORD_HEADER_BYTES > capacity {
        return if arena[at.min(arena.len())..].iter().all(|&b| b == 0) {
            Parsed::End
        } else {
            Parsed::Invalid("a record header runs past the arena's end")
        };
    }
    let header = &arena[at..at + RECORD_HEADER_BYTES as usize];
    if header.iter().all(|&b| b == 0) {
        return Parsed::End;
    }
    let crc = LittleEndian::read_u32(&header[0..4]);
    let flags = header[4];
    let key_len = LittleEndian::read_u16(&header[5..7]) as usize;
    let value_len = LittleEndian::read_u32(&header[7..11]) as usize;
    if flags & !FLAG_LIVE != 0 {
        return Parsed::Invalid("the record has flag bits this format does not define");
    }
    let live = flags & FLAG_LIVE != 0;
    if !live && value_len != 0 {
        return Parsed::Invalid("a tombstone claims a value");
    }
    if value_len > VALUE_SIZE_MAX {
        return Parsed::Invalid("the value length is over the limit");
    }
    let len = record_bytes(key_len, value_len);
    if offset + len > capacity {
        return Parsed::Invalid("the record runs past the arena's end");
    }
    if crc32fast::hash(&arena[at + 4..at + len as usize]) != crc {
        return Parsed::Invalid("the record's checksum does not match");
    }
    Parsed::Record { live, len }
}

/// Writes a record into `dst`, which is exactly `record_bytes(key.len(),
/// value.len())` long. The header goes in last, so a process that dies
/// half-way leaves either no header (the end of the data) or one whose crc
/// does not match the bytes.
pub fn encode(dst: &mut [u8], live: bool, key: &[u8], value: &[u8]) {
    assert_eq!(dst.len() as u64, record_bytes(key.len(), value.len()));
    assert!(key.len() <= KEY_SIZE_MAX && value.len() <= VALUE_SIZE_MAX);
    assert!(live || value.is_empty(), "a tombstone has no value");
    let body = RECORD_HEADER_BYTES as usize;
    dst[body..body + key.len()].copy_from_slice(key);
    dst[body + key.len()..].copy_from_slice(value);
    dst[4] = if live { FLAG_LIVE } else { 0 };
    LittleEndian::write_u16(&mut dst[5..7], key.len() as u16);
    LittleEndian::write_u32(&mut dst[7..11], value.len() as u32);
    let crc = crc32fast::hash(&dst[4..]);
    LittleEndian::write_u32(&mut dst[0..4], crc);
}

/// A record already known to be valid, as slices of the arena.
#[derive(Clone, Copy, Debug)]
pub struct Record<'a> {
    /// The crc of the record's flags, lengths, key and value.
    pub crc: u32,
    pub live: bool,
    pub key: &'a [u8],
    pub value: &'a [u8],
    /// The whole record, header included: what compaction copies.
    pub bytes: &'a [u8],
}

/// Reads the record at `offset` without checking its crc. Only for offsets
/// the store wrote or validated itself; anything else is a programmer
/// mistake and panics on the slice bounds.
pub fn view(arena: &[u8], offset: u64) -> Record<'_> {
    let at = offset as usize;
    let header = &arena[at..at + RECORD_HEADER_BYTES as usize];
    let key_len = LittleEndian::read_u16(&header[5..7]) as usize;
    let value_len = LittleEndian::read_u32(&header[7..11]) as usize;
    let key_at = at + RECORD_HEADER_BYTES as usize;
    let value_at = key_at + key_len;
    let end = value_at + value_len;
    Record {
        crc: LittleEndian::read_u32(&header[0..4]),
        live: header[4] & FLAG_LIVE != 0,
        key: &arena[key_at..value_at],
        value: &arena[value_at..end],
        bytes: &arena[at..end],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arena_with(records: &[(bool, &[u8], &[u8])]) -> Vec<u8> {
        let mut arena = vec![0u8; 4096];
        encode_header(
            &mut arena,
            Header {
                capacity: 4096,
                generation: 0,
            },
        );
        let mut at = HEADER_BYTES as usize;
        for (live, key, value) in records {
            let len = record_bytes(key.len(), value.len()) as usize;
            encode(&mut arena[at..at + len], *live, key, value);
            at += len;
        }
        arena
    }

    #[test]
    fn the_empty_key_tombstone_is_not_the_end_marker() {
        // The end marker is eleven zero bytes; this is the one record whose
        // fields besides the crc are all zero, so its crc must not be.
        assert_ne!(crc32fast::hash(&[0u8; 7]), 0);
        let arena = arena_with(&[(false, b"", b"")]);
        assert_eq!(
            parse(&arena, HEADER_BYTES),
            Parsed::Record {
                live: false,
                len: RECORD_HEADER_BYTES
            }
        );
        assert_eq!(
            parse(&arena, HEADER_BYTES + RECORD_HEADER_BYTES),
            Parsed::End
        );
    }

    #[test]
    fn records_round_trip() {
        let arena = arena_with(&[(true, b"key", b"value"), (false, b"gone", b"")]);
        let first = view(&arena, HEADER_BYTES);
        assert!(first.live);
        assert_eq!((first.key, first.value), (&b"key"[..], &b"value"[..]));
        assert_eq!(
            parse(&arena, HEADER_BYTES),
            Parsed::Record {
                live: true,
                len: 19
            }
        );
        let second = view(&arena, HEADER_BYTES + 19);
        assert!(!second.live);
        assert_eq!(second.key, b"gone");
        assert_eq!(
            parse(&arena, HEADER_BYTES + 19),
            Parsed::Record {
                live: false,
                len: 15
            }
        );
        assert_eq!(
            decode_header(&arena),
            Ok(Some(Header {
                capacity: 4096,
                generation: 0
            }))
        );
    }

    #[test]
    fn damaged_records_are_invalid() {
        let clean = arena_with(&[(true, b"key", b"value")]);
        let at = HEADER_BYTES as usize;
        let cases: [(usize, u8, &str); 4] = [
            (
                at + 4,
                0x82,
                "the record has flag bits this format does not define",
            ),
            (at + 17, b'X', "the record's checksum does not match"),
            (at + 10, 0x7f, "the value length is over the limit"),
            (at + 6, 0x10, "the record runs past the arena's end"),
        ];
        for (byte, value, reason) in cases {
            let mut arena = clean.clone();
            arena[byte] = value;
            assert_eq!(
                parse(&arena, HEADER_BYTES),
                Parsed::Invalid(reason),
                "byte {byte}"
            );
        }
        let mut tombstone = arena_with(&[(false, b"k", b"")]);
        tombstone[at + 7] = 1;
        assert_eq!(
            parse(&tombstone, HEADER_BYTES),
            Parsed::Invalid("a tombstone claims a value")
        );
    }

    #[test]
    fn damaged_headers_are_refused() {
        let clean = arena_with(&[]);
        assert_eq!(decode_header(&[0u8; 64]), Ok(None));
        let mut magic = clean.clone();
        magic[0] = b'X';
        assert!(decode_header(&magic).unwrap_err().contains("magic"));
        let mut generation = clean.clone();
        generation[24] = 9;
        assert!(decode_header(&generation).unwrap_err().contains("checksum"));
        let mut version = clean;
        LittleEndian::write_u32(&mut version[8..12], 2);
        let crc = crc32fast::hash(&version[..HEADER_CRC_AT]);
        LittleEndian::write_u32(&mut version[HEADER_CRC_AT..64], crc);
        assert!(decode_header(&version).unwrap_err().contains("version"));
    }

    #[test]
    fn a_short_tail_is_the_end_only_when_zero() {
        let mut arena = vec![0u8; 100];
        assert_eq!(parse(&arena, 95), Parsed::End);
        arena[97] = 1;
        assert_eq!(
            parse(&arena, 95),
            Parsed::Invalid("a record header runs past the arena's end")
        );
    }
}
