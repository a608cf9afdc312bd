//! Membership decisions: every new epoch of a replica group is decided by
//! single-decree Paxos among all bricks of the cluster, one instance per
//! group and epoch.
//!
//! A brick that wants a group changed (the leader of a removal, the source
//! of a recovery copy, or a member settling an undecided vote) is the
//! *proposer*; every brick is an *acceptor*. Ballots are `(round, brick)`.
//!
//! 1. The proposer asks every brick to promise its ballot for the group's
//!    next epoch (`ConfigVote` without a value). An acceptor promises a
//!    ballot higher than any it promised, and answers with the value it
//!    accepted for that epoch, if any.
//! 2. With promises from a majority, the proposer proposes the value
//!    accepted at the highest ballot among them, or its own if there is
//!    none — first to its own acceptor, then to the others.
//! 3. Accepted by a majority, the value is decided: the proposer installs
//!    the epoch and pushes the maps. Whoever asks about a decided epoch is
//!    answered with the maps.
//!
//! Acceptors save their promises and acceptances (like the maps) before
//! answering, so a restart does not make them forget. Two proposers cannot
//! both get a majority for one epoch, and a half-finished vote is taken over
//! by a higher ballot, which adopts whatever may have been decided.
//!
//! Two rules tie the vote to the data:
//! - A member of a group that accepted a value for the group's next epoch
//!   holds the group's writes (`WritesHeld`) until it learns the decision:
//!   an addition accepted at the recovery source may still be decided
//!   later, by anyone, and the added brick holds the data as of that
//!   acceptance, so no write may land in between. A member whose accepted
//!   value stays undecided proposes a value of its own (which adopts the
//!   accepted one) after `SETTLE_AFTER`, so a proposer that died cannot
//!   hold writes for longer.
//! - A member that installs an epoch removing a brick refuses prepares until
//!   every read lease it granted that brick has run out (the fence is set in
//!   `Node::maps_changed`), so the removed brick cannot serve a read that a
//!   write at the new epoch makes stale, whoever decided the removal.
//!
//! With one or two bricks a majority would need every brick, so a dead one
//! would block every change: such clusters decide with the proposer alone,
//! as one leader per change (see ARCHITECTURE.md).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use byteorder::{ByteOrder, LittleEndian};
use maps::{BrickId, PartitionId, RgEntry, RgId};
use wire::{Accepted, Ballot, ErrorCode, Reply, Request, TxId};

use super::kept::{decode_kept, encode_kept, KeptTx};
use super::{error, Node, PeerPending};

/// A member whose accepted value stays undecided this long after its
/// acceptance settles the vote itself.
const SETTLE_AFTER: Duration = Duration::from_millis(600);

/// What an acceptor has promised and accepted for a group's next epoch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Vote {
    /// The epoch being decided.
    epoch: u64,
    promised: Ballot,
    accepted: Option<Accepted>,
    /// When the value was accepted, by this process's clock (not saved: a
    /// restarted brick counts from its start).
    accepted_at: Option<Instant>,
}

/// Why a proposal was started; what its decision means to the proposer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Purpose {
    Remove(BrickId),
    /// A recovery copy's target joins; the copy of `partition` waits.
    Add(PartitionId),
    /// An accepted value stayed undecided: decide something.
    Settle,
    /// Every member of the group restarted after a crash: the first member
    /// takes the group alone (`Node::revive_crashed_groups`).
    Revive,
}

#[derive(Debug)]
enum Phase {
    /// Waiting for promises; each promise carries its acceptor's value.
    Promising(BTreeMap<BrickId, Option<Accepted>>),
    /// The value is proposed; these acceptors took it.
    Accepting(Vec<BrickId>, BTreeSet<BrickId>),
}

/// A vote this node drives as proposer.
#[derive(Debug)]
pub(super) struct Proposal {
    epoch: u64,
    ballot: Ballot,
    /// What this node wants the group to be at `epoch`; `None` while the
    /// proposal only gathers promises, ahead of knowing its value (the
    /// recovery source does so when the copy starts, so that only
    /// phase two falls in the time writes are held).
    own: Option<Vec<BrickId>>,
    phase: Phase,
    /// When the round is tried again with a higher ballot.
    deadline: Instant,
    pub(super) purpose: Purpose,
}

