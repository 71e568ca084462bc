//! Runs every scenario but the peer at tiny scale, as CI does: each must finish, produce its
//! rows with figures on both sides, and judge no target at this scale. The peer (scenario 7)
//! builds apalis-sqlite, minutes of compiling, so it is run by hand (docs/BENCHMARKS.md).

use std::path::PathBuf;

use abathur_bench::{Options, Scale, Scenario};

#[test]
fn every_scenario_runs_at_tiny_scale_against_its_baseline() {
    let scenarios: Vec<Scenario> = Scenario::ALL
        .into_iter()
        .filter(|s| *s != Scenario::Peer)
        .collect();
    let options = Options {
        scale: Scale::Tiny,
        scenarios: scenarios.clone(),
        worker_exe: PathBuf::from(env!("CARGO_BIN_EXE_abathur-bench")),
        peer_manifest: Options::default_peer_manifest(),
    };
    let outcome = abathur_bench::run(&options).expect("the tiny run starts");
    assert!(
        outcome.failures.is_empty(),
        "scenarios failed: {:?}",
        outcome.failures
    );
    for scenario in scenarios {
        let rows: Vec<_> = outcome
            .rows
            .iter()
            .filter(|r| r.scenario == scenario.title())
            .collect();
        assert!(!rows.is_empty(), "{} produced no rows", scenario.name());
        for row in rows {
            assert!(
                row.ratio().is_some(),
                "{} / {}: no ratio to the baseline",
                row.scenario,
                row.variant
            );
            assert!(
                row.ours.rate.is_none_or(|r| r > 0.0) && !row.ours.elapsed.is_zero(),
                "{} / {}: nothing measured",
                row.scenario,
                row.variant
            );
        }
    }
    let f = &outcome.findings;
    assert!(f.submit_single_ratio.is_some() && f.claim_single_ratio.is_some());
    assert!(f.fanout_worst.is_some() && f.dag_ratio.is_some());
    assert!(f.ready_p99.is_some() && f.claim_p99.is_some() && f.memory_get_p99.is_some());
    assert!(
        outcome.verdicts.iter().all(|v| v.met.is_none()),
        "targets are not judged at tiny scale"
    );
    let table = abathur_bench::report::markdown_table(&outcome.rows);
    assert_eq!(table.lines().count(), outcome.rows.len() + 2);
}
