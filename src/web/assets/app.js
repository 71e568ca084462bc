// The abathur dashboard: a page per hash route, drawn from the JSON API, read again whenever
// the server's event stream says the queue may have changed (unless paused). Text from the
// database is only ever set as text, never parsed as HTML.
"use strict";

const API = "/api/v1";
const STATUSES = ["pending", "blocked", "ready", "running", "completed", "failed", "cancelled"];
const SOURCES = ["human", "agent_requirements", "agent_planner", "agent_implementation"];

let paused = false;
let readOnly = false;

// ---- helpers -------------------------------------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const SVG_NS = "http://www.w3.org/2000/svg";

function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value !== undefined && value !== null) node.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

class ApiError extends Error {
  constructor(status, kind, message) {
    super(message);
    this.status = status;
    this.kind = kind;
  }
}

// What the draw under way read, so that a live update that would draw the same page again
// leaves the page alone; and the means to abandon its reads when another draw starts.
let reading = null;

// A read for the page being drawn: abandoned when another drawing starts, and remembered, so
// that a live update can tell whether anything changed.
function read(path) {
  const draw = reading;
  return api(path, draw ? { signal: draw.abort.signal, draw } : undefined);
}

async function api(path, options) {
  const response = await fetch(API + path, {
    credentials: "same-origin",
    headers: { Accept: "application/json", ...(options && options.headers) },
    signal: options && options.signal,
    method: options && options.method,
    body: options && options.body,
  });
  if (response.status === 401) {
    location.href = "/login";
    throw new ApiError(401, "unauthorized", "sign in first");
  }
  const text = await response.text();
  let body = null;
  try {
    body = JSON.parse(text);
  } catch (_) {
    body = null;
  }
  if (options && options.draw) {
    // The time an answer was read is not news: leave it out of what is compared.
    options.draw.seen.push(path, body && typeof body === "object" ? JSON.stringify({ ...body, at: undefined }) : text);
  }
  if (!response.ok) {
    const error = body && body.error ? body.error : { kind: "internal", message: response.statusText };
    throw new ApiError(response.status, error.kind, error.message);
  }
  return body;
}

function when(text) {
  if (!text) return "–";
  const date = new Date(text);
  return el("time", { datetime: text, title: text }, date.toLocaleString());
}

function statusBadge(status) {
  return el("span", { class: `status status-${status}` }, status);
}

function taskLink(task) {
  return el("a", { href: `#/task/${task.id}` }, task.summary);
}

function shortId(id) {
  return el("code", { title: id }, id.slice(0, 8));
}

function problem(error) {
  return el("p", { class: "error", role: "alert" }, `${error.message}`);
}

function json(value) {
  if (value === null || value === undefined) return el("span", { class: "muted" }, "none");
  return el("details", {}, el("summary", {}, "show JSON"), el("pre", {}, JSON.stringify(value, null, 2)));
}

// ---- pages ---------------------------------------------------------------------------------

async function overviewPage() {
  const data = await read("/overview");
  readOnly = data.read_only;
  const counts = el("dl", { class: "counts" },
    STATUSES.map((status) => el("div", { class: "count" },
      el("dt", {}, el("a", { href: `#/tasks?status=${status}` }, status)),
      el("dd", {}, String(data.counts[status])))));
  const oldest = data.oldest_ready
    ? el("p", {}, "Oldest ready task: ", taskLink(data.oldest_ready))
    : el("p", { class: "muted" }, "No task is waiting to be claimed.");
  const running = data.running.length === 0
    ? el("p", { class: "muted" }, "Nothing is running.")
    : el("table", {},
        el("caption", {}, "Running attempts, the soonest lease to expire first"),
        el("thead", {}, el("tr", {}, ["Task", "Worker", "Started", "Lease expires"].map((h) => el("th", { scope: "col" }, h)))),
        el("tbody", {}, data.running.map((r) => el("tr", {},
          el("td", {}, taskLink({ id: r.task_id, summary: r.summary })),
          el("td", {}, r.worker_id),
          el("td", {}, when(r.started_at)),
          el("td", {}, when(r.lease_expires_at))))));
  return [
    el("h1", {}, "Overview"),
    throughputChart(data.finished_per_minute),
    el("section", { "aria-labelledby": "counts-title" }, el("h2", { id: "counts-title" }, "Tasks per status"), counts),
    el("section", { "aria-labelledby": "queue-title" }, el("h2", { id: "queue-title" }, "Queue"), oldest,
      data.expired_leases > 0 ? el("p", { class: "warning" }, `${data.expired_leases} leases have expired; the next reap takes those tasks back.`) : null),
    el("section", { "aria-labelledby": "running-title" }, el("h2", { id: "running-title" }, "Running"), running),
    el("p", { class: "muted" }, "As of ", when(data.at)),
  ];
}

