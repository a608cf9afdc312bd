//! The deterministic simulator: brick nodes and ddslib cores — the same
//! sans-IO state machines that run in production — in one thread, with a
//! seeded network, virtual time, and faults.
//!
//! Time jumps to the next event (a message delivery, a node's or a client's
//! deadline, a scheduled fault). The network keeps per-connection FIFO order,
//! as TCP does, but delays each message independently, so messages on
//! different connections are reordered. Faults: delay spikes, connection
//! breaks (in-flight messages on the connection are lost and both ends are
//! told), brick crashes with restart (memory lost, arena bytes kept, a new
//! incarnation; a third of them clean stops instead, taken when the brick
//! has nothing prepared, which also keep the outcomes it saves and wait out
//! its leases at the start, as the daemon does; a sixth crash every member
//! of one of the brick's groups at once, each restarting after a delay of
//! its own), and pauses (a stopped process: nothing delivered, no timers,
//! while its clock runs on).
//!
//! A run records every client operation into a [`crate::history::History`]
//! and checks, at the end: linearizability per key, identical replicas once
//! quiet, and that no brick answered a read for a group it had been removed
//! from.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::fmt;
use std::time::{Duration, Instant};

use brick::node::{ConnId, Node, NodeConfig, RecoveryConfig, Storage, Transmit};
use brick::store::{Backing, Partition};
use ddslib::core::{Core, CoreConfig, Op, OpId, Output};
use ddslib::DdsError;
use maps::{BrickId, Maps, PartitionId, RgId};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use wire::{Reply, Request};

use crate::history::{HistoryRecorder, OpHandle, OpKind, OpResult};

/// Connection ids a node sees: peers by brick id, clients from this base.
const CLIENT_CONN_BASE: u64 = 1 << 32;

/// Shape and faults of one simulated run.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub bricks: u32,
    pub replicas: u32,
    pub partitions: u32,
    pub clients: u32,
    pub keys: u32,
    pub ops_per_client: u32,
    pub faults: Faults,
    /// Test-only: the coordinator asks the primary to prepare and decide
    /// without waiting for the other participants' votes.
    pub broken_decide_without_votes: bool,
}

/// Which faults a run injects.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    pub delay_spikes: bool,
    pub connection_breaks: bool,
    pub crash_restart: bool,
    pub pause_resume: bool,
}

impl fmt::Display for Faults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names = Vec::new();
        if self.delay_spikes {
            names.push("delay");
        }
        if self.connection_breaks {
            names.push("break");
        }
        if self.crash_restart {
            names.push("crash");
        }
        if self.pause_resume {
            names.push("pause");
        }
        if names.is_empty() {
            names.push("none");
        }
        write!(f, "{}", names.join("+"))
    }
}

impl SimConfig {
    /// A random configuration drawn from `seed`.
    pub fn random(seed: u64) -> SimConfig {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_c0f1_u64.wrapping_mul(3));
        SimConfig {
            bricks: 3,
            replicas: 2,
            partitions: [1, 2, 4][rng.random_range(0..3)],
            clients: rng.random_range(2..=4),
            keys: rng.random_range(2..=5),
            ops_per_client: rng.random_range(8..=20),
            faults: Faults {
                delay_spikes: rng.random_bool(0.5),
                connection_breaks: rng.random_bool(0.3),
                crash_restart: rng.random_bool(0.25),
                pause_resume: rng.random_bool(0.25),
            },
            broken_decide_without_votes: false,
        }
    }
}

/// Timing used in the simulation, in the same proportions as cluster.toml.
/// `start_fence` as the daemon computes it (zero after a crash: an
/// amnesiac brick is fenced already).
fn node_config(
    incarnation: u64,
    restarted: bool,
    amnesiac: bool,
    blank: BTreeSet<PartitionId>,
    start_fence: Duration,
    bricks: u32,
    replicas: u32,
) -> NodeConfig {
    NodeConfig {
        lease: Duration::from_millis(600),
        prepare_timeout: Duration::from_millis(600),
        probe_timeout: Duration::from_millis(200),
        outcome_retention: Duration::from_secs(30),
        incarnation,
        amnesiac,
        blank,
        restarted,
        start_fence,
        replicas: replicas as usize,
        bricks: (1..=bricks).map(BrickId).collect(),
        partition_capacity: PARTITION_CAPACITY,
        storage: Storage::Anonymous,
        recovery: RecoveryConfig {
            heal_after: Duration::from_secs(3),
            grace: Duration::from_secs(1),
            copy_lease: Duration::from_millis(300),
            copy_rate: 0,
        },
    }
}

const PARTITION_CAPACITY: u64 = 256 * 1024;

/// Faults are injected during this much virtual time from the start.
const FAULT_PERIOD: Duration = Duration::from_secs(4);

/// Steps one run may take before it counts as stuck.
const STEPS_MAX: u64 = 2_000_000;

/// A message on the simulated network.
#[derive(Debug)]
enum Envelope {
    /// Client request to a brick.
    ToBrick {
        client: u32,
        brick: BrickId,
        request_id: u64,
        request: Request,
    },
    /// Brick reply to a client.
    ToClient {
        client: u32,
        brick: BrickId,
        request_id: u64,
        reply: Reply,
    },
    /// Peer request from one brick to another.
    PeerRequest {
        from: BrickId,
        to: BrickId,
        request_id: u64,
        request: Request,
    },
    /// Reply to a peer request.
    PeerReply {
        from: BrickId,
        to: BrickId,
        request_id: u64,
        reply: Reply,
    },
}

