//! The writer: every write of the process to one database runs on one thread that owns its
//! own SQLite connection, and operations that wait together share one transaction.
//!
//! sqlx runs each connection on a thread of its own and sends every statement there and back,
//! about 70 µs a statement on a 2-core machine, where SQLite itself takes well under one for a
//! simple update; a queue operation is five to ten statements. The writer instead runs a whole
//! operation, a closure over a `rusqlite` connection, with prepared statements, in one hop to
//! its thread and one back.
//!
//! - **One writer per database per process.** A process-wide registry keys writers by the
//!   database a pool connects to (the file, or the name of a shared in-memory database) and
//!   holds them weakly; each pool that has written holds its writer. Writers of one process
//!   then never contend for the write lock; processes do, through SQLite's lock.
//! - **Group commit.** The writer takes the first operation that waits, begins a
//!   `BEGIN IMMEDIATE` transaction (waiting for the lock under the busy timeout: it blocks its
//!   own thread, never a thread of the async runtime), then takes whatever else waits, up to
//!   the group's limit, and runs each operation in a savepoint of its own when the group holds
//!   more than one. One commit, then each caller gets its own outcome on a oneshot channel;
//!   a failed commit answers every operation of the group with the failure. A commit in WAL
//!   mode costs a roughly fixed time whatever it holds, so under load groups grow and the cost
//!   is shared; under light load a group is one operation and nothing waits for a timer.
//! - **Same settings as the pool.** The writer's connection is opened on the pool's file (or
//!   shared in-memory database) with the pool's open flags, `synchronous`, `foreign_keys` and
//!   busy timeout (see [`Settings`]); the journal mode (WAL) is the database's own.
//! - **Time after the lock.** An operation reads the clock inside its closure, on the writer's
//!   thread, once the transaction holds the write lock: the recorded history agrees with the
//!   commit order.
//! - **Stopping.** A writer stops when nothing holds it any more: when every pool that used it
//!   was closed ([`stop`], called by `DatabaseConnection::close` before the pool closes) or
//!   dropped (noticed within [`SWEEP`] while idle). Its connection is closed before
//!   [`stop`] returns, so the pool's last connection checkpoints the WAL into the file.
//!
//! In-memory databases (`sqlite::memory:`) are a named database in SQLite's shared cache,
//! where a read transaction of another connection locks the tables it read and a write to them
//! is refused with `SQLITE_LOCKED` rather than waited for. The writer's connection waits for
//! such locks with SQLite's unlock notification (rusqlite's `unlock_notify`), blocking its own
//! thread; file databases in WAL mode never meet them.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, LazyLock, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use abathur_core::error::DatabaseError;
use rusqlite::{Connection, OpenFlags};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::SqlitePool;
use tokio::sync::{oneshot, watch, Semaphore};

use super::errors::{classify, raw_on, take_storage_failure};

const BEGIN_IMMEDIATE: &str = "BEGIN IMMEDIATE";
const COMMIT: &str = "COMMIT";
const ROLLBACK: &str = "ROLLBACK";
const SAVEPOINT: &str = "SAVEPOINT writer_op";
const ROLLBACK_TO_SAVEPOINT: &str = "ROLLBACK TO writer_op";
const RELEASE_SAVEPOINT: &str = "RELEASE writer_op";
/// A rolled-back operation may have deferred foreign-key checks; `ROLLBACK TO` leaves the
/// setting as it was, and the next operation of the group must not inherit it.
const UNDEFER_FOREIGN_KEYS: &str = "PRAGMA defer_foreign_keys = OFF";
const SYNCHRONOUS_OFF: &str = "PRAGMA synchronous = OFF";
const SYNCHRONOUS_NORMAL: &str = "PRAGMA synchronous = NORMAL";
const SYNCHRONOUS_FULL: &str = "PRAGMA synchronous = FULL";
const SYNCHRONOUS_EXTRA: &str = "PRAGMA synchronous = EXTRA";
const FOREIGN_KEYS_ON: &str = "PRAGMA foreign_keys = ON";
const FOREIGN_KEYS_OFF: &str = "PRAGMA foreign_keys = OFF";
/// Read through sqlx, from a pool this module was not told the settings of.
const READ_BUSY_TIMEOUT: &str = "PRAGMA busy_timeout";
const READ_SYNCHRONOUS: &str = "PRAGMA synchronous";
const READ_FOREIGN_KEYS: &str = "PRAGMA foreign_keys";

