//! RESP2, the Redis protocol, as far as the bench needs it: an encoder for
//! commands (arrays of bulk strings) and a parser for replies (simple
//! strings, errors, integers, bulk strings including the null bulk, and
//! arrays). No connection handling here; `redis.rs` owns the sockets.
//!
//! The parser takes whatever bytes have arrived and says either "here is one
//! reply and how many bytes it used", "not complete yet", or "this is not
//! RESP". Every length it reads is checked against a limit before anything
//! is allocated, so a hostile or confused peer gets an error, never a panic
//! or an allocation of its choosing.

use std::fmt;

use crate::limits::{RESP_ARRAY_LEN_MAX, RESP_BULK_SIZE_MAX, RESP_DEPTH_MAX, RESP_LINE_SIZE_MAX};

/// One RESP2 reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`
    Simple(Vec<u8>),
    /// `-ERR something`
    Error(Vec<u8>),
    /// `:42`
    Integer(i64),
    /// `$3\r\nabc` or, for `None`, the null bulk `$-1`.
    Bulk(Option<Vec<u8>>),
    /// `*2\r\n...` or, for `None`, the null array `*-1`.
    Array(Option<Vec<Reply>>),
}

/// Why bytes are not a RESP2 reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RespError {
    /// A reply starts with a byte that names no RESP2 type.
    UnknownType(u8),
    /// A header line has no CRLF within `RESP_LINE_SIZE_MAX` bytes.
    LineTooLong,
    /// A line ends in a bare CR or a bulk string is not followed by CRLF.
    MissingCrlf,
    /// A length or integer is not a decimal number that fits in an i64.
    BadInteger,
    /// A bulk string or array claims a negative length other than -1.
    NegativeLength(i64),
    /// A bulk string is longer than `RESP_BULK_SIZE_MAX`.
    BulkTooLarge(i64),
    /// An array has more elements than `RESP_ARRAY_LEN_MAX`.
    ArrayTooLong(i64),
    /// Arrays are nested deeper than `RESP_DEPTH_MAX`.
    TooDeep,
}

impl fmt::Display for RespError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RespError::UnknownType(byte) => write!(f, "a reply starts with byte 0x{byte:02x}"),
            RespError::LineTooLong => write!(f, "a line longer than {RESP_LINE_SIZE_MAX} bytes"),
            RespError::MissingCrlf => write!(f, "a line or bulk string not ended by CRLF"),
            RespError::BadInteger => write!(f, "a length or integer that is not a 64-bit decimal"),
            RespError::NegativeLength(n) => write!(f, "a negative length {n}"),
            RespError::BulkTooLarge(n) => {
                write!(
                    f,
                    "a bulk string of {n} bytes, more than {RESP_BULK_SIZE_MAX}"
                )
            }
            RespError::ArrayTooLong(n) => {
                write!(
                    f,
                    "an array of {n} elements, more than {RESP_ARRAY_LEN_MAX}"
                )
            }
            RespError::TooDeep => write!(f, "arrays nested deeper than {RESP_DEPTH_MAX}"),
        }
    }
}

impl std::error::Error for RespError {}

/// Appends one command, an array of bulk strings, to `out`.
pub fn encode_command(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.push(b'*');
    push_decimal(out, args.len() as u64);
    out.extend_from_slice(b"\r\n");
    for arg in args {
        out.push(b'$');
        push_decimal(out, arg.len() as u64);
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

/// Appends `n` in decimal. Hand-written because it runs twice per argument
/// of every request, and the formatting machinery costs more than the rest
/// of the encoding.
fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[start..]);
}

/// Parses one reply from the start of `buf`. Returns the reply and the
/// number of bytes it used, `None` if `buf` holds only a prefix of a reply
/// (call again when more bytes have arrived), or an error if `buf` does not
/// start with a RESP2 reply.
pub fn parse(buf: &[u8]) -> Result<Option<(Reply, usize)>, RespError> {
    parse_at(buf, 0, 0)
}

