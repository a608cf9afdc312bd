//! A blocking protocol client for brick integration tests: frames requests
//! with the `wire` crate over a std TcpStream and matches replies by id.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use maps::{BrickId, Maps, PartitionId};
use wire::codec::{encode_request, FrameDecoder};
use wire::{Message, Reply, Request, TxId, TxState, Write as WireWrite};

pub struct RawClient {
    pub stream: TcpStream,
    decoder: FrameDecoder,
    next_id: u64,
    stash: HashMap<u64, Reply>,
}

impl RawClient {
    pub fn connect(addr: SocketAddr) -> RawClient {
        let stream =
            TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect to brick");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.set_nodelay(true).unwrap();
        RawClient {
            stream,
            decoder: FrameDecoder::new(),
            next_id: 1,
            stash: HashMap::new(),
        }
    }

    /// Sends a request without waiting; returns its id.
    pub fn send(&mut self, request: &Request) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let mut out = Vec::new();
        encode_request(id, request, &mut out);
        self.stream.write_all(&out).expect("write request");
        id
    }

    /// Sends many requests in one write; returns their ids.
    pub fn send_batch(&mut self, requests: &[Request]) -> Vec<u64> {
        let mut out = Vec::new();
        let mut ids = Vec::new();
        for request in requests {
            let id = self.next_id;
            self.next_id += 1;
            encode_request(id, request, &mut out);
            ids.push(id);
        }
        self.stream.write_all(&out).expect("write requests");
        ids
    }

    /// The next reply from the connection, or `None` if it closed.
    pub fn recv_any(&mut self) -> Option<(u64, Reply)> {
        loop {
            match self.decoder.next_frame() {
                Ok(Some((id, Message::Reply(reply)))) => return Some((id, reply)),
                Ok(Some((_, Message::Request(r)))) => panic!("brick sent a request: {r:?}"),
                Ok(None) => {}
                Err(e) => panic!("brick sent a bad frame: {e}"),
            }
            match self.decoder.read_from(&mut self.stream) {
                Ok(0) => return None,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("read from brick: {e}"),
            }
        }
    }

    /// Waits for the reply to request `id`.
    pub fn recv(&mut self, id: u64) -> Reply {
        if let Some(reply) = self.stash.remove(&id) {
            return reply;
        }
        loop {
            let (got, reply) = self
                .recv_any()
                .expect("connection closed while waiting for a reply");
            if got == id {
                return reply;
            }
            self.stash.insert(got, reply);
        }
    }

    pub fn call(&mut self, request: &Request) -> Reply {
        let id = self.send(request);
        self.recv(id)
    }

    /// Writes raw bytes (for bad-input tests).
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write raw bytes");
    }

    /// Whether the brick closed the connection within `timeout`, reading
    /// and discarding replies meanwhile.
    pub fn closed_within(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        self.stream
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            match self.stream.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => return true,
            }
        }
        false
    }

    pub fn maps(&mut self) -> Maps {
        match self.call(&Request::GetMaps) {
            Reply::Maps(bytes) => Maps::decode(&bytes).expect("maps decode"),
            other => panic!("GetMaps answered {other:?}"),
        }
    }

    /// A client of the brick at `addr` that created table `t` there, and
    /// the maps it was given.
    pub fn with_table_t(addr: SocketAddr) -> (RawClient, Maps) {
        let mut c = RawClient::connect(addr);
        let maps = c.maps();
        assert_eq!(
            c.call(&Request::CreateTable {
                name: b"t".to_vec()
            }),
            Reply::Ok
        );
        (c, maps)
    }
}

/// Routing of one key under `maps`.
pub fn route(maps: &Maps, table: &[u8], key: &[u8]) -> (PartitionId, u32, Vec<BrickId>) {
    let r = maps.lookup(maps::key_hash(table, key));
    (r.partition, r.fingerprint, r.bricks.to_vec())
}

/// A single-replica write through two-phase commit: prepare, then commit.
pub fn write(
    client: &mut RawClient,
    maps: &Maps,
    txid: u64,
    table: &[u8],
    key: &[u8],
    write: WireWrite,
) -> Reply {
    let (partition, fingerprint, bricks) = route(maps, table, key);
    let vote = client.call(&Request::Prepare {
        txid: TxId(txid),
        partition,
        fingerprint,
        table: table.to_vec(),
        key: key.to_vec(),
        write,
        participants: bricks,
        decide: false,
    });
    if vote != Reply::Voted {
        return vote;
    }
    let outcome = client.call(&Request::Commit {
        txid: TxId(txid),
        partition,
    });
    assert_eq!(outcome, Reply::TxState(TxState::Committed));
    outcome
}

pub fn get(client: &mut RawClient, maps: &Maps, table: &[u8], key: &[u8]) -> Reply {
    let (partition, fingerprint, _) = route(maps, table, key);
    client.call(&Request::Get {
        partition,
        fingerprint,
        table: table.to_vec(),
        key: key.to_vec(),
    })
}
