//! Prepared writes kept across a restart while a group loses a member.
//!
//! A prepared write lives in memory: a brick that crashes forgets it, and
//! that is safe while the write's primary is a member, since the primary
//! holds the outcome and the restarted brick is copied back. Once a vote
//! removes a participant of the write (its primary, usually), the brick
//! that stays is the one that decides the write: with every other
//! participant gone, its own yes vote is the group's, and it commits. Had
//! the primary acknowledged the write before it died, a crash of the brick
//! that stays, between its acceptance of the removal and that commit,
//! lost the write: it came back as the group's only member without it.
//!
//! So before a member accepts a membership that leaves out a participant
//! of one of its prepared writes, or installs one, it saves those writes
//! with its votes (in the same durable file, after the votes), and a start
//! takes them back as prepared, locks and reserved room included. It saves
//! the writes that name a peer earlier too, when its connection to that
//! peer breaks or it starts removing that peer: a primary that comes back
//! without its data leaves this member's memory the write's last record,
//! and the member may crash before any vote (`keep_prepared_naming`).
//! A kept write leaves the file once it is resolved here: at once if it was
//! aborted or dropped (taken back, it would be committed), and before the
//! next prepare or table change if it was committed, so that the hundreds
//! of writes a removal can leave prepared under load, resolved one by one,
//! cost one save and not one each. Until then a restart takes back a write
//! that was committed and commits it again, which writes the value the key
//! already has: no newer write of the key can have been committed without
//! a prepare (or a table change) first. While the vote is undecided the
//! group takes no new prepare at this member, so nothing is prepared that
//! the file misses (a write prepared after a broken connection and before
//! the vote is kept by the vote); after the decision a write of the group
//! is either decided at once by its primary or, if this member is only a
//! participant, known to a primary that is still a member.

use std::collections::BTreeSet;
use std::time::Instant;

use maps::{BrickId, PartitionId, RgId};
use wire::{TxId, Write};

use super::membership::Reader;
use super::{HashMap, Node, PreparedTx};
use crate::limits;

/// A prepared write as the votes file keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct KeptTx {
    txid: TxId,
    partition: PartitionId,
    store_key: Vec<u8>,
    write: Write,
    participants: Vec<BrickId>,
}

/// Appends the kept writes to a votes file's bytes: a count, then per write
/// its id, partition, key, write and participants.
pub(super) fn encode_kept<'a>(
    out: &mut Vec<u8>,
    txs: impl ExactSizeIterator<Item = (TxId, &'a PreparedTx)>,
) {
    out.extend_from_slice(&(txs.len() as u32).to_le_bytes());
    for (txid, tx) in txs {
        out.extend_from_slice(&txid.0.to_le_bytes());
        out.extend_from_slice(&tx.partition.0.to_le_bytes());
        out.extend_from_slice(&(tx.store_key.len() as u32).to_le_bytes());
        out.extend_from_slice(&tx.store_key);
        match &tx.write {
            Write::Remove => out.push(0),
            Write::Put(value) => {
                out.push(1);
                out.extend_from_slice(&(value.len() as u32).to_le_bytes());
                out.extend_from_slice(value);
            }
        }
        out.extend_from_slice(&(tx.participants.len() as u32).to_le_bytes());
        for b in &tx.participants {
            out.extend_from_slice(&b.0.to_le_bytes());
        }
    }
}

/// Reads what [`encode_kept`] wrote.
pub(super) fn decode_kept(r: &mut Reader<'_>) -> Result<Vec<KeptTx>, String> {
    let count = r.u32()? as usize;
    if count > limits::PREPARED_MAX {
        return Err(format!("the votes file claims {count} kept writes"));
    }
    let mut txs = Vec::with_capacity(count);
    for _ in 0..count {
        let txid = TxId(r.u64()?);
        let partition = PartitionId(r.u64()?);
        let store_key = r.bytes()?.to_vec();
        let write = match r.u8()? {
            0 => Write::Remove,
            1 => Write::Put(r.bytes()?.to_vec()),
            tag => return Err(format!("the votes file has an unknown write tag {tag}")),
        };
        let n = r.u32()? as usize;
        if n > maps::limits::REPLICAS_MAX {
            return Err(format!(
                "the votes file claims a write with {n} participants"
            ));
        }
        let participants = (0..n)
            .map(|_| r.u32().map(BrickId))
            .collect::<Result<Vec<_>, _>>()?;
        txs.push(KeptTx {
            txid,
            partition,
            store_key,
            write,
            participants,
        });
    }
    Ok(txs)
}