// Tasks finished per minute over the last hour: completed and failed as bars side by side,
// with the numbers in a table for those who do not see the chart.
function throughputChart(minutes) {
  const width = 720;
  const height = 160;
  const pad = { left: 40, bottom: 20, top: 10 };
  const top = Math.max(1, ...minutes.map((m) => Math.max(m.completed, m.failed)));
  const step = (width - pad.left) / minutes.length;
  const y = (n) => pad.top + (height - pad.top - pad.bottom) * (1 - n / top);
  const bars = minutes.flatMap((m, i) => {
    const x = pad.left + i * step;
    const bar = (n, dx, cls) => n === 0 ? null : svg("rect", {
      x: x + dx, y: y(n), width: Math.max(1, step / 2 - 1), height: y(0) - y(n), class: cls,
    }, svg("title", {}, `${new Date(m.minute).toLocaleTimeString()}: ${n} ${cls === "bar-completed" ? "completed" : "failed"}`));
    return [bar(m.completed, 0, "bar-completed"), bar(m.failed, step / 2, "bar-failed")];
  });
  const total = (key) => minutes.reduce((sum, m) => sum + m[key], 0);
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart", role: "img",
    "aria-label": `Tasks finished per minute over the last hour: ${total("completed")} completed, ${total("failed")} failed` },
    svg("line", { x1: pad.left, x2: width, y1: y(0), y2: y(0), class: "axis" }),
    svg("text", { x: pad.left - 6, y: y(top) + 4, class: "tick", "text-anchor": "end" }, String(top)),
    svg("text", { x: pad.left - 6, y: y(0), class: "tick", "text-anchor": "end" }, "0"),
    svg("text", { x: pad.left, y: height - 4, class: "tick" }, "an hour ago"),
    svg("text", { x: width, y: height - 4, class: "tick", "text-anchor": "end" }, "now"),
    bars);
  const busy = minutes.filter((m) => m.completed || m.failed || m.cancelled);
  return el("section", { "aria-labelledby": "throughput-title" },
    el("h2", { id: "throughput-title" }, "Finished per minute, last hour"),
    el("p", { class: "muted" }, `${total("completed")} completed, ${total("failed")} failed, ${total("cancelled")} cancelled. `,
      el("span", { class: "key key-completed" }, "completed"), " ", el("span", { class: "key key-failed" }, "failed")),
    chart,
    el("details", {}, el("summary", {}, "as a table"),
      busy.length === 0 ? el("p", { class: "muted" }, "Nothing finished in the last hour.") :
        el("table", {}, el("thead", {}, el("tr", {}, ["Minute", "Completed", "Failed", "Cancelled"].map((h) => el("th", { scope: "col" }, h)))),
          el("tbody", {}, busy.map((m) => el("tr", {}, el("td", {}, when(m.minute)),
            el("td", { class: "num" }, String(m.completed)), el("td", { class: "num" }, String(m.failed)), el("td", { class: "num" }, String(m.cancelled))))))));
}

function filterForm(params) {
  const field = (name, label, input) => el("div", { class: "field" }, el("label", { for: `f-${name}` }, label), input);
  const select = (name, values) => el("select", { id: `f-${name}`, name },
    el("option", { value: "" }, "any"),
    values.map((v) => el("option", { value: v, selected: params.get(name) === v }, v)));
  const text = (name, type) => el("input", { id: `f-${name}`, name, type: type || "text", value: params.get(name) || "" });
  const priority = (name) => el("input", { id: `f-${name}`, name, type: "number", min: "0", max: "10", value: params.get(name) || "" });
  return el("form", {
    class: "filters",
    onsubmit: (event) => {
      event.preventDefault();
      const query = new URLSearchParams();
      for (const [key, value] of new FormData(event.target)) if (value !== "") query.set(key, value);
      location.hash = `#/tasks?${query}`;
    },
  },
  field("q", "Summary contains", text("q", "search")),
  field("order", "Order", el("select", { id: "f-order", name: "order" },
    [["newest", "newest first"], ["oldest", "oldest first"], ["priority", "priority"]].map(([v, label]) =>
      el("option", { value: v, selected: (params.get("order") || "newest") === v }, label)))),
  field("status", "Status", select("status", STATUSES)),
  field("agent_type", "Agent type", text("agent_type")),
  field("session_id", "Session", text("session_id")),
  field("branch", "Branch", text("branch")),
  field("source", "Source", select("source", SOURCES)),
  field("min_priority", "Priority from", priority("min_priority")),
  field("max_priority", "to", priority("max_priority")),
  el("button", { type: "submit" }, "Filter"));
}

