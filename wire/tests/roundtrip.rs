//! Every message survives encoding and decoding unchanged: the hand-written
//! samples of every variant, and generated messages (proptest).

mod common;

use std::collections::HashSet;

use common::{sample_messages, sample_replies, sample_requests, ERROR_CODES, TX_STATES};
use maps::{BrickId, PartitionId, RgId};
use proptest::collection::vec;
use proptest::prelude::*;
use wire::codec::{
    copy_chunk_frame_around, copy_index_frame_head, encode_copy_chunk, encode_frame,
    encode_prepare, encode_reply, encode_request, Frame, FrameDecoder,
};
use wire::header::RawHeader;
use wire::limits::{
    COPY_CHUNK_SIZE_MAX, ERROR_MESSAGE_SIZE_MAX, KEY_SIZE_MAX, MAPS_SIZE_MAX, PARTICIPANTS_MAX,
    STAT_NAME_SIZE_MAX, TABLE_NAME_SIZE_MAX, VALUE_SIZE_MAX,
};
use wire::{
    kind_name, Accepted, Ballot, CopyChunkRef, CopyIndexRef, Digest, ErrorReply, Message, Reply,
    Request, TxId, Write, HEADER_SIZE,
};

/// Encodes the body, checks its announced length, decodes it back, and
/// checks that the encoding is canonical (decoding then encoding gives the
/// same bytes).
fn assert_body_round_trip(message: &Message) {
    let mut body = Vec::new();
    message.encode_body(&mut body);
    assert_eq!(
        body.len(),
        message.body_len(),
        "body_len of {}",
        describe(message)
    );
    let decoded = Message::decode(message.kind(), &body)
        .unwrap_or_else(|e| panic!("{}: {e}", describe(message)));
    assert!(
        decoded == *message,
        "{} decoded to something else",
        describe(message)
    );
    let mut again = Vec::new();
    decoded.encode_body(&mut again);
    assert!(
        again == body,
        "{}: encoding is not canonical",
        describe(message)
    );
}

/// The message's kind name and body size, short enough for a failure
/// message even when the message holds a megabyte.
fn describe(message: &Message) -> String {
    format!(
        "{} ({} body bytes)",
        kind_name(message.kind()).unwrap(),
        message.body_len()
    )
}

fn frame(request_id: u64, message: &Message) -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame(request_id, message, &mut out);
    out
}

#[test]
fn every_sample_round_trips_as_a_body() {
    let messages = sample_messages();
    for message in &messages {
        assert_eq!(message.check_limits(), Ok(()), "{}", describe(message));
        assert_body_round_trip(message);
    }
}

#[test]
fn samples_cover_every_variant() {
    let kinds: HashSet<u8> = sample_messages().iter().map(Message::kind).collect();
    let known: HashSet<u8> = (0..=255u8).filter(|k| kind_name(*k).is_some()).collect();
    assert_eq!(kinds, known);
    let replies = sample_replies();
    for state in TX_STATES {
        assert!(replies.contains(&Reply::TxState(state)));
    }
    for code in ERROR_CODES {
        assert!(replies
            .iter()
            .any(|r| matches!(r, Reply::Error(e) if e.code == code)));
    }
}

#[test]
fn kinds_are_distinct_and_split_by_direction() {
    let mut seen = HashSet::new();
    for request in sample_requests() {
        let kind = request.kind();
        assert!((1..=63).contains(&kind), "{request:?} has kind {kind}");
        seen.insert(kind);
    }
    // Prepare has two kinds: with and without the decision.
    assert_eq!(seen.len(), 21, "one kind per request variant and shape");
    let mut seen = HashSet::new();
    for reply in sample_replies() {
        let kind = reply.kind();
        assert!((64..=127).contains(&kind), "reply kind {kind}");
        seen.insert(kind);
    }
    assert_eq!(seen.len(), 15, "one kind per reply variant");
}

