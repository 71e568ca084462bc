//! Runs every PostgreSQL scenario but the peers at tiny scale, as CI does, on the test server
//! (`ABATHUR_TEST_POSTGRES`): each must finish, produce its rows with figures on both sides,
//! and judge no target at this scale. The peers (`pg-peers`) need node, npm and a build of
//! apalis-postgres, minutes of work, so they are run by hand (docs/BENCHMARKS.md).

use abathur_bench::pg::{PgOptions, PgScenario};
use abathur_bench::Scale;

#[test]
fn every_postgres_scenario_but_the_peers_runs_at_tiny_scale_against_its_baseline() {
    let scenarios: Vec<PgScenario> = PgScenario::ALL
        .into_iter()
        .filter(|s| *s != PgScenario::Peers)
        .collect();
    let options = PgOptions {
        scale: Scale::Tiny,
        scenarios: scenarios.clone(),
        worker_exe: env!("CARGO_BIN_EXE_abathur-bench").into(),
        peers_dir: PgOptions::default_peers_dir(),
    };
    let outcome = abathur_bench::pg::run(&options).expect("the tiny run starts");
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
    assert!(f.claim_best.is_some() && f.claim_baseline.is_some());
    assert!(f.latency.is_some() && f.fanout_worst.is_some());
    assert!(f.ready_p99.is_some() && f.claim_p99.is_some());
    assert_eq!(
        f.process_errors,
        Some(0),
        "errors reached the worker processes"
    );
    assert!(
        outcome.verdicts.iter().all(|v| v.met.is_none()),
        "targets are not judged at tiny scale"
    );
    let table = abathur_bench::report::markdown_table(&outcome.rows);
    assert_eq!(table.lines().count(), outcome.rows.len() + 2);
}

#[test]
fn scenarios_are_named_as_the_command_line_names_them() {
    for scenario in PgScenario::ALL {
        assert_eq!(scenario.name().parse::<PgScenario>(), Ok(scenario));
        let number = scenario.title().split(' ').next().expect("a number");
        assert_eq!(number.parse::<PgScenario>(), Ok(scenario));
    }
    assert!("claim".parse::<PgScenario>().is_ok());
    assert!("pg-nothing".parse::<PgScenario>().is_err());
}