async function tasksPage(params) {
  const query = new URLSearchParams(params);
  const data = await read(`/tasks?${query}`);
  const pageLink = (after, label) => {
    const next = new URLSearchParams(params);
    if (after) next.set("after", after); else next.delete("after");
    return el("a", { href: `#/tasks?${next}` }, label);
  };
  const order = params.get("order") || "newest";
  const tick = (t) => el("input", {
    type: "checkbox", "aria-label": `Select “${t.summary}”`, checked: selected.has(t.id),
    onchange: (event) => { if (event.target.checked) selected.add(t.id); else selected.delete(t.id); },
  });
  const rows = data.tasks.map((t) => el("tr", {},
    el("td", {}, tick(t)),
    el("td", {}, shortId(t.id)),
    el("td", {}, statusBadge(t.status)),
    el("td", { class: "num" }, String(t.priority)),
    el("td", {}, t.agent_type),
    el("td", {}, taskLink(t)),
    el("td", {}, when(t.submitted_at))));
  const captions = {
    newest: "The latest submitted first",
    oldest: "The earliest submitted first",
    priority: "Highest calculated priority first, then the earliest submitted",
  };
  const filter = {};
  for (const key of ["status", "agent_type", "session_id", "branch", "source", "q"]) if (params.get(key)) filter[key] = params.get(key);
  for (const key of ["min_priority", "max_priority"]) if (params.get(key)) filter[key] = Number(params.get(key));
  const chosen = () => ({ ids: [...selected] });
  const needSelection = (then) => () => {
    if (selected.size === 0) {
      listNotice = { error: true, text: "Select tasks first, with the boxes in the first column." };
      render();
      return;
    }
    then();
  };
  const bar = readOnly ? null : el("div", { class: "actions", role: "group", "aria-label": "Act on several tasks" },
    el("button", { type: "button", class: "danger", onclick: needSelection(() => bulk("cancel", chosen())) }, "Cancel selected…"),
    el("button", { type: "button", onclick: needSelection(() => bulk("retry", chosen())) }, "Retry selected…"),
    el("button", { type: "button", class: "danger", onclick: () => bulk("cancel", { filter }) }, "Cancel all matching…"),
    el("button", { type: "button", onclick: () => bulk("retry", { filter }) }, "Retry all matching…"));
  const shown = listNotice;
  return [
    el("h1", {}, "Tasks"),
    filterForm(params),
    bar,
    shown ? el("p", shown.error ? { class: "error", role: "alert" } : { class: "done", role: "status" }, shown.text) : null,
    data.tasks.length === 0 ? el("p", { class: "muted" }, "No task matches.") :
      el("table", { class: "tasks" },
        el("caption", {}, captions[order] || captions.newest),
        el("thead", {}, el("tr", {}, el("th", { scope: "col" }, el("span", { class: "visually-hidden" }, "Selected")),
          ["Id", "Status", "Priority", "Agent type", "Summary", "Submitted"].map((h) => el("th", { scope: "col" }, h)))),
        el("tbody", {}, rows)),
    el("nav", { class: "pages", "aria-label": "Pages of tasks" },
      params.get("after") ? pageLink(null, "← first page") : null,
      data.next ? pageLink(data.next, "next page →") : null),
  ];
}

function related(title, tasks, total) {
  const id = `rel-${title.replace(/\W+/g, "-").toLowerCase()}`;
  return el("section", { "aria-labelledby": id },
    el("h2", { id }, title, total > tasks.length ? ` (${tasks.length} of ${total})` : ""),
    tasks.length === 0 ? el("p", { class: "muted" }, "none") :
      el("ul", { class: "related" }, tasks.map((t) => el("li", {}, statusBadge(t.status), " ", taskLink(t)))));
}

async function confirmAction(task, action) {
  const reach = await api(`/tasks/${task.id}/reach?action=${action}`);
  if (!reach.allowed) {
    throw new ApiError(409, "conflict", reach.reason);
  }
  const more = `${reach.at_least ? "at least " : ""}${reach.others}`;
  const one = reach.others === 1 && !reach.at_least;
  const text = action === "cancel"
    ? (reach.others === 0
      ? "This cancels 1 task; nothing unfinished waits for it or is its child."
      : `This cancels 1 task and ${more} unfinished ${one ? "task that waits for it or is its child" : "tasks that wait for it or are its children"}, directly or not.`)
    : (reach.others === 0
      ? "This retries 1 task."
      : `This retries 1 task and puts ${more} failed ${one ? "task that depends on it" : "tasks that depend on it"} back to waiting.`);
  return ask(action === "cancel" ? `Cancel “${task.summary}”?` : `Retry “${task.summary}”?`, text,
    action === "cancel" ? "Cancel them" : "Retry");
}