#[test]
fn every_sample_round_trips_as_a_frame() {
    let messages = sample_messages();
    let mut decoder = FrameDecoder::new();
    for (i, message) in messages.iter().enumerate() {
        let request_id = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let bytes = frame(request_id, message);
        let header = RawHeader::from_bytes(bytes[..HEADER_SIZE].try_into().unwrap());
        assert_eq!(header.kind, message.kind());
        assert_eq!(header.body_len as usize, bytes.len() - HEADER_SIZE);
        assert_eq!(header.request_id, request_id);
        assert_eq!(header.body_crc, crc32fast::hash(&bytes[HEADER_SIZE..]));
        let mut fed = 0;
        let mut decoded = None;
        for _ in 0..1000 {
            fed += decoder.feed(&bytes[fed..]);
            if let Some(frame) = decoder.next_frame().unwrap() {
                decoded = Some(frame);
                break;
            }
            assert!(
                fed < bytes.len(),
                "the whole frame was fed but nothing came out"
            );
        }
        let (id, got) = decoded.expect("the frame decodes within 1000 feeds");
        assert_eq!(id, request_id);
        assert!(
            got == *message,
            "{} decoded to something else",
            describe(message)
        );
        assert_eq!(decoder.buffered_len(), 0);
    }
}

#[test]
fn request_and_reply_shortcuts_match_encode_frame() {
    for request in sample_requests() {
        let mut out = Vec::new();
        encode_request(5, &request, &mut out);
        assert!(out == frame(5, &Message::Request(request)));
    }
    for reply in sample_replies() {
        let mut out = Vec::new();
        encode_reply(6, &reply, &mut out);
        assert!(out == frame(6, &Message::Reply(reply)));
    }
}

#[test]
fn borrowed_sample_prepares_encode_as_their_requests() {
    let mut prepares = 0;
    for request in sample_requests() {
        if let Some(prepare) = request.as_prepare_ref() {
            prepares += 1;
            let (mut borrowed, mut owned) = (Vec::new(), Vec::new());
            encode_prepare(5, &prepare, &mut borrowed);
            encode_request(5, &request, &mut owned);
            assert!(borrowed == owned, "{request:?}");
            assert_eq!(prepare.to_request(), request);
        }
    }
    assert!(prepares >= 2, "the samples have a put and a removal");
}

#[test]
fn encode_appends_after_existing_bytes() {
    let mut out = b"earlier".to_vec();
    encode_request(1, &Request::Ping, &mut out);
    encode_reply(1, &Reply::Pong, &mut out);
    assert_eq!(&out[..7], b"earlier");
    assert_eq!(out.len(), 7 + 2 * HEADER_SIZE);
    let mut decoder = FrameDecoder::new();
    assert_eq!(decoder.feed(&out[7..]), 2 * HEADER_SIZE);
    assert_eq!(
        decoder.next_frame().unwrap(),
        Some((1, Message::Request(Request::Ping)))
    );
    assert_eq!(
        decoder.next_frame().unwrap(),
        Some((1, Message::Reply(Reply::Pong)))
    );
    assert_eq!(decoder.next_frame().unwrap(), None);
}

/// The exact bytes of one frame, so that an accidental change of the format
/// (field order, width, endianness) fails here and not between versions.
#[test]
fn get_frame_bytes_are_pinned() {
    let request = Request::Get {
        partition: PartitionId(0x0102_0304_0506_0708),
        fingerprint: 0xaabb_ccdd,
        table: b"tb".to_vec(),
        key: b"key".to_vec(),
    };
    let mut out = Vec::new();
    encode_request(0x11, &request, &mut out);
    let body: Vec<u8> = [
        &[8, 7, 6, 5, 4, 3, 2, 1][..],
        &[0xdd, 0xcc, 0xbb, 0xaa],
        &[2, 0, 0, 0],
        b"tb",
        &[3, 0, 0, 0],
        b"key",
    ]
    .concat();
    let mut expected = b"DDS1".to_vec();
    expected.extend_from_slice(&[1, 5, 0, 0]);
    expected.extend_from_slice(&(body.len() as u32).to_le_bytes());
    expected.extend_from_slice(&0x11u64.to_le_bytes());
    expected.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    expected.extend_from_slice(&body);
    assert_eq!(out, expected);
}

