// graphile-worker on the no-op claim + complete workload of abathur's PostgreSQL benchmarks.
//
//   node bench.mjs DATABASE_URL JOBS CONCURRENCY [options]
//
// Throughput (the default): installs graphile-worker's schema on DATABASE_URL (its own
// migrations), adds JOBS no-op jobs in one `addJobs` call (graphile_worker.add_jobs), then
// runs one worker pool of CONCURRENCY workers until the database holds none of them, and
// prints one line of JSON:
//   {"jobs":N,"concurrency":C,"seconds":S,"jobs_per_second":R,...}
// The clock starts when the pool is created (its "pool:create" event, after the migrations
// and the jobs are in) and stops when every job has run and its completion is in the
// database (graphile-worker deletes a job when it completes, so: no job rows left).
//
// Latency (--latency): the pool starts idle, listening; JOBS times, one job is added with
// `addJob` and the time from `addJob` returning to the task function starting is taken
// (after JOBS/10 untimed jobs, 5 to 200). The pool is idle before every add (the previous job
// has completed and its worker found nothing more to do). Prints
//   {"mode":"latency","jobs":N,"concurrency":C,"p50_ms":..,"p99_ms":..,...}
//
// Options (graphile-worker's knobs; the defaults are graphile-worker's own):
//   --poll-interval MS         pollInterval (default 2000; new jobs arrive by LISTEN/NOTIFY)
//   --max-pool-size N          maxPoolSize (default: max(10, CONCURRENCY + 2), its advice)
//   --local-queue N            localQueue.size: fetch N jobs at once into a local queue
//                              (default -1: off, every worker fetches one job at a time)
//   --complete-batch-delay MS  completeJobBatchDelay: batch completions for MS ms (default -1:
//                              off, every job completes in its own statement)
//   --latency                  the enqueue-to-start mode above
//
// The database should be fresh: the run refuses to start if jobs are already queued.

import { performance } from "node:perf_hooks";
import { EventEmitter } from "node:events";
import { readFileSync } from "node:fs";
import { Logger, makeWorkerUtils, run, runMigrations } from "graphile-worker";

// The installed version (package-lock.json pins it); the package does not export its manifest.
const VERSION = JSON.parse(
  readFileSync(new URL("./node_modules/graphile-worker/package.json", import.meta.url)),
).version;

function usage(message) {
  if (message) console.error(`peer-graphile: ${message}`);
  console.error(
    "usage: node bench.mjs DATABASE_URL JOBS CONCURRENCY [--poll-interval MS] [--max-pool-size N] [--local-queue N] [--complete-batch-delay MS] [--latency]",
  );
  process.exit(2);
}

