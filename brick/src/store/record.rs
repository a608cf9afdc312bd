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
//!   [crc32 u32][varint: key_len * 2 + live][varint: value_len][key][value]
//! ```
//!
//! Varints are LEB128 (seven bits a byte, low bits first, the top bit set on
//! every byte but the last) in their shortest form; anything longer is
//! invalid. A key under 64 bytes takes one byte of length and a value under
//! 16 KiB two, so a typical header is 7 bytes (format 1 had fixed fields of
//! 11: four bytes a record that every key paid). The low bit of the first
//! varint set means a live record; clear means a tombstone, which never has
//! a value. A record's crc covers everything after the crc itself (lengths,
//! key and value). The end of the data is six zero bytes: no real record
//! starts like that, because the only record whose lengths are two zero
//! bytes (a tombstone with an empty key) has the crc of two zero bytes,
//! which is not zero.

use byteorder::{ByteOrder, LittleEndian};

/// Bytes of the header page at the start of every arena.
pub const HEADER_BYTES: u64 = 64;

/// Fewest bytes of a record's header: crc (4) and two one-byte lengths.
/// This many zero bytes mark the end of the data.
pub const RECORD_HEADER_BYTES_MIN: u64 = 6;

/// Most bytes of a record's header: crc (4), a key length of up to three
/// bytes and a value length of up to four.
pub const RECORD_HEADER_BYTES_MAX: u64 = 11;

/// Most bytes of each length varint.
const KEY_VARINT_BYTES_MAX: usize = 3;
const VALUE_VARINT_BYTES_MAX: usize = 4;

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
pub const FORMAT_VERSION: u32 = 2;

const MAGIC: [u8; 8] = *b"DDSARENA";
const HEADER_CRC_AT: usize = 60;

const _: () = assert!(HEADER_BYTES as usize == HEADER_CRC_AT + 4);
const _: () = assert!(CAPACITY_MIN > HEADER_BYTES + RECORD_HEADER_BYTES_MAX);
const _: () = assert!((KEY_SIZE_MAX as u64 * 2 + 1) >> (7 * KEY_VARINT_BYTES_MAX) == 0);
const _: () = assert!(VALUE_SIZE_MAX as u64 >> (7 * VALUE_VARINT_BYTES_MAX) == 0);
const _: () =
    assert!(RECORD_HEADER_BYTES_MAX == 4 + (KEY_VARINT_BYTES_MAX + VALUE_VARINT_BYTES_MAX) as u64);
const _: () = assert!(CAPACITY_MAX <= 1 << 39);
const _: () = assert!(VALUE_SIZE_MAX <= u32::MAX as usize);
const _: () = assert!(usize::BITS >= 64);

/// Bytes a record with these field sizes takes in the arena.
pub fn record_bytes(key_len: usize, value_len: usize) -> u64 {
    header_bytes(key_len, value_len) + key_len as u64 + value_len as u64
}

/// Bytes of the header of a record with these field sizes.
fn header_bytes(key_len: usize, value_len: usize) -> u64 {
    4 + varint_bytes(key_len as u64 * 2 + 1) + varint_bytes(value_len as u64)
}

/// Bytes of `v` as a shortest varint.
fn varint_bytes(v: u64) -> u64 {
    u64::from((64 - (v | 1).leading_zeros()).div_ceil(7))
}

/// Writes `v` as a shortest varint at the start of `dst`; returns its
/// length.
fn put_varint(dst: &mut [u8], mut v: u64) -> usize {
    let mut at = 0;
    while v >= 0x80 {
        dst[at] = (v as u8) | 0x80;
        v >>= 7;
        at += 1;
    }
    dst[at] = v as u8;
    at + 1
}

