//! `GET /api/v1/events`: server-sent events that tell open pages to read again.
//!
//! Every stream of the server shares one watcher of the database ([`ChangeFeed`]), which
//! wakes on a change committed by any process (SQLite: `data_version`; PostgreSQL:
//! `NOTIFY`) and at least every [`crate::waiting::RECHECK`], so that a change no notification
//! announces (on PostgreSQL, one that makes no task ready) is seen within that time too. An
//! event carries no data: it says "look again", and the page reads what it shows. Events are
//! at least [`MIN_SPACING`] apart, so a busy queue does not make pages read without pause.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State as Extract;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::{self, Stream};

use super::api::State;
use crate::worker::Wake;

/// The least time between two events of one stream.
pub const MIN_SPACING: Duration = Duration::from_millis(250);

/// How long a stream waits for a change before it looks again.
const WAIT: Duration = Duration::from_secs(60);

/// A stream of `change` events, one whenever the database may have changed; a comment every
/// 15 s keeps idle connections open through proxies.
#[utoipa::path(get, path = "/api/v1/events", tag = "live",
    responses((status = 200, description = "`event: change`, whose data is an empty object, \
        whenever the queue may have changed; the page reads again",
        content_type = "text/event-stream", body = Object)))]
pub async fn stream(
    Extract(state): Extract<State>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let wake = state.feed().subscribe();
    let stop = state.stop().clone();
    // The first event at once: the page reads what it shows, whatever happened before the
    // stream opened.
    let events = stream::unfold((wake, stop, true), |(mut wake, stop, first)| async move {
        if !first {
            tokio::select! {
                () = stop.cancelled() => return None,
                () = tokio::time::sleep(MIN_SPACING) => {}
            }
            tokio::select! {
                () = stop.cancelled() => return None,
                () = wake.wait(WAIT) => {}
            }
        }
        let event = Event::default().event("change").data("{}");
        Some((Ok(event), (wake, stop, false)))
    });
    Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
