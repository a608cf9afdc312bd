//! Each way a frame can be wrong is refused with the right error and a
//! reason that names the problem: header fields, crc, and body contents.
//! Also the limit checks a sender runs before encoding.

mod common;

use common::{pattern, prepare};
use maps::{BrickId, PartitionId};
use wire::codec::{encode_request, FrameDecoder, DECODER_BUFFER_SIZE_MIN};
use wire::header::{RawHeader, MAGIC, VERSION};
use wire::limits::{
    ERROR_MESSAGE_SIZE_MAX, FRAME_BODY_SIZE_MAX, KEY_SIZE_MAX, MAPS_SIZE_MAX, PARTICIPANTS_MAX,
    STATS_ENTRIES_MAX, STAT_NAME_SIZE_MAX, TABLE_NAME_SIZE_MAX, VALUE_SIZE_MAX,
};
use wire::message::kind;
use wire::{
    DecodeError, DecodeProblem, ErrorCode, ErrorReply, FrameError, LimitError, Message, Reply,
    Request, TxId, Write, HEADER_SIZE,
};

fn header_bytes(raw: RawHeader) -> Vec<u8> {
    let mut bytes = [0; HEADER_SIZE];
    raw.to_bytes(&mut bytes);
    bytes.to_vec()
}

fn valid_header(kind: u8, body: &[u8]) -> RawHeader {
    RawHeader {
        magic: MAGIC,
        version: VERSION,
        kind,
        flags: 0,
        body_len: body.len() as u32,
        request_id: 77,
        body_crc: crc32fast::hash(body),
    }
}

/// A frame with any body, correctly framed: right length and crc.
fn raw_frame(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut bytes = header_bytes(valid_header(kind, body));
    bytes.extend_from_slice(body);
    bytes
}

/// Feeds `bytes` to a fresh decoder and returns its first answer; the bytes
/// must fit one buffer.
fn decode_one(bytes: &[u8]) -> Result<Option<(u64, Message)>, FrameError> {
    let mut decoder = FrameDecoder::new();
    let mut fed = 0;
    // A frame of any allowed size arrives within a few feeds; if not, the
    // decoder never asked for the rest, which the caller checks.
    for _ in 0..8 {
        fed += decoder.feed(&bytes[fed..]);
        match decoder.next_frame() {
            Ok(None) if fed < bytes.len() => continue,
            other => return other,
        }
    }
    panic!("frame not decoded after 8 feeds");
}

fn header_reason(raw: RawHeader) -> String {
    let mut decoder = FrameDecoder::new();
    decoder.feed(&header_bytes(raw));
    match decoder.next_frame() {
        Err(FrameError::BadHeader(e)) => {
            // Refused from the header alone: the buffer did not grow.
            assert_eq!(decoder.capacity(), DECODER_BUFFER_SIZE_MIN);
            // The error sticks: the stream cannot be followed any more.
            assert_eq!(decoder.next_frame(), Err(FrameError::BadHeader(e)));
            e.to_string()
        }
        other => panic!("{raw:?}: expected a header error, got {other:?}"),
    }
}

#[test]
fn each_header_error_has_its_reason() {
    let good = valid_header(kind::PING, &[]);
    let cases = [
        (
            RawHeader {
                magic: 0x2054_4547,
                ..good
            },
            "bad magic",
        ),
        (
            RawHeader { version: 2, ..good },
            "unsupported protocol version",
        ),
        (RawHeader { kind: 0, ..good }, "unknown message kind"),
        (RawHeader { kind: 63, ..good }, "unknown message kind"),
        (RawHeader { kind: 128, ..good }, "unknown message kind"),
        (RawHeader { flags: 4, ..good }, "nonzero flags"),
        (
            RawHeader {
                body_len: u32::MAX,
                ..good
            },
            "body length is over the limit",
        ),
        (
            RawHeader {
                body_len: FRAME_BODY_SIZE_MAX as u32 + 1,
                ..good
            },
            "body length is over the limit",
        ),
    ];
    for (raw, reason) in cases {
        let text = header_reason(raw);
        assert!(text.contains(reason), "{raw:?}: {text}");
    }
}