/// Reads a varint of at most `max_bytes` from the start of `bytes`: its
/// value and length, or `None` if it is cut off, longer than `max_bytes`,
/// or not in its shortest form.
#[inline]
fn get_varint(bytes: &[u8], max_bytes: usize) -> Option<(u64, usize)> {
    // One byte (keys, and values under 128 bytes) and two (values under
    // 16 KiB) without the loop; a last byte of zero is a longer form.
    match *bytes {
        [b, ..] if b < 0x80 && max_bytes > 0 => return Some((u64::from(b), 1)),
        [b0, b1, ..] if b1 < 0x80 && max_bytes > 1 => {
            return (b1 != 0).then_some((u64::from(b0 & 0x7f) | u64::from(b1) << 7, 2));
        }
        _ => {}
    }
    let mut v = 0u64;
    for (at, &b) in bytes.iter().take(max_bytes).enumerate() {
        v |= u64::from(b & 0x7f) << (7 * at);
        if b & 0x80 == 0 {
            // A last byte of zero after others is a longer form of a
            // shorter number.
            return (b != 0 || at == 0).then_some((v, at + 1));
        }
    }
    None
}

/// Reads a varint that the store wrote itself.
fn read_varint(bytes: &[u8]) -> (u64, usize) {
    let mut v = 0u64;
    let mut at = 0;
    loop {
        let b = bytes[at];
        v |= u64::from(b & 0x7f) << (7 * at);
        at += 1;
        if b & 0x80 == 0 {
            return (v, at);
        }
    }
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
    let crc = maps::crc32(&page[..HEADER_CRC_AT]);
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
    if maps::crc32(&page[..HEADER_CRC_AT]) != LittleEndian::read_u32(&page[HEADER_CRC_AT..]) {
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
    /// A valid record, and where its parts are.
    Record(Shape),
    /// Six zero bytes (or fewer bytes left than that, all zero): the end of
    /// the data.
    End,
    /// Bytes that are neither a record nor the end, and why.
    Invalid(&'static str),
}

/// What [`parse`] learned of a valid record: enough to index it without
/// reading its header again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    pub live: bool,
    /// The whole record's bytes, header included.
    pub len: u64,
    /// Where the key starts, counted from the record's start.
    pub key_from: u64,
    pub key_len: u64,
    /// The crc of the record's lengths, key and value.
    pub crc: u32,
}

impl Shape {
    /// The key of this record, which starts at `offset` of `bytes`.
    pub fn key<'a>(&self, bytes: &'a [u8], offset: u64) -> &'a [u8] {
        let from = (offset + self.key_from) as usize;
        &bytes[from..from + self.key_len as usize]
    }
}

/// Checks the record at `offset` of `arena` (the whole arena, so its length
/// is the capacity), including its crc. Used when loading bytes that came
/// from disk; records written since are trusted.
#[inline]
pub fn parse(arena: &[u8], offset: u64) -> Parsed {
    parse_checking(arena, offset, true)
}

/// [`parse`] without the crc: every check of the record's structure (so
/// that it can be indexed and read safely), none of its contents. For bytes
/// whose integrity a crc over all of them covered already.
#[inline]
pub fn parse_structure(arena: &[u8], offset: u64) -> Parsed {
    parse_checking(arena, offset, false)
}

