//! One attempt: run the command for one claimed task, keep its lease alive, stop it when it
//! must stop, and report how it ended to the queue.

use std::ffi::{OsStr, OsString};
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use abathur_core::limits::{self, MAX_TASK_JSON_BYTES};
use abathur_core::queue::{ClaimedTask, FailOutcome, QueueError, TaskQueue};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{interval_at, sleep_until, Instant, MissedTickBehavior};
use uuid::Uuid;

use super::outage::{self, Backoff, Outage};
use super::output::{
    check_result, describe_exit, failure_message, fit_error, result_from_stdout, Capture,
    STDERR_TAIL_BYTES, STDOUT_LIMIT_BYTES,
};

/// What every attempt of one worker shares.
#[derive(Debug)]
pub(super) struct Job {
    pub worker: String,
    pub program: OsString,
    pub args: Vec<OsString>,
    /// Given to the command as `ABATHUR_DB`.
    pub database: PathBuf,
    pub lease: Duration,
    /// How the command is started.
    pub launcher: Launcher,
    /// Whether the database is failing for a while, shared with the claim loop.
    pub outage: Outage,
    /// The pauses between a report's tries while the database fails.
    pub backoff: Backoff,
}

/// How a command is started: so that it dies with its worker where the system allows it.
///
/// If the worker dies (SIGKILL, a crash), the command should die with it rather than run on
/// while the reaper hands its task to another worker. Linux has the parent-death signal for
/// that, and util-linux's `setpriv --pdeathsig KILL -- PROGRAM ARGS...` sets it and then
/// becomes the command (same process, same group, same environment). Processes the command
/// started itself are not covered; they are in its group, which the worker kills when it
/// stops the command on purpose.
#[derive(Debug, Clone)]
pub(super) enum Launcher {
    /// Through `setpriv` at this path, which takes `--pdeathsig`.
    DeathSignal(PathBuf),
    /// The program itself, with no parent-death signal: not Linux, or no usable `setpriv`.
    Direct,
}

