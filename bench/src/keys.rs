//! What the load asks for: which keys (uniform or zipfian over `0..keys`),
//! which operations (the read/write mix), and how a key id becomes bytes.
//! Every choice comes from a seeded ChaCha generator, so a seed names one
//! exact sequence of operations per service. How operations are issued and
//! timed is `driver.rs`'s business.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Zipf};

use crate::driver::Op;

/// The exponent of the zipfian distribution, as in YCSB: the hottest key is
/// asked for about 8% of the time with 100,000 keys.
pub const ZIPF_EXPONENT: f64 = 0.99;

/// The read fraction of the load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mix {
    /// Reads only.
    Read,
    /// 95% reads, 5% writes.
    Read95,
    /// Half reads, half writes.
    Half,
    /// Writes only.
    Write,
}

impl Mix {
    /// Percent of operations that are reads.
    pub fn read_percent(self) -> u32 {
        match self {
            Mix::Read => 100,
            Mix::Read95 => 95,
            Mix::Half => 50,
            Mix::Write => 0,
        }
    }

    /// The spelling on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Mix::Read => "read",
            Mix::Read95 => "95-5",
            Mix::Half => "50-50",
            Mix::Write => "write",
        }
    }
}

impl FromStr for Mix {
    type Err = String;
    fn from_str(s: &str) -> Result<Mix, String> {
        match s {
            "read" => Ok(Mix::Read),
            "95-5" => Ok(Mix::Read95),
            "50-50" => Ok(Mix::Half),
            "write" => Ok(Mix::Write),
            other => Err(format!(
                "unknown mix {other:?}; use read, 95-5, 50-50 or write"
            )),
        }
    }
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How keys are chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyDist {
    /// Every key equally likely.
    Uniform,
    /// Key `i` has weight `1 / (i + 1)^ZIPF_EXPONENT`: key 0 is the hottest.
    Zipfian,
}

impl KeyDist {
    /// The spelling on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            KeyDist::Uniform => "uniform",
            KeyDist::Zipfian => "zipfian",
        }
    }
}

impl FromStr for KeyDist {
    type Err = String;
    fn from_str(s: &str) -> Result<KeyDist, String> {
        match s {
            "uniform" => Ok(KeyDist::Uniform),
            "zipfian" => Ok(KeyDist::Zipfian),
            other => Err(format!(
                "unknown distribution {other:?}; use uniform or zipfian"
            )),
        }
    }
}

impl fmt::Display for KeyDist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Draws key ids in `0..keys`.
pub struct KeyGen {
    keys: u64,
    zipf: Option<Zipf<f64>>,
    rng: ChaCha8Rng,
}

impl KeyGen {
    /// A generator for `keys` keys (at least one) whose sequence is fixed by
    /// `seed` and `stream`; services of one run share the seed and differ in
    /// the stream, so they draw independent sequences.
    pub fn new(dist: KeyDist, keys: u64, seed: u64, stream: u64) -> KeyGen {
        assert!(keys >= 1, "a key generator needs at least one key");
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(stream);
        let zipf = match dist {
            KeyDist::Uniform => None,
            // `Zipf::new` fails only for n < 1 or a negative exponent, both
            // ruled out above.
            KeyDist::Zipfian => {
                Some(Zipf::new(keys as f64, ZIPF_EXPONENT).expect("n >= 1 and s >= 0"))
            }
        };
        KeyGen { keys, zipf, rng }
    }

    /// The next key id.
    pub fn next_key(&mut self) -> u64 {
        match &self.zipf {
            None => self.rng.random_range(0..self.keys),
            Some(zipf) => {
                // Zipf yields ranks 1..=n as floats; the clamp guards the
                // conversion against rounding at the ends.
                let rank = zipf.sample(&mut self.rng) as u64;
                rank.clamp(1, self.keys) - 1
            }
        }
    }

    /// True with probability `percent / 100`.
    pub fn chance(&mut self, percent: u32) -> bool {
        self.rng.random_range(0..100) < percent
    }
}

/// Where a service's operations come from.
// One source per service thread lives for the whole run, so the size of its
// largest variant costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
pub enum OpSource {
    /// Every key from `next` up to `end`, stepping by `step`, written once:
    /// the preload, with keys dealt round-robin to the services.
    Sequential {
        next: u64,
        end: u64,
        step: u64,
        value: Arc<[u8]>,
    },
    /// The measured load: keys from the generator, reads with the mix's
    /// probability, without end.
    Mixed {
        keys: KeyGen,
        read_percent: u32,
        value: Arc<[u8]>,
    },
}

impl OpSource {
    /// The next operation, or `None` once a sequential source is done.
    pub fn next_op(&mut self) -> Option<Op> {
        match self {
            OpSource::Sequential {
                next,
                end,
                step,
                value,
            } => {
                if *next >= *end {
                    return None;
                }
                let key = *next;
                *next = next.saturating_add(*step);
                Some(Op::Put(key, Arc::clone(value)))
            }
            OpSource::Mixed {
                keys,
                read_percent,
                value,
            } => {
                let read = keys.chance(*read_percent);
                let key = keys.next_key();
                Some(if read {
                    Op::Get(key)
                } else {
                    Op::Put(key, Arc::clone(value))
                })
            }
        }
    }
}