// Shows the confirmation dialog; true when the user goes ahead.
function ask(title, text, yes) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-title").textContent = title;
  document.getElementById("confirm-text").textContent = text;
  document.getElementById("confirm-yes").textContent = yes;
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "go"), { once: true });
    dialog.returnValue = "";
    dialog.showModal();
  });
}

function plural(n, one, many) {
  return `${n} ${n === 1 ? one : many}`;
}

// The tasks ticked on the tasks page, kept across live redraws of that page.
const selected = new Set();
let listNotice = null;

async function bulk(action, target) {
  const body = JSON.stringify({ action, ...target });
  const post = (path) => api(path, { method: "POST", body, headers: { "Content-Type": "application/json" } });
  try {
    const reach = await post("/actions/preview");
    if (reach.tasks === 0) {
      throw new ApiError(409, "conflict", action === "cancel"
        ? "None of these tasks is unfinished: there is nothing to cancel."
        : "None of these tasks has failed: there is nothing to retry.");
    }
    const more = `${reach.at_least ? "at least " : ""}${reach.others}`;
    const skipped = reach.skipped ? ` ${plural(reach.skipped, "other task is", "other tasks are")} left alone: ${action === "cancel" ? "already finished" : "not failed"}.` : "";
    const text = action === "cancel"
      ? `This cancels ${plural(reach.tasks, "task", "tasks")} and ${more} unfinished tasks that wait for them or are their children, directly or not.${skipped}`
      : `This retries ${plural(reach.tasks, "task", "tasks")} and puts ${more} failed tasks that depend on them back to waiting.${skipped}`;
    const title = action === "cancel" ? "Cancel these tasks?" : "Retry these tasks?";
    if (!(await ask(title, text, action === "cancel" ? "Cancel them" : "Retry them"))) return;
    const result = await api("/actions", { method: "POST", body, headers: { "Content-Type": "application/json" } });
    selected.clear();
    listNotice = {
      error: Boolean(result.stopped_by),
      text: `${action === "cancel" ? "Cancelled" : "Retried or put back"} ${plural(result.changed.length, "task", "tasks")}` +
        (result.skipped.length ? `; left ${result.skipped.length} alone` : "") +
        (result.stopped_by ? `; stopped: ${result.stopped_by}` : "") + ".",
    };
  } catch (error) {
    listNotice = { error: true, text: error.message };
  }
  await render();
}

// What the last action on a task did, shown on that task's page until the user goes elsewhere.
let notice = null;

function noticeFor(id) {
  const box = el("div", { class: "outcome" });
  if (notice && notice.task === id) {
    box.append(el("p", notice.error ? { class: "error", role: "alert" } : { class: "done", role: "status" }, notice.text));
  }
  return box;
}

async function act(task, action) {
  try {
    if (!(await confirmAction(task, action))) return;
    const result = await api(`/tasks/${task.id}/${action}`, { method: "POST" });
    const n = result.changed.length;
    notice = {
      task: task.id,
      error: false,
      text: action === "cancel"
        ? `Cancelled ${n} task${n === 1 ? "" : "s"}.`
        : `Retried; ${n} dependent task${n === 1 ? "" : "s"} went back to waiting.`,
    };
  } catch (error) {
    notice = { task: task.id, error: true, text: error.message };
  }
  await render();
}

