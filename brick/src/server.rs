//! The mio event loop that drives a [`Node`] in production: it accepts
//! client connections, reads frames, hands requests to the node, writes its
//! replies, keeps connections to peer bricks for the node's own requests,
//! and fires the node's timers. Protocol decisions live in the node; this
//! file only moves bytes and enforces the per-connection limits.
//!
//! One thread, one `Poll`. After a readiness event a socket is read until it
//! would block or its read budget for this pass runs out, so one busy
//! connection cannot starve the others. Replies are appended to a
//! per-connection buffer and written once per pass, so many replies leave in
//! one system call.

use std::collections::BTreeMap;

/// Hash tables with a fast keyed hasher (the default one showed in
/// profiles of the request path).
type HashMap<K, V> = std::collections::HashMap<K, V, ahash::RandomState>;
type HashSet<K> = std::collections::HashSet<K, ahash::RandomState>;
use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use maps::BrickId;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use wire::codec::{
    copy_chunk_frame_around, copy_index_frame_head, encode_reply, encode_request, Frame,
    FrameDecoder, FrameError,
};
use wire::limits::{
    CONNECTIONS_PER_BRICK_MAX, OUTSTANDING_REQUESTS_PER_CONNECTION_MAX,
    QUEUED_BYTES_PER_CONNECTION_MAX,
};
use wire::{CopyChunkRef, ErrorCode, ErrorReply, Message, Reply, Request};

use crate::node::{ConnId, Node, PrefetchHint, Transmit};

const LISTENER: Token = Token(0);
/// Tokens from here up name connections to peers (base + brick id).
const PEER_TOKEN_BASE: usize = 1 << 40;
/// Bytes read from one socket per pass before others get their turn.
const READ_BYTES_PER_PASS_MAX: usize = 256 * 1024;
/// The longest the loop sleeps, so a stop signal is seen promptly.
const POLL_INTERVAL_MAX: Duration = Duration::from_millis(50);
/// How long a stopping brick waits for prepared transactions to finish.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// An accepted connection from a client or a peer.
struct Inbound {
    stream: TcpStream,
    addr: SocketAddr,
    decoder: FrameDecoder,
    out: Vec<u8>,
    out_pos: usize,
    /// Requests read and not yet answered.
    outstanding: usize,
    /// Set after a protocol error: flush what is queued, then close.
    closing: bool,
    reading: bool,
}

/// A connection this brick opened to a peer, for its own requests.
struct Outbound {
    stream: TcpStream,
    decoder: FrameDecoder,
    out: Vec<u8>,
    out_pos: usize,
}

/// What a brick's loop leaves when it stops, for the next start.
pub struct Stopped {
    /// Until when a lease the brick granted may still run (see
    /// [`Node::leases_granted_until`]).
    pub leases_granted_until: Option<Instant>,
    /// The outcomes of finished transactions, when the stop is clean
    /// ([`Node::outcomes_for_a_clean_stop`]); `None` when it is not (a
    /// transaction still prepared when the drain ran out of time, or a
    /// brick that restarted after a crash and was not yet copied back):
    /// the next start must count it as a crash.
    pub outcomes: Option<Vec<u8>>,
}

/// The brick's server. Build with [`Server::bind`], then [`Server::run`].
pub struct Server {
    poll: Poll,
    listener: Option<TcpListener>,
    local_addr: SocketAddr,
    node: Node,
    directory: BTreeMap<BrickId, SocketAddr>,
    inbound: HashMap<Token, Inbound>,
    outbound: HashMap<BrickId, Outbound>,
    next_token: usize,
    dirty: HashSet<Token>,
    /// Requests decoded from one read, handled together (see
    /// [`handle_batch`]); empty between reads. At most
    /// `OUTSTANDING_REQUESTS_PER_CONNECTION_MAX` long: a request past that
    /// is refused as it is decoded.
    batch: Batch,
    /// Connections whose read stopped at the per-pass budget with bytes
    /// possibly left in the socket. Readiness is edge-triggered, so no new
    /// event comes for those bytes: they are read again on the next pass.
    unread: HashSet<Token>,
    stop: Arc<AtomicBool>,
}

