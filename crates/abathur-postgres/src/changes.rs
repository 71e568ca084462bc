//! The change port on PostgreSQL: `LISTEN abathur_changes`, or, where a pooler cannot keep a
//! session's `LISTEN` (PgBouncer or Supavisor in transaction mode), polling a counter that moves
//! whenever a transaction ends.
//!
//! # LISTEN/NOTIFY
//!
//! The schema's trigger `tasks_notify_ready` sends one notification on [`CHANNEL`] in the
//! transaction that leaves a task ready; PostgreSQL delivers it when that transaction commits,
//! so a listener is woken exactly when the work becomes visible. Each subscription listens on a
//! connection of its own (from a small pool of its own, outside the caller's pool, so that a
//! watcher never takes a connection the queue needs, and is never retired by the pool's
//! lifetime rules).
//!
//! Notifications are not stored: those sent while the listener's connection is down (the server
//! restarted, `pg_terminate_backend`, a network cut) are lost. So whenever the connection is
//! found lost, the subscription listens again on a new one and then reports [`Change::Seen`]:
//! a spurious wake-up costs one look at the queue, a missed one would leave work waiting until
//! the caller's own polling backstop (its `at_most`). A connection cut without a word (a host
//! that crashed, a NAT that forgot it) is never reported by the socket, so a connection quiet
//! for [`LIVENESS_INTERVAL`] is asked `SELECT 1`, and replaced the same way when it does not
//! answer within a few seconds.
//!
//! # Polling
//!
//! [`PgChanges::poll_only`] reads `pg_current_snapshot()` every interval instead. The snapshot
//! (`xmin:xmax:running xids`) changes whenever any transaction that wrote anything ends, in any
//! database of the server: an xid still running at the previous read leaves the list, and one
//! assigned since moves `xmax` past it. It touches no table and takes one shared lock for a
//! moment, and it needs no session state, so it works through a transaction-mode pooler. Wake-ups
//! are spurious whenever anything else on the server writes, which is harmless.
//!
//! `SELECT max(id) FROM task_events` would be cheap too, but it can miss a commit: identity
//! values are taken when a row is inserted and become visible when its transaction commits, so
//! a transaction holding id 100 may commit after one holding id 101 was already seen, leaving the
//! maximum at 101.

use std::time::Duration;

use abathur_core::error::DatabaseError;
use abathur_core::ports::{Change, ChangeSubscription, Changes};
use async_trait::async_trait;
use sqlx::postgres::{PgListener, PgPool, PgPoolOptions};
use sqlx::Executor;
use tokio::time::{sleep, timeout_at, Instant};

use crate::errors::classify_ref;

/// The channel the schema's trigger notifies when work becomes ready.
pub const CHANNEL: &str = "abathur_changes";

/// The default interval of [`PgChanges::poll_only`]: the worst-case delay before a change is
/// seen through a transaction-mode pooler.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(100);

/// The environment variable that turns on [`PgChanges::poll_only`] (see [`PgChanges::from_env`]):
/// `1`, `true`, `yes` or `on`. A URL parameter cannot carry it: other clients (`psql`, libpq)
/// refuse parameters they do not know, so the same URL would stop working there.
pub const POLL_ONLY_ENV: &str = "ABATHUR_PG_POLL_ONLY";

/// How long a listening connection may stay quiet before it is asked whether it is still
/// there (`SELECT 1`).
pub const LIVENESS_INTERVAL: Duration = Duration::from_secs(30);

/// How long that question may take before the connection is given up and replaced.
const LIVENESS_TIMEOUT: Duration = Duration::from_secs(5);

/// How a [`PgChanges`] watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `LISTEN` on a connection of each subscription's own.
    Listen,
    /// Read the server's transaction snapshot every interval.
    Poll(Duration),
}

/// [`Changes`] for the PostgreSQL database of a pool.
#[derive(Debug, Clone)]
pub struct PgChanges {
    pool: PgPool,
    mode: Mode,
}

