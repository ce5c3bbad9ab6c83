// The Pystol dashboard: sign-in, cluster, run, jobs, schedules and the halt switch.
// It speaks only to /api/v1, with the token kept in sessionStorage. What the signed-in
// identity may not do (GET /whoami) is not offered; the API still decides every request.
import * as access from "./access.js";
import { api, ApiError, streamEvents, token } from "./api.js";
import { el, esc, status, when } from "./dom.js";
import * as experiments from "./experiments.js";
import { JobForm } from "./jobform.js";

const main = document.getElementById("main");
const TERMINAL = new Set(["succeeded", "failed", "aborted", "cancelled"]);
let cleanup = [];          // what the current view must stop when we leave it
let actionsCache = null;
let haltState = null;

function onLeave(fn) { cleanup.push(fn); }
// Call fn on every change of what the identity may do, while the current view is shown.
function onIdentity(fn) { onLeave(access.onChange(fn)); }
function every(ms, fn) {
  let stopped = false; let timer = null;
  const tick = async () => {
    if (stopped) return;
    try { await fn(); } catch (error) { if (!(error instanceof ApiError && error.status === 401)) console.warn(error); }
    if (!stopped) timer = setTimeout(tick, ms);
  };
  tick();
  onLeave(() => { stopped = true; clearTimeout(timer); });
}

async function actions() {
  if (!actionsCache) actionsCache = (await api("GET", "/actions")).items;
  return actionsCache;
}

function confirmDialog(title, text, okLabel) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-title").textContent = title;
  document.getElementById("confirm-text").textContent = text;
  document.getElementById("confirm-ok").textContent = okLabel;
  dialog.returnValue = "";
  dialog.showModal();
  document.getElementById("confirm-cancel").focus();
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
  });
}

// ---------------------------------------------------------------- notices

// A message for the user above the page (a refusal, a failed action); never an alert().
function notify(message) {
  document.getElementById("notice-text").textContent = message;
  document.getElementById("notice").hidden = false;
}
function clearNotice() {
  document.getElementById("notice").hidden = true;
  document.getElementById("notice-text").textContent = "";
}
document.getElementById("notice-close").addEventListener("click", clearNotice);

// What failed, unless it was already told: a 401 signs out, a 403 is told by its event.
function failed(error, what = "Failed") {
  if (error instanceof ApiError && (error.status === 401 || error.status === 403)) return;
  notify(`${what}: ${error.message}`);
}

// Any 403: show the problem's detail, and ask again what the identity may do (it may have
// changed since the page offered the control).
window.addEventListener("pystol:forbidden", (event) => {
  const error = event.detail;
  notify(`Refused: ${error.message}`);
  if (token.get()) access.load().catch(() => {});
});

// ---------------------------------------------------------------- sign in / out

function signInView(message) {
  document.getElementById("nav").hidden = true;
  document.getElementById("session").hidden = true;
  document.getElementById("halt-banner").hidden = true;
  const input = el("input", { id: "token", type: "password", autocomplete: "current-password", required: true });
  const error = el("p", { class: "error", id: "signin-error", role: "alert" }, message || "");
  const form = el("form", { class: "card signin", "aria-labelledby": "signin-title" },
    el("h1", { id: "signin-title" }, "Sign in to Pystol"),
    el("div", { class: "field" }, el("label", { for: "token" }, "API token"), input,
      el("p", { class: "hint", id: "token-hint" },
        "A Pystol token (from an admin, or one of PYSTOL_API_TOKENS), or a Kubernetes token " +
        "(kubectl create token NAME): the cluster's RBAC then decides. Kept in this tab only.")),
    error,
    el("p", {}, el("button", { type: "submit" }, "Sign in")));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    token.set(input.value.trim());
    try {
      await access.load([], { noSignOut: true });
      actionsCache = (await api("GET", "/actions", undefined, { noSignOut: true })).items;
      start();
    } catch (err) {
      token.clear();
      access.clear();
      error.textContent = err instanceof ApiError && err.status === 401
        ? "That token was refused by the API." : `Cannot reach the API: ${err.message}`;
      input.focus();
    }
  });
  main.replaceChildren(form);
  input.focus();
}

function signOut(message) {
  token.clear();
  access.clear();
  actionsCache = null;
  clearNotice();
  stopView();
  stopHaltPolling();
  signInView(message);
}

window.addEventListener("pystol:unauthorized", () => signOut("The API refused the token; sign in again."));
document.getElementById("sign-out").addEventListener("click", () => signOut("Signed out."));

// ---------------------------------------------------------------- halt switch

let haltTimer = null;
function stopHaltPolling() { clearTimeout(haltTimer); haltTimer = null; }