#[test]
fn prepare_and_error_bodies_are_pinned() {
    let request = Request::Prepare {
        txid: TxId(1),
        partition: PartitionId(2),
        fingerprint: 3,
        table: b"t".to_vec(),
        key: b"k".to_vec(),
        write: Write::Put(b"v".to_vec()),
        participants: vec![BrickId(4), BrickId(5)],
        decide: false,
    };
    let mut body = Vec::new();
    request.encode_body(&mut body);
    let expected: Vec<u8> = [
        &1u64.to_le_bytes()[..],
        &2u64.to_le_bytes(),
        &3u32.to_le_bytes(),
        &[1, 0, 0, 0, b't'],
        &[1, 0, 0, 0, b'k'],
        &[1], // Put
        &[1, 0, 0, 0, b'v'],
        &[2, 0, 0, 0],
        &4u32.to_le_bytes(),
        &5u32.to_le_bytes(),
    ]
    .concat();
    assert_eq!(body, expected);
    // The prepare that also decides has the same body under its own kind.
    let mut deciding = request.clone();
    if let Request::Prepare { decide, .. } = &mut deciding {
        *decide = true;
    }
    let mut deciding_body = Vec::new();
    deciding.encode_body(&mut deciding_body);
    assert_eq!(deciding_body, expected);
    assert_eq!(request.kind(), wire::kind::PREPARE);
    assert_eq!(deciding.kind(), wire::kind::PREPARE_DECIDE);

    let reply = Reply::Error(ErrorReply {
        code: wire::ErrorCode::LockConflict,
        message: "m".to_string(),
        maps: Some(vec![9]),
    });
    let mut body = Vec::new();
    reply.encode_body(&mut body);
    assert_eq!(body, vec![2, 1, 0, 0, 0, b'm', 1, 1, 0, 0, 0, 9]);

    let mut body = Vec::new();
    Request::Exclude {
        rg: RgId(1),
        epoch: 2,
        brick: BrickId(3),
    }
    .encode_body(&mut body);
    assert_eq!(
        body,
        [
            &1u32.to_le_bytes()[..],
            &2u64.to_le_bytes(),
            &3u32.to_le_bytes()
        ]
        .concat()
    );
}

// ---------------------------------------------------------------------------
// Generated messages.

/// Byte strings up to `max`, mostly short so that a run stays quick, with
/// the limit itself reachable.
fn bytes_up_to(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        8 => vec(any::<u8>(), 0..=max.min(40)),
        1 => vec(any::<u8>(), 0..=max),
        1 => vec(any::<u8>(), max..=max),
    ]
}

fn text_up_to(max: usize) -> impl Strategy<Value = String> {
    // Multi-byte characters make a cut in the wrong place show up as bad
    // UTF-8; the filter keeps the byte length within the limit.
    "[a-z0-9._é€𝄞]{0,40}".prop_filter("within the limit", move |s| s.len() <= max)
}