impl PgChanges {
    /// Watches with `LISTEN` on [`CHANNEL`]. Each subscription opens one connection of its own,
    /// with the options of `pool`, kept for as long as the subscription lives.
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            mode: Mode::Listen,
        }
    }

    /// Watches by polling, for a database reached through PgBouncer or Supavisor in
    /// transaction mode, where `LISTEN` does not work (a session's notifications are not kept
    /// between transactions): each subscription reads the server's transaction snapshot through
    /// `pool` every `interval` (at least 1 ms).
    pub fn poll_only(pool: PgPool, interval: Duration) -> Self {
        Self {
            pool,
            mode: Mode::Poll(interval.max(Duration::from_millis(1))),
        }
    }

    /// [`PgChanges::poll_only`] every [`DEFAULT_POLL_INTERVAL`] when the environment variable
    /// [`POLL_ONLY_ENV`] is `1`, `true`, `yes` or `on`; otherwise [`PgChanges::new`].
    pub fn from_env(pool: PgPool) -> Self {
        if poll_only_requested(std::env::var(POLL_ONLY_ENV).ok().as_deref()) {
            Self::poll_only(pool, DEFAULT_POLL_INTERVAL)
        } else {
            Self::new(pool)
        }
    }

    /// Whether this watches by polling.
    pub fn is_poll_only(&self) -> bool {
        matches!(self.mode, Mode::Poll(_))
    }
}

/// Whether a value of [`POLL_ONLY_ENV`] turns polling on.
fn poll_only_requested(value: Option<&str>) -> bool {
    value.is_some_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "1" | "true" | "yes" | "on"
        )
    })
}

#[async_trait]
impl Changes for PgChanges {
    async fn subscribe(&self) -> Result<Box<dyn ChangeSubscription>, DatabaseError> {
        match self.mode {
            Mode::Listen => Ok(Box::new(Listening::start(&self.pool).await?)),
            Mode::Poll(interval) => {
                Ok(Box::new(Polling::start(self.pool.clone(), interval).await?))
            }
        }
    }
}

/// A `LISTEN` subscription.
#[derive(Debug)]
pub struct Listening {
    /// A pool for this subscription alone (one connection in use at a time): the listener
    /// takes its connections from it, and reconnects through it.
    pool: PgPool,
    /// `None` once the connection was found lost: the next call listens again on a new one
    /// and reports [`Change::Seen`], since notifications sent meanwhile are gone.
    listener: Option<PgListener>,
    /// When the connection last showed it was there (connected, a notification, an answer
    /// to the liveness query).
    alive_at: Instant,
    /// How long the connection may stay quiet before it is asked ([`LIVENESS_INTERVAL`]).
    liveness_interval: Duration,
    /// How long it may take to answer ([`LIVENESS_TIMEOUT`]).
    liveness_timeout: Duration,
}

impl Listening {
    /// Listens on a new connection with the options of `pool`; changes committed after this
    /// returns are seen.
    ///
    /// # Errors
    /// `Connection` when the server cannot be reached.
    pub async fn start(pool: &PgPool) -> Result<Self, DatabaseError> {
        let options = (*pool.connect_options()).clone();
        let own = PgPoolOptions::new()
            .min_connections(0)
            // Two: a listener dropped after a failure gives its connection back only after
            // its `UNLISTEN *`, which may hang on a connection cut without a word; the new
            // listener must not wait for it.
            .max_connections(2)
            .max_lifetime(None)
            .idle_timeout(None)
            .acquire_timeout(pool.options().get_acquire_timeout())
            .connect_lazy_with(options);
        let listener = listen(&own).await?;
        Ok(Self {
            pool: own,
            listener: Some(listener),
            alive_at: Instant::now(),
            liveness_interval: LIVENESS_INTERVAL,
            liveness_timeout: LIVENESS_TIMEOUT,
        })
    }
}

#[cfg(test)]
impl Listening {
    /// Checks the connection after `interval` of quiet, giving it `timeout` to answer.
    fn with_liveness(mut self, interval: Duration, timeout: Duration) -> Self {
        self.liveness_interval = interval;
        self.liveness_timeout = timeout;
        self
    }
}

/// A listener on [`CHANNEL`], on a connection of `pool`.
async fn listen(pool: &PgPool) -> Result<PgListener, DatabaseError> {
    let mut listener = PgListener::connect_with(pool)
        .await
        .map_err(|e| classify_ref(&e))?;
    // A lost connection is noticed by `try_recv`, which answers `None`; the connection is
    // opened again by the next call, here, so that a cancelled wait never reconnects unseen.
    listener.eager_reconnect(false);
    listener
        .listen(CHANNEL)
        .await
        .map_err(|e| classify_ref(&e))?;
    Ok(listener)
}