/// Membership state of a node: its acceptor's votes and its proposals.
#[derive(Debug, Default)]
pub(super) struct Membership {
    votes: BTreeMap<RgId, Vote>,
    pub(super) proposals: BTreeMap<RgId, Proposal>,
    /// The highest round seen per group, so a new ballot beats it.
    rounds: BTreeMap<RgId, u64>,
    /// Per group, no prepare is taken before this time: a lease granted to
    /// a brick that has since been removed may still be valid.
    pub(super) write_fence: BTreeMap<RgId, Instant>,
    pub(super) decided: u64,
    /// Prepared writes saved with the votes, to be prepared again after a
    /// restart (`kept`).
    pub(super) kept: BTreeSet<TxId>,
    /// Whether the votes file still lists kept writes committed since.
    pub(super) kept_stale: bool,
    /// What the votes file holds: the bytes of its last save.
    pub(super) saved: Vec<u8>,
}

/// Encodes votes for the votes file: a count, then per vote the group, the
/// epoch, the promised ballot and the accepted value if any.
fn encode_votes(votes: &BTreeMap<RgId, Vote>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut put = |bytes: &[u8]| out.extend_from_slice(bytes);
    put(&(votes.len() as u32).to_le_bytes());
    for (rg, v) in votes {
        put(&rg.0.to_le_bytes());
        put(&v.epoch.to_le_bytes());
        put(&v.promised.round.to_le_bytes());
        put(&v.promised.brick.0.to_le_bytes());
        match &v.accepted {
            None => put(&[0]),
            Some(a) => {
                put(&[1]);
                put(&a.ballot.round.to_le_bytes());
                put(&a.ballot.brick.0.to_le_bytes());
                put(&(a.bricks.len() as u32).to_le_bytes());
                for b in &a.bricks {
                    put(&b.0.to_le_bytes());
                }
            }
        }
    }
    out
}

/// Reads the votes file's fields in order.
pub(super) struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        if self.0.len() < n {
            return Err("the votes file is cut short".to_string());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    pub(super) fn u8(&mut self) -> Result<u8, String> {
        self.take(1).map(|b| b[0])
    }
    pub(super) fn u32(&mut self) -> Result<u32, String> {
        self.take(4).map(LittleEndian::read_u32)
    }
    pub(super) fn u64(&mut self) -> Result<u64, String> {
        self.take(8).map(LittleEndian::read_u64)
    }
    /// Bytes after their u32 length.
    pub(super) fn bytes(&mut self) -> Result<&[u8], String> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn ballot(&mut self) -> Result<Ballot, String> {
        Ok(Ballot {
            round: self.u64()?,
            brick: BrickId(self.u32()?),
        })
    }
}

/// Decodes a votes file written by [`Node::encoded_votes`]: the votes, then
/// (if present) the prepared writes kept with them. Any other bytes are an
/// error (the brick refuses to start rather than forget a promise).
fn decode_votes(bytes: &[u8], now: Instant) -> Result<(BTreeMap<RgId, Vote>, Vec<KeptTx>), String> {
    let mut r = Reader(bytes);
    let count = r.u32()? as usize;
    if count > maps::limits::RGS_MAX {
        return Err(format!("the votes file claims {count} groups"));
    }
    let mut votes = BTreeMap::new();
    for _ in 0..count {
        let rg = RgId(r.u32()?);
        let epoch = r.u64()?;
        let promised = r.ballot()?;
        let accepted = match r.take(1)?[0] {
            0 => None,
            1 => {
                let ballot = r.ballot()?;
                let n = r.u32()? as usize;
                if n > maps::limits::REPLICAS_MAX {
                    return Err(format!("the votes file claims a group of {n} bricks"));
                }
                let bricks = (0..n)
                    .map(|_| r.u32().map(BrickId))
                    .collect::<Result<Vec<_>, _>>()?;
                Some(Accepted { ballot, bricks })
            }
            tag => return Err(format!("the votes file has an unknown tag {tag}")),
        };
        let accepted_at = accepted.as_ref().map(|_| now);
        votes.insert(
            rg,
            Vote {
                epoch,
                promised,
                accepted,
                accepted_at,
            },
        );
    }
    let kept = if r.0.is_empty() {
        Vec::new()
    } else {
        decode_kept(&mut r)?
    };
    if !r.0.is_empty() {
        return Err(format!("{} bytes left over in the votes file", r.0.len()));
    }
    Ok((votes, kept))
}

