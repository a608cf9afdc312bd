//! ddslib: service code links this library and sees one coherent hash table
//! spread over a cluster of bricks.
//!
//! ```no_run
//! use ddslib::{Dds, DdsError};
//!
//! # fn main() -> Result<(), DdsError> {
//! let mut dds = Dds::connect_config("cluster.toml")?;
//! match dds.create_table("users") {
//!     Ok(()) | Err(DdsError::TableExists(_)) => {}
//!     Err(e) => return Err(e),
//! }
//! dds.put("users", b"alice", b"{\"visits\": 1}")?;
//! assert_eq!(dds.get("users", b"alice")?, b"{\"visits\": 1}");
//! dds.remove("users", b"alice")?;
//! assert_eq!(dds.get("users", b"alice"), Err(DdsError::NotFound));
//! # Ok(())
//! # }
//! ```
//!
//! Many operations can be kept in flight on one handle with
//! [`Dds::submit`] and [`Dds::poll`]; requests for the same brick that are
//! ready together go out in one write.
//!
//! Reading order: [`error`], [`core`] (the sans-IO coordinator and router),
//! then this file's [`Dds`], the mio driver around it.

pub mod core;
pub mod error;
pub mod limits;

use std::collections::BTreeMap;

/// Hash tables with a fast keyed hasher (the default one showed in
/// profiles of the request path).
type HashMap<K, V> = std::collections::HashMap<K, V, ahash::RandomState>;
type HashSet<K> = std::collections::HashSet<K, ahash::RandomState>;
use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use maps::config::ClusterConfig;
use maps::{BrickId, Maps};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use wire::codec::{encode_request, FrameDecoder};
use wire::{Message, Reply, Request};

pub use crate::core::{CoreConfig, Op, OpId, Output};
pub use crate::error::DdsError;

/// One TCP connection to a brick.
struct Conn {
    stream: TcpStream,
    decoder: FrameDecoder,
    out: Vec<u8>,
    out_pos: usize,
    connected: bool,
}

/// A handle on the cluster. Not shared between threads: give each thread
/// (each load generator, each request handler pool worker) its own.
pub struct Dds {
    core: core::Core,
    poll: Poll,
    events: Events,
    directory: BTreeMap<BrickId, SocketAddr>,
    conns: HashMap<BrickId, Conn>,
    results: HashMap<OpId, Result<Output, DdsError>>,
    completed: Vec<(OpId, Result<Output, DdsError>)>,
    /// Replies to requests sent by [`Dds::call`], outside the coordinator.
    private_replies: HashMap<u64, Reply>,
    next_private_id: u64,
    /// Connections whose read stopped at the per-event budget with bytes
    /// possibly left: readiness is edge-triggered, so they are read again
    /// on the next turn without waiting for an event.
    unread: HashSet<BrickId>,
    /// Lists a turn builds and empties again, kept so that a turn
    /// allocates nothing: connections with bytes to write, and readiness
    /// events.
    to_flush: Vec<BrickId>,
    ready: Vec<(BrickId, bool, bool, bool)>,
}

impl Drop for Dds {
    /// Sends what is queued (commits for replicas after an answered write),
    /// without waiting, so that no replica keeps a key locked until its
    /// prepare times out.
    fn drop(&mut self) {
        self.send_queued(Instant::now());
    }
}

/// Request ids from here up belong to [`Dds::call`]; the coordinator's ids
/// stay below (their count takes 39 bits above a 24-bit slot number).
const PRIVATE_REQUEST_ID_BASE: u64 = 1 << 63;

impl Dds {
    /// Connects to the cluster described by a `cluster.toml`: the brick
    /// directory comes from the file, the current maps from the first brick
    /// that answers (falling back to the file's initial maps).
    pub fn connect_config(path: impl AsRef<Path>) -> Result<Dds, DdsError> {
        Dds::connect_config_with(path, |_| {})
    }

    /// As [`Dds::connect_config`], letting `adjust` change the library's
    /// settings taken from the file (timeouts, retries, seed).
    pub fn connect_config_with(
        path: impl AsRef<Path>,
        adjust: impl FnOnce(&mut CoreConfig),
    ) -> Result<Dds, DdsError> {
        let config =
            ClusterConfig::load(path.as_ref()).map_err(|e| DdsError::Config(e.to_string()))?;
        let mut core_config = CoreConfig {
            request_timeout: Duration::from_millis(config.timeouts.request_ms),
            retries_max: config.timeouts.retries_max,
            seed: std::process::id() as u64 ^ now_nanos(),
            ..CoreConfig::default()
        };
        adjust(&mut core_config);
        Dds::connect_with(config.brick_directory(), config.initial_maps(), core_config)
    }

