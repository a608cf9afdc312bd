//! Membership votes and the primary's fencing, between brick state machines
//! driven by hand (messages delivered in order, links cut, a brick paused):
//! - the double fault where the two members of a group cannot reach each
//!   other while both still reach the third brick, and each is asked to
//!   remove the other: at most one removal goes through, and every brick
//!   ends with the same maps;
//! - a brick cut off from the majority decides nothing;
//! - a value accepted but not decided holds the group's writes until the
//!   vote is settled;
//! - a primary that was paused and removed does not answer a decision.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use brick::node::{ConnId, Node, NodeConfig, RecoveryConfig, Storage, Transmit};
use brick::store::{Backing, Partition};
use maps::config::ClusterConfig;
use maps::{BrickId, Maps, PartitionId, RgId};
use wire::{Reply, Request};

const CAPACITY: u64 = 256 * 1024;

fn config(bricks: u32) -> NodeConfig {
    NodeConfig {
        lease: Duration::from_millis(600),
        prepare_timeout: Duration::from_millis(600),
        probe_timeout: Duration::from_millis(200),
        outcome_retention: Duration::from_secs(30),
        incarnation: 1,
        amnesiac: false,
        blank: Default::default(),
        restarted: false,
        start_fence: Duration::ZERO,
        replicas: 2,
        bricks: (1..=bricks).map(BrickId).collect(),
        partition_capacity: CAPACITY,
        storage: Storage::Anonymous,
        recovery: RecoveryConfig {
            // No healing during the test: only the removals are looked at.
            heal_after: Duration::from_secs(3600),
            grace: Duration::from_secs(1),
            copy_lease: Duration::from_millis(300),
            copy_rate: 0,
        },
    }
}

/// A message in flight: a request from one brick to another, or the reply.
enum Envelope {
    Request {
        from: BrickId,
        to: BrickId,
        id: u64,
        request: Request,
    },
    Reply {
        to: BrickId,
        from: BrickId,
        id: u64,
        reply: Reply,
    },
}

struct Net {
    nodes: BTreeMap<BrickId, Node>,
    queue: VecDeque<Envelope>,
    /// Links (either direction) on which every message is lost.
    cut: Vec<(BrickId, BrickId)>,
    now: Instant,
    /// Client replies: (brick, request id) → reply.
    client_replies: Vec<(BrickId, u64, Reply)>,
    /// Bricks that run no timers (a paused process); cut links stand for
    /// the messages it does not handle.
    paused: Vec<BrickId>,
    /// Phase-two votes (`ConfigVote` with a value) on these links are lost.
    drop_accepts: Vec<(BrickId, BrickId)>,
    /// Answers to votes (`ConfigVote`) on these links (from the acceptor,
    /// to the proposer) wait in `held` until `release_held`.
    hold_vote_answers: Vec<(BrickId, BrickId)>,
    held: Vec<Envelope>,
    /// Liveness probes (`Ping`) sent so far.
    probes: usize,
}

/// Connection ids name the peer brick; clients use ids above this.
const CLIENT_CONN: u64 = 1 << 32;

impl Net {
    fn new(bricks: u32) -> Net {
        Net::started(bricks, false)
    }

    /// With `blank`, every brick starts without data (a new cluster, as the
    /// daemon starts one).
    fn started(bricks: u32, blank: bool) -> Net {
        let maps: Maps = ClusterConfig::for_simulation(bricks, 2, 1).initial_maps();
        let now = Instant::now();
        let mut nodes = BTreeMap::new();
        for b in 1..=bricks {
            let id = BrickId(b);
            let mut partitions = BTreeMap::new();
            for p in maps.partitions_of(id) {
                let (store, _) = Partition::open(Backing::Anonymous, CAPACITY).unwrap();
                partitions.insert(p, store);
            }
            let mut config = config(bricks);
            if blank {
                config.blank = partitions.keys().copied().collect();
            }
            nodes.insert(id, Node::new(id, config, maps.clone(), partitions, now));
        }
        Net {
            nodes,
            queue: VecDeque::new(),
            cut: Vec::new(),
            now,
            client_replies: Vec::new(),
            paused: Vec::new(),
            drop_accepts: Vec::new(),
            hold_vote_answers: Vec::new(),
            held: Vec::new(),
            probes: 0,
        }
    }

    fn lost(&self, a: BrickId, b: BrickId) -> bool {
        self.cut.contains(&(a, b)) || self.cut.contains(&(b, a))
    }

    fn collect(&mut self) {
        let ids: Vec<BrickId> = self.nodes.keys().copied().collect();
        for from in ids {
            while let Some(t) = self.nodes.get_mut(&from).unwrap().poll_transmit() {
                match t {
                    Transmit::Peer {
                        peer,
                        request_id,
                        request,
                    } => self.queue.push_back(Envelope::Request {
                        from,
                        to: peer,
                        id: request_id,
                        request,
                    }),
                    Transmit::CopyChunk {
                        peer,
                        request_id,
                        chunk,
                    } => {
                        let request = self.nodes[&from]
                            .copy_chunk_request(&chunk)
                            .expect("the chunk's partition is still there");
                        self.queue.push_back(Envelope::Request {
                            from,
                            to: peer,
                            id: request_id,
                            request,
                        });
                    }
                    Transmit::CopyIndex {
                        peer,
                        request_id,
                        part,
                    } => self.queue.push_back(Envelope::Request {
                        from,
                        to: peer,
                        id: request_id,
                        request: part.request_ref().to_request(),
                    }),
                    Transmit::Reply {
                        conn,
                        request_id,
                        reply,
                    } => {
                        if conn.0 >= CLIENT_CONN {
                            self.client_replies.push((from, request_id, reply));
                        } else {
                            self.queue.push_back(Envelope::Reply {
                                to: BrickId(conn.0 as u32),
                                from,
                                id: request_id,
                                reply,
                            });
                        }
                    }
                }
            }
        }
    }

    /// Delivers every message in flight (dropping those on cut links), then
    /// advances time by `step` and fires timers.
    fn run(&mut self, total: Duration, step: Duration) {
        let end = self.now + total;
        while self.now < end {
            for _ in 0..10_000 {
                self.collect();
                let Some(envelope) = self.queue.pop_front() else {
                    break;
                };
                let now = self.now;
                match envelope {
                    Envelope::Request {
                        from,
                        to,
                        id,
                        request,
                    } => {
                        if self.lost(from, to) {
                            self.nodes
                                .get_mut(&from)
                                .unwrap()
                                .handle_peer_unreachable(now, to);
                            continue;
                        }
                        if self.drop_accepts.contains(&(from, to))
                            && matches!(request, Request::ConfigVote { value: Some(_), .. })
                        {
                            continue;
                        }
                        if request == Request::Ping {
                            self.probes += 1;
                        }
                        let conn = ConnId(u64::from(from.0));
                        self.nodes
                            .get_mut(&to)
                            .unwrap()
                            .handle_request(now, conn, id, request);
                    }
                    Envelope::Reply {
                        to,
                        from,
                        id,
                        reply,
                    } => {
                        if self.hold_vote_answers.contains(&(from, to))
                            && matches!(reply, Reply::ConfigVote { .. })
                        {
                            self.held.push(Envelope::Reply {
                                to,
                                from,
                                id,
                                reply,
                            });
                            continue;
                        }
                        if !self.lost(from, to) {
                            self.nodes
                                .get_mut(&to)
                                .unwrap()
                                .handle_peer_reply(now, from, id, reply);
                        }
                    }
                }
            }
            self.now += step;
            let now = self.now;
            for (id, node) in self.nodes.iter_mut() {
                if self.paused.contains(id) {
                    continue;
                }
                if node.poll_timeout().is_some_and(|at| at <= now) {
                    node.handle_timeout(now);
                }
            }
        }
    }