/// Both ends of a connection, for FIFO order and breaks. Clients are
/// numbered after bricks.
type Link = (u64, u64);

fn client_end(client: u32) -> u64 {
    CLIENT_CONN_BASE + u64::from(client)
}

impl Envelope {
    fn link(&self) -> Link {
        match self {
            Envelope::ToBrick { client, brick, .. } | Envelope::ToClient { client, brick, .. } => {
                (client_end(*client), u64::from(brick.0))
            }
            // A peer's requests and their replies travel on the requester's
            // connection.
            Envelope::PeerRequest { from, to, .. } => (u64::from(from.0), u64::from(to.0)),
            Envelope::PeerReply { from, to, .. } => (u64::from(to.0), u64::from(from.0)),
        }
    }

    /// The brick the message is delivered to, if any.
    fn target_brick(&self) -> Option<BrickId> {
        match self {
            Envelope::ToBrick { brick, .. } => Some(*brick),
            Envelope::PeerRequest { to, .. } | Envelope::PeerReply { to, .. } => Some(*to),
            Envelope::ToClient { .. } => None,
        }
    }
}

struct SimBrick {
    id: BrickId,
    node: Option<Node>,
    /// Arena bytes kept across a crash.
    saved: BTreeMap<PartitionId, Vec<u8>>,
    /// The maps the node had saved when it crashed (it saves them on every
    /// change, before acting on them).
    saved_maps: Option<Maps>,
    /// The membership votes it had saved (it saves them before answering).
    saved_votes: Vec<u8>,
    /// What a clean stop left for the next start; `None` after a crash.
    clean_stop: Option<CleanStop>,
    paused: bool,
    incarnation: u64,
    /// Client gets in flight at this node: (conn, request id) → partition.
    reads: HashMap<(u64, u64), PartitionId>,
}

/// What the daemon saves at a clean stop: the outcomes of finished
/// transactions (`Node::outcomes_for_a_clean_stop`), when it stopped, and
/// until when a lease it granted may still run.
struct CleanStop {
    outcomes: Vec<u8>,
    at: Instant,
    leases_until: Option<Instant>,
}

struct SimClient {
    core: Core,
    /// When the client issues its next operation (think time).
    next_op_at: Instant,
    ops_left: u32,
    current: Option<(OpId, OpHandle)>,
    /// Final reads of every key, issued once the workload is over.
    final_reads: Vec<u32>,
}

/// Why a run failed.
#[derive(Debug)]
pub struct Violation {
    pub seed: u64,
    pub what: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "seed {} failed: {}\nreplay: SEED={} cargo test -p sim --test simulation -- --nocapture", self.seed, self.what, self.seed)
    }
}

/// Counts of what a run did, for the CI log.
#[derive(Debug, Default, Clone)]
pub struct RunStats {
    pub ops: u64,
    pub messages: u64,
    /// Restarts, after a crash or a clean stop.
    pub crashes: u64,
    /// Of those, clean stops: taken at a moment the brick would stop
    /// cleanly (nothing prepared), its outcomes saved and taken back.
    pub clean_stops: u64,
    /// Groups all of whose members crashed at once.
    pub group_crashes: u64,
    /// Bricks restarted with their arenas and clean-stop record deleted
    /// (a replaced disk, its maps and votes saved): they start blank.
    pub wipes: u64,
    /// Bricks crashed the moment they installed a membership that left
    /// them a group's only member (a second crash, while the first brick
    /// is down or paused).
    pub alone_crashes: u64,
    /// Of those, crashes of a brick that held writes prepared.
    pub alone_crashes_prepared: u64,
    /// Commits to a write's other member lost with a crash of its primary.
    pub lost_commits: u64,
    pub pauses: u64,
    pub breaks: u64,
    pub spikes: u64,
    pub unknown_outcomes: u64,
    pub failed_ops: u64,
    /// Recovery copies that ended with a brick joining its group.
    pub copies: u64,
    /// Copies installed with the index their source sent (counted at the
    /// bricks up at the end, as `copies` is).
    pub copies_with_index: u64,
}

/// One simulated cluster.
pub struct Sim {
    seed: u64,
    config: SimConfig,
    rng: ChaCha8Rng,
    start: Instant,
    now: Instant,
    bricks: Vec<SimBrick>,
    clients: Vec<SimClient>,
    /// (delivery time, sequence) → message.
    network: BinaryHeap<Reverse<(Instant, u64)>>,
    in_flight: HashMap<u64, Envelope>,
    next_seq: u64,
    /// Last delivery time per connection, for FIFO order.
    link_clock: HashMap<Link, Instant>,
    /// Messages held for a paused brick.
    held: Vec<Envelope>,
    history: HistoryRecorder,
    /// The newest epoch and members of each group ever installed anywhere,
    /// with the time it was first seen.
    truth: HashMap<RgId, (u64, Vec<BrickId>)>,
    fault_at: Instant,
    pause_until: Option<(usize, Instant)>,
    /// Bricks that are down, and when each starts again.
    crashed_until: Vec<(usize, Instant)>,
    pub stats: RunStats,
    violations: Vec<String>,
    initial_maps: Maps,
}