impl Node {
    /// Bricks whose acceptance decides a vote: a majority of the cluster,
    /// or the proposer alone in a cluster of one or two bricks.
    fn quorum(&self) -> usize {
        let n = self.config.bricks.len();
        if n <= 2 {
            1
        } else {
            n / 2 + 1
        }
    }

    /// The node's votes, encoded as its votes file holds them, with the
    /// prepared writes it keeps across a restart (`kept`).
    pub(super) fn encoded_votes(&self) -> Vec<u8> {
        let mut out = encode_votes(&self.membership.votes);
        if !self.membership.kept.is_empty() {
            let txs = self
                .membership
                .kept
                .iter()
                .filter_map(|txid| self.prepared.get(txid).map(|tx| (*txid, tx)))
                .collect::<Vec<_>>();
            encode_kept(&mut out, txs.into_iter());
        }
        out
    }

    /// What the node's votes file holds: the bytes it last saved there
    /// (the simulator keeps them across a crash, as the disk would).
    pub fn votes_file(&self) -> &[u8] {
        &self.membership.saved
    }

    /// Takes over votes saved before a restart, and prepares again the
    /// writes kept with them.
    pub fn restore_votes(&mut self, bytes: &[u8], now: Instant) -> Result<(), String> {
        let (votes, kept) = decode_votes(bytes, now)?;
        self.membership.votes = votes;
        self.membership.saved = bytes.to_vec();
        if self.restore_kept(kept, now) && !self.save_votes_file() {
            return Err("cannot save the votes file without the writes it drops".to_string());
        }
        Ok(())
    }

    /// Whether `rg`'s writes are held because this member accepted a value
    /// for the group's next epoch that is not decided yet, or because a
    /// lease granted to a removed brick may still be valid.
    pub(super) fn membership_holds_writes(&self, now: Instant, rg: RgId) -> bool {
        if self
            .membership
            .write_fence
            .get(&rg)
            .is_some_and(|until| now < *until)
        {
            return true;
        }
        self.undecided_vote(rg).is_some()
    }

    /// The epoch of an accepted, undecided vote of this member for `rg`.
    fn undecided_vote(&self, rg: RgId) -> Option<u64> {
        let entry = self.maps.rg.get(rg)?;
        let vote = self.membership.votes.get(&rg)?;
        (vote.accepted.is_some() && vote.epoch > entry.epoch && entry.bricks.contains(&self.id))
            .then_some(vote.epoch)
    }

    /// Whether this node accepted, for `rg`'s next epoch, a value without
    /// `brick`, or is proposing one: it grants `brick` no lease meanwhile.
    /// A lease granted while the proposal gathers its promises would still
    /// run when the vote decides the removal (the proposer waited out its
    /// grants before proposing, not after), and the removed brick would
    /// answer reads outside the group.
    pub(super) fn voted_out(&self, rg: RgId, brick: BrickId) -> bool {
        let accepted = self.undecided_vote(rg).is_some()
            && self.membership.votes[&rg]
                .accepted
                .as_ref()
                .is_some_and(|a| !a.bricks.contains(&brick));
        let proposing = self.membership.proposals.get(&rg).is_some_and(|p| {
            let value = match &p.phase {
                Phase::Accepting(value, _) => Some(value),
                Phase::Promising(_) => p.own.as_ref(),
            };
            value.is_some_and(|v| !v.contains(&brick))
        });
        accepted || proposing
    }