impl Launcher {
    /// Finds `setpriv` on `PATH` and checks that it takes `--pdeathsig` (util-linux 2.33 and
    /// later), by having it set the signal and run itself with `--version`.
    ///
    /// Without one the worker still runs (it says so once, with a warning): the signal is a
    /// safety net for a worker killed outright, and a worker that refused to start for want
    /// of it would run nothing at all. A command left running that way ends on its own or by
    /// its timeout; its task is reaped and run again, and its own report is refused as a lost
    /// lease.
    pub(super) async fn find() -> Self {
        #[cfg(target_os = "linux")]
        {
            let found = std::env::var_os("PATH")
                .map(|path| {
                    std::env::split_paths(&path)
                        .map(|dir| dir.join("setpriv"))
                        .filter(|candidate| is_executable_file(candidate))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default();
            for setpriv in found {
                let works = Command::new(&setpriv)
                    .args(["--pdeathsig", "KILL", "--"])
                    .arg(&setpriv)
                    .arg("--version")
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .kill_on_drop(true)
                    .status()
                    .await
                    .is_ok_and(|status| status.success());
                if works {
                    return Self::DeathSignal(setpriv);
                }
            }
            tracing::warn!(
                "no `setpriv` taking --pdeathsig (util-linux) on PATH: commands run without \
                 the parent-death signal, so a command whose worker is killed runs on until it \
                 ends or times out"
            );
        }
        Self::Direct
    }
}

/// How an attempt ended, as far as the worker is concerned.
#[derive(Debug)]
pub(super) enum Ending {
    /// The command exited 0 and the task completed.
    Completed,
    /// The command failed, timed out or printed too much; the attempt was failed (the queue
    /// decides whether the task runs again).
    Failed,
    /// The worker stopped before the command finished; the task went back to ready.
    Released,
    /// The lease was lost or the task cancelled while it ran; the command was killed and
    /// nothing was reported.
    Abandoned,
    /// The outcome could not be reported; the reaper will take the task back when its lease
    /// expires.
    Unreported,
    /// The command could not be started; the task went back to ready.
    NotStarted { program: OsString, error: io::Error },
}

/// Why the worker stopped waiting for the command.
enum Stop {
    Exited(ExitStatus),
    WaitFailed(io::Error),
    TimedOut,
    LeaseGone(QueueError),
    Shutdown,
}

/// Runs the command for `claimed` and reports the outcome. `claimed_at` is when the claim was
/// asked for: the task's timeout counts from there, as the reaper's does from the claim.
/// `grace` holds, once the worker is stopping, the moment to give up on the command.
pub(super) async fn run(
    queue: TaskQueue,
    claimed: ClaimedTask,
    job: Arc<Job>,
    mut grace: watch::Receiver<Option<Instant>>,
    claimed_at: Instant,
) -> Ending {
    let task = &claimed.task;
    let attempt = claimed.lease.attempt_id;
    let timeout = Duration::from_secs(u64::from(task.max_execution_timeout_seconds));
    let started = Instant::now();

    let mut command = match &job.launcher {
        Launcher::DeathSignal(setpriv) => {
            // `setpriv` reports a program it cannot run in its own words, once it has
            // started: look first, so that a missing or non-executable program is reported
            // as the program's error, as when it is started directly.
            if let Err(error) = startable(&job.program) {
                return not_started(&queue, &claimed, &job, &mut grace, error).await;
            }
            let mut command = Command::new(setpriv);
            command
                .args(["--pdeathsig", "KILL", "--"])
                .arg(&job.program);
            // Between the fork and `setpriv`'s prctl (its start-up, about a millisecond) the
            // signal is not yet set: a worker killed in that moment leaves the command
            // running, as a worker without `setpriv` does.
            command
        }
        Launcher::Direct => Command::new(&job.program),
    };
    command
        .args(&job.args)
        .env("ABATHUR_TASK_ID", task.id.to_string())
        .env("ABATHUR_ATTEMPT_ID", attempt.to_string())
        .env("ABATHUR_DB", &job.database)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // Its own process group, so that a kill reaches whatever the command started (`sh -c`
    // runs its commands as children), and a Ctrl-C at the worker's terminal reaches only the
    // worker, which then decides how long the command may go on.
    #[cfg(unix)]
    command.process_group(0);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(error) => return not_started(&queue, &claimed, &job, &mut grace, error).await,
    };
    // The command leads its own group, whose id is its pid: remembered now, because once the
    // command is reaped `child.id()` says nothing, and the group may outlive it.
    let group = child.id();
    tracing::info!(
        task = %task.id,
        attempt = %attempt,
        try_number = claimed.lease.attempt_number,
        "started: {}",
        task.summary
    );

    let input = serde_json::to_vec(task).map(|mut v| {
        v.push(b'\n');
        v
    });
    let writer = child.stdin.take().map(|mut stdin| {
        tokio::spawn(async move {
            if let Ok(input) = input {
                // A command that does not read its input closes the pipe: not an error.
                let _ = stdin.write_all(&input).await;
            }
        })
    });
    let stdout = Arc::new(Mutex::new(Capture::head(STDOUT_LIMIT_BYTES)));
    let stderr = Arc::new(Mutex::new(Capture::tail(STDERR_TAIL_BYTES)));
    let (ended_tx, ended) = watch::channel(false);
    let readers = [
        child
            .stdout
            .take()
            .map(|s| drain(s, stdout.clone(), ended.clone())),
        child
            .stderr
            .take()
            .map(|s| drain(s, stderr.clone(), ended.clone())),
    ];

    let stop = supervise(
        &queue,
        &mut child,
        attempt,
        &job,
        // A timeout too far away to represent is no timeout.
        claimed_at.checked_add(timeout).unwrap_or_else(far_future),
        &mut grace,
    )
    .await;
    let stop = match stop {
        Stop::Exited(status) => Stop::Exited(status),
        Stop::Shutdown => {
            // The grace period is over: ask the command to stop (SIGTERM to its group), give
            // it a moment to clean up, then kill what is left. Its task goes back either way.
            signal_tree(&mut child, Signal::Terminate);
            if tokio::time::timeout(TERM_WAIT, child.wait()).await.is_err() {
                kill_tree(&mut child);
                let _ = child.wait().await;
            }
            Stop::Shutdown
        }
        other => {
            kill_tree(&mut child);
            // Reap it, so that no zombie is left; its status says nothing new.
            let _ = child.wait().await;
            other
        }
    };
    // The task ends with its command: whatever the command left running in its group (a
    // background job that would hold its pipes open, or go on working after the task is
    // reported) ends now.
    kill_group(group);
    // The pipes close when the last process holding them ends, and a process that left the
    // group may hold them for ever: take what they hold now, and stop reading.
    ended_tx.send_replace(true);
    for reader in readers.into_iter().flatten() {
        let _ = reader.await;
    }
    if let Some(writer) = writer {
        writer.abort();
    }
    let took = started.elapsed().as_secs_f64();
    let stdout = take(&stdout);
    let stderr = take(&stderr);

    if let Stop::Exited(status) = &stop {
        if let Some(error) = exec_failure(&job, *status, stderr.bytes()) {
            return not_started(&queue, &claimed, &job, &mut grace, error).await;
        }
    }

    let (what, error) = match stop {
        Stop::Exited(status) if status.success() => {
            if stdout.overflowed() {
                let what = format!(
                    "exited with status 0 but printed more than {} on stdout (a result may be \
                     at most {})",
                    limits::bytes(STDOUT_LIMIT_BYTES),
                    limits::bytes(MAX_TASK_JSON_BYTES)
                );
                ("printed too much", failure_message(&what, stderr.bytes()))
            } else {
                let result = result_from_stdout(stdout.bytes());
                match result.as_ref().map(check_result).transpose() {
                    Ok(_) => {
                        return complete(&queue, &claimed, &job, &mut grace, result, took).await
                    }
                    Err(e) => {
                        let what = format!("exited with status 0, but its result {}", e.message);
                        ("printed too much", failure_message(&what, stderr.bytes()))
                    }
                }
            }
        }
        Stop::Exited(status) => (
            "failed",
            failure_message(&describe_exit(status), stderr.bytes()),
        ),
        Stop::WaitFailed(e) => (
            "failed",
            format!("the worker lost track of the command: {e}"),
        ),
        Stop::TimedOut => (
            "timed out",
            failure_message(
                &format!(
                    "ran past the task's timeout of {} s and was killed",
                    task.max_execution_timeout_seconds
                ),
                stderr.bytes(),
            ),
        ),
        Stop::LeaseGone(e) => {
            tracing::warn!(
                task = %task.id,
                attempt = %attempt,
                "stopped after {took:.1} s: the task is no longer this worker's ({e}); the command was killed"
            );
            return Ending::Abandoned;
        }
        Stop::Shutdown => {
            let reason = format!(
                "worker {} shut down before the command finished",
                job.worker
            );
            return match release(&queue, attempt, &job, &mut grace, &reason).await {
                Ok(()) => {
                    tracing::info!(
                        task = %task.id,
                        attempt = %attempt,
                        "released after {took:.1} s: the command was killed at shutdown; the task is ready again"
                    );
                    Ending::Released
                }
                Err(e) => unreported(task.id, &e),
            };
        }
    };
    fail(&queue, &claimed, &job, &mut grace, what, &error, took).await
}

/// Gives the task back, since its command could not be started.
async fn not_started(
    queue: &TaskQueue,
    claimed: &ClaimedTask,
    job: &Job,
    grace: &mut watch::Receiver<Option<Instant>>,
    error: io::Error,
) -> Ending {
    let reason = format!("worker {} could not start its command", job.worker);
    if let Err(e) = release(queue, claimed.lease.attempt_id, job, grace, &reason).await {
        tracing::warn!(task = %claimed.task.id, error = %e, "cannot give the task back");
    }
    Ending::NotStarted {
        program: job.program.clone(),
        error,
    }
}

/// Whether `program` can be started, looked up as `execvp` does (on `PATH` unless it names a
/// path); its error is the one starting it would give.
fn startable(program: &OsStr) -> io::Result<()> {
    let denied = || io::Error::from_raw_os_error(libc::EACCES);
    if program.as_encoded_bytes().contains(&b'/') {
        // A missing file (or folder on the way) is the system's own error for it.
        std::fs::metadata(program)?;
        return if is_executable_file(Path::new(program)) {
            Ok(())
        } else {
            Err(denied())
        };
    }
    // execvp's default when PATH is unset.
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/bin:/usr/bin".into());
    let mut refused = false;
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(program);
        match std::fs::metadata(&candidate) {
            Ok(_) if is_executable_file(&candidate) => return Ok(()),
            // execvp goes on past an entry it may not run, and says so if nothing else runs.
            Ok(_) => refused = true,
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => refused = true,
            Err(_) => {}
        }
    }
    Err(if refused {
        denied()
    } else {
        io::Error::from_raw_os_error(libc::ENOENT)
    })
}