function parseArgs(argv) {
  const positional = [];
  const options = {
    pollInterval: 2000,
    maxPoolSize: null,
    localQueue: -1,
    completeBatchDelay: -1,
    latency: false,
  };
  const number = (name, value) => {
    const n = Number(value);
    if (value === undefined || !Number.isInteger(n)) usage(`${name} needs a whole number`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    switch (arg) {
      case "--poll-interval":
        options.pollInterval = number(arg, argv[++i]);
        break;
      case "--max-pool-size":
        options.maxPoolSize = number(arg, argv[++i]);
        break;
      case "--local-queue":
        options.localQueue = number(arg, argv[++i]);
        break;
      case "--complete-batch-delay":
        options.completeBatchDelay = number(arg, argv[++i]);
        break;
      case "--latency":
        options.latency = true;
        break;
      default:
        if (arg.startsWith("--")) usage(`unknown option ${arg}`);
        positional.push(arg);
    }
  }
  if (positional.length !== 3) usage();
  const [connectionString, jobsArg, concurrencyArg] = positional;
  const jobs = number("JOBS", jobsArg);
  const concurrency = number("CONCURRENCY", concurrencyArg);
  if (jobs < 1 || concurrency < 1) usage("JOBS and CONCURRENCY must be at least 1");
  options.maxPoolSize ??= Math.max(10, concurrency + 2);
  return { connectionString, jobs, concurrency, options };
}

// Only warnings and errors: the log must not cost the workers anything.
const logger = new Logger(() => (level, message) => {
  if (level === "error" || level === "warning") console.error(`graphile-worker ${level}: ${message}`);
});

function runnerOptions(connectionString, concurrency, options, taskList, events) {
  const worker = {};
  if (options.localQueue > 0) worker.localQueue = { size: options.localQueue };
  if (options.completeBatchDelay >= 0) worker.completeJobBatchDelay = options.completeBatchDelay;
  return {
    connectionString,
    concurrency,
    maxPoolSize: options.maxPoolSize,
    pollInterval: options.pollInterval,
    noHandleSignals: true,
    logger,
    taskList,
    events,
    preset: { worker },
  };
}

async function queued(utils) {
  return utils.withPgClient(async (client) => {
    const { rows } = await client.query(
      "SELECT count(*)::int AS n FROM graphile_worker._private_jobs",
    );
    return rows[0].n;
  });
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function percentile(sorted, p) {
  // Nearest rank.
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1];
}

async function throughput(utils, { connectionString, jobs, concurrency, options }) {
  const specs = Array.from({ length: jobs }, (_, i) => ({
    identifier: "noop",
    payload: { i },
  }));
  await utils.addJobs(specs);
  if ((await queued(utils)) !== jobs) throw new Error("the jobs were not all added");

  let handled = 0;
  let allHandled;
  const handledAll = new Promise((resolve) => (allHandled = resolve));
  const taskList = {
    noop: async () => {
      if (++handled === jobs) allHandled();
    },
  };
  const events = new EventEmitter();
  let started = null;
  events.once("pool:create", () => {
    started = performance.now();
  });
  const called = performance.now();
  const runner = await run(runnerOptions(connectionString, concurrency, options, taskList, events));
  await handledAll;
  // Completions may be batched: done means none of the jobs is left in the database.
  while ((await queued(utils)) > 0) await sleep(1);
  const seconds = (performance.now() - (started ?? called)) / 1000;
  await runner.stop();
  return {
    jobs,
    concurrency,
    seconds: Number(seconds.toFixed(6)),
    jobs_per_second: Number((jobs / seconds).toFixed(1)),
    handled,
    clock_from: started === null ? "run" : "pool:create",
    peer: "graphile-worker",
    version: VERSION,
    poll_interval_ms: options.pollInterval,
    max_pool_size: options.maxPoolSize,
    local_queue: options.localQueue,
    complete_batch_delay_ms: options.completeBatchDelay,
  };
}

async function latency(utils, { connectionString, jobs, concurrency, options }) {
  const warmUp = Math.min(200, Math.max(5, Math.floor(jobs / 10)));
  // The job in flight: its start is taken first thing in the task function.
  let current = null;
  // Idle: a worker has found the queue empty since the last job started.
  let idle = false;
  let idleWaiter = null;
  const becameIdle = () => {
    idle = true;
    idleWaiter?.();
  };
  const taskList = {
    noop: async (payload) => {
      const at = performance.now();
      idle = false;
      if (current && current.i === payload.i) current.started(at);
    },
  };
  const events = new EventEmitter();
  events.on("worker:getJob:empty", becameIdle);
  // With a local queue, the workers take jobs from it and it alone asks the database: it is
  // idle when it holds no job and no fetch is under way (it then waits for a notification).
  let localQueue = null;
  events.on("localQueue:init", ({ localQueue: q }) => (localQueue = q));
  const localQueueIdle = () =>
    localQueue.mode === "POLLING" && !localQueue.fetchInProgress && localQueue.jobQueue.length === 0;
  const listening = new Promise((resolve) => events.once("pool:listen:success", resolve));
  const runner = await run(runnerOptions(connectionString, concurrency, options, taskList, events));
  await listening;

  const fromReturn = [];
  const fromCall = [];
  for (let i = 0; i < warmUp + jobs; i++) {
    const startedAt = new Promise((resolve) => (current = { i, started: resolve }));
    const t0 = performance.now();
    await utils.addJob("noop", { i });
    const t1 = performance.now();
    const at = await startedAt;
    if (i >= warmUp) {
      fromReturn.push(at - t1);
      fromCall.push(at - t0);
    }
    // Before the next add: the job's completion is in the database and the pool idle again
    // (at most a second's wait for that, should no "empty" event come).
    while ((await queued(utils)) > 0) await sleep(1);
    if (localQueue) {
      for (let waited = 0; !localQueueIdle() && waited < 1000; waited++) await sleep(1);
    } else if (!idle) {
      await Promise.race([new Promise((resolve) => (idleWaiter = resolve)), sleep(1000)]);
      idleWaiter = null;
    }
  }
  await runner.stop();
  const ms = (x) => Number(x.toFixed(3));
  const summary = (samples) => {
    const sorted = [...samples].sort((a, b) => a - b);
    return {
      p50: ms(percentile(sorted, 50)),
      p99: ms(percentile(sorted, 99)),
      mean: ms(sorted.reduce((a, b) => a + b, 0) / sorted.length),
      max: ms(sorted[sorted.length - 1]),
    };
  };
  const r = summary(fromReturn);
  const c = summary(fromCall);
  return {
    mode: "latency",
    jobs,
    concurrency,
    p50_ms: r.p50,
    p99_ms: r.p99,
    mean_ms: r.mean,
    max_ms: r.max,
    from_call_p50_ms: c.p50,
    from_call_p99_ms: c.p99,
    warm_up: warmUp,
    peer: "graphile-worker",
    version: VERSION,
    poll_interval_ms: options.pollInterval,
    max_pool_size: options.maxPoolSize,
    local_queue: options.localQueue,
    complete_batch_delay_ms: options.completeBatchDelay,
  };
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const { connectionString } = args;
  await runMigrations({ connectionString, logger });
  const utils = await makeWorkerUtils({ connectionString, logger });
  try {
    if ((await queued(utils)) !== 0) {
      throw new Error("the database already holds jobs: give the run a fresh database");
    }
    const result = args.options.latency ? await latency(utils, args) : await throughput(utils, args);
    console.log(JSON.stringify(result));
  } finally {
    await utils.release();
  }
}

main().catch((e) => {
  console.error(`peer-graphile: ${e?.stack ?? e}`);
  process.exit(1);
});