fn request_strategy() -> impl Strategy<Value = Request> {
    let write = prop_oneof![
        Just(Write::Remove),
        bytes_up_to(VALUE_SIZE_MAX).prop_map(Write::Put),
    ];
    prop_oneof![
        Just(Request::Ping),
        Just(Request::GetMaps),
        Just(Request::Stats),
        bytes_up_to(TABLE_NAME_SIZE_MAX).prop_map(|name| Request::CreateTable { name }),
        bytes_up_to(TABLE_NAME_SIZE_MAX).prop_map(|name| Request::DestroyTable { name }),
        (
            any::<u64>(),
            any::<u32>(),
            bytes_up_to(TABLE_NAME_SIZE_MAX),
            bytes_up_to(KEY_SIZE_MAX)
        )
            .prop_map(|(p, fingerprint, table, key)| Request::Get {
                partition: PartitionId(p),
                fingerprint,
                table,
                key,
            }),
        (
            any::<u64>(),
            any::<u64>(),
            any::<u32>(),
            bytes_up_to(TABLE_NAME_SIZE_MAX),
            bytes_up_to(KEY_SIZE_MAX),
            write,
            vec(any::<u32>(), 0..=PARTICIPANTS_MAX),
            any::<bool>(),
        )
            .prop_map(
                |(t, p, fingerprint, table, key, write, participants, decide)| {
                    Request::Prepare {
                        txid: TxId(t),
                        partition: PartitionId(p),
                        fingerprint,
                        table,
                        key,
                        write,
                        participants: participants.into_iter().map(BrickId).collect(),
                        decide,
                    }
                }
            ),
        (any::<u64>(), any::<u64>(), 0..3u8).prop_map(|(t, p, which)| {
            let (txid, partition) = (TxId(t), PartitionId(p));
            match which {
                0 => Request::Commit { txid, partition },
                1 => Request::Abort { txid, partition },
                _ => Request::TxStatus { txid, partition },
            }
        }),
        (any::<u32>(), any::<u64>(), any::<u32>(), any::<bool>()).prop_map(
            |(rg, epoch, brick, exclude)| {
                if exclude {
                    Request::Exclude {
                        rg: RgId(rg),
                        epoch,
                        brick: BrickId(brick),
                    }
                } else {
                    Request::LeaseRenew {
                        rg: RgId(rg),
                        epoch,
                        from: BrickId(brick),
                        incarnation: epoch ^ 0x5a5a,
                        blank: (epoch % 2 == 1).then_some(Digest {
                            sum: epoch,
                            keys: 3,
                        }),
                    }
                }
            }
        ),
        bytes_up_to(MAPS_SIZE_MAX).prop_map(|maps| Request::PushMaps { maps }),
        any::<u64>().prop_map(|p| Request::PartitionChecksum {
            partition: PartitionId(p)
        }),
        (
            any::<u32>(),
            any::<u64>(),
            any::<u64>(),
            any::<bool>(),
            any::<u64>(),
            bytes_up_to(MAPS_SIZE_MAX)
        )
            .prop_map(|(rg, epoch, p, full, keys, maps)| Request::CopyBegin {
                rg: RgId(rg),
                epoch,
                partition: PartitionId(p),
                full,
                keys,
                maps,
            }),
        (
            any::<u64>(),
            any::<u64>(),
            bytes_up_to(COPY_CHUNK_SIZE_MAX),
            proptest::option::of((any::<u64>(), any::<u64>()))
        )
            .prop_map(|(p, offset, bytes, end)| Request::CopyChunk {
                partition: PartitionId(p),
                offset,
                bytes,
                end: end.map(|(sum, keys)| Digest { sum, keys }),
            }),
        (
            (any::<u64>(), any::<u64>(), any::<u64>()),
            any::<u8>(),
            any::<u64>(),
            bytes_up_to(COPY_CHUNK_SIZE_MAX)
        )
            .prop_map(|((p, end, slots), bits, first, bytes)| Request::CopyIndex {
                partition: PartitionId(p),
                end,
                slots,
                bits,
                first,
                bytes,
            }),
        any::<u64>().prop_map(|p| Request::CopyAbort {
            partition: PartitionId(p)
        }),
        any::<u64>().prop_map(|p| Request::Capacity {
            partition: PartitionId(p)
        }),
        (
            any::<u32>(),
            any::<u64>(),
            ballot_strategy(),
            proptest::option::of(bricks_strategy())
        )
            .prop_map(|(rg, epoch, ballot, value)| Request::ConfigVote {
                rg: RgId(rg),
                epoch,
                ballot,
                value,
            }),
    ]
}