impl Sim {
    pub fn new(seed: u64, config: SimConfig) -> Sim {
        let rng = ChaCha8Rng::seed_from_u64(seed);
        let start = Instant::now();
        let maps = maps::config::ClusterConfig::for_simulation(
            config.bricks,
            config.replicas,
            config.partitions,
        )
        .initial_maps();
        let mut sim = Sim {
            seed,
            config: config.clone(),
            rng,
            start,
            now: start,
            bricks: Vec::new(),
            clients: Vec::new(),
            network: BinaryHeap::new(),
            in_flight: HashMap::new(),
            next_seq: 0,
            link_clock: HashMap::new(),
            held: Vec::new(),
            history: HistoryRecorder::new(),
            truth: HashMap::new(),
            fault_at: start + Duration::from_millis(20),
            pause_until: None,
            crashed_until: Vec::new(),
            stats: RunStats::default(),
            violations: Vec::new(),
            initial_maps: maps.clone(),
        };
        for (rg, entry) in maps.rg.iter() {
            sim.truth.insert(*rg, (entry.epoch, entry.bricks.clone()));
        }
        for b in 1..=config.bricks {
            let id = BrickId(b);
            let mut brick = SimBrick {
                id,
                node: None,
                saved: BTreeMap::new(),
                saved_maps: None,
                saved_votes: Vec::new(),
                clean_stop: None,
                paused: false,
                incarnation: 1,
                reads: HashMap::new(),
            };
            brick.node = Some(Self::boot(
                id,
                &sim.config,
                &maps,
                &brick.saved,
                brick.incarnation,
                None,
                start,
            ));
            sim.bricks.push(brick);
        }
        for c in 0..config.clients {
            let core = Core::new(
                CoreConfig {
                    request_timeout: Duration::from_millis(400),
                    retries_max: 10,
                    backoff_base: Duration::from_millis(2),
                    seed: seed.wrapping_mul(31).wrapping_add(u64::from(c)),
                    halt_after_prepare: false,
                    decide_without_votes: config.broken_decide_without_votes,
                },
                maps.clone(),
            );
            sim.clients.push(SimClient {
                core,
                next_op_at: start,
                ops_left: config.ops_per_client,
                current: None,
                final_reads: (0..config.keys).collect(),
            });
        }
        sim
    }

    /// Starts a node with the arenas in `saved` (empty ones where missing).
    /// After a crash (`incarnation > 1`, no `clean` stop) it is amnesiac, as
    /// the daemon is when it finds no clean-shutdown marker; after a clean
    /// stop it waits out the leases it granted and takes back its outcomes.
    fn boot(
        id: BrickId,
        config: &SimConfig,
        maps: &Maps,
        saved: &BTreeMap<PartitionId, Vec<u8>>,
        incarnation: u64,
        clean: Option<&CleanStop>,
        now: Instant,
    ) -> Node {
        let mut partitions = BTreeMap::new();
        let mut held: BTreeSet<PartitionId> = maps.partitions_of(id).into_iter().collect();
        held.extend(saved.keys().copied());
        // As the daemon: a partition without saved data starts blank, and a
        // brick that had data of none started afresh (a new cluster, or
        // its data folder emptied).
        let blank: BTreeSet<PartitionId> = held
            .iter()
            .copied()
            .filter(|p| !saved.contains_key(p))
            .collect();
        let had_data = !saved.is_empty();
        for partition in held {
            let store = match saved.get(&partition) {
                Some(bytes) => {
                    Partition::reopen_anonymous(bytes, PARTITION_CAPACITY).map(|(p, _)| p)
                }
                None => Partition::open(Backing::Anonymous, PARTITION_CAPACITY).map(|(p, _)| p),
            };
            partitions.insert(partition, store.expect("anonymous arena opens"));
        }
        let start_fence = match clean.and_then(|c| c.leases_until) {
            Some(until) if until > now => until - now + brick::limits::LEASE_MARGIN,
            _ => Duration::ZERO,
        };
        let amnesiac = had_data && clean.is_none();
        let mut node = Node::new(
            id,
            node_config(
                incarnation,
                had_data,
                amnesiac,
                blank,
                start_fence,
                config.bricks,
                config.replicas,
            ),
            maps.clone(),
            partitions,
            now,
        );
        if let Some(clean) = clean {
            node.restore_outcomes(&clean.outcomes, now, now - clean.at)
                .expect("a node's own outcomes decode");
        }
        node
    }

    fn elapsed_ms(&self) -> f64 {
        self.now.duration_since(self.start).as_secs_f64() * 1000.0
    }

    // ------------------------------------------------------------------
    // Network.

    fn send(&mut self, envelope: Envelope) {
        self.stats.messages += 1;
        let mut delay = Duration::from_micros(self.rng.random_range(50..1500));
        if self.config.faults.delay_spikes && self.rng.random_bool(0.02) {
            // Bounded below the probe timeout: the system assumes bounded
            // message delays (a longer one is a partition, which it does not
            // claim to survive). Longer stalls come from pauses.
            delay += Duration::from_millis(self.rng.random_range(20..150));
            self.stats.spikes += 1;
        }
        let link = envelope.link();
        let at = (self.now + delay).max(self.link_clock.get(&link).copied().unwrap_or(self.now));
        self.link_clock.insert(link, at);
        let seq = self.next_seq;
        self.next_seq += 1;
        self.network.push(Reverse((at, seq)));
        self.in_flight.insert(seq, envelope);
    }