#[test]
fn garbage_is_refused_for_its_magic() {
    let mut decoder = FrameDecoder::new();
    decoder.feed(b"GET / HTTP/1.1\r\nHost: brick\r\n\r\n");
    let error = decoder.next_frame().unwrap_err();
    assert!(error.to_string().contains("magic"), "{error}");
}

#[test]
fn header_claiming_4_gib_waits_for_nothing_and_reserves_nothing() {
    let mut decoder = FrameDecoder::new();
    let raw = RawHeader {
        body_len: u32::MAX,
        ..valid_header(kind::VALUE, &[])
    };
    // Only the header is sent; the decoder must not ask for more.
    decoder.feed(&header_bytes(raw));
    assert!(matches!(
        decoder.next_frame(),
        Err(FrameError::BadHeader(_))
    ));
    assert!(decoder.capacity() <= DECODER_BUFFER_SIZE_MIN);
}

#[test]
fn bad_crc_names_the_request() {
    let mut bytes = Vec::new();
    encode_request(
        11,
        &Request::CreateTable {
            name: b"crc".to_vec(),
        },
        &mut bytes,
    );
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    let error = decode_one(&bytes).unwrap_err();
    assert_eq!(error, FrameError::BadCrc { request_id: 11 });
    assert!(error.to_string().contains("crc"), "{error}");
    assert!(error.to_string().contains("frame 11"), "{error}");

    // A wrong crc in the header with an intact body is refused the same way.
    let body = [1, 0, 0, 0, b'x'];
    let mut raw = valid_header(kind::CREATE_TABLE, &body);
    raw.body_crc ^= 1;
    let mut bytes = header_bytes(raw);
    bytes.extend_from_slice(&body);
    assert_eq!(
        decode_one(&bytes),
        Err(FrameError::BadCrc { request_id: 77 })
    );
}

/// A body that passes the crc but not the decoder: the frame error names
/// the request and carries the body error.
fn body_error(kind: u8, body: &[u8]) -> DecodeError {
    let frame_error = decode_one(&raw_frame(kind, body)).unwrap_err();
    let direct = Message::decode(kind, body).unwrap_err();
    match frame_error {
        FrameError::BadBody { request_id, error } => {
            assert_eq!(request_id, 77);
            assert_eq!(error, direct);
            error
        }
        other => panic!("expected a body error, got {other:?}"),
    }
}

fn assert_body_error(kind: u8, body: &[u8], field: &str, problem: DecodeProblem, text: &str) {
    let error = body_error(kind, body);
    assert_eq!(error.field, field, "{error}");
    assert_eq!(error.problem, problem, "{error}");
    assert_eq!(error.to_string(), text);
}

fn encoded(request: &Request) -> Vec<u8> {
    let mut body = Vec::new();
    request.encode_body(&mut body);
    body
}

#[test]
fn key_over_the_limit() {
    let body = encoded(&prepare(vec![b'k'; 5000], Write::Put(b"v".to_vec())));
    assert_body_error(
        kind::PREPARE,
        &body,
        "Prepare.key",
        DecodeProblem::OverLimit {
            length: 5000,
            limit: KEY_SIZE_MAX,
        },
        "Prepare.key: length 5000 is over the limit of 1024 bytes",
    );
    let body = encoded(&Request::Get {
        partition: PartitionId(1),
        fingerprint: 2,
        table: b"t".to_vec(),
        key: vec![0; KEY_SIZE_MAX + 1],
    });
    let error = body_error(kind::GET, &body);
    assert_eq!(
        error.to_string(),
        "Get.key: length 1025 is over the limit of 1024 bytes"
    );
}

#[test]
fn value_over_the_limit() {
    let body = encoded(&prepare(
        b"k".to_vec(),
        Write::Put(vec![0; VALUE_SIZE_MAX + 1]),
    ));
    let error = body_error(kind::PREPARE, &body);
    assert_eq!(
        error.to_string(),
        format!(
            "Prepare.value: length {} is over the limit of {VALUE_SIZE_MAX} bytes",
            VALUE_SIZE_MAX + 1
        )
    );
    let mut body = Vec::new();
    Reply::Value(vec![0; VALUE_SIZE_MAX + 1]).encode_body(&mut body);
    assert!(body_error(kind::VALUE, &body)
        .to_string()
        .starts_with("Value.value: length 1048577 is over"));
}