    /// Delivers the held vote answers, in the order they were held, and
    /// holds no more.
    fn release_held(&mut self) {
        self.hold_vote_answers.clear();
        self.queue.extend(self.held.drain(..));
    }

    fn group(&self, brick: BrickId) -> (u64, Vec<BrickId>) {
        let entry = self.nodes[&brick].maps().rg.get(RgId(0)).unwrap();
        (entry.epoch, entry.bricks.clone())
    }
}

#[test]
fn two_members_removing_each_other_at_once_decide_one_membership() {
    let mut net = Net::new(3);
    // Leases settle first, with every link up.
    net.run(Duration::from_millis(300), Duration::from_millis(5));
    assert_eq!(net.group(BrickId(1)), (1, vec![BrickId(1), BrickId(2)]));
    // The pair loses each other; both still reach brick 3.
    net.cut.push((BrickId(1), BrickId(2)));
    // Each member is asked to remove the other at the same moment (the
    // removal of 2 is led by 1, that of 1 by 2).
    let now = net.now;
    for (leader, target) in [(BrickId(1), BrickId(2)), (BrickId(2), BrickId(1))] {
        net.nodes.get_mut(&leader).unwrap().handle_request(
            now,
            ConnId(CLIENT_CONN + u64::from(leader.0)),
            7,
            Request::Exclude {
                rg: RgId(0),
                epoch: 1,
                brick: target,
            },
        );
    }
    net.run(Duration::from_secs(5), Duration::from_millis(5));
    // One removal went through, and every brick agrees on it: the one
    // whose removal lost was told and took the winner's maps.
    let (epoch, members) = net.group(BrickId(3));
    assert_eq!(epoch, 2, "one change, decided once");
    assert_eq!(members.len(), 1, "{members:?}");
    for b in [BrickId(1), BrickId(2)] {
        let (e, m) = net.group(b);
        if e == 2 {
            assert_eq!(m, members, "{b} holds another membership for epoch 2");
        }
    }
    let survivor = members[0];
    assert_eq!(net.group(survivor), (2, members.clone()));
    // Both callers got an answer: the maps after the change.
    let answered: Vec<BrickId> = net
        .client_replies
        .iter()
        .filter(|(_, id, r)| *id == 7 && matches!(r, Reply::Maps(_)))
        .map(|(b, _, _)| *b)
        .collect();
    assert!(answered.contains(&survivor), "{answered:?}");
}

#[test]
fn a_brick_cut_off_from_the_majority_decides_nothing() {
    let mut net = Net::new(3);
    net.run(Duration::from_millis(300), Duration::from_millis(5));
    // Brick 1 reaches nobody. Asked to remove its partner, it cannot do it
    // on its own however long it waits; the side with the majority removes
    // brick 1 instead.
    net.cut.push((BrickId(1), BrickId(2)));
    net.cut.push((BrickId(1), BrickId(3)));
    let now = net.now;
    net.nodes.get_mut(&BrickId(1)).unwrap().handle_request(
        now,
        ConnId(CLIENT_CONN + 1),
        9,
        Request::Exclude {
            rg: RgId(0),
            epoch: 1,
            brick: BrickId(2),
        },
    );
    net.run(Duration::from_secs(3), Duration::from_millis(5));
    assert_eq!(net.group(BrickId(1)).0, 1, "no majority, no new epoch");
    assert_eq!(net.group(BrickId(2)), (2, vec![BrickId(2)]));
    assert_eq!(net.group(BrickId(3)), (2, vec![BrickId(2)]));
    // Reconnected, brick 1 learns the decision (and may already be back
    // in the group by recovery, at a later epoch): it agrees with brick 2.
    net.cut.clear();
    net.run(Duration::from_secs(2), Duration::from_millis(5));
    assert!(net.group(BrickId(1)).0 >= 2);
    assert_eq!(net.group(BrickId(1)), net.group(BrickId(2)));
}

/// Sends a client request to `brick` and returns the request id used.
/// One of a brick's stats, asked for by a client with request `id`.
fn stat(net: &mut Net, brick: BrickId, id: u64, name: &str) -> Option<u64> {
    client_request(net, brick, id, Request::Stats);
    match client_reply(net, brick, id) {
        Some(Reply::Stats(entries)) => entries.iter().find(|(k, _)| k == name).map(|(_, v)| *v),
        other => panic!("stats: {other:?}"),
    }
}

/// A brick's partitions as a restart after a crash finds them.
fn reopened(node: &Node) -> BTreeMap<PartitionId, Partition> {
    node.partitions()
        .map(|(p, store)| {
            let (reopened, _) = Partition::reopen_anonymous(store.bytes(), CAPACITY).unwrap();
            (*p, reopened)
        })
        .collect()
}

fn client_request(net: &mut Net, brick: BrickId, id: u64, request: Request) {
    let now = net.now;
    net.nodes
        .get_mut(&brick)
        .unwrap()
        .handle_request(now, ConnId(CLIENT_CONN + 100), id, request);
    net.collect();
}

fn client_reply(net: &Net, brick: BrickId, id: u64) -> Option<&Reply> {
    net.client_replies
        .iter()
        .find(|(b, i, _)| *b == brick && *i == id)
        .map(|(_, _, r)| r)
}

/// Three bricks after their first leases, with table `t` created on bricks
/// 1 and 2, the members of the one group; its partition and fingerprint.
fn group_with_a_table() -> (Net, PartitionId, u32) {
    let mut net = Net::new(3);
    net.run(Duration::from_millis(300), Duration::from_millis(5));
    let maps = net.nodes[&BrickId(1)].maps().clone();
    let (partition, _) = maps.dp.leaves().next().unwrap();
    let fingerprint = maps.partition_fingerprint(partition).unwrap();
    for b in [BrickId(1), BrickId(2)] {
        let create = Request::CreateTable {
            name: b"t".to_vec(),
        };
        client_request(&mut net, b, 1, create);
    }
    (net, partition, fingerprint)
}

/// Transaction 42's prepare of `k` = `v` in table `t`, with bricks 1 (the
/// primary) and 2 as participants.
fn prepare_42(partition: PartitionId, fingerprint: u32, decide: bool) -> Request {
    let participants = vec![BrickId(1), BrickId(2)];
    prepare_k(42, b"v", participants, (partition, fingerprint), decide)
}