    /// Breaks one connection: its messages are lost and both ends told.
    fn break_link(&mut self, link: Link) {
        self.stats.breaks += 1;
        let lost: Vec<u64> = self
            .in_flight
            .iter()
            .filter(|(_, e)| e.link() == link)
            .map(|(s, _)| *s)
            .collect();
        for seq in lost {
            self.in_flight.remove(&seq);
        }
        self.held.retain(|e| e.link() != link);
        self.link_clock.remove(&link);
        let now = self.now;
        let (a, b) = link;
        if a >= CLIENT_CONN_BASE {
            let client = (a - CLIENT_CONN_BASE) as usize;
            let brick = BrickId(b as u32);
            self.clients[client].core.handle_unreachable(now, brick);
            if let Some(node) = self.brick_mut(brick).and_then(|br| br.node.as_mut()) {
                node.connection_closed(ConnId(a));
            }
        } else {
            let (from, to) = (BrickId(a as u32), BrickId(b as u32));
            if let Some(node) = self.brick_mut(from).and_then(|br| br.node.as_mut()) {
                node.handle_peer_unreachable(now, to);
            }
            if let Some(node) = self.brick_mut(to).and_then(|br| br.node.as_mut()) {
                node.connection_closed(ConnId(u64::from(from.0)));
            }
        }
    }

    fn brick_mut(&mut self, id: BrickId) -> Option<&mut SimBrick> {
        self.bricks.get_mut(id.0 as usize - 1)
    }

    fn deliver(&mut self, envelope: Envelope) {
        let now = self.now;
        if let Some(target) = envelope.target_brick() {
            let brick = &mut self.bricks[target.0 as usize - 1];
            if brick.paused {
                self.held.push(envelope);
                return;
            }
            if brick.node.is_none() {
                // A crashed brick: the connection is refused.
                let link = envelope.link();
                self.break_link(link);
                return;
            }
        }
        match envelope {
            Envelope::ToBrick {
                client,
                brick,
                request_id,
                request,
            } => {
                let conn = client_end(client);
                let b = &mut self.bricks[brick.0 as usize - 1];
                if let Request::Get { partition, .. } = &request {
                    b.reads.insert((conn, request_id), *partition);
                }
                b.node
                    .as_mut()
                    .unwrap()
                    .handle_request(now, ConnId(conn), request_id, request);
                self.drain_brick(brick.0 as usize - 1);
            }
            Envelope::ToClient {
                client,
                brick,
                request_id,
                reply,
            } => {
                self.clients[client as usize]
                    .core
                    .handle_reply(now, brick, request_id, reply);
            }
            Envelope::PeerRequest {
                from,
                to,
                request_id,
                request,
            } => {
                let b = &mut self.bricks[to.0 as usize - 1];
                b.node.as_mut().unwrap().handle_request(
                    now,
                    ConnId(u64::from(from.0)),
                    request_id,
                    request,
                );
                self.drain_brick(to.0 as usize - 1);
            }
            Envelope::PeerReply {
                from,
                to,
                request_id,
                reply,
            } => {
                let b = &mut self.bricks[to.0 as usize - 1];
                b.node
                    .as_mut()
                    .unwrap()
                    .handle_peer_reply(now, from, request_id, reply);
                self.drain_brick(to.0 as usize - 1);
            }
        }
    }

    /// Moves a node's outputs onto the network, checking fencing on the way.
    fn drain_brick(&mut self, index: usize) {
        let id = self.bricks[index].id;
        if self.observe_maps(index)
            && self.config.faults.crash_restart
            && self.stats.alone_crashes == 0
            && self.rng.random_range(0..4) == 0
        {
            // Left a group's only member, the brick crashes before it
            // resolved the writes it holds prepared: the writes its removed
            // partner acknowledged are its to commit, after its restart.
            self.stats.alone_crashes += 1;
            if self.bricks[index]
                .node
                .as_ref()
                .is_some_and(|n| !n.is_quiet())
            {
                self.stats.alone_crashes_prepared += 1;
            }
            self.crash_for_a_while(index, false);
            return;
        }
        loop {
            let Some(node) = self.bricks[index].node.as_mut() else {
                return;
            };
            let Some(transmit) = node.poll_transmit() else {
                return;
            };
            match transmit {
                Transmit::Reply {
                    conn,
                    request_id,
                    reply,
                } => {
                    let partition = self.bricks[index].reads.remove(&(conn.0, request_id));
                    if let (Some(partition), Reply::Value(_) | Reply::NotFound) =
                        (partition, &reply)
                    {
                        self.check_fencing(id, partition);
                    }
                    if conn.0 >= CLIENT_CONN_BASE {
                        let client = (conn.0 - CLIENT_CONN_BASE) as u32;
                        self.send(Envelope::ToClient {
                            client,
                            brick: id,
                            request_id,
                            reply,
                        });
                    } else {
                        self.send(Envelope::PeerReply {
                            from: id,
                            to: BrickId(conn.0 as u32),
                            request_id,
                            reply,
                        });
                    }
                }
                Transmit::Peer {
                    peer,
                    request_id,
                    request,
                } => {
                    self.send(Envelope::PeerRequest {
                        from: id,
                        to: peer,
                        request_id,
                        request,
                    });
                }
                Transmit::CopyChunk {
                    peer,
                    request_id,
                    chunk,
                } => {
                    // Taken from the arena now, as the server does in the
                    // same pass; a chunk of a compacted arena is lost.
                    let request = self.bricks[index]
                        .node
                        .as_ref()
                        .and_then(|node| node.copy_chunk_request(&chunk));
                    if let Some(request) = request {
                        self.send(Envelope::PeerRequest {
                            from: id,
                            to: peer,
                            request_id,
                            request,
                        });
                    }
                }
                Transmit::CopyIndex {
                    peer,
                    request_id,
                    part,
                } => {
                    self.send(Envelope::PeerRequest {
                        from: id,
                        to: peer,
                        request_id,
                        request: part.request_ref().to_request(),
                    });
                }
            }
        }
    }