/// Whether `path` is a file this process may execute.
fn is_executable_file(path: &Path) -> bool {
    #[cfg(unix)]
    {
        path.is_file() && rustix::fs::access(path, rustix::fs::Access::EXEC_OK).is_ok()
    }
    #[cfg(not(unix))]
    {
        path.is_file()
    }
}

/// The error `setpriv` met running the program, when the command's whole end is its report
/// of one: `setpriv: failed to execute PROGRAM: REASON` on stderr and exit code 126 or 127
/// (127 when the program is missing). Checked first, the program may be gone by the time
/// `setpriv` runs it. The error is the system's own for that reason when the reason is in the
/// worker's words (`setpriv` speaks the user's locale), else the reason as `setpriv` gave it.
fn exec_failure(job: &Job, status: ExitStatus, stderr: &[u8]) -> Option<io::Error> {
    if !matches!(job.launcher, Launcher::DeathSignal(_))
        || !matches!(status.code(), Some(126 | 127))
    {
        return None;
    }
    let stderr = std::str::from_utf8(stderr).ok()?;
    let line = stderr.strip_suffix('\n')?;
    let program = job.program.to_str()?;
    let reason = line
        .strip_prefix("setpriv: failed to execute ")?
        .strip_prefix(program)?
        .strip_prefix(": ")?;
    if reason.contains('\n') {
        return None;
    }
    // errno values run below 256 on every Linux architecture.
    let error = (1..256)
        .map(io::Error::from_raw_os_error)
        .find(|e| {
            e.to_string()
                .strip_prefix(reason)
                .is_some_and(|rest| rest.starts_with(" (os error "))
        })
        .unwrap_or_else(|| io::Error::other(reason.to_string()));
    Some(error)
}

