//! `abathur session ...`: sessions, their append-only event log and their state.

use abathur_core::error::DatabaseError;
use abathur_core::models::{NewSessionEvent, Session, SessionEvent};
use abathur_core::ports::IdKind;
use clap::Subcommand;
use std::fmt::Write as _;

use super::args::ranged;
use super::error::CliError;
use super::ids::{parse_id, IdArg};
use super::json_value;
use super::render::{instant, one_line, Rendered, View};
use super::Context;
use abathur_core::limits::MAX_PAGE;

/// `abathur session ...`
#[derive(Debug, Subcommand)]
pub enum SessionCommand {
    /// Start a session; prints its id.
    Create {
        /// The application the session belongs to.
        #[arg(long)]
        app: String,
        /// The user it is for.
        #[arg(long)]
        user: String,
        /// The project, if any.
        #[arg(long)]
        project: Option<String>,
    },
    /// Show a session and its state.
    Show {
        #[arg(value_parser = parse_id)]
        id: IdArg,
    },
    /// A session's events, oldest first.
    Events {
        #[arg(value_parser = parse_id)]
        id: IdArg,
        /// Skip this many events.
        #[arg(long, value_name = "N", default_value_t = 0, allow_negative_numbers = true,
              value_parser = ranged::<u64>(0, i64::MAX))]
        offset: u64,
        /// At most this many events (1 to 1000).
        #[arg(long, value_name = "N", default_value_t = 100, allow_negative_numbers = true,
              value_parser = ranged::<u32>(1, i64::from(MAX_PAGE)))]
        limit: u32,
    },
    /// Append an event to a session's log.
    Append {
        #[arg(value_parser = parse_id)]
        id: IdArg,
        /// What kind of event it is, like `message` or `tool_call`.
        #[arg(long = "type", value_name = "TYPE")]
        event_type: String,
        /// Who caused it.
        #[arg(long, default_value = "human")]
        actor: String,
        /// The event's content: a JSON value, or @FILE.
        #[arg(long, value_name = "JSON|@FILE", default_value = "{}")]
        content: String,
    },
    /// Read or write one key of a session's state.
    #[command(subcommand)]
    State(StateCommand),
}

impl SessionCommand {
    /// True for the commands that only read: they never create or migrate the database.
    pub fn reads_only(&self) -> bool {
        match self {
            Self::Show { .. } | Self::Events { .. } | Self::State(StateCommand::Get { .. }) => true,
            Self::Create { .. } | Self::Append { .. } | Self::State(StateCommand::Set { .. }) => {
                false
            }
        }
    }
}

/// `abathur session state ...`
#[derive(Debug, Subcommand)]
pub enum StateCommand {
    /// Print the value of KEY.
    Get {
        #[arg(value_parser = parse_id)]
        id: IdArg,
        key: String,
    },
    /// Set KEY to a JSON value (or @FILE).
    Set {
        #[arg(value_parser = parse_id)]
        id: IdArg,
        key: String,
        value: String,
    },
}

/// Runs one `abathur session ...` command.
pub async fn run(cx: &Context, command: SessionCommand) -> Result<View, CliError> {
    let repo = &cx.sessions;
    let rendered = match command {
        SessionCommand::Create { app, user, project } => {
            let mut session = Session::new(app, user, chrono::Utc::now());
            session.project_id = project;
            repo.create(session.clone()).await?;
            Rendered::of(&session, format!("{}\n", session.id))?
        }
        SessionCommand::Show { id } => {
            let id = cx.ids.resolve(IdKind::Session, &id).await?;
            let session = repo
                .get(id)
                .await?
                .ok_or_else(|| DatabaseError::not_found("session", id))?;
            Rendered::of(&session, describe(&session))?
        }
        SessionCommand::Events { id, offset, limit } => {
            let id = cx.ids.resolve(IdKind::Session, &id).await?;
            let events = repo.get_events(id, offset, limit).await?;
            if events.is_empty() && repo.get(id).await?.is_none() {
                return Err(DatabaseError::not_found("session", id).into());
            }
            Rendered::of(&events, events_table(&events))?
        }
        SessionCommand::Append {
            id,
            event_type,
            actor,
            content,
        } => {
            let id = cx.ids.resolve(IdKind::Session, &id).await?;
            let event = NewSessionEvent {
                event_type,
                actor,
                content: json_value::read("content", &content)?,
            };
            let stored = repo.append_event(id, event).await?;
            let human = format!("event {} appended\n", stored.sequence);
            Rendered::of(&stored, human)?
        }
        SessionCommand::State(StateCommand::Get { id, key }) => {
            let id = cx.ids.resolve(IdKind::Session, &id).await?;
            let value = repo.get_state(id, &key).await?.ok_or_else(|| {
                DatabaseError::not_found("session state key", format!("{key} of session {id}"))
            })?;
            let human = format!(
                "{}\n",
                serde_json::to_string_pretty(&value).unwrap_or_else(|_| value.to_string())
            );
            Rendered::of(&value, human)?
        }
        SessionCommand::State(StateCommand::Set { id, key, value }) => {
            let id = cx.ids.resolve(IdKind::Session, &id).await?;
            let value = json_value::read("value", &value)?;
            repo.set_state(id, &key, value.clone()).await?;
            let json = serde_json::json!({ "session_id": id, "key": key, "value": value });
            Rendered {
                json,
                human: format!("set {key}\n"),
            }
        }
    };
    Ok(View::Rendered(rendered))
}

fn describe(session: &Session) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "id:          {}", session.id);
    let _ = writeln!(out, "app:         {}", one_line(&session.app_name));
    let _ = writeln!(out, "user:        {}", one_line(&session.user_id));
    let _ = writeln!(
        out,
        "project:     {}",
        session.project_id.as_deref().map_or("-".into(), one_line)
    );
    let _ = writeln!(out, "created at:  {}", instant(&session.created_at));
    let _ = writeln!(out, "updated at:  {}", instant(&session.updated_at));
    let state = serde_json::to_string_pretty(&session.state).unwrap_or_default();
    let _ = writeln!(out, "state:");
    for line in state.lines() {
        let _ = writeln!(out, "  {line}");
    }
    out
}

fn events_table(events: &[SessionEvent]) -> String {
    if events.is_empty() {
        return "no events\n".to_string();
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>5}  {:<27}  {:<16}  {:<16}  CONTENT",
        "SEQ", "AT", "TYPE", "ACTOR"
    );
    for event in events {
        let _ = writeln!(
            out,
            "{:>5}  {:<27}  {:<16}  {:<16}  {}",
            event.sequence,
            instant(&event.timestamp),
            one_line(&event.event_type),
            one_line(&event.actor),
            one_line(&event.content.to_string())
        );
    }
    out
}