fn parse_at(buf: &[u8], pos: usize, depth: usize) -> Result<Option<(Reply, usize)>, RespError> {
    let Some((line, next)) = read_line(buf, pos)? else {
        return Ok(None);
    };
    // `read_line` only returns lines of at least one byte, the type byte.
    let (kind, rest) = (line[0], &line[1..]);
    match kind {
        b'+' => Ok(Some((Reply::Simple(rest.to_vec()), next))),
        b'-' => Ok(Some((Reply::Error(rest.to_vec()), next))),
        b':' => Ok(Some((Reply::Integer(parse_i64(rest)?), next))),
        b'$' => {
            let len = parse_i64(rest)?;
            if len == -1 {
                return Ok(Some((Reply::Bulk(None), next)));
            }
            if len < 0 {
                return Err(RespError::NegativeLength(len));
            }
            if len as u64 > RESP_BULK_SIZE_MAX as u64 {
                return Err(RespError::BulkTooLarge(len));
            }
            let len = len as usize;
            let end = next + len;
            if buf.len() < end + 2 {
                return Ok(None);
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err(RespError::MissingCrlf);
            }
            Ok(Some((Reply::Bulk(Some(buf[next..end].to_vec())), end + 2)))
        }
        b'*' => {
            let count = parse_i64(rest)?;
            if count == -1 {
                return Ok(Some((Reply::Array(None), next)));
            }
            if count < 0 {
                return Err(RespError::NegativeLength(count));
            }
            if count as u64 > RESP_ARRAY_LEN_MAX as u64 {
                return Err(RespError::ArrayTooLong(count));
            }
            if count > 0 && depth + 1 > RESP_DEPTH_MAX {
                return Err(RespError::TooDeep);
            }
            // The count is the peer's claim; allocate for what has arrived at
            // most, since every element takes at least three bytes.
            let count = count as usize;
            let mut items = Vec::with_capacity(count.min((buf.len() - next) / 3));
            let mut at = next;
            for _ in 0..count {
                match parse_at(buf, at, depth + 1)? {
                    Some((item, after)) => {
                        items.push(item);
                        at = after;
                    }
                    None => return Ok(None),
                }
            }
            Ok(Some((Reply::Array(Some(items)), at)))
        }
        other => Err(RespError::UnknownType(other)),
    }
}

/// Finds the line that starts at `pos`: returns it without its CRLF and the
/// position after the CRLF, or `None` if the CRLF has not arrived yet.
fn read_line(buf: &[u8], pos: usize) -> Result<Option<(&[u8], usize)>, RespError> {
    let available = &buf[pos.min(buf.len())..];
    if available.is_empty() {
        return Ok(None);
    }
    // A type byte that names no type is reported at once rather than after a
    // whole line of garbage has been buffered.
    if !matches!(available[0], b'+' | b'-' | b':' | b'$' | b'*') {
        return Err(RespError::UnknownType(available[0]));
    }
    let window = &available[..available.len().min(RESP_LINE_SIZE_MAX + 2)];
    match window.iter().position(|&b| b == b'\r' || b == b'\n') {
        Some(i) if window[i] == b'\n' => Err(RespError::MissingCrlf),
        Some(i) if i + 1 == available.len() => Ok(None),
        Some(i) if available[i + 1] == b'\n' => {
            if i > RESP_LINE_SIZE_MAX {
                return Err(RespError::LineTooLong);
            }
            Ok(Some((&available[..i], pos + i + 2)))
        }
        Some(_) => Err(RespError::MissingCrlf),
        None if window.len() > RESP_LINE_SIZE_MAX => Err(RespError::LineTooLong),
        None => Ok(None),
    }
}

