//! The incremental decoder: frames cut anywhere decode the same, many frames
//! in one read all come out, reads go straight into the buffer, and the
//! buffer stays within its bound whatever the frames claim.

mod common;

use std::io::{self, Read};

use common::{pattern, prepare, sample_messages};
use maps::PartitionId;
use wire::codec::{
    encode_frame, encode_request, FrameDecoder, DECODER_BUFFER_SIZE_MIN, FRAME_SIZE_MAX,
};
use wire::header::{RawHeader, MAGIC, VERSION};
use wire::limits::{FRAME_BODY_SIZE_MAX, VALUE_SIZE_MAX};
use wire::message::kind;
use wire::{DecodeProblem, FrameError, Message, Reply, Request, Write, HEADER_SIZE};

/// Small and medium frames of several kinds, for the splitting tests.
fn small_messages() -> Vec<Message> {
    vec![
        Message::Request(Request::Ping),
        Message::Request(Request::Get {
            partition: PartitionId(3),
            fingerprint: 0xabcd,
            table: b"users".to_vec(),
            key: b"alice".to_vec(),
        }),
        Message::Request(prepare(b"key".to_vec(), Write::Put(pattern(150, 1)))),
        Message::Reply(Reply::Value(pattern(300, 2))),
        Message::Reply(Reply::Ok),
        Message::Reply(Reply::Stats(vec![("gets".to_string(), 5)])),
    ]
}

fn stream_of(messages: &[Message]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, message) in messages.iter().enumerate() {
        encode_frame(1000 + i as u64, message, &mut out);
    }
    out
}

fn drain(decoder: &mut FrameDecoder, into: &mut Vec<(u64, Message)>) {
    // A buffer holds at most FRAME_SIZE_MAX / HEADER_SIZE frames.
    for _ in 0..FRAME_SIZE_MAX / HEADER_SIZE + 1 {
        match decoder.next_frame().expect("valid frames decode") {
            Some(frame) => into.push(frame),
            None => return,
        }
    }
    panic!("next_frame kept returning frames past the buffer's capacity");
}

fn assert_decoded(decoded: &[(u64, Message)], messages: &[Message]) {
    assert_eq!(decoded.len(), messages.len());
    for (i, ((id, got), want)) in decoded.iter().zip(messages).enumerate() {
        assert_eq!(*id, 1000 + i as u64);
        assert_eq!(got, want, "frame {i}");
    }
}

#[test]
fn split_at_every_byte_boundary() {
    let messages = small_messages();
    let stream = stream_of(&messages);
    for cut in 0..=stream.len() {
        let mut decoder = FrameDecoder::new();
        let mut decoded = Vec::new();
        assert_eq!(decoder.feed(&stream[..cut]), cut);
        drain(&mut decoder, &mut decoded);
        assert_eq!(decoder.feed(&stream[cut..]), stream.len() - cut);
        drain(&mut decoder, &mut decoded);
        assert_decoded(&decoded, &messages);
        assert_eq!(decoder.buffered_len(), 0, "cut at {cut}");
    }
}

#[test]
fn one_byte_at_a_time() {
    let messages = small_messages();
    let stream = stream_of(&messages);
    let mut decoder = FrameDecoder::new();
    let mut decoded = Vec::new();
    for byte in &stream {
        assert_eq!(decoder.feed(std::slice::from_ref(byte)), 1);
        drain(&mut decoder, &mut decoded);
    }
    assert_decoded(&decoded, &messages);
}

#[test]
fn every_sample_one_byte_then_the_rest() {
    // Each sample, including the largest, split after every header byte
    // and at the header/body boundary.
    let messages = sample_messages();
    for message in &messages {
        let stream = stream_of(std::slice::from_ref(message));
        for cut in 1..=(HEADER_SIZE + 1).min(stream.len()) {
            let mut decoder = FrameDecoder::new();
            let mut decoded = Vec::new();
            let mut fed = decoder.feed(&stream[..cut]);
            drain(&mut decoder, &mut decoded);
            // The body may need several feeds: the buffer grows to the
            // frame's size only once the header is known.
            for _ in 0..4 {
                if fed == stream.len() {
                    break;
                }
                fed += decoder.feed(&stream[fed..]);
                drain(&mut decoder, &mut decoded);
            }
            assert_eq!(fed, stream.len());
            assert_decoded(&decoded, std::slice::from_ref(message));
        }
    }
}