/// Every statement of this module, for the catalogue test.
#[cfg(test)]
pub(crate) const STATEMENTS: &[(&str, &str)] = &[
    ("BEGIN_IMMEDIATE", BEGIN_IMMEDIATE),
    ("COMMIT", COMMIT),
    ("ROLLBACK", ROLLBACK),
    ("SAVEPOINT", SAVEPOINT),
    ("ROLLBACK_TO_SAVEPOINT", ROLLBACK_TO_SAVEPOINT),
    ("RELEASE_SAVEPOINT", RELEASE_SAVEPOINT),
    ("UNDEFER_FOREIGN_KEYS", UNDEFER_FOREIGN_KEYS),
    ("SYNCHRONOUS_OFF", SYNCHRONOUS_OFF),
    ("SYNCHRONOUS_NORMAL", SYNCHRONOUS_NORMAL),
    ("SYNCHRONOUS_FULL", SYNCHRONOUS_FULL),
    ("SYNCHRONOUS_EXTRA", SYNCHRONOUS_EXTRA),
    ("FOREIGN_KEYS_ON", FOREIGN_KEYS_ON),
    ("FOREIGN_KEYS_OFF", FOREIGN_KEYS_OFF),
    ("READ_BUSY_TIMEOUT", READ_BUSY_TIMEOUT),
    ("READ_SYNCHRONOUS", READ_SYNCHRONOUS),
    ("READ_FOREIGN_KEYS", READ_FOREIGN_KEYS),
];

/// How many prepared statements the writer's connection keeps: more than the operations use
/// between them, so that a warm writer never prepares one twice.
const PREPARED: usize = 128;

/// How long the writer looks for more work after a group before it sleeps.
const STAY_AWAKE: Duration = Duration::from_micros(50);

/// How often an idle writer looks for pools that were dropped without being closed.
const SWEEP: Duration = Duration::from_secs(1);

/// The most operations in one transaction when the caller does not say.
pub(crate) const DEFAULT_MAX_GROUP: usize = 256;

/// The per-connection settings of a pool, for the writer's connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Settings {
    /// How long a write waits for another connection's write lock.
    pub busy_timeout: Duration,
    /// `PRAGMA synchronous`, when the pool sets it (0 off, 1 normal, 2 full, 3 extra).
    pub synchronous: Option<u8>,
    /// `PRAGMA foreign_keys`.
    pub foreign_keys: bool,
}

/// How a caller's operations are grouped, and what it has seen of it.
#[derive(Debug)]
pub(crate) struct Grouping {
    /// The most operations in a transaction that holds one of this caller's.
    max_group: usize,
    /// How many of this caller's operations may wait for the writer at once.
    permits: Semaphore,
    counters: Arc<Counters>,
}

impl Grouping {
    /// Groups of up to `max_group` operations, with at most `queue_depth` of this caller's
    /// waiting at once.
    pub(crate) fn new(max_group: usize, queue_depth: usize) -> Self {
        Self {
            max_group: max_group.max(1),
            permits: Semaphore::new(queue_depth.clamp(1, Semaphore::MAX_PERMITS)),
            counters: Arc::default(),
        }
    }

    /// How many transactions held this caller's operations, and how many operations.
    pub(crate) fn stats(&self) -> (u64, u64) {
        (
            self.counters.groups.load(Ordering::Relaxed),
            self.counters.operations.load(Ordering::Relaxed),
        )
    }
}

/// How many transactions held a caller's operations, and how many operations they held.
#[derive(Debug, Default)]
struct Counters {
    groups: AtomicU64,
    operations: AtomicU64,
}

/// The grouping of [`write`]: the default group size, and no bound of its own on waiting.
static DEFAULT_GROUPING: LazyLock<Grouping> =
    LazyLock::new(|| Grouping::new(DEFAULT_MAX_GROUP, Semaphore::MAX_PERMITS));

/// Runs `op` inside a write transaction on the writer of `pool`'s database (`BEGIN IMMEDIATE`,
/// possibly grouped with other operations, each in its own savepoint). `Err` rolls back
/// everything `op` wrote. Answers once the transaction committed.
///
/// Read the time inside `op` (e.g. `Now::resolve()`), so that it is taken with the lock held.
///
/// # Errors
/// `op`'s own error; `Busy` when another connection held the write lock past the busy timeout;
/// `Connection` when the pool is closed or the writer's connection cannot be opened; the
/// commit's failure, which undoes `op`.
pub(crate) async fn write<T, E>(
    pool: &SqlitePool,
    op: impl FnOnce(&Connection) -> Result<T, E> + Send + 'static,
) -> Result<T, E>
where
    T: Send + 'static,
    E: From<DatabaseError> + Send + 'static,
{
    write_grouped(pool, &DEFAULT_GROUPING, op).await
}

