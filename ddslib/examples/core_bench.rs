//! Micro-benchmark of the library's own work per operation, without the
//! network: the sans-IO coordinator ([`ddslib::Core`]) runs N writes (or
//! reads) of 16-byte keys and 150-byte values with K in flight against
//! bricks that answer at once. Each request is encoded into a frame as the
//! driver encodes it, each answer is encoded into a frame and decoded again
//! before the coordinator takes it, and every operation is built as a
//! service builds it (its table, key and value copied into it). What is left
//! out is only the system calls and the waiting.
//!
//! ```text
//! cargo run --release -p ddslib --example core_bench -- [write|read] [ops] [in_flight]
//! ```
//!
//! Run it under `valgrind --tool=callgrind` for instruction counts that do
//! not drift from run to run: the printed figure divides them by the
//! operations done.

use std::time::Instant;

use ddslib::core::TransmitRef;
use ddslib::{CoreConfig, Op, Output};
use maps::config::ClusterConfig;
use wire::codec::{encode_reply, FrameDecoder};
use wire::{Message, Reply, Request, TxState};

const KEY_BYTES: usize = 16;
const VALUE_BYTES: usize = 150;
const KEYS: u64 = 100_000;
const TABLE: &str = "bench";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let write = match args.first().map(String::as_str) {
        None | Some("write") => true,
        Some("read") => false,
        Some(other) => {
            eprintln!("core_bench: the mix is write or read, not {other}");
            std::process::exit(64);
        }
    };
    let ops: u64 = args
        .get(1)
        .map_or(200_000, |s| s.parse().expect("ops is a number"));
    let in_flight: u64 = args
        .get(2)
        .map_or(100, |s| s.parse().expect("in_flight is a number"));

    let maps = ClusterConfig::for_simulation(3, 2, 64).initial_maps();
    let mut core = ddslib::core::Core::new(CoreConfig::default(), maps);
    let value = vec![7u8; VALUE_BYTES];
    let now = Instant::now();
    let started = Instant::now();
    let (mut submitted, mut done, mut frame_bytes) = (0u64, 0u64, 0u64);
    let mut out = Vec::new();
    let mut replies = Vec::new();
    let mut decoder = FrameDecoder::new();
    while done < ops {
        while submitted < ops && submitted - done < in_flight {
            let key = key_bytes(submitted % KEYS).to_vec();
            let op = if write {
                Op::Put {
                    table: TABLE.as_bytes().to_vec(),
                    key,
                    value: value.to_vec(),
                }
            } else {
                Op::Get {
                    table: TABLE.as_bytes().to_vec(),
                    key,
                }
            };
            core.submit(now, op);
            submitted += 1;
        }
        // Every request as the driver sends it, answered as a brick that
        // holds every key and takes every write answers it.
        while let Some(sent) = core.poll_transmit_with(|brick, request_id, request| {
            out.clear();
            request.encode(request_id, &mut out);
            let reply = match request {
                TransmitRef::Prepare(p) if p.decide => Reply::TxState(TxState::Committed),
                TransmitRef::Prepare(_) => Reply::Voted,
                TransmitRef::Request(Request::Commit { .. }) => Reply::TxState(TxState::Committed),
                TransmitRef::Request(Request::Get { .. }) => Reply::Value(value.clone()),
                TransmitRef::Request(other) => panic!("unexpected request {other:?}"),
            };
            (brick, request_id, reply, out.len())
        }) {
            if let Some((brick, request_id, reply, len)) = sent {
                frame_bytes += len as u64;
                replies.push((brick, request_id, reply));
            }
        }
        for (brick, request_id, reply) in replies.drain(..) {
            out.clear();
            encode_reply(request_id, &reply, &mut out);
            decoder.feed(&out);
            match decoder.next_frame() {
                Ok(Some((id, Message::Reply(reply)))) => core.handle_reply(now, brick, id, reply),
                other => panic!("a reply frame decodes to a reply, not {other:?}"),
            }
        }
        while let Some((_, result)) = core.poll_completion() {
            match result {
                Ok(Output::Done) | Ok(Output::Value(Some(_))) => done += 1,
                other => panic!("an operation failed: {other:?}"),
            }
        }
    }
    let elapsed = started.elapsed();
    println!(
        "{} {ops} operations, {in_flight} in flight: {:.0} ns each, {:.0} request bytes each",
        if write { "writes" } else { "reads" },
        elapsed.as_nanos() as f64 / ops as f64,
        frame_bytes as f64 / ops as f64,
    );
}

/// Key `i` as 16 decimal digits, zero-padded.
fn key_bytes(mut i: u64) -> [u8; KEY_BYTES] {
    let mut key = [b'0'; KEY_BYTES];
    for digit in key.iter_mut().rev() {
        *digit = b'0' + (i % 10) as u8;
        i /= 10;
    }
    key
}
