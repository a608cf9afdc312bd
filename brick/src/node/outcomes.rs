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
//!
//! A brick that stops cleanly saves them ([`Outcomes::encode`]) and the
//! next start takes them back ([`Outcomes::decode`]), less the time it was
//! down, so a clean restart forgets no outcome a running brick would still
//! remember. Encoding, all integers little-endian: a version byte; the
//! count of commit blocks (u32), then each block's client (u32), block
//! number (u32), milliseconds left to live (u32) and 64 words of bits
//! (u64); the count of other outcomes (u32), then each one's transaction
//! (u64), state (u8: 1 prepared, 2 committed, 3 aborted) and milliseconds
//! left (u32).

use std::collections::VecDeque;

use byteorder::{ByteOrder, LittleEndian};

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

    /// Every outcome remembered at `now`, with the time each has left (see
    /// the module documentation for the layout).
    pub(super) fn encode(&self, now: Instant) -> Vec<u8> {
        let left_ms = |until: Instant| -> u32 {
            let ms = until.saturating_duration_since(now).as_millis();
            u32::try_from(ms).unwrap_or(u32::MAX)
        };
        let mut out = Vec::with_capacity(
            1 + 4 + self.committed.len() * (12 + 8 * BLOCK_WORDS) + 4 + self.others.len() * 13,
        );
        out.push(ENCODING_VERSION);
        let mut blocks: Vec<(&BlockKey, &Block)> = self.committed.iter().collect();
        blocks.sort_unstable_by_key(|(key, _)| **key);
        put_u32(&mut out, blocks.len() as u32);
        for ((client, number), block) in blocks {
            put_u32(&mut out, *client);
            put_u32(&mut out, *number);
            put_u32(&mut out, left_ms(block.touched + self.retention));
            for word in block.bits.iter() {
                let mut bytes = [0; 8];
                LittleEndian::write_u64(&mut bytes, *word);
                out.extend_from_slice(&bytes);
            }
        }
        // An entry's deadline is where `insert` queued it.
        let mut others: Vec<(TxId, TxState, Instant)> = self
            .expiry
            .iter()
            .filter_map(|(at, entry)| match entry {
                Entry::Other(txid) => self.others.get(txid).map(|state| (*txid, *state, *at)),
                Entry::Block(_) => None,
            })
            .collect();
        others.sort_unstable_by_key(|(txid, _, _)| *txid);
        put_u32(&mut out, others.len() as u32);
        for (txid, state, until) in others {
            let mut bytes = [0; 8];
            LittleEndian::write_u64(&mut bytes, txid.0);
            out.extend_from_slice(&bytes);
            out.push(match state {
                TxState::Unknown => 0,
                TxState::Prepared => 1,
                TxState::Committed => 2,
                TxState::Aborted => 3,
            });
            put_u32(&mut out, left_ms(until));
        }
        out
    }

    /// Outcomes saved by [`Outcomes::encode`], taken back at `now` by a
    /// brick that was down for `down`: what had less than that left is
    /// gone. Refuses bytes that do not decode exactly, or hold more than
    /// the limits allow.
    pub(super) fn decode(
        bytes: &[u8],
        retention: Duration,
        now: Instant,
        down: Duration,
    ) -> Result<Outcomes, String> {
        let mut r = Reader { bytes, at: 0 };
        let version = r.take(1)?[0];
        if version != ENCODING_VERSION {
            return Err(format!(
                "saved outcomes of version {version}; this brick reads version {ENCODING_VERSION}"
            ));
        }
        let mut outcomes = Outcomes::new(retention);
        // Time left after the time down, or `None` if it ran out.
        let until = |left_ms: u32| -> Option<Instant> {
            Duration::from_millis(left_ms.into())
                .checked_sub(down)
                .filter(|left| !left.is_zero())
                .map(|left| now + left)
        };
        let mut queue: Vec<(Instant, Entry)> = Vec::new();
        let blocks = r.count(limits::OUTCOME_BLOCKS_MAX, 12 + 8 * BLOCK_WORDS)?;
        for _ in 0..blocks {
            let key = (r.u32()?, r.u32()?);
            let left_ms = r.u32()?;
            let mut bits = Box::new([0u64; BLOCK_WORDS]);
            for word in bits.iter_mut() {
                *word = LittleEndian::read_u64(r.take(8)?);
            }
            let Some(at) = until(left_ms) else {
                continue;
            };
            // Touched so that it lives until `at`; a block saved by an
            // earlier run whose retention was longer lives on no longer
            // than now plus this run's retention.
            let touched = at.checked_sub(retention).unwrap_or(now).min(now);
            if outcomes
                .committed
                .insert(key, Block { bits, touched })
                .is_some()
            {
                return Err(format!("saved outcomes hold block {key:?} twice"));
            }
            queue.push((touched + retention, Entry::Block(key)));
        }
        let others = r.count(limits::OUTCOMES_MAX, 13)?;
        for _ in 0..others {
            let txid = TxId(LittleEndian::read_u64(r.take(8)?));
            let state = match r.take(1)?[0] {
                0 => TxState::Unknown,
                1 => TxState::Prepared,
                2 => TxState::Committed,
                3 => TxState::Aborted,
                tag => return Err(format!("saved outcome of {} has state {tag}", txid.0)),
            };
            let left_ms = r.u32()?;
            let Some(at) = until(left_ms) else {
                continue;
            };
            if outcomes.others.insert(txid, state).is_some() {
                return Err(format!("saved outcomes hold transaction {} twice", txid.0));
            }
            queue.push((at, Entry::Other(txid)));
        }
        if r.at != bytes.len() {
            return Err(format!(
                "{} bytes past the end of the saved outcomes",
                bytes.len() - r.at
            ));
        }
        queue.sort_by_key(|(at, _)| *at);
        outcomes.expiry = queue.into();
        Ok(outcomes)
    }
}