/// Transaction 42 prepared at brick 2 (request 2), then prepared and
/// decided at brick 1, the primary (request 3): the two answers so far.
fn prepare_42_at_both(
    net: &mut Net,
    partition: PartitionId,
    fingerprint: u32,
) -> (Option<Reply>, Option<Reply>) {
    for (b, id) in [(BrickId(2), 2), (BrickId(1), 3)] {
        client_request(
            net,
            b,
            id,
            prepare_42(partition, fingerprint, b == BrickId(1)),
        );
    }
    (
        client_reply(net, BrickId(2), 2).cloned(),
        client_reply(net, BrickId(1), 3).cloned(),
    )
}

/// Transaction 42 prepared at brick 2, then prepared and decided at brick
/// 1, the primary, which commits it (brick 2 never hears the commit).
fn commit_42_at_the_primary(net: &mut Net, partition: PartitionId, fingerprint: u32) {
    let (_, primary) = prepare_42_at_both(net, partition, fingerprint);
    assert_eq!(primary, Some(Reply::TxState(wire::TxState::Committed)));
}

/// A client's read of `k` in table `t` at `brick`, answered at once or not.
fn get_k(net: &mut Net, brick: BrickId, partition: PartitionId, id: u64) -> Option<Reply> {
    let request = Request::Get {
        partition,
        fingerprint: net.nodes[&brick]
            .maps()
            .partition_fingerprint(partition)
            .unwrap(),
        table: b"t".to_vec(),
        key: b"k".to_vec(),
    };
    client_request(net, brick, id, request);
    client_reply(net, brick, id).cloned()
}

/// A prepare of `k` = `value` in table `t` by transaction `txid`; the
/// first participant is the primary.
fn prepare_k(
    txid: u64,
    value: &[u8],
    participants: Vec<BrickId>,
    (partition, fingerprint): (PartitionId, u32),
    decide: bool,
) -> Request {
    Request::Prepare {
        txid: wire::TxId(txid),
        partition,
        fingerprint,
        table: b"t".to_vec(),
        key: b"k".to_vec(),
        write: wire::Write::Put(value.to_vec()),
        participants,
        decide,
    }
}

#[test]
fn a_paused_and_removed_primary_does_not_decide_for_the_group() {
    let (mut net, partition, fingerprint) = group_with_a_table();
    // A write prepared on both members: brick 1 is its primary.
    let txid = wire::TxId(42);
    for b in [BrickId(1), BrickId(2)] {
        client_request(&mut net, b, 2, prepare_42(partition, fingerprint, false));
        assert_eq!(client_reply(&net, b, 2), Some(&Reply::Voted), "{b}");
    }
    // Brick 1 is paused long enough for brick 2 to remove it.
    net.paused.push(BrickId(1));
    net.cut.push((BrickId(1), BrickId(2)));
    net.cut.push((BrickId(1), BrickId(3)));
    net.run(Duration::from_secs(3), Duration::from_millis(5));
    assert_eq!(net.group(BrickId(2)), (2, vec![BrickId(2)]));
    assert_eq!(net.group(BrickId(1)).0, 1, "brick 1 has not heard yet");
    // It resumes, and the coordinator's commit reaches it before anything
    // else: with stale maps it believes itself the primary. It must not
    // answer for the group: its lease ran out while it was paused.
    net.paused.clear();
    net.cut.clear();
    client_request(&mut net, BrickId(1), 3, Request::Commit { txid, partition });
    assert_eq!(
        client_reply(&net, BrickId(1), 3),
        None,
        "the decision waits"
    );
    net.run(Duration::from_secs(2), Duration::from_millis(5));
    match client_reply(&net, BrickId(1), 3) {
        Some(Reply::Error(e)) => assert_eq!(e.code, wire::ErrorCode::Fenced, "{e:?}"),
        other => panic!("a removed primary answered the decision: {other:?}"),
    }
}

/// A primary that committed a write (which was then read) and crashed
/// before its answer got out comes back without its memory, and the
/// coordinator asks it again. It cannot tell whether it committed, so it
/// must not vote no — the other members would abort a write that was read
/// — but say "unknown" and leave the write prepared at the others, for the
/// coordinator to decide with the next member once it is removed.
#[test]
fn a_restarted_primary_does_not_vote_no_on_a_prepare_that_decides() {
    let (mut net, partition, fingerprint) = group_with_a_table();
    let maps = net.nodes[&BrickId(1)].maps().clone();
    let prepare = |decide| prepare_42(partition, fingerprint, decide);
    client_request(&mut net, BrickId(2), 2, prepare(false));
    assert_eq!(client_reply(&net, BrickId(2), 2), Some(&Reply::Voted));
    // Brick 1, the primary, restarts with nothing: no tables, no outcomes.
    let mut restarted = config(3);
    restarted.restarted = true;
    restarted.amnesiac = true;
    restarted.incarnation = 2;
    let partitions = maps
        .partitions_of(BrickId(1))
        .into_iter()
        .map(|p| (p, Partition::open(Backing::Anonymous, CAPACITY).unwrap().0))
        .collect();
    let node = Node::new(BrickId(1), restarted, maps.clone(), partitions, net.now);
    net.nodes.insert(BrickId(1), node);
    client_request(&mut net, BrickId(1), 3, prepare(true));
    assert_eq!(
        client_reply(&net, BrickId(1), 3),
        Some(&Reply::TxState(wire::TxState::Unknown))
    );
    // Asked by the other member, it still cannot tell.
    client_request(
        &mut net,
        BrickId(1),
        4,
        Request::TxStatus {
            txid: wire::TxId(42),
            partition,
        },
    );
    assert_eq!(
        client_reply(&net, BrickId(1), 4),
        Some(&Reply::TxState(wire::TxState::Unknown))
    );
}

/// The primary's answer to transaction `txid`'s `TxStatus`, asked by a
/// client with request `id`.
fn status_at(net: &mut Net, brick: BrickId, id: u64, txid: u64, partition: PartitionId) -> Reply {
    let txid = wire::TxId(txid);
    client_request(net, brick, id, Request::TxStatus { txid, partition });
    client_reply(net, brick, id)
        .cloned()
        .expect("answered at once")
}

