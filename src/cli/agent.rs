//! `abathur agent ...`: the registry of agent processes and their liveness.

use std::time::Duration;

use abathur_core::models::{Agent, AgentStatus};
use abathur_core::ports::IdKind;
use clap::Subcommand;
use std::fmt::Write as _;

use super::args::parse_duration;
use super::error::CliError;
use super::ids::{parse_id, IdArg};
use super::render::{instant, one_line, Rendered, View};
use super::Context;

/// `abathur agent ...`
#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Register an agent; prints its id.
    Register {
        /// The kind of agent, as tasks name it in `--agent-type`.
        #[arg(long = "type", value_name = "TYPE")]
        agent_type: String,
    },
    /// Registered agents, optionally of one status.
    List {
        /// idle, busy or terminated.
        #[arg(long, value_name = "STATUS", value_parser = parse_status)]
        status: Option<AgentStatus>,
    },
    /// Record that an agent is alive.
    Heartbeat {
        #[arg(value_parser = parse_id)]
        id: IdArg,
    },
    /// Agents that have not sent a heartbeat for a while.
    Stale {
        /// How long without a heartbeat counts as stale.
        #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "5m",
              allow_hyphen_values = true)]
        older_than: Duration,
    },
}

fn parse_status(text: &str) -> Result<AgentStatus, String> {
    text.parse::<AgentStatus>().map_err(|e| e.to_string())
}

impl AgentCommand {
    /// True for the commands that only read: they never create or migrate the database.
    pub fn reads_only(&self) -> bool {
        match self {
            Self::List { .. } | Self::Stale { .. } => true,
            Self::Register { .. } | Self::Heartbeat { .. } => false,
        }
    }
}

/// Runs one `abathur agent ...` command.
pub async fn run(cx: &Context, command: AgentCommand) -> Result<View, CliError> {
    let repo = &cx.agents;
    let rendered = match command {
        AgentCommand::Register { agent_type } => {
            let agent = Agent::new(agent_type, chrono::Utc::now());
            repo.insert(agent.clone()).await?;
            Rendered::of(&agent, format!("{}\n", agent.id))?
        }
        AgentCommand::List { status } => {
            let agents = repo.list(status).await?;
            Rendered::of(&agents, table(&agents))?
        }
        AgentCommand::Heartbeat { id } => {
            let id = cx.ids.resolve(IdKind::Agent, &id).await?;
            repo.update_heartbeat(id).await?;
            let json = serde_json::json!({ "agent_id": id, "alive": true });
            Rendered {
                json,
                human: format!("agent {id} is alive\n"),
            }
        }
        AgentCommand::Stale { older_than } => {
            let agents = repo.find_stale_agents(older_than).await?;
            Rendered::of(&agents, table(&agents))?
        }
    };
    Ok(View::Rendered(rendered))
}

fn table(agents: &[Agent]) -> String {
    if agents.is_empty() {
        return "no agents\n".to_string();
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<36}  {:<16}  {:<10}  {:<27}  CURRENT TASK",
        "ID", "TYPE", "STATUS", "LAST HEARTBEAT"
    );
    for agent in agents {
        let _ = writeln!(
            out,
            "{:<36}  {:<16}  {:<10}  {:<27}  {}",
            agent.id,
            one_line(&agent.agent_type),
            agent.status.as_str(),
            instant(&agent.heartbeat_at),
            agent
                .current_task_id
                .map_or_else(|| "-".to_string(), |id| id.to_string())
        );
    }
    out
}