/// Every walk over an arena's records (a brick's start, a copy's checks)
/// goes through here, so this reads the end marker's six bytes as two
/// words and takes the record's length from the lengths of its varints.
/// Inlined into each walk, which then reads the parts of the result it
/// uses straight from registers.
#[inline(always)]
fn parse_checking(arena: &[u8], offset: u64, check_crc: bool) -> Parsed {
    const CUT: Parsed = Parsed::Invalid("a record header runs past the arena's end");
    let capacity = arena.len() as u64;
    let at = offset as usize;
    if offset + RECORD_HEADER_BYTES_MIN > capacity {
        return if arena[at.min(arena.len())..].iter().all(|&b| b == 0) {
            Parsed::End
        } else {
            CUT
        };
    }
    const _: () = assert!(RECORD_HEADER_BYTES_MIN == 6);
    if LittleEndian::read_u32(&arena[at..at + 4]) == 0
        && LittleEndian::read_u16(&arena[at + 4..at + 6]) == 0
    {
        return Parsed::End;
    }
    let header = &arena[at..(offset + RECORD_HEADER_BYTES_MAX).min(capacity) as usize];
    let crc = LittleEndian::read_u32(&header[0..4]);
    let Some((key_field, key_varint)) = get_varint(&header[4..], KEY_VARINT_BYTES_MAX) else {
        return if header.len() < RECORD_HEADER_BYTES_MAX as usize {
            CUT
        } else {
            Parsed::Invalid("the record's key length is not a valid varint")
        };
    };
    let values_at = 4 + key_varint;
    let Some((value_len, value_varint)) = get_varint(&header[values_at..], VALUE_VARINT_BYTES_MAX)
    else {
        return if header.len() < RECORD_HEADER_BYTES_MAX as usize {
            CUT
        } else {
            Parsed::Invalid("the record's value length is not a valid varint")
        };
    };
    let live = key_field & 1 == 1;
    let key_len = key_field >> 1;
    if key_len > KEY_SIZE_MAX as u64 {
        return Parsed::Invalid("the key length is over the limit");
    }
    if !live && value_len != 0 {
        return Parsed::Invalid("a tombstone claims a value");
    }
    if value_len > VALUE_SIZE_MAX as u64 {
        return Parsed::Invalid("the value length is over the limit");
    }
    // `record_bytes`: the varints are in their shortest forms, and a
    // tombstone's key field (even) is as long as a live one's (odd).
    let len = (values_at + value_varint) as u64 + key_len + value_len;
    debug_assert_eq!(len, record_bytes(key_len as usize, value_len as usize));
    if offset + len > capacity {
        return Parsed::Invalid("the record runs past the arena's end");
    }
    if check_crc && maps::crc32(&arena[at + 4..at + len as usize]) != crc {
        return Parsed::Invalid("the record's checksum does not match");
    }
    Parsed::Record(Shape {
        live,
        len,
        key_from: len - key_len - value_len,
        key_len,
        crc,
    })
}

/// Writes a record into `dst`, which is exactly `record_bytes(key.len(),
/// value.len())` long. The header goes in last, so a process that dies
/// half-way leaves either no header (the end of the data) or one whose crc
/// does not match the bytes.
pub fn encode(dst: &mut [u8], live: bool, key: &[u8], value: &[u8]) {
    assert_eq!(dst.len() as u64, record_bytes(key.len(), value.len()));
    assert!(key.len() <= KEY_SIZE_MAX && value.len() <= VALUE_SIZE_MAX);
    assert!(live || value.is_empty(), "a tombstone has no value");
    let body = header_bytes(key.len(), value.len()) as usize;
    dst[body..body + key.len()].copy_from_slice(key);
    dst[body + key.len()..].copy_from_slice(value);
    let key_field = key.len() as u64 * 2 + u64::from(live);
    let values_at = 4 + put_varint(&mut dst[4..], key_field);
    put_varint(&mut dst[values_at..], value.len() as u64);
    let crc = maps::crc32(&dst[4..]);
    LittleEndian::write_u32(&mut dst[0..4], crc);
}