#[test]
fn other_lengths_over_their_limits() {
    let table = encoded(&Request::CreateTable {
        name: vec![b'n'; TABLE_NAME_SIZE_MAX + 1],
    });
    assert_eq!(
        body_error(kind::CREATE_TABLE, &table).to_string(),
        "CreateTable.name: length 256 is over the limit of 255 bytes"
    );
    let maps = encoded(&Request::PushMaps {
        maps: vec![0; MAPS_SIZE_MAX + 1],
    });
    assert!(body_error(kind::PUSH_MAPS, &maps)
        .to_string()
        .starts_with("PushMaps.maps: length 1048577 is over"));

    let mut error = Vec::new();
    Reply::Error(ErrorReply {
        code: ErrorCode::Internal,
        message: "x".repeat(ERROR_MESSAGE_SIZE_MAX + 1),
        maps: None,
    })
    .encode_body(&mut error);
    assert_eq!(
        body_error(kind::ERROR, &error).to_string(),
        "Error.message: length 1025 is over the limit of 1024 bytes"
    );

    let mut stats = Vec::new();
    Reply::Stats(vec![("s".repeat(STAT_NAME_SIZE_MAX + 1), 1)]).encode_body(&mut stats);
    assert_eq!(
        body_error(kind::STATS_REPLY, &stats).to_string(),
        "StatsReply.name: length 256 is over the limit of 255 bytes"
    );
}

#[test]
fn counts_over_their_limits() {
    let mut request = prepare(b"k".to_vec(), Write::Remove);
    if let Request::Prepare { participants, .. } = &mut request {
        *participants = (0..=PARTICIPANTS_MAX as u32).map(BrickId).collect();
    }
    assert_body_error(
        kind::PREPARE,
        &encoded(&request),
        "Prepare.participants",
        DecodeProblem::CountOverLimit {
            count: 17,
            limit: PARTICIPANTS_MAX,
        },
        "Prepare.participants: count 17 is over the limit of 16 entries",
    );
    // The count alone is enough to refuse; no entries need follow.
    let body = (STATS_ENTRIES_MAX as u32 + 1).to_le_bytes();
    assert_body_error(
        kind::STATS_REPLY,
        &body,
        "StatsReply.entries",
        DecodeProblem::CountOverLimit {
            count: 4097,
            limit: STATS_ENTRIES_MAX,
        },
        "StatsReply.entries: count 4097 is over the limit of 4096 entries",
    );
}

#[test]
fn count_that_the_body_cannot_hold() {
    // 100 stats entries need at least 1200 bytes; the body has none.
    assert_body_error(
        kind::STATS_REPLY,
        &100u32.to_le_bytes(),
        "StatsReply.entries",
        DecodeProblem::CountPastEnd {
            count: 100,
            remaining: 0,
        },
        "StatsReply.entries: count 100 needs more than the 0 bytes left in the body",
    );
}

#[test]
fn inner_length_that_lies() {
    // A table name claiming 200 bytes with only 3 behind it.
    let mut body = Vec::new();
    body.extend_from_slice(&200u32.to_le_bytes());
    body.extend_from_slice(b"abc");
    assert_body_error(
        kind::CREATE_TABLE,
        &body,
        "CreateTable.name",
        DecodeProblem::LengthPastEnd {
            length: 200,
            remaining: 3,
        },
        "CreateTable.name: length 200 runs past the end of the body (3 bytes left)",
    );
    // A length that would wrap a 32-bit sum is still just over the limit.
    let mut body = u32::MAX.to_le_bytes().to_vec();
    body.extend_from_slice(b"x");
    let error = body_error(kind::VALUE, &body);
    assert_eq!(
        error.to_string(),
        "Value.value: length 4294967295 is over the limit of 1048576 bytes"
    );
}