function renderHalt() {
  const button = document.getElementById("halt-button");
  const banner = document.getElementById("halt-banner");
  if (!haltState) { button.hidden = true; return; }
  // Offered only to who may use it: halt.engage to halt, halt.lift (admins) to resume.
  button.hidden = !access.may(haltState.halted ? "halt.lift" : "halt.engage");
  if (haltState.halted) {
    button.textContent = "Resume chaos";
    button.className = "resume";
    banner.hidden = false;
    banner.replaceChildren(el("span", { id: "halt-status" },
      `Chaos is HALTED${haltState.by ? ` by ${haltState.by}` : ""}${haltState.since ? ` since ${when(haltState.since)}` : ""}` +
      `${haltState.reason ? `: ${haltState.reason}` : ""}. No job runs until it is resumed` +
      `${button.hidden ? " (by someone who may lift the halt)" : ""}.`));
  } else {
    button.textContent = "Halt chaos";
    button.className = "halt";
    banner.hidden = true;
  }
  button.setAttribute("aria-label", haltState.halted ? "Chaos is halted: resume chaos" : "Chaos is running: halt all chaos");
}

async function pollHalt() {
  try { haltState = await api("GET", "/halt"); renderHalt(); } catch { /* shown on the next try */ }
  if (token.get()) haltTimer = setTimeout(pollHalt, 3000);
}

document.getElementById("halt-button").addEventListener("click", async () => {
  const halted = haltState && haltState.halted;
  const ok = halted
    ? await confirmDialog("Resume chaos?", "Jobs and schedules may inject faults again.", "Resume chaos")
    : await confirmDialog("Halt all chaos?", "Running jobs are aborted (they revert), queued jobs are cancelled, and new jobs are refused until you resume.", "Halt chaos");
  if (!ok) return;
  try {
    haltState = halted ? await api("DELETE", "/halt") : await api("POST", "/halt", { reason: "halted from the dashboard" });
    renderHalt();
  } catch (error) { failed(error, halted ? "Cannot resume chaos" : "Cannot halt chaos"); }
});

// ---------------------------------------------------------------- identity

// The header: who is signed in, and the controls the identity may use.
function renderIdentity() {
  const who = document.getElementById("whoami");
  const { who: name, what } = access.describe();
  who.replaceChildren(el("strong", {}, name), ` · ${what}`);
  who.title = `Signed in as ${name} (${what})`;
  const run = document.querySelector('nav a[data-view="run"]');
  run.hidden = !mayRunJobs();
  renderHalt();
}
access.onChange(renderIdentity);

// May this identity submit jobs anywhere it is known to (a namespace, or node-level chaos)?
function mayRunJobs() { return access.mayAnywhere("jobs.submit") || access.may("cluster.chaos"); }

// A Kubernetes identity's permissions are asked per namespace: learn the cluster's
// namespaces first (a Pystol token's answer already lists its own).
async function learnNamespaces() {
  const me = access.identity();
  if (!me || me.role || Object.keys(me.namespace_permissions).length) return;
  try {
    const cluster = await api("GET", "/cluster");
    await access.load(cluster.namespaces);
  } catch { /* the views ask again */ }
}

// ---------------------------------------------------------------- cluster

function podClass(pod) {
  if (pod.terminating) return "terminating";
  if (pod.phase === "Running") return pod.ready ? "ready" : "unready";
  if (pod.phase === "Failed") return "failed";
  if (pod.phase === "Succeeded") return "done";
  return "pending";
}