/// [`write`], grouped as `grouping` says.
///
/// # Errors
/// As for [`write`].
pub(crate) async fn write_grouped<T, E>(
    pool: &SqlitePool,
    grouping: &Grouping,
    op: impl FnOnce(&Connection) -> Result<T, E> + Send + 'static,
) -> Result<T, E>
where
    T: Send + 'static,
    E: From<DatabaseError> + Send + 'static,
{
    let (writer, busy_timeout) = writer_of(pool).await?;
    let _permit = grouping
        .permits
        .acquire()
        .await
        .map_err(|_| E::from(stopped()))?;
    let (reply, outcome) = oneshot::channel();
    let job = Job {
        max_group: grouping.max_group,
        busy_timeout,
        counters: grouping.counters.clone(),
        work: Box::new(Op {
            op: Some(op),
            outcome: None,
            reply,
        }),
    };
    if let Err(mpsc::SendError(job)) = writer.jobs.send(job) {
        // The writer's thread ended (its connection could not be opened): forget it, so that
        // the next write opens a new one.
        forget(pool, &writer);
        job.work.answer(Some(&stopped()));
    }
    drop(writer);
    outcome.await.map_err(|_| E::from(stopped()))?
}

/// Runs `sql`, a write that names one row of `entity` by `id` (`params` bind it), inside an
/// operation on the writer: `NotFound` when it changed no row.
///
/// # Errors
/// The classified error of the statement, or `NotFound`.
pub(crate) fn change_one(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    entity: &'static str,
    id: &str,
) -> Result<(), DatabaseError> {
    let changed = conn
        .prepare_cached(sql)
        .and_then(|mut statement| statement.execute(params))
        .map_err(raw_on(entity, id))?;
    if changed == 0 {
        return Err(DatabaseError::not_found(entity, id));
    }
    Ok(())
}

fn stopped() -> DatabaseError {
    DatabaseError::Connection("the database writer has stopped".into())
}

fn pool_closed() -> DatabaseError {
    DatabaseError::Connection("the connection pool is closed".into())
}

/// Records the settings `pool`'s connections were opened with, for its writer. Pools opened
/// elsewhere have theirs read from one of their connections at their first write.
pub(crate) fn register(pool: &SqlitePool, settings: Settings) {
    let options = pool.connect_options();
    let mut registry = registry();
    registry.sweep();
    registry.pools.insert(
        Arc::as_ptr(&options) as usize,
        Attachment {
            options: Arc::downgrade(&options),
            settings,
            writer: None,
            closed: false,
        },
    );
}

/// Stops `pool` from writing, and, when no other open pool of the process uses its writer,
/// stops the writer and waits (up to the pool's acquire timeout) until its connection is
/// closed. Operations already handed over still run.
pub(crate) async fn stop(pool: &SqlitePool) {
    let options = pool.connect_options();
    let key = Arc::as_ptr(&options) as usize;
    let writer = {
        let mut registry = registry();
        // A dropped pool's attachment must not count as another user of the writer.
        registry.sweep();
        let attachment = registry.pools.entry(key).or_insert_with(|| Attachment {
            options: Arc::downgrade(&options),
            settings: Settings {
                busy_timeout: Duration::ZERO,
                synchronous: None,
                foreign_keys: true,
            },
            writer: None,
            closed: true,
        });
        attachment.closed = true;
        let Some(writer) = attachment.writer.take() else {
            return;
        };
        let shared = registry
            .pools
            .values()
            .any(|a| a.writer.as_ref().is_some_and(|w| Arc::ptr_eq(w, &writer)));
        if shared {
            return;
        }
        writer
    };
    let mut stopped = writer.stopped.clone();
    drop(writer);
    let patience = pool.options().get_acquire_timeout();
    // The thread runs what was handed over before the last holder let go, then stops; a
    // write that took the writer just before holds it until it has handed its operation over.
    let _ = tokio::time::timeout(patience, stopped.wait_for(|done| *done)).await;
}

/// The writer of `pool`'s database, opened at the first write, with the pool's busy timeout.
async fn writer_of(pool: &SqlitePool) -> Result<(Arc<Writer>, Duration), DatabaseError> {
    if pool.is_closed() {
        return Err(pool_closed());
    }
    let options = pool.connect_options();
    let key = Arc::as_ptr(&options) as usize;
    let settings = {
        let registry = registry();
        match registry.pools.get(&key) {
            Some(a) if a.closed => return Err(pool_closed()),
            Some(Attachment {
                writer: Some(writer),
                settings,
                ..
            }) => return Ok((writer.clone(), settings.busy_timeout)),
            Some(a) => Some(a.settings),
            None => None,
        }
    };
    let settings = match settings {
        Some(settings) => settings,
        None => read_settings(pool).await?,
    };
    let database = Database::of(&options)?;
    let mut registry = registry();
    registry.sweep();
    let writer = match registry.writers.get(&database.key).and_then(Weak::upgrade) {
        Some(writer) => writer,
        None => {
            let writer = Writer::start(database.clone(), settings);
            registry
                .writers
                .insert(database.key.clone(), Arc::downgrade(&writer));
            writer
        }
    };
    let attachment = registry.pools.entry(key).or_insert_with(|| Attachment {
        options: Arc::downgrade(&options),
        settings,
        writer: None,
        closed: false,
    });
    if attachment.closed {
        return Err(pool_closed());
    }
    let writer = attachment.writer.get_or_insert(writer).clone();
    Ok((writer, attachment.settings.busy_timeout))
}

