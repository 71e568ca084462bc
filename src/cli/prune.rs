//! `abathur prune`: retention by hand, the same prune a worker's `--retention` runs.

use std::time::Duration;

use abathur_core::models::TaskStatus;
use abathur_core::queue::TaskQueue;
use clap::Args;
use serde::Serialize;

use super::args::parse_duration;
use super::error::CliError;
use super::render::Rendered;

/// `abathur prune --older-than DURATION [--status STATUS]...`
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Remove tasks that finished longer ago than this: 90s, 12h, 7d.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, allow_hyphen_values = true)]
    pub older_than: Duration,
    /// Only tasks that ended so: completed, failed or cancelled; repeat for several. All three
    /// when not given.
    #[arg(long = "status", value_name = "STATUS", value_parser = parse_finished_status)]
    pub statuses: Vec<TaskStatus>,
}

/// A status a finished task has.
fn parse_finished_status(text: &str) -> Result<TaskStatus, String> {
    match text.parse::<TaskStatus>() {
        Ok(status) if status.is_terminal() => Ok(status),
        _ => Err(format!(
            "{text:?} is not a finished status: use completed, failed or cancelled"
        )),
    }
}

/// What `prune --json` prints.
#[derive(Debug, Serialize)]
struct Pruned {
    /// Tasks removed, with their attempts and events.
    tasks: u64,
    /// Write transactions it took.
    batches: u64,
    /// The longest of them, in milliseconds.
    longest_batch_ms: f64,
}

/// Runs `abathur prune`.
pub async fn prune(queue: &TaskQueue, args: &PruneArgs) -> Result<Rendered, CliError> {
    let report = queue.prune(args.older_than, &args.statuses).await?;
    let human = if report.tasks == 0 {
        "nothing to prune\n".to_string()
    } else {
        format!(
            "pruned {} finished tasks with their attempts and events\n",
            report.tasks
        )
    };
    Rendered::of(
        &Pruned {
            tasks: report.tasks,
            batches: report.batches,
            longest_batch_ms: report.longest_batch.as_secs_f64() * 1000.0,
        },
        human,
    )
}
