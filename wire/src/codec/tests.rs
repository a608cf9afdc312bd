//! Checks of the decoder's private bookkeeping; the public behaviour is
//! tested in `wire/tests/`.

use super::*;
use crate::message::{TxId, Write};
use maps::{BrickId, PartitionId};

fn frames(count: usize) -> (Vec<u8>, Vec<Request>) {
    let mut out = Vec::new();
    let mut requests = Vec::new();
    for i in 0..count {
        // Sizes vary from a header alone to a few kilobytes, so frames end
        // at every offset of the buffer.
        let request = match i % 3 {
            0 => Request::Ping,
            1 => Request::Prepare {
                txid: TxId(i as u64),
                partition: PartitionId(1),
                fingerprint: 2,
                table: b"t".to_vec(),
                key: vec![b'k'; i % 97],
                write: Write::Put(vec![b'v'; (i * 37) % 4000]),
                participants: vec![BrickId(1)],
                decide: i % 2 == 0,
            },
            _ => Request::CreateTable {
                name: vec![b'n'; i % 200],
            },
        };
        encode_request(i as u64, &request, &mut out);
        requests.push(request);
    }
    (out, requests)
}

#[test]
fn compaction_copies_at_most_the_bytes_received() {
    let (stream, requests) = frames(3000);
    let mut decoder = FrameDecoder::new();
    let mut pos = 0;
    let mut decoded = 0;
    // Chunk sizes cycle through awkward values, as a socket's would.
    let chunks = [1usize, 7, 24, 500, 4096, 65_536, 13, 30_000];
    for step in 0..stream.len() {
        if pos == stream.len() {
            break;
        }
        let end = (pos + chunks[step % chunks.len()]).min(stream.len());
        pos += decoder.feed(&stream[pos..end]);
        while let Some((id, message)) = decoder.next_frame().unwrap() {
            assert_eq!(message, Message::Request(requests[id as usize].clone()));
            assert_eq!(id as usize, decoded);
            decoded += 1;
        }
        assert!(decoder.buf.len() <= FRAME_SIZE_MAX);
        assert_eq!(decoder.buf.capacity(), decoder.buf.len());
        assert!(decoder.start <= decoder.end && decoder.end <= decoder.buf.len());
    }
    assert_eq!(decoded, requests.len());
    assert!(
        decoder.compacted_bytes > 0,
        "the chunks were chosen so that compaction happens"
    );
    assert!(
        decoder.compacted_bytes <= stream.len() as u64,
        "compaction copied {} bytes for a stream of {}",
        decoder.compacted_bytes,
        stream.len()
    );
}

#[test]
fn unread_tail_is_moved_only_when_room_runs_low() {
    let mut decoder = FrameDecoder::new();
    let mut stream = Vec::new();
    encode_request(1, &Request::Ping, &mut stream);
    encode_request(
        2,
        &Request::CreateTable {
            name: b"abc".to_vec(),
        },
        &mut stream,
    );
    // The first frame and half of the second.
    let cut = HEADER_SIZE + 10;
    decoder.feed(&stream[..cut]);
    assert!(decoder.next_frame().unwrap().is_some());
    assert_eq!(decoder.next_frame().unwrap(), None);
    assert_eq!(decoder.start, HEADER_SIZE);
    // Plenty of room is left after the tail, so it stays where it is.
    decoder.feed(&stream[cut..cut + 1]);
    assert_eq!(decoder.start, HEADER_SIZE);
    assert_eq!(decoder.compacted_bytes, 0);
    decoder.feed(&stream[cut + 1..]);
    assert_eq!(
        decoder.next_frame().unwrap(),
        Some((
            2,
            Message::Request(Request::CreateTable {
                name: b"abc".to_vec()
            })
        ))
    );
    // Empty again: the offsets reset without copying, at the next call (the
    // frame's bytes stay in place until then, for a lent chunk).
    assert_eq!(decoder.next_frame().unwrap(), None);
    assert_eq!((decoder.start, decoder.end), (0, 0));
    assert_eq!(decoder.compacted_bytes, 0);
}