    /// Records newer group memberships from a node's maps. Returns whether
    /// one of them, first seen here, left this brick a group's only member
    /// after the group had more.
    fn observe_maps(&mut self, index: usize) -> bool {
        let Some(node) = self.bricks[index].node.as_ref() else {
            return false;
        };
        let mut left_alone = false;
        for (rg, entry) in node.maps().rg.iter() {
            let known = self.truth.entry(*rg).or_insert((0, Vec::new()));
            if entry.epoch > known.0 {
                left_alone |= known.1.len() > 1 && entry.bricks == [node.id()];
                *known = (entry.epoch, entry.bricks.clone());
            } else if entry.epoch == known.0 && entry.bricks != known.1 {
                self.violations.push(format!(
                    "two memberships for {rg} at epoch {}: {:?} and {:?}",
                    entry.epoch, known.1, entry.bricks
                ));
            }
        }
        left_alone
    }

    /// I4: a brick answering a read must be a member of the newest
    /// membership installed anywhere.
    fn check_fencing(&mut self, brick: BrickId, partition: PartitionId) {
        let Some(rg) = self.initial_maps.dp.rg_of(partition) else {
            return;
        };
        if let Some((epoch, members)) = self.truth.get(&rg) {
            if !members.contains(&brick) {
                self.violations.push(format!(
                    "{brick} answered a read of {partition} at {:.1} ms after its removal from {rg} (epoch {epoch})",
                    self.elapsed_ms()
                ));
            }
        }
    }

    fn drain_client(&mut self, index: usize) {
        while let Some((brick, request_id, request)) = self.clients[index].core.poll_transmit() {
            let lost_with = self.commit_lost_with(brick, &request);
            self.send(Envelope::ToBrick {
                client: index as u32,
                brick,
                request_id,
                request,
            });
            if let Some(primary) = lost_with {
                // The connection breaks with the commit on it, and the
                // write's primary crashes: the other member holds a write
                // the client was told is committed, prepared, with nobody
                // left who knows its outcome.
                self.stats.lost_commits += 1;
                self.break_link((client_end(index as u32), u64::from(brick.0)));
                self.crash_for_a_while(primary.0 as usize - 1, false);
            }
        }
        while let Some((op, result)) = self.clients[index].core.poll_completion() {
            self.complete(index, op, result);
        }
    }

    // ------------------------------------------------------------------
    // Workload.

    fn key(k: u32) -> Vec<u8> {
        format!("k{k}").into_bytes()
    }

    fn next_op(&mut self, index: usize) {
        let client = &mut self.clients[index];
        if client.current.is_some() {
            return;
        }
        let (op, kind, key) = if client.ops_left > 0 {
            client.ops_left -= 1;
            let k = self.rng.random_range(0..self.config.keys);
            let roll = self.rng.random_range(0..10);
            let key = Self::key(k);
            if roll < 4 {
                (
                    Op::Get {
                        table: b"t".to_vec(),
                        key: key.clone(),
                    },
                    OpKind::Get,
                    key,
                )
            } else if roll < 9 {
                let value = format!("c{index}-{}", self.stats.ops).into_bytes();
                (
                    Op::Put {
                        table: b"t".to_vec(),
                        key: key.clone(),
                        value: value.clone(),
                    },
                    OpKind::Put(value),
                    key,
                )
            } else {
                (
                    Op::Remove {
                        table: b"t".to_vec(),
                        key: key.clone(),
                    },
                    OpKind::Remove,
                    key,
                )
            }
        } else if let Some(k) = client.final_reads.pop() {
            let key = Self::key(k);
            (
                Op::Get {
                    table: b"t".to_vec(),
                    key: key.clone(),
                },
                OpKind::Get,
                key,
            )
        } else {
            return;
        };
        self.stats.ops += 1;
        let handle = self.history.invoke(index as u64, key, kind);
        let now = self.now;
        let client = &mut self.clients[index];
        let op_id = client.core.submit(now, op);
        client.current = Some((op_id, handle));
        self.drain_client(index);
    }

