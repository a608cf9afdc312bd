//! The Redis target: GET and SET over RESP2 on plain TCP, pipelined, so that
//! DDS and Redis are measured with the same load shape on the same machine.
//!
//! Each service owns one connection. Requests a service submits are encoded
//! into one buffer and written with one call at the next `poll`; Redis
//! answers a connection's requests in order, so replies are matched to tags
//! by a FIFO of the requests in flight. Keys are the same 8 big-endian bytes
//! the DDS target uses. Encoding and parsing are in `resp.rs`.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::driver::{Completion, Op, Outcome, Service, Target};
use crate::error::BenchError;
use crate::keys::key_bytes;
use crate::limits::{CONNECT_TIMEOUT, READ_CHUNK_SIZE, RESP_BUFFER_SIZE_MAX, STALL_TIMEOUT};
use crate::resp::{self, Reply};

/// A Redis server at one address.
pub struct RedisTarget {
    pub address: SocketAddr,
}

impl RedisTarget {
    pub fn new(address: SocketAddr) -> RedisTarget {
        RedisTarget { address }
    }
}

impl Target for RedisTarget {
    fn name(&self) -> &str {
        "redis"
    }

    fn connect(&self) -> Result<Box<dyn Service>, BenchError> {
        Ok(Box::new(RedisService::connect(self.address)?))
    }

    /// `used_memory` from `INFO memory`, on a connection of its own.
    fn used_memory_bytes(&self) -> Result<Option<u64>, BenchError> {
        let mut connection = RedisService::connect(self.address)?;
        let reply = connection.call(&[b"INFO", b"memory"], CONNECT_TIMEOUT)?;
        match reply {
            Reply::Bulk(Some(text)) => Ok(used_memory_from_info(&text)),
            other => Err(BenchError::Protocol {
                address: self.address,
                problem: format!("INFO answered {}", describe(&other)),
            }),
        }
    }
}

/// A request in flight: the tag to complete and whether it was a GET.
struct Pending {
    tag: u64,
    get: bool,
}

/// One pipelined connection to Redis.
pub struct RedisService {
    stream: TcpStream,
    address: SocketAddr,
    /// Requests encoded by `submit` and not yet written.
    out: Vec<u8>,
    /// Requests written, oldest first; replies come back in this order.
    pending: VecDeque<Pending>,
    /// Bytes read and not yet parsed start at `in_start`.
    input: Vec<u8>,
    in_start: usize,
    /// The read timeout last set on the socket, to skip a system call when
    /// it does not change.
    read_timeout: Option<Duration>,
}

impl RedisService {
    /// Opens a connection with Nagle's algorithm off: a pipeline is written
    /// in one call, so there is nothing to gain by waiting for more.
    pub fn connect(address: SocketAddr) -> Result<RedisService, BenchError> {
        let connect_error = |error| BenchError::Connect { address, error };
        let stream =
            TcpStream::connect_timeout(&address, CONNECT_TIMEOUT).map_err(connect_error)?;
        stream.set_nodelay(true).map_err(connect_error)?;
        // A server that stops reading would otherwise block a write forever.
        stream
            .set_write_timeout(Some(STALL_TIMEOUT))
            .map_err(connect_error)?;
        Ok(RedisService {
            stream,
            address,
            out: Vec::with_capacity(READ_CHUNK_SIZE),
            pending: VecDeque::new(),
            input: Vec::with_capacity(2 * READ_CHUNK_SIZE),
            in_start: 0,
            read_timeout: None,
        })
    }