function clusterView() {
  const nsSelect = el("select", { id: "filter-namespace" }, el("option", { value: "" }, "all namespaces"));
  const wlSelect = el("select", { id: "filter-workload" }, el("option", { value: "" }, "all workloads"));
  const summary = el("p", { id: "cluster-summary", "aria-live": "polite" }, "Loading…");
  const nodesBox = el("div", { class: "nodes", id: "nodes" });
  const workloadsBody = el("tbody");
  const error = el("p", { class: "error", role: "alert" });
  const legend = el("div", { class: "legend", "aria-label": "Legend" },
    ...[["ready", "Running, ready"], ["unready", "Running, not ready"], ["pending", "Pending"],
      ["failed", "Failed"], ["done", "Succeeded"], ["terminating", "Terminating"], ["ready hit", "Hit by a running job"]]
      .map(([cls, text]) => el("span", {}, el("span", { class: `pod ${cls}`, "aria-hidden": "true" }), text)));
  main.replaceChildren(
    el("h1", {}, "Cluster"),
    el("div", { class: "row" },
      el("div", { class: "field" }, el("label", { for: "filter-namespace" }, "Namespace"), nsSelect),
      el("div", { class: "field" }, el("label", { for: "filter-workload" }, "Workload"), wlSelect)),
    legend, summary, error, nodesBox,
    el("h2", {}, "Workloads"),
    el("div", { class: "table-wrap" }, el("table", { class: "workloads" },
      el("thead", {}, el("tr", {}, el("th", {}, "Namespace"), el("th", {}, "Workload"), el("th", {}, "Ready / desired"))),
      workloadsBody)));
  let last = "";
  let etag = null;
  let data = null;
  let shownNamespaces = null;
  const draw = () => {
    if (!data) return;
    const ns = nsSelect.value; const wl = wlSelect.value;
    // keep the filters' options in step with the cluster
    const nsWanted = ["", ...data.namespaces];
    if ([...nsSelect.options].map((o) => o.value).join() !== nsWanted.join()) {
      nsSelect.replaceChildren(...nsWanted.map((n) => el("option", { value: n }, n || "all namespaces")));
      nsSelect.value = nsWanted.includes(ns) ? ns : "";
    }
    const wls = data.workloads.filter((w) => !nsSelect.value || w.namespace === nsSelect.value)
      .map((w) => `${w.namespace}/${w.kind}/${w.name}`);
    const wlWanted = ["", ...wls];
    if ([...wlSelect.options].map((o) => o.value).join() !== wlWanted.join()) {
      wlSelect.replaceChildren(...wlWanted.map((n) => el("option", { value: n }, n ? n.replace(/^([^/]+)\/[^/]+\//, "$1/") : "all workloads")));
      wlSelect.value = wlWanted.includes(wl) ? wl : "";
    }
    const pods = data.pods.filter((p) => (!nsSelect.value || p.namespace === nsSelect.value) &&
      (!wlSelect.value || (p.workload && `${p.namespace}/${p.workload.kind}/${p.workload.name}` === wlSelect.value)));
    const byNode = new Map(data.nodes.map((n) => [n.name, []]));
    const unscheduled = [];
    for (const pod of pods) (byNode.get(pod.node) || unscheduled).push(pod);
    let html = "";
    const group = (title, tags, cls, list) => {
      const ready = list.filter((p) => p.ready).length;
      const hit = list.filter((p) => p.hit).length;
      html += `<section class="node ${cls}" tabindex="0" aria-label="${esc(`${title}${tags.length ? ` (${tags.join(", ")})` : ""}: ${list.length} pods, ${ready} ready${hit ? `, ${hit} hit by chaos` : ""}`)}">`;
      html += `<h3>${esc(title)}${tags.map((t) => ` <span class="tag ${t.replace(/\W/g, "").toLowerCase()}">${esc(t)}</span>`).join("")}` +
        ` <span class="counts">${list.length} pods · ${ready} ready${hit ? ` · ${hit} hit` : ""}</span></h3><div class="pods">`;
      for (const p of list) {
        const wl = p.workload ? ` (${p.workload.kind} ${p.workload.name})` : "";
        html += `<span class="pod ${podClass(p)}${p.hit ? " hit" : ""}" data-pod="${esc(`${p.namespace}/${p.name}`)}" title="${esc(`${p.namespace}/${p.name}${wl}: ${p.terminating ? "Terminating" : p.phase}${p.ready ? ", ready" : ", not ready"}${p.hit ? `, hit by ${p.hit_by.join(", ")}` : ""}`)}"></span>`;
      }
      html += "</div></section>";
    };
    const nodes = data.nodes.slice().sort((a, b) => a.name.localeCompare(b.name, undefined, { numeric: true }));
    for (const node of nodes) {
      const tags = [];
      if (!node.ready) tags.push("NotReady");
      if (node.cordoned) tags.push("cordoned");
      group(node.name, tags, `${node.ready ? "" : "notready"} ${node.cordoned ? "cordoned" : ""}`, byNode.get(node.name));
    }
    if (unscheduled.length) group("Not scheduled", [], "", unscheduled);
    nodesBox.innerHTML = html;
    const hit = pods.filter((p) => p.hit).length;
    summary.textContent = `${data.nodes.length} nodes, ${pods.length} pods shown (${data.pods.length} in all)` +
      `${hit ? `, ${hit} hit by ${data.running_jobs.length} running job(s)` : ""}.`;
    workloadsBody.replaceChildren(...data.workloads.filter((w) => !nsSelect.value || w.namespace === nsSelect.value)
      .map((w) => el("tr", {}, el("td", {}, w.namespace), el("td", {}, `${w.kind} ${w.name}`),
        el("td", { class: w.ready < w.desired ? "bad" : "" }, `${w.ready} / ${w.desired}`))));
  };
  nsSelect.addEventListener("change", () => { wlSelect.value = ""; draw(); });
  wlSelect.addEventListener("change", draw);
  every(1000, async () => {
    try {
      // A conditional GET: an unchanged topology is a 304 without a body (the ETag is
      // this caller's, so no other identity's answer can ever be taken for ours).
      const answer = await api("GET", "/cluster", undefined, { etag });
      error.textContent = "";
      if (answer.notModified) return;  // nothing changed: no parse, no redraw
      etag = answer.etag;
      if (answer.text === last) return;  // same body (a server without tags): no redraw
      last = answer.text; data = answer.data; draw();
      // The namespaces shown changed: ask again what the identity may do in them.
      const key = data.namespaces.join(",");
      if (key !== shownNamespaces) {
        shownNamespaces = key;
        access.load(data.namespaces).catch(() => {});
      }
    } catch (err) {
      error.textContent = `Cannot read the cluster: ${err.message}`;
      throw err;
    }
  });
}

// ---------------------------------------------------------------- run

// Why the identity may not run `spec`'s job, or null: node-level chaos needs cluster.chaos,
// a job in namespaces needs `permission` (jobs.submit, schedules.create) in each of them.
async function scopeProblem(form, permission, verb) {
  const action = form.current();
  if (!action) return null;
  const namespaces = form.namespaceList();
  if (action.targets === "nodes" || (action.targets === "url" && !namespaces.length)) {
    return access.may("cluster.chaos") ? null
      : `You may not ${verb} ${action.name} at cluster scope (node-level and cluster-wide chaos is for admins).`;
  }
  if (!namespaces.length) return null;  // the API says what is missing
  await access.ensure(namespaces);
  const refused = access.validNamespaces(namespaces).filter((n) => !access.may(permission, n));
  if (!refused.length) return null;
  const allowed = access.namespacesWith(permission);
  return `You may not ${verb} in ${refused.length > 1 ? "namespaces" : "namespace"} ${refused.join(", ")}` +
    (allowed.length ? ` (you may in: ${allowed.join(", ")}).` : ".");
}

// Keep `buttons` disabled, with the reason beside the namespaces field, while the form
// names namespaces (or a node-level action) the identity may not use `permission` in.
function guardForm(form, buttons, permission, verb) {
  let timer = null;
  let seq = 0;
  const check = async () => {
    const mine = ++seq;
    let problem = null;
    try { problem = await scopeProblem(form, permission, verb); } catch { problem = null; }
    if (mine !== seq) return problem;  // a later check is under way
    form.setScopeProblem(problem);
    for (const button of buttons) button.disabled = !!problem;
    return problem;
  };
  const soon = () => { clearTimeout(timer); timer = setTimeout(check, 200); };
  form.root.addEventListener("input", soon);
  form.root.addEventListener("change", soon);
  onLeave(() => clearTimeout(timer));
  onIdentity(() => { form.setNamespaceOptions(access.namespacesWith(permission)); soon(); });
  form.setNamespaceOptions(access.namespacesWith(permission));
  check();
  return check;
}

function nothingToRun(title, what) {
  const { who, what: role } = access.describe();
  main.replaceChildren(el("h1", {}, title),
    el("p", { class: "card", id: "not-allowed" },
      `Signed in as ${who} (${role}), which may not ${what} in any namespace shown. ` +
      "Ask an admin for an operator token, or a Kubernetes role, for the namespaces you test."));
}

async function runView() {
  const list = await actions();
  await learnNamespaces();
  if (!mayRunJobs()) { nothingToRun("Run a chaos job", "submit jobs"); return; }
  const form = new JobForm(list, { idPrefix: "run", nodeLevel: access.may("cluster.chaos") });
  const preview = el("div", { id: "preview", "aria-live": "polite" });
  const result = el("p", { id: "run-result", role: "status" });
  const previewButton = el("button", { type: "button", class: "secondary", id: "preview-button" }, "Preview");
  const submit = el("button", { type: "submit", id: "run-button" }, "Run job");
  const formEl = el("form", { class: "card", novalidate: true, "aria-labelledby": "run-title" },
    form.root, el("div", { class: "row actions" }, previewButton, submit), result);
  main.replaceChildren(el("h1", { id: "run-title" }, "Run a chaos job"), formEl,
    el("section", { class: "card", "aria-label": "Preview" }, el("h2", {}, "Preview"), preview));
  preview.append(el("p", { class: "hint" }, "Preview shows the pods or nodes the job would hit now, without changing anything."));
  const check = guardForm(form, [previewButton, submit], "jobs.submit", "run chaos");
  const send = async (path) => {
    const { spec, errors } = form.spec();
    if (errors.length) { form.showErrors(errors); return null; }
    form.clearErrors();
    if (await check()) return null;
    try {
      return await api("POST", path, spec);
    } catch (error) {
      if (error instanceof ApiError && error.status !== 401) form.showErrors(error.problem.errors, error.message);
      return null;
    }
  };
  previewButton.addEventListener("click", async () => {
    previewButton.disabled = true;
    const answer = await send("/preview");
    previewButton.disabled = !!form.scopeProblem;
    if (!answer) { preview.replaceChildren(el("p", { class: "hint" }, "No preview: fix the errors above.")); return; }
    preview.replaceChildren(
      el("p", {}, `${answer.matched} matching, ${answer.chosen.length} would be hit now:`),
      el("div", { class: "table-wrap" }, el("table", {},
        el("thead", {}, el("tr", {}, el("th", {}, "Kind"), el("th", {}, "Namespace"), el("th", {}, "Name"), el("th", {}, "Node"), el("th", {}, "Workload"))),
        el("tbody", {}, ...answer.chosen.map((t) => el("tr", {}, el("td", {}, t.kind), el("td", {}, t.namespace || "—"),
          el("td", {}, t.name), el("td", {}, t.node || "—"), el("td", {}, t.workload ? `${t.workload.kind} ${t.workload.name}` : "—")))))),
      ...(answer.excluded.length ? [el("p", { class: "hint" }, `Left out: ${answer.excluded.join("; ")}`)] : []));
  });
  formEl.addEventListener("submit", async (event) => {
    event.preventDefault();
    submit.disabled = true;
    const job = await send("/jobs");
    submit.disabled = !!form.scopeProblem;
    if (job) location.hash = `#/jobs/${encodeURIComponent(job.id)}`;
  });
}

// ---------------------------------------------------------------- jobs

async function jobsView(params) {
  const list = await actions();
  const q = new URLSearchParams(params);
  const statusSel = el("select", { id: "jobs-status" }, el("option", { value: "" }, "any"),
    ...["queued", "running", "succeeded", "failed", "aborted", "cancelled"].map((s) => el("option", { value: s }, s)));
  const actionSel = el("select", { id: "jobs-action" }, el("option", { value: "" }, "any"),
    ...list.map((a) => el("option", { value: a.name }, a.name)));
  const nsInput = el("input", { id: "jobs-namespace", placeholder: "shop" });
  statusSel.value = q.get("status") || ""; actionSel.value = q.get("action") || ""; nsInput.value = q.get("namespace") || "";
  const body = el("tbody");
  const pager = el("div", { class: "pager" });
  const error = el("p", { class: "error", role: "alert" });
  const filters = el("form", { class: "row card", "aria-label": "Filters" },
    el("div", { class: "field" }, el("label", { for: "jobs-status" }, "Status"), statusSel),
    el("div", { class: "field" }, el("label", { for: "jobs-action" }, "Action"), actionSel),
    el("div", { class: "field" }, el("label", { for: "jobs-namespace" }, "Namespace"), nsInput),
    el("button", { type: "submit" }, "Filter"));
  main.replaceChildren(el("h1", {}, "Jobs"), filters, error,
    el("div", { class: "table-wrap" }, el("table", { id: "jobs-table" },
      el("thead", {}, el("tr", {}, el("th", {}, "Job"), el("th", {}, "Status"), el("th", {}, "Action"),
        el("th", {}, "Target"), el("th", { class: "hide-narrow" }, "Created"), el("th", { class: "hide-narrow" }, "Recovery"))),
      body)), pager);
  const query = () => {
    const out = new URLSearchParams();
    if (statusSel.value) out.set("status", statusSel.value);
    if (actionSel.value) out.set("action", actionSel.value);
    if (nsInput.value.trim()) out.set("namespace", nsInput.value.trim());
    return out;
  };
  filters.addEventListener("submit", (event) => { event.preventDefault(); location.hash = `#/jobs?${query()}`; });
  const cursors = [q.get("cursor") || ""];
  const load = async () => {
    const params2 = query(); params2.set("limit", "20");
    const cursor = cursors[cursors.length - 1];
    if (cursor) params2.set("cursor", cursor);
    try {
      const page = await api("GET", `/jobs?${params2}`);
      error.textContent = "";
      body.replaceChildren(...page.items.map((job) => el("tr", {},
        el("td", {}, el("a", { href: `#/jobs/${encodeURIComponent(job.id)}` }, job.id)),
        el("td", {}, status(job.status)), el("td", {}, job.spec.action),
        el("td", {}, [job.spec.target.namespaces.join(","), job.spec.target.label_selector].filter(Boolean).join(" ") || (job.spec.target.names || []).join(",")),
        el("td", { class: "hide-narrow" }, when(job.created_at)),
        el("td", { class: "hide-narrow" }, job.metrics.recovery_seconds != null ? `${job.metrics.recovery_seconds.toFixed(2)} s` : "—"))));
      if (!page.items.length) body.append(el("tr", {}, el("td", { colspan: "6" }, "No jobs match.")));
      pager.replaceChildren(
        el("button", { type: "button", class: "secondary", disabled: cursors.length < 2, onclick: () => { cursors.pop(); load(); } }, "Previous page"),
        el("button", { type: "button", class: "secondary", disabled: !page.next_cursor, onclick: () => { cursors.push(page.next_cursor); load(); } }, "Next page"));
    } catch (err) { error.textContent = err.message; }
  };
  load();
}

function recoveryChart(recovery) {
  const rows = recovery.filter((r) => r.recovery_seconds != null || !r.recovered);
  if (!rows.length) return el("p", { class: "hint" }, "No recovery measured (yet).");
  const max = Math.max(1, ...rows.map((r) => r.recovery_seconds || 0));
  const labelW = 190; const barW = 300; const rowH = 26; const h = rows.length * rowH + 24;
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", "chart"); svg.setAttribute("id", "recovery-chart");
  svg.setAttribute("viewBox", `0 0 ${labelW + barW + 90} ${h}`);
  svg.setAttribute("width", "100%"); svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", "Recovery time per workload: " + rows.map((r) =>
    `${r.workload.namespace}/${r.workload.name} ${r.recovered ? `${r.recovery_seconds.toFixed(2)} seconds` : "not recovered"}`).join("; "));
  svg.style.maxWidth = "640px";
  const add = (tag, attrs, text) => {
    const node = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text != null) node.textContent = text;
    svg.append(node); return node;
  };
  rows.forEach((r, i) => {
    const y = i * rowH + 4;
    const w = r.recovery_seconds != null ? Math.max(2, (r.recovery_seconds / max) * barW) : barW;
    add("text", { x: labelW - 6, y: y + 16, "text-anchor": "end" }, `${r.workload.namespace}/${r.workload.name}`.slice(0, 30));
    add("rect", { x: labelW, y, width: w, height: rowH - 8, rx: 3, fill: r.recovered ? "#1e7d32" : "#b3261e" });
    add("text", { x: labelW + w + 6, y: y + 16 }, r.recovered ? `${r.recovery_seconds.toFixed(2)} s` : "not recovered");
  });
  add("line", { x1: labelW, x2: labelW, y1: 0, y2: h - 20, stroke: "#4f5863" });
  add("text", { x: labelW, y: h - 4 }, "0 s");
  add("text", { x: labelW + barW, y: h - 4, "text-anchor": "end" }, `${max.toFixed(1)} s`);
  return svg;
}

function dur(value) { return typeof value === "number" ? `${value} s` : String(value); }

function targetText(t) {
  const where = t.namespaces && t.namespaces.length ? `namespaces ${t.namespaces.join(", ")}`
    : t.names && t.names.length ? `nodes ${t.names.join(", ")}` : "";
  const how = t.value != null ? `${t.mode} ${t.value}${t.mode.includes("percent") ? "%" : ""}` : t.mode;
  return [where, t.label_selector && `selector ${t.label_selector}`, t.field_selector && `fields ${t.field_selector}`,
    `mode ${how}`].filter(Boolean).join(" · ");
}

async function jobView(id) {
  const head = el("div");
  const timeline = el("ol", { class: "timeline", id: "timeline", "aria-live": "polite" });
  const details = el("div");
  const live = el("p", { class: "hint", id: "live-mode" });
  main.replaceChildren(el("p", {}, el("a", { href: "#/jobs" }, "← All jobs")), head, details,
    el("section", { class: "card" }, el("h2", {}, "Timeline"), live, timeline));
  let record = null;
  let seen = 0;
  const addEvent = (ev) => {
    timeline.append(el("li", {}, el("time", { datetime: ev.at }, when(ev.at)), el("strong", {}, ev.kind), " ", ev.message));
    seen += 1;
  };
  // jobs.cancel in every namespace it touches (cluster chaos for one that names none), as
  // the API checks; having submitted it is not enough (the name may be someone else's now).
  const mayCancel = () => access.mayIn("jobs.cancel", record.spec.target.namespaces);
  const render = () => {
    const cancellable = !TERMINAL.has(record.status) && mayCancel();
    head.replaceChildren(
      el("h1", {}, `Job ${record.id} `, el("span", { id: "job-status" }, status(record.status))),
      el("div", { class: "card" }, el("dl", { class: "kv" },
        el("dt", {}, "Action"), el("dd", {}, record.spec.action + (record.spec.dry_run ? " (dry run)" : "")),
        el("dt", {}, "Target"), el("dd", {}, targetText(record.spec.target)),
        el("dt", {}, "Duration"), el("dd", {}, record.spec.duration != null ? dur(record.spec.duration) : "—"),
        el("dt", {}, "Submitted"), el("dd", {}, `${when(record.created_at)} by ${record.submitter} (${record.source})`),
        el("dt", {}, "Reason"), el("dd", {}, record.reason || "—"),
        el("dt", {}, "Recovery"), el("dd", {}, record.metrics.recovery_seconds != null ? `${record.metrics.recovery_seconds.toFixed(2)} s` : "—")),
      cancellable ? el("p", {}, el("button", { type: "button", class: "danger", id: "cancel-job", onclick: async () => {
        if (!(await confirmDialog("Cancel this job?", "A running job is aborted and reverts what it changed.", "Cancel job"))) return;
        try { record = await api("POST", `/jobs/${encodeURIComponent(id)}/cancel`); render(); } catch (e) { failed(e, "Cannot cancel the job"); }
      } }, "Cancel job")) : null));
    const changes = record.result.changes;
    details.replaceChildren(
      el("section", { class: "card" }, el("h2", {}, "Recovery time per workload"), recoveryChart(record.result.recovery)),
      el("section", { class: "card" }, el("h2", {}, `Targets (${record.targets.length})`),
        el("div", { class: "table-wrap" }, el("table", { id: "targets" },
          el("thead", {}, el("tr", {}, el("th", {}, "Kind"), el("th", {}, "Namespace"), el("th", {}, "Name"), el("th", {}, "Node"))),
          el("tbody", {}, ...record.targets.map((t) => el("tr", {}, el("td", {}, t.kind), el("td", {}, t.namespace || "—"), el("td", {}, t.name), el("td", {}, t.node || "—"))))))),
      el("section", { class: "card" }, el("h2", {}, `Changes (${changes.length})`),
        el("div", { class: "table-wrap" }, el("table", { id: "changes" },
          el("thead", {}, el("tr", {}, el("th", {}, "Target"), el("th", {}, "Change"), el("th", {}, "At"), el("th", {}, "Reverted"))),
          el("tbody", {}, ...changes.map((c) => el("tr", {}, el("td", {}, `${c.target.kind} ${c.target.namespace ? c.target.namespace + "/" : ""}${c.target.name}`),
            el("td", {}, c.action + (c.error ? ` (error: ${c.error})` : "")), el("td", {}, when(c.at)),
            el("td", {}, c.reverted_at ? `${when(c.reverted_at)}${c.revert ? ` (${c.revert})` : ""}` : (c.revert ? "pending" : "nothing to revert")))))))));
  };
  let asked = false;
  const refresh = async () => {
    record = await api("GET", `/jobs/${encodeURIComponent(id)}`);
    if (!asked) {  // what the identity may do in the job's namespaces, before the first render
      asked = true;
      await access.ensure(record.spec.target.namespaces).catch(() => {});
    }
    render();
    for (const ev of record.timeline.slice(seen)) addEvent(ev);
  };
  try { await refresh(); } catch (err) {
    main.replaceChildren(el("h1", {}, "Job"), el("p", { class: "error" }, err.message)); return;
  }
  onIdentity(() => { if (record) render(); });
  if (TERMINAL.has(record.status)) { live.textContent = "The job has ended."; return; }
  const abort = new AbortController();
  let stopped = false;
  onLeave(() => { stopped = true; abort.abort(); });
  const poll = async () => {
    live.textContent = "Live: polling every second.";
    live.dataset.transport = "poll";
    while (!stopped && !TERMINAL.has(record.status)) {
      await new Promise((r) => setTimeout(r, 1000));
      if (!stopped) await refresh().catch(() => {});
    }
    if (!stopped) live.textContent = "The job has ended.";
  };
  (async () => {
    live.textContent = "Live: following server-sent events.";
    while (!stopped) {
      let outcome;
      try {
        outcome = await streamEvents(id, seen, (kind, data, evId) => {
          if (kind === "end") return;
          if (evId != null && Number(evId) < seen) return;
          live.dataset.transport = "sse";
          addEvent(data);
          refresh().catch(() => {});
        }, abort.signal);
      } catch { if (stopped) return; outcome = "unsupported"; }
      if (outcome === "unsupported") { await poll(); return; }
      if (outcome === "ended") { await refresh().catch(() => {}); live.textContent = "The job has ended."; return; }
      await refresh().catch(() => {});  // the stream closed after its time limit: go on
      if (TERMINAL.has(record.status)) { live.textContent = "The job has ended."; return; }
    }
  })();
}

// ---------------------------------------------------------------- schedules

// May the identity change schedule `s` with `permission`? As the schedule store checks:
// the permission in each of its template's namespaces, or cluster chaos.
function mayChangeSchedule(s, permission) {
  const namespaces = scheduleNamespaces(s);
  return access.may("cluster.chaos") ||
    (namespaces.length > 0 && namespaces.every((n) => access.may(permission, n)));
}

// A schedule's namespaces: its template's, or (a schedule of a stored experiment) the
// experiment's as the record tells them.
function scheduleNamespaces(s) {
  return s.spec.template ? s.spec.template.target.namespaces : (s.namespaces || []);
}

function scheduleWhat(s) {
  if (!s.spec.template) return `experiment ${s.spec.experiment}`;
  const t = s.spec.template;
  return `${t.action} ${t.target.namespaces.join(",")} ${t.target.label_selector || ""}`;
}

async function schedulesView() {
  const list = await actions();
  await learnNamespaces();
  const mayCreate = access.mayAnywhere("schedules.create") || access.may("cluster.chaos");
  const form = new JobForm(list, { idPrefix: "sched", nodeLevel: access.may("cluster.chaos") });
  const kind = el("select", { id: "sched-kind" }, el("option", { value: "interval" }, "every (interval)"), el("option", { value: "cron" }, "cron"));
  const when_ = el("input", { id: "sched-when", placeholder: "10m", "data-loc": "" });
  const whenError = el("p", { class: "field-error", id: "sched-when-error", hidden: true });
  const idInput = el("input", { id: "sched-id", placeholder: "nightly-web (optional)" });
  const paused = el("input", { id: "sched-paused", type: "checkbox" });
  const body = el("tbody");
  const error = el("p", { class: "error", role: "alert" });
  const created = el("p", { role: "status" });
  kind.addEventListener("change", () => { when_.placeholder = kind.value === "cron" ? "0 9-17 * * mon-fri" : "10m"; });
  when_.setAttribute("aria-describedby", "sched-when-error");
  const formEl = el("form", { class: "card", novalidate: true, "aria-labelledby": "sched-create-title" },
    el("h2", { id: "sched-create-title" }, "New schedule"),
    el("div", { class: "grid" },
      el("div", { class: "field" }, el("label", { for: "sched-kind" }, "Repeat"), kind),
      el("div", { class: "field" }, el("label", { for: "sched-when" }, "Interval or cron expression"), when_, whenError),
      el("div", { class: "field" }, el("label", { for: "sched-id" }, "Schedule id"), idInput),
      el("div", { class: "field check" }, paused, " ", el("label", { for: "sched-paused" }, "Start paused"))),
    el("h2", {}, "Job template"), form.root,
    el("p", {}, el("button", { type: "submit", id: "sched-create" }, "Create schedule")), created);
  const { who, what } = access.describe();
  main.replaceChildren(el("h1", {}, "Schedules"), error,
    el("div", { class: "table-wrap" }, el("table", { id: "schedules-table" },
      el("thead", {}, el("tr", {}, el("th", {}, "Schedule"), el("th", {}, "When"), el("th", {}, "Job"),
        el("th", {}, "State"), el("th", {}, "Next run"), el("th", { class: "hide-narrow" }, "Last runs"), el("th", {}, "Actions"))),
      body)),
    mayCreate ? formEl : el("p", { class: "card", id: "not-allowed" },
      `Signed in as ${who} (${what}), which may not create schedules in any namespace shown.`));
  const check = mayCreate ? guardForm(form, [formEl.querySelector("#sched-create")], "schedules.create", "create schedules") : null;
  const load = async () => {
    const answer = await api("GET", "/schedules");
    await access.ensure(answer.items.flatMap(scheduleNamespaces)).catch(() => {});
    error.textContent = "";
    body.replaceChildren(...answer.items.map((s) => el("tr", { "data-schedule": s.id },
      el("td", {}, s.id),
      el("td", {}, s.spec.cron ? `cron ${s.spec.cron} (${s.spec.time_zone})` : s.spec.interval != null ? `every ${dur(s.spec.interval)}` : `mtbf ${dur(s.spec.mtbf)}`),
      el("td", {}, scheduleWhat(s)),
      el("td", { class: "sched-state" }, s.spec.paused ? "paused" : "active"),
      el("td", {}, s.spec.paused ? "—" : when(s.next_run_at)),
      el("td", { class: "hide-narrow" }, s.last_runs.length ? el("ul", {}, ...s.last_runs.slice(0, 3).map((r) =>
        el("li", {}, `${when(r.slot_at)}: ${r.outcome}${r.job_id ? " " : ""}`, r.job_id ? el("a", { href: `#/jobs/${encodeURIComponent(r.job_id)}` }, r.job_id) : null))) : "none yet"),
      el("td", {}, el("div", { class: "row" },
        mayChangeSchedule(s, "schedules.update") && el("button", { type: "button", class: "secondary", "aria-label": `${s.spec.paused ? "Resume" : "Pause"} schedule ${s.id}`,
          onclick: async () => { try { await api("PATCH", `/schedules/${encodeURIComponent(s.id)}`, { paused: !s.spec.paused }); await load(); } catch (e) { error.textContent = e.message; } } },
        s.spec.paused ? "Resume" : "Pause"),
        mayChangeSchedule(s, "schedules.delete") && el("button", { type: "button", class: "danger", "aria-label": `Delete schedule ${s.id}`,
          onclick: async () => {
            if (!(await confirmDialog(`Delete schedule ${s.id}?`, "Running jobs it started go on.", "Delete"))) return;
            try { await api("DELETE", `/schedules/${encodeURIComponent(s.id)}`); await load(); } catch (e) { error.textContent = e.message; }
          } }, "Delete"))))));
    if (!answer.items.length) body.append(el("tr", {}, el("td", { colspan: "7" }, "No schedules yet.")));
  };
  formEl.addEventListener("submit", async (event) => {
    event.preventDefault();
    created.textContent = "";
    whenError.hidden = true; when_.removeAttribute("aria-invalid");
    const { spec, errors } = form.spec();
    if (errors.length) { form.showErrors(errors); return; }
    if (await check()) return;
    const payload = { template: spec, paused: paused.checked };
    if (idInput.value.trim()) payload.id = idInput.value.trim();
    payload[kind.value] = when_.value.trim() || null;
    try {
      const schedule = await api("POST", "/schedules", payload);
      form.clearErrors();
      created.textContent = `Created schedule ${schedule.id}.`;
      await load();
    } catch (err) {
      if (!(err instanceof ApiError) || err.status === 401) return;
      const errs = err.problem.errors || [];
      const mine = errs.filter((e) => /^(body\.)?(cron|interval|mtbf|id)\b|^body$/.test(e.loc) || !/template/.test(e.loc));
      if (mine.length) {
        whenError.textContent = mine.map((e) => e.msg).join("; "); whenError.hidden = false;
        when_.setAttribute("aria-invalid", "true");
      }
      form.showErrors(errs.filter((e) => !mine.includes(e)), mine.length ? null : err.message, "template.");
    }
  });
  every(5000, load);
  onIdentity(() => load().catch(() => {}));
}

// ---------------------------------------------------------------- routing

function stopView() { for (const fn of cleanup.splice(0)) fn(); }

async function route() {
  if (!token.get()) { signInView(); return; }
  stopView();
  clearNotice();
  const hash = location.hash.replace(/^#\/?/, "") || "cluster";
  const [path, query = ""] = hash.split("?");
  const [view, arg] = path.split("/");
  for (const a of document.querySelectorAll("nav a")) {
    if (a.dataset.view === view) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
  document.title = `Pystol · ${view}`;
  try {
    if (view === "run") await runView();
    else if (view === "jobs" && arg) await jobView(decodeURIComponent(arg));
    else if (view === "jobs") await jobsView(query);
    else if (view === "schedules") await schedulesView();
    else if (experiments.isExperimentsRoute(view)) {
      await experiments.route(main, view, arg && decodeURIComponent(arg),
        { confirm: confirmDialog, failed, notify, every });
    }
    else clusterView();
  } catch (err) {
    if (!(err instanceof ApiError && err.status === 401)) main.replaceChildren(el("p", { class: "error" }, err.message));
  }
}

function start() {
  document.getElementById("nav").hidden = false;
  document.getElementById("session").hidden = false;
  renderIdentity();
  stopHaltPolling();
  pollHalt();
  route();
}

// A page loaded with a token from this tab's session: ask who it is first.
async function resume() {
  try {
    await access.load([]);
  } catch (error) {
    if (!(error instanceof ApiError && error.status === 401)) {
      main.replaceChildren(el("p", { class: "error" }, `Cannot reach the API: ${error.message}`));
    }
    return;
  }
  start();
}

window.addEventListener("hashchange", () => { if (token.get()) route(); });
if (token.get()) resume(); else signInView();