/// The version of [`Outcomes::encode`]'s layout.
const ENCODING_VERSION: u8 = 1;

fn put_u32(out: &mut Vec<u8>, value: u32) {
    let mut bytes = [0; 4];
    LittleEndian::write_u32(&mut bytes, value);
    out.extend_from_slice(&bytes);
}

/// A cursor over saved outcomes; every read checks what is left first.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .at
            .checked_add(n)
            .filter(|end| *end <= self.bytes.len())
            .ok_or_else(|| format!("saved outcomes cut short at byte {}", self.at))?;
        let taken = &self.bytes[self.at..end];
        self.at = end;
        Ok(taken)
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(LittleEndian::read_u32(self.take(4)?))
    }

    /// A count of at most `limit` items of `item_bytes` each, all of which
    /// must fit in what is left.
    fn count(&mut self, limit: usize, item_bytes: usize) -> Result<usize, String> {
        let count = self.u32()? as usize;
        if count > limit || count.saturating_mul(item_bytes) > self.bytes.len() - self.at {
            return Err(format!(
                "saved outcomes claim {count} entries at byte {}",
                self.at
            ));
        }
        Ok(count)
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

    /// Outcomes of three ages: commits of client 7 (touched at 0 s and
    /// 6 s), an abort at 2 s and a commit of client 8 at 4 s.
    fn sample(start: Instant, retention: Duration) -> Outcomes {
        let mut o = Outcomes::new(retention);
        o.insert(start, tx(7, 1), TxState::Committed);
        o.insert(start + Duration::from_secs(2), tx(7, 2), TxState::Aborted);
        o.insert(
            start + Duration::from_secs(4),
            tx(8, 9000),
            TxState::Committed,
        );
        o.insert(start + Duration::from_secs(6), tx(7, 3), TxState::Committed);
        o
    }

    #[test]
    fn saved_outcomes_come_back_less_the_time_down() {
        let start = Instant::now();
        let retention = Duration::from_secs(10);
        let saved_at = start + Duration::from_secs(7);
        let bytes = sample(start, retention).encode(saved_at);
        let later = saved_at + Duration::from_secs(100);

        // Back at once: everything, each with the time it had left.
        let o = Outcomes::decode(&bytes, retention, later, Duration::ZERO).unwrap();
        assert_eq!(o.get(tx(7, 1)), Some(TxState::Committed));
        assert_eq!(o.get(tx(7, 3)), Some(TxState::Committed));
        assert_eq!(o.get(tx(7, 2)), Some(TxState::Aborted));
        assert_eq!(o.get(tx(8, 9000)), Some(TxState::Committed));
        assert_eq!(o.get(tx(7, 4)), None, "never finished");
        // The abort had 5 s left; client 8's block 7 s; client 7's 9 s.
        let mut o = o;
        assert_eq!(o.next_expiry(), Some(later + Duration::from_secs(5)));
        o.expire(later + Duration::from_secs(5));
        assert_eq!(o.get(tx(7, 2)), None);
        o.expire(later + Duration::from_secs(7));
        assert_eq!(o.get(tx(8, 9000)), None);
        assert_eq!(o.get(tx(7, 1)), Some(TxState::Committed));
        o.expire(later + Duration::from_secs(9));
        assert!(o.committed.is_empty() && o.others.is_empty() && o.expiry.is_empty());

        // Down for 7 s: only client 7's block is left, for 2 s (client
        // 8's had exactly 7 s left).
        let mut o = Outcomes::decode(&bytes, retention, later, Duration::from_secs(7)).unwrap();
        assert_eq!(o.get(tx(7, 2)), None);
        assert_eq!(o.get(tx(8, 9000)), None);
        assert_eq!(o.get(tx(7, 3)), Some(TxState::Committed));
        assert_eq!(o.next_expiry(), Some(later + Duration::from_secs(2)));
        o.expire(later + Duration::from_secs(2));
        assert_eq!(o.get(tx(7, 3)), None);

        // Down for longer than the retention: nothing.
        let o = Outcomes::decode(&bytes, retention, later, retention).unwrap();
        assert!(o.committed.is_empty() && o.others.is_empty() && o.expiry.is_empty());
    }

    #[test]
    fn saved_outcomes_that_do_not_decode_exactly_are_refused() {
        let start = Instant::now();
        let retention = Duration::from_secs(10);
        let bytes = sample(start, retention).encode(start + Duration::from_secs(7));
        let decode = |b: &[u8]| Outcomes::decode(b, retention, start, Duration::ZERO).map(|_| ());
        assert_eq!(decode(&bytes), Ok(()));
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode(&longer).unwrap_err().contains("past the end"));
        let mut version = bytes.clone();
        version[0] = 9;
        assert!(decode(&version).unwrap_err().contains("version 9"));
        // A count over the limit, and one that the bytes left cannot hold.
        let mut many = vec![ENCODING_VERSION];
        many.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode(&many).unwrap_err().contains("claim"));
        let mut few = vec![ENCODING_VERSION];
        few.extend_from_slice(&3u32.to_le_bytes());
        assert!(decode(&few).unwrap_err().contains("claim"));
        // A state byte that names no state: the abort's is 13 bytes from
        // the end (txid 8, state 1, time left 4).
        let mut state = bytes.clone();
        let at = state.len() - 5;
        state[at] = 7;
        assert!(decode(&state).unwrap_err().contains("state 7"));
        // Random bytes, and random damage to the real ones: an error or
        // outcomes, never a panic.
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..2000 {
            let mut damaged = bytes.clone();
            let i = next() as usize % damaged.len();
            damaged[i] ^= 1 << (next() % 8);
            let _ = decode(&damaged);
            let noise: Vec<u8> = (0..next() % 64).map(|_| next() as u8).collect();
            let _ = decode(&noise);
        }
    }
}