/// Prepared writes not kept yet whose group, as `members` gives it, still
/// has `me` but lacks one of the write's participants; in id order.
fn prepared_across<'a>(
    prepared: &HashMap<TxId, PreparedTx>,
    kept: &BTreeSet<TxId>,
    me: BrickId,
    members: impl Fn(RgId) -> Option<&'a [BrickId]>,
) -> Vec<TxId> {
    let mut across: Vec<TxId> = prepared
        .iter()
        .filter(|(txid, tx)| {
            !kept.contains(txid)
                && members(tx.rg).is_some_and(|members| {
                    members.contains(&me) && tx.participants.iter().any(|b| !members.contains(b))
                })
        })
        .map(|(txid, _)| *txid)
        .collect();
    across.sort_unstable();
    across
}

impl Node {
    /// Before this brick accepts `value` for `rg`'s next epoch: keeps its
    /// prepared writes of the group that have a participant `value` leaves
    /// out. The save of the acceptance, which must follow before the
    /// answer, saves them too.
    pub(super) fn keep_prepared_for_value(&mut self, rg: RgId, value: &[BrickId]) {
        if self.prepared.is_empty() {
            return;
        }
        let new = prepared_across(&self.prepared, &self.membership.kept, self.id, |r| {
            (r == rg).then_some(value)
        });
        self.keep(new);
    }

    /// Before this brick saves maps it installed: keeps its prepared writes
    /// that have a participant their group no longer has. Returns false if
    /// they could not be saved.
    pub(super) fn keep_prepared_for_maps(&mut self) -> bool {
        if self.prepared.is_empty() {
            return true;
        }
        let maps = &self.maps;
        let new = prepared_across(&self.prepared, &self.membership.kept, self.id, |r| {
            maps.rg.get(r).map(|e| e.bricks.as_slice())
        });
        !self.keep(new) || self.save_votes_file()
    }

    /// When this brick loses its connection to `peer`, or starts removing
    /// it from a group: keeps its prepared writes that name `peer` as a
    /// participant, in groups where both are members. The primary may
    /// have committed such a write, and a reader seen it, while this brick
    /// holds it only prepared; should the primary not come back with its
    /// data (its disk lost), this brick's memory is the write's last
    /// record, and a crash of this brick before a vote removes the primary
    /// (when the keeping above happens) lost it. The brick that later takes
    /// the group with what it holds then served the value from before the
    /// write. If the save fails the writes are not kept, and an acceptance
    /// or an install keeps them later as before.
    pub(super) fn keep_prepared_naming(&mut self, peer: BrickId, rg: Option<RgId>) {
        if self.prepared.is_empty() {
            return;
        }
        let maps = &self.maps;
        let me = self.id;
        let mut new: Vec<TxId> = self
            .prepared
            .iter()
            .filter(|(txid, tx)| {
                !self.membership.kept.contains(txid)
                    && rg.is_none_or(|rg| rg == tx.rg)
                    && tx.participants.contains(&peer)
                    && maps
                        .rg
                        .get(tx.rg)
                        .is_some_and(|e| e.bricks.contains(&me) && e.bricks.contains(&peer))
            })
            .map(|(txid, _)| *txid)
            .collect();
        if new.is_empty() {
            return;
        }
        new.sort_unstable();
        log::info!(
            "{}: keeping {} prepared writes across a restart while it cannot count on {peer}",
            self.id,
            new.len()
        );
        self.membership.kept.extend(new.iter().copied());
        if !self.save_votes_file() {
            for txid in new {
                self.membership.kept.remove(&txid);
            }
        }
    }