#[test]
fn body_cut_short() {
    let body = encoded(&Request::Commit {
        txid: TxId(1),
        partition: PartitionId(2),
    });
    assert_body_error(
        kind::COMMIT,
        &body[..13],
        "Commit.partition",
        DecodeProblem::Truncated {
            needed: 8,
            remaining: 5,
        },
        "Commit.partition: the body ends early: 8 bytes needed, 5 left",
    );
    // Every strict prefix of a longer message is refused, never accepted
    // as some shorter message.
    let body = encoded(&prepare(b"key".to_vec(), Write::Put(b"value".to_vec())));
    for len in 0..body.len() {
        assert!(
            Message::decode(kind::PREPARE, &body[..len]).is_err(),
            "prefix of {len} bytes accepted"
        );
    }
    assert!(Message::decode(kind::PREPARE, &body).is_ok());
}

#[test]
fn trailing_bytes() {
    assert_body_error(
        kind::PING,
        &[0],
        "Ping",
        DecodeProblem::TrailingBytes(1),
        "Ping: 1 byte left over after the message",
    );
    let mut body = encoded(&prepare(b"k".to_vec(), Write::Remove));
    body.extend_from_slice(&[1, 2, 3]);
    assert_body_error(
        kind::PREPARE,
        &body,
        "Prepare",
        DecodeProblem::TrailingBytes(3),
        "Prepare: 3 bytes left over after the message",
    );
}

#[test]
fn unknown_tags() {
    // Write tag.
    let mut body = encoded(&prepare(b"k".to_vec(), Write::Remove));
    let tag_at = 8 + 8 + 4 + (4 + 5) + (4 + 1);
    assert_eq!(
        body[tag_at], 0,
        "the Remove tag sits where the test expects"
    );
    body[tag_at] = 7;
    assert_body_error(
        kind::PREPARE,
        &body,
        "Prepare.write",
        DecodeProblem::UnknownTag(7),
        "Prepare.write: unknown tag 7",
    );
    // TxState tag.
    assert_body_error(
        kind::TX_STATE,
        &[4],
        "TxState.state",
        DecodeProblem::UnknownTag(4),
        "TxState.state: unknown tag 4",
    );
    // ErrorCode: 0 and 15 are not codes.
    for code in [0u8, 15, 255] {
        let body = [code, 0, 0, 0, 0, 0];
        let error = body_error(kind::ERROR, &body);
        assert_eq!(error.to_string(), format!("Error.code: unknown tag {code}"));
    }
    // The full flag of a copy and the option tag of its digest.
    assert_body_error(
        kind::COPY_BEGIN,
        &[
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0,
        ],
        "CopyBegin.full",
        DecodeProblem::UnknownTag(2),
        "CopyBegin.full: unknown tag 2",
    );
    assert_body_error(
        kind::COPY_READY,
        &[3],
        "CopyReady.local",
        DecodeProblem::UnknownTag(3),
        "CopyReady.local: unknown tag 3",
    );
    // The option tag of an error's maps.
    assert_body_error(
        kind::ERROR,
        &[1, 0, 0, 0, 0, 2],
        "Error.maps",
        DecodeProblem::UnknownTag(2),
        "Error.maps: unknown tag 2",
    );
}

#[test]
fn text_must_be_utf8() {
    let mut body = vec![6u8];
    body.extend_from_slice(&2u32.to_le_bytes());
    body.extend_from_slice(&[0xc3, 0x28]);
    body.push(0);
    assert_body_error(
        kind::ERROR,
        &body,
        "Error.message",
        DecodeProblem::InvalidUtf8,
        "Error.message: text is not valid UTF-8",
    );
    let mut body = 1u32.to_le_bytes().to_vec();
    body.extend_from_slice(&1u32.to_le_bytes());
    body.push(0xff);
    body.extend_from_slice(&5u64.to_le_bytes());
    assert_body_error(
        kind::STATS_REPLY,
        &body,
        "StatsReply.name",
        DecodeProblem::InvalidUtf8,
        "StatsReply.name: text is not valid UTF-8",
    );
}

#[test]
fn unknown_kind_in_decode() {
    let error = Message::decode(200, &[]).unwrap_err();
    assert_eq!(error.problem, DecodeProblem::UnknownKind(200));
    assert_eq!(error.to_string(), "kind: unknown message kind 200");
}