#[async_trait]
impl ChangeSubscription for Listening {
    async fn changed(&mut self, at_most: Duration) -> Result<Change, DatabaseError> {
        let deadline = Instant::now() + at_most;
        let Some(listener) = self.listener.as_mut() else {
            // The connection was lost (or the last attempt to listen again failed or was
            // cancelled): listen again, and report what was sent meanwhile as a change.
            return self.reconnect(deadline).await;
        };
        loop {
            // Quiet for long: ask the connection whether it is still there, since a connection
            // cut without a word (a crashed host, a NAT that forgot it) is never reported.
            let check_at = self.alive_at + self.liveness_interval;
            match timeout_at(deadline.min(check_at), listener.try_recv()).await {
                Err(_) if Instant::now() < check_at => return Ok(Change::TimedOut),
                Err(_) => {
                    let ping =
                        tokio::time::timeout(self.liveness_timeout, listener.execute("SELECT 1"));
                    match ping.await {
                        Ok(Ok(_)) => {
                            self.alive_at = Instant::now();
                            // Notifications that came during the query wait in the buffer.
                            if listener.next_buffered().is_some() {
                                while listener.next_buffered().is_some() {}
                                return Ok(Change::Seen);
                            }
                            if Instant::now() >= deadline {
                                return Ok(Change::TimedOut);
                            }
                        }
                        outcome => {
                            tracing::debug!(
                                ?outcome,
                                "the listening connection does not answer; listening again"
                            );
                            self.listener = None;
                            return self.reconnect(deadline).await;
                        }
                    }
                }
                Ok(Ok(Some(_))) => {
                    self.alive_at = Instant::now();
                    // One look covers every notification already delivered.
                    while listener.next_buffered().is_some() {}
                    return Ok(Change::Seen);
                }
                Ok(Ok(None)) => {
                    tracing::debug!("the listening connection was lost; listening again");
                    self.listener = None;
                    return self.reconnect(deadline).await;
                }
                Ok(Err(e)) => {
                    // Whatever broke, the connection is not trusted again: a new listener on a
                    // new connection, and a look at the queue.
                    tracing::debug!(error = %e, "the listening connection failed; listening again");
                    self.listener = None;
                    if matches!(e, sqlx::Error::PoolClosed) {
                        return Err(classify_ref(&e));
                    }
                    return self.reconnect(deadline).await;
                }
            }
        }
    }

    async fn close(self: Box<Self>) {
        let Self {
            pool,
            listener,
            liveness_timeout,
            ..
        } = *self;
        drop(listener);
        // A connection cut without a word never gives its `UNLISTEN *` an answer: it is not
        // waited for past the time a live one takes to answer; the server ends it on its own.
        if tokio::time::timeout(liveness_timeout, pool.close())
            .await
            .is_err()
        {
            tracing::debug!("a listening connection did not close in time; leaving it");
        }
    }
}

impl Listening {
    /// After a lost connection: listen again at once, and report [`Change::Seen`] (the lost
    /// notifications); or, when the server cannot be reached, report that, and try again on
    /// the next call. Only a finished `listen` is kept, so a wait cancelled half-way starts
    /// over on the next call. When `deadline` passes first, [`Change::Seen`] too: the caller
    /// looks (and finds the server back, or gets the plain error of its own query).
    async fn reconnect(&mut self, deadline: Instant) -> Result<Change, DatabaseError> {
        match timeout_at(deadline, listen(&self.pool)).await {
            Ok(Ok(listener)) => {
                self.listener = Some(listener);
                self.alive_at = Instant::now();
                Ok(Change::Seen)
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Ok(Change::Seen),
        }
    }
}

/// A polling subscription: the server's transaction snapshot as last read.
#[derive(Debug)]
pub struct Polling {
    pool: PgPool,
    interval: Duration,
    last: String,
}

impl Polling {
    /// Reads the snapshot once, to compare the next reads with.
    ///
    /// # Errors
    /// The classified error when it cannot be read.
    pub async fn start(pool: PgPool, interval: Duration) -> Result<Self, DatabaseError> {
        let last = snapshot(&pool).await?;
        Ok(Self {
            pool,
            interval,
            last,
        })
    }
}

/// The server's transaction snapshot, as text: it changes whenever a transaction ends.
async fn snapshot(pool: &PgPool) -> Result<String, DatabaseError> {
    sqlx::query_scalar!(r#"SELECT pg_current_snapshot()::text AS "snapshot!""#)
        .fetch_one(pool)
        .await
        .map_err(|e| classify_ref(&e))
}

#[async_trait]
impl ChangeSubscription for Polling {
    async fn changed(&mut self, at_most: Duration) -> Result<Change, DatabaseError> {
        let deadline = Instant::now() + at_most;
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Ok(Change::TimedOut);
            }
            sleep(self.interval.min(deadline - now)).await;
            let current = snapshot(&self.pool).await?;
            if current != self.last {
                self.last = current;
                return Ok(Change::Seen);
            }
        }
    }