    /// Adds `new` to the kept writes; returns whether there were any.
    fn keep(&mut self, new: Vec<TxId>) -> bool {
        if new.is_empty() {
            return false;
        }
        log::info!(
            "{}: keeping {} prepared writes across a restart while their group loses a participant",
            self.id,
            new.len()
        );
        self.membership.kept.extend(new);
        true
    }

    /// A kept write was resolved (or dropped) here: it leaves the file, at
    /// once unless it was `committed` (see the module's docs). If that save
    /// fails, the next prepare tries again, and waits for it.
    pub(super) fn unkeep(&mut self, txid: TxId, committed: bool) {
        if self.membership.kept.remove(&txid) && (committed || !self.save_votes_file()) {
            self.membership.kept_stale = true;
        }
    }

    /// Before a prepare or a table change: the file stops listing kept
    /// writes committed since its last save. Returns false if that save
    /// failed: the change must not go ahead then.
    pub(super) fn save_if_kept_stale(&mut self) -> bool {
        !self.membership.kept_stale || self.save_votes_file()
    }

    /// Saves the votes and kept writes; false (logged) if that failed.
    pub(super) fn save_votes_file(&mut self) -> bool {
        let bytes = self.encoded_votes();
        match self.config.storage.save_votes(&bytes) {
            Ok(()) => {
                self.membership.kept_stale = false;
                self.membership.saved = bytes;
                true
            }
            Err(e) => {
                log::error!("{}: cannot save its votes: {e}", self.id);
                false
            }
        }
    }

    /// Takes back, at a start, the writes kept before it: prepared again,
    /// with their locks and reserved room, for the usual resolution. A
    /// write of a partition this brick no longer holds data of (blank) or
    /// of a group it is no longer a member of is dropped: the group went
    /// on without this brick. Returns whether any was dropped: the file must
    /// stop listing it then, or a later start, with this brick back in the
    /// group, would take it back.
    pub(super) fn restore_kept(&mut self, txs: Vec<KeptTx>, now: Instant) -> bool {
        let mut dropped = false;
        for kept in txs {
            let rg = self.maps.dp.rg_of(kept.partition);
            let member = rg
                .and_then(|rg| self.maps.rg.get(rg))
                .is_some_and(|e| e.bricks.contains(&self.id));
            let lock_key = (kept.partition, kept.store_key);
            let value_len = match &kept.write {
                Write::Put(value) => value.len(),
                Write::Remove => 0,
            };
            let fits = self.partitions.get(&kept.partition).is_some_and(|store| {
                let reserved = self.reserved.get(&kept.partition).copied().unwrap_or(0);
                store.can_fit_reserved(reserved, lock_key.1.len(), value_len)
            });
            let (Some(rg), true, true) = (rg, member, fits) else {
                log::info!(
                    "{}: dropping kept transaction {} of {}: not a member holding it",
                    self.id,
                    kept.txid.0,
                    kept.partition
                );
                dropped = true;
                continue;
            };
            let lock_hash = self.lock_hash(lock_key.0, &lock_key.1);
            if self.recovery.blank.contains(&kept.partition)
                || self.prepared.contains_key(&kept.txid)
                || self
                    .lock_holder(lock_hash, lock_key.0, &lock_key.1)
                    .is_some()
            {
                dropped = true;
                continue;
            }
            log::info!(
                "{}: transaction {} of {} is prepared again from its votes file",
                self.id,
                kept.txid.0,
                kept.partition
            );
            self.hold_prepared(
                kept.txid,
                PreparedTx {
                    partition: kept.partition,
                    rg,
                    store_key: lock_key.1,
                    lock_hash,
                    write: kept.write,
                    participants: kept.participants,
                    deadline: now + self.config.prepare_timeout,
                    round: None,
                },
            );
            self.membership.kept.insert(kept.txid);
        }
        dropped
    }
}
