//! One module per scenario of the issue, numbered as there.

pub mod claim;
pub mod dag;
pub mod fanout;
pub mod memory;
pub mod peer;
pub mod ready;
pub mod submit;

/// Thousands separators for sizes in labels: 10000 -> 10,000.
pub fn count(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Untimed calls made before a latency measurement of `calls`, on both sides: they fill the
/// page cache, open the pool's connections and prepare their statements.
pub fn warm_up(calls: usize) -> usize {
    (calls / 10).clamp(5, 200)
}

/// A small deterministic generator, so every run asks for the same keys in the same order.
pub struct Lcg(u64);

impl Lcg {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// A number below `bound`.
    pub fn below(&mut self, bound: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) % bound as u64) as usize
    }
}
