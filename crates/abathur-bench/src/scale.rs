//! The sizes each scenario runs at: `full` for the numbers in docs/BENCHMARKS.md, `tiny` for a
//! smoke run of seconds.

/// Which sizes to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    Tiny,
    Full,
}

impl std::str::FromStr for Scale {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "tiny" => Ok(Self::Tiny),
            "full" => Ok(Self::Full),
            other => Err(format!("unknown scale {other:?}: use tiny or full")),
        }
    }
}

impl std::fmt::Display for Scale {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Tiny => "tiny",
            Self::Full => "full",
        })
    }
}

/// Every size the scenarios use.
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    /// Scenario 1: tasks submitted one at a time.
    pub submit_single: usize,
    /// Scenario 1: batches of `submit_batch_size`.
    pub submit_batches: usize,
    pub submit_batch_size: usize,
    /// Scenarios 2 and 7: no-op tasks per claim + complete run.
    pub claim_tasks: usize,
    /// Scenario 3: dependents of the one task completed, and how many times it is repeated.
    pub fanout: usize,
    pub fanout_repeats: usize,
    /// Scenario 4: the small and the large DAG, in tasks, and the layers of both.
    pub dag_small: usize,
    pub dag_large: usize,
    pub dag_layers: usize,
    /// Scenario 5: tasks in the table, how many are ready, and the calls timed.
    pub ready_table: usize,
    pub ready_ready: usize,
    pub ready_queries: usize,
    pub ready_claims: usize,
    /// Scenario 6: memories stored, gets and searches timed.
    pub memories: usize,
    pub memory_gets: usize,
    pub memory_searches: usize,
}

impl Scale {
    pub fn sizes(self) -> Sizes {
        match self {
            Self::Full => Sizes {
                submit_single: 5_000,
                submit_batches: 50,
                submit_batch_size: 1_000,
                claim_tasks: 10_000,
                fanout: 10_000,
                fanout_repeats: 3,
                dag_small: 10_000,
                dag_large: 100_000,
                dag_layers: 20,
                ready_table: 1_000_000,
                ready_ready: 100_000,
                ready_queries: 2_000,
                ready_claims: 1_000,
                memories: 1_000_000,
                memory_gets: 10_000,
                memory_searches: 2_000,
            },
            Self::Tiny => Sizes {
                submit_single: 20,
                submit_batches: 2,
                submit_batch_size: 50,
                claim_tasks: 30,
                fanout: 100,
                fanout_repeats: 1,
                dag_small: 30,
                dag_large: 300,
                dag_layers: 10,
                ready_table: 2_000,
                ready_ready: 200,
                ready_queries: 30,
                ready_claims: 10,
                memories: 2_000,
                memory_gets: 50,
                memory_searches: 20,
            },
        }
    }
}