/// Waits for the command to exit, heartbeating, until it exits or must be stopped.
async fn supervise(
    queue: &TaskQueue,
    child: &mut Child,
    attempt: Uuid,
    job: &Job,
    deadline: Instant,
    grace: &mut watch::Receiver<Option<Instant>>,
) -> Stop {
    let lease = job.lease;
    // A third of the lease: two heartbeats may be lost (a busy database) before it expires.
    // Never a zero period, which `interval` refuses, however short the lease.
    let every = (lease / 3).max(Duration::from_millis(100));
    let mut heartbeat = interval_at(Instant::now() + every, every);
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            status = child.wait() => {
                return match status {
                    Ok(status) => Stop::Exited(status),
                    Err(e) => Stop::WaitFailed(e),
                };
            }
            () = sleep_until(deadline) => return Stop::TimedOut,
            () = grace_over(grace) => return Stop::Shutdown,
            _ = heartbeat.tick() => {
                let beat = queue.heartbeat(attempt, lease).await;
                job.outage.note(&beat);
                match beat {
                    Ok(_) => {}
                    Err(e @ (QueueError::LeaseLost { .. }
                    | QueueError::Cancelled { .. }
                    | QueueError::AttemptNotFound(_))) => return Stop::LeaseGone(e),
                    // The next heartbeat may get through; the lease has room for two misses.
                    // A database that is down or busy was told once, by the outage.
                    Err(e) if outage::transient(&e).is_some() => {}
                    Err(e) => tracing::warn!(attempt = %attempt, error = %e, "a heartbeat failed"),
                }
            }
        }
    }
}

/// A moment no command outlives: thirty years on.
fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(30 * 365 * 24 * 3600)
}

/// Returns once the worker is stopping and its grace period is over.
async fn grace_over(grace: &mut watch::Receiver<Option<Instant>>) {
    loop {
        let deadline = *grace.borrow_and_update();
        if let Some(deadline) = deadline {
            sleep_until(deadline).await;
            return;
        }
        if grace.changed().await.is_err() {
            // The worker is gone without stopping: nothing will ever end the grace.
            std::future::pending::<()>().await;
        }
    }
}

/// How long a command asked to stop (SIGTERM) at the end of the grace period has before it is
/// killed.
const TERM_WAIT: Duration = Duration::from_secs(2);

/// Which signal [`signal_tree`] sends.
#[derive(Clone, Copy)]
enum Signal {
    /// SIGTERM: please stop.
    Terminate,
    /// SIGKILL: stop now.
    Kill,
}