    /// The acceptor: answers a `ConfigVote`.
    pub(super) fn config_vote(
        &mut self,
        now: Instant,
        rg: RgId,
        epoch: u64,
        ballot: Ballot,
        value: Option<Vec<BrickId>>,
    ) -> Reply {
        let Some(entry) = self.maps.rg.get(rg) else {
            return error(
                ErrorCode::Refused,
                format!("{rg} is not in the maps of {}", self.id),
            );
        };
        if entry.epoch >= epoch {
            return Reply::Maps(self.maps.encode());
        }
        if let Some(bricks) = &value {
            let proposed = RgEntry {
                epoch,
                bricks: bricks.clone(),
            };
            if let Err(e) = proposed.validate(rg) {
                return error(ErrorCode::Malformed, format!("proposed membership: {e}"));
            }
            if let Some(b) = bricks.iter().find(|b| !self.config.bricks.contains(b)) {
                return error(
                    ErrorCode::Malformed,
                    format!("proposed membership names unknown {b}"),
                );
            }
        }
        let before = self.membership.votes.get(&rg).cloned();
        if before.as_ref().is_some_and(|v| v.epoch > epoch) {
            return error(
                ErrorCode::Refused,
                format!("{} votes on a later epoch of {rg}", self.id),
            );
        }
        let mut vote = match before.clone() {
            Some(v) if v.epoch == epoch => v,
            _ => Vote {
                epoch,
                promised: Ballot::ZERO,
                accepted: None,
                accepted_at: None,
            },
        };
        let granted = match &value {
            None => ballot > vote.promised,
            Some(_) => ballot >= vote.promised,
        };
        if granted {
            if let Some(bricks) = value.as_deref().filter(|_| entry.bricks.contains(&self.id)) {
                self.keep_prepared_for_value(rg, bricks);
            }
            vote.promised = ballot;
            if let Some(bricks) = value {
                vote.accepted = Some(Accepted { ballot, bricks });
                vote.accepted_at = Some(now);
            }
            self.membership.votes.insert(rg, vote.clone());
            if !self.save_votes_file() {
                match before {
                    Some(v) => self.membership.votes.insert(rg, v),
                    None => self.membership.votes.remove(&rg),
                };
                return error(ErrorCode::Internal, "cannot save votes".to_string());
            }
        }
        Reply::ConfigVote {
            granted,
            promised: vote.promised,
            accepted: vote.accepted,
        }
    }

    /// Starts deciding `rg`'s next epoch with `own` as this node's value.
    /// Returns false if a vote of this node for the group is under way.
    pub(super) fn propose(
        &mut self,
        now: Instant,
        rg: RgId,
        purpose: Purpose,
        own: Option<Vec<BrickId>>,
    ) -> bool {
        if self.membership.proposals.contains_key(&rg) {
            return false;
        }
        let Some(entry) = self.maps.rg.get(rg) else {
            return false;
        };
        let epoch = entry.epoch + 1;
        match &own {
            Some(own) => log::info!(
                "{}: proposing {own:?} for {rg} at epoch {epoch} ({purpose:?})",
                self.id
            ),
            None => log::info!(
                "{}: gathering promises for {rg} at epoch {epoch} ({purpose:?})",
                self.id
            ),
        }
        self.membership.proposals.insert(
            rg,
            Proposal {
                epoch,
                ballot: Ballot::ZERO,
                own,
                phase: Phase::Promising(BTreeMap::new()),
                deadline: now,
                purpose,
            },
        );
        self.start_round(now, rg);
        true
    }

    /// Phase one at a ballot above every round seen for the group.
    fn start_round(&mut self, now: Instant, rg: RgId) {
        let seen = self.membership.rounds.get(&rg).copied().unwrap_or(0);
        let own_promise = self
            .membership
            .votes
            .get(&rg)
            .map_or(0, |v| v.promised.round);
        let round = seen.max(own_promise) + 1;
        self.membership.rounds.insert(rg, round);
        let ballot = Ballot {
            round,
            brick: self.id,
        };
        let Some(p) = self.membership.proposals.get_mut(&rg) else {
            return;
        };
        p.ballot = ballot;
        p.phase = Phase::Promising(BTreeMap::new());
        p.deadline = now + self.config.probe_timeout;
        let epoch = p.epoch;
        self.ask_acceptors(now, rg, epoch, ballot, None);
    }

    /// Sends a `ConfigVote` to every acceptor, this node's own first.
    fn ask_acceptors(
        &mut self,
        now: Instant,
        rg: RgId,
        epoch: u64,
        ballot: Ballot,
        value: Option<Vec<BrickId>>,
    ) {
        let own = self.config_vote(now, rg, epoch, ballot, value.clone());
        let me = self.id;
        let granted = matches!(own, Reply::ConfigVote { granted: true, .. });
        self.vote_answer(now, me, rg, epoch, ballot, own);
        // An acceptance is sent to others only once this node accepted the
        // value itself: its acceptance is what holds the group's writes.
        if value.is_some() && !granted {
            return;
        }
        if !self.proposal_at(rg, epoch, ballot) {
            return;
        }
        for brick in self.config.bricks.clone() {
            if brick != me {
                self.send_peer(
                    brick,
                    Request::ConfigVote {
                        rg,
                        epoch,
                        ballot,
                        value: value.clone(),
                    },
                    PeerPending::ConfigVote {
                        rg,
                        epoch,
                        ballot,
                        peer: brick,
                    },
                );
            }
        }
    }