    fn complete(&mut self, index: usize, op: OpId, result: Result<Output, DdsError>) {
        let Some((current, handle)) = self.clients[index].current.take() else {
            return;
        };
        assert_eq!(current, op, "one operation in flight per simulated client");
        let think = Duration::from_millis(self.rng.random_range(0..60));
        self.clients[index].next_op_at = self.now + think;
        match result {
            Ok(Output::Value(value)) => self.history.complete(handle, OpResult::Value(value)),
            Ok(Output::Done) => self.history.complete(handle, OpResult::Ok),
            Err(DdsError::NotFound) => self.history.complete(handle, OpResult::Value(None)),
            Err(e) => {
                // Reads that failed, and writes that failed or whose outcome
                // is unknown, may or may not have taken effect.
                if matches!(e, DdsError::OutcomeUnknown(_)) {
                    self.stats.unknown_outcomes += 1;
                } else {
                    self.stats.failed_ops += 1;
                }
                // The recorder continues the client as a new session, as
                // the checker requires after an operation in doubt.
                self.history.unknown(handle);
            }
        }
    }

    // ------------------------------------------------------------------
    // Faults.

    /// Whether a client's commit to `brick`, a member other than its
    /// group's first (the commit that follows a write the primary
    /// committed), is lost together with a crash of that primary: once a
    /// run, for one commit in a hundred, when no other fault is under way.
    /// Returns the primary to crash.
    fn commit_lost_with(&mut self, brick: BrickId, request: &Request) -> Option<BrickId> {
        let Request::Commit { partition, .. } = request else {
            return None;
        };
        if !self.config.faults.crash_restart
            || self.stats.crashes > 0
            || self.pause_until.is_some()
            || !self.crashed_until.is_empty()
        {
            return None;
        }
        let rg = self.initial_maps.dp.rg_of(*partition)?;
        let primary = match self.truth.get(&rg) {
            Some((_, members)) if members.len() > 1 && members[0] != brick => members[0],
            _ => return None,
        };
        self.bricks[primary.0 as usize - 1].node.as_ref()?;
        (self.rng.random_range(0..100) == 0).then_some(primary)
    }

    fn inject_fault(&mut self) {
        let now = self.now;
        // Heal what is due first.
        if let Some((index, until)) = self.pause_until {
            if now >= until {
                self.bricks[index].paused = false;
                self.pause_until = None;
                let held = std::mem::take(&mut self.held);
                for envelope in held {
                    // Delivered after the resume, in their original order.
                    self.send(envelope);
                }
            }
        }
        let due: Vec<usize> = self
            .crashed_until
            .iter()
            .filter(|(_, until)| now >= *until)
            .map(|(index, _)| *index)
            .collect();
        self.crashed_until.retain(|(_, until)| now < *until);
        for index in due {
            let brick = &mut self.bricks[index];
            brick.incarnation += 1;
            let mut maps = self.initial_maps.clone();
            if let Some(saved) = &brick.saved_maps {
                maps.merge_newer(saved);
            }
            let clean = brick.clean_stop.take();
            let mut node = Self::boot(
                brick.id,
                &self.config,
                &maps,
                &brick.saved,
                brick.incarnation,
                clean.as_ref(),
                now,
            );
            if !brick.saved_votes.is_empty() {
                node.restore_votes(&brick.saved_votes, now)
                    .expect("the node's own votes decode");
            }
            brick.node = Some(node);
        }
        let f = self.config.faults.clone();
        let roll = self.rng.random_range(0..100);
        if f.connection_breaks && roll < 30 {
            let client = self.rng.random_range(0..self.config.clients);
            let brick = self.rng.random_range(1..=self.config.bricks);
            if self.rng.random_bool(0.5) {
                self.break_link((client_end(client), u64::from(brick)));
            } else {
                let other = self.rng.random_range(1..=self.config.bricks);
                if other != brick {
                    self.break_link((u64::from(brick), u64::from(other)));
                }
            }
        } else if f.crash_restart
            && roll < 45
            && self.crashed_until.is_empty()
            && self.pause_until.is_none()
            && self.stats.crashes == 0
        {
            let index = self.rng.random_range(0..self.bricks.len());
            // A third of them (by the same roll, so that the other faults
            // of a seed stay as they were) a clean stop, if the brick has
            // nothing prepared at that moment; a sixth a crash of every
            // member of one of the brick's groups; a fifth come back with
            // the arenas of one brick deleted (a replaced disk, the maps and
            // votes saved: losing those may undo a membership decision,
            // README): the brick, or the last member of the group that
            // crashed (its first member holds every write the group
            // acknowledged; losing it too is a double fault, which two
            // replicas do not claim to survive), if no group has that brick
            // as its only member (its data would be lost with the disk),
            // and no group whose members all crashed has it first.
            let mut down_bricks = vec![index];
            if roll % 6 == 1 {
                let id = self.bricks[index].id;
                // The lowest such group: `truth` is a hash map, whose order
                // would differ from run to run.
                if let Some((_, (_, members))) = self
                    .truth
                    .iter()
                    .filter(|(_, (_, members))| members.len() > 1 && members.contains(&id))
                    .min_by_key(|(rg, _)| **rg)
                {
                    down_bricks = members.iter().map(|b| b.0 as usize - 1).collect();
                    self.stats.group_crashes += 1;
                }
            }
            let wiped = (roll % 5 == 2)
                .then(|| *down_bricks.last().expect("one brick at least"))
                .filter(|wiped| {
                    // Nor one that is voting on a membership: it may be
                    // about to become a group's only member (its partner
                    // being removed), and losing its data then is a double
                    // fault too.
                    // Nor the first member of any group whose members all
                    // go down with it: the groups of the same bricks need
                    // not list them in the same order.
                    let brick = &self.bricks[*wiped];
                    let all_down = |members: &[BrickId]| {
                        members
                            .iter()
                            .all(|m| down_bricks.iter().any(|d| self.bricks[*d].id == *m))
                    };
                    self.truth.values().all(|(_, members)| {
                        members != &[brick.id]
                            && !(members.first() == Some(&brick.id) && all_down(members))
                    }) && brick.node.as_ref().is_some_and(|n| n.votes_open() == 0)
                });
            for index in down_bricks {
                self.crash_for_a_while(index, roll % 3 == 0);
                if wiped == Some(index) {
                    let brick = &mut self.bricks[index];
                    brick.saved.clear();
                    brick.clean_stop = None;
                    self.stats.wipes += 1;
                }
            }
        } else if f.pause_resume
            && roll < 60
            && self.pause_until.is_none()
            && self.crashed_until.is_empty()
            && self.stats.pauses == 0
        {
            let index = self.rng.random_range(0..self.bricks.len());
            if self.bricks[index].node.is_some() {
                self.bricks[index].paused = true;
                self.stats.pauses += 1;
                let length = Duration::from_millis(self.rng.random_range(100..2500));
                self.pause_until = Some((index, now + length));
            }
        }
        self.fault_at = now + Duration::from_millis(self.rng.random_range(20..200));
    }