#[test]
fn many_frames_in_one_read() {
    let messages: Vec<Message> = (0..2000u32)
        .map(|i| {
            Message::Request(Request::Get {
                partition: PartitionId(u64::from(i)),
                fingerprint: i,
                table: b"t".to_vec(),
                key: i.to_le_bytes().to_vec(),
            })
        })
        .collect();
    let stream = stream_of(&messages);
    let mut reader = io::Cursor::new(stream.clone());
    let mut decoder = FrameDecoder::new();
    let mut decoded = Vec::new();
    let mut reads = 0;
    for _ in 0..stream.len() {
        let count = decoder.read_from(&mut reader).unwrap();
        if count == 0 {
            break;
        }
        reads += 1;
        drain(&mut decoder, &mut decoded);
        assert_eq!(
            decoder.capacity(),
            DECODER_BUFFER_SIZE_MIN,
            "small frames never grow the buffer"
        );
    }
    assert_decoded(&decoded, &messages);
    // 2000 frames of 53 bytes is about 106 KB: two reads of a 64 KiB buffer
    // (the second after moving the partial frame to the front), then the
    // rest.
    assert!(reads <= 3, "{reads} reads for {} bytes", stream.len());
}

#[test]
fn a_large_frame_grows_the_buffer_to_its_size_then_it_shrinks() {
    let message = Message::Reply(Reply::Value(pattern(VALUE_SIZE_MAX, 3)));
    let mut stream = stream_of(std::slice::from_ref(&message));
    let frame_len = stream.len();
    encode_request(1001, &Request::Ping, &mut stream);
    let mut decoder = FrameDecoder::new();
    let mut decoded = Vec::new();
    let mut fed = 0;
    let mut largest = 0;
    for _ in 0..100 {
        fed += decoder.feed(&stream[fed..]);
        largest = largest.max(decoder.capacity());
        assert!(decoder.capacity() <= FRAME_SIZE_MAX);
        assert!(decoder.buffered_len() <= decoder.capacity());
        drain(&mut decoder, &mut decoded);
        if fed == stream.len() && decoder.buffered_len() == 0 {
            break;
        }
    }
    assert_eq!(
        largest, frame_len,
        "the buffer grows to exactly the frame's size"
    );
    assert_eq!(decoded.len(), 2);
    assert_eq!(decoded[0], (1000, message));
    assert_eq!(decoded[1], (1001, Message::Request(Request::Ping)));
    assert_eq!(
        decoder.capacity(),
        DECODER_BUFFER_SIZE_MIN,
        "memory is given back once the frame is taken"
    );
}

#[test]
fn large_frames_in_a_row_keep_the_buffer_until_a_small_one() {
    let message = Message::Reply(Reply::Value(pattern(VALUE_SIZE_MAX, 5)));
    let one = stream_of(std::slice::from_ref(&message));
    let frame_len = one.len();
    let mut decoder = FrameDecoder::new();
    let mut decoded = Vec::new();
    for round in 0..3 {
        let mut fed = 0;
        while fed < one.len() {
            fed += decoder.feed(&one[fed..]);
            drain(&mut decoder, &mut decoded);
        }
        assert_eq!(decoded.len(), round + 1);
        assert_eq!(decoder.buffered_len(), 0);
        assert_eq!(
            decoder.capacity(),
            frame_len,
            "the buffer is kept for the next large frame"
        );
    }
    let mut ping = Vec::new();
    encode_request(7, &Request::Ping, &mut ping);
    decoder.feed(&ping);
    drain(&mut decoder, &mut decoded);
    assert_eq!(decoded.last(), Some(&(7, Message::Request(Request::Ping))));
    assert_eq!(
        decoder.capacity(),
        DECODER_BUFFER_SIZE_MIN,
        "a small frame gives the memory back"
    );
}