    /// Sends one command and waits up to `timeout` for its reply. Only for a
    /// connection with nothing else in flight.
    pub fn call(&mut self, args: &[&[u8]], timeout: Duration) -> Result<Reply, BenchError> {
        assert!(
            self.pending.is_empty(),
            "call on a connection with requests in flight"
        );
        resp::encode_command(&mut self.out, args);
        self.flush()?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(reply) = self.next_reply()? {
                return Ok(reply);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(BenchError::Stalled {
                    outstanding: 1,
                    waited: timeout,
                });
            }
            self.read_some(deadline - now)?;
        }
    }

    fn flush(&mut self) -> Result<(), BenchError> {
        if self.out.is_empty() {
            return Ok(());
        }
        self.stream
            .write_all(&self.out)
            .map_err(|error| BenchError::Io {
                address: self.address,
                error,
            })?;
        self.out.clear();
        Ok(())
    }

    /// Parses one reply from the bytes read so far, if a whole one is there.
    fn next_reply(&mut self) -> Result<Option<Reply>, BenchError> {
        match resp::parse(&self.input[self.in_start..]) {
            Ok(Some((reply, used))) => {
                self.in_start += used;
                Ok(Some(reply))
            }
            Ok(None) => Ok(None),
            Err(error) => Err(BenchError::Protocol {
                address: self.address,
                problem: error.to_string(),
            }),
        }
    }

    /// Reads what has arrived, waiting up to `timeout` for the first byte.
    /// Returns without error when the wait times out.
    fn read_some(&mut self, timeout: Duration) -> Result<(), BenchError> {
        // Parsed bytes are dropped before reading more, so the buffer holds
        // at most one incomplete reply plus one chunk.
        if self.in_start > 0 {
            self.input.drain(..self.in_start);
            self.in_start = 0;
        }
        if self.input.len() + READ_CHUNK_SIZE > RESP_BUFFER_SIZE_MAX {
            return Err(BenchError::Protocol {
                address: self.address,
                problem: format!("a reply larger than {RESP_BUFFER_SIZE_MAX} bytes"),
            });
        }
        // A zero timeout means "block forever" to the socket; never ask for it.
        let timeout = Some(timeout.max(Duration::from_millis(1)));
        if self.read_timeout != timeout {
            self.stream
                .set_read_timeout(timeout)
                .map_err(|error| BenchError::Io {
                    address: self.address,
                    error,
                })?;
            self.read_timeout = timeout;
        }
        let filled = self.input.len();
        self.input.resize(filled + READ_CHUNK_SIZE, 0);
        let got = match self.stream.read(&mut self.input[filled..]) {
            Ok(0) => {
                self.input.truncate(filled);
                return Err(BenchError::ConnectionClosed {
                    address: self.address,
                });
            }
            Ok(got) => got,
            Err(e) if is_no_data_yet(&e) => 0,
            Err(error) => {
                self.input.truncate(filled);
                return Err(BenchError::Io {
                    address: self.address,
                    error,
                });
            }
        };
        self.input.truncate(filled + got);
        Ok(())
    }

    /// Turns every whole reply read so far into a completion.
    fn complete_ready(&mut self, out: &mut Vec<Completion>) -> Result<(), BenchError> {
        while !self.pending.is_empty() {
            let Some(reply) = self.next_reply()? else {
                break;
            };
            // The loop condition guarantees a request is waiting.
            let request = self.pending.pop_front().expect("a pending request");
            let outcome = match (request.get, &reply) {
                (true, Reply::Bulk(Some(_))) => Outcome::Ok,
                (true, Reply::Bulk(None)) => Outcome::NotFound,
                (false, Reply::Simple(text)) if text == b"OK" => Outcome::Ok,
                (_, Reply::Error(_)) => Outcome::Error("server_error"),
                _ => Outcome::Error("unexpected_reply"),
            };
            out.push(Completion {
                tag: request.tag,
                outcome,
            });
        }
        if self.pending.is_empty() && self.in_start < self.input.len() {
            return Err(BenchError::Protocol {
                address: self.address,
                problem: "bytes after the last expected reply".to_string(),
            });
        }
        Ok(())
    }
}

impl Service for RedisService {
    fn submit(&mut self, op: Op, tag: u64) -> Result<(), BenchError> {
        match &op {
            Op::Get(key) => resp::encode_command(&mut self.out, &[b"GET", &key_bytes(*key)]),
            Op::Put(key, value) => {
                resp::encode_command(&mut self.out, &[b"SET", &key_bytes(*key), value])
            }
        }
        self.pending.push_back(Pending {
            tag,
            get: matches!(op, Op::Get(_)),
        });
        Ok(())
    }

    fn poll(&mut self, out: &mut Vec<Completion>, timeout: Duration) -> Result<(), BenchError> {
        self.flush()?;
        let before = out.len();
        self.complete_ready(out)?;
        if out.len() > before || self.pending.is_empty() {
            return Ok(());
        }
        let deadline = Instant::now() + timeout;
        // Each pass reads at least one byte or ends at the deadline.
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Ok(());
            }
            self.read_some(deadline - now)?;
            self.complete_ready(out)?;
            if out.len() > before {
                return Ok(());
            }
        }
    }
}

