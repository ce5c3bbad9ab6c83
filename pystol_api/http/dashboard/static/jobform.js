// The job form, generated from the action catalogue's JSON Schemas; used by Run and by
// the schedule form (as its template).
import { el } from "./dom.js";

let counter = 0;

function typeOf(schema) {
  if (!schema) return "json";
  if (schema.enum) return "enum";
  if (schema.anyOf) {
    const real = schema.anyOf.filter((s) => s.type !== "null");
    if (real.length === 1) return typeOf({ ...real[0], default: schema.default });
    return "json";
  }
  if (schema.type === "array" && schema.items && ["string", "integer", "number"].includes(
    schema.items.type || (schema.items.enum ? "string" : ""))) return "list";
  return { string: "string", integer: "integer", number: "number", boolean: "boolean" }[schema.type] || "json";
}

function realSchema(schema) {
  if (schema && schema.anyOf) {
    const real = schema.anyOf.filter((s) => s.type !== "null");
    if (real.length === 1) return real[0];
  }
  return schema || {};
}

// One labelled field with an error slot; `loc` is the API's field path it answers for.
function field(label, control, { loc, hint, check = false } = {}) {
  const id = control.id || `f${++counter}`;
  control.id = id;
  const error = el("p", { class: "field-error", id: `${id}-error`, hidden: true });
  const hintEl = hint ? el("p", { class: "hint", id: `${id}-hint` }, hint) : null;
  control.setAttribute("aria-describedby", [hintEl && hintEl.id, error.id].filter(Boolean).join(" "));
  if (loc) control.dataset.loc = loc;
  const lab = el("label", { for: id }, label);
  const box = check ? el("div", { class: "field check" }, control, " ", lab, hintEl, error)
    : el("div", { class: "field" }, lab, control, hintEl, error);
  box.dataset.loc = loc || "";
  return box;
}

export class JobForm {
  // `nodeLevel: false` leaves out what only node-level chaos may use (the caller lacks
  // cluster.chaos): actions on nodes, and pinning a stress to a node.
  constructor(actions, { idPrefix = "run", nodeLevel = true } = {}) {
    this.nodeLevel = nodeLevel;
    this.actions = nodeLevel ? actions : actions.filter((a) => a.targets !== "nodes");
    actions = this.actions;
    this.prefix = idPrefix;
    this.scopeProblem = null;
    this.paramControls = [];
    this.root = el("div", { class: "jobform" });
    this.general = el("p", { class: "error", role: "alert", hidden: true });
    const id = (name) => `${idPrefix}-${name}`;
    this.action = el("select", { id: id("action"), name: "action" },
      ...actions.map((a) => el("option", { value: a.name }, a.name)));
    this.description = el("p", { class: "hint" });
    this.namespaceOptions = el("datalist", { id: id("namespace-options") });
    this.namespaces = el("input", { id: id("namespaces"), name: "namespaces", placeholder: "shop, payments",
      list: id("namespace-options"), autocomplete: "off" });
    this.names = el("input", { id: id("names"), name: "names", placeholder: "node-1, node-2" });
    this.labelSelector = el("input", { id: id("label-selector"), name: "label_selector", placeholder: "app=web" });
    this.fieldSelector = el("input", { id: id("field-selector"), name: "field_selector", placeholder: "status.phase=Running" });
    this.mode = el("select", { id: id("mode"), name: "mode" },
      ...["one", "all", "fixed", "fixed-percent", "random-max-percent"].map((m) => el("option", { value: m }, m)));
    this.value = el("input", { id: id("value"), name: "value", type: "number", step: "any", min: "0" });
    this.duration = el("input", { id: id("duration"), name: "duration", placeholder: "30s, 5m" });
    this.dryRun = el("input", { id: id("dry-run"), name: "dry_run", type: "checkbox" });
    this.nsField = field("Namespaces", this.namespaces, { loc: "target.namespaces", hint: "Comma-separated." });
    // Why the signed-in identity may not use these namespaces (set by the page, not the API).
    this.scopeNote = el("p", { class: "scope-note", id: id("scope"), role: "status", hidden: true });
    this.nsField.append(this.namespaceOptions);
    this.namespaces.setAttribute("aria-describedby",
      `${this.namespaces.getAttribute("aria-describedby")} ${this.scopeNote.id}`);
    this.namesField = field("Node names", this.names, { loc: "target.names", hint: "Comma-separated; or use a selector." });
    this.paramsBox = el("div", { class: "grid" });
    this.root.append(
      this.general,
      el("div", { class: "grid" },
        field("Action", this.action, { loc: "action" }),
        el("div", {}, this.description)),
      el("h2", {}, "Target"),
      this.scopeNote,
      el("div", { class: "grid" },
        this.nsField, this.namesField,
        field("Label selector", this.labelSelector, { loc: "target.label_selector" }),
        field("Field selector", this.fieldSelector, { loc: "target.field_selector" }),
        field("Mode", this.mode, { loc: "target.mode" }),
        field("Value", this.value, { loc: "target.value", hint: "A count (fixed) or a percent." })),
      el("h2", {}, "Parameters"),
      this.paramsBox,
      el("h2", {}, "Run"),
      el("div", { class: "grid" },
        field("Duration", this.duration, { loc: "duration", hint: "How long the fault is held." }),
        field("Dry run (change nothing)", this.dryRun, { loc: "dry_run", check: true })),
    );
    if (actions.some((a) => a.name === "pod-kill")) this.action.value = "pod-kill";
    this.action.addEventListener("change", () => this.renderParams());
    this.renderParams();
  }