/// Forgets `writer` for `pool`, whose thread has ended.
fn forget(pool: &SqlitePool, writer: &Arc<Writer>) {
    let options = pool.connect_options();
    let mut registry = registry();
    if let Some(attachment) = registry.pools.get_mut(&(Arc::as_ptr(&options) as usize)) {
        if attachment
            .writer
            .as_ref()
            .is_some_and(|w| Arc::ptr_eq(w, writer))
        {
            attachment.writer = None;
        }
    }
}

/// The settings of a pool this module was not told about, read from one of its connections.
async fn read_settings(pool: &SqlitePool) -> Result<Settings, DatabaseError> {
    let failed = |e: sqlx::Error| classify(e, "connection", "");
    let mut conn = pool.acquire().await.map_err(failed)?;
    let busy_ms: i64 = sqlx::query_scalar(READ_BUSY_TIMEOUT)
        .fetch_one(&mut *conn)
        .await
        .map_err(failed)?;
    let synchronous: i64 = sqlx::query_scalar(READ_SYNCHRONOUS)
        .fetch_one(&mut *conn)
        .await
        .map_err(failed)?;
    let foreign_keys: i64 = sqlx::query_scalar(READ_FOREIGN_KEYS)
        .fetch_one(&mut *conn)
        .await
        .map_err(failed)?;
    Ok(Settings {
        busy_timeout: Duration::from_millis(u64::try_from(busy_ms).unwrap_or(0)),
        synchronous: u8::try_from(synchronous).ok(),
        foreign_keys: foreign_keys != 0,
    })
}

/// Which database a pool connects to, and how to open it as the pool does.
#[derive(Debug, Clone)]
struct Database {
    /// The registry's key: the file's canonical path and inode (a file removed and made again
    /// at the same path is another database), or the shared in-memory database's name.
    key: String,
    /// What SQLite is asked to open.
    filename: String,
    flags: OpenFlags,
    /// The VFS the pool's connections use: the writer must lock the file as they do.
    vfs: Option<String>,
}

impl Database {
    fn of(options: &SqliteConnectOptions) -> Result<Self, DatabaseError> {
        let name = options.get_filename().to_string_lossy().into_owned();
        let flag = |field: &str| open_flag(options, field);
        let in_memory = flag("in_memory");
        let vfs = open_vfs(options);
        if name == ":memory:" || (in_memory && !flag("shared_cache")) {
            // Each connection to it would have a database of its own, the writer's included.
            return Err(DatabaseError::Connection(
                "a private in-memory database cannot be written through a pool; use \
                 `sqlite::memory:`, one in-memory database shared by the pool"
                    .into(),
            ));
        }
        let mut flags = OpenFlags::SQLITE_OPEN_URI | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        flags |= if flag("read_only") {
            OpenFlags::SQLITE_OPEN_READ_ONLY
        } else {
            OpenFlags::SQLITE_OPEN_READ_WRITE
        };
        flags |= if flag("shared_cache") {
            OpenFlags::SQLITE_OPEN_SHARED_CACHE
        } else {
            OpenFlags::SQLITE_OPEN_PRIVATE_CACHE
        };
        if in_memory {
            flags |= OpenFlags::SQLITE_OPEN_MEMORY;
            return Ok(Self {
                key: format!("memory:{name}"),
                filename: name,
                flags,
                vfs,
            });
        }
        let path = PathBuf::from(&name);
        let canonical = std::fs::canonicalize(&path).unwrap_or(path);
        let inode = {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata(&canonical)
                .map(|m| format!("{}:{}", m.dev(), m.ino()))
                .unwrap_or_default()
        };
        let filename = if flag("immutable") {
            // As sqlx opens it: a URI that says the file never changes.
            format!(
                "file:{}?immutable=1",
                uri_path(&canonical.to_string_lossy())
            )
        } else {
            canonical.to_string_lossy().into_owned()
        };
        // One file, however it is named (hard links included), is one database; per VFS,
        // since two VFSs do not see each other's locks.
        let file = if inode.is_empty() {
            canonical.display().to_string()
        } else {
            inode
        };
        Ok(Self {
            key: format!("file:{file}?vfs={}", vfs.as_deref().unwrap_or_default()),
            filename,
            flags,
            vfs,
        })
    }
}

/// The VFS `options` name (`?vfs=` in the URL), read from their `Debug` form as
/// [`open_flag`] reads the flags.
fn open_vfs(options: &SqliteConnectOptions) -> Option<String> {
    const FIELD: &str = " vfs: Some(\"";
    let fields = option_fields(options);
    let start = fields.find(FIELD)? + FIELD.len();
    let len = fields[start..].find('"')?;
    Some(fields[start..start + len].to_string())
}