    /// Connects with an explicit brick directory and starting maps. The maps
    /// are replaced by a brick's if it has newer ones.
    pub fn connect_with(
        directory: BTreeMap<BrickId, SocketAddr>,
        maps: Maps,
        config: CoreConfig,
    ) -> Result<Dds, DdsError> {
        let poll = Poll::new().map_err(|e| DdsError::Io(e.to_string()))?;
        let mut dds = Dds {
            core: core::Core::new(config, maps),
            poll,
            events: Events::with_capacity(256),
            directory,
            conns: HashMap::default(),
            unread: HashSet::default(),
            to_flush: Vec::new(),
            ready: Vec::new(),
            results: HashMap::default(),
            completed: Vec::new(),
            private_replies: HashMap::default(),
            next_private_id: PRIVATE_REQUEST_ID_BASE,
        };
        dds.refresh_maps()?;
        Ok(dds)
    }

    /// Asks the bricks for their maps and keeps the newest view.
    pub fn refresh_maps(&mut self) -> Result<(), DdsError> {
        let bricks: Vec<BrickId> = self.directory.keys().copied().collect();
        let mut any = false;
        for brick in bricks {
            if let Ok(Reply::Maps(bytes)) =
                self.call(brick, Request::GetMaps, Duration::from_millis(500))
            {
                if let Ok(theirs) = Maps::decode(&bytes) {
                    self.core.learn_newer_maps(&theirs);
                    any = true;
                }
            }
        }
        if any {
            Ok(())
        } else {
            Err(DdsError::Unavailable(
                "no brick answered a request for its maps".into(),
            ))
        }
    }

    /// The routing facts this handle uses now.
    pub fn maps(&self) -> &Maps {
        self.core.maps()
    }

    pub fn create_table(&mut self, name: &str) -> Result<(), DdsError> {
        self.run(Op::CreateTable {
            name: name.as_bytes().to_vec(),
        })
        .map(|_| ())
    }

    pub fn destroy_table(&mut self, name: &str) -> Result<(), DdsError> {
        self.run(Op::DestroyTable {
            name: name.as_bytes().to_vec(),
        })
        .map(|_| ())
    }

    /// A handle on one table.
    pub fn table<'a>(&'a mut self, name: &'a str) -> Table<'a> {
        Table { dds: self, name }
    }

    /// The value of `key` in `table`, or [`DdsError::NotFound`].
    pub fn get(&mut self, table: &str, key: &[u8]) -> Result<Vec<u8>, DdsError> {
        match self.run(Op::Get {
            table: table.as_bytes().to_vec(),
            key: key.to_vec(),
        })? {
            Output::Value(Some(v)) => Ok(v),
            _ => Err(DdsError::NotFound),
        }
    }

    /// Replaces the value of `key` in `table`.
    pub fn put(&mut self, table: &str, key: &[u8], value: &[u8]) -> Result<(), DdsError> {
        self.run(Op::Put {
            table: table.as_bytes().to_vec(),
            key: key.to_vec(),
            value: value.to_vec(),
        })
        .map(|_| ())
    }

    /// Removes `key` from `table`; removing an absent key is not an error.
    pub fn remove(&mut self, table: &str, key: &[u8]) -> Result<(), DdsError> {
        self.run(Op::Remove {
            table: table.as_bytes().to_vec(),
            key: key.to_vec(),
        })
        .map(|_| ())
    }

    /// Starts an operation without waiting; its result comes from
    /// [`Dds::poll`]. At most [`limits::OPS_IN_FLIGHT_MAX`] are in flight: past
    /// that, `submit` first waits for some to complete.
    pub fn submit(&mut self, op: Op) -> Result<OpId, DdsError> {
        while self.core.in_flight() >= limits::OPS_IN_FLIGHT_MAX {
            self.turn(Some(Duration::from_millis(10)))?;
        }
        let id = self.core.submit(Instant::now(), op);
        self.collect();
        Ok(id)
    }

    /// Waits up to `timeout` for operations to complete and moves their
    /// results into `out`. Returns at once if some are already complete.
    pub fn poll(
        &mut self,
        out: &mut Vec<(OpId, Result<Output, DdsError>)>,
        timeout: Duration,
    ) -> Result<(), DdsError> {
        let deadline = Instant::now() + timeout;
        loop {
            if !self.completed.is_empty() {
                out.append(&mut self.completed);
                if self.core.in_flight() == 0 {
                    // The caller may go idle now: see `run`.
                    self.send_queued(Instant::now());
                }
                return Ok(());
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(());
            }
            self.turn(Some(deadline - now))?;
        }
    }

    /// Operations submitted and not yet returned by `poll`.
    pub fn in_flight(&self) -> usize {
        self.core.in_flight()
    }

