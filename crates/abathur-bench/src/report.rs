//! What a scenario measured, printed as it runs and gathered into one table at the end.

use std::fmt::Write as _;
use std::time::Duration;

use crate::stats::{fmt_duration, fmt_rate, Samples};

/// One side of a comparison: ours, the raw baseline, or the peer.
#[derive(Debug, Clone, Default)]
pub struct Measure {
    /// Operations (or tasks) per second, for throughput scenarios.
    pub rate: Option<f64>,
    /// Wall time of the whole measured run.
    pub elapsed: Duration,
    /// Per-operation latency, where it applies.
    pub latency: Samples,
}

impl Measure {
    /// `ops` operations done in `elapsed`, with their latencies.
    pub fn throughput(ops: usize, elapsed: Duration, latency: Samples) -> Self {
        Self {
            rate: Some(ops as f64 / elapsed.as_secs_f64().max(1e-9)),
            elapsed,
            latency,
        }
    }

    /// One timed run, with no rate.
    pub fn once(elapsed: Duration) -> Self {
        let mut latency = Samples::default();
        latency.push(elapsed);
        Self {
            rate: None,
            elapsed,
            latency,
        }
    }

    /// Latencies only.
    pub fn latency(elapsed: Duration, latency: Samples) -> Self {
        Self {
            rate: None,
            elapsed,
            latency,
        }
    }

    /// The headline figure: the rate if there is one, else p50 / p99, else the wall time.
    pub fn headline(&self) -> String {
        if let Some(rate) = self.rate {
            return fmt_rate(rate);
        }
        self.percentiles()
            .unwrap_or_else(|| fmt_duration(self.elapsed))
    }

    /// `p50 / p99` of the latencies, or `None` when a single sample says everything.
    pub fn percentiles(&self) -> Option<String> {
        if self.latency.len() < 2 {
            return None;
        }
        let (p50, p99) = self.latency.p50_p99()?;
        Some(format!("{} / {}", fmt_duration(p50), fmt_duration(p99)))
    }
}

/// How ours compares with the baseline.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Ratio {
    /// Our rate over the baseline's: above 1 means we move more per second.
    Throughput(f64),
    /// Our latency over the baseline's at p50 and at p99 (both the wall time, for a single
    /// run): below 1 means we are quicker.
    Time { p50: f64, p99: f64 },
}

impl std::fmt::Display for Ratio {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ratio::Throughput(r) => write!(f, "{r:.2}x rate"),
            Ratio::Time { p50, p99 } if p50 == p99 => write!(f, "{p50:.2}x time"),
            Ratio::Time { p50, p99 } => write!(f, "{p50:.2}x / {p99:.2}x time (p50 / p99)"),
        }
    }
}

/// One line of the table.
#[derive(Debug, Clone)]
pub struct Row {
    pub scenario: &'static str,
    pub variant: String,
    pub ours: Measure,
    pub baseline: Option<Measure>,
    pub peer: Option<Measure>,
}

impl Row {
    pub fn new(scenario: &'static str, variant: impl Into<String>, ours: Measure) -> Self {
        Self {
            scenario,
            variant: variant.into(),
            ours,
            baseline: None,
            peer: None,
        }
    }

    pub fn baseline(mut self, baseline: Measure) -> Self {
        self.baseline = Some(baseline);
        self
    }

    pub fn peer(mut self, peer: Measure) -> Self {
        self.peer = Some(peer);
        self
    }

    /// Ours against the baseline: rates when both have one, else p99 (or single-run) times.
    pub fn ratio(&self) -> Option<Ratio> {
        let base = self.baseline.as_ref()?;
        ratio_of(&self.ours, base)
    }

    /// Ours against the peer, by rate.
    pub fn peer_ratio(&self) -> Option<Ratio> {
        ratio_of(&self.ours, self.peer.as_ref()?)
    }

    /// The line printed as soon as the row is measured.
    pub fn print(&self) {
        let mut line = format!("  {:<44} ours {:>22}", self.variant, self.ours.headline());
        if let (Some(_), Some(p)) = (self.ours.rate, self.ours.percentiles()) {
            let _ = write!(line, "  (p50/p99 {p})");
        }
        if let Some(base) = &self.baseline {
            let _ = write!(line, " | baseline {:>20}", base.headline());
            if let (Some(_), Some(p)) = (base.rate, base.percentiles()) {
                let _ = write!(line, "  (p50/p99 {p})");
            }
        }
        if let Some(ratio) = self.ratio() {
            let _ = write!(line, " | ours/baseline {ratio}");
        }
        if let Some(peer) = &self.peer {
            let _ = write!(line, " | peer {}", peer.headline());
        }
        if let Some(ratio) = self.peer_ratio() {
            let _ = write!(line, " | ours/peer {ratio}");
        }
        println!("{line}");
    }
}

fn ratio_of(ours: &Measure, other: &Measure) -> Option<Ratio> {
    match (ours.rate, other.rate) {
        (Some(a), Some(b)) if b > 0.0 => Some(Ratio::Throughput(a / b)),
        _ => {
            let time = |m: &Measure, p: f64| {
                if m.latency.len() >= 2 {
                    m.latency.percentile(p)
                } else {
                    Some(m.elapsed)
                }
            };
            let ratio = |p: f64| -> Option<f64> {
                let (a, b) = (time(ours, p)?, time(other, p)?);
                (!b.is_zero()).then(|| a.as_secs_f64() / b.as_secs_f64())
            };
            Some(Ratio::Time {
                p50: ratio(50.0)?,
                p99: ratio(99.0)?,
            })
        }
    }
}

/// The whole run's rows as a Markdown table.
pub fn markdown_table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| # | scenario | variant | ours | ours p50 / p99 | baseline | baseline p50 / p99 | ours / baseline | peer | ours / peer |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
    );
    let dash = || "–".to_string();
    for row in rows {
        let (number, name) = row.scenario.split_once(' ').unwrap_or(("", row.scenario));
        let rate_or_dash = |m: &Measure| m.rate.map(fmt_rate).unwrap_or_else(|| headline_time(m));
        let _ = writeln!(
            out,
            "| {number} | {name} | {} | {} | {} | {} | {} | {} | {} | {} |",
            row.variant.replace('|', "\\|"),
            rate_or_dash(&row.ours),
            row.ours.percentiles().unwrap_or_else(dash),
            row.baseline.as_ref().map(rate_or_dash).unwrap_or_else(dash),
            row.baseline
                .as_ref()
                .and_then(Measure::percentiles)
                .unwrap_or_else(dash),
            row.ratio().map(|r| r.to_string()).unwrap_or_else(dash),
            row.peer
                .as_ref()
                .map(|m| match (m.rate, m.percentiles()) {
                    // A peer measured by latency alone shows its p50 / p99 here.
                    (None, Some(p)) => p,
                    _ => rate_or_dash(m),
                })
                .unwrap_or_else(dash),
            row.peer_ratio().map(|r| r.to_string()).unwrap_or_else(dash),
        );
    }
    out
}

/// For a measure without a rate: the wall time of a single run, or `–` when the percentiles
/// column says it all.
fn headline_time(m: &Measure) -> String {
    if m.latency.len() >= 2 {
        "–".to_string()
    } else {
        fmt_duration(m.elapsed)
    }
}

/// A target of the issue, judged on this run.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub target: &'static str,
    pub measured: String,
    pub met: Option<bool>,
}

impl Verdict {
    pub fn print(&self) {
        let mark = match self.met {
            Some(true) => "met",
            Some(false) => "NOT MET",
            None => "not judged",
        };
        println!("  [{mark}] {}: {}", self.target, self.measured);
    }
}