    /// Stops brick `index` as [`Sim::crash`] does, and starts it again
    /// 0.1–2 s later.
    fn crash_for_a_while(&mut self, index: usize, clean: bool) {
        self.crash(index, clean);
        let down = Duration::from_millis(self.rng.random_range(100..2000));
        self.crashed_until.push((index, self.now + down));
    }

    /// Stops brick `index`: a crash, or with `clean` a clean stop if the
    /// brick would stop cleanly now.
    fn crash(&mut self, index: usize, clean: bool) {
        self.stats.crashes += 1;
        let id = self.bricks[index].id;
        let now = self.now;
        if let Some(node) = self.bricks[index].node.take() {
            self.bricks[index].clean_stop = clean
                .then(|| node.outcomes_for_a_clean_stop(now))
                .flatten()
                .map(|outcomes| CleanStop {
                    outcomes,
                    at: now,
                    leases_until: node.leases_granted_until(),
                });
            if self.bricks[index].clean_stop.is_some() {
                self.stats.clean_stops += 1;
            }
            // A partition still blank has its marker file beside the empty
            // arena: the next start takes it as blank again.
            let saved = node
                .partitions()
                .filter(|(p, _)| !node.blank_partitions().contains(p))
                .map(|(p, store)| (*p, store.bytes().to_vec()))
                .collect();
            self.bricks[index].saved = saved;
            self.bricks[index].saved_maps = Some(node.maps().clone());
            // What the votes file holds, which may lag the node's memory.
            self.bricks[index].saved_votes = node.votes_file().to_vec();
        }
        self.bricks[index].reads.clear();
        // Every connection to or from the brick breaks.
        let mut links: Vec<Link> = Vec::new();
        for c in 0..self.config.clients {
            links.push((client_end(c), u64::from(id.0)));
        }
        for b in 1..=self.config.bricks {
            if b != id.0 {
                links.push((u64::from(id.0), u64::from(b)));
                links.push((u64::from(b), u64::from(id.0)));
            }
        }
        for link in links {
            self.break_link(link);
        }
    }

    // ------------------------------------------------------------------
    // The run.

    fn workload_done(&self) -> bool {
        self.clients
            .iter()
            .all(|c| c.current.is_none() && c.ops_left == 0 && c.final_reads.is_empty())
    }

    fn next_event(&self) -> Option<Instant> {
        let mut next: Option<Instant> = self.network.peek().map(|Reverse((at, _))| *at);
        let mut take = |t: Option<Instant>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        for brick in &self.bricks {
            if !brick.paused {
                take(brick.node.as_ref().and_then(|n| n.poll_timeout()));
            }
        }
        for client in &self.clients {
            take(client.core.poll_timeout());
            if client.current.is_none() && (client.ops_left > 0 || !client.final_reads.is_empty()) {
                take(Some(client.next_op_at));
            }
        }
        take(Some(self.fault_at));
        next
    }

    /// Advances to the next event and handles everything due then.
    /// Returns false when nothing is left to happen.
    fn step(&mut self) -> bool {
        let Some(at) = self.next_event() else {
            return false;
        };
        self.now = self.now.max(at);
        let now = self.now;
        // Deliver every message due now.
        while let Some(Reverse((t, seq))) = self.network.peek().copied() {
            if t > now {
                break;
            }
            self.network.pop();
            if let Some(envelope) = self.in_flight.remove(&seq) {
                self.deliver(envelope);
            }
        }
        for i in 0..self.bricks.len() {
            let paused = self.bricks[i].paused;
            if let Some(node) = self.bricks[i].node.as_mut() {
                if !paused {
                    if node.poll_timeout().is_some_and(|t| t <= now) {
                        node.handle_timeout(now);
                    }
                    while node.background_step() {}
                }
            }
            self.drain_brick(i);
        }
        for i in 0..self.clients.len() {
            if self.clients[i]
                .core
                .poll_timeout()
                .is_some_and(|t| t <= now)
            {
                self.clients[i].core.handle_timeout(now);
            }
            self.drain_client(i);
        }
        if now >= self.fault_at {
            self.inject_fault();
        }
        true
    }