/// A prepare that decides, which the primary may decide at once, commits
/// without leaving anything behind: nothing prepared, no lock (a read and
/// a later write of the key go through at once), the outcome remembered,
/// and the counters of a prepare and a commit.
#[test]
fn a_prepare_that_decides_at_once_leaves_no_lock_and_remembers_its_outcome() {
    let (mut net, partition, fingerprint) = group_with_a_table();
    let committed = Some(Reply::TxState(wire::TxState::Committed));
    client_request(
        &mut net,
        BrickId(2),
        2,
        prepare_42(partition, fingerprint, false),
    );
    assert_eq!(client_reply(&net, BrickId(2), 2), Some(&Reply::Voted));
    let prepares = stat(&mut net, BrickId(1), 3, "prepares").unwrap();
    let commits = stat(&mut net, BrickId(1), 4, "commits").unwrap();
    client_request(
        &mut net,
        BrickId(1),
        5,
        prepare_42(partition, fingerprint, true),
    );
    assert_eq!(client_reply(&net, BrickId(1), 5).cloned(), committed);
    assert_eq!(stat(&mut net, BrickId(1), 6, "prepared"), Some(0));
    assert_eq!(
        stat(&mut net, BrickId(1), 7, "prepares"),
        Some(prepares + 1)
    );
    assert_eq!(stat(&mut net, BrickId(1), 8, "commits"), Some(commits + 1));
    assert_eq!(
        get_k(&mut net, BrickId(1), partition, 9),
        Some(Reply::Value(b"v".to_vec())),
        "a read of the key is not held by a lock"
    );
    // Asked again (its answer lost) or about by a peer: the outcome stands.
    client_request(
        &mut net,
        BrickId(1),
        10,
        prepare_42(partition, fingerprint, true),
    );
    assert_eq!(client_reply(&net, BrickId(1), 10).cloned(), committed);
    assert_eq!(
        Some(status_at(&mut net, BrickId(1), 11, 42, partition)),
        committed
    );
    // The next write of the key takes its lock like any other.
    let participants = vec![BrickId(1), BrickId(2)];
    let write_43 = prepare_k(43, b"w", participants, (partition, fingerprint), false);
    client_request(&mut net, BrickId(1), 12, write_43);
    assert_eq!(client_reply(&net, BrickId(1), 12), Some(&Reply::Voted));
    assert_eq!(stat(&mut net, BrickId(1), 13, "prepared"), Some(1));
    assert_eq!(get_k(&mut net, BrickId(1), partition, 14), None, "locked");
}

/// A prepare that decides, at a primary that holds no lease yet, is held
/// prepared (its key locked) and decided once the lease comes.
#[test]
fn a_prepare_that_decides_without_a_lease_waits_for_it_prepared() {
    let mut net = Net::new(3);
    let maps = net.nodes[&BrickId(1)].maps().clone();
    let (partition, _) = maps.dp.leaves().next().unwrap();
    let fingerprint = maps.partition_fingerprint(partition).unwrap();
    for b in [BrickId(1), BrickId(2)] {
        let name = b"t".to_vec();
        client_request(&mut net, b, 1, Request::CreateTable { name });
        assert_eq!(client_reply(&net, b, 1), Some(&Reply::Ok), "{b}");
    }
    let (vote, primary) = prepare_42_at_both(&mut net, partition, fingerprint);
    assert_eq!(vote, Some(Reply::Voted));
    assert_eq!(primary, None, "the decision waits");
    assert_eq!(stat(&mut net, BrickId(1), 4, "prepared"), Some(1));
    assert_eq!(
        status_at(&mut net, BrickId(1), 5, 42, partition),
        Reply::TxState(wire::TxState::Prepared)
    );
    net.run(Duration::from_millis(300), Duration::from_millis(5));
    assert_eq!(
        client_reply(&net, BrickId(1), 3),
        Some(&Reply::TxState(wire::TxState::Committed))
    );
    assert_eq!(stat(&mut net, BrickId(1), 6, "prepared"), Some(0));
    assert_eq!(
        get_k(&mut net, BrickId(1), partition, 7),
        Some(Reply::Value(b"v".to_vec()))
    );
}

/// A prepare that decides, for a key another transaction holds prepared,
/// is refused as a plain prepare is: a lock conflict, counted, remembered
/// as aborted, and the other transaction still holds the key.
#[test]
fn a_prepare_that_decides_on_a_locked_key_is_refused() {
    let (mut net, partition, fingerprint) = group_with_a_table();
    let participants = vec![BrickId(1), BrickId(2)];
    let write_41 = prepare_k(41, b"u", participants, (partition, fingerprint), false);
    client_request(&mut net, BrickId(1), 2, write_41);
    assert_eq!(client_reply(&net, BrickId(1), 2), Some(&Reply::Voted));
    let conflicts = stat(&mut net, BrickId(1), 3, "lock_conflicts").unwrap();
    client_request(
        &mut net,
        BrickId(1),
        4,
        prepare_42(partition, fingerprint, true),
    );
    match client_reply(&net, BrickId(1), 4) {
        Some(Reply::Error(e)) => assert_eq!(e.code, wire::ErrorCode::LockConflict, "{e:?}"),
        other => panic!("a prepare that decides took a locked key: {other:?}"),
    }
    assert_eq!(
        stat(&mut net, BrickId(1), 5, "lock_conflicts"),
        Some(conflicts + 1)
    );
    assert_eq!(stat(&mut net, BrickId(1), 6, "prepared"), Some(1));
    assert_eq!(
        status_at(&mut net, BrickId(1), 7, 42, partition),
        Reply::TxState(wire::TxState::Aborted)
    );
    assert_eq!(
        status_at(&mut net, BrickId(1), 8, 41, partition),
        Reply::TxState(wire::TxState::Prepared)
    );
    assert_eq!(
        get_k(&mut net, BrickId(1), partition, 9),
        None,
        "still locked"
    );
}

/// A key too long for the store key to be built on the stack is locked,
/// refused to a second writer, and committed at once like a short one.
#[test]
fn a_long_key_is_locked_and_committed_like_a_short_one() {
    let (mut net, partition, fingerprint) = group_with_a_table();
    let key = vec![b'x'; 300];
    let prepare = |txid: u64, decide: bool| Request::Prepare {
        txid: wire::TxId(txid),
        partition,
        fingerprint,
        table: b"t".to_vec(),
        key: key.clone(),
        write: wire::Write::Put(b"v".to_vec()),
        participants: vec![BrickId(1), BrickId(2)],
        decide,
    };
    client_request(&mut net, BrickId(1), 2, prepare(41, false));
    assert_eq!(client_reply(&net, BrickId(1), 2), Some(&Reply::Voted));
    client_request(&mut net, BrickId(1), 3, prepare(42, true));
    match client_reply(&net, BrickId(1), 3) {
        Some(Reply::Error(e)) => assert_eq!(e.code, wire::ErrorCode::LockConflict, "{e:?}"),
        other => panic!("a locked long key was taken: {other:?}"),
    }
    client_request(
        &mut net,
        BrickId(1),
        4,
        Request::Abort {
            txid: wire::TxId(41),
            partition,
        },
    );
    assert_eq!(
        client_reply(&net, BrickId(1), 4),
        Some(&Reply::TxState(wire::TxState::Aborted))
    );
    client_request(&mut net, BrickId(1), 5, prepare(43, true));
    assert_eq!(
        client_reply(&net, BrickId(1), 5),
        Some(&Reply::TxState(wire::TxState::Committed))
    );
    assert_eq!(stat(&mut net, BrickId(1), 6, "prepared"), Some(0));
}

