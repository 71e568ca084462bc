//! Latency samples and their percentiles, and how numbers are printed.

use std::time::Duration;

/// The latencies of one kind of operation.
#[derive(Debug, Clone, Default)]
pub struct Samples {
    values: Vec<Duration>,
}

impl Samples {
    pub fn with_capacity(n: usize) -> Self {
        Self {
            values: Vec::with_capacity(n),
        }
    }

    pub fn push(&mut self, d: Duration) {
        self.values.push(d);
    }

    pub fn extend(&mut self, other: Samples) {
        self.values.extend(other.values);
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The `p`-th percentile (0 < p ≤ 100) by the nearest-rank method, or `None` without samples.
    pub fn percentile(&self, p: f64) -> Option<Duration> {
        if self.values.is_empty() {
            return None;
        }
        let mut sorted = self.values.clone();
        sorted.sort_unstable();
        let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
        Some(sorted[rank.clamp(1, sorted.len()) - 1])
    }

    /// p50 and p99, when there are samples.
    pub fn p50_p99(&self) -> Option<(Duration, Duration)> {
        Some((self.percentile(50.0)?, self.percentile(99.0)?))
    }
}

/// A duration in the unit that suits it: µs below a millisecond, ms below ten seconds, else s.
pub fn fmt_duration(d: Duration) -> String {
    let micros = d.as_secs_f64() * 1e6;
    if micros < 1_000.0 {
        format!("{micros:.0} µs")
    } else if micros < 10_000_000.0 {
        format!("{:.2} ms", micros / 1e3)
    } else {
        format!("{:.1} s", micros / 1e6)
    }
}

/// Operations per second, rounded to three significant figures.
pub fn fmt_rate(per_sec: f64) -> String {
    let digits = if per_sec >= 100.0 {
        0
    } else if per_sec >= 10.0 {
        1
    } else {
        2
    };
    let mut text = format!("{per_sec:.digits$}");
    if digits == 0 && text.len() > 3 {
        // Thousands separators for readability: 12345 -> 12,345.
        let mut grouped = String::new();
        for (i, c) in text.chars().enumerate() {
            if i > 0 && (text.len() - i) % 3 == 0 {
                grouped.push(',');
            }
            grouped.push(c);
        }
        text = grouped;
    }
    format!("{text}/s")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_follow_the_nearest_rank() {
        let mut s = Samples::default();
        for ms in 1..=100 {
            s.push(Duration::from_millis(ms));
        }
        assert_eq!(s.percentile(50.0), Some(Duration::from_millis(50)));
        assert_eq!(s.percentile(99.0), Some(Duration::from_millis(99)));
        assert_eq!(s.percentile(100.0), Some(Duration::from_millis(100)));
        assert_eq!(Samples::default().percentile(50.0), None);
    }

    #[test]
    fn rates_and_durations_print_in_readable_units() {
        assert_eq!(fmt_rate(12_345.4), "12,345/s");
        assert_eq!(fmt_rate(999.6), "1,000/s");
        assert_eq!(fmt_rate(42.31), "42.3/s");
        assert_eq!(fmt_duration(Duration::from_micros(250)), "250 µs");
        assert_eq!(fmt_duration(Duration::from_micros(2_500)), "2.50 ms");
        assert_eq!(fmt_duration(Duration::from_secs(12)), "12.0 s");
    }
}