async function taskPage(id) {
  const data = await read(`/tasks/${encodeURIComponent(id)}`);
  const t = data.task;
  const actions = readOnly ? null : el("div", { class: "actions" },
    ["ready", "blocked", "pending", "running"].includes(t.status)
      ? el("button", { type: "button", class: "danger", onclick: () => act(t, "cancel") }, "Cancel…") : null,
    t.status === "failed" ? el("button", { type: "button", onclick: () => act(t, "retry") }, "Retry…") : null);
  const fields = [
    ["Id", el("code", {}, t.id)], ["Status", statusBadge(t.status)], ["Description", el("pre", { class: "text" }, t.description)],
    ["Agent type", t.agent_type], ["Priority", `${t.priority} (calculated ${t.calculated_priority.toFixed(3)})`],
    ["Source", t.source], ["Created by", t.created_by || "–"],
    ["Dependencies", `${t.dependency_type}, depth ${t.dependency_depth}`],
    ["Retries", `${t.retry_count} of ${t.max_retries}`], ["Timeout", `${t.max_execution_timeout_seconds} s`],
    ["Submitted", when(t.submitted_at)], ["Started", when(t.started_at)], ["Finished", when(t.completed_at)],
    ["Last updated", when(t.last_updated_at)], ["Deadline", when(t.deadline)],
    ["Estimated duration", t.estimated_duration_seconds === null ? "–" : `${t.estimated_duration_seconds} s`],
    ["Parent", t.parent_task_id ? el("a", { href: `#/task/${t.parent_task_id}` }, t.parent_task_id) : "–"],
    ["Session", t.session_id ? el("a", { href: `#/session/${t.session_id}` }, t.session_id) : "–"],
    ["Feature branch", t.feature_branch || "–"], ["Task branch", t.task_branch || "–"], ["Worktree", t.worktree_path || "–"],
    ["Error", t.error_message ? el("pre", { class: "text" }, t.error_message) : "–"],
    ["Input", json(t.input_data)], ["Result", json(t.result_data)],
  ];
  const history = el("ol", { class: "timeline" }, data.history.map((e) => el("li", {},
    when(e.at), " ", e.from ? statusBadge(e.from) : "submitted", " → ", statusBadge(e.to),
    " by ", el("strong", {}, e.actor),
    e.attempt_id ? [" (attempt ", shortId(e.attempt_id), ")"] : null,
    e.reason ? [": ", e.reason] : null)));
  return [
    el("h1", {}, t.summary),
    el("p", {}, el("a", { href: `#/dag?task=${t.id}` }, "See it in its DAG"),
      t.session_id ? [" · ", el("a", { href: `#/dag?session=${t.session_id}` }, "its session's DAG")] : null),
    actions, noticeFor(t.id),
    el("section", { "aria-labelledby": "fields-title" }, el("h2", { id: "fields-title" }, "Fields"),
      el("dl", { class: "fields" }, fields.map(([k, v]) => el("div", {}, el("dt", {}, k), el("dd", {}, v))))),
    el("section", { "aria-labelledby": "history-title" }, el("h2", { id: "history-title" }, "History"), history),
    related("Waits for", data.waits_for, data.waits_for.length),
    related("Needed by", data.needed_by, data.needed_by_total),
    related("Children", data.children, data.children_total),
  ];
}

// The DAG view: layers left to right, each task a box coloured by status and linked to its
// page; the critical path drawn heavier. The server lays the graph out (/api/v1/dag).
const BOX = { width: 190, height: 30, column: 240, row: 42, margin: 20 };

function cut(text, n) {
  return text.length > n ? `${text.slice(0, n - 1)}…` : text;
}

async function dagPage(params) {
  const data = await read(params.get("task")
    ? `/tasks/${encodeURIComponent(params.get("task"))}/dag`
    : `/sessions/${encodeURIComponent(params.get("session") || "")}/dag`);
  const at = new Map();
  let rows = 0;
  let layers = 0;
  for (const node of data.nodes) {
    at.set(node.id, {
      x: BOX.margin + node.layer * BOX.column,
      y: BOX.margin + node.position * BOX.row,
    });
    rows = Math.max(rows, node.position + 1);
    layers = Math.max(layers, node.layer + 1);
  }
  const width = BOX.margin * 2 + Math.max(0, layers - 1) * BOX.column + BOX.width;
  const height = BOX.margin * 2 + Math.max(0, rows - 1) * BOX.row + BOX.height;
  const edges = data.edges.map((e) => {
    const from = at.get(e.from);
    const to = at.get(e.to);
    const x1 = from.x + BOX.width;
    const y1 = from.y + BOX.height / 2;
    const x2 = to.x;
    const y2 = to.y + BOX.height / 2;
    const mid = (x1 + x2) / 2;
    return svg("path", {
      class: e.critical ? "edge critical" : "edge",
      d: `M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2},${y2}`,
    });
  });
  const nodes = data.nodes.map((n) => {
    const p = at.get(n.id);
    return svg("a", { href: `#/task/${n.id}`, class: "node", "aria-label": `${n.summary} (${n.status})` },
      svg("title", {}, `${n.summary} (${n.status})`),
      svg("rect", {
        x: p.x, y: p.y, width: BOX.width, height: BOX.height, rx: 6,
        class: `box node-${n.status}${n.critical ? " critical" : ""}`,
      }),
      svg("text", { x: p.x + 8, y: p.y + 19 }, cut(n.summary, 26)));
  });
  const graph = svg("svg", {
    width, height, viewBox: `0 0 ${width} ${height}`, role: "group",
    "aria-label": `Graph of ${data.nodes.length} tasks`,
  }, svg("g", { class: "edges" }, edges), svg("g", { class: "nodes" }, nodes));
  const byId = new Map(data.nodes.map((n) => [n.id, n]));
  const subject = params.get("task") ? byId.get(params.get("task")) : null;
  return [
    el("h1", {}, "DAG", subject ? `: ${subject.summary}` : params.get("session") ? " of a session" : ""),
    el("p", { class: "muted" },
      `${data.nodes.length} tasks, ${data.edges.length} dependencies. `,
      subject ? "Everything it waits for and everything that waits for it, directly or not. " : "",
      "The critical path, the chain that takes longest, is drawn heavier."),
    data.truncated ? el("p", { class: "warning" }, "The graph stops at 1,000 tasks; more exist.") : null,
    el("ul", { class: "legend", "aria-label": "Colours" },
      STATUSES.map((s) => el("li", {}, el("span", { class: `swatch node-${s}` }), s)),
      el("li", {}, el("span", { class: "swatch critical" }), "critical path")),
    el("div", { class: "graph", tabindex: "0", role: "region", "aria-label": "The graph; scroll to see all of it" }, graph),
    el("section", { "aria-labelledby": "path-title" },
      el("h2", { id: "path-title" }, "Critical path"),
      el("ol", { class: "path" }, data.critical_path.map((id) => {
        const n = byId.get(id);
        return el("li", {}, statusBadge(n.status), " ", taskLink(n));
      }))),
  ];
}