/// A brick saves the outcomes of its transactions for a clean stop only
/// when it loses nothing by stopping: not while a write is prepared there,
/// nor after a crash before it was copied back. Started again with them,
/// a primary answers as a running one; without them it cannot tell.
#[test]
fn a_clean_stop_saves_outcomes_only_when_nothing_is_lost_and_they_come_back() {
    let (mut net, partition, fingerprint) = group_with_a_table();
    let maps = net.nodes[&BrickId(1)].maps().clone();
    let fresh_partitions = || -> BTreeMap<PartitionId, Partition> {
        maps.partitions_of(BrickId(1))
            .into_iter()
            .map(|p| (p, Partition::open(Backing::Anonymous, CAPACITY).unwrap().0))
            .collect()
    };
    let status = |net: &mut Net, id: u64, txid: u64| {
        let txid = wire::TxId(txid);
        client_request(net, BrickId(1), id, Request::TxStatus { txid, partition });
        client_reply(net, BrickId(1), id).cloned()
    };
    // Write 42 prepared at brick 2, then prepared and committed at brick 1,
    // its primary; brick 2 waits for the commit.
    let (vote, primary) = prepare_42_at_both(&mut net, partition, fingerprint);
    assert_eq!(vote, Some(Reply::Voted));
    assert_eq!(primary, Some(Reply::TxState(wire::TxState::Committed)));
    assert!(
        net.nodes[&BrickId(2)]
            .outcomes_for_a_clean_stop(net.now)
            .is_none(),
        "a prepared write would be lost"
    );
    let saved = net.nodes[&BrickId(1)]
        .outcomes_for_a_clean_stop(net.now)
        .expect("brick 1 holds nothing prepared");

    // Brick 1 back after a crash, not copied back yet: never clean.
    let mut crashed = config(3);
    crashed.restarted = true;
    crashed.amnesiac = true;
    crashed.incarnation = 2;
    let node = Node::new(
        BrickId(1),
        crashed,
        maps.clone(),
        fresh_partitions(),
        net.now,
    );
    assert!(node.outcomes_for_a_clean_stop(net.now).is_none());

    // Back after the clean stop without the saved outcomes: it cannot
    // tell whether it decided a transaction it does not know.
    let mut restarted = config(3);
    restarted.restarted = true;
    restarted.incarnation = 3;
    let node = Node::new(
        BrickId(1),
        restarted.clone(),
        maps.clone(),
        fresh_partitions(),
        net.now,
    );
    net.nodes.insert(BrickId(1), node);
    let unknown = Some(Reply::TxState(wire::TxState::Unknown));
    assert_eq!(status(&mut net, 4, 42), unknown);
    assert_eq!(status(&mut net, 5, 77), unknown);

    // With them, as a running brick: 42 committed, 77 never seen.
    let mut node = Node::new(
        BrickId(1),
        restarted,
        maps.clone(),
        fresh_partitions(),
        net.now,
    );
    node.restore_outcomes(&saved, net.now, Duration::from_secs(1))
        .unwrap();
    net.nodes.insert(BrickId(1), node);
    assert_eq!(
        status(&mut net, 6, 42),
        Some(Reply::TxState(wire::TxState::Committed))
    );
    assert_eq!(
        status(&mut net, 7, 77),
        Some(Reply::TxState(wire::TxState::Aborted))
    );
}

#[test]
fn an_accepted_undecided_change_holds_writes_until_it_is_settled() {
    let mut net = Net::new(3);
    net.run(Duration::from_millis(300), Duration::from_millis(5));
    for b in [BrickId(1), BrickId(2)] {
        client_request(
            &mut net,
            b,
            1,
            Request::CreateTable {
                name: b"t".to_vec(),
            },
        );
    }
    // Brick 2 stops; brick 1 removes it with brick 3's promises, but its
    // acceptance never reaches brick 3: the removal is accepted by brick 1
    // alone, not decided, and could still be adopted by a later ballot.
    net.paused.push(BrickId(2));
    net.cut.push((BrickId(1), BrickId(2)));
    net.cut.push((BrickId(2), BrickId(3)));
    net.drop_accepts.push((BrickId(1), BrickId(3)));
    net.run(Duration::from_secs(3), Duration::from_millis(5));
    assert_eq!(net.group(BrickId(1)).0, 1, "not decided");
    // Its stats say so (dds-status counts it as a vote open).
    let votes_undecided = |net: &mut Net, id: u64| stat(net, BrickId(1), id, "votes_undecided");
    assert_eq!(votes_undecided(&mut net, 10), Some(1));
    let prepare = |txid: u64, net: &Net| {
        let maps = net.nodes[&BrickId(1)].maps().clone();
        let (partition, _) = maps.dp.leaves().next().unwrap();
        let participants = maps.route(partition).unwrap().bricks.to_vec();
        Request::Prepare {
            txid: wire::TxId(txid),
            partition,
            fingerprint: maps.partition_fingerprint(partition).unwrap(),
            table: b"t".to_vec(),
            key: b"k".to_vec(),
            write: wire::Write::Put(b"v".to_vec()),
            participants,
            decide: false,
        }
    };
    // Meanwhile brick 1 takes no write in the group: it waits, then is
    // refused with `WritesHeld`.
    let request = prepare(7, &net);
    client_request(&mut net, BrickId(1), 2, request);
    assert_eq!(client_reply(&net, BrickId(1), 2), None, "the prepare waits");
    net.run(Duration::from_millis(100), Duration::from_millis(5));
    match client_reply(&net, BrickId(1), 2) {
        Some(Reply::Error(e)) => assert_eq!(e.code, wire::ErrorCode::WritesHeld, "{e:?}"),
        other => panic!("a brick with an undecided vote took a write: {other:?}"),
    }
    // Acceptances get through again: brick 1 settles its vote (adopting
    // its own accepted removal) and writes go on at the new epoch.
    net.drop_accepts.clear();
    net.run(Duration::from_secs(2), Duration::from_millis(5));
    assert_eq!(net.group(BrickId(1)), (2, vec![BrickId(1)]));
    assert_eq!(net.group(BrickId(3)), (2, vec![BrickId(1)]));
    assert_eq!(votes_undecided(&mut net, 11), Some(0));
    let request = prepare(8, &net);
    client_request(&mut net, BrickId(1), 3, request);
    assert_eq!(client_reply(&net, BrickId(1), 3), Some(&Reply::Voted));
}