/// One of the open flags of `options` (`in_memory`, `read_only`, `shared_cache`,
/// `immutable`). sqlx 0.8 has no getter for them, and its URL form of the options panics on
/// the names it gives in-memory databases; their `Debug` form, after the file name, names
/// each field.
fn open_flag(options: &SqliteConnectOptions, field: &str) -> bool {
    option_fields(options).contains(&format!(" {field}: true,"))
}

/// The `Debug` form of `options` after their file name, whose text could otherwise pass for a
/// field.
fn option_fields(options: &SqliteConnectOptions) -> String {
    let text = format!("{options:?}");
    let filename = format!("{:?}", options.get_filename());
    match text.find(&filename) {
        Some(at) => text[at + filename.len()..].to_string(),
        None => text,
    }
}

/// A path as the path of a `file:` URI: `%`, `?` and `#` escaped.
fn uri_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        match c {
            '%' => out.push_str("%25"),
            '?' => out.push_str("%3f"),
            '#' => out.push_str("%23"),
            c => out.push(c),
        }
    }
    out
}

/// The process's writers and the pools that use them.
#[derive(Default)]
struct Registry {
    /// Writers by database, held weakly: a writer lives while a pool holds it.
    writers: HashMap<String, Weak<Writer>>,
    /// Pools by the address of their connect options, which the `Weak` keeps from being
    /// reused while the entry exists.
    pools: HashMap<usize, Attachment>,
}

/// What the registry knows of one pool.
struct Attachment {
    /// The pool's connect options: gone once the pool is dropped.
    options: Weak<SqliteConnectOptions>,
    settings: Settings,
    /// Its writer, once it has written.
    writer: Option<Arc<Writer>>,
    /// Closed: it may not write any more.
    closed: bool,
}

impl Registry {
    /// Forgets the pools that were dropped, and the writers nothing holds. A writer held only
    /// by dropped pools is let go here; its thread sees its channel closed on its next
    /// receive, and stops.
    fn sweep(&mut self) {
        self.pools.retain(|_, a| a.options.strong_count() > 0);
        self.writers.retain(|_, w| w.strong_count() > 0);
    }
}

static REGISTRY: LazyLock<Mutex<Registry>> = LazyLock::new(Mutex::default);

fn registry() -> MutexGuard<'static, Registry> {
    // The registry holds no invariant a panic could break half-way.
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

/// A writer: the sending end of its thread's work, and whether the thread has ended. Dropping
/// the last one stops the thread once it has run what was handed over.
struct Writer {
    jobs: mpsc::Sender<Job>,
    stopped: watch::Receiver<bool>,
}

impl Writer {
    fn start(database: Database, settings: Settings) -> Arc<Self> {
        let (jobs, queue) = mpsc::channel();
        let (done, stopped) = watch::channel(false);
        let name = "abathur-sqlite-writer".to_string();
        let spawned = std::thread::Builder::new().name(name).spawn(move || {
            run(&database, settings, &queue);
            // The connection is closed by now: whoever waits in `stop` may go on.
            let _ = done.send(true);
        });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the database writer's thread");
        }
        Arc::new(Self { jobs, stopped })
    }
}

/// Opens the writer's connection as the pool's are.
fn open(database: &Database, settings: Settings) -> Result<Connection, DatabaseError> {
    let failed = raw_on("connection", "");
    let conn = match &database.vfs {
        Some(vfs) => {
            Connection::open_with_flags_and_vfs(&database.filename, database.flags, vfs.as_str())
        }
        None => Connection::open_with_flags(&database.filename, database.flags),
    }
    .map_err(failed)?;
    conn.set_prepared_statement_cache_capacity(PREPARED);
    let failed = |e| raw_on("connection", "")(e);
    if let Some(level) = settings.synchronous {
        let sql = match level {
            0 => SYNCHRONOUS_OFF,
            1 => SYNCHRONOUS_NORMAL,
            3 => SYNCHRONOUS_EXTRA,
            _ => SYNCHRONOUS_FULL,
        };
        statement(&conn, sql).map_err(failed)?;
    }
    let keys = if settings.foreign_keys {
        FOREIGN_KEYS_ON
    } else {
        FOREIGN_KEYS_OFF
    };
    statement(&conn, keys).map_err(failed)?;
    conn.busy_timeout(settings.busy_timeout).map_err(failed)?;
    Ok(conn)
}