async function agentsPage() {
  const data = await read("/agents");
  const minutes = Math.round(data.stale_after_seconds / 60);
  const rows = data.agents.map((a) => el("tr", { class: a.stale ? "stale" : null },
    el("td", {}, shortId(a.id)),
    el("td", {}, a.agent_type),
    el("td", {}, a.status, a.stale ? el("strong", { class: "warning" }, " · stale") : null),
    el("td", {}, a.current_task_id ? el("a", { href: `#/task/${a.current_task_id}` }, shortId(a.current_task_id)) : "–"),
    el("td", {}, when(a.heartbeat_at)),
    el("td", { class: "num" }, `${a.cpu_usage_percent.toFixed(1)} %`),
    el("td", { class: "num" }, `${(a.memory_usage_bytes / 1048576).toFixed(1)} MiB`)));
  return [
    el("h1", {}, "Agents"),
    el("p", { class: "muted" }, `An agent is stale when it is not terminated and has sent no heartbeat for ${minutes} minutes.`),
    data.agents.length === 0 ? el("p", { class: "muted" }, "No agent is registered.") :
      el("table", {},
        el("caption", {}, `${data.agents.length} agents, ${data.agents.filter((a) => a.stale).length} stale`),
        el("thead", {}, el("tr", {}, ["Id", "Type", "Status", "Task", "Last heartbeat", "CPU", "Memory"].map((h) => el("th", { scope: "col" }, h)))),
        el("tbody", {}, rows)),
  ];
}

// ---- memory and sessions -----------------------------------------------------------------

async function memoryPage(params) {
  const query = new URLSearchParams();
  for (const key of ["prefix", "memory_type"]) if (params.get(key)) query.set(key, params.get(key));
  const data = await read(`/memories?${query}`);
  const form = el("form", {
    class: "filters",
    onsubmit: (event) => {
      event.preventDefault();
      const next = new URLSearchParams();
      for (const [key, value] of new FormData(event.target)) if (value !== "") next.set(key, value);
      location.hash = `#/memory?${next}`;
    },
  },
  el("div", { class: "field" }, el("label", { for: "m-prefix" }, "Namespace starts with"),
    el("input", { id: "m-prefix", name: "prefix", type: "search", value: params.get("prefix") || "" })),
  el("div", { class: "field" }, el("label", { for: "m-type" }, "Type"),
    el("select", { id: "m-type", name: "memory_type" }, el("option", { value: "" }, "any"),
      ["semantic", "episodic", "procedural"].map((t) => el("option", { value: t, selected: params.get("memory_type") === t }, t)))),
  el("button", { type: "submit" }, "Search"));
  const namespaces = new Map();
  for (const m of data.memories) {
    if (!namespaces.has(m.namespace)) namespaces.set(m.namespace, []);
    namespaces.get(m.namespace).push(m);
  }
  const keyLink = (m) => el("a", { href: `#/memory-key?${new URLSearchParams({ namespace: m.namespace, key: m.key })}` }, m.key);
  return [
    el("h1", {}, "Memory"),
    form,
    el("p", { class: "muted" }, `${data.total} live keys of every type under this prefix; ${data.memories.length} shown${params.get("memory_type") ? ` (${params.get("memory_type")})` : ""}, by namespace and key.`),
    [...namespaces.entries()].map(([namespace, memories]) => el("section", { "aria-label": `Namespace ${namespace}` },
      el("h2", {}, el("a", { href: `#/memory?${new URLSearchParams({ prefix: namespace })}` }, namespace)),
      el("table", {},
        el("thead", {}, el("tr", {}, ["Key", "Type", "Version", "Updated", "By"].map((h) => el("th", { scope: "col" }, h)))),
        el("tbody", {}, memories.map((m) => el("tr", {},
          el("td", {}, keyLink(m)), el("td", {}, m.memory_type), el("td", { class: "num" }, String(m.version)),
          el("td", {}, when(m.updated_at)), el("td", {}, m.updated_by))))))),
  ];
}

