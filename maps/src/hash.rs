//! The key hash: the one function that turns a (table, key) pair into the
//! 64-bit number the DP trie routes on. It must give the same value in every
//! process, on every machine and in every version, because bricks store data
//! where the hash sent it; changing it would strand every stored key. The
//! test vectors below pin it. Routing on the hash is in `dp`.

use std::sync::OnceLock;

use xxhash_rust::xxh3::{xxh3_64, Xxh3};

/// Encodings up to this size are hashed from a copy on the stack.
const STACK_ENCODING_SIZE_MAX: usize = 256;

/// CRC-32 (IEEE) of `bytes`: the checksum of frames, records and
/// fingerprints in every crate. Same value as `crc32fast::hash`, which
/// looks up the processor's features on every call (a few dozen
/// instructions, a fifth of the whole for a 200-byte frame); here that is
/// done once and the chosen implementation copied.
pub fn crc32(bytes: &[u8]) -> u32 {
    static PROTOTYPE: OnceLock<crc32fast::Hasher> = OnceLock::new();
    let mut hasher = PROTOTYPE.get_or_init(crc32fast::Hasher::new).clone();
    hasher.update(bytes);
    hasher.finalize()
}

/// The stable 64-bit hash of `key` in `table`.
///
/// It is XXH3-64 (seed 0) over the encoding `u32 LE length of table ||
/// table || key`. The length prefix makes the encoding unambiguous: without
/// it, table "ab" with key "c" and table "a" with key "bc" would hash alike.
/// The key needs no length because it runs to the end.
///
/// Tables longer than `u32::MAX` bytes cannot occur (the protocol caps table
/// names far lower); such a call is a programmer mistake and panics.
pub fn key_hash(table: &[u8], key: &[u8]) -> u64 {
    let table_len = u32::try_from(table.len()).expect("table name longer than u32::MAX bytes");
    let total = 4 + table.len() + key.len();
    if total <= STACK_ENCODING_SIZE_MAX {
        // Most keys are short: one-shot XXH3 over a stack copy is several
        // times faster than setting up the streaming state.
        let mut encoded = [0u8; STACK_ENCODING_SIZE_MAX];
        encoded[..4].copy_from_slice(&table_len.to_le_bytes());
        encoded[4..4 + table.len()].copy_from_slice(table);
        encoded[4 + table.len()..total].copy_from_slice(key);
        return xxh3_64(&encoded[..total]);
    }
    // Long keys are hashed in place rather than copied; XXH3's streaming
    // and one-shot forms give the same value.
    let mut hasher = Xxh3::new();
    hasher.update(&table_len.to_le_bytes());
    hasher.update(table);
    hasher.update(key);
    hasher.digest()
}

/// The byte form of an integer key: 8 bytes, big-endian, so that integer
/// keys sort in numeric order wherever keys are compared as bytes.
pub fn u64_key(k: u64) -> [u8; 8] {
    k.to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_is_the_ieee_crc_of_crc32fast() {
        // The check value of CRC-32/ISO-HDLC, and lengths on both sides of
        // the processor-specific path's 64- and 128-byte blocks.
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
        let bytes: Vec<u8> = (0..1000u32).map(|i| (i * 31 % 251) as u8).collect();
        for len in [1, 15, 63, 64, 65, 127, 128, 129, 200, 1000] {
            assert_eq!(
                crc32(&bytes[..len]),
                crc32fast::hash(&bytes[..len]),
                "{len} bytes"
            );
        }
    }

    /// Pinned values, checked against an independent XXH3 implementation
    /// when they were pinned. If this test fails, the hash changed, and
    /// every key stored by an earlier version would be looked for on the
    /// wrong partition. Do not update the numbers; restore the hash.
    #[test]
    fn key_hash_is_pinned() {
        // XXH3 takes different paths for inputs up to 16, 128 and 240
        // bytes and beyond; the long keys reach the last two.
        let key_100: Vec<u8> = (0..100u8).collect();
        let key_1000: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
        let vectors: [(&[u8], &[u8], u64); 10] = [
            (b"", b"", 0x48b2c92616fc193d),
            (b"", b"k", 0x8212209777731055),
            (b"t", b"", 0xdaeb1d064a9d1bbb),
            (b"users", b"alice", 0x93acd9689a5e3bee),
            (b"bin", &[0x00, 0xff, 0x80, 0x7f, 0x00], 0xdc6bce091feca9d9),
            (b"t", &u64_key(0), 0xfb2bc867123f7c3b),
            (b"t", &u64_key(1), 0x828a286f2206c32e),
            (b"t", &u64_key(u64::MAX), 0x143d907680a6c4f1),
            (b"long", &key_100, 0x966eba0fb0ec85df),
            (b"long", &key_1000, 0x0b260e4a3f575ba0),
        ];
        let mut wrong = Vec::new();
        for (table, key, expected) in vectors {
            let got = key_hash(table, key);
            if got != expected {
                wrong.push(format!(
                    "key_hash({table:?}, {key:?}) = {got:#018x}, pinned {expected:#018x}"
                ));
            }
        }
        assert!(
            wrong.is_empty(),
            "the key hash changed:\n{}",
            wrong.join("\n")
        );
    }

    /// The streaming form must equal XXH3 over the documented encoding, so
    /// that another implementation can reproduce the hash from the doc.
    #[test]
    fn key_hash_is_xxh3_of_the_documented_encoding() {
        // Sizes on both sides of the stack copy's limit.
        let long: Vec<u8> = (0..=255u8).collect();
        let cases: [(&[u8], &[u8]); 7] = [
            (b"", b""),
            (b"users", b"alice"),
            (b"ab", b"c"),
            (b"a", b"bc"),
            (b"", &long[..252]),
            (b"", &long[..253]),
            (&long, &long),
        ];
        for (table, key) in cases {
            let mut encoded = (table.len() as u32).to_le_bytes().to_vec();
            encoded.extend_from_slice(table);
            encoded.extend_from_slice(key);
            assert_eq!(key_hash(table, key), xxh3_64(&encoded));
        }
    }

    /// The table length keeps a shifted boundary between table and key from
    /// giving the same hash.
    #[test]
    fn table_and_key_boundary_matters() {
        assert_ne!(key_hash(b"ab", b"c"), key_hash(b"a", b"bc"));
        assert_ne!(key_hash(b"", b"abc"), key_hash(b"abc", b""));
    }

    #[test]
    fn u64_keys_are_big_endian() {
        assert_eq!(u64_key(0x0102_0304_0506_0708), [1, 2, 3, 4, 5, 6, 7, 8]);
        assert!(
            u64_key(255) < u64_key(256),
            "byte order must follow numeric order"
        );
    }
}
