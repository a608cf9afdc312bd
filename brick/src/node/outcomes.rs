//! The outcomes of finished transactions, remembered for a while so that a
//! participant or coordinator asking late gets the right answer, and so
//! that a prepare arriving after its transaction was resolved is refused.
//!
//! Nearly every transaction commits, and a coordinator numbers its
//! transactions with a counter (`TxId` = client id in the high 32 bits,
//! counter in the low 32), so commits are kept as bits: one bit per
//! transaction in blocks of 4,096 consecutive numbers of one client, about
//! a bit per commit instead of the ~40 bytes of a map entry and its expiry
//! record. That is the difference between a brick's memory after loading
//! a million keys holding a million transaction records or not. Any other
//! outcome (aborts, rare) is kept in a map.
//!
//! Each entry lasts at least `retention` after it was last written; a
//! block lives on while commits keep landing in it.

use std::collections::VecDeque;

/// Hash tables with a fast keyed hasher (the default one showed in
/// profiles of the request path).
type HashMap<K, V> = std::collections::HashMap<K, V, ahash::RandomState>;
use std::time::{Duration, Instant};

use wire::{TxId, TxState};

use crate::limits;

/// Transactions per block of commit bits.
const BLOCK_TXS: u32 = 4096;
const BLOCK_WORDS: usize = (BLOCK_TXS / 64) as usize;

/// A client id and the block number of a transaction.
type BlockKey = (u32, u32);

fn block_of(txid: TxId) -> (BlockKey, usize) {
    let client = (txid.0 >> 32) as u32;
    let seq = txid.0 as u32;
    ((client, seq / BLOCK_TXS), (seq % BLOCK_TXS) as usize)
}

struct Block {
    bits: Box<[u64; BLOCK_WORDS]>,
    touched: Instant,
}

#[derive(Clone, Copy, Debug)]
enum Entry {
    Block(BlockKey),
    Other(TxId),
}

/// Outcomes of finished transactions. See the module documentation.
pub(super) struct Outcomes {
    retention: Duration,
    committed: HashMap<BlockKey, Block>,
    others: HashMap<TxId, TxState>,
    /// When each entry may be forgotten, oldest first.
    expiry: VecDeque<(Instant, Entry)>,
}

impl Outcomes {
    pub(super) fn new(retention: Duration) -> Outcomes {
        Outcomes {
            retention,
            committed: HashMap::default(),
            others: HashMap::default(),
            expiry: VecDeque::new(),
        }
    }

    /// The remembered outcome of `txid`, if any.
    pub(super) fn get(&self, txid: TxId) -> Option<TxState> {
        if let Some(state) = self.others.get(&txid) {
            return Some(*state);
        }
        let (key, bit) = block_of(txid);
        let block = self.committed.get(&key)?;
        (block.bits[bit / 64] & (1 << (bit % 64)) != 0).then_some(TxState::Committed)
    }

    /// Remembers `state` as the outcome of `txid`.
    pub(super) fn insert(&mut self, now: Instant, txid: TxId, state: TxState) {
        if state == TxState::Committed {
            let (key, bit) = block_of(txid);
            let block = self.committed.entry(key).or_insert_with(|| {
                self.expiry
                    .push_back((now + self.retention, Entry::Block(key)));
                Block {
                    bits: Box::new([0; BLOCK_WORDS]),
                    touched: now,
                }
            });
            block.bits[bit / 64] |= 1 << (bit % 64);
            block.touched = now;
        } else if self.others.insert(txid, state).is_none() {
            self.expiry
                .push_back((now + self.retention, Entry::Other(txid)));
        }
        // Bounded memory: past the limits the oldest entries go first.
        while self.others.len() > limits::OUTCOMES_MAX
            || self.committed.len() > limits::OUTCOME_BLOCKS_MAX
        {
            match self.expiry.pop_front() {
                Some((_, entry)) => self.forget(entry),
                None => break,
            }
        }
    }

    fn forget(&mut self, entry: Entry) {
        match entry {
            Entry::Block(key) => {
                self.committed.remove(&key);
            }
            Entry::Other(txid) => {
                self.others.remove(&txid);
            }
        }
    }

    /// Forgets what is older than the retention; a block written to since
    /// its deadline was set gets a new one.
    pub(super) fn expire(&mut self, now: Instant) {
        while let Some((at, entry)) = self.expiry.front().copied() {
            if at > now {
                break;
            }
            self.expiry.pop_front();
            if let Entry::Block(key) = entry {
                if let Some(block) = self.committed.get(&key) {
                    let until = block.touched + self.retention;
                    if until > now {
                        self.expiry.push_back((until, entry));
                        continue;
                    }
                }
            }
            self.forget(entry);
        }
    }

    /// When `expire` next has something to do.
    pub(super) fn next_expiry(&self) -> Option<Instant> {
        self.expiry.front().map(|(at, _)| *at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tx(client: u32, seq: u32) -> TxId {
        TxId((u64::from(client) << 32) | u64::from(seq))
    }

    #[test]
    fn commits_and_aborts_are_told_apart_and_expire() {
        let start = Instant::now();
        let retention = Duration::from_secs(10);
        let mut o = Outcomes::new(retention);
        o.insert(start, tx(7, 1), TxState::Committed);
        o.insert(start, tx(7, 4095), TxState::Committed);
        o.insert(start, tx(7, 4096), TxState::Committed);
        o.insert(start, tx(7, 2), TxState::Aborted);
        o.insert(start, tx(8, 1), TxState::Aborted);
        assert_eq!(o.get(tx(7, 1)), Some(TxState::Committed));
        assert_eq!(o.get(tx(7, 4095)), Some(TxState::Committed));
        assert_eq!(o.get(tx(7, 4096)), Some(TxState::Committed));
        assert_eq!(o.get(tx(7, 2)), Some(TxState::Aborted));
        assert_eq!(o.get(tx(8, 1)), Some(TxState::Aborted));
        assert_eq!(o.get(tx(7, 3)), None, "never finished");
        assert_eq!(o.get(tx(9, 1)), None, "another client");
        assert_eq!(o.committed.len(), 2, "two blocks of client 7");

        // A commit landing late in a block keeps the whole block.
        o.insert(start + Duration::from_secs(8), tx(7, 5), TxState::Committed);
        o.expire(start + retention);
        assert_eq!(
            o.get(tx(7, 1)),
            Some(TxState::Committed),
            "block touched at 8 s"
        );
        assert_eq!(o.get(tx(7, 4096)), None, "untouched block expired");
        assert_eq!(o.get(tx(7, 2)), None, "abort expired");
        assert_eq!(o.next_expiry(), Some(start + Duration::from_secs(18)));
        o.expire(start + Duration::from_secs(18));
        assert_eq!(o.get(tx(7, 5)), None);
        assert!(o.committed.is_empty() && o.others.is_empty() && o.expiry.is_empty());
    }
}
