//! The PostgreSQL targets, judged on one run's findings.

use std::time::Duration;

use crate::pg::PgFindings;
use crate::report::Verdict;
use crate::stats::{fmt_duration, fmt_rate};
use crate::Scale;

/// One verdict per target; at tiny scale the figures are shown but not judged.
pub fn judge(f: &PgFindings, scale: Scale) -> Vec<Verdict> {
    let judged = |met: Option<bool>| if scale == Scale::Full { met } else { None };
    let failures = if f.peer_failures == 0 {
        String::new()
    } else {
        format!("; {} peer run(s) failed (printed above)", f.peer_failures)
    };
    let mut out = Vec::new();

    let vs_graphile = f
        .peers_ours
        .as_ref()
        .zip(f.graphile_best.as_ref())
        .map(|((_, o), (_, g))| o / g);
    out.push(Verdict {
        target: "claim + complete: at least 1.5x graphile-worker's best configuration",
        measured: match (&f.peers_ours, &f.graphile_best, vs_graphile) {
            (Some((label, o)), Some((c, g)), Some(r)) => format!(
                "P6: ours at its best ({label}) {} vs graphile-worker at its best ({c}) {} = {r:.2}x{failures}",
                fmt_rate(*o),
                fmt_rate(*g)
            ),
            _ => format!("not measured (run pg-peers){failures}"),
        },
        met: judged(vs_graphile.map(|r| r >= 1.5)),
    });
    let vs_apalis = f
        .peers_ours
        .as_ref()
        .zip(f.apalis_best)
        .map(|((_, o), (_, a))| o / a);
    out.push(Verdict {
        target: "claim + complete: at least 5x apalis-postgres",
        measured: match (&f.peers_ours, f.apalis_best, vs_apalis) {
            (Some((label, o)), Some((w, a)), Some(r)) => format!(
                "P6: ours at its best ({label}) {} vs apalis-postgres at its best ({w} workers) {} = {r:.2}x{failures}",
                fmt_rate(*o),
                fmt_rate(a)
            ),
            _ => format!("not measured (run pg-peers){failures}"),
        },
        met: judged(vs_apalis.map(|r| r >= 5.0)),
    });
    out.push(Verdict {
        target: "enqueue to start (submit returned to the idle worker's claim returned): p50 under 5 ms",
        measured: f.latency.map_or("not measured (run pg-latency)".into(), |(p50, p99)| {
            format!("p50 {}, p99 {}", fmt_duration(p50), fmt_duration(p99))
        }),
        met: judged(f.latency.map(|(p50, _)| p50 < Duration::from_millis(5))),
    });
    out.push(Verdict {
        target: "completing one task with 10,000 dependents: under 100 ms",
        measured: f
            .fanout_worst
            .map_or("not measured (run pg-fanout)".into(), |d| {
                format!("slowest run {}", fmt_duration(d))
            }),
        met: judged(f.fanout_worst.map(|d| d < Duration::from_millis(100))),
    });
    out.push(Verdict {
        target: "the ready query at 1,000,000 tasks: p99 under 1 ms",
        measured: match (f.ready_p99, f.claim_p99) {
            (Some(q), Some(c)) => format!(
                "get_ready_tasks p99 {}, claim 1 p99 {}",
                fmt_duration(q),
                fmt_duration(c)
            ),
            _ => "not measured (run pg-ready)".into(),
        },
        met: judged(f.ready_p99.map(|d| d < Duration::from_millis(1))),
    });
    out.push(Verdict {
        target: "8 worker processes: no deadlock and no serialization failure reaches the user",
        measured: match (f.process_errors, f.process_conflicts) {
            (Some(all), Some(conflicts)) => format!(
                "every task completed once; errors that reached the workers {all}, of which \
                 serialization failures, deadlocks or lock timeouts {conflicts}{}",
                f.process_rate.map_or(String::new(), |r| format!(
                    "; best throughput {}",
                    fmt_rate(r)
                ))
            ),
            _ => "not measured (run pg-processes)".into(),
        },
        met: judged(f.process_errors.map(|n| n == 0)),
    });
    if let (Some((label, best)), Some(base)) = (&f.claim_best, f.claim_baseline) {
        out.push(Verdict {
            target: "(no target) P1: our best in-process variant against the raw claim-1 loop",
            measured: format!(
                "{label}: {} vs {} = {:.2}x",
                fmt_rate(*best),
                fmt_rate(base),
                best / base
            ),
            met: None,
        });
    }
    out
}