/// Both members of a group crash at once (brick 1, the primary, committed
/// write 42; brick 2 was prepared and never heard the commit) and restart
/// with the arenas they had. Neither can be copied back from a live
/// member, so the first member takes the group alone once the other said
/// it restarted too: it holds every write the group acknowledged. It
/// copies the group back to brick 2, which becomes the first member, since
/// brick 1 would answer "unknown" about every transaction it does not know
/// as primary.
#[test]
fn a_group_whose_members_all_crashed_is_taken_by_its_first_member() {
    let (mut net, partition, fingerprint) = group_with_a_table();
    commit_42_at_the_primary(&mut net, partition, fingerprint);
    let maps = net.nodes[&BrickId(1)].maps().clone();
    let epoch = net.group(BrickId(1)).0;
    let mut crashed = config(3);
    crashed.restarted = true;
    crashed.amnesiac = true;
    crashed.incarnation = 2;
    // Brick 1 restarts first; brick 2 is still down.
    let arena = |net: &Net, b: BrickId| -> BTreeMap<PartitionId, Partition> {
        net.nodes[&b]
            .partitions()
            .map(|(p, store)| {
                let (reopened, _) = Partition::reopen_anonymous(store.bytes(), CAPACITY).unwrap();
                (*p, reopened)
            })
            .collect()
    };
    let restart = |net: &mut Net, b: BrickId| {
        let partitions = arena(net, b);
        let node = Node::new(b, crashed.clone(), maps.clone(), partitions, net.now);
        net.nodes.insert(b, node);
    };
    restart(&mut net, BrickId(1));
    net.paused.push(BrickId(2));
    net.cut.push((BrickId(1), BrickId(2)));
    net.cut.push((BrickId(2), BrickId(3)));
    net.run(Duration::from_secs(3), Duration::from_millis(5));
    assert_eq!(
        net.group(BrickId(1)),
        (epoch, vec![BrickId(1), BrickId(2)]),
        "a member that does not answer may still be deciding: nothing changes"
    );
    let get = |net: &mut Net, brick: BrickId, id: u64| get_k(net, brick, partition, id);
    match get(&mut net, BrickId(1), 10) {
        Some(Reply::Error(e)) => assert_eq!(e.code, wire::ErrorCode::Restarted, "{e:?}"),
        other => panic!("an amnesiac member served a shared group: {other:?}"),
    }

    // Brick 2 restarts too: brick 1 takes the group alone (the write it
    // committed is there) and copies it back to brick 2 at once. Brick 1
    // does not know what it decided before the crash, so brick 2 goes
    // first: it is the primary of new writes.
    restart(&mut net, BrickId(2));
    net.paused.clear();
    net.cut.clear();
    net.run(Duration::from_secs(3), Duration::from_millis(5));
    for b in [BrickId(1), BrickId(2), BrickId(3)] {
        assert_eq!(
            net.group(b),
            (epoch + 2, vec![BrickId(2), BrickId(1)]),
            "{b}"
        );
    }
    for (b, id) in [(BrickId(1), 11), (BrickId(2), 12)] {
        assert_eq!(
            get(&mut net, b, id),
            Some(Reply::Value(b"v".to_vec())),
            "{b}"
        );
    }
    let fingerprint = net.nodes[&BrickId(2)]
        .maps()
        .partition_fingerprint(partition)
        .unwrap();
    let write_43 = |decide| {
        let participants = vec![BrickId(2), BrickId(1)];
        prepare_k(43, b"w", participants, (partition, fingerprint), decide)
    };
    client_request(&mut net, BrickId(1), 13, write_43(false));
    assert_eq!(client_reply(&net, BrickId(1), 13), Some(&Reply::Voted));
    client_request(&mut net, BrickId(2), 14, write_43(true));
    net.run(Duration::from_millis(500), Duration::from_millis(5));
    assert_eq!(
        client_reply(&net, BrickId(2), 14),
        Some(&Reply::TxState(wire::TxState::Committed))
    );
    client_request(
        &mut net,
        BrickId(1),
        15,
        Request::Commit {
            txid: wire::TxId(43),
            partition,
        },
    );
    // Back in the group, brick 2 did not take brick 1's silence while it
    // was out of the group for a fault: nobody probed anybody.
    net.run(Duration::from_secs(2), Duration::from_millis(5));
    assert_eq!(net.probes, 0, "a member probed after rejoining");
    let checksum = |net: &Net, b: BrickId| {
        net.nodes[&b]
            .partitions()
            .find(|(p, _)| **p == partition)
            .map(|(_, store)| store.checksum())
    };
    assert_eq!(checksum(&net, BrickId(1)), checksum(&net, BrickId(2)));
}

/// A brick cut off from its partner is removed and, once it answers again,
/// copied back. Rejoining, it does not take its partner's silence while it
/// was out of the group (it stopped renewing leases with it) for a fault:
/// it probes nobody.
#[test]
fn a_brick_copied_back_into_its_group_does_not_probe_its_partner() {
    let mut net = Net::new(3);
    net.run(Duration::from_millis(300), Duration::from_millis(5));
    net.cut.push((BrickId(1), BrickId(2)));
    net.cut.push((BrickId(2), BrickId(3)));
    net.run(Duration::from_secs(3), Duration::from_millis(5));
    assert_eq!(net.group(BrickId(1)), (2, vec![BrickId(1)]));
    // Brick 2 learns of its removal from brick 3, and stays out of the
    // group (still cut off from brick 1) for longer than a silence limit.
    net.cut.retain(|link| *link != (BrickId(2), BrickId(3)));
    net.run(Duration::from_secs(2), Duration::from_millis(5));
    assert_eq!(net.group(BrickId(2)), (2, vec![BrickId(1)]));
    let probes = net.probes;
    net.cut.clear();
    net.run(Duration::from_secs(3), Duration::from_millis(5));
    assert_eq!(net.group(BrickId(2)), (3, vec![BrickId(1), BrickId(2)]));
    assert_eq!(net.probes, probes, "a member probed after rejoining");
}

/// A member whose maps name it in a group but that holds no arena of the
/// group's partition (it started without its data before it learnt that it
/// had joined the group) is blank there from its start: it serves nothing,
/// and its partner, which holds the group's data, has it removed and
/// copies the group back to it. Before, it was taken for a member: it
/// answered every request of the group with "holds no replica", and could
/// lead its partner's removal and be left the group's only member with
/// none of its data.
#[test]
fn a_member_without_an_arena_of_its_group_is_blank_and_copied_back() {
    let (mut net, partition, fingerprint) = group_with_a_table();
    commit_42_at_the_primary(&mut net, partition, fingerprint);
    let maps = net.nodes[&BrickId(1)].maps().clone();
    let rg = maps.dp.rg_of(partition).unwrap();
    let (epoch, members) = net.group(BrickId(1));
    assert_eq!(members, vec![BrickId(1), BrickId(2)]);
    // Brick 2 starts again with no arena at all and no blank partition in
    // its configuration.
    let mut empty = config(3);
    empty.incarnation = 2;
    let node = Node::new(BrickId(2), empty, maps, BTreeMap::new(), net.now);
    assert!(node.is_blank_in(rg), "a member without an arena is blank");
    net.nodes.insert(BrickId(2), node);
    let get = |net: &mut Net, id: u64| get_k(net, BrickId(2), partition, id);
    match get(&mut net, 10) {
        Some(Reply::Error(e)) => assert_eq!(e.code, wire::ErrorCode::Restarted, "{e:?}"),
        other => panic!("a member without its data served: {other:?}"),
    }
    net.run(Duration::from_secs(3), Duration::from_millis(5));
    assert_eq!(
        net.group(BrickId(1)),
        (epoch + 2, vec![BrickId(1), BrickId(2)]),
        "removed, then copied back"
    );
    assert!(net.nodes[&BrickId(1)].copies_finished() >= 1);
    assert!(!net.nodes[&BrickId(2)].is_blank_in(rg));
    assert_eq!(get(&mut net, 11), Some(Reply::Value(b"v".to_vec())));
}