// The lines of `after` against those of `before`: kept, added (+) and removed (-), by their
// longest common run. Values past 2,000 lines are compared as wholes.
function lineDiff(before, after) {
  const a = before.split("\n");
  const b = after.split("\n");
  if (a.length > 2000 || b.length > 2000) {
    return [...a.map((l) => ["-", l]), ...b.map((l) => ["+", l])];
  }
  const common = Array.from({ length: a.length + 1 }, () => new Uint16Array(b.length + 1));
  for (let i = a.length - 1; i >= 0; i--) {
    for (let j = b.length - 1; j >= 0; j--) {
      common[i][j] = a[i] === b[j] ? common[i + 1][j + 1] + 1 : Math.max(common[i + 1][j], common[i][j + 1]);
    }
  }
  const out = [];
  let i = 0;
  let j = 0;
  while (i < a.length && j < b.length) {
    if (a[i] === b[j]) { out.push([" ", a[i]]); i++; j++; }
    else if (common[i + 1][j] >= common[i][j + 1]) { out.push(["-", a[i]]); i++; }
    else { out.push(["+", b[j]]); j++; }
  }
  while (i < a.length) out.push(["-", a[i++]]);
  while (j < b.length) out.push(["+", b[j++]]);
  return out;
}

async function memoryKeyPage(params) {
  const query = new URLSearchParams({ namespace: params.get("namespace") || "", key: params.get("key") || "" });
  const data = await read(`/memory?${query}`);
  const text = (m) => JSON.stringify(m.value, null, 2);
  const versions = data.versions.slice().reverse().map((m, index, list) => {
    const older = list[index + 1];
    const diff = older ? lineDiff(text(older), text(m)) : null;
    return el("section", { "aria-label": `Version ${m.version}` },
      el("h2", {}, `Version ${m.version}`, m.is_deleted ? " (deleted)" : ""),
      el("p", { class: "muted" }, `${m.memory_type}, by ${m.updated_by}, `, when(m.updated_at)),
      diff
        ? el("pre", { class: "diff", "aria-label": `What changed from version ${older.version}` },
            diff.map(([mark, line]) => el("span", { class: mark === "+" ? "added" : mark === "-" ? "removed" : "kept" }, `${mark} ${line}`)))
        : el("pre", {}, text(m)),
      m.metadata ? json(m.metadata) : null);
  });
  return [
    el("h1", {}, `${params.get("namespace")} / ${params.get("key")}`),
    el("p", {}, el("a", { href: `#/memory?${new URLSearchParams({ prefix: params.get("namespace") || "" })}` }, "← the namespace")),
    el("p", { class: "muted" }, `${data.versions.length} versions, the latest first; each shows what changed from the one before.`),
    versions,
  ];
}

async function sessionsPage() {
  return [
    el("h1", {}, "Sessions"),
    el("p", {}, "A session is reached from its tasks (their Session field), or by its id:"),
    el("form", {
      class: "filters",
      onsubmit: (event) => {
        event.preventDefault();
        const id = new FormData(event.target).get("id").trim();
        if (id) location.hash = `#/session/${encodeURIComponent(id)}`;
      },
    },
    el("div", { class: "field" }, el("label", { for: "s-id" }, "Session id"), el("input", { id: "s-id", name: "id", type: "text", required: true })),
    el("button", { type: "submit" }, "Open")),
  ];
}

async function sessionPage(id, params) {
  const offset = Number(params.get("offset") || 0);
  const data = await read(`/sessions/${encodeURIComponent(id)}?offset=${offset}`);
  const events = el("ol", { class: "timeline", start: String(offset + 1) }, data.events.map((e) => el("li", {},
    when(e.timestamp), " ", el("strong", {}, e.event_type), " by ", e.actor, " ", json(e.content))));
  const next = new URLSearchParams({ offset: String(data.next_offset || 0) });
  return [
    el("h1", {}, `Session of ${data.app_name}`),
    el("p", {}, el("a", { href: `#/tasks?session_id=${data.id}` }, "Its tasks"), " · ", el("a", { href: `#/dag?session=${data.id}` }, "its DAG")),
    el("dl", { class: "fields" }, [
      ["Id", el("code", {}, data.id)], ["App", data.app_name], ["User", data.user_id], ["Project", data.project_id || "–"],
      ["Created", when(data.created_at)], ["Updated", when(data.updated_at)],
    ].map(([k, v]) => el("div", {}, el("dt", {}, k), el("dd", {}, v)))),
    el("section", { "aria-labelledby": "state-title" }, el("h2", { id: "state-title" }, "State"), el("pre", {}, JSON.stringify(data.state, null, 2))),
    el("section", { "aria-labelledby": "events-title" }, el("h2", { id: "events-title" }, "Events"),
      data.events.length === 0 ? el("p", { class: "muted" }, "No events.") : events,
      data.next_offset !== null ? el("a", { href: `#/session/${data.id}?${next}` }, "next events →") : null),
  ];
}