/// The writer's thread: opens the connection, then runs groups until every holder is gone.
fn run(database: &Database, settings: Settings, queue: &mpsc::Receiver<Job>) {
    let conn = match open(database, settings) {
        Ok(conn) => conn,
        Err(err) => {
            tracing::warn!(error = %err, "the database writer cannot open its connection");
            // Whatever was handed over before the failure is answered with it; the senders
            // see the thread gone and open another writer next time.
            while let Ok(job) = queue.try_recv() {
                job.work.answer(Some(&err));
            }
            return;
        }
    };
    let mut busy_timeout = settings.busy_timeout;
    let mut next: Option<Job> = None;
    loop {
        let first = match next.take() {
            Some(job) => job,
            None => match queue.recv_timeout(SWEEP) {
                Ok(job) => job,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    // Pools dropped without being closed let go of their writer here.
                    registry().sweep();
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            },
        };
        if first.busy_timeout != busy_timeout && conn.busy_timeout(first.busy_timeout).is_ok() {
            busy_timeout = first.busy_timeout;
        }
        next = run_group(&conn, first, queue).or_else(|| soon(queue));
    }
    if let Err((_, e)) = conn.close() {
        tracing::warn!(error = %e, "the database writer's connection did not close cleanly");
    }
}

/// The next operation, if one comes within [`STAY_AWAKE`]: a caller that got its answer and
/// sends its next operation at once (a worker's claim after its completion) finds the writer
/// awake, and waits for no thread to be woken.
fn soon(queue: &mpsc::Receiver<Job>) -> Option<Job> {
    let until = Instant::now() + STAY_AWAKE;
    loop {
        if let Ok(job) = queue.try_recv() {
            return Some(job);
        }
        if Instant::now() >= until {
            return None;
        }
        std::thread::yield_now();
    }
}

/// Begins a transaction with `first`, takes whatever else waits (up to the group's limit),
/// runs it, commits, and answers everyone. Returns an operation taken that did not fit.
fn run_group(conn: &Connection, first: Job, queue: &mpsc::Receiver<Job>) -> Option<Job> {
    // A storage failure of an earlier group is not this one's cause.
    let _ = take_storage_failure();
    let begun = statement(conn, BEGIN_IMMEDIATE).map_err(|e| raw_on("transaction", "")(e));
    // Whatever arrived while the lock was taken joins the transaction; when it could not be
    // taken (held elsewhere past the busy timeout), whatever waited with the first operation
    // fails with it, rather than each waiting out the timeout in turn.
    let (group, left) = take_group(first, queue);
    count(&group);
    if let Err(err) = begun {
        for job in group {
            job.work.answer(Some(&err));
        }
        return left;
    }
    let mut works: Vec<Box<dyn Work>> = group.into_iter().map(|job| job.work).collect();
    let failure = match run_in_transaction(conn, &mut works) {
        Ok(true) => statement(conn, COMMIT)
            .err()
            .map(|e| raw_on("transaction", "")(e)),
        // The operation's own error is its answer; SQLite may have rolled back already.
        Ok(false) if conn.is_autocommit() => None,
        Ok(false) => statement(conn, ROLLBACK)
            .err()
            .map(|e| raw_on("transaction", "")(e)),
        Err(err) => {
            let _ = statement(conn, ROLLBACK);
            Some(err)
        }
    };
    if !conn.is_autocommit() {
        // A transaction that could not be ended is not left holding the lock.
        let _ = statement(conn, ROLLBACK);
    }
    if let Some(failure) = &failure {
        tracing::warn!(error = %failure, "a write transaction failed; its operations are undone");
    }
    for work in works {
        work.answer(failure.as_ref());
    }
    left
}

/// `first` and whatever waits behind it, up to the smallest limit of the operations taken;
/// and an operation taken that did not fit.
fn take_group(first: Job, queue: &mpsc::Receiver<Job>) -> (Vec<Job>, Option<Job>) {
    let mut limit = first.max_group;
    let mut group = vec![first];
    while group.len() < limit {
        match queue.try_recv() {
            Ok(job) if job.max_group <= group.len() => return (group, Some(job)),
            Ok(job) => {
                limit = limit.min(job.max_group);
                group.push(job);
            }
            Err(_) => break,
        }
    }
    (group, None)
}

/// Counts a group for the callers whose operations it holds.
fn count(group: &[Job]) {
    let mut seen: Vec<&Arc<Counters>> = Vec::with_capacity(1);
    for job in group {
        job.counters.operations.fetch_add(1, Ordering::Relaxed);
        if !seen.iter().any(|c| Arc::ptr_eq(c, &job.counters)) {
            job.counters.groups.fetch_add(1, Ordering::Relaxed);
            seen.push(&job.counters);
        }
    }
}