#[test]
fn frame_error_text_says_what_and_where() {
    let body = encoded(&prepare(vec![b'k'; 5000], Write::Remove));
    let error = decode_one(&raw_frame(kind::PREPARE, &body)).unwrap_err();
    let text = error.to_string();
    assert!(
        text.starts_with("frame 77: malformed body: Prepare.key: length 5000"),
        "{text}"
    );
    assert!(text.contains("same DDS version"), "{text}");
}

#[test]
fn check_limits_refuses_what_the_receiver_would() {
    let cases: Vec<(Request, &str)> = vec![
        (
            Request::CreateTable {
                name: vec![0; TABLE_NAME_SIZE_MAX + 1],
            },
            "CreateTable.name: 256 bytes is over the limit of 255 bytes; make it smaller",
        ),
        (
            Request::DestroyTable {
                name: vec![0; TABLE_NAME_SIZE_MAX + 1],
            },
            "DestroyTable.name: 256 bytes",
        ),
        (
            Request::Get {
                partition: PartitionId(1),
                fingerprint: 1,
                table: vec![0; TABLE_NAME_SIZE_MAX + 1],
                key: Vec::new(),
            },
            "Get.table: 256 bytes",
        ),
        (
            Request::Get {
                partition: PartitionId(1),
                fingerprint: 1,
                table: Vec::new(),
                key: vec![0; KEY_SIZE_MAX + 1],
            },
            "Get.key: 1025 bytes",
        ),
        (
            prepare(vec![0; KEY_SIZE_MAX + 1], Write::Remove),
            "Prepare.key: 1025 bytes",
        ),
        (
            prepare(b"k".to_vec(), Write::Put(vec![0; VALUE_SIZE_MAX + 1])),
            "Prepare.value: 1048577 bytes",
        ),
        (
            Request::PushMaps {
                maps: vec![0; MAPS_SIZE_MAX + 1],
            },
            "PushMaps.maps: 1048577 bytes",
        ),
    ];
    for (request, text) in cases {
        let error = request.check_limits().unwrap_err();
        assert!(error.to_string().starts_with(text), "{error}");
        // Encoding does not truncate: the receiver sees the real length
        // and refuses it.
        let mut body = Vec::new();
        request.encode_body(&mut body);
        assert_eq!(body.len(), request.body_len());
        assert!(Message::decode(request.kind(), &body).is_err());
    }
    let mut request = prepare(b"k".to_vec(), Write::Remove);
    if let Request::Prepare { participants, .. } = &mut request {
        *participants = vec![BrickId(0); PARTICIPANTS_MAX + 1];
    }
    assert_eq!(
        request.check_limits(),
        Err(LimitError {
            field: "Prepare.participants",
            size: 17,
            limit: PARTICIPANTS_MAX,
            unit: "entries",
        })
    );
    // At the limits exactly, everything passes.
    let request = prepare(
        pattern(KEY_SIZE_MAX, 0),
        Write::Put(pattern(VALUE_SIZE_MAX, 1)),
    );
    assert_eq!(request.check_limits(), Ok(()));
}

#[test]
fn reply_check_limits() {
    let cases: Vec<(Reply, &str)> = vec![
        (Reply::Value(vec![0; VALUE_SIZE_MAX + 1]), "Value.value"),
        (Reply::Maps(vec![0; MAPS_SIZE_MAX + 1]), "Maps.maps"),
        (
            Reply::Stats(vec![(String::new(), 0); STATS_ENTRIES_MAX + 1]),
            "StatsReply.entries",
        ),
        (
            Reply::Stats(vec![("n".repeat(STAT_NAME_SIZE_MAX + 1), 0)]),
            "StatsReply.name",
        ),
        (
            Reply::Error(ErrorReply {
                code: ErrorCode::Busy,
                message: "m".repeat(ERROR_MESSAGE_SIZE_MAX + 1),
                maps: None,
            }),
            "Error.message",
        ),
        (
            Reply::Error(ErrorReply {
                code: ErrorCode::Fenced,
                message: String::new(),
                maps: Some(vec![0; MAPS_SIZE_MAX + 1]),
            }),
            "Error.maps",
        ),
    ];
    for (reply, field) in cases {
        assert_eq!(reply.check_limits().unwrap_err().field, field);
        assert!(Message::Reply(reply).check_limits().is_err());
    }
}