    fn proposal_at(&self, rg: RgId, epoch: u64, ballot: Ballot) -> bool {
        self.membership
            .proposals
            .get(&rg)
            .is_some_and(|p| p.epoch == epoch && p.ballot == ballot)
    }

    /// An acceptor's answer to a round of this node's proposal.
    pub(super) fn vote_answer(
        &mut self,
        now: Instant,
        from: BrickId,
        rg: RgId,
        epoch: u64,
        ballot: Ballot,
        reply: Reply,
    ) {
        match reply {
            Reply::Maps(bytes) => {
                // The epoch is decided already: take it.
                self.push_maps(now, &bytes);
                return;
            }
            Reply::ConfigVote { promised, .. } if promised.round > 0 => {
                let seen = self.membership.rounds.entry(rg).or_insert(0);
                *seen = (*seen).max(promised.round);
            }
            _ => {}
        }
        if !self.proposal_at(rg, epoch, ballot) {
            return;
        }
        let quorum = self.quorum();
        let p = self.membership.proposals.get_mut(&rg).expect("checked");
        let Reply::ConfigVote {
            granted, accepted, ..
        } = reply
        else {
            return;
        };
        if !granted {
            // A higher ballot is about: try again after a pause that differs
            // per brick, so two proposers do not keep pre-empting each other.
            let pause = 5 + u64::from(self.id.0 % 8) * 7 + ballot.round % 5;
            p.deadline = p.deadline.min(now + Duration::from_millis(pause));
            return;
        }
        match &mut p.phase {
            Phase::Promising(promises) => {
                promises.insert(from, accepted);
                self.after_promise(now, rg);
            }
            Phase::Accepting(value, accepts) => {
                // Only an acceptance at this ballot counts. A promise of
                // this ballot that arrives after a majority promised is a
                // granted answer at the same ballot too, and counting it
                // decided a value that one brick alone had accepted: two
                // memberships at one epoch (simulator seed 13,980,824).
                if accepted.is_none_or(|a| a.ballot != ballot) {
                    return;
                }
                accepts.insert(from);
                if accepts.len() >= quorum {
                    let value = value.clone();
                    self.decide_epoch(now, rg, epoch, value);
                }
            }
        }
    }

    /// With promises from a majority and a value known, phase two: the
    /// value accepted at the highest ballot among the promises, or this
    /// node's own.
    fn after_promise(&mut self, now: Instant, rg: RgId) {
        let quorum = self.quorum();
        let Some(p) = self.membership.proposals.get_mut(&rg) else {
            return;
        };
        let Phase::Promising(promises) = &p.phase else {
            return;
        };
        if promises.len() < quorum {
            return;
        }
        let adopted = promises
            .values()
            .flatten()
            .max_by_key(|a| a.ballot)
            .map(|a| a.bricks.clone());
        let Some(value) = adopted.or_else(|| p.own.clone()) else {
            // Promised, value not known yet: hold the promises (a round
            // is not retried while it waits; a higher ballot meanwhile
            // shows up as a refusal in phase two).
            p.deadline = now + self.config.probe_timeout * 10;
            return;
        };
        p.phase = Phase::Accepting(value.clone(), BTreeSet::new());
        let (epoch, ballot) = (p.epoch, p.ballot);
        self.ask_acceptors(now, rg, epoch, ballot, Some(value));
    }

    /// Gives a proposal started without a value (`propose` with `None`)
    /// its value, or starts one with it. Returns false if a vote of this
    /// node for another purpose is under way.
    pub(super) fn propose_value(
        &mut self,
        now: Instant,
        rg: RgId,
        purpose: Purpose,
        own: Vec<BrickId>,
    ) -> bool {
        match self.membership.proposals.get_mut(&rg) {
            Some(p) if p.purpose == purpose && p.own.is_none() => {
                log::info!(
                    "{}: proposing {own:?} for {rg} at epoch {} ({purpose:?})",
                    self.id,
                    p.epoch
                );
                p.own = Some(own);
                self.after_promise(now, rg);
                true
            }
            Some(_) => false,
            None => self.propose(now, rg, purpose, Some(own)),
        }
    }