/// Sends `signal` to the command and every process in its group.
fn signal_tree(child: &mut Child, signal: Signal) {
    #[cfg(unix)]
    if let Some(pid) = child
        .id()
        .and_then(|pid| i32::try_from(pid).ok())
        .and_then(rustix::process::Pid::from_raw)
    {
        let signal = match signal {
            Signal::Terminate => rustix::process::Signal::TERM,
            Signal::Kill => rustix::process::Signal::KILL,
        };
        // `id()` is Some only until the child is reaped, so `pid` is still our child's, and
        // it leads its own group (`process_group(0)`): the group cannot be anyone else's.
        let _ = rustix::process::kill_process_group(pid, signal);
    }
    if matches!(signal, Signal::Kill) {
        // The direct child at least, where process groups do not exist or it already left.
        let _ = child.start_kill();
    }
}

/// Kills the command and every process in its group.
fn kill_tree(child: &mut Child) {
    signal_tree(child, Signal::Kill);
}

/// Kills every process left in the group the command led, after the command itself was
/// reaped.
fn kill_group(group: Option<u32>) {
    #[cfg(unix)]
    if let Some(pgid) = group
        .and_then(|pid| i32::try_from(pid).ok())
        .and_then(rustix::process::Pid::from_raw)
    {
        // The group is the one the command led: while a process is left in it, its id cannot
        // be given to another process. Once it is empty the call fails with ESRCH, unless in
        // the moment since the reap the kernel went through every other pid and the new owner
        // of this one made a group of it.
        let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
    }
    #[cfg(not(unix))]
    let _ = group;
}

/// The most read from a pipe after its command ended: more than a pipe holds (64 KiB by
/// default on Linux, 1 MiB at most unless raised), so whatever the command wrote is taken,
/// while a process outside its group that goes on writing cannot keep the reader for ever.
const AFTER_END_BYTES: usize = 2 * 1024 * 1024;

/// Reads `stream` into `into` until it closes, or until `ended` turns true; then takes what
/// the pipe holds at that moment, without waiting for more.
fn drain<S>(
    mut stream: S,
    into: Arc<Mutex<Capture>>,
    mut ended: watch::Receiver<bool>,
) -> JoinHandle<()>
where
    S: AsyncRead + Unpin + Send + 'static + PipeFd,
{
    tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            tokio::select! {
                // The end first: a writer left outside the group that never stops writing
                // must not keep the reader from seeing it.
                biased;
                _ = ended.wait_for(|ended| *ended) => break,
                read = stream.read(&mut buf) => match read {
                    Ok(0) | Err(_) => return,
                    Ok(n) => lock(&into).push(&buf[..n]),
                },
            }
        }
        let mut taken = 0;
        while taken < AFTER_END_BYTES {
            match stream.read_now(&mut buf) {
                Ok(n) if n > 0 => {
                    lock(&into).push(&buf[..n]);
                    taken += n;
                }
                // Closed, empty for now (a writer left behind), or failed: done.
                _ => return,
            }
        }
    })
}

/// A pipe that can be read without waiting.
trait PipeFd {
    /// Reads what the pipe holds now; `Err(WouldBlock)` when it holds nothing.
    fn read_now(&mut self, buf: &mut [u8]) -> io::Result<usize>;
}

#[cfg(unix)]
impl<T: std::os::fd::AsFd> PipeFd for T {
    fn read_now(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use rustix::fs::{fcntl_getfl, fcntl_setfl, OFlags};
        // Tokio's pipes are non-blocking already; make sure of it, since a blocking read here
        // would wait for exactly the writer this read must not wait for.
        let fd = self.as_fd();
        if let Ok(flags) = fcntl_getfl(fd) {
            if !flags.contains(OFlags::NONBLOCK) {
                let _ = fcntl_setfl(fd, flags | OFlags::NONBLOCK);
            }
        }
        Ok(rustix::io::read(fd, buf)?)
    }
}

#[cfg(not(unix))]
impl<T> PipeFd for T {
    fn read_now(&mut self, _buf: &mut [u8]) -> io::Result<usize> {
        Ok(0)
    }
}

fn lock(capture: &Mutex<Capture>) -> std::sync::MutexGuard<'_, Capture> {
    // A reader that panicked left a capture that is still whole bytes: use it.
    capture
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn take(capture: &Mutex<Capture>) -> Capture {
    std::mem::take(&mut *lock(capture))
}