/// A decimal i64 with an optional minus sign, nothing else.
fn parse_i64(digits: &[u8]) -> Result<i64, RespError> {
    let (negative, digits) = match digits.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, digits),
    };
    if digits.is_empty() || digits.len() > 19 {
        return Err(RespError::BadInteger);
    }
    let mut value: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return Err(RespError::BadInteger);
        }
        value = value
            .checked_mul(10)
            .and_then(|v| v.checked_add(i64::from(d - b'0')))
            .ok_or(RespError::BadInteger)?;
    }
    Ok(if negative { -value } else { value })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_seed;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn whole(bytes: &[u8]) -> Reply {
        match parse(bytes) {
            Ok(Some((reply, used))) => {
                assert_eq!(
                    used,
                    bytes.len(),
                    "reply {reply:?} did not use all of {bytes:?}"
                );
                reply
            }
            other => panic!("{bytes:?} parsed as {other:?}"),
        }
    }

    #[test]
    fn encodes_commands_as_arrays_of_bulk_strings() {
        let mut out = Vec::new();
        encode_command(&mut out, &[b"SET", b"k", b"hello"]);
        encode_command(&mut out, &[b"GET", b""]);
        assert_eq!(
            out,
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhello\r\n*2\r\n$3\r\nGET\r\n$0\r\n\r\n"
        );
        let mut big = Vec::new();
        encode_command(&mut big, &[&[7u8; 1234]]);
        assert!(big.starts_with(b"*1\r\n$1234\r\n"));
        assert_eq!(big.len(), 4 + 7 + 1234 + 2);
    }

    #[test]
    fn parses_every_type() {
        assert_eq!(whole(b"+OK\r\n"), Reply::Simple(b"OK".to_vec()));
        assert_eq!(
            whole(b"-ERR wrong\r\n"),
            Reply::Error(b"ERR wrong".to_vec())
        );
        assert_eq!(whole(b":-42\r\n"), Reply::Integer(-42));
        assert_eq!(whole(b":9223372036854775807\r\n"), Reply::Integer(i64::MAX));
        assert_eq!(
            whole(b"$5\r\nhe\r\no\r\n"),
            Reply::Bulk(Some(b"he\r\no".to_vec()))
        );
        assert_eq!(whole(b"$0\r\n\r\n"), Reply::Bulk(Some(Vec::new())));
        assert_eq!(whole(b"$-1\r\n"), Reply::Bulk(None));
        assert_eq!(whole(b"*-1\r\n"), Reply::Array(None));
        assert_eq!(whole(b"*0\r\n"), Reply::Array(Some(Vec::new())));
        assert_eq!(
            whole(b"*3\r\n:1\r\n$-1\r\n*1\r\n+x\r\n"),
            Reply::Array(Some(vec![
                Reply::Integer(1),
                Reply::Bulk(None),
                Reply::Array(Some(vec![Reply::Simple(b"x".to_vec())])),
            ]))
        );
    }

    #[test]
    fn returns_one_reply_at_a_time_from_a_pipeline() {
        let stream = b"+OK\r\n$3\r\nabc\r\n$-1\r\n";
        let (first, used) = parse(stream).unwrap().unwrap();
        assert_eq!((first, used), (Reply::Simple(b"OK".to_vec()), 5));
        let (second, used2) = parse(&stream[used..]).unwrap().unwrap();
        assert_eq!(second, Reply::Bulk(Some(b"abc".to_vec())));
        assert_eq!(
            parse(&stream[used + used2..]).unwrap().unwrap().0,
            Reply::Bulk(None)
        );
    }

    /// Every prefix of a valid stream is "incomplete" or a whole reply, never
    /// an error, and feeding the stream in pieces cut anywhere gives the same
    /// replies as feeding it whole.
    #[test]
    fn split_buffers_give_the_same_replies() {
        let stream: &[u8] = b"+OK\r\n-ERR no\r\n:123\r\n$-1\r\n$4\r\n\r\n\r\n\r\n*2\r\n$1\r\na\r\n*-1\r\n$0\r\n\r\n";
        let expected = vec![
            Reply::Simple(b"OK".to_vec()),
            Reply::Error(b"ERR no".to_vec()),
            Reply::Integer(123),
            Reply::Bulk(None),
            Reply::Bulk(Some(b"\r\n\r\n".to_vec())),
            Reply::Array(Some(vec![
                Reply::Bulk(Some(b"a".to_vec())),
                Reply::Array(None),
            ])),
            Reply::Bulk(Some(Vec::new())),
        ];
        for cut_a in 0..=stream.len() {
            for cut_b in cut_a..=stream.len() {
                let mut buffer = Vec::new();
                let mut got = Vec::new();
                for piece in [&stream[..cut_a], &stream[cut_a..cut_b], &stream[cut_b..]] {
                    buffer.extend_from_slice(piece);
                    while let Some((reply, used)) =
                        parse(&buffer).expect("a valid prefix is no error")
                    {
                        got.push(reply);
                        buffer.drain(..used);
                    }
                }
                assert_eq!(got, expected, "cuts at {cut_a} and {cut_b}");
                assert!(buffer.is_empty());
            }
        }
    }

    #[test]
    fn garbage_is_an_error() {
        let cases: &[(&[u8], RespError)] = &[
            (b"hello\r\n", RespError::UnknownType(b'h')),
            (b"\r\n", RespError::UnknownType(b'\r')),
            (b"+OK\n", RespError::MissingCrlf),
            (b"+OK\rX\r\n", RespError::MissingCrlf),
            (b":12a\r\n", RespError::BadInteger),
            (b":\r\n", RespError::BadInteger),
            (b":-\r\n", RespError::BadInteger),
            (b":99999999999999999999\r\n", RespError::BadInteger),
            (b"$-2\r\n", RespError::NegativeLength(-2)),
            (b"$3\r\nabcXY", RespError::MissingCrlf),
            (b"$99999999999\r\n", RespError::BulkTooLarge(99_999_999_999)),
            (b"*-5\r\n", RespError::NegativeLength(-5)),
            (b"*99999999999\r\n", RespError::ArrayTooLong(99_999_999_999)),
            (b"*1\r\n!\r\n", RespError::UnknownType(b'!')),
        ];
        for (bytes, error) in cases {
            assert_eq!(
                parse(bytes),
                Err(error.clone()),
                "input {:?}",
                String::from_utf8_lossy(bytes)
            );
        }
        let deep: Vec<u8> = b"*1\r\n"
            .repeat(RESP_DEPTH_MAX + 1)
            .into_iter()
            .chain(*b":1\r\n")
            .collect();
        assert_eq!(parse(&deep), Err(RespError::TooDeep));
        let just_deep_enough: Vec<u8> = b"*1\r\n"
            .repeat(RESP_DEPTH_MAX)
            .into_iter()
            .chain(*b":1\r\n")
            .collect();
        assert!(matches!(parse(&just_deep_enough), Ok(Some(_))));
    }

    #[test]
    fn a_line_without_end_is_refused_once_it_passes_the_limit() {
        let mut line = vec![b'+'];
        line.resize(RESP_LINE_SIZE_MAX, b'a');
        assert_eq!(
            parse(&line),
            Ok(None),
            "still within the limit: wait for more"
        );
        line.resize(RESP_LINE_SIZE_MAX + 3, b'a');
        assert_eq!(parse(&line), Err(RespError::LineTooLong));
    }

    /// Random bytes, and valid replies with random bytes flipped, never make
    /// the parser panic or claim more bytes than it was given.
    #[test]
    fn random_garbage_never_panics() {
        let seed = test_seed();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let valid: &[u8] = b"*3\r\n$3\r\nabc\r\n:77\r\n*2\r\n+OK\r\n$-1\r\n";
        let alphabet = b"+-:$*\r\n0123456789-abc";
        for round in 0..20_000 {
            let bytes: Vec<u8> = if round % 2 == 0 {
                let len = rng.random_range(0..40);
                (0..len)
                    .map(|_| alphabet[rng.random_range(0..alphabet.len())])
                    .collect()
            } else {
                let mut bytes = valid.to_vec();
                for _ in 0..rng.random_range(1..4) {
                    let i = rng.random_range(0..bytes.len());
                    bytes[i] = rng.random();
                }
                bytes
            };
            if let Ok(Some((_, used))) = parse(&bytes) {
                assert!(
                    used <= bytes.len(),
                    "seed {seed} round {round}: used {used} of {bytes:?}"
                );
            }
        }
    }
}
