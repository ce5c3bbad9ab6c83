// Experiments in the dashboard: the list (last verdict, score sparkline), one experiment
// (its trend and runs, Run and Rehearse), a run page (verdict and score, the step
// graph, probe results on a time axis, JSON and Chaos Toolkit journal downloads), and a
// rehearsal page (#/rehearsal/ID: predicted targets, blast radius, recovery, verdict).
// It speaks only to /api/v1; what the identity may not do (GET /whoami) is not offered.
import * as access from "./access.js";
import { api, ApiError } from "./api.js";
import { el, when } from "./dom.js";

const SVG = "http://www.w3.org/2000/svg";
const RUN_TERMINAL = new Set(["completed", "aborted", "cancelled", "skipped"]);
const REHEARSAL_TERMINAL = new Set(["completed", "failed"]);

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value != null) node.setAttribute(key, String(value));
  }
  for (const child of children.flat()) {
    if (child == null) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function verdict(value) {
  return el("span", { class: `verdict ${value || "none"}` }, value || "no verdict");
}

function score(value) {
  return typeof value === "number" ? value.toFixed(2) : "—";
}

function runUrl(id) { return `#/experiment-run/${encodeURIComponent(id)}`; }
function experimentUrl(name) { return `#/experiments/${encodeURIComponent(name)}`; }
function rehearsalUrl(id) { return `#/rehearsal/${encodeURIComponent(id)}`; }

// May the identity run this experiment: jobs.submit in every namespace it touches (a
// document touching none is node-level: cluster.chaos)?
async function mayRun(item) {
  const namespaces = item.namespaces || [];
  if (namespaces.length) await access.ensure(namespaces);
  return access.mayIn("jobs.submit", namespaces);
}

// A small line of the scores over runs, oldest first (runs without a score are gaps).
export function sparkline(runs, width = 120, height = 28) {
  const points = runs.slice().reverse().map((run, index) => [index, run.score]);
  const box = svg("svg", { class: "sparkline", width, height, viewBox: `0 0 ${width} ${height}`,
    role: "img", "aria-label": `score over the last ${runs.length} runs` });
  const scored = points.filter(([, value]) => typeof value === "number");
  if (!scored.length) return box;
  const step = points.length > 1 ? (width - 4) / (points.length - 1) : 0;
  const y = (value) => 2 + (height - 4) * (1 - value / 100);
  const path = scored.map(([index, value], at) => `${at ? "L" : "M"}${2 + index * step},${y(value)}`).join(" ");
  box.append(svg("path", { d: path, class: "spark-line" }));
  const [lastIndex, lastValue] = scored[scored.length - 1];
  box.append(svg("circle", { cx: 2 + lastIndex * step, cy: y(lastValue), r: 2.5, class: "spark-dot" }));
  return box;
}

// Score over runs (a line, 0-100) with each run's verdict as a coloured mark below it.
export function trendChart(runs, width = 640, height = 160) {
  const ordered = runs.slice().reverse();
  const chart = svg("svg", { class: "trend", width, height, viewBox: `0 0 ${width} ${height}`,
    role: "img", "aria-label": `resilience score over ${ordered.length} runs` });
  const left = 34; const right = width - 8; const top = 8; const bottom = height - 28;
  for (const tick of [0, 50, 100]) {
    const y = bottom - (bottom - top) * tick / 100;
    chart.append(svg("line", { x1: left, x2: right, y1: y, y2: y, class: "grid-line" }),
      svg("text", { x: left - 6, y: y + 4, class: "axis", "text-anchor": "end" }, tick));
  }
  const step = ordered.length > 1 ? (right - left) / (ordered.length - 1) : 0;
  const x = (index) => (ordered.length > 1 ? left + index * step : (left + right) / 2);
  const scored = ordered.map((run, index) => [index, run]).filter(([, run]) => typeof run.score === "number");
  if (scored.length) {
    chart.append(svg("path", { class: "trend-line", d: scored.map(([index, run], at) =>
      `${at ? "L" : "M"}${x(index)},${bottom - (bottom - top) * run.score / 100}`).join(" ") }));
  }
  ordered.forEach((run, index) => {
    if (typeof run.score === "number") {
      chart.append(svg("circle", { cx: x(index), cy: bottom - (bottom - top) * run.score / 100, r: 3,
        class: "trend-dot" }, svg("title", {}, `${run.id}: ${score(run.score)}`)));
    }
    chart.append(svg("rect", { x: x(index) - 5, y: height - 18, width: 10, height: 10,
      class: `mark ${run.verdict || "none"}` }, svg("title", {}, `${run.id}: ${run.verdict || run.status}`)));
  });
  return chart;
}

// ---------------------------------------------------------------- step graph

const BOX_W = 132; const BOX_H = 34; const GAP = 26; const FORK = 14;

function leafLabel(step) { return `${step.name} (${step.type})`; }

// The method as a graph: a serial chain left to right, a parallel group as a fork into
// stacked branches and a join; each box coloured by its step's status in the run.
export function stepGraph(run) {
  const byPath = new Map([...(run.steps || []), ...(run.rollbacks || [])].map((s) => [s.path, s]));
  const layout = (step, path) => {
    if (step.type === "serial" || step.type === "parallel") {
      const children = step.steps.map((child, index) => layout(child, `${path}.steps[${index}]`));
      if (step.type === "serial") {
        return { w: children.reduce((sum, c) => sum + c.w, 0) + GAP * (children.length - 1),
          h: Math.max(...children.map((c) => c.h)), children, kind: "serial", path, step };
      }
      return { w: Math.max(...children.map((c) => c.w)) + 2 * FORK,
        h: children.reduce((sum, c) => sum + c.h, 0) + 10 * (children.length - 1), children,
        kind: "parallel", path, step };
    }
    return { w: BOX_W, h: BOX_H, kind: "leaf", path, step };
  };
  const boxes = [];
  const lines = [];
  // Draws `node` with its left edge at x and its vertical centre at cy; returns [in, out].
  const draw = (node, x, cy) => {
    if (node.kind === "leaf") {
      const state = byPath.get(node.path);
      const status = state ? state.status : "pending";
      boxes.push(svg("g", { class: `step ${status}`, "data-path": node.path, tabindex: 0,
        "aria-label": `${node.path} ${leafLabel(node.step)}: ${status}` },
      svg("title", {}, `${node.path} ${leafLabel(node.step)}: ${status}${state && state.job_id ? ` (job ${state.job_id})` : ""}`),
      svg("rect", { x, y: cy - BOX_H / 2, width: BOX_W, height: BOX_H, rx: 6 }),
      svg("text", { x: x + 8, y: cy + 4 }, node.step.name.slice(0, 18))));
      return [[x, cy], [x + BOX_W, cy]];
    }
    if (node.kind === "serial") {
      let at = x; let previous = null; let first = null;
      for (const child of node.children) {
        const [enter, leave] = draw(child, at, cy);
        if (previous) lines.push(svg("line", { x1: previous[0], y1: previous[1], x2: enter[0], y2: enter[1], class: "edge" }));
        first = first || enter;
        previous = leave;
        at += child.w + GAP;
      }
      return [first, previous];
    }
    // parallel: fork at x, branches stacked, join at x + w
    let top = cy - node.h / 2;
    const join = x + node.w;
    for (const child of node.children) {
      const childCy = top + child.h / 2;
      const [enter, leave] = draw(child, x + FORK, childCy);
      lines.push(svg("path", { d: `M${x},${cy} L${enter[0]},${enter[1]}`, class: "edge fork" }),
        svg("path", { d: `M${leave[0]},${leave[1]} L${join},${cy}`, class: "edge join" }));
      top += child.h + 10;
    }
    return [[x, cy], [join, cy]];
  };
  const spec = run.spec || {};
  const chain = [];
  if (byPath.has("before")) chain.push({ w: BOX_W, h: BOX_H, kind: "leaf", path: "before", step: { name: "hypothesis before", type: "probe" } });
  (spec.method || []).forEach((step, index) => chain.push(layout(step, `method[${index}]`)));
  if (byPath.has("after")) chain.push({ w: BOX_W, h: BOX_H, kind: "leaf", path: "after", step: { name: "hypothesis after", type: "probe" } });
  const method = { kind: "serial", children: chain, w: chain.reduce((s, c) => s + c.w, 0) + GAP * Math.max(chain.length - 1, 0),
    h: Math.max(BOX_H, ...chain.map((c) => c.h)) };
  const rollbacks = (spec.rollbacks || []).map((step, index) => layout(step, `rollbacks[${index}]`));
  const back = { kind: "serial", children: rollbacks, w: rollbacks.length * (BOX_W + GAP), h: BOX_H };
  const width = Math.max(method.w, back.w, BOX_W) + 20;
  const height = method.h + (rollbacks.length ? BOX_H + 40 : 0) + 20;
  if (chain.length) draw(method, 10, 10 + method.h / 2);
  const extra = [];
  if (rollbacks.length) {
    const y = method.h + 40;
    extra.push(svg("text", { x: 10, y: y - 6, class: "axis" }, "rollbacks"));
    draw(back, 10, y + BOX_H / 2);
  }
  return svg("svg", { class: "step-graph", id: "step-graph", width, height, viewBox: `0 0 ${width} ${height}`,
    role: "img", "aria-label": "the experiment's steps, coloured by status" }, lines, boxes, extra);
}

// How long each workload the run hit took to recover, as bars on one seconds scale
// (a workload that did not recover is a red bar to the end, labelled so).
export function recoveryBars(run, width = 720) {
  const items = run.recovery || [];
  if (!items.length) return el("p", { class: "hint", id: "recovery-bars" }, "No workload was hit yet.");
  const slowest = Math.max(1, ...items.map((item) => item.recovery_seconds || 0));
  const left = 250; const barH = 16; const gap = 8;
  const height = items.length * (barH + gap) + 4;
  const chart = svg("svg", { class: "recovery-bars", id: "recovery-bars", width, height,
    viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": `recovery of ${items.length} workload(s)` });
  items.forEach((item, index) => {
    const y = 2 + index * (barH + gap);
    const w = item.workload || {};
    const name = `${w.kind || "?"} ${w.namespace || "?"}/${w.name || "?"}`;
    const seconds = item.recovery_seconds;
    const long = item.recovered ? (width - left - 90) * (seconds || 0) / slowest : width - left - 90;
    const label = item.recovered ? `${(seconds || 0).toFixed(1)}s` : "not recovered";
    chart.append(svg("text", { x: 4, y: y + barH - 4, class: "axis" }, name.slice(0, 38)),
      svg("rect", { x: left, y, width: Math.max(2, long), height: barH,
        class: `recovery-bar ${item.recovered ? "ok" : "failed"}` },
      svg("title", {}, `${name}: ${label} (${item.ready_replicas}/${item.desired_replicas} ready)`)),
      svg("text", { x: left + Math.max(2, long) + 6, y: y + barH - 4, class: "axis" }, label));
  });
  return chart;
}

// Every probe result of the run as a dot on one time axis, one lane per probe.
export function probeTimeline(run, width = 720) {
  const outcomes = [];
  for (const step of [...(run.steps || []), ...(run.rollbacks || [])]) {
    for (const outcome of step.probes || []) {
      const at = Date.parse(outcome.ended_at || outcome.started_at || "");
      if (!Number.isNaN(at)) outcomes.push({ ...outcome, at, step: step.path });
    }
  }
  if (!outcomes.length) return el("p", { class: "hint", id: "probe-timeline" }, "No probe results yet.");
  const start = Math.min(Date.parse(run.started_at || "") || Infinity, ...outcomes.map((o) => o.at));
  const end = Math.max(Date.parse(run.ended_at || "") || 0, ...outcomes.map((o) => o.at), start + 1000);
  const lanes = [...new Set(outcomes.map((o) => o.name || (o.probe && o.probe.name) || "probe"))];
  const left = 130; const laneH = 22;
  const height = lanes.length * laneH + 30;
  const x = (at) => left + (width - left - 10) * (at - start) / (end - start);
  const chart = svg("svg", { class: "probe-timeline", id: "probe-timeline", width, height,
    viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": `${outcomes.length} probe results over time` });
  lanes.forEach((lane, index) => {
    const y = 12 + index * laneH;
    chart.append(svg("text", { x: 4, y: y + 4, class: "axis" }, lane.slice(0, 20)),
      svg("line", { x1: left, x2: width - 10, y1: y, y2: y, class: "grid-line" }));
  });
  for (const outcome of outcomes) {
    const lane = lanes.indexOf(outcome.name || (outcome.probe && outcome.probe.name) || "probe");
    chart.append(svg("circle", { cx: x(outcome.at), cy: 12 + lane * laneH, r: 4,
      class: `probe-dot ${outcome.ok ? "ok" : "failed"}` },
    svg("title", {}, `${outcome.name || "probe"} (${outcome.phase}, ${outcome.step}): ` +
      `${outcome.ok ? "passed" : "failed"}${outcome.output ? ` - ${outcome.output}` : ""}`)));
  }
  const seconds = Math.round((end - start) / 1000);
  chart.append(svg("text", { x: left, y: height - 4, class: "axis" }, "start"),
    svg("text", { x: width - 10, y: height - 4, class: "axis", "text-anchor": "end" }, `+${seconds}s`));
  return chart;
}

function download(name, text) {
  const url = URL.createObjectURL(new Blob([text], { type: "application/json" }));
  const link = el("a", { href: url, download: name });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

// ---------------------------------------------------------------- views

function runButtons(item, ui) {
  const run = el("button", { type: "button", class: "run-experiment", "data-name": item.name }, "Run");
  const rehearse = el("button", { type: "button", class: "secondary rehearse-experiment", "data-name": item.name }, "Rehearse");
  run.addEventListener("click", async () => {
    if (!await ui.confirm(`Run ${item.name}?`, "Its steps inject faults in " +
      `${(item.namespaces || []).join(", ") || "the cluster"}; rollbacks always run.`, "Run")) return;
    try {
      const started = await api("POST", `/experiments/${encodeURIComponent(item.name)}/run`, {});
      location.hash = runUrl(started.id);
    } catch (error) { ui.failed(error, "Cannot run the experiment"); }
  });
  rehearse.addEventListener("click", async () => {
    // The worker copies the experiment's namespaces (read-only) into a private simulated
    // cluster and runs it there: nothing real changes, so no confirmation is asked.
    try {
      const started = await api("POST", `/experiments/${encodeURIComponent(item.name)}/rehearse`, {});
      location.hash = rehearsalUrl(started.id);
    } catch (error) { ui.failed(error, "Cannot rehearse the experiment"); }
  });
  return [run, rehearse];
}

export async function experimentsView(main, ui) {
  const body = el("tbody");
  const message = el("p", { class: "hint", "aria-live": "polite" }, "Loading…");
  main.replaceChildren(el("h1", {}, "Experiments"), message,
    el("div", { class: "table-wrap" }, el("table", { class: "experiments", id: "experiments-table" },
      el("thead", {}, el("tr", {}, ...["Experiment", "Namespaces", "Last verdict", "Score", "Trend", ""]
        .map((text) => el("th", {}, text)))), body)));
  const load = async () => {
    // Pages of at most 100 (the API's cap), following next_cursor; at most 5 pages.
    const items = [];
    let cursor = null;
    for (let pages = 0; pages < 5; pages += 1) {
      const page = await api("GET", `/experiments?limit=100${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`);
      items.push(...page.items);
      cursor = page.next_cursor;
      if (!cursor) break;
    }
    const rows = [];
    for (const item of items) {
      const runs = (await api("GET", `/experiments/${encodeURIComponent(item.name)}/runs?limit=20`)).items;
      const last = runs[0];
      const controls = await mayRun(item) ? runButtons(item, ui) : [];
      rows.push(el("tr", { "data-name": item.name },
        el("td", {}, el("a", { href: experimentUrl(item.name) }, item.name),
          item.spec && item.spec.title ? el("div", { class: "hint" }, item.spec.title) : null),
        el("td", {}, (item.namespaces || []).join(", ") || "cluster"),
        el("td", {}, last ? el("a", { href: runUrl(last.id) }, verdict(last.verdict)) : "never run"),
        el("td", {}, last ? score(last.score) : "—"),
        el("td", {}, sparkline(runs)),
        el("td", {}, el("div", { class: "row" }, controls))));
    }
    body.replaceChildren(...rows);
    message.textContent = rows.length ? "" : "No experiments yet: store one with pystol experiments apply -f FILE.";
  };
  await load();
  ui.every(10000, load);
}

export async function experimentView(main, name, ui) {
  const item = await api("GET", `/experiments/${encodeURIComponent(name)}`);
  const runsBody = el("tbody");
  const trend = el("div", { id: "trend" });
  const controls = el("div", { class: "row" }, await mayRun(item) ? runButtons(item, ui) : []);
  main.replaceChildren(
    el("p", {}, el("a", { href: "#/experiments" }, "← Experiments")),
    el("h1", {}, `Experiment ${name}`),
    item.spec.title ? el("p", {}, item.spec.title) : null,
    el("p", { class: "hint" }, `Namespaces: ${(item.namespaces || []).join(", ") || "cluster"} · version ${item.version}`),
    controls,
    el("h2", {}, "Trend"), trend,
    el("h2", {}, "Runs"),
    el("div", { class: "table-wrap" }, el("table", { id: "runs-table" },
      el("thead", {}, el("tr", {}, ...["Run", "Status", "Verdict", "Score", "Started"].map((t) => el("th", {}, t)))),
      runsBody)));
  const load = async () => {
    const runs = (await api("GET", `/experiments/${encodeURIComponent(name)}/runs?limit=50`)).items;
    trend.replaceChildren(runs.length ? trendChart(runs) : el("p", { class: "hint" }, "No runs yet."));
    runsBody.replaceChildren(...runs.map((run) => el("tr", {},
      el("td", {}, el("a", { href: runUrl(run.id) }, run.id)), el("td", {}, run.status),
      el("td", {}, verdict(run.verdict)), el("td", {}, score(run.score)), el("td", {}, when(run.started_at)))));
  };
  await load();
  ui.every(5000, load);
}

export async function runPage(main, runId, ui) {
  const header = el("div", { id: "run-header", class: "card" });
  const graph = el("div", { class: "graph-wrap" });
  const probes = el("div", { class: "graph-wrap" });
  const recovery = el("div", { class: "graph-wrap" });
  const steps = el("tbody");
  const cancel = el("button", { type: "button", class: "danger", id: "cancel-run", hidden: true }, "Cancel run");
  const json = el("button", { type: "button", class: "secondary", id: "download-json" }, "Download JSON");
  const journal = el("button", { type: "button", class: "secondary", id: "download-journal" }, "Journal (Chaos Toolkit)");
  let current = null;
  json.addEventListener("click", () => { if (current) download(`${runId}.json`, JSON.stringify(current, null, 2)); });
  journal.addEventListener("click", async () => {
    try {
      const document_ = await api("GET", `/experiment-runs/${encodeURIComponent(runId)}/journal`);
      download(`journal-${runId}.json`, JSON.stringify(document_, null, 2));
    } catch (error) { ui.failed(error, "Cannot read the journal"); }
  });
  cancel.addEventListener("click", async () => {
    if (!await ui.confirm("Cancel this run?", "Running steps abort and revert, then the rollbacks run.", "Cancel run")) return;
    try { await api("POST", `/experiment-runs/${encodeURIComponent(runId)}/cancel`, { reason: "cancelled from the dashboard" }); } catch (error) { ui.failed(error, "Cannot cancel"); }
  });
  main.replaceChildren(header, el("div", { class: "row" }, json, journal, cancel),
    el("h2", {}, "Steps"), graph,
    el("h2", {}, "Probe results"), probes,
    el("h2", {}, "Recovery per workload"), recovery,
    el("div", { class: "table-wrap" }, el("table", { id: "steps-table" },
      el("thead", {}, el("tr", {}, ...["Step", "Type", "Status", "Verdict", "Job", "PSP"].map((t) => el("th", {}, t)))),
      steps)));
  let stop = false;
  const load = async () => {
    if (stop) return;
    current = await api("GET", `/experiment-runs/${encodeURIComponent(runId)}`);
    const run = current;
    header.replaceChildren(
      el("p", {}, el("a", { href: experimentUrl(run.experiment) }, `← ${run.experiment}`)),
      el("h1", {}, "Run ", el("span", { class: "mono" }, run.id)),
      el("p", { class: "run-verdict" }, verdict(run.verdict), " ",
        el("span", { class: "score", id: "run-score" }, `resilience score ${score(run.score)}`), " · ",
        el("span", { class: `status ${run.status}` }, run.status),
        run.spec && run.spec.dry_run ? " · dry run" : ""),
      run.reason ? el("p", { class: "hint" }, run.reason) : null,
      el("p", { class: "hint" }, `started ${when(run.started_at)}${run.ended_at ? ` · ended ${when(run.ended_at)}` : ""}`));
    graph.replaceChildren(stepGraph(run));
    probes.replaceChildren(probeTimeline(run));
    recovery.replaceChildren(recoveryBars(run));
    steps.replaceChildren(...[...(run.steps || []), ...(run.rollbacks || [])].map((step) => el("tr", {},
      el("td", {}, `${step.path} ${step.name}`), el("td", {}, step.type),
      el("td", {}, el("span", { class: `status ${step.status}` }, step.status)),
      el("td", {}, step.verdict ? verdict(step.verdict) : "—"),
      el("td", {}, step.job_id ? el("a", { href: `#/jobs/${encodeURIComponent(step.job_id)}` }, step.job_id) : "—"),
      el("td", {}, step.psp == null ? "—" : String(step.psp)))));
    const namespaces = (run.grant && run.grant.namespaces) || [];
    cancel.hidden = RUN_TERMINAL.has(run.status) || !access.mayIn("jobs.cancel", namespaces);
    if (RUN_TERMINAL.has(run.status)) stop = true;
  };
  await load();
  ui.every(2000, load);
}

// ---------------------------------------------------------------- rehearsal

function workloadName(ref) { return ref ? `${ref.kind} ${ref.namespace}/${ref.name}` : "—"; }

function seconds(value) { return typeof value === "number" ? `${value.toFixed(1)} s` : "—"; }

function table(id, headings, rows, empty) {
  if (!rows.length) return el("p", { class: "hint", id }, empty);
  return el("div", { class: "table-wrap" }, el("table", { id },
    el("thead", {}, el("tr", {}, ...headings.map((text) => el("th", {}, text)))),
    el("tbody", {}, ...rows.map((cells) => el("tr", {}, ...cells.map((cell) => el("td", {}, cell)))))));
}

// What the rehearsal predicts, from its report (every value from the server as text).
export function rehearsalReport(report) {
  const predicted = table("predicted-table", ["Step", "Action", "Matched", "Chosen", "Targets"],
    (report.predicted || []).map((step) => [`${step.path} ${step.name}`, step.action,
      String(step.matched), String(step.chosen),
      step.error ? el("span", { class: "error" }, step.error)
        : (step.targets || []).join(", ") || "none"]), "No action steps.");
  const blast = table("blast-table", ["Workload", "Desired", "Fewest ready", "Lost"],
    (report.blast_radius || []).map((row) => [workloadName(row.workload), String(row.desired),
      String(row.min_ready), el("span", { class: row.lost ? "lost" : "" }, String(row.lost))]),
    "No workload lost a ready pod.");
  const budgets = table("budgets-table", ["PodDisruptionBudget", "Min available", "Fewest healthy",
    "Evictions blocked", "Violated"],
  (report.budgets || []).map((row) => [`${row.namespace}/${row.name}`, String(row.min_available),
    String(row.min_healthy), String(row.blocked_evictions),
    el("span", { class: row.violated ? "verdict failed" : "" }, row.violated ? "violated" : "no")]),
  "No PodDisruptionBudget in the copied namespaces.");
  const recovery = table("recovery-table", ["Workload", "Step", "Recovered", "Predicted time", "On the copy"],
    (report.recovery || []).map((row) => [workloadName(row.workload), row.step || "—",
      row.recovered ? "yes" : "no", seconds(row.simulated_seconds), seconds(row.measured_seconds)]),
    "No recovery was measured.");
  const skipped = report.not_rehearsed || [];
  return el("div", { id: "rehearsal-report" },
    el("p", { class: "run-verdict", id: "rehearsal-verdict" }, verdict(report.verdict), " ",
      el("span", { class: "score" }, `resilience score ${score(report.score)}`),
      ` · speed ×${report.speed}`),
    report.reason ? el("p", { class: "hint" }, report.reason) : null,
    el("p", { class: "hint" }, `Copy: ${report.snapshot}`),
    el("h2", {}, "Predicted targets"), predicted,
    el("h2", {}, "Blast radius"), blast, budgets,
    el("h2", {}, "Recovery"), recovery,
    el("h2", {}, "Not rehearsed"),
    skipped.length ? el("ul", { id: "not-rehearsed" }, ...skipped.map((line) => el("li", {}, line)))
      : el("p", { class: "hint", id: "not-rehearsed" }, "Everything was rehearsed."),
    (report.notes || []).length ? el("ul", { class: "hint" }, ...report.notes.map((line) => el("li", {}, line))) : null);
}

export async function rehearsalPage(main, id, ui) {
  const header = el("div", { id: "rehearsal-header", class: "card" });
  const body = el("div", {});
  main.replaceChildren(header, body);
  let stop = false;
  const load = async () => {
    if (stop) return;
    const run = await api("GET", `/rehearsals/${encodeURIComponent(id)}`);
    header.replaceChildren(
      el("p", {}, el("a", { href: experimentUrl(run.experiment) }, `← ${run.experiment}`)),
      el("h1", {}, "Rehearsal ", el("span", { class: "mono" }, run.id)),
      el("p", {}, el("span", { class: `status ${run.status}`, id: "rehearsal-status" }, run.status),
        ` · asked ${when(run.created_at)}${run.ended_at ? ` · ended ${when(run.ended_at)}` : ""}`),
      el("p", { class: "hint" }, "On a private simulated copy of the namespaces it touches: " +
        "nothing on the cluster changed."),
      run.error ? el("p", { class: "error", id: "rehearsal-error" }, run.error)
        : run.reason ? el("p", { class: "hint" }, run.reason) : null);
    body.replaceChildren(run.report ? rehearsalReport(run.report)
      : el("p", { class: "hint" }, REHEARSAL_TERMINAL.has(run.status) ? "No report."
        : "Copying the cluster and rehearsing…"));
    if (REHEARSAL_TERMINAL.has(run.status)) stop = true;
  };
  await load();
  ui.every(2000, load);
}

export function isExperimentsRoute(view) {
  return view === "experiments" || view === "experiment-run" || view === "rehearsal";
}

// The route's view: #/experiments, #/experiments/NAME, #/experiment-run/ID, #/rehearsal/ID.
export async function route(main, view, arg, ui) {
  // A run page belongs to the Experiments section of the navigation.
  const link = document.querySelector('nav a[data-view="experiments"]');
  if (link) link.setAttribute("aria-current", "page");
  try {
    if (view === "experiment-run" && arg) await runPage(main, arg, ui);
    else if (view === "rehearsal" && arg) await rehearsalPage(main, arg, ui);
    else if (arg) await experimentView(main, arg, ui);
    else await experimentsView(main, ui);
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) {
      main.replaceChildren(el("p", { class: "error" }, error.message));
      return;
    }
    throw error;
  }
}