/// A record already known to be valid, as slices of the arena.
#[derive(Clone, Copy, Debug)]
pub struct Record<'a> {
    /// The crc of the record's lengths, key and value.
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
    let (key_field, key_varint) = read_varint(&arena[at + 4..]);
    let (value_len, value_varint) = read_varint(&arena[at + 4 + key_varint..]);
    let key_at = at + 4 + key_varint + value_varint;
    let value_at = key_at + (key_field >> 1) as usize;
    let end = value_at + value_len as usize;
    Record {
        crc: LittleEndian::read_u32(&arena[at..at + 4]),
        live: key_field & 1 == 1,
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
        // The end marker is six zero bytes; this is the one record whose
        // lengths are zero bytes, so its crc must not be zero.
        assert_ne!(crc32fast::hash(&[0u8; 2]), 0);
        let arena = arena_with(&[(false, b"", b"")]);
        assert!(matches!(
            parse(&arena, HEADER_BYTES),
            Parsed::Record(Shape {
                live: false,
                len: RECORD_HEADER_BYTES_MIN,
                ..
            })
        ));
        assert_eq!(
            parse(&arena, HEADER_BYTES + RECORD_HEADER_BYTES_MIN),
            Parsed::End
        );
    }

    #[test]
    fn lengths_take_the_fewest_bytes() {
        assert_eq!(record_bytes(0, 0), 6);
        assert_eq!(record_bytes(63, 127), 4 + 1 + 1 + 63 + 127);
        assert_eq!(record_bytes(64, 128), 4 + 2 + 2 + 64 + 128);
        // The bench's records: a 14-byte store key, a 150-byte value.
        assert_eq!(record_bytes(14, 150), 7 + 14 + 150);
        assert_eq!(
            record_bytes(KEY_SIZE_MAX, VALUE_SIZE_MAX),
            RECORD_HEADER_BYTES_MAX + KEY_SIZE_MAX as u64 + VALUE_SIZE_MAX as u64
        );
        for v in [0u64, 1, 127, 128, 16_383, 16_384, 1 << 21, u32::MAX as u64] {
            let mut bytes = [0u8; 10];
            let n = put_varint(&mut bytes, v);
            assert_eq!(n as u64, varint_bytes(v), "{v}");
            assert_eq!(get_varint(&bytes, 10), Some((v, n)), "{v}");
            assert_eq!(read_varint(&bytes), (v, n), "{v}");
        }
        // A longer form of a number, or a varint past its limit, is refused.
        assert_eq!(get_varint(&[0x81, 0x00], 4), None);
        assert_eq!(get_varint(&[0x80, 0x80, 0x80, 0x01], 3), None);
        assert_eq!(get_varint(&[0x80, 0x80], 4), None);
    }

    #[test]
    fn every_field_size_round_trips() {
        for (key_len, value_len) in [(0, 0), (1, 0), (63, 127), (64, 128), (300, 20_000)] {
            for live in [true, false] {
                let value_len = if live { value_len } else { 0 };
                let key: Vec<u8> = (0..key_len).map(|i| i as u8).collect();
                let value: Vec<u8> = (0..value_len).map(|i| (i * 7) as u8).collect();
                let mut arena = vec![0u8; 32 * 1024];
                let len = record_bytes(key_len, value_len);
                let at = HEADER_BYTES as usize;
                encode(&mut arena[at..at + len as usize], live, &key, &value);
                let record = view(&arena, HEADER_BYTES);
                assert_eq!(
                    parse(&arena, HEADER_BYTES),
                    Parsed::Record(Shape {
                        live,
                        len,
                        key_from: (record.key.as_ptr() as usize - record.bytes.as_ptr() as usize)
                            as u64,
                        key_len: key_len as u64,
                        crc: record.crc,
                    })
                );
                let Parsed::Record(shape) = parse(&arena, HEADER_BYTES) else {
                    unreachable!("checked above")
                };
                assert_eq!(shape.key(&arena, HEADER_BYTES), &key[..]);
                assert_eq!(
                    (record.live, record.key, record.value),
                    (live, &key[..], &value[..])
                );
                assert_eq!(record.bytes.len() as u64, len);
                assert_eq!(record.crc, LittleEndian::read_u32(&arena[at..at + 4]));
                assert_eq!(parse(&arena, HEADER_BYTES + len), Parsed::End);
            }
        }
    }

    #[test]
    fn records_round_trip() {
        let arena = arena_with(&[(true, b"key", b"value"), (false, b"gone", b"")]);
        let first = view(&arena, HEADER_BYTES);
        assert!(first.live);
        assert_eq!((first.key, first.value), (&b"key"[..], &b"value"[..]));
        assert!(matches!(
            parse(&arena, HEADER_BYTES),
            Parsed::Record(Shape {
                live: true,
                len: 14,
                key_from: 6,
                key_len: 3,
                ..
            })
        ));
        let second = view(&arena, HEADER_BYTES + 14);
        assert!(!second.live);
        assert_eq!(second.key, b"gone");
        assert!(matches!(
            parse(&arena, HEADER_BYTES + 14),
            Parsed::Record(Shape {
                live: false,
                len: 10,
                key_from: 6,
                key_len: 4,
                ..
            })
        ));
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
        // Record: crc (4), key field 7 (key 3, live), value length 5,
        // "key", "value".
        let cases: [(&[u8], &str); 5] = [
            (b"\x07\x05kXy", "the record's checksum does not match"),
            // A value length of 13,696 (0x80 then 'k').
            (b"\x07\x80", "the record runs past the arena's end"),
            (b"\x06", "a tombstone claims a value"),
            (b"\x87\x00", "the record's key length is not a valid varint"),
            (
                b"\x07\x80\x80\x80\x80",
                "the record's value length is not a valid varint",
            ),
        ];
        for (bytes, reason) in cases {
            let mut arena = clean.clone();
            arena[at + 4..at + 4 + bytes.len()].copy_from_slice(bytes);
            assert_eq!(
                parse(&arena, HEADER_BYTES),
                Parsed::Invalid(reason),
                "{bytes:?}"
            );
        }
        let mut tombstone = arena_with(&[(false, b"k", b"")]);
        tombstone[at + 5] = 1;
        assert_eq!(
            parse(&tombstone, HEADER_BYTES),
            Parsed::Invalid("a tombstone claims a value")
        );
        // Lengths past the limits, in valid varints.
        let mut long_key = clean.clone();
        long_key[at + 4..at + 8].copy_from_slice(&[0xff, 0xff, 0x7f, 0x00]);
        assert_eq!(
            parse(&long_key, HEADER_BYTES),
            Parsed::Invalid("the key length is over the limit")
        );
        let mut long_value = clean.clone();
        long_value[at + 5..at + 9].copy_from_slice(&[0xff, 0xff, 0xff, 0x7f]);
        assert_eq!(
            parse(&long_value, HEADER_BYTES),
            Parsed::Invalid("the value length is over the limit")
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
        LittleEndian::write_u32(&mut version[8..12], 1);
        let crc = crc32fast::hash(&version[..HEADER_CRC_AT]);
        LittleEndian::write_u32(&mut version[HEADER_CRC_AT..64], crc);
        assert!(decode_header(&version).unwrap_err().contains("version"));
    }

    /// Every header made of bytes that sit on the varints' edges, in
    /// arenas that cut it at lengths around its fields: no panic, the end exactly where
    /// six zero bytes are, and a record's parts add up to its length as
    /// `record_bytes` counts it and fit in the arena.
    #[test]
    fn any_header_parses_to_a_consistent_shape() {
        const EDGES: [u8; 8] = [0x00, 0x01, 0x06, 0x07, 0x7f, 0x80, 0x81, 0xff];
        let (mut records, mut ends) = (0, 0);
        for pattern in 0..EDGES.len().pow(5) {
            let mut header = [0u8; 11];
            header[..4].copy_from_slice(&[0, 0, 0, (pattern % 2) as u8]);
            let mut rest = pattern;
            for byte in &mut header[4..9] {
                *byte = EDGES[rest % EDGES.len()];
                rest /= EDGES.len();
            }
            for len in [3usize, 6, 7, 8, 9, 11, 40, 300] {
                let mut arena = vec![0u8; len];
                let n = len.min(header.len());
                arena[..n].copy_from_slice(&header[..n]);
                match parse_structure(&arena, 0) {
                    Parsed::Record(shape) => {
                        records += 1;
                        assert!(shape.len <= len as u64, "{header:?} in {len}");
                        let value_len = shape.len - shape.key_from - shape.key_len;
                        assert_eq!(
                            shape.len,
                            record_bytes(shape.key_len as usize, value_len as usize),
                            "{header:?}"
                        );
                        assert!(shape.live || value_len == 0);
                    }
                    Parsed::End => {
                        ends += 1;
                        assert!(arena.iter().take(6).all(|&b| b == 0), "{header:?} in {len}");
                    }
                    Parsed::Invalid(_) => {
                        assert!(
                            len < 6 || arena[..6].iter().any(|&b| b != 0),
                            "{header:?} in {len}"
                        );
                    }
                }
            }
        }
        assert!(
            records > 1_000 && ends > 0,
            "{records} records, {ends} ends"
        );
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
