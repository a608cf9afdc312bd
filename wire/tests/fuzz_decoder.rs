//! A seeded fuzz test of the decoder that runs on the stable toolchain in
//! every `cargo test`. It feeds [`FrameDecoder`] and [`Message::decode`]
//! random bytes, streams of valid frames, and streams where one frame has
//! been mutated (bit flips, truncation, rewritten length fields, inserted
//! bytes, another kind), cut into random pieces. It checks that nothing
//! panics, that the decoder's buffer stays within its bound, that every
//! valid frame decodes to the message that was encoded, and that anything
//! accepted is within the limits and re-encodes to the same bytes.
//!
//! `SEED=<u64>` replays a run; `FUZZ_FRAMES=<n>` sets how many frames are
//! generated (default 100,000). For long runs with coverage guidance see
//! `wire/fuzz/`.

mod common;

use std::env;

use common::random_message;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use wire::codec::{encode_frame, FrameDecoder, FRAME_SIZE_MAX};
use wire::header::{RawHeader, MAGIC, VERSION};
use wire::{kind_name, FrameError, Message, HEADER_SIZE};

const FRAMES_DEFAULT: u64 = 100_000;

/// Most frames in one generated stream.
const STREAM_FRAMES_MAX: usize = 12;

#[derive(Default)]
struct Counts {
    frames: u64,
    decoded: u64,
    rejected: u64,
}

fn env_u64(name: &str) -> Option<u64> {
    let text = env::var(name).ok()?;
    Some(
        text.parse()
            .unwrap_or_else(|_| panic!("{name} must be an unsigned integer, got {text:?}")),
    )
}

fn random_kind<R: Rng>(rng: &mut R) -> u8 {
    // Mostly kinds that exist, so the body decoder is reached.
    let known: Vec<u8> = (0..=255u8).filter(|k| kind_name(*k).is_some()).collect();
    if rng.random_bool(0.9) {
        known[rng.random_range(0..known.len())]
    } else {
        rng.random()
    }
}

fn assert_bounded(decoder: &FrameDecoder) {
    assert!(
        decoder.capacity() <= FRAME_SIZE_MAX,
        "decoder holds {} bytes",
        decoder.capacity()
    );
    assert!(decoder.buffered_len() <= decoder.capacity());
}

/// Whatever the decoder accepts must be within the limits and encode back
/// to a body that decodes to the same message.
fn assert_accepted_is_sound(message: &Message) {
    if let Err(e) = message.check_limits() {
        panic!("decoder accepted a message over a limit: {e}");
    }
    let mut body = Vec::new();
    message.encode_body(&mut body);
    assert_eq!(body.len(), message.body_len());
    match Message::decode(message.kind(), &body) {
        Ok(again) => assert!(again == *message, "re-encoded message decodes differently"),
        Err(e) => panic!("re-encoded message does not decode: {e}"),
    }
}

/// Feeds `stream` to a fresh decoder in random pieces and collects what
/// comes out until the stream ends or the decoder stops with an error.
fn decode_stream<R: Rng>(rng: &mut R, stream: &[u8]) -> (Vec<(u64, Message)>, Option<FrameError>) {
    let mut decoder = FrameDecoder::new();
    let mut frames = Vec::new();
    let mut pos = 0;
    // Each pass feeds at least one byte: after `next_frame` returns
    // `Ok(None)` the decoder always has room.
    for _ in 0..=stream.len() {
        let piece = match rng.random_range(0..4) {
            0 => rng.random_range(1..=HEADER_SIZE),
            1 => rng.random_range(1..=4096),
            _ => stream.len() - pos,
        };
        let end = (pos + piece).min(stream.len());
        pos += decoder.feed(&stream[pos..end]);
        assert_bounded(&decoder);
        // A buffer holds at most FRAME_SIZE_MAX / HEADER_SIZE frames.
        for _ in 0..=FRAME_SIZE_MAX / HEADER_SIZE {
            match decoder.next_frame() {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(e) => {
                    assert_eq!(decoder.next_frame().unwrap_err(), e, "errors stick");
                    return (frames, Some(e));
                }
            }
        }
        if pos == stream.len() {
            return (frames, None);
        }
    }
    panic!(
        "the decoder stopped taking bytes at {pos} of {}",
        stream.len()
    );
}

fn count_result(counts: &mut Counts, frames: &[(u64, Message)], error: &Option<FrameError>) {
    counts.decoded += frames.len() as u64;
    if error.is_some() {
        counts.rejected += 1;
    }
}