  current() { return this.actions.find((a) => a.name === this.action.value); }

  // The namespaces typed, as the spec will carry them.
  namespaceList() {
    return this.namespaces.value.split(",").map((s) => s.trim()).filter(Boolean);
  }

  // Suggest these namespaces (those the identity may use) in the namespaces field.
  setNamespaceOptions(namespaces) {
    const wanted = namespaces.join(",");
    if (this.namespaceOptions.dataset.values === wanted) return;
    this.namespaceOptions.dataset.values = wanted;
    this.namespaceOptions.replaceChildren(...namespaces.map((n) => el("option", { value: n })));
    if (namespaces.length) this.namespaces.placeholder = namespaces.slice(0, 3).join(", ");
  }

  // Tell (or stop telling) why the identity may not run this job; null: it may.
  setScopeProblem(problem) {
    this.scopeProblem = problem || null;
    this.scopeNote.textContent = problem || "";
    this.scopeNote.hidden = !problem;
  }

  renderParams() {
    const action = this.current();
    this.description.textContent = action ? action.description : "";
    const nodes = action && action.targets === "nodes";
    this.nsField.hidden = !!nodes;
    this.namesField.hidden = !nodes;
    this.paramsBox.replaceChildren();
    this.paramControls = [];
    const props = (action && action.params_schema.properties) || {};
    const required = new Set((action && action.params_schema.required) || []);
    for (const [name, schema] of Object.entries(props)) {
      if (!this.nodeLevel && name === "node") continue;  // pinning to a node is node-level chaos
      const kind = typeOf(schema);
      const real = realSchema(schema);
      const id = `${this.prefix}-param-${name}`;
      let control;
      if (kind === "boolean") {
        control = el("input", { id, type: "checkbox" });
        control.checked = schema.default === true;
      } else if (kind === "enum") {
        control = el("select", { id }, el("option", { value: "" }, required.has(name) ? "choose…" : "(default)"),
          ...real.enum.map((v) => el("option", { value: String(v) }, String(v))));
        if (schema.default != null) control.value = String(schema.default);
      } else if (kind === "integer" || kind === "number") {
        control = el("input", { id, type: "number", step: kind === "integer" ? "1" : "any" });
        if (real.minimum != null) control.min = real.minimum;
        if (real.maximum != null) control.max = real.maximum;
        if (schema.default != null) control.placeholder = String(schema.default);
      } else if (kind === "list") {
        control = el("input", { id });
        if (Array.isArray(schema.default)) control.placeholder = schema.default.join(", ");
      } else if (kind === "string") {
        control = el("input", { id });
        if (schema.default != null) control.placeholder = String(schema.default);
      } else {
        control = el("textarea", { id, rows: "2", placeholder: "JSON" });
      }
      const label = (schema.title || name) + (required.has(name) ? " (required)" : "");
      const hint = (schema.description || "") + (kind === "list" ? " Comma-separated." : "") +
        (kind === "json" ? " As JSON." : "");
      this.paramsBox.append(field(label, control, { loc: `params.${name}`, hint: hint.trim() || null,
        check: kind === "boolean" }));
      this.paramControls.push({ name, kind, control, schema: real, dflt: schema.default });
    }
    if (!this.paramControls.length) this.paramsBox.append(el("p", { class: "hint" }, "This action takes no parameters."));
  }