    /// Runs the workload under faults, then heals and checks invariants.
    pub fn run(mut self) -> Result<RunStats, Violation> {
        // Create the table everywhere before the workload.
        let now = self.now;
        for brick in &mut self.bricks {
            let node = brick.node.as_mut().unwrap();
            node.handle_request(
                now,
                ConnId(u64::MAX),
                0,
                Request::CreateTable {
                    name: b"t".to_vec(),
                },
            );
            while node.poll_transmit().is_some() {}
        }
        let deadline = self.start + Duration::from_secs(300);
        let faults_end = self.start + FAULT_PERIOD;
        let mut steps: u64 = 0;
        loop {
            steps += 1;
            if steps > STEPS_MAX || self.now > deadline {
                return Err(self.fail(format!(
                    "the run did not finish: {} ops left",
                    self.ops_left()
                )));
            }
            if self.now >= faults_end {
                self.config.faults = Faults::default();
            }
            let now = self.now;
            for i in 0..self.clients.len() {
                if self.clients[i].next_op_at <= now {
                    self.next_op(i);
                }
            }
            if self.workload_done() {
                break;
            }
            if !self.step() {
                return Err(self.fail("nothing left to do but operations are pending".into()));
            }
        }
        self.settle();
        self.check()
    }

    fn ops_left(&self) -> u64 {
        self.clients
            .iter()
            .map(|c| {
                u64::from(c.ops_left) + c.final_reads.len() as u64 + u64::from(c.current.is_some())
            })
            .sum()
    }

    /// Heals every fault and lets timers run until no transaction is
    /// prepared anywhere and the network is empty.
    fn settle(&mut self) {
        self.config.faults = Faults::default();
        self.fault_at = self.now;
        let until = self.now + Duration::from_secs(20);
        let mut steps = 0;
        while self.now < until && steps < STEPS_MAX {
            steps += 1;
            // A brick restarted after a crash must have been removed from
            // every group it shares before the run counts as quiet.
            let amnesiac_member = self.bricks.iter().any(|b| {
                b.node.as_ref().is_some_and(|n| {
                    self.truth.iter().any(|(rg, (_, members))| {
                        members.len() > 1
                            && members.contains(&b.id)
                            && (n.is_amnesiac_in(*rg) || n.is_blank_in(*rg))
                    })
                })
            });
            // Every group is back to its full degree: the bricks that
            // crashed rejoined by a copy.
            let healed = self
                .truth
                .values()
                .all(|(_, members)| members.len() == self.config.replicas as usize);
            let quiet = !amnesiac_member
                && healed
                && self.pause_until.is_none()
                && self.crashed_until.is_empty()
                && self.network.is_empty()
                && self.bricks.iter().all(|b| {
                    b.node
                        .as_ref()
                        .is_none_or(|n| n.is_quiet() && !n.is_copying())
                });
            if quiet || !self.step() {
                break;
            }
        }
    }

    fn fail(&self, what: String) -> Violation {
        Violation {
            seed: self.seed,
            what,
        }
    }

    fn check(mut self) -> Result<RunStats, Violation> {
        if let Some(v) = self.violations.first() {
            return Err(self.fail(v.clone()));
        }
        for i in 0..self.bricks.len() {
            self.observe_maps(i);
        }
        let over_bricks_up = |count: fn(&Node) -> u64| -> u64 {
            self.bricks
                .iter()
                .filter_map(|b| b.node.as_ref())
                .map(count)
                .sum()
        };
        self.stats.copies = over_bricks_up(Node::copies_finished);
        self.stats.copies_with_index = over_bricks_up(Node::copies_installed_with_index);
        if let Some((rg, (epoch, members))) = self
            .truth
            .iter()
            .find(|(_, (_, members))| members.len() != self.config.replicas as usize)
        {
            return Err(self.fail(format!(
                "{rg} has {} members at epoch {epoch} once quiet, not {}: {members:?}",
                members.len(),
                self.config.replicas
            )));
        }
        let history = self.history.finish();
        let report = crate::linearizability::check(&history);
        if !report.is_ok() {
            return Err(self.fail(format!("history is not linearizable:\n{report}")));
        }
        // I2: once quiet, the live members of each group hold the same data.
        for i in 0..self.bricks.len() {
            self.observe_maps(i);
        }
        for (leaf, rg) in self.initial_maps.dp.leaves() {
            let Some((_, members)) = self.truth.get(&rg) else {
                continue;
            };
            let mut sums = Vec::new();
            for member in members {
                let brick = &self.bricks[member.0 as usize - 1];
                if let Some(node) = brick
                    .node
                    .as_ref()
                    .filter(|n| (!n.is_amnesiac_in(rg) && !n.is_blank_in(rg)) || members.len() == 1)
                {
                    if let Some((_, store)) = node.partitions().find(|(p, _)| **p == leaf) {
                        sums.push((*member, store.checksum()));
                    }
                }
            }
            if sums.windows(2).any(|w| w[0].1 != w[1].1) {
                return Err(self.fail(format!("replicas of {leaf} differ once quiet: {sums:?}")));
            }
        }
        Ok(self.stats)
    }
}