async fn complete(
    queue: &TaskQueue,
    claimed: &ClaimedTask,
    job: &Job,
    grace: &mut watch::Receiver<Option<Instant>>,
    result: Option<Value>,
    took: f64,
) -> Ending {
    let (task, attempt) = (claimed.task.id, claimed.lease.attempt_id);
    // Repeatable: when a try committed but its answer was lost with the connection, the next
    // one is answered as a repeat, and nothing is written twice.
    match with_retries(&job.outage, job.backoff.clone(), grace, || {
        queue.complete(attempt, result.clone())
    })
    .await
    {
        // A repeat is a retry of this same call whose first answer was lost after the commit.
        Ok(ready) => {
            tracing::info!(
                task = %task,
                attempt = %attempt,
                now_ready = ready.outcome.len(),
                already_recorded = ready.repeat,
                "completed in {took:.1} s"
            );
            Ending::Completed
        }
        // The queue refuses this result (over its size limit): the attempt failed.
        Err(QueueError::Validation(e)) => {
            let error =
                format!("the command exited with status 0, but its result was refused: {e}");
            fail(queue, claimed, job, grace, "failed", &error, took).await
        }
        Err(e) => lost_or_unreported(task, attempt, e, took),
    }
}

async fn fail(
    queue: &TaskQueue,
    claimed: &ClaimedTask,
    job: &Job,
    grace: &mut watch::Receiver<Option<Instant>>,
    what: &str,
    error: &str,
    took: f64,
) -> Ending {
    let (task, attempt) = (claimed.task.id, claimed.lease.attempt_id);
    let error = &fit_error(error);
    // The last line of stderr usually says why; the whole tail is in the task.
    let last_line = error.lines().last().unwrap_or_default();
    // Repeatable, as a completion is: the same error text is answered as a repeat.
    match with_retries(&job.outage, job.backoff.clone(), grace, || {
        queue.fail(attempt, error)
    })
    .await
    .map(|recorded| recorded.outcome)
    {
        Ok(FailOutcome::Retrying {
            retry_count,
            run_after,
        }) => {
            tracing::warn!(
                task = %task,
                attempt = %attempt,
                "{what} after {took:.1} s ({last_line}); retry {retry_count} from {}", abathur_core::timestamp::format(&run_after)
            );
            Ending::Failed
        }
        Ok(FailOutcome::Failed { cascaded }) => {
            tracing::warn!(
                task = %task,
                attempt = %attempt,
                failed_with_it = cascaded.len(),
                "{what} after {took:.1} s ({last_line}); no retries left"
            );
            Ending::Failed
        }
        Err(e) => lost_or_unreported(task, attempt, e, took),
    }
}

fn lost_or_unreported(task: Uuid, attempt: Uuid, e: QueueError, took: f64) -> Ending {
    match e {
        QueueError::LeaseLost { .. } | QueueError::Cancelled { .. } => {
            tracing::warn!(
                task = %task,
                attempt = %attempt,
                "finished after {took:.1} s, but the task is no longer this worker's ({e})"
            );
            Ending::Abandoned
        }
        e => unreported(task, &e),
    }
}

fn unreported(task: Uuid, e: &QueueError) -> Ending {
    tracing::error!(
        task = %task,
        error = %e,
        "cannot report how the task ended; it will be taken back when its lease expires"
    );
    Ending::Unreported
}

/// Gives the attempt's task back (`reason` recorded), trying again as [`with_retries`] does.
///
/// A release is not repeatable: when a try's answer was lost after it committed, the next one
/// finds the attempt ended and says `LeaseLost`. After such a try, `LeaseLost` means the task
/// is back in the queue, by this release or by a reaper: either way what a release is for.
async fn release(
    queue: &TaskQueue,
    attempt: Uuid,
    job: &Job,
    grace: &mut watch::Receiver<Option<Instant>>,
    reason: &str,
) -> Result<(), QueueError> {
    let mut tries = 0u32;
    let outcome = with_retries(&job.outage, job.backoff.clone(), grace, || {
        tries += 1;
        queue.release(attempt, reason)
    })
    .await;
    match outcome {
        Err(QueueError::LeaseLost { .. }) if tries > 1 => Ok(()),
        other => other,
    }
}

/// How many times a report is tried, at the least, when the database fails.
const MIN_TRIES: u32 = 3;