impl Server {
    /// Binds the listening socket (with SO_REUSEADDR and a backlog of 1024)
    /// and prepares the loop. `stop` is set by the signal handler.
    pub fn bind(
        addr: SocketAddr,
        node: Node,
        directory: BTreeMap<BrickId, SocketAddr>,
        stop: Arc<AtomicBool>,
    ) -> io::Result<Server> {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            None,
        )?;
        socket.set_reuse_address(true)?;
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        socket.listen(1024)?;
        let std_listener: std::net::TcpListener = socket.into();
        let mut listener = TcpListener::from_std(std_listener);
        let local_addr = listener.local_addr()?;
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        Ok(Server {
            poll,
            listener: Some(listener),
            local_addr,
            node,
            directory,
            inbound: HashMap::default(),
            outbound: HashMap::default(),
            next_token: 1,
            dirty: HashSet::default(),
            batch: Batch::default(),
            unread: HashSet::default(),
            stop,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Runs until `stop` is set; then stops accepting, lets prepared
    /// transactions finish (up to a bound), flushes the arenas and returns.
    /// Serves until stopped; returns what the next start needs to know
    /// ([`Stopped`]).
    pub fn run(mut self) -> io::Result<Stopped> {
        let mut events = Events::with_capacity(1024);
        let mut drain_deadline: Option<Instant> = None;
        loop {
            let now = Instant::now();
            if self.stop.load(Ordering::Relaxed) && drain_deadline.is_none() {
                log::info!(
                    "{}: stopping: no new connections; finishing what is in flight",
                    self.node.id()
                );
                if let Some(mut listener) = self.listener.take() {
                    let _ = self.poll.registry().deregister(&mut listener);
                }
                drain_deadline = Some(now + DRAIN_TIMEOUT);
            }
            if let Some(deadline) = drain_deadline {
                if (self.node.is_quiet() && self.all_flushed()) || now >= deadline {
                    break;
                }
            }
            let mut timeout = POLL_INTERVAL_MAX;
            if let Some(at) = self.node.poll_timeout() {
                timeout = timeout.min(at.saturating_duration_since(now));
            }
            let background = self.node.background_step();
            if background || !self.unread.is_empty() {
                timeout = Duration::ZERO;
            }
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            // Connections left at the read budget are read to the end: a
            // hang-up reported with their last event brings no other.
            for token in std::mem::take(&mut self.unread) {
                if token.0 >= PEER_TOKEN_BASE {
                    self.read_outbound(BrickId((token.0 - PEER_TOKEN_BASE) as u32), true);
                } else {
                    self.read_inbound(token, true);
                }
            }
            for event in events.iter() {
                let token = event.token();
                if token == LISTENER {
                    self.accept();
                } else if token.0 >= PEER_TOKEN_BASE {
                    let peer = BrickId((token.0 - PEER_TOKEN_BASE) as u32);
                    if event.is_writable() {
                        self.dirty.insert(token);
                    }
                    if event.is_readable() || event.is_read_closed() || event.is_error() {
                        self.read_outbound(peer, event.is_read_closed() || event.is_error());
                    }
                } else {
                    if event.is_writable() {
                        self.dirty.insert(token);
                    }
                    if event.is_readable() || event.is_read_closed() || event.is_error() {
                        self.read_inbound(token, event.is_read_closed() || event.is_error());
                    }
                }
            }
            let now = Instant::now();
            if self.node.poll_timeout().is_some_and(|at| at <= now) {
                self.node.handle_timeout(now);
            }
            self.route_transmits();
            self.flush_dirty();
        }
        for (id, partition) in self.node.partitions() {
            if let Err(e) = partition.flush() {
                log::error!("{}: flushing {id} failed: {e}", self.node.id());
            }
        }
        let outcomes = self.node.outcomes_for_a_clean_stop(Instant::now());
        log::info!("{}: stopped", self.node.id());
        Ok(Stopped {
            leases_granted_until: self.node.leases_granted_until(),
            outcomes,
        })
    }

    fn all_flushed(&self) -> bool {
        self.inbound.values().all(|c| c.out_pos == c.out.len())
    }

    fn accept(&mut self) {
        loop {
            let Some(listener) = self.listener.as_ref() else {
                return;
            };
            match listener.accept() {
                Ok((mut stream, addr)) => {
                    if self.inbound.len() >= CONNECTIONS_PER_BRICK_MAX {
                        log::warn!(
                            "{}: refusing {addr}: {} connections is the limit",
                            self.node.id(),
                            CONNECTIONS_PER_BRICK_MAX
                        );
                        continue; // Dropping the stream closes it.
                    }
                    let _ = stream.set_nodelay(true);
                    let token = Token(self.next_token);
                    self.next_token += 1;
                    if let Err(e) = self.poll.registry().register(
                        &mut stream,
                        token,
                        Interest::READABLE | Interest::WRITABLE,
                    ) {
                        log::warn!("{}: cannot register {addr}: {e}", self.node.id());
                        continue;
                    }
                    self.inbound.insert(
                        token,
                        Inbound {
                            stream,
                            addr,
                            decoder: FrameDecoder::new(),
                            out: Vec::new(),
                            out_pos: 0,
                            outstanding: 0,
                            closing: false,
                            reading: true,
                        },
                    );
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Out of descriptors, for example: keep serving the
                    // connections there are.
                    log::warn!("{}: accept failed: {e}", self.node.id());
                    return;
                }
            }
        }
    }

    /// Reads what `token`'s connection has, up to the pass's budget. A read
    /// that returns less than it had room for ends the pass unless
    /// `to_the_end` (the event reported a hang-up, which comes with no
    /// event of its own once read past): then reading goes on to
    /// `WouldBlock` or the end of the stream.
    fn read_inbound(&mut self, token: Token, to_the_end: bool) {
        let mut budget = READ_BYTES_PER_PASS_MAX;
        let mut would_block = false;
        let now = Instant::now();
        loop {
            let Some(conn) = self.inbound.get_mut(&token) else {
                return;
            };
            if conn.closing || !conn.reading {
                return;
            }
            let read = conn.decoder.read_from(&mut conn.stream);
            match read {
                Ok(0) => {
                    let partial = conn.decoder.buffered_len();
                    let why =
                        format!("peer hung up in the middle of a frame ({partial} bytes unread)");
                    self.close_inbound(token, (partial > 0).then_some(why.as_str()));
                    return;
                }
                // A short read emptied the socket: no second read to hear
                // WouldBlock (half of all reads under load).
                Ok(_) if !to_the_end && conn.decoder.last_read_was_short() => {
                    budget = 0;
                    would_block = true;
                }
                Ok(n) => budget = budget.saturating_sub(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    budget = 0;
                    would_block = true;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.close_inbound(token, Some(&format!("read failed: {e}")));
                    return;
                }
            }
            let conn_id = ConnId(token.0 as u64);
            loop {
                let conn = self.inbound.get_mut(&token).unwrap();
                // Lending: a copy chunk's bytes go from the read buffer
                // straight into the arena.
                match conn.decoder.next_frame_lending() {
                    Ok(Some((request_id, Frame::Message(Message::Reply(_))))) => {
                        handle_batch(&mut self.node, &mut self.batch, now, conn_id);
                        self.protocol_error(
                            token,
                            request_id,
                            "a reply arrived where requests are expected",
                        );
                        return;
                    }
                    Ok(Some((request_id, frame))) => {
                        if conn.outstanding >= OUTSTANDING_REQUESTS_PER_CONNECTION_MAX {
                            let reply = error_reply(
                                ErrorCode::Busy,
                                "too many requests outstanding on this connection",
                            );
                            encode_reply(request_id, &reply, &mut conn.out);
                            self.dirty.insert(token);
                            continue;
                        }
                        conn.outstanding += 1;
                        match frame {
                            Frame::Message(Message::Request(request)) => {
                                self.batch.requests.push((request_id, request))
                            }
                            Frame::CopyChunk(chunk) => {
                                // In order: the requests before it first.
                                handle_batch(&mut self.node, &mut self.batch, now, conn_id);
                                self.node.handle_copy_chunk(now, conn_id, request_id, chunk)
                            }
                            Frame::CopyIndex(part) => {
                                handle_batch(&mut self.node, &mut self.batch, now, conn_id);
                                self.node.handle_copy_index(now, conn_id, request_id, part)
                            }
                            Frame::Message(Message::Reply(_)) => unreachable!("matched above"),
                        }
                    }
                    Ok(None) => {
                        handle_batch(&mut self.node, &mut self.batch, now, conn_id);
                        break;
                    }
                    Err(e) => {
                        handle_batch(&mut self.node, &mut self.batch, now, conn_id);
                        let request_id = match &e {
                            FrameError::BadCrc { request_id }
                            | FrameError::BadBody { request_id, .. } => *request_id,
                            _ => 0,
                        };
                        self.protocol_error(token, request_id, &e.to_string());
                        return;
                    }
                }
            }
            // Replies produced by this batch go out before more is read, so
            // the out buffer limit below sees them.
            self.route_transmits();
            let Some(conn) = self.inbound.get_mut(&token) else {
                return;
            };
            if conn.out.len() - conn.out_pos > QUEUED_BYTES_PER_CONNECTION_MAX {
                // The peer does not read its replies: stop reading its
                // requests until it drains them.
                conn.reading = false;
                self.dirty.insert(token);
                return;
            }
            if budget == 0 {
                if !would_block {
                    self.unread.insert(token);
                }
                return;
            }
        }
    }

    /// Answers a protocol error with `Malformed` and closes the connection
    /// once the answer is written. Other connections are not touched.
    fn protocol_error(&mut self, token: Token, request_id: u64, reason: &str) {
        let Some(conn) = self.inbound.get_mut(&token) else {
            return;
        };
        log::warn!("{}: closing {}: {reason}", self.node.id(), conn.addr);
        let reply = error_reply(ErrorCode::Malformed, reason);
        encode_reply(request_id, &reply, &mut conn.out);
        conn.closing = true;
        self.dirty.insert(token);
    }

    fn close_inbound(&mut self, token: Token, why: Option<&str>) {
        if let Some(mut conn) = self.inbound.remove(&token) {
            if let Some(why) = why {
                log::warn!(
                    "{}: connection from {} closed: {why}",
                    self.node.id(),
                    conn.addr
                );
            }
            let _ = self.poll.registry().deregister(&mut conn.stream);
        }
        self.dirty.remove(&token);
        self.node.connection_closed(ConnId(token.0 as u64));
    }

    /// As [`Server::read_inbound`], for the connection to `peer`.
    fn read_outbound(&mut self, peer: BrickId, to_the_end: bool) {
        let now = Instant::now();
        let mut budget = READ_BYTES_PER_PASS_MAX;
        let mut would_block = false;
        loop {
            let Some(conn) = self.outbound.get_mut(&peer) else {
                return;
            };
            match conn.decoder.read_from(&mut conn.stream) {
                Ok(0) => return self.drop_outbound(peer, "peer closed the connection"),
                Ok(_) if !to_the_end && conn.decoder.last_read_was_short() => {
                    budget = 0;
                    would_block = true;
                }
                Ok(n) => budget = budget.saturating_sub(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    budget = 0;
                    would_block = true;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return self.drop_outbound(peer, &format!("read failed: {e}")),
            }
            loop {
                let conn = self.outbound.get_mut(&peer).unwrap();
                match conn.decoder.next_frame() {
                    Ok(Some((request_id, Message::Reply(reply)))) => {
                        self.node.handle_peer_reply(now, peer, request_id, reply)
                    }
                    Ok(Some(_)) => {
                        return self.drop_outbound(peer, "peer sent a request on our connection")
                    }
                    Ok(None) => break,
                    Err(e) => return self.drop_outbound(peer, &format!("bad frame: {e}")),
                }
            }
            if budget == 0 {
                if !would_block {
                    self.unread.insert(Token(PEER_TOKEN_BASE + peer.0 as usize));
                }
                return;
            }
        }
    }

    fn drop_outbound(&mut self, peer: BrickId, why: &str) {
        if let Some(mut conn) = self.outbound.remove(&peer) {
            log::debug!("{}: connection to {peer} dropped: {why}", self.node.id());
            let _ = self.poll.registry().deregister(&mut conn.stream);
        }
        self.dirty.remove(&Token(PEER_TOKEN_BASE + peer.0 as usize));
        self.node.handle_peer_unreachable(Instant::now(), peer);
    }

    /// Moves the node's outputs into connection buffers.
    fn route_transmits(&mut self) {
        while let Some(transmit) = self.node.poll_transmit() {
            match transmit {
                Transmit::Reply {
                    conn,
                    request_id,
                    reply,
                } => {
                    let token = Token(conn.0 as usize);
                    if let Some(c) = self.inbound.get_mut(&token) {
                        c.outstanding = c.outstanding.saturating_sub(1);
                        encode_reply(request_id, &reply, &mut c.out);
                        self.dirty.insert(token);
                    }
                }
                Transmit::Peer {
                    peer,
                    request_id,
                    request,
                } => {
                    if !self.ready_outbound(peer) {
                        continue;
                    }
                    let conn = self.outbound.get_mut(&peer).unwrap();
                    encode_request(request_id, &request, &mut conn.out);
                    self.dirty.insert(Token(PEER_TOKEN_BASE + peer.0 as usize));
                }
                Transmit::CopyChunk {
                    peer,
                    request_id,
                    chunk,
                } => {
                    if !self.ready_outbound(peer) {
                        continue;
                    }
                    // Taken from the arena in the pass that asked for it: a
                    // chunk of an arena compacted since is dropped (the copy
                    // is abandoned then anyway).
                    let Some(bytes) = self.node.copy_chunk_bytes(&chunk) else {
                        continue;
                    };
                    let crc = chunk.crc;
                    let conn = self.outbound.get_mut(&peer).unwrap();
                    let chunk = CopyChunkRef {
                        partition: chunk.partition,
                        offset: chunk.offset,
                        bytes,
                        end: chunk.end,
                    };
                    let (head, tail) = copy_chunk_frame_around(request_id, &chunk, crc);
                    let sent = send_around(conn, [&head, chunk.bytes, &tail]);
                    self.after_send(peer, sent);
                }
                Transmit::CopyIndex {
                    peer,
                    request_id,
                    part,
                } => {
                    if !self.ready_outbound(peer) {
                        continue;
                    }
                    let conn = self.outbound.get_mut(&peer).unwrap();
                    let part = part.request_ref();
                    let head = copy_index_frame_head(request_id, &part);
                    let sent = send_around(conn, [&head, part.bytes, &[]]);
                    self.after_send(peer, sent);
                }
            }
        }
    }

    /// Marks the connection to `peer` for the flush after a frame was
    /// queued on it with [`send_around`], or drops it if the write failed.
    fn after_send(&mut self, peer: BrickId, sent: io::Result<()>) {
        match sent {
            Ok(()) => {
                self.dirty.insert(Token(PEER_TOKEN_BASE + peer.0 as usize));
            }
            Err(e) => self.drop_outbound(peer, &format!("write failed: {e}")),
        }
    }

    /// Whether the connection to `peer` can take a request: connected
    /// first if need be (the node hears of a peer it cannot reach), and
    /// dropped if the peer stopped reading what is queued.
    fn ready_outbound(&mut self, peer: BrickId) -> bool {
        if !self.outbound.contains_key(&peer) && !self.connect_peer(peer) {
            self.node.handle_peer_unreachable(Instant::now(), peer);
            return false;
        }
        let conn = &self.outbound[&peer];
        if conn.out.len() - conn.out_pos > QUEUED_BYTES_PER_CONNECTION_MAX {
            self.drop_outbound(peer, "peer is not reading");
            return false;
        }
        true
    }

    fn connect_peer(&mut self, peer: BrickId) -> bool {
        let Some(addr) = self.directory.get(&peer).copied() else {
            log::warn!("{}: {peer} is not in the brick directory", self.node.id());
            return false;
        };
        match TcpStream::connect(addr) {
            Ok(mut stream) => {
                let _ = stream.set_nodelay(true);
                let token = Token(PEER_TOKEN_BASE + peer.0 as usize);
                if self
                    .poll
                    .registry()
                    .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
                    .is_err()
                {
                    return false;
                }
                self.outbound.insert(
                    peer,
                    Outbound {
                        stream,
                        decoder: FrameDecoder::new(),
                        out: Vec::new(),
                        out_pos: 0,
                    },
                );
                true
            }
            Err(e) => {
                log::debug!(
                    "{}: connect to {peer} at {addr} failed: {e}",
                    self.node.id()
                );
                false
            }
        }
    }

    fn flush_dirty(&mut self) {
        let tokens: Vec<Token> = self.dirty.drain().collect();
        for token in tokens {
            if token.0 >= PEER_TOKEN_BASE {
                let peer = BrickId((token.0 - PEER_TOKEN_BASE) as u32);
                let Some(conn) = self.outbound.get_mut(&peer) else {
                    continue;
                };
                match write_out(&mut conn.stream, &mut conn.out, &mut conn.out_pos) {
                    Ok(()) => {}
                    Err(e) => self.drop_outbound(peer, &format!("write failed: {e}")),
                }
            } else {
                let Some(conn) = self.inbound.get_mut(&token) else {
                    continue;
                };
                match write_out(&mut conn.stream, &mut conn.out, &mut conn.out_pos) {
                    Ok(()) => {
                        let drained = conn.out_pos == conn.out.len();
                        if conn.closing && drained {
                            self.close_inbound(token, None);
                        } else if !conn.reading
                            && conn.out.len() - conn.out_pos <= QUEUED_BYTES_PER_CONNECTION_MAX / 2
                        {
                            conn.reading = true;
                            // Events were ignored meanwhile: a hang-up may
                            // be waiting behind the bytes.
                            self.read_inbound(token, true);
                        }
                    }
                    Err(e) => self.close_inbound(token, Some(&format!("write failed: {e}"))),
                }
            }
        }
    }
}

/// Queues a frame made of `parts` (a copy chunk: the header and fields,
/// the bytes, the fields after; or a part of an index: the header and
/// fields, the slots) on `conn`. With nothing queued ahead of it, the
/// frame goes to the socket at once, its bytes straight from where they
/// lie (`writev`), and only what the socket does not take is copied into
/// the buffer: copying every chunk into the buffer first was the source's
/// largest cost of a copy after the send itself (`perf`: 6% of all CPU
/// during an idle copy, as much as the receiver's crc).
fn send_around(conn: &mut Outbound, parts: [&[u8]; 3]) -> io::Result<()> {
    if conn.out_pos < conn.out.len() {
        for part in parts {
            conn.out.extend_from_slice(part);
        }
        return Ok(());
    }
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let mut written = 0;
    while written < total {
        let slices: Vec<io::IoSlice<'_>> =
            unwritten(&parts, written).map(io::IoSlice::new).collect();
        match conn.stream.write_vectored(&slices) {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "socket closed")),
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::NotConnected => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    // The rest waits in the buffer, as any queued frame does.
    conn.out.clear();
    conn.out_pos = 0;
    for rest in unwritten(&parts, written) {
        conn.out.extend_from_slice(rest);
    }
    Ok(())
}

/// What is left of `parts` (one frame, in order) after its first
/// `written` bytes.
fn unwritten<'a>(parts: &'a [&'a [u8]], mut written: usize) -> impl Iterator<Item = &'a [u8]> {
    parts.iter().filter_map(move |part| {
        if written >= part.len() {
            written -= part.len();
            None
        } else {
            let rest = &part[written..];
            written = 0;
            Some(rest)
        }
    })
}

/// Writes as much of `out[pos..]` as the socket takes; clears the buffer
/// once all of it is written.
fn write_out(stream: &mut TcpStream, out: &mut Vec<u8>, pos: &mut usize) -> io::Result<()> {
    while *pos < out.len() {
        match stream.write(&out[*pos..]) {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "socket closed")),
            Ok(n) => *pos += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    out.clear();
    *pos = 0;
    Ok(())
}

fn error_reply(code: ErrorCode, message: &str) -> Reply {
    Reply::Error(ErrorReply {
        code,
        message: message.to_string(),
        maps: None,
    })
}

/// Requests decoded from one read, and their prefetch hints between the
/// prefetch's two steps; both empty between reads.
#[derive(Default)]
struct Batch {
    requests: Vec<(u64, Request)>,
    hints: Vec<PrefetchHint>,
}

/// Handles the requests decoded from one read, in order. With more than
/// one, first brings what they will read of the store into the cache, the
/// index slots of all of them and then their records
/// ([`Node::prefetch_slot`], [`Node::prefetch_record`]):
/// lookups of random keys each wait for memory twice (slot, record), a
/// third of a brick's time under reads, and this way the waits of a batch
/// overlap.
fn handle_batch(node: &mut Node, batch: &mut Batch, now: Instant, conn: ConnId) {
    let Batch { requests, hints } = batch;
    if requests.len() > 1 {
        hints.extend(
            requests
                .iter()
                .filter_map(|(_, request)| node.prefetch_slot(request)),
        );
        for hint in hints.drain(..) {
            node.prefetch_record(hint);
        }
    }
    for (request_id, request) in requests.drain(..) {
        node.handle_request(now, conn, request_id, request);
    }
}