#[test]
fn the_largest_allowed_frame_fits_exactly() {
    // A body of FRAME_BODY_SIZE_MAX bytes with a good crc: no message is
    // that long, so the decoder reports trailing bytes, but only after
    // holding the whole frame within the bound.
    let body = vec![0u8; FRAME_BODY_SIZE_MAX];
    let raw = RawHeader {
        magic: MAGIC,
        version: VERSION,
        kind: kind::PING,
        flags: 0,
        body_len: FRAME_BODY_SIZE_MAX as u32,
        request_id: 3,
        body_crc: crc32fast::hash(&body),
    };
    let mut stream = [0u8; HEADER_SIZE].to_vec();
    raw.to_bytes((&mut stream[..]).try_into().unwrap());
    stream.extend_from_slice(&body);
    stream.extend_from_slice(b"and more bytes behind it");
    let mut decoder = FrameDecoder::new();
    let mut fed = 0;
    let mut result = Ok(None);
    let mut largest = 0;
    for _ in 0..100 {
        fed += decoder.feed(&stream[fed..]);
        largest = largest.max(decoder.capacity());
        assert!(decoder.capacity() <= FRAME_SIZE_MAX);
        result = decoder.next_frame();
        if !matches!(result, Ok(None)) {
            break;
        }
    }
    assert_eq!(largest, FRAME_SIZE_MAX);
    match result {
        Err(FrameError::BadBody { request_id, error }) => {
            assert_eq!(request_id, 3);
            assert_eq!(
                error.problem,
                DecodeProblem::TrailingBytes(FRAME_BODY_SIZE_MAX)
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_decoder_stops_at_its_first_error() {
    let mut stream = Vec::new();
    encode_request(1, &Request::Ping, &mut stream);
    let bad_at = stream.len();
    encode_request(
        2,
        &Request::CreateTable {
            name: b"x".to_vec(),
        },
        &mut stream,
    );
    encode_request(3, &Request::Ping, &mut stream);
    stream[bad_at + HEADER_SIZE] ^= 1; // corrupt the second frame's body
    let mut decoder = FrameDecoder::new();
    decoder.feed(&stream);
    assert_eq!(
        decoder.next_frame(),
        Ok(Some((1, Message::Request(Request::Ping))))
    );
    assert_eq!(
        decoder.next_frame(),
        Err(FrameError::BadCrc { request_id: 2 })
    );
    assert_eq!(
        decoder.failed(),
        Some(&FrameError::BadCrc { request_id: 2 })
    );
    // The third frame is intact, but the stream is not trusted any more.
    assert_eq!(
        decoder.next_frame(),
        Err(FrameError::BadCrc { request_id: 2 })
    );
}

/// A reader that hands out a script of results, like a non-blocking socket.
struct Scripted {
    steps: Vec<io::Result<Vec<u8>>>,
}

impl Read for Scripted {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.steps.is_empty() {
            return Ok(0);
        }
        match self.steps.remove(0) {
            Ok(bytes) => {
                assert!(
                    bytes.len() <= buf.len(),
                    "the script gives more than the decoder has room for"
                );
                buf[..bytes.len()].copy_from_slice(&bytes);
                Ok(bytes.len())
            }
            Err(e) => Err(e),
        }
    }
}

#[test]
fn read_from_passes_socket_results_through() {
    let mut frame = Vec::new();
    encode_request(9, &Request::Stats, &mut frame);
    let mut reader = Scripted {
        steps: vec![
            Ok(frame[..10].to_vec()),
            Err(io::ErrorKind::WouldBlock.into()),
            Err(io::ErrorKind::Interrupted.into()),
            Ok(frame[10..].to_vec()),
        ],
    };
    let mut decoder = FrameDecoder::new();
    assert_eq!(
        decoder.capacity(),
        0,
        "nothing is allocated before the first read"
    );
    assert_eq!(decoder.read_from(&mut reader).unwrap(), 10);
    assert_eq!(decoder.next_frame(), Ok(None));
    assert_eq!(
        decoder.read_from(&mut reader).unwrap_err().kind(),
        io::ErrorKind::WouldBlock
    );
    assert_eq!(
        decoder.read_from(&mut reader).unwrap_err().kind(),
        io::ErrorKind::Interrupted
    );
    assert_eq!(decoder.read_from(&mut reader).unwrap(), frame.len() - 10);
    assert_eq!(
        decoder.next_frame(),
        Ok(Some((9, Message::Request(Request::Stats))))
    );
    assert_eq!(decoder.read_from(&mut reader).unwrap(), 0, "end of stream");
}

#[test]
fn reading_into_a_full_buffer_is_an_error_not_end_of_stream() {
    // Fill the buffer with whole frames without taking them.
    let mut stream = Vec::new();
    while stream.len() < 2 * DECODER_BUFFER_SIZE_MIN {
        encode_request(1, &Request::Ping, &mut stream);
    }
    let mut decoder = FrameDecoder::new();
    let mut reader = io::Cursor::new(stream);
    assert_eq!(
        decoder.read_from(&mut reader).unwrap(),
        DECODER_BUFFER_SIZE_MIN
    );
    let error = decoder.read_from(&mut reader).unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::Other);
    assert!(error.to_string().contains("call next_frame"), "{error}");
    assert_eq!(decoder.feed(b"more"), 0);
    // Taking one frame makes room again.
    assert!(decoder.next_frame().unwrap().is_some());
    assert_eq!(decoder.read_from(&mut reader).unwrap(), HEADER_SIZE);
}

#[test]
fn a_read_says_whether_it_filled_the_room_it_had() {
    let bytes = vec![0u8; DECODER_BUFFER_SIZE_MIN + 100];
    let mut reader = io::Cursor::new(bytes);
    let mut decoder = FrameDecoder::new();
    // The first read fills the whole buffer: more may be waiting.
    assert_eq!(
        decoder.read_from(&mut reader).unwrap(),
        DECODER_BUFFER_SIZE_MIN
    );
    assert!(!decoder.last_read_was_short());
    let mut small = io::Cursor::new(vec![1u8; 10]);
    let mut fresh = FrameDecoder::new();
    assert_eq!(fresh.read_from(&mut small).unwrap(), 10);
    assert!(fresh.last_read_was_short(), "10 bytes with room for more");
}

/// Copy chunks and index parts come out of the lending decoder with their
/// bytes still in its buffer, equal to what the owning decoder gives,
/// between other frames and across reads cut anywhere; a chunk whose byte
/// string claims more than the body holds is refused the same way.
#[test]
fn copy_chunks_are_lent_from_the_buffer() {
    use wire::{CopyChunkRef, Digest, Frame};
    let chunk = |offset: u64, seed: u8, end| {
        Message::Request(Request::CopyChunk {
            partition: PartitionId(4),
            offset,
            bytes: pattern(200_000 + seed as usize, seed),
            end,
        })
    };
    let messages = vec![
        Message::Request(Request::CopyIndex {
            partition: PartitionId(4),
            end: 1 << 20,
            slots: 4096,
            bits: 40,
            first: 0,
            bytes: pattern(4096 * 8, 9),
        }),
        chunk(64, 1, None),
        Message::Request(Request::Ping),
        chunk(200_065, 2, None),
        chunk(
            400_067,
            3,
            Some(Digest {
                sum: 0xfeed,
                keys: 9,
            }),
        ),
    ];
    let stream = stream_of(&messages);
    for cut in [1, 4096, 70_000, stream.len()] {
        let mut decoder = FrameDecoder::new();
        let mut got = Vec::new();
        let mut fed = 0;
        while fed < stream.len() {
            let upto = (fed + cut).min(stream.len());
            fed += decoder.feed(&stream[fed..upto]);
            while let Some((request_id, frame)) = decoder.next_frame_lending().unwrap() {
                let message = match frame {
                    Frame::CopyChunk(lent) => {
                        let Message::Request(owned) = &messages[(request_id - 1000) as usize]
                        else {
                            unreachable!()
                        };
                        assert_eq!(&lent.to_request(), owned, "cut {cut}");
                        lent.to_request()
                    }
                    Frame::CopyIndex(lent) => lent.to_request(),
                    Frame::Message(Message::Request(Request::CopyChunk { .. })) => {
                        panic!("a chunk was copied out")
                    }
                    Frame::Message(Message::Request(Request::CopyIndex { .. })) => {
                        panic!("an index part was copied out")
                    }
                    Frame::Message(Message::Request(r)) => r,
                    Frame::Message(Message::Reply(r)) => panic!("{r:?}"),
                };
                got.push((request_id, Message::Request(message)));
            }
        }
        let expected: Vec<(u64, Message)> = (1000..).zip(messages.iter().cloned()).collect();
        assert_eq!(got, expected, "cut {cut}");
    }
    // The body of a chunk whose byte string runs past its end.
    let mut body = Vec::new();
    body.extend_from_slice(&4u64.to_le_bytes());
    body.extend_from_slice(&64u64.to_le_bytes());
    body.extend_from_slice(&1000u32.to_le_bytes());
    body.extend_from_slice(&[7; 10]);
    body.push(0);
    let error = CopyChunkRef::decode(&body).unwrap_err();
    assert_eq!(error, Message::decode(kind::COPY_CHUNK, &body).unwrap_err());
    assert_eq!(
        error.problem,
        DecodeProblem::LengthPastEnd {
            length: 1000,
            remaining: 11
        }
    );
}