fn ballot_strategy() -> impl Strategy<Value = Ballot> {
    (any::<u64>(), any::<u32>()).prop_map(|(round, brick)| Ballot {
        round,
        brick: BrickId(brick),
    })
}

fn bricks_strategy() -> impl Strategy<Value = Vec<BrickId>> {
    vec(any::<u32>().prop_map(BrickId), 0..=PARTICIPANTS_MAX)
}

fn reply_strategy() -> impl Strategy<Value = Reply> {
    prop_oneof![
        Just(Reply::Ok),
        Just(Reply::Pong),
        Just(Reply::NotFound),
        Just(Reply::Voted),
        bytes_up_to(VALUE_SIZE_MAX).prop_map(Reply::Value),
        bytes_up_to(MAPS_SIZE_MAX).prop_map(Reply::Maps),
        (0..TX_STATES.len()).prop_map(|i| Reply::TxState(TX_STATES[i])),
        any::<u32>().prop_map(|duration_ms| Reply::Lease { duration_ms }),
        vec((text_up_to(STAT_NAME_SIZE_MAX), any::<u64>()), 0..20).prop_map(Reply::Stats),
        (any::<u32>(), any::<u64>()).prop_map(|(crc, keys)| Reply::Checksum { crc, keys }),
        proptest::option::of((any::<u64>(), any::<u64>())).prop_map(|local| Reply::CopyReady {
            local: local.map(|(sum, keys)| Digest { sum, keys })
        }),
        any::<u64>().prop_map(|end| Reply::CopyAck { end }),
        (any::<u64>(), any::<bool>()).prop_map(|(held_bytes, holds_partition)| Reply::Capacity {
            held_bytes,
            holds_partition
        }),
        (
            any::<bool>(),
            ballot_strategy(),
            proptest::option::of((ballot_strategy(), bricks_strategy()))
        )
            .prop_map(|(granted, promised, accepted)| Reply::ConfigVote {
                granted,
                promised,
                accepted: accepted.map(|(ballot, bricks)| Accepted { ballot, bricks }),
            }),
        (
            0..ERROR_CODES.len(),
            text_up_to(ERROR_MESSAGE_SIZE_MAX),
            proptest::option::of(bytes_up_to(MAPS_SIZE_MAX))
        )
            .prop_map(|(code, message, maps)| Reply::Error(ErrorReply {
                code: ERROR_CODES[code],
                message,
                maps,
            })),
    ]
}