/// Runs a report to the queue (a completion, a failure, a release), trying again after the
/// pauses of `backoff` while the database fails: losing a finished result to a passing failure would cost a whole rerun.
///
/// A failure that passes ([`outage::transient`]: the database busy, no connection in time, the
/// server unreachable or restarting) is tried again with a [`Backoff`] for as long as the
/// attempt's lease could still be honoured. A lease past its expiry is honoured until a reaper
/// takes the task back, and no reaper can while the database fails; once it answers again, so
/// does the next try: the report goes through, or it is refused (`LeaseLost`) because the
/// task was taken back meanwhile. Only a stopping worker whose grace period is over gives up
/// sooner, after [`MIN_TRIES`]: its task is taken back when its lease expires.
///
/// Any other failure of the database is tried [`MIN_TRIES`] times. Whatever the failure, a
/// try may have committed before its answer was lost: completions and failures are
/// repeatable, and [`release`] reads a refusal after such a try as its own.
///
/// The outage is told by `outage`, once, however many tries fail.
async fn with_retries<T, F, Fut>(
    outage: &Outage,
    mut backoff: Backoff,
    grace: &mut watch::Receiver<Option<Instant>>,
    mut op: F,
) -> Result<T, QueueError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, QueueError>>,
{
    let mut tries = 0u32;
    // Set at the first failure, dropped with the answer.
    let mut waiting = None;
    loop {
        let outcome = op().await;
        tries += 1;
        outage.note(&outcome);
        let error = match outcome {
            Err(QueueError::Database(e)) => e,
            other => return other,
        };
        let passes = outage::passes(&error);
        waiting.get_or_insert_with(|| outage.report_waiting());
        if tries >= MIN_TRIES && !passes {
            return Err(QueueError::Database(error));
        }
        if !passes {
            tracing::warn!(error = %error, "the database failed; trying again");
        }
        let pause = outage.pause_report(backoff.pause());
        if tries < MIN_TRIES {
            pause.await;
        } else {
            tokio::select! {
                () = pause => {}
                () = grace_over(grace) => return Err(QueueError::Database(error)),
            }
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::os::unix::process::ExitStatusExt;

    use super::*;

    fn job(launcher: Launcher) -> Job {
        Job {
            worker: "w".into(),
            program: "./run-me".into(),
            args: Vec::new(),
            database: PathBuf::from("abathur.db"),
            lease: Duration::from_secs(60),
            launcher,
            outage: Outage::default(),
            backoff: Backoff::default(),
        }
    }

    fn exited(code: i32) -> ExitStatus {
        ExitStatus::from_raw(code << 8)
    }

    #[test]
    fn setpriv_failing_to_run_the_program_is_the_systems_own_error_for_it() {
        let job = job(Launcher::DeathSignal("/usr/bin/setpriv".into()));
        for (code, stderr, expected) in [
            (
                127,
                "setpriv: failed to execute ./run-me: No such file or directory\n",
                "No such file or directory (os error 2)",
            ),
            (
                126,
                "setpriv: failed to execute ./run-me: Permission denied\n",
                "Permission denied (os error 13)",
            ),
            // A reason in another language is kept as it was given.
            (
                126,
                "setpriv: failed to execute ./run-me: Permission refusée\n",
                "Permission refusée",
            ),
        ] {
            let error = exec_failure(&job, exited(code), stderr.as_bytes());
            assert_eq!(
                error.map(|e| e.to_string()).as_deref(),
                Some(expected),
                "{stderr}"
            );
        }
    }

    #[test]
    fn a_command_that_exits_127_on_its_own_is_not_taken_for_one_that_could_not_start() {
        let through = job(Launcher::DeathSignal("/usr/bin/setpriv".into()));
        let report = "setpriv: failed to execute ./run-me: No such file or directory\n";
        for (job, code, stderr) in [
            // Its own words.
            (&through, 127, "sh: 1: make: not found\n"),
            // More than the report.
            (&through, 127, &*format!("started\n{report}")),
            // Another program.
            (
                &through,
                127,
                "setpriv: failed to execute ./other: No such file or directory\n",
            ),
            // Another exit code.
            (&through, 1, report),
            // Not started through setpriv.
            (&job(Launcher::Direct), 127, report),
        ] {
            assert!(
                exec_failure(job, exited(code), stderr.as_bytes()).is_none(),
                "{code}: {stderr}"
            );
        }
    }

    mod retries {
        use std::cell::Cell;

        use abathur_core::error::DatabaseError;

        use super::super::*;

        /// A backoff quick enough that a long outage passes in moments.
        fn quick() -> Backoff {
            Backoff::new(Duration::from_millis(1), Duration::from_millis(4))
        }

        fn lost() -> QueueError {
            QueueError::Database(DatabaseError::Connection(
                "lost the connection to the PostgreSQL server".into(),
            ))
        }

        /// Answers with each of `answers` in turn, then with `Ok(())`.
        fn answers(
            answers: Vec<QueueError>,
        ) -> impl FnMut() -> std::future::Ready<Result<(), QueueError>> {
            let mut answers = answers.into_iter();
            move || std::future::ready(answers.next().map_or(Ok(()), Err))
        }

        #[tokio::test]
        async fn a_report_is_tried_until_the_database_answers_however_long_it_is_down() {
            let outage = Outage::default();
            let (_keep, mut grace) = watch::channel(None);
            let calls = Cell::new(0);
            let mut failing = answers(
                (0..40)
                    .map(|i| match i % 3 {
                        0 => lost(),
                        1 => QueueError::Database(DatabaseError::Timeout),
                        _ => QueueError::Database(DatabaseError::Busy),
                    })
                    .collect(),
            );
            let outcome = with_retries(&outage, quick(), &mut grace, || {
                calls.set(calls.get() + 1);
                failing()
            })
            .await;
            assert!(outcome.is_ok(), "{outcome:?}");
            assert_eq!(calls.get(), 41);
            // One outage, told once, and over.
            assert_eq!(outage.count(), 1);
            assert!(!outage.ongoing());
        }

        #[tokio::test]
        async fn an_answer_ends_the_tries_even_a_refusal() {
            let outage = Outage::default();
            let (_keep, mut grace) = watch::channel(None);
            let refused = QueueError::LeaseLost {
                attempt_id: Uuid::nil(),
                reason: "reaped".into(),
            };
            let calls = Cell::new(0);
            let mut failing = answers(vec![lost(), lost(), lost(), lost(), refused]);
            let outcome = with_retries(&outage, quick(), &mut grace, || {
                calls.set(calls.get() + 1);
                failing()
            })
            .await;
            assert!(
                matches!(outcome, Err(QueueError::LeaseLost { .. })),
                "{outcome:?}"
            );
            assert_eq!(calls.get(), 5);
            assert!(!outage.ongoing());
        }

        #[tokio::test]
        async fn other_database_failures_are_tried_three_times() {
            let outage = Outage::default();
            let (_keep, mut grace) = watch::channel(None);
            let calls = Cell::new(0);
            let mut failing = answers(
                (0..10)
                    .map(|_| QueueError::Database(DatabaseError::Io))
                    .collect(),
            );
            let outcome = with_retries(&outage, quick(), &mut grace, || {
                calls.set(calls.get() + 1);
                failing()
            })
            .await;
            assert!(
                matches!(outcome, Err(QueueError::Database(DatabaseError::Io))),
                "{outcome:?}"
            );
            assert_eq!(calls.get(), MIN_TRIES);
            // Not an outage: the database answered, with a failure of its own.
            assert_eq!(outage.count(), 0);
        }

        #[tokio::test]
        async fn a_worker_whose_grace_is_over_gives_up_after_three_tries() {
            let outage = Outage::default();
            let (_keep, mut grace) = watch::channel(Some(Instant::now()));
            let calls = Cell::new(0);
            let outcome = with_retries(&outage, quick(), &mut grace, || {
                calls.set(calls.get() + 1);
                std::future::ready(Err::<(), _>(lost()))
            })
            .await;
            assert!(outcome.is_err());
            assert_eq!(calls.get(), MIN_TRIES);
            assert!(outage.ongoing());
        }

        #[tokio::test]
        async fn a_grace_that_ends_during_an_outage_ends_the_tries() {
            let outage = Outage::default();
            let (end_grace, mut grace) = watch::channel(None);
            let calls = Cell::new(0);
            let outcome = with_retries(&outage, quick(), &mut grace, || {
                calls.set(calls.get() + 1);
                if calls.get() == 10 {
                    // The worker is told to stop, with no grace left.
                    end_grace.send_replace(Some(Instant::now()));
                }
                std::future::ready(Err::<(), _>(lost()))
            })
            .await;
            assert!(outcome.is_err());
            assert_eq!(calls.get(), 10);
        }
    }
}