    /// `value` is decided for `rg` at `epoch`: install it and tell everyone.
    fn decide_epoch(&mut self, now: Instant, rg: RgId, epoch: u64, value: Vec<BrickId>) {
        let before = self.maps.rg.get(rg).map(|e| e.bricks.clone());
        let entry = RgEntry {
            epoch,
            bricks: value,
        };
        if let Err(e) = self.maps.change().rg.install(rg, entry) {
            log::error!("{}: cannot install {rg} at epoch {epoch}: {e}", self.id);
            self.membership.proposals.remove(&rg);
            return;
        }
        self.membership.decided += 1;
        let after = &self.maps.rg.get(rg).expect("installed").bricks;
        if before.is_some_and(|b| b.iter().any(|x| !after.contains(x))) {
            self.counters.exclusions += 1;
        }
        log::warn!(
            "{}: {rg} is {after:?} at epoch {epoch} (decided by a majority of bricks)",
            self.id
        );
        self.maps_changed(now);
        self.push_maps_to_all();
    }

    /// After the maps changed: proposals for epochs now known are over, and
    /// votes for them are void.
    pub(super) fn proposals_after_maps_change(&mut self) {
        let maps = &self.maps;
        let known = |rg: &RgId, epoch: u64| maps.rg.get(*rg).is_none_or(|e| e.epoch >= epoch);
        self.membership
            .proposals
            .retain(|rg, p| !known(rg, p.epoch));
        self.membership.votes.retain(|rg, v| !known(rg, v.epoch));
    }

    /// Timers: rounds that got no majority are tried again at a higher
    /// ballot, and undecided acceptances are settled.
    pub(super) fn membership_tick(&mut self, now: Instant) {
        let due: Vec<RgId> = self
            .membership
            .proposals
            .iter()
            .filter(|(_, p)| now >= p.deadline)
            .map(|(rg, _)| *rg)
            .collect();
        for rg in due {
            self.start_round(now, rg);
        }
        let unsettled: Vec<(RgId, Vec<BrickId>)> = self
            .membership
            .votes
            .iter()
            .filter(|(rg, v)| {
                !self.membership.proposals.contains_key(rg)
                    && self.undecided_vote(**rg).is_some()
                    && v.accepted_at.is_some_and(|at| now >= at + SETTLE_AFTER)
            })
            .filter_map(|(rg, _)| Some((*rg, self.maps.rg.get(*rg)?.bricks.clone())))
            .collect();
        for (rg, members) in unsettled {
            log::warn!(
                "{}: its vote on {rg}'s next epoch is still undecided; settling it",
                self.id
            );
            self.propose(now, rg, Purpose::Settle, Some(members));
        }
    }

    /// When the membership next wants a timeout.
    pub(super) fn membership_timeout(&self) -> Option<Instant> {
        let proposals = self.membership.proposals.values().map(|p| p.deadline);
        let settles = self
            .membership
            .votes
            .iter()
            .filter(|(rg, _)| {
                !self.membership.proposals.contains_key(rg) && self.undecided_vote(**rg).is_some()
            })
            .filter_map(|(_, v)| v.accepted_at.map(|at| at + SETTLE_AFTER));
        proposals.chain(settles).min()
    }

    /// Groups whose next epoch this brick accepted a value for and has not
    /// seen decided (as a member or not).
    fn votes_undecided(&self) -> usize {
        self.membership
            .votes
            .iter()
            .filter(|(rg, vote)| {
                vote.accepted.is_some()
                    && self.maps.rg.get(**rg).is_some_and(|e| vote.epoch > e.epoch)
            })
            .count()
    }

    /// Membership votes this brick leads, plus those it accepted a value in
    /// without having seen it decided.
    pub fn votes_open(&self) -> usize {
        self.membership.proposals.len() + self.votes_undecided()
    }

    pub(super) fn membership_stats(&self, out: &mut Vec<(String, u64)>) {
        out.push(("epochs_decided".to_string(), self.membership.decided));
        out.push((
            "votes_under_way".to_string(),
            self.membership.proposals.len() as u64,
        ));
        out.push(("votes_undecided".to_string(), self.votes_undecided() as u64));
        out.push(("writes_kept".to_string(), self.membership.kept.len() as u64));
    }
}