/// Runs a group inside its transaction: alone, an operation needs no savepoint; in a group,
/// each runs in a savepoint of its own, rolled back when it fails, so that it leaves no trace
/// and does not undo the others. Says whether to commit (not when the only operation failed);
/// the error is a savepoint statement's, after which the transaction cannot be trusted.
fn run_in_transaction(
    conn: &Connection,
    works: &mut [Box<dyn Work>],
) -> Result<bool, DatabaseError> {
    if let [only] = works {
        return Ok(only.run(conn));
    }
    let failed = |e| raw_on("transaction", "")(e);
    for work in works.iter_mut() {
        statement(conn, SAVEPOINT).map_err(failed)?;
        if !work.run(conn) {
            if conn.is_autocommit() {
                // SQLite rolled back the whole transaction (it may, on a full disk, an I/O
                // error or a lack of memory): what the others did is undone, and the cause is
                // theirs to hear, not a missing savepoint.
                return Err(take_storage_failure().unwrap_or(DatabaseError::Io));
            }
            statement(conn, ROLLBACK_TO_SAVEPOINT).map_err(failed)?;
            statement(conn, UNDEFER_FOREIGN_KEYS).map_err(failed)?;
        }
        statement(conn, RELEASE_SAVEPOINT).map_err(failed)?;
    }
    Ok(true)
}

/// Runs a statement that returns no rows, prepared once per connection.
fn statement(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([])?;
    Ok(())
}

/// One operation handed to the writer.
struct Job {
    max_group: usize,
    busy_timeout: Duration,
    counters: Arc<Counters>,
    work: Box<dyn Work>,
}

/// An operation and its caller, type-erased.
trait Work: Send {
    /// Runs the operation (once), keeping its outcome; whether it succeeded.
    fn run(&mut self, conn: &Connection) -> bool;
    /// Answers the caller: the operation's outcome, unless `failure` undid it (or it never
    /// ran), in which case the failure.
    fn answer(self: Box<Self>, failure: Option<&DatabaseError>);
}

struct Op<F, T, E> {
    op: Option<F>,
    outcome: Option<Result<T, E>>,
    reply: oneshot::Sender<Result<T, E>>,
}

impl<F, T, E> Work for Op<F, T, E>
where
    F: FnOnce(&Connection) -> Result<T, E> + Send + 'static,
    T: Send + 'static,
    E: From<DatabaseError> + Send + 'static,
{
    fn run(&mut self, conn: &Connection) -> bool {
        let Some(op) = self.op.take() else {
            return false;
        };
        // A panicking operation fails alone (its savepoint is rolled back) and the writer
        // goes on.
        let outcome =
            std::panic::catch_unwind(AssertUnwindSafe(|| op(conn))).unwrap_or_else(|_| {
                tracing::error!("a database write panicked; it is undone");
                Err(E::from(DatabaseError::Other("the write panicked".into())))
            });
        let ok = outcome.is_ok();
        self.outcome = Some(outcome);
        ok
    }

    fn answer(self: Box<Self>, failure: Option<&DatabaseError>) {
        let answer = match (self.outcome, failure) {
            (Some(Err(own)), _) => Err(own),
            (Some(Ok(value)), None) => Ok(value),
            (_, Some(failure)) => Err(E::from(copy_error(failure))),
            (None, None) => Err(E::from(stopped())),
        };
        // A caller that stopped waiting has nobody to tell.
        let _ = self.reply.send(answer);
    }
}