/// The primary of a group commits write 42 and loses its data folder
/// before its partner hears the commit. Back without its data, it cannot
/// know what it decided: asked about 42, it must say "unknown", not
/// "aborted", or the partner would abort a write the client was told was
/// committed. The partner removes it, decides 42 alone (committed), and
/// copies the group back to it.
#[test]
fn a_primary_back_without_its_data_does_not_abort_what_it_committed() {
    let (mut net, partition, fingerprint) = group_with_a_table();
    commit_42_at_the_primary(&mut net, partition, fingerprint);
    let maps = net.nodes[&BrickId(1)].maps().clone();
    let mut empty = config(3);
    empty.incarnation = 2;
    let node = Node::new(BrickId(1), empty, maps, BTreeMap::new(), net.now);
    net.nodes.insert(BrickId(1), node);
    // What its partner hears when it asks, as it does once the prepare
    // times out (here it removes the primary first, within a round trip).
    let status = Request::TxStatus {
        txid: wire::TxId(42),
        partition,
    };
    client_request(&mut net, BrickId(1), 10, status);
    assert_eq!(
        client_reply(&net, BrickId(1), 10),
        Some(&Reply::TxState(wire::TxState::Unknown))
    );
    net.run(Duration::from_secs(4), Duration::from_millis(5));
    let (epoch, members) = net.group(BrickId(2));
    assert!(members.contains(&BrickId(1)), "copied back: {members:?}");
    assert!(epoch >= 3, "removed and added back: epoch {epoch}");
    for (b, id) in [(BrickId(1), 20), (BrickId(2), 21)] {
        assert_eq!(
            get_k(&mut net, b, partition, id),
            Some(Reply::Value(b"v".to_vec())),
            "{b} lost the committed write"
        );
    }
}

/// Brick 1, the primary, committed a write that brick 2 holds only
/// prepared, and died. Brick 2 has it removed and is left the group's only
/// member: the write is brick 2's to commit. Brick 2 crashes too, right
/// after it installed the removal and before it resolved the write. It
/// comes back with the write prepared again from its votes file, and
/// commits it. Before, it came back as the group's only member without the
/// write, which the client had been told was committed.
#[test]
fn a_member_crashing_as_its_partner_is_removed_keeps_what_it_held_prepared() {
    let (mut net, partition, fingerprint) = group_with_a_table();
    commit_42_at_the_primary(&mut net, partition, fingerprint);
    net.paused.push(BrickId(1));
    net.cut.push((BrickId(1), BrickId(2)));
    net.cut.push((BrickId(1), BrickId(3)));
    for _ in 0..1000 {
        if net.group(BrickId(2)).1 == vec![BrickId(2)] {
            break;
        }
        net.run(Duration::from_millis(5), Duration::from_millis(5));
    }
    assert_eq!(net.group(BrickId(2)), (2, vec![BrickId(2)]));
    let status = Request::TxStatus {
        txid: wire::TxId(42),
        partition,
    };
    client_request(&mut net, BrickId(2), 10, status.clone());
    assert_eq!(
        client_reply(&net, BrickId(2), 10),
        Some(&Reply::TxState(wire::TxState::Prepared)),
        "the crash falls before brick 2 resolved the write"
    );

    // Brick 2 crashes: its arena, maps and votes file survive.
    let old = &net.nodes[&BrickId(2)];
    let (maps, votes) = (old.maps().clone(), old.votes_file().to_vec());
    let partitions = reopened(old);
    let mut restarted = config(3);
    restarted.incarnation = 2;
    restarted.restarted = true;
    restarted.amnesiac = true;
    // A votes file cut short anywhere is refused or, cut where the votes
    // end, restores no write; one with bytes after it is refused.
    for cut in 0..votes.len() {
        let mut node = Node::new(BrickId(2), config(3), maps.clone(), reopened(old), net.now);
        if node.restore_votes(&votes[..cut], net.now).is_ok() {
            assert!(node.is_quiet(), "a write restored from {cut} bytes");
        }
    }
    let mut longer = votes.clone();
    longer.push(0);
    let mut node = Node::new(BrickId(2), config(3), maps.clone(), reopened(old), net.now);
    assert!(node.restore_votes(&longer, net.now).is_err());
    // A start that cannot take the write back (here, as brick 3, not a
    // member of the group) drops it from the file too: a later start must
    // not find it there.
    let mut node = Node::new(
        BrickId(3),
        config(3),
        maps.clone(),
        BTreeMap::new(),
        net.now,
    );
    node.restore_votes(&votes, net.now).unwrap();
    assert!(node.is_quiet());
    let dropped = node.votes_file().to_vec();
    assert!(
        dropped.len() < votes.len(),
        "the file still lists the write"
    );
    let mut node = Node::new(BrickId(2), config(3), maps.clone(), reopened(old), net.now);
    node.restore_votes(&dropped, net.now).unwrap();
    assert!(node.is_quiet());
    let mut node = Node::new(BrickId(2), restarted, maps, partitions, net.now);
    node.restore_votes(&votes, net.now).unwrap();
    net.nodes.insert(BrickId(2), node);
    client_request(&mut net, BrickId(2), 11, status);
    assert_eq!(
        client_reply(&net, BrickId(2), 11),
        Some(&Reply::TxState(wire::TxState::Prepared)),
        "prepared again after the restart"
    );
    assert_eq!(stat(&mut net, BrickId(2), 13, "writes_kept"), Some(1));
    net.run(Duration::from_secs(3), Duration::from_millis(5));
    assert_eq!(
        get_k(&mut net, BrickId(2), partition, 12),
        Some(Reply::Value(b"v".to_vec())),
        "the only member lost a write its removed primary acknowledged"
    );
    assert_eq!(stat(&mut net, BrickId(2), 14, "writes_kept"), Some(0));
    // Committed, the write leaves the votes file before the next prepare,
    // not at once: a restart in between would commit it again, the value
    // the key has.
    let restart_from_the_file = |net: &Net| {
        let node = &net.nodes[&BrickId(2)];
        let (maps, votes) = (node.maps().clone(), node.votes_file().to_vec());
        let mut again = Node::new(BrickId(2), config(3), maps, reopened(node), net.now);
        again.restore_votes(&votes, net.now).unwrap();
        again.is_quiet()
    };
    assert!(!restart_from_the_file(&net), "saved at once");
    let fingerprint = net.nodes[&BrickId(2)]
        .maps()
        .partition_fingerprint(partition)
        .unwrap();
    let write_43 = prepare_k(43, b"w", vec![BrickId(2)], (partition, fingerprint), true);
    client_request(&mut net, BrickId(2), 15, write_43);
    assert_eq!(
        client_reply(&net, BrickId(2), 15),
        Some(&Reply::TxState(wire::TxState::Committed))
    );
    assert!(
        restart_from_the_file(&net),
        "a committed write still kept when a newer one of its key was prepared"
    );
}

