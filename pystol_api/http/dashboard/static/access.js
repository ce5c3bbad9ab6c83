// Who is signed in and what they may do, from GET /api/v1/whoami. The dashboard uses it
// only to avoid offering what the API would refuse: every request is still checked by the
// API, and a refusal (403) is shown to the user with the problem's detail.
import { api } from "./api.js";

const NAMESPACE = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
const MAX_NAMESPACES = 100;  // what /whoami answers for at most
const MAX_KUBERNETES_NAMESPACES = 30;  // ... for a Kubernetes identity (RBAC is asked)

let me = null;              // the last /whoami answer
let asked = [];             // the namespaces to ask for, most recent last
let ensured = new Set();    // the namespaces ensure() has asked for (once each)
let chain = Promise.resolve();
const listeners = new Set();

export function identity() { return me; }
export function clear() { me = null; asked = []; ensured = new Set(); }

// Call `fn(identity)` after every change; returns the function that stops it.
export function onChange(fn) { listeners.add(fn); return () => listeners.delete(fn); }

export function validNamespaces(list) {
  return [...new Set((list || []).filter((n) => typeof n === "string" && NAMESPACE.test(n)))];
}

// Ask /whoami again, for `namespaces` besides those asked before (one request at a time).
export function load(namespaces = [], options = {}) {
  const wanted = validNamespaces(namespaces);
  // Until the first answer says which kind of identity this is, ask as few as a
  // Kubernetes identity may.
  const limit = !me || (me.actor && me.actor.kind === "kubernetes")
    ? MAX_KUBERNETES_NAMESPACES : MAX_NAMESPACES;
  asked = [...asked.filter((n) => !wanted.includes(n)), ...wanted].slice(-limit);
  const run = async () => {
    const query = new URLSearchParams();
    for (const namespace of asked) query.append("namespace", namespace);
    const text = query.toString();
    me = await api("GET", `/whoami${text ? `?${text}` : ""}`, undefined, options);
    for (const fn of [...listeners]) {
      try { fn(me); } catch (error) { console.warn(error); }
    }
    return me;
  };
  const next = chain.then(run, run);
  chain = next.catch(() => {});
  return next;
}

// Make sure the answers for `namespaces` are known: asks /whoami only for namespaces it
// has not asked for yet, so views that call it on every change cannot loop.
export async function ensure(namespaces) {
  const missing = validNamespaces(namespaces)
    .filter((n) => !ensured.has(n) && !(me && n in me.namespace_permissions));
  for (const namespace of missing) ensured.add(namespace);
  if (missing.length || !me) await load(missing);
  return me;
}

export function isAdmin() { return !!me && me.role === "admin"; }

// May the identity use `permission` in `namespace` (null: at cluster scope)?
export function may(permission, namespace = null) {
  if (!me) return false;
  if (namespace == null) return !!me.cluster[permission];
  const list = me.namespace_permissions[namespace];
  if (list) return list.includes(permission);
  return isAdmin();  // an admin's role holds in every namespace; others: not known to be allowed
}

// `permission` in every one of `namespaces`; at cluster scope (cluster chaos) when there are none.
export function mayIn(permission, namespaces) {
  if (!namespaces || !namespaces.length) return may("cluster.chaos");
  return namespaces.every((namespace) => may(permission, namespace));
}

// `permission` in at least one namespace (or everywhere, as an admin).
export function mayAnywhere(permission) {
  if (!me) return false;
  return isAdmin() || Object.values(me.namespace_permissions).some((list) => list.includes(permission));
}

// The namespaces known to allow `permission`.
export function namespacesWith(permission) {
  if (!me) return [];
  return Object.entries(me.namespace_permissions).filter(([, list]) => list.includes(permission))
    .map(([namespace]) => namespace).sort();
}

const KINDS = { "settings-token": "API token", token: "Pystol token", kubernetes: "Kubernetes" };

// "Pystol token ci-shop", and "operator in shop" / "admin" / "Kubernetes RBAC".
export function describe() {
  if (!me) return { who: "", what: "" };
  const who = `${KINDS[me.actor.kind] || me.actor.kind} ${me.actor.name}`;
  let what;
  if (!me.role) what = "Kubernetes RBAC";
  else if (me.namespaces && me.namespaces.length) what = `${me.role} in ${me.namespaces.join(", ")}`;
  else what = me.role;
  return { who, what };
}