    async fn close(self: Box<Self>) {}
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use abathur_core::ports::{Change, ChangeSubscription, Changes};
    use sqlx::{Connection, PgConnection};

    use super::{PgChanges, CHANNEL};
    use crate::testing::TestDatabase;
    use crate::PgConfig;

    /// Long enough for any notification to arrive; only waited out on a failure.
    const GENEROUS: Duration = Duration::from_secs(30);
    /// Where the expected answer is that nothing changed.
    const SHORT: Duration = Duration::from_millis(200);

    /// Inserts a task with `status` on a connection of its own (another process, as far as
    /// the listener can tell), in a transaction that commits before this returns.
    async fn insert_task(url: &str, status: &str) {
        let mut conn = PgConnection::connect(url).await.expect("connect");
        let mut tx = conn.begin().await.expect("begin");
        sqlx::query(
            "INSERT INTO tasks (id, summary, description, agent_type, priority, status,
                                submitted_at, last_updated_at, source)
             VALUES (gen_random_uuid(), 'probe', '', 'probe', 5, $1, now(), now(), 'human')",
        )
        .bind(status)
        .execute(&mut *tx)
        .await
        .expect("insert a task");
        tx.commit().await.expect("commit");
        conn.close().await.expect("close");
    }

    /// The server processes listening on `CHANNEL` in the test's database.
    async fn listeners(url: &str) -> Vec<i32> {
        let mut conn = PgConnection::connect(url).await.expect("connect");
        let pids: Vec<i32> = sqlx::query_scalar(
            "SELECT pid FROM pg_stat_activity
             WHERE datname = current_database() AND query = $1 AND pid <> pg_backend_pid()",
        )
        .bind(format!("LISTEN \"{CHANNEL}\""))
        .fetch_all(&mut conn)
        .await
        .expect("read pg_stat_activity");
        conn.close().await.expect("close");
        pids
    }

    async fn changed(sub: &mut Box<dyn ChangeSubscription>, at_most: Duration) -> Change {
        sub.changed(at_most).await.expect("a watch that works")
    }

    #[tokio::test]
    async fn a_ready_task_committed_by_another_connection_is_seen_and_silence_times_out() {
        let (test, db) = TestDatabase::migrated(PgConfig::default()).await;
        let mut sub = PgChanges::new(db.pool().clone())
            .subscribe()
            .await
            .expect("subscribe");

        // Nothing happens: the wait ends at its bound.
        assert_eq!(changed(&mut sub, SHORT).await, Change::TimedOut);

        // A task that is not ready wakes no one: the trigger notifies ready work only.
        insert_task(test.url(), "pending").await;
        assert_eq!(changed(&mut sub, SHORT).await, Change::TimedOut);

        // A ready task committed by another connection is seen, once.
        insert_task(test.url(), "ready").await;
        assert_eq!(changed(&mut sub, GENEROUS).await, Change::Seen);
        assert_eq!(changed(&mut sub, SHORT).await, Change::TimedOut);

        // Several at once are one wake-up (or more), never none.
        insert_task(test.url(), "ready").await;
        insert_task(test.url(), "ready").await;
        assert_eq!(changed(&mut sub, GENEROUS).await, Change::Seen);

        sub.close().await;
        db.close().await;
    }

    #[tokio::test]
    async fn a_terminated_listener_reports_a_change_and_listens_again() {
        let (test, db) = TestDatabase::migrated(PgConfig::default()).await;
        let mut sub = PgChanges::new(db.pool().clone())
            .subscribe()
            .await
            .expect("subscribe");
        let before = listeners(test.url()).await;
        assert_eq!(before.len(), 1, "one listening connection: {before:?}");

        let mut admin = PgConnection::connect(test.url()).await.expect("connect");
        let terminated: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1, 30000)")
            .bind(before[0])
            .fetch_one(&mut admin)
            .await
            .expect("terminate the listener");
        assert!(terminated);
        admin.close().await.expect("close");

        // Whatever was sent while it was gone is lost: the next wait says "look again"
        // rather than fail or wait for a notification that will never come.
        assert_eq!(changed(&mut sub, GENEROUS).await, Change::Seen);

        // It listens again, on a new connection, and later notifications arrive.
        let after = listeners(test.url()).await;
        assert_eq!(after.len(), 1, "one listening connection again: {after:?}");
        assert_ne!(after, before);
        insert_task(test.url(), "ready").await;
        assert_eq!(changed(&mut sub, GENEROUS).await, Change::Seen);
        assert_eq!(changed(&mut sub, SHORT).await, Change::TimedOut);

        sub.close().await;
        db.close().await;
    }

    /// A TCP proxy to the test server whose connections can be cut without a word: their
    /// sockets stay open, but nothing passes any more (a crashed host, a forgetful NAT). New
    /// connections pass as before.
    struct Proxy {
        port: u16,
        cut: std::sync::Arc<tokio::sync::watch::Sender<u64>>,
    }

    impl Proxy {
        async fn start(upstream: (String, u16)) -> Self {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let port = listener.local_addr().expect("address").port();
            let cut = std::sync::Arc::new(tokio::sync::watch::channel(0u64).0);
            let cuts = cut.clone();
            tokio::spawn(async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    let mut cuts = cuts.subscribe();
                    let born = *cuts.borrow_and_update();
                    let upstream = upstream.clone();
                    tokio::spawn(async move {
                        let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await else {
                            return;
                        };
                        let was_cut = async {
                            while cuts.changed().await.is_ok() {
                                if *cuts.borrow() > born {
                                    return;
                                }
                            }
                        };
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                            () = was_cut => {
                                // Silent: keep both sockets open, pass nothing.
                                std::future::pending::<()>().await;
                            }
                        }
                    });
                }
            });
            Self { port, cut }
        }

        /// Cuts every connection made so far.
        fn cut(&self) {
            self.cut.send_modify(|c| *c += 1);
        }
    }

    #[tokio::test]
    async fn a_connection_cut_without_a_word_is_found_and_replaced() {
        use sqlx::postgres::PgConnectOptions;
        use std::str::FromStr;

        let (test, db) = TestDatabase::migrated(PgConfig::default()).await;
        let direct = PgConnectOptions::from_str(test.url()).expect("options");
        let proxy = Proxy::start((direct.get_host().to_string(), direct.get_port())).await;
        let through_proxy = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect_lazy_with(direct.clone().host("127.0.0.1").port(proxy.port));
        let quiet = Duration::from_millis(100);
        let mut sub = super::Listening::start(&through_proxy)
            .await
            .expect("listen")
            .with_liveness(quiet, Duration::from_millis(500));

        // Quiet but alive: asked and answering, the wait lasts its whole bound.
        assert_eq!(
            sub.changed(Duration::from_millis(350))
                .await
                .expect("a watch"),
            Change::TimedOut
        );

        // Cut: the socket says nothing, so only the unanswered question shows it; the
        // subscription listens again on a new connection and says to look.
        proxy.cut();
        assert_eq!(sub.changed(GENEROUS).await.expect("a watch"), Change::Seen);
        insert_task(test.url(), "ready").await;
        assert_eq!(sub.changed(GENEROUS).await.expect("a watch"), Change::Seen);

        Box::new(sub).close().await;
        db.close().await;
    }

    #[tokio::test]
    async fn a_cancelled_wait_loses_nothing() {
        let (test, db) = TestDatabase::migrated(PgConfig::default()).await;
        let mut sub = PgChanges::new(db.pool().clone())
            .subscribe()
            .await
            .expect("subscribe");
        // A wait dropped before its end, then a change: the next wait sees it.
        let dropped = tokio::time::timeout(Duration::from_millis(10), sub.changed(GENEROUS)).await;
        assert!(dropped.is_err(), "nothing to see yet");
        insert_task(test.url(), "ready").await;
        assert_eq!(changed(&mut sub, GENEROUS).await, Change::Seen);
        sub.close().await;
        db.close().await;
    }

    #[tokio::test]
    async fn poll_only_sees_a_change_without_listening() {
        let (test, db) = TestDatabase::migrated(PgConfig::default()).await;
        let changes = PgChanges::poll_only(db.pool().clone(), Duration::from_millis(10));
        assert!(changes.is_poll_only());
        let mut sub = changes.subscribe().await.expect("subscribe");
        assert!(listeners(test.url()).await.is_empty(), "no LISTEN");
        insert_task(test.url(), "ready").await;
        assert_eq!(changed(&mut sub, GENEROUS).await, Change::Seen);
        // A poll-only watch cannot promise silence on a server other tests write to, so
        // only the wake-up is asserted; a zero wait ends at once.
        assert_eq!(changed(&mut sub, Duration::ZERO).await, Change::TimedOut);
        sub.close().await;
        db.close().await;
    }

    #[test]
    fn the_environment_turns_polling_on() {
        for (value, on) in [
            (Some("1"), true),
            (Some("true"), true),
            (Some(" ON "), true),
            (Some("yes"), true),
            (Some("0"), false),
            (Some(""), false),
            (None, false),
        ] {
            assert_eq!(super::poll_only_requested(value), on, "{value:?}");
        }
    }
}
