//! libFuzzer target: the input is a byte stream from a peer. The first byte
//! picks how the rest is cut into reads; the stream goes through a
//! `FrameDecoder` and, separately, straight into `Message::decode` with the
//! first byte as the kind. Nothing may panic, the decoder must stay within
//! its bound, and every accepted frame must re-encode to exactly the bytes
//! it was decoded from (the encoding is canonical).

#![no_main]

use libfuzzer_sys::fuzz_target;
use wire::codec::{encode_frame, FrameDecoder, FRAME_SIZE_MAX};
use wire::Message;

fuzz_target!(|data: &[u8]| {
    let Some((&first, stream)) = data.split_first() else {
        return;
    };

    // The body decoder on its own.
    if let Ok(message) = Message::decode(first, stream) {
        assert!(
            message.check_limits().is_ok(),
            "accepted a message over a limit"
        );
        let mut body = Vec::new();
        message.encode_body(&mut body);
        assert_eq!(body, stream, "an accepted body has a second encoding");
    }

    // The stream, in reads of a size chosen by the first byte.
    let piece = usize::from(first % 64) + 1;
    let mut decoder = FrameDecoder::new();
    let mut pos = 0;
    // Where the next decoded frame starts in `stream`.
    let mut frame_at = 0;
    for _ in 0..=stream.len() {
        let end = (pos + piece).min(stream.len());
        pos += decoder.feed(&stream[pos..end]);
        assert!(decoder.capacity() <= FRAME_SIZE_MAX);
        assert!(decoder.buffered_len() <= decoder.capacity());
        loop {
            match decoder.next_frame() {
                Ok(Some((request_id, message))) => {
                    let mut again = Vec::new();
                    encode_frame(request_id, &message, &mut again);
                    assert_eq!(
                        &stream[frame_at..frame_at + again.len()],
                        &again[..],
                        "an accepted frame has a second encoding"
                    );
                    frame_at += again.len();
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
        if pos == stream.len() {
            return;
        }
    }
    panic!("the decoder stopped taking bytes");
});
