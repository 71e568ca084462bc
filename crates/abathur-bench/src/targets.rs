//! The targets, judged on one run's findings.

use std::time::Duration;

use crate::report::Verdict;
use crate::stats::{fmt_duration, fmt_rate};
use crate::{Findings, Scale};

fn failures(n: usize) -> String {
    if n == 0 {
        String::new()
    } else {
        format!("; {n} apalis-sqlite run(s) failed (printed above)")
    }
}

fn ms(d: Duration) -> String {
    fmt_duration(d)
}

/// One verdict per target; at tiny scale the figures are shown but not judged.
pub fn judge(f: &Findings, scale: Scale) -> Vec<Verdict> {
    let judged = |met: Option<bool>| if scale == Scale::Full { met } else { None };
    let mut out = Vec::new();

    let four = f.best_four_grouped.as_ref().map(|(_, r)| *r);
    let vs_base = four.zip(f.baseline_loop).map(|(a, b)| a / b);
    let vs_peer = f.peer_four.map(|(ours, peer)| ours / peer);
    out.push(Verdict {
        target: "4 workers with group commit: at least 3x the baseline's one-commit-per-operation loop",
        measured: match (&f.best_four_grouped, f.baseline_loop, vs_base) {
            (Some((variant, rate)), Some(base), Some(r)) => format!(
                "best 4-worker variant with group commit ({variant}) {} vs baseline loop {} = {r:.2}x{}",
                fmt_rate(*rate),
                fmt_rate(base),
                f.raw_group_ceiling.map_or(String::new(), |c| format!(
                    "; the baseline itself with raw group commit: {} = {:.2}x its loop",
                    fmt_rate(c),
                    c / base
                ))
            ),
            _ => "not measured (run scenario 2)".into(),
        },
        met: judged(vs_base.map(|r| r >= 3.0)),
    });
    out.push(Verdict {
        target: "4 workers with group commit: at least 10x apalis-sqlite",
        measured: match (f.peer_four, vs_peer) {
            (Some((ours, peer)), Some(r)) => format!(
                "scenario 7, 4 workers claiming 1 (best mode): {} vs apalis-sqlite 4 workers {} = {r:.2}x{}",
                fmt_rate(ours),
                fmt_rate(peer),
                failures(f.peer_failures)
            ),
            _ => format!("not measured (run scenario 7){}", failures(f.peer_failures)),
        },
        met: judged(vs_peer.map(|r| r >= 10.0)),
    });
    let singles = [f.submit_single_ratio, f.claim_single_ratio];
    let worst = singles.iter().flatten().map(|(r, _)| *r).reduce(f64::min);
    let shown = |r: Option<(f64, &str)>| {
        r.map_or("not measured".into(), |(r, mode)| {
            format!("{r:.2}x ({mode})")
        })
    };
    out.push(Verdict {
        target: "single operations without batching: at least 0.5x the raw baseline",
        measured: format!(
            "submit one at a time {}, claim 1 + complete by 1 worker {}",
            shown(f.submit_single_ratio),
            shown(f.claim_single_ratio),
        ),
        met: judged(worst.map(|r| r >= 0.5)),
    });
    out.push(Verdict {
        target: "keep the recorded figures: single operations at least 0.75x the raw baseline",
        measured: format!(
            "submit one at a time {}, claim 1 + complete by 1 worker {}",
            shown(f.submit_single_ratio),
            shown(f.claim_single_ratio),
        ),
        met: judged(worst.map(|r| r >= 0.75)),
    });
    out.push(Verdict {
        target: "keep the recorded figures: 4 workers with group commit at least 1.6x the raw per-operation loop",
        measured: match (&f.best_four_grouped, f.baseline_loop, vs_base) {
            (Some((variant, rate)), Some(base), Some(r)) => format!(
                "{variant}: {} vs {} = {r:.2}x",
                fmt_rate(*rate),
                fmt_rate(base)
            ),
            _ => "not measured (run scenario 2)".into(),
        },
        met: judged(vs_base.map(|r| r >= 1.6)),
    });
    out.push(Verdict {
        target: "fan-out of 10,000 dependents: under 100 ms",
        measured: f
            .fanout_worst
            .map_or("not measured (run scenario 3)".into(), |d| {
                format!("slowest run {}", ms(d))
            }),
        met: judged(f.fanout_worst.map(|d| d < Duration::from_millis(100))),
    });
    out.push(Verdict {
        target: "ready query p99 under 1 ms at 1,000,000 tasks",
        measured: match (f.ready_p99, f.claim_p99) {
            (Some(q), Some(c)) => format!("get_ready_tasks p99 {}, claim p99 {}", ms(q), ms(c)),
            _ => "not measured (run scenario 5)".into(),
        },
        met: judged(f.ready_p99.map(|d| d < Duration::from_millis(1))),
    });
    out.push(Verdict {
        target: "memory get p99 under 0.3 ms",
        measured: f
            .memory_get_p99
            .map_or("not measured (run scenario 6)".into(), |d| {
                format!("p99 {}", ms(d))
            }),
        met: judged(f.memory_get_p99.map(|d| d < Duration::from_micros(300))),
    });
    out.push(Verdict {
        target: "DAG scale ratio (100k / 10k run time): at most 12",
        measured: match (f.dag_ratio, f.dag_baseline_ratio) {
            (Some(r), Some(b)) => format!("ours {r:.1}, baseline {b:.1}"),
            _ => "not measured (run scenario 4)".into(),
        },
        met: judged(f.dag_ratio.map(|r| r <= 12.0)),
    });
    out
}