/// The bytes of key `id`: 8 bytes, big-endian, for every target, so DDS and
/// Redis store the same number of keys of the same size.
pub fn key_bytes(id: u64) -> [u8; 8] {
    id.to_be_bytes()
}

/// A value of `size` bytes. The content is a fixed printable pattern; no
/// target looks inside values.
pub fn value_of_size(size: usize) -> Arc<[u8]> {
    (0..size).map(|i| b'a' + (i % 26) as u8).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_seed;

    fn draw(dist: KeyDist, keys: u64, seed: u64, stream: u64, n: usize) -> Vec<u64> {
        let mut generator = KeyGen::new(dist, keys, seed, stream);
        (0..n).map(|_| generator.next_key()).collect()
    }

    #[test]
    fn same_seed_same_keys_other_stream_other_keys() {
        let seed = test_seed();
        for dist in [KeyDist::Uniform, KeyDist::Zipfian] {
            let a = draw(dist, 100_000, seed, 0, 1000);
            assert_eq!(a, draw(dist, 100_000, seed, 0, 1000), "{dist} seed {seed}");
            assert_ne!(a, draw(dist, 100_000, seed, 1, 1000), "{dist} seed {seed}");
        }
    }

    #[test]
    fn keys_stay_in_range() {
        let seed = test_seed();
        for dist in [KeyDist::Uniform, KeyDist::Zipfian] {
            for keys in [1u64, 2, 7, 1000] {
                let drawn = draw(dist, keys, seed, 3, 20_000);
                assert!(
                    drawn.iter().all(|&k| k < keys),
                    "{dist} keys {keys} seed {seed}"
                );
                if (2..=7).contains(&keys) {
                    // Every key of a small space shows up, the coldest too.
                    assert!(
                        drawn.contains(&(keys - 1)),
                        "{dist} keys {keys} seed {seed}"
                    );
                    assert!(drawn.contains(&0), "{dist} keys {keys} seed {seed}");
                }
            }
        }
    }

    #[test]
    fn zipfian_favours_low_ids_and_uniform_does_not() {
        let seed = test_seed();
        let keys = 100_000;
        let n = 200_000;
        let share_of_key_0 = |dist| {
            draw(dist, keys, seed, 0, n)
                .iter()
                .filter(|&&k| k == 0)
                .count() as f64
                / n as f64
        };
        // With exponent 0.99 over 100,000 keys the hottest key takes about
        // 8% of the draws; uniformly it would take 0.001%.
        let zipf = share_of_key_0(KeyDist::Zipfian);
        assert!(
            (0.06..0.10).contains(&zipf),
            "zipfian share of key 0 is {zipf}, seed {seed}"
        );
        let uniform = share_of_key_0(KeyDist::Uniform);
        assert!(
            uniform < 0.001,
            "uniform share of key 0 is {uniform}, seed {seed}"
        );
    }

    #[test]
    fn mixes_read_their_fraction() {
        let seed = test_seed();
        for mix in [Mix::Read, Mix::Read95, Mix::Half, Mix::Write] {
            let mut source = OpSource::Mixed {
                keys: KeyGen::new(KeyDist::Uniform, 10, seed, 0),
                read_percent: mix.read_percent(),
                value: value_of_size(3),
            };
            let n = 20_000;
            let reads = (0..n)
                .filter(|_| matches!(source.next_op(), Some(Op::Get(_))))
                .count();
            let percent = reads as f64 * 100.0 / n as f64;
            let want = f64::from(mix.read_percent());
            assert!(
                (percent - want).abs() < 1.5,
                "{mix}: {percent}% reads, seed {seed}"
            );
        }
    }

    #[test]
    fn sequential_source_writes_each_of_its_keys_once() {
        let mut source = OpSource::Sequential {
            next: 1,
            end: 10,
            step: 3,
            value: value_of_size(5),
        };
        let mut keys = Vec::new();
        while let Some(op) = source.next_op() {
            match op {
                Op::Put(key, value) => {
                    assert_eq!(&*value, b"abcde");
                    keys.push(key);
                }
                Op::Get(_) => panic!("a preload only writes"),
            }
        }
        assert_eq!(keys, [1, 4, 7]);
        assert!(source.next_op().is_none());
    }

    #[test]
    fn names_round_trip() {
        for mix in [Mix::Read, Mix::Read95, Mix::Half, Mix::Write] {
            assert_eq!(mix.name().parse::<Mix>(), Ok(mix));
        }
        for dist in [KeyDist::Uniform, KeyDist::Zipfian] {
            assert_eq!(dist.name().parse::<KeyDist>(), Ok(dist));
        }
        assert!("90-10".parse::<Mix>().is_err());
        assert_eq!(key_bytes(0x0102), [0, 0, 0, 0, 0, 0, 1, 2]);
    }
}