fn message_strategy() -> impl Strategy<Value = Message> {
    prop_oneof![
        request_strategy().prop_map(Message::Request),
        reply_strategy().prop_map(Message::Reply)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn generated_messages_round_trip(message in message_strategy()) {
        prop_assert_eq!(message.check_limits(), Ok(()));
        assert_body_round_trip(&message);
    }

    /// A prepare borrowed from where its bytes are kept is the request it
    /// stands for, and encodes to the same frame.
    #[test]
    fn borrowed_prepares_encode_as_their_requests(request in request_strategy()) {
        match request.as_prepare_ref() {
            Some(prepare) => {
                prop_assert_eq!(prepare.to_request(), request.clone());
                let (mut borrowed, mut owned) = (Vec::new(), Vec::new());
                encode_prepare(9, &prepare, &mut borrowed);
                encode_request(9, &request, &mut owned);
                prop_assert_eq!(borrowed, owned);
            }
            None => {
                let is_prepare = matches!(request, Request::Prepare { .. });
                prop_assert!(!is_prepare);
            }
        }
    }

    /// A copy chunk borrowed from where its bytes are kept encodes to the
    /// frame of the request it stands for, after whatever the buffer held.
    #[test]
    fn borrowed_copy_chunks_encode_as_their_requests(
        partition in any::<u64>(),
        offset in any::<u64>(),
        bytes in vec(any::<u8>(), 0..2048),
        end in proptest::option::of((any::<u64>(), any::<u64>())),
        earlier in vec(any::<u8>(), 0..64),
    ) {
        let chunk = CopyChunkRef {
            partition: PartitionId(partition),
            offset,
            bytes: &bytes,
            end: end.map(|(sum, keys)| Digest { sum, keys }),
        };
        let mut borrowed = earlier.clone();
        encode_copy_chunk(11, &chunk, &mut borrowed);
        let mut owned = earlier.clone();
        encode_request(11, &chunk.to_request(), &mut owned);
        prop_assert_eq!(&borrowed, &owned);
        // And in three parts around the bytes, as a brick writes it, with
        // the bytes' crc computed here or given (kept by the arena).
        for bytes_crc in [None, Some(crc32fast::hash(&bytes))] {
            let (head, tail) = copy_chunk_frame_around(11, &chunk, bytes_crc);
            let mut around = earlier.clone();
            around.extend_from_slice(&head);
            around.extend_from_slice(&bytes);
            around.extend_from_slice(&tail);
            prop_assert_eq!(&around, &owned);
        }
    }

    /// A part of an index borrowed from a source's snapshot encodes, head
    /// then bytes, to the frame of the request it stands for, and the
    /// decoder lends it back as it was.
    #[test]
    fn borrowed_index_parts_encode_as_their_requests(
        partition in any::<u64>(),
        end in any::<u64>(),
        slots in any::<u64>(),
        bits in any::<u8>(),
        first in any::<u64>(),
        bytes in vec(any::<u8>(), 0..2048),
        earlier in vec(any::<u8>(), 0..64),
    ) {
        let part = CopyIndexRef {
            partition: PartitionId(partition),
            end,
            slots,
            bits,
            first,
            bytes: &bytes,
        };
        let request = part.to_request();
        prop_assert_eq!(request.as_copy_index(), Some(part));
        let mut owned = earlier.clone();
        encode_request(7, &request, &mut owned);
        let mut around = earlier.clone();
        around.extend_from_slice(&copy_index_frame_head(7, &part));
        around.extend_from_slice(&bytes);
        prop_assert_eq!(&around, &owned);
        let mut decoder = FrameDecoder::new();
        prop_assert_eq!(decoder.feed(&around[earlier.len()..]), around.len() - earlier.len());
        match decoder.next_frame_lending().unwrap() {
            Some((7, Frame::CopyIndex(lent))) => prop_assert_eq!(lent, part),
            other => prop_assert!(false, "decoded {:?}", other),
        }
    }

    /// A stream of generated frames, cut into pieces at random places,
    /// decodes to the same frames in the same order.
    #[test]
    fn generated_streams_decode_whatever_the_cuts(
        messages in vec(message_strategy(), 1..8),
        cuts in vec(1usize..5000, 1..50),
    ) {
        let mut stream = Vec::new();
        for (i, message) in messages.iter().enumerate() {
            encode_frame(i as u64, message, &mut stream);
        }
        let mut decoder = FrameDecoder::new();
        let mut decoded = Vec::new();
        let mut pos = 0;
        // Each pass feeds at least one byte (the decoder has room once it
        // is drained), so the stream length bounds the passes.
        for pass in 0..=stream.len() {
            while let Some(frame) = decoder.next_frame().unwrap() {
                decoded.push(frame);
            }
            if pos == stream.len() {
                break;
            }
            let piece = cuts[pass % cuts.len()].min(stream.len() - pos);
            pos += decoder.feed(&stream[pos..pos + piece]);
            prop_assert!(decoder.capacity() <= wire::codec::FRAME_SIZE_MAX);
        }
        prop_assert_eq!(decoded.len(), messages.len());
        for (i, ((id, got), want)) in decoded.iter().zip(&messages).enumerate() {
            prop_assert_eq!(*id, i as u64);
            prop_assert!(got == want, "frame {} differs", i);
        }
        prop_assert_eq!(decoder.buffered_len(), 0);
    }
}
