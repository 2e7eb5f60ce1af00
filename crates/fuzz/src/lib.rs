//! A small mutation fuzzer that runs on stable Rust inside `cargo test`.
//!
//! Nightly (and so `cargo fuzz`'s libFuzzer) is not available on the
//! project's machines, so each target is a test: it starts from a corpus of
//! valid inputs, applies random mutations (bit flips, byte edits, chunk
//! duplication and deletion, splices of dictionary tokens and of other
//! corpus entries, length-field corruption) and calls the target on every
//! result. A panic is caught, the input is written to
//! `target/fuzz-crashes/<target>-<n>.bin` and printed in hex, and the test
//! fails. Inputs that survive are kept in the run's corpus when they differ
//! in length from their parent, which spreads mutations over many shapes.
//!
//! Each target runs for `PORTCULLIS_FUZZ_SECS` seconds (default 3, so the
//! test suite stays short) from seed `PORTCULLIS_FUZZ_SEED` (default fixed,
//! so a failure repeats). Longer runs: `PORTCULLIS_FUZZ_SECS=600 cargo test
//! -p portcullis-fuzz --release -- --test-threads 1`.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

/// A deterministic xorshift generator.
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (never zero inside).
    pub fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }
}

/// What one fuzz run did.
#[derive(Debug, Clone, Copy)]
pub struct Report {
    /// Inputs tried.
    pub runs: u64,
    /// Inputs kept in the corpus.
    pub corpus: usize,
}

/// Fuzzes `target` starting from `seeds`, splicing in `dictionary` tokens.
/// Panics (failing the test) when `target` panics on some input.
pub fn fuzz(
    name: &str,
    seeds: &[Vec<u8>],
    dictionary: &[&[u8]],
    mut target: impl FnMut(&[u8]),
) -> Report {
    let secs = std::env::var("PORTCULLIS_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(3.0);
    let seed = std::env::var("PORTCULLIS_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(0x9E37_79B9_7F4A_7C15);
    let mut rng = Rng::new(seed ^ hash(name.as_bytes()));
    let mut corpus: Vec<Vec<u8>> = seeds.to_vec();
    if corpus.is_empty() {
        corpus.push(Vec::new());
    }
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let mut runs = 0u64;
    // Every seed as it is first, then mutations.
    let mut queue: Vec<Vec<u8>> = corpus.clone();
    while Instant::now() < deadline || !queue.is_empty() {
        let (input, parent_len) = match queue.pop() {
            Some(q) => (q, usize::MAX),
            None => {
                let parent = &corpus[rng.below(corpus.len())];
                let other = corpus[rng.below(corpus.len())].clone();
                let parent_len = parent.len();
                (mutate(parent, &other, dictionary, &mut rng), parent_len)
            }
        };
        runs += 1;
        if catch_unwind(AssertUnwindSafe(|| target(&input))).is_err() {
            let path = save_crash(name, &input);
            panic!(
                "fuzz target {name} panicked on input {} (saved to {path}); add it to the target's seeds as a regression test",
                hex(&input)
            );
        }
        if parent_len != usize::MAX && input.len() != parent_len && corpus.len() < 4096 {
            corpus.push(input);
        }
    }
    eprintln!(
        "fuzz {name}: {runs} inputs in {secs} s, corpus {}",
        corpus.len()
    );
    Report {
        runs,
        corpus: corpus.len(),
    }
}

fn mutate(parent: &[u8], other: &[u8], dictionary: &[&[u8]], rng: &mut Rng) -> Vec<u8> {
    let mut v = parent.to_vec();
    let rounds = 1 + rng.below(4);
    for _ in 0..rounds {
        match rng.below(9) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] ^= 1 << rng.below(8);
            }
            1 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] = rng.next_u64() as u8;
            }
            2 => {
                let i = rng.below(v.len() + 1);
                v.insert(i, rng.next_u64() as u8);
            }
            3 if !v.is_empty() => {
                let i = rng.below(v.len());
                let n = 1 + rng.below((v.len() - i).min(16));
                v.drain(i..i + n);
            }
            4 if !v.is_empty() => {
                let i = rng.below(v.len());
                let n = 1 + rng.below((v.len() - i).min(64));
                let chunk = v[i..i + n].to_vec();
                let at = rng.below(v.len() + 1);
                v.splice(at..at, chunk);
            }
            5 if !dictionary.is_empty() => {
                let word = dictionary[rng.below(dictionary.len())];
                let at = rng.below(v.len() + 1);
                v.splice(at..at, word.iter().copied());
            }
            6 if !other.is_empty() => {
                let at = rng.below(v.len() + 1);
                let from = rng.below(other.len());
                let n = 1 + rng.below((other.len() - from).min(64));
                v.splice(at..at, other[from..from + n].iter().copied());
            }
            7 if v.len() >= 4 => {
                // Lengths and counts are big-endian integers: make one huge,
                // negative or zero.
                let i = rng.below(v.len() - 3);
                let val: [u8; 4] = match rng.below(4) {
                    0 => [0xff, 0xff, 0xff, 0xff],
                    1 => [0x7f, 0xff, 0xff, 0xff],
                    2 => [0, 0, 0, 0],
                    _ => (rng.next_u64() as u32).to_be_bytes(),
                };
                v[i..i + 4].copy_from_slice(&val);
            }
            _ => {
                let n = rng.below(v.len() + 1);
                v.truncate(n);
            }
        }
    }
    v
}

fn hash(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, x| {
        (h ^ u64::from(*x)).wrapping_mul(0x100_0000_01b3)
    })
}

fn hex(b: &[u8]) -> String {
    let shown = &b[..b.len().min(512)];
    let mut s: String = shown.iter().map(|x| format!("{x:02x}")).collect();
    if b.len() > shown.len() {
        s.push_str(&format!("…({} bytes)", b.len()));
    }
    s
}

fn save_crash(name: &str, input: &[u8]) -> String {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/fuzz-crashes");
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join(format!("{name}-{:016x}.bin", hash(input)));
    let _ = std::fs::write(&path, input);
    path.display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicking_target_is_caught_and_reported() {
        let r = catch_unwind(|| {
            fuzz("self-test", &[b"ab".to_vec()], &[b"BOOM"], |input| {
                assert!(!input.windows(4).any(|w| w == b"BOOM"), "found it");
            })
        });
        assert!(r.is_err(), "the planted crash was not found");
    }

    #[test]
    fn mutations_stay_deterministic_per_seed() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        let x = mutate(b"hello world", b"other", &[b"tok"], &mut a);
        let y = mutate(b"hello world", b"other", &[b"tok"], &mut b);
        assert_eq!(x, y);
    }
}