// ---- routing and live updates --------------------------------------------------------------

function route() {
  const hash = location.hash.replace(/^#/, "") || "/";
  const [path, query] = hash.split("?");
  const params = new URLSearchParams(query || "");
  if (path.startsWith("/task/")) return { page: "tasks", draw: () => taskPage(path.slice(6)) };
  if (path === "/tasks") return { page: "tasks", draw: () => tasksPage(params) };
  if (path === "/dag") return { page: "tasks", draw: () => dagPage(params) };
  if (path === "/agents") return { page: "agents", draw: agentsPage };
  if (path === "/memory") return { page: "memory", draw: () => memoryPage(params) };
  if (path === "/memory-key") return { page: "memory", draw: () => memoryKeyPage(params) };
  if (path === "/sessions") return { page: "sessions", draw: sessionsPage };
  if (path.startsWith("/session/")) return { page: "sessions", draw: () => sessionPage(path.slice(9), params) };
  return { page: "overview", draw: overviewPage };
}

// Where the focus was, as something the next drawing of the page also has: an id, or a link's
// target, or a button's text.
function focusKey(node) {
  if (!node || node === document.body) return null;
  if (node.id) return { id: node.id };
  if (node.tagName === "A") return { href: node.getAttribute("href") };
  if (node.tagName === "BUTTON") return { button: node.textContent };
  return null;
}

function refocus(main, key) {
  if (!key) return;
  let target = null;
  if (key.id) target = document.getElementById(key.id);
  else if (key.href) target = [...main.querySelectorAll("a")].find((a) => a.getAttribute("href") === key.href);
  else if (key.button) target = [...main.querySelectorAll("button")].find((b) => b.textContent === key.button);
  if (target) target.focus({ preventScroll: true });
}

let lastSeen = null;

async function render(options) {
  const live = Boolean(options && options.live);
  const current = route();
  if (reading) reading.abort.abort();
  const draw = { abort: new AbortController(), seen: [location.hash] };
  reading = draw;
  for (const link of document.querySelectorAll("nav a[data-page]")) {
    if (link.dataset.page === current.page) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  let content;
  try {
    content = await current.draw();
  } catch (error) {
    if (draw.abort.signal.aborted) return;
    content = [el("h1", {}, "Something went wrong"), problem(error)];
  }
  if (reading !== draw) return;
  reading = null;
  const main = document.getElementById("main");
  const seen = JSON.stringify(draw.seen) + JSON.stringify(notice) + JSON.stringify(listNotice);
  // A live update that read what the page already shows changes nothing: focus, selection
  // and open sections stay as they are.
  if (live && seen === lastSeen) return;
  // Keep what the user is typing into the filter form.
  if (live && main.querySelector("form.filters :focus")) return;
  lastSeen = seen;
  const focused = main.contains(document.activeElement) ? focusKey(document.activeElement) : null;
  const open = [...main.querySelectorAll("details")].map((d) => d.open);
  main.replaceChildren(...[content].flat(Infinity).filter(Boolean));
  if (live) {
    main.querySelectorAll("details").forEach((d, i) => { if (open[i]) d.open = true; });
    refocus(main, focused);
  }
}

function live() {
  const state = document.getElementById("live-state");
  const toggle = document.getElementById("live-toggle");
  const source = new EventSource(`${API}/events`);
  source.addEventListener("open", () => { state.textContent = paused ? "paused" : "live"; });
  source.addEventListener("error", () => {
    state.textContent = "reconnecting";
    // After a restart the server may want a new sign-in: a read finds out, and goes there.
    api("/overview").catch(() => {});
  });
  source.addEventListener("change", () => {
    if (!paused && !document.getElementById("confirm").open) render({ live: true });
  });
  toggle.addEventListener("click", () => {
    paused = !paused;
    toggle.setAttribute("aria-pressed", String(paused));
    toggle.textContent = paused ? "Resume live updates" : "Pause live updates";
    state.textContent = paused ? "paused" : "live";
    if (!paused) render({ live: true });
  });
}

window.addEventListener("hashchange", () => {
  notice = null;
  listNotice = null;
  render();
});
document.addEventListener("DOMContentLoaded", async () => {
  try {
    readOnly = (await api("/overview")).read_only;
  } catch (_) {
    // The page shows the error when it draws.
  }
  if (readOnly) document.body.classList.add("read-only");
  await render();
  live();
});