/// Brick 1, the primary, commits a write that brick 2 holds prepared,
/// then its connection to brick 2 breaks (it crashed, and may come back
/// without its data). Brick 2 keeps the write in its votes file at once,
/// not only when a vote removes brick 1: a crash of brick 2 before that
/// vote lost the write, and brick 2, taking the group with what it held,
/// served the value from before it (simulator seed 19,942,740).
#[test]
fn a_member_that_loses_its_primary_keeps_what_it_held_prepared() {
    let (mut net, partition, fingerprint) = group_with_a_table();
    commit_42_at_the_primary(&mut net, partition, fingerprint);
    let restart = |net: &Net| {
        let node = &net.nodes[&BrickId(2)];
        let mut restarted = config(3);
        restarted.incarnation = 2;
        restarted.restarted = true;
        restarted.amnesiac = true;
        let mut again = Node::new(
            BrickId(2),
            restarted,
            node.maps().clone(),
            reopened(node),
            net.now,
        );
        if !node.votes_file().is_empty() {
            again.restore_votes(node.votes_file(), net.now).unwrap();
        }
        again
    };
    assert_eq!(stat(&mut net, BrickId(2), 10, "writes_kept"), Some(0));
    assert!(restart(&net).is_quiet(), "kept while the primary is there");
    let now = net.now;
    net.nodes
        .get_mut(&BrickId(2))
        .unwrap()
        .handle_peer_unreachable(now, BrickId(1));
    assert_eq!(stat(&mut net, BrickId(2), 11, "writes_kept"), Some(1));
    let mut again = restart(&net);
    assert!(!again.is_quiet(), "the write is lost with a crash");
    again.handle_request(
        now,
        ConnId(CLIENT_CONN + 100),
        12,
        Request::TxStatus {
            txid: wire::TxId(42),
            partition,
        },
    );
    let replies: Vec<_> = std::iter::from_fn(|| again.poll_transmit()).collect();
    assert!(
        replies.iter().any(|t| matches!(
            t,
            Transmit::Reply {
                request_id: 12,
                reply: Reply::TxState(wire::TxState::Prepared),
                ..
            }
        )),
        "prepared again after the restart: {replies:?}"
    );
    // A second break keeps nothing twice.
    net.nodes
        .get_mut(&BrickId(2))
        .unwrap()
        .handle_peer_unreachable(now, BrickId(1));
    assert_eq!(stat(&mut net, BrickId(2), 13, "writes_kept"), Some(1));
}

/// Every acceptor promises a proposal, and one promise (brick 3's, held
/// back) is handled after a majority of them moved the proposer to phase
/// two. That late promise
/// is a granted answer at the proposal's ballot like an acceptance, but it
/// is not one: with every acceptance but the proposer's own lost, nothing
/// is decided. Counting it decided a membership only the proposer had
/// accepted, and another proposer then decided a different one for the
/// same epoch.
#[test]
fn a_late_promise_is_not_counted_as_an_acceptance() {
    let mut net = Net::new(3);
    net.run(Duration::from_millis(300), Duration::from_millis(5));
    let (epoch, members) = net.group(BrickId(1));
    assert_eq!(members, vec![BrickId(1), BrickId(2)]);
    // Brick 2 comes back with a new incarnation: brick 1 removes it at
    // once; brick 3's promise waits, and every acceptance but brick 1's
    // own is lost.
    let maps = net.nodes[&BrickId(2)].maps().clone();
    let partitions = net.nodes[&BrickId(2)]
        .partitions()
        .map(|(p, store)| {
            let (reopened, _) = Partition::reopen_anonymous(store.bytes(), CAPACITY).unwrap();
            (*p, reopened)
        })
        .collect();
    let mut restarted = config(3);
    restarted.incarnation = 2;
    restarted.restarted = true;
    restarted.amnesiac = true;
    let node = Node::new(BrickId(2), restarted, maps, partitions, net.now);
    net.nodes.insert(BrickId(2), node);
    for to in [BrickId(2), BrickId(3)] {
        net.drop_accepts.push((BrickId(1), to));
    }
    net.hold_vote_answers.push((BrickId(3), BrickId(1)));
    // The removal waits out the lease brick 1 granted brick 2, then asks.
    for _ in 0..400 {
        if !net.held.is_empty() {
            break;
        }
        net.run(Duration::from_millis(5), Duration::from_millis(5));
    }
    assert_eq!(net.held.len(), 1, "brick 3 promised");
    net.run(Duration::from_millis(10), Duration::from_millis(5));
    net.release_held();
    net.run(Duration::from_millis(5), Duration::from_millis(5));
    for b in [BrickId(1), BrickId(2), BrickId(3)] {
        assert_eq!(net.group(b).0, epoch, "{b}: decided with one acceptance");
    }
    // Acceptances get through again: the removal is decided.
    net.drop_accepts.clear();
    net.run(Duration::from_secs(2), Duration::from_millis(5));
    assert!(net.group(BrickId(3)).0 > epoch);
    assert_eq!(net.group(BrickId(1)), net.group(BrickId(3)));
}

/// A new cluster: every brick starts without data, and so blank in each of
/// its groups. Each hears from its partners that they are blank too, and
/// serves within a few round trips of the start: no copy, no removal, and
/// the group commits a write.
#[test]
fn a_new_cluster_of_bricks_without_data_serves_without_copies() {
    let mut net = Net::started(3, true);
    let members = net.group(BrickId(1)).1;
    for b in &members {
        assert!(net.nodes[b].is_blank_in(RgId(0)), "{b} starts blank");
    }
    // The first renewals go out at the start, and blank answers at once.
    net.run(Duration::from_millis(20), Duration::from_millis(5));
    for (id, node) in &net.nodes {
        assert!(node.blank_partitions().is_empty(), "{id} is still blank");
    }
    net.run(Duration::from_millis(300), Duration::from_millis(5));
    assert_eq!(net.group(BrickId(3)), (1, members.clone()), "no change");
    for node in net.nodes.values() {
        assert_eq!(node.copies_finished(), 0);
    }
    let maps = net.nodes[&BrickId(1)].maps().clone();
    let (partition, _) = maps.dp.leaves().next().unwrap();
    let fingerprint = maps.partition_fingerprint(partition).unwrap();
    for b in &members {
        let create = Request::CreateTable {
            name: b"t".to_vec(),
        };
        client_request(&mut net, *b, 1, create);
    }
    // The other participant first, then the primary, which decides.
    for (id, b) in [(2, members[1]), (3, members[0])] {
        let participants = members.clone();
        let decide = b == members[0];
        let prepare = prepare_k(42, b"v", participants, (partition, fingerprint), decide);
        client_request(&mut net, b, id, prepare);
    }
    assert_eq!(client_reply(&net, members[1], 2), Some(&Reply::Voted));
    assert_eq!(
        client_reply(&net, members[0], 3),
        Some(&Reply::TxState(wire::TxState::Committed))
    );
}