/// True for the errors a read with a timeout gives when nothing arrived in
/// time, or when a signal cut the wait short: both mean "try again".
fn is_no_data_yet(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// The `used_memory:` field of an `INFO` reply.
pub fn used_memory_from_info(text: &[u8]) -> Option<u64> {
    text.split(|&b| b == b'\n').find_map(|line| {
        let value = line.strip_prefix(b"used_memory:")?;
        std::str::from_utf8(value).ok()?.trim().parse().ok()
    })
}

/// A few words on a reply, for error messages.
fn describe(reply: &Reply) -> String {
    match reply {
        Reply::Simple(text) => format!("+{}", String::from_utf8_lossy(text)),
        Reply::Error(text) => format!("-{}", String::from_utf8_lossy(text)),
        Reply::Integer(n) => format!(":{n}"),
        Reply::Bulk(None) => "a null bulk string".to_string(),
        Reply::Bulk(Some(bytes)) => format!("a bulk string of {} bytes", bytes.len()),
        Reply::Array(None) => "a null array".to_string(),
        Reply::Array(Some(items)) => format!("an array of {} elements", items.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::sync::Arc;
    use std::thread;

    #[test]
    fn finds_used_memory_in_info() {
        let info = b"# Memory\r\nused_memory:1065520\r\nused_memory_human:1.02M\r\nused_memory_rss:7000\r\n";
        assert_eq!(used_memory_from_info(info), Some(1_065_520));
        assert_eq!(
            used_memory_from_info(b"# Memory\r\nused_memory_rss:7\r\n"),
            None
        );
        assert_eq!(used_memory_from_info(b"used_memory:lots\r\n"), None);
    }

    /// A fake server that reads a fixed number of bytes and answers with a
    /// fixed script, in one write or split in two.
    fn serve_once(expect_bytes: usize, answers: Vec<Vec<u8>>) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = vec![0u8; expect_bytes];
            stream.read_exact(&mut request).unwrap();
            for answer in answers {
                stream.write_all(&answer).unwrap();
                stream.flush().unwrap();
                thread::sleep(Duration::from_millis(20));
            }
            // Hold the connection open until the client is done with it.
            let _ = stream.read(&mut [0u8; 1]);
        });
        address
    }

    fn poll_until(service: &mut RedisService, count: usize) -> Result<Vec<Completion>, BenchError> {
        let mut out = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while out.len() < count && Instant::now() < deadline {
            service.poll(&mut out, Duration::from_millis(100))?;
        }
        Ok(out)
    }

    #[test]
    fn pipelined_replies_split_across_reads_complete_in_order() {
        let value: Arc<[u8]> = Arc::from(&b"abc"[..]);
        let mut requests = Vec::new();
        resp::encode_command(&mut requests, &[b"SET", &key_bytes(1), b"abc"]);
        resp::encode_command(&mut requests, &[b"GET", &key_bytes(1)]);
        resp::encode_command(&mut requests, &[b"GET", &key_bytes(2)]);
        resp::encode_command(&mut requests, &[b"SET", &key_bytes(3), b"abc"]);
        let address = serve_once(
            requests.len(),
            vec![
                b"+OK\r\n$3\r\nab".to_vec(),
                b"c\r\n$-1\r\n-OOM no memory\r\n".to_vec(),
            ],
        );
        let mut service = RedisService::connect(address).unwrap();
        service.submit(Op::Put(1, Arc::clone(&value)), 10).unwrap();
        service.submit(Op::Get(1), 11).unwrap();
        service.submit(Op::Get(2), 12).unwrap();
        service.submit(Op::Put(3, value), 13).unwrap();
        let got = poll_until(&mut service, 4).unwrap();
        assert_eq!(
            got,
            vec![
                Completion {
                    tag: 10,
                    outcome: Outcome::Ok
                },
                Completion {
                    tag: 11,
                    outcome: Outcome::Ok
                },
                Completion {
                    tag: 12,
                    outcome: Outcome::NotFound
                },
                Completion {
                    tag: 13,
                    outcome: Outcome::Error("server_error")
                },
            ]
        );
    }

    #[test]
    fn a_server_that_is_not_redis_is_a_protocol_error() {
        let mut request = Vec::new();
        resp::encode_command(&mut request, &[b"GET", &key_bytes(7)]);
        let address = serve_once(
            request.len(),
            vec![b"HTTP/1.1 400 Bad Request\r\n\r\n".to_vec()],
        );
        let mut service = RedisService::connect(address).unwrap();
        service.submit(Op::Get(7), 0).unwrap();
        match poll_until(&mut service, 1) {
            Err(BenchError::Protocol { problem, .. }) => {
                assert!(problem.contains("0x48"), "{problem}")
            }
            other => panic!("expected a protocol error, got {other:?}"),
        }
    }

    #[test]
    fn a_closed_connection_is_reported() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let server = thread::spawn(move || drop(listener.accept().unwrap()));
        let mut service = RedisService::connect(address).unwrap();
        server.join().unwrap();
        service.submit(Op::Get(1), 0).unwrap();
        // The write may fail or succeed depending on timing; either way the
        // end of the connection must come out as an error.
        let result = poll_until(&mut service, 1);
        assert!(
            matches!(
                result,
                Err(BenchError::ConnectionClosed { .. }) | Err(BenchError::Io { .. })
            ),
            "{result:?}"
        );
    }

    #[test]
    fn nobody_listening_is_a_connect_error() {
        let address = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        match RedisService::connect(address) {
            Err(BenchError::Connect { address: a, .. }) => assert_eq!(a, address),
            Err(other) => panic!("expected a connect error, got {other}"),
            Ok(_) => panic!("connected to a closed port"),
        }
    }
}