    /// Runs one operation to completion.
    fn run(&mut self, op: Op) -> Result<Output, DdsError> {
        let id = self.core.submit(Instant::now(), op);
        loop {
            self.collect_into_results();
            if let Some(result) = self.results.remove(&id) {
                // What the operation queued after its answer (a commit for
                // the other replicas) leaves now, not with the next call:
                // until it arrives, they hold the key locked.
                self.send_queued(Instant::now());
                return result;
            }
            self.turn(Some(Duration::from_millis(100)))?;
        }
    }

    fn collect(&mut self) {
        while let Some(done) = self.core.poll_completion() {
            self.completed.push(done);
        }
    }

    fn collect_into_results(&mut self) {
        self.collect();
        for (id, result) in self.completed.drain(..) {
            self.results.insert(id, result);
        }
    }

    /// Sends one request to one brick and waits for its reply, outside the
    /// coordinator (used for maps, stats and checksums).
    pub fn call(
        &mut self,
        brick: BrickId,
        request: Request,
        timeout: Duration,
    ) -> Result<Reply, DdsError> {
        self.next_private_id += 1;
        let request_id = self.next_private_id;
        self.queue(brick, request_id, &request)?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(reply) = self.private_replies.remove(&request_id) {
                return Ok(reply);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(DdsError::Timeout(format!(
                    "{brick} did not answer within {timeout:?}"
                )));
            }
            if !self.conns.contains_key(&brick) {
                return Err(DdsError::Unavailable(format!("{brick} is unreachable")));
            }
            self.turn(Some(deadline - now))?;
        }
    }

    /// Appends a request to a brick's send buffer, connecting if needed.
    fn queue(
        &mut self,
        brick: BrickId,
        request_id: u64,
        request: &Request,
    ) -> Result<(), DdsError> {
        self.connect(brick)?;
        let conn = self.conns.get_mut(&brick).unwrap();
        encode_request(request_id, request, &mut conn.out);
        Ok(())
    }

    /// Opens the connection to `brick` unless it is open.
    fn connect(&mut self, brick: BrickId) -> Result<(), DdsError> {
        if !self.conns.contains_key(&brick) {
            let Some(addr) = self.directory.get(&brick).copied() else {
                return Err(DdsError::Config(format!(
                    "{brick} is not in the brick directory"
                )));
            };
            let mut stream = TcpStream::connect(addr)
                .map_err(|e| DdsError::Io(format!("connect to {addr}: {e}")))?;
            let _ = stream.set_nodelay(true);
            self.poll
                .registry()
                .register(
                    &mut stream,
                    Token(brick.0 as usize),
                    Interest::READABLE | Interest::WRITABLE,
                )
                .map_err(|e| DdsError::Io(e.to_string()))?;
            self.conns.insert(
                brick,
                Conn {
                    stream,
                    decoder: FrameDecoder::new(),
                    out: Vec::with_capacity(64 * 1024),
                    out_pos: 0,
                    connected: false,
                },
            );
        }
        Ok(())
    }

    /// Hands the coordinator's requests to their connections and writes
    /// what the sockets take without blocking.
    fn send_queued(&mut self, now: Instant) {
        while let Some(brick) = self.core.next_transmit_brick() {
            if let Err(e) = self.connect(brick) {
                log::debug!("cannot send to {brick}: {e}");
                // Dropped: its operation hears of it as unreachable.
                let _ = self.core.poll_transmit_with(|_, _, _| ());
                self.core.handle_unreachable(now, brick);
                continue;
            }
            let conn = self.conns.get_mut(&brick).expect("connected just above");
            // Encoded straight from the operation's bytes (see
            // `Core::poll_transmit_with`).
            let _ = self.core.poll_transmit_with(|_, request_id, request| {
                request.encode(request_id, &mut conn.out)
            });
        }
        let mut to_flush = std::mem::take(&mut self.to_flush);
        to_flush.extend(
            self.conns
                .iter()
                .filter(|(_, conn)| conn.out_pos < conn.out.len())
                .map(|(brick, _)| *brick),
        );
        for brick in to_flush.drain(..) {
            self.flush(brick);
        }
        self.to_flush = to_flush;
    }

    /// One pass of the event loop: send what the core wants sent, wait for
    /// readiness or the core's next deadline, read replies, fire timers.
    fn turn(&mut self, timeout: Option<Duration>) -> Result<(), DdsError> {
        let now = Instant::now();
        self.core.handle_timeout(now);
        self.send_queued(now);
        let mut wait = timeout;
        if let Some(at) = self.core.poll_timeout() {
            let until = at.saturating_duration_since(now);
            wait = Some(wait.map_or(until, |w| w.min(until)));
        }
        if !self.unread.is_empty() {
            wait = Some(Duration::ZERO);
        }
        if let Err(e) = self.poll.poll(&mut self.events, wait) {
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(DdsError::Io(e.to_string()));
            }
        }
        let mut ready = std::mem::take(&mut self.ready);
        ready.extend(self.events.iter().map(|ev| {
            (
                BrickId(ev.token().0 as u32),
                ev.is_readable() || ev.is_read_closed() || ev.is_error(),
                ev.is_read_closed() || ev.is_error(),
                ev.is_writable(),
            )
        }));
        // Connections left at the read budget are read to the end: a
        // hang-up reported with their last event brings no other.
        for brick in std::mem::take(&mut self.unread) {
            self.read(brick, true);
        }
        for (brick, readable, hung_up, writable) in ready.drain(..) {
            if writable {
                if let Some(conn) = self.conns.get_mut(&brick) {
                    conn.connected = true;
                }
                self.flush(brick);
            }
            if readable {
                self.read(brick, hung_up);
            }
        }
        self.ready = ready;
        let now = Instant::now();
        self.core.handle_timeout(now);
        self.collect();
        Ok(())
    }

    fn flush(&mut self, brick: BrickId) {
        let Some(conn) = self.conns.get_mut(&brick) else {
            return;
        };
        while conn.out_pos < conn.out.len() {
            match conn.stream.write(&conn.out[conn.out_pos..]) {
                Ok(0) => return self.drop_conn(brick, "connection closed while writing"),
                Ok(n) => conn.out_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::NotConnected && !conn.connected => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return self.drop_conn(brick, &e.to_string()),
            }
        }
        if conn.out_pos == conn.out.len() {
            conn.out.clear();
            conn.out_pos = 0;
        }
    }

    /// Reads what the connection to `brick` has, up to the event's budget.
    /// A short read ends it unless `to_the_end` (the event reported a
    /// hang-up, which brings no event of its own once read past).
    fn read(&mut self, brick: BrickId, to_the_end: bool) {
        let mut budget = limits::READ_BYTES_PER_EVENT_MAX;
        let mut would_block = false;
        loop {
            let Some(conn) = self.conns.get_mut(&brick) else {
                return;
            };
            match conn.decoder.read_from(&mut conn.stream) {
                Ok(0) => return self.drop_conn(brick, "brick closed the connection"),
                // A short read emptied the socket; bytes that arrive later
                // bring an event of their own.
                Ok(_) if !to_the_end && conn.decoder.last_read_was_short() => {
                    budget = 0;
                    would_block = true;
                }
                Ok(n) => {
                    budget = budget.saturating_sub(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    budget = 0;
                    would_block = true;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return self.drop_conn(brick, &e.to_string()),
            }
            let now = Instant::now();
            loop {
                let conn = self.conns.get_mut(&brick).unwrap();
                match conn.decoder.next_frame() {
                    Ok(Some((request_id, Message::Reply(reply))))
                        if request_id > PRIVATE_REQUEST_ID_BASE =>
                    {
                        self.private_replies.insert(request_id, reply);
                    }
                    Ok(Some((request_id, Message::Reply(reply)))) => {
                        self.core.handle_reply(now, brick, request_id, reply);
                    }
                    Ok(Some((_, Message::Request(_)))) => {
                        return self
                            .drop_conn(brick, "brick sent a request on a client connection");
                    }
                    Ok(None) => break,
                    Err(e) => return self.drop_conn(brick, &format!("bad frame: {e}")),
                }
            }
            if budget == 0 {
                if !would_block {
                    // Edge-triggered readiness brings no new event for
                    // bytes left in the socket: read them on the next turn.
                    self.unread.insert(brick);
                }
                return;
            }
        }
    }

    fn drop_conn(&mut self, brick: BrickId, why: &str) {
        if let Some(mut conn) = self.conns.remove(&brick) {
            log::debug!("connection to {brick} dropped: {why}");
            let _ = self.poll.registry().deregister(&mut conn.stream);
        }
        self.core.handle_unreachable(Instant::now(), brick);
    }
}

/// Operations on one table, borrowed from a [`Dds`] handle.
pub struct Table<'a> {
    dds: &'a mut Dds,
    name: &'a str,
}

impl Table<'_> {
    pub fn get(&mut self, key: &[u8]) -> Result<Vec<u8>, DdsError> {
        self.dds.get(self.name, key)
    }
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), DdsError> {
        self.dds.put(self.name, key, value)
    }
    pub fn remove(&mut self, key: &[u8]) -> Result<(), DdsError> {
        self.dds.remove(self.name, key)
    }
    /// `get` with a 64-bit integer key (the original system's key type).
    pub fn get_u64(&mut self, key: u64) -> Result<Vec<u8>, DdsError> {
        self.get(&maps::u64_key(key))
    }
    pub fn put_u64(&mut self, key: u64, value: &[u8]) -> Result<(), DdsError> {
        self.put(&maps::u64_key(key), value)
    }
    pub fn remove_u64(&mut self, key: u64) -> Result<(), DdsError> {
        self.remove(&maps::u64_key(key))
    }
}

fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}