/// Random bytes, sometimes behind a plausible header so that the length,
/// crc and body checks are reached, not only the magic.
fn random_bytes_case<R: Rng>(rng: &mut R, counts: &mut Counts) {
    let body_len = rng.random_range(0..512);
    let mut body = vec![0u8; body_len];
    rng.fill(&mut body[..]);
    let kind = random_kind(rng);
    let mut stream = Vec::new();
    if rng.random_bool(0.7) {
        let raw = RawHeader {
            magic: MAGIC,
            version: VERSION,
            kind,
            flags: 0,
            body_len: if rng.random_bool(0.8) {
                body_len as u32
            } else {
                rng.random()
            },
            request_id: rng.random(),
            body_crc: if rng.random_bool(0.8) {
                crc32fast::hash(&body)
            } else {
                rng.random()
            },
        };
        let mut header = [0u8; HEADER_SIZE];
        raw.to_bytes(&mut header);
        stream.extend_from_slice(&header);
    }
    stream.extend_from_slice(&body);
    let (frames, error) = decode_stream(rng, &stream);
    for (_, message) in &frames {
        assert_accepted_is_sound(message);
    }
    count_result(counts, &frames, &error);
    if let Ok(message) = Message::decode(kind, &body) {
        assert_accepted_is_sound(&message);
        let mut again = Vec::new();
        message.encode_body(&mut again);
        assert!(again == body, "an accepted body has a second encoding");
    }
    counts.frames += 1;
}

/// A stream of valid frames: all of them decode, in order, unchanged.
fn valid_stream_case<R: Rng>(rng: &mut R, counts: &mut Counts) {
    let messages: Vec<Message> = (0..rng.random_range(1..=STREAM_FRAMES_MAX))
        .map(|_| random_message(rng))
        .collect();
    let mut stream = Vec::new();
    let first_id: u64 = rng.random();
    for (i, message) in messages.iter().enumerate() {
        encode_frame(first_id.wrapping_add(i as u64), message, &mut stream);
    }
    let (frames, error) = decode_stream(rng, &stream);
    if let Some(e) = error {
        panic!("a valid stream was refused: {e}");
    }
    assert_eq!(frames.len(), messages.len());
    for (i, ((id, got), want)) in frames.iter().zip(&messages).enumerate() {
        assert_eq!(*id, first_id.wrapping_add(i as u64));
        assert!(got == want, "frame {i} decoded to something else");
    }
    count_result(counts, &frames, &None);
    counts.frames += messages.len() as u64;
}

/// What was done to a frame.
struct Mutation {
    bytes: Vec<u8>,
    /// The header's body length still equals the body's real length, so a
    /// decoder that accepts the frame stays in step with the stream.
    aligned: bool,
}

/// Applies one random mutation to an encoded frame. Half the time the crc
/// is recomputed afterwards so that the body decoder, not just the crc
/// check, sees the damage.
fn mutate<R: Rng>(rng: &mut R, frame: &[u8]) -> Mutation {
    let mut bytes = frame.to_vec();
    let mut body_len_fixed = true;
    match rng.random_range(0..6) {
        0 => {
            for _ in 0..rng.random_range(1..=4) {
                let at = rng.random_range(0..bytes.len());
                bytes[at] ^= 1 << rng.random_range(0..8);
            }
        }
        1 => {
            let len = rng.random_range(0..bytes.len());
            bytes.truncate(len);
        }
        2 => {
            // Rewrite the header's body length.
            let body_len = frame.len() - HEADER_SIZE;
            let value: u32 = match rng.random_range(0..4) {
                0 => u32::MAX,
                1 => rng.random(),
                _ => (body_len as i64 + rng.random_range(-8..=8i64)).max(0) as u32,
            };
            bytes[8..12].copy_from_slice(&value.to_le_bytes());
            body_len_fixed = false;
        }
        3 => {
            // Rewrite four bytes of the body, where inner lengths and counts
            // live, with a value that is likely to be a lie.
            if bytes.len() >= HEADER_SIZE + 4 {
                let at = rng.random_range(HEADER_SIZE..=bytes.len() - 4);
                let value: u32 = match rng.random_range(0..4) {
                    0 => u32::MAX,
                    1 => rng.random_range(0..2048),
                    2 => rng.random(),
                    _ => u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()).wrapping_add(1),
                };
                bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
            }
        }
        4 => {
            let at = rng.random_range(0..=bytes.len());
            let count = rng.random_range(1..=8);
            let inserted: Vec<u8> = (0..count).map(|_| rng.random()).collect();
            bytes.splice(at..at, inserted);
        }
        _ => {
            // Another kind: the body is read as a different message.
            bytes[5] = random_kind(rng);
        }
    }
    if bytes.len() >= HEADER_SIZE && rng.random_bool(0.5) {
        let body_len = bytes.len() - HEADER_SIZE;
        if body_len_fixed {
            bytes[8..12].copy_from_slice(&(body_len as u32).to_le_bytes());
        }
        let crc = crc32fast::hash(&bytes[HEADER_SIZE..]);
        bytes[20..24].copy_from_slice(&crc.to_le_bytes());
    }
    let aligned = bytes.len() >= HEADER_SIZE
        && u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize
            == bytes.len() - HEADER_SIZE;
    Mutation { bytes, aligned }
}