  // The JobSpec to send; client-side parse errors are reported like the API's.
  spec() {
    const errors = [];
    const list = (text) => text.split(",").map((s) => s.trim()).filter(Boolean);
    const action = this.current();
    const target = { mode: this.mode.value };
    if (action && action.targets === "nodes") {
      if (this.names.value.trim()) target.names = list(this.names.value);
    } else {
      target.namespaces = list(this.namespaces.value);
    }
    if (this.labelSelector.value.trim()) target.label_selector = this.labelSelector.value.trim();
    if (this.fieldSelector.value.trim()) target.field_selector = this.fieldSelector.value.trim();
    if (this.value.value.trim() !== "") target.value = Number(this.value.value);
    const params = {};
    for (const { name, kind, control, schema, dflt } of this.paramControls) {
      const raw = control.type === "checkbox" ? null : control.value.trim();
      if (kind === "boolean") {
        if (control.checked !== (dflt === true)) params[name] = control.checked;
      } else if (raw === "") {
        continue;
      } else if (kind === "integer" || kind === "number") {
        params[name] = Number(raw);
      } else if (kind === "list") {
        const num = ["integer", "number"].includes(schema.items && schema.items.type);
        params[name] = list(raw).map((v) => (num ? Number(v) : v));
      } else if (kind === "json") {
        try { params[name] = JSON.parse(raw); } catch { errors.push({ loc: `params.${name}`, msg: "not valid JSON" }); }
      } else {
        params[name] = raw;
      }
    }
    const spec = { action: this.action.value, target, params, dry_run: this.dryRun.checked };
    if (this.duration.value.trim()) spec.duration = this.duration.value.trim();
    return { spec, errors };
  }

  clearErrors() {
    this.general.hidden = true;
    this.general.textContent = "";
    for (const p of this.root.querySelectorAll(".field-error")) { p.hidden = true; p.textContent = ""; }
    for (const c of this.root.querySelectorAll("[aria-invalid]")) c.removeAttribute("aria-invalid");
  }

  // Put each `errors[].loc` beside its field (`prefix` is stripped: "template." for schedules);
  // what matches no field is listed at the top.
  showErrors(errors, detail, prefix = "") {
    this.clearErrors();
    const loose = [];
    let first = null;
    for (const { loc, msg } of errors || []) {
      let path = loc.startsWith("body.") ? loc.slice(5) : loc;
      if (prefix && path.startsWith(prefix)) path = path.slice(prefix.length);
      path = path.replace(/\[\d+\]/g, "");
      let control = null;
      for (let probe = path; probe; probe = probe.includes(".") ? probe.slice(0, probe.lastIndexOf(".")) : "") {
        control = this.root.querySelector(`[data-loc="${CSS.escape(probe)}"]:not(.field)`);
        if (control && !control.closest("[hidden]")) break;
        control = null;
      }
      if (!control) { loose.push(`${loc}: ${msg}`); continue; }
      control.setAttribute("aria-invalid", "true");
      const slot = document.getElementById(`${control.id}-error`);
      slot.textContent = slot.textContent ? `${slot.textContent}; ${msg}` : msg;
      slot.hidden = false;
      first = first || control;
    }
    if (loose.length || (!errors?.length && detail)) {
      this.general.textContent = loose.length ? loose.join("; ") : detail;
      this.general.hidden = false;
    }
    if (first) first.focus();
  }
}