/// The same failure for another caller. `DatabaseError` is not `Clone` (it may carry
/// validation details); a transaction fails only for reasons of the database as a whole.
fn copy_error(err: &DatabaseError) -> DatabaseError {
    match err {
        DatabaseError::Busy => DatabaseError::Busy,
        DatabaseError::Timeout => DatabaseError::Timeout,
        DatabaseError::ReadOnly => DatabaseError::ReadOnly,
        DatabaseError::DiskFull => DatabaseError::DiskFull,
        DatabaseError::Io => DatabaseError::Io,
        DatabaseError::Corrupt => DatabaseError::Corrupt,
        DatabaseError::NotADatabase => DatabaseError::NotADatabase,
        DatabaseError::Connection(message) => DatabaseError::Connection(message.clone()),
        other => DatabaseError::Other(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;
    use std::sync::{mpsc, Arc};
    use std::time::Duration;

    use abathur_core::error::DatabaseError;
    use rusqlite::Connection;
    use sqlx::sqlite::SqliteConnectOptions;
    use tokio::sync::oneshot;

    use super::{open_flag, open_vfs, run_group, write, Job, Op};
    use crate::connection::{DatabaseConfig, DatabaseConnection};
    use crate::errors::raw_on;

    /// A job for [`run_group`], and where its answer arrives.
    #[allow(clippy::type_complexity)] // reason: a test's job and its answer
    fn job(
        op: impl FnOnce(&Connection) -> Result<(), DatabaseError> + Send + 'static,
    ) -> (Job, oneshot::Receiver<Result<(), DatabaseError>>) {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            max_group: 16,
            busy_timeout: Duration::from_secs(1),
            counters: Arc::default(),
            work: Box::new(Op {
                op: Some(op),
                outcome: None,
                reply,
            }),
        };
        (job, answer)
    }

    fn insert(sql: &'static str) -> impl FnOnce(&Connection) -> Result<(), DatabaseError> {
        move |conn| conn.execute(sql, []).map(|_| ()).map_err(raw_on("t", ""))
    }

    /// Regression: on a full disk SQLite may roll back the whole transaction, not only the
    /// failing statement; the other operations of the group were then told of a missing
    /// savepoint, an internal error, instead of the full disk.
    #[test]
    fn a_full_disk_in_a_group_is_what_each_operation_hears_and_only_what_is_answered_ok_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let conn = Connection::open(dir.path().join("full.db")).unwrap();
        conn.execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (x BLOB)")
            .unwrap();
        let pages: i64 = conn
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .unwrap();
        conn.query_row(
            &format!("PRAGMA max_page_count = {}", pages + 3),
            [],
            |_| Ok(()),
        )
        .unwrap();
        let (first, a) = job(insert("INSERT INTO t VALUES (1)"));
        let (second, b) = job(insert("INSERT INTO t VALUES (zeroblob(1000000))"));
        let (third, c) = job(insert("INSERT INTO t VALUES (3)"));
        let (queue, waiting) = mpsc::channel();
        queue.send(second).unwrap();
        queue.send(third).unwrap();
        assert!(run_group(&conn, first, &waiting).is_none());
        let answers = [a, b, c].map(|answer| answer.blocking_recv().unwrap());
        assert!(
            matches!(answers[1], Err(DatabaseError::DiskFull)),
            "{answers:?}"
        );
        for answer in &answers {
            assert!(
                matches!(answer, Ok(()) | Err(DatabaseError::DiskFull)),
                "{answers:?}"
            );
        }
        let kept: i64 = conn
            .query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
            .unwrap();
        let ok = answers.iter().filter(|a| a.is_ok()).count();
        assert_eq!(kept, i64::try_from(ok).unwrap(), "{answers:?}");
        assert!(conn.is_autocommit());
    }

    /// Regression: the writer opened the file with the default VFS whatever the URL said, so
    /// with `vfs=unix-dotfile` it did not see the pool's lock and wrote beside it.
    #[tokio::test]
    async fn the_writer_locks_the_file_with_the_vfs_the_url_names() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!(
            "sqlite:{}?vfs=unix-dotfile",
            dir.path().join("v.db").display()
        );
        assert_eq!(
            open_vfs(&SqliteConnectOptions::from_str(&url).unwrap()).as_deref(),
            Some("unix-dotfile")
        );
        let config = DatabaseConfig {
            busy_timeout: Duration::from_millis(200),
            ..DatabaseConfig::default()
        };
        let db = DatabaseConnection::with_config(&url, config).await.unwrap();
        write(db.pool(), |conn| {
            conn.execute_batch("CREATE TABLE t (x INTEGER)")
                .map_err(raw_on("t", ""))
        })
        .await
        .unwrap();
        let mut held = db.begin_write().await.unwrap();
        sqlx::query("INSERT INTO t VALUES (1)")
            .execute(&mut *held)
            .await
            .unwrap();
        let beside = write(db.pool(), insert("INSERT INTO t VALUES (2)")).await;
        held.rollback().await.unwrap();
        assert!(matches!(beside, Err(DatabaseError::Busy)), "{beside:?}");
        db.close().await;
    }

    /// Regression: a pool dropped without closing still counted as a user of the writer, so
    /// closing the other connection left the writer's connection open and the WAL unmerged.
    #[tokio::test]
    async fn closing_the_last_open_connection_stops_the_writer_even_after_another_was_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        let first = DatabaseConnection::open_path(&path, DatabaseConfig::default())
            .await
            .unwrap();
        let second = DatabaseConnection::open_path(&path, DatabaseConfig::default())
            .await
            .unwrap();
        write(first.pool(), |conn| {
            conn.execute_batch("CREATE TABLE t (x INTEGER)")
                .map_err(raw_on("t", ""))
        })
        .await
        .unwrap();
        write(second.pool(), insert("INSERT INTO t VALUES (1)"))
            .await
            .unwrap();
        first.pool().close().await;
        drop(first);
        second.close().await;
        assert!(!dir.path().join("a.db-wal").exists());
    }

    #[test]
    fn the_open_flags_are_read_from_the_options_as_sqlx_parsed_them() {
        let memory = SqliteConnectOptions::from_str("sqlite::memory:").unwrap();
        assert!(open_flag(&memory, "in_memory"));
        assert!(open_flag(&memory, "shared_cache"));
        assert!(!open_flag(&memory, "read_only"));
        let read_only =
            SqliteConnectOptions::from_str("sqlite:in_memory: true,.db?mode=ro").unwrap();
        assert!(open_flag(&read_only, "read_only"));
        assert!(
            !open_flag(&read_only, "in_memory"),
            "the file name is not a field"
        );
        let immutable = SqliteConnectOptions::from_str("sqlite:a.db?immutable=1").unwrap();
        assert!(open_flag(&immutable, "immutable"));
        assert!(!open_flag(&immutable, "shared_cache"));
    }
}