/// Valid frames with one mutated among them. The frames before it decode
/// unchanged; the mutated one is refused or, if accepted, is sound; and if
/// it left the stream in step, the frames after it decode unchanged too.
fn mutated_stream_case<R: Rng>(rng: &mut R, counts: &mut Counts) {
    let count = rng.random_range(1..=STREAM_FRAMES_MAX);
    let messages: Vec<Message> = (0..count).map(|_| random_message(rng)).collect();
    let victim = rng.random_range(0..count);
    let mut stream = Vec::new();
    let mut mutation = None;
    for (i, message) in messages.iter().enumerate() {
        let mut frame = Vec::new();
        encode_frame(i as u64, message, &mut frame);
        if i == victim {
            let m = mutate(rng, &frame);
            // Check the mutated body on its own too.
            if m.bytes.len() >= HEADER_SIZE {
                let body = &m.bytes[HEADER_SIZE..];
                if let Ok(decoded) = Message::decode(m.bytes[5], body) {
                    assert_accepted_is_sound(&decoded);
                }
            }
            stream.extend_from_slice(&m.bytes);
            mutation = Some((m.bytes == frame, m.aligned));
        } else {
            stream.extend_from_slice(&frame);
        }
    }
    let (unchanged, aligned) = mutation.expect("one frame was mutated");
    let (frames, error) = decode_stream(rng, &stream);
    count_result(counts, &frames, &error);
    counts.frames += count as u64;

    assert!(
        frames.len() >= victim,
        "{} of the {victim} valid frames before the mutated one came out; error: {error:?}",
        frames.len()
    );
    for (i, (id, got)) in frames.iter().enumerate().take(victim) {
        assert_eq!(*id, i as u64);
        assert!(
            *got == messages[i],
            "frame {i}, before the mutated one, decoded to something else"
        );
    }
    if frames.len() == victim {
        // The mutated frame was refused, or is still waiting for bytes that
        // will not come; either way nothing after it came out.
        return;
    }
    // The mutated frame, or what the decoder made of the bytes there, was
    // accepted.
    for (_, message) in &frames[victim..] {
        assert_accepted_is_sound(message);
    }
    if unchanged {
        assert!(frames[victim].1 == messages[victim]);
    }
    if aligned {
        for (i, (id, got)) in frames.iter().enumerate().skip(victim + 1) {
            assert_eq!(*id, i as u64);
            assert!(
                *got == messages[i],
                "frame {i}, after an accepted mutation in step, changed"
            );
        }
        assert!(
            error.is_none(),
            "frames in step after an accepted mutation were refused: {error:?}"
        );
        assert_eq!(frames.len(), count);
    }
}

#[test]
fn fuzz_decoder() {
    let seed = env_u64("SEED").unwrap_or_else(rand::random);
    let frames_total = env_u64("FUZZ_FRAMES").unwrap_or(FRAMES_DEFAULT);
    // Printed first, so that a failure shows how to replay it.
    println!("fuzz_decoder: seed {seed} (replay with SEED={seed} FUZZ_FRAMES={frames_total})");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut counts = Counts::default();
    // Every case produces at least one frame, so this bounds the loop.
    for _ in 0..frames_total {
        if counts.frames >= frames_total {
            break;
        }
        match rng.random_range(0..10) {
            0 => random_bytes_case(&mut rng, &mut counts),
            1..=3 => valid_stream_case(&mut rng, &mut counts),
            _ => mutated_stream_case(&mut rng, &mut counts),
        }
    }
    println!(
        "fuzz_decoder: {} frames, seed {seed}, {} decoded, {} rejected",
        counts.frames, counts.decoded, counts.rejected
    );
    if frames_total >= 1000 {
        // A run where nothing was refused, or nothing got through, tested
        // less than it claims.
        assert!(counts.rejected > 0 && counts.decoded > 0);
    }
}
