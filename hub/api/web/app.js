// The orderhub web app: one page, a route per screen, everything read and written through the REST
// API (/api/v1) with the session cookie and its CSRF token. No build step: plain modules.

import * as queue from "/static/queue.js";

const main = document.getElementById("main");
const session = { me: null, role: null };
const KEPT_USER = "orderhub.user";
const STATUSES = ["DRAFT", "CONFIRMED", "APPROVED", "RELEASED", "IN_PRODUCTION", "COMPLETED", "SHIPPED", "CLOSED",
  "CANCELLED"];

// --- talking to the API ---------------------------------------------------------------------------

class Problem extends Error {
  constructor(status, body) {
    super(body.detail || body.title || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

function cookie(name) {
  const found = document.cookie.split("; ").find((c) => c.startsWith(`${name}=`));
  return found ? decodeURIComponent(found.slice(name.length + 1)) : null;
}

async function call(method, path, body) {
  const headers = { accept: "application/json" };
  if (body !== undefined) headers["content-type"] = "application/json";
  if (method !== "GET") headers["X-CSRF-Token"] = cookie("orderhub_csrf") || "";
  const response = await fetch(path, {
    method, headers, credentials: "same-origin", body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  const data = text ? JSON.parse(text) : null;
  if (response.status === 401 && !path.startsWith("/api/v1/auth/")) {
    go(`/login?next=${encodeURIComponent(location.pathname)}`);
    throw new Problem(401, data || {});
  }
  if (!response.ok) throw new Problem(response.status, data || {});
  return { status: response.status, data };
}

const get = async (path) => (await call("GET", path)).data;
const post = async (path, body) => (await call("POST", path, body)).data;

// --- rendering helpers ----------------------------------------------------------------------------

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else el.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

const show = (...nodes) => main.replaceChildren(...nodes.flat().filter((n) => n !== null && n !== undefined && n !== false));
const value = (v) => (v === null || v === undefined || v === "" ? "-" : v);
const when = (iso) => (iso ? new Date(iso).toLocaleString() : "-");
const json = (text) => { try { return JSON.parse(text); } catch { return text; } };
const plain = (text) => (text === null || text === undefined ? "-" : typeof json(text) === "object"
  ? JSON.stringify(json(text)) : String(json(text)));

function link(path, text) {
  return h("a", { href: path, dataset: { link: "" } }, text);
}

function statusBadge(status, onHold) {
  return h("span", { class: `status status-${String(status).toLowerCase()}` }, status, onHold ? " (on hold)" : "");
}

function field(label, input, error) {
  return h("label", { class: "field" }, h("span", {}, label), input,
    h("small", { class: "error", dataset: { for: input.name || "" } }, error || ""));
}

function problemText(problem) {
  const errors = (problem.body && problem.body.errors) || [];
  const lines = errors.filter((e) => e.message).map((e) => `${e.field || "order"}: ${e.message}`);
  return lines.length ? lines.join("; ") : problem.message;
}

// --- routing --------------------------------------------------------------------------------------

const routes = [
  [/^\/login$/, login],
  [/^\/$/, orders],
  [/^\/new$/, newOrder],
  [/^\/approvals$/, approvals],
  [/^\/conflicts$/, conflicts],
  [/^\/alerts$/, alerts],
  [/^\/scan$/, scan],
  [/^\/o\/(.+)$/, orderPage],
];
let leave = () => {};
//: The order as an event stream pushed it (newer than the read model): the next render shows it.
let pushed = null;
//: Each render's number: a page whose render was overtaken by another shows nothing.
let generation = 0;
const current = (mine) => mine === generation;

function header() {
  document.getElementById("nav").hidden = !session.me;
  const who = document.getElementById("who");
  who.replaceChildren();
  if (!session.me) return;
  const roles = session.me.roles;
  const kept = localStorage.getItem(`orderhub.role.${session.me.username}`);
  session.role = roles.includes(kept) ? kept : roles[0];
  const role = roles.length > 1
    ? h("select", { name: "role", "aria-label": "act as", onchange: (e) => {
      session.role = e.target.value;
      localStorage.setItem(`orderhub.role.${session.me.username}`, session.role);
    } }, roles.map((r) => h("option", { value: r, selected: r === session.role }, r)))
    : h("span", {}, roles[0]);
  who.append(h("span", {}, `${session.me.username} as `), role, " ",
    h("button", { class: "secondary small", onclick: logout }, "Log out"));
}

async function logout() {
  await call("DELETE", "/api/v1/auth/session").catch(() => {});
  await forgetKept();
  localStorage.removeItem(KEPT_USER);
  session.me = null;
  go("/login");
}

/** The answers the service worker kept belong to the person who read them: gone when another logs in. */
async function forgetKept() {
  if (!("caches" in window)) return;
  for (const name of await caches.keys()) if (name.startsWith("orderhub-data")) await caches.delete(name);
}

export function go(path) {
  if (location.pathname + location.search !== path) history.pushState({}, "", path);
  render();
}

async function render() {
  leave();
  leave = () => {};
  const path = location.pathname;
  const mine = ++generation;
  if (path !== "/login" && !session.me) {
    try {
      session.me = await get("/api/v1/me");
    } catch (problem) {
      if (problem instanceof TypeError && localStorage.getItem(KEPT_USER)) {
        session.me = JSON.parse(localStorage.getItem(KEPT_USER)); // offline: the person last logged in here
      } else {
        if (problem.status !== 401) throw problem;
        return;
      }
    }
  }
  if (mine !== generation) return;
  header();
  for (const [pattern, page] of routes) {
    const match = path.match(pattern);
    if (match) {
      try {
        await page(...match.slice(1).map(decodeURIComponent));
      } catch (problem) {
        if (problem.status === 401) return;
        if (problem instanceof TypeError) { show(h("p", { class: "notice" }, "No network, and this page is not kept on this device.")); return; }
        show(h("p", { class: "notice error" }, problem.message));
      }
      return;
    }
  }
  show(h("p", {}, "No such page. ", link("/", "Orders")));
}

document.addEventListener("click", (event) => {
  const a = event.target.closest("a[data-link]");
  if (a && a.origin === location.origin) {
    event.preventDefault();
    go(a.pathname + a.search);
  }
});
window.addEventListener("popstate", render);

// --- the network ----------------------------------------------------------------------------------

function online() {
  const banner = document.getElementById("network");
  banner.textContent = "Offline: changes are kept on this device and sent when the network is back.";
  banner.hidden = navigator.onLine;
  if (navigator.onLine) sendQueued();
}

async function sendQueued() {
  if (!session.me) return;
  const banner = document.getElementById("network");
  try {
    const results = await queue.upload(session.me.username, post);
    if (results.length) window.dispatchEvent(new CustomEvent("orderhub:uploaded", { detail: results }));
  } catch (error) {
    // offline, or logged out: the edits stay queued; anything else is said
    if (error instanceof Problem && error.status !== 401) {
      banner.hidden = false;
      banner.textContent = `Your saved changes could not be sent (${error.message}); they stay on this device.`;
    }
  }
}

window.addEventListener("online", online);
window.addEventListener("offline", online);

// --- screens --------------------------------------------------------------------------------------

async function login() {
  const params = new URLSearchParams(location.search);
  const message = h("p", { class: "error", role: "alert" });
  const username = h("input", { name: "username", autocomplete: "username", required: true });
  const password = h("input", { name: "password", type: "password", autocomplete: "current-password", required: true });
  const form = h("form", {
    class: "card narrow",
    onsubmit: async (event) => {
      event.preventDefault();
      try {
        const me = await post("/api/v1/auth/session", { username: username.value, password: password.value });
        const before = JSON.parse(localStorage.getItem(KEPT_USER) || "null");
        if (!before || before.username !== me.username) await forgetKept();
        localStorage.setItem(KEPT_USER, JSON.stringify({ username: me.username, roles: me.roles }));
        session.me = me;
        go(params.get("next") || "/");
        sendQueued();
      } catch (problem) {
        message.textContent = problem.message;
      }
    },
  }, h("h1", {}, "Log in"), field("User", username), field("Password", password), message,
  h("button", { type: "submit" }, "Log in"));
  show(form);
}

async function orders() {
  const params = new URLSearchParams(location.search);
  const filters = ["status", "q", "due_from", "due_to", "alerted", "overdue", "page"];
  const query = new URLSearchParams();
  for (const name of filters) if (params.get(name)) query.set(name, params.get(name));
  const page = await get(`/api/v1/orders?${query}`);
  const status = h("select", { name: "status" }, h("option", { value: "" }, "any status"),
    STATUSES.map((s) => h("option", { value: s, selected: params.get("status") === s }, s)));
  const form = h("form", {
    class: "filters",
    onsubmit: (event) => {
      event.preventDefault();
      const data = new URLSearchParams();
      for (const [k, v] of new FormData(event.target)) if (v) data.set(k, v);
      go(`/?${data}`);
    },
  }, status,
  h("input", { name: "q", placeholder: "number, customer, reference", value: params.get("q") || "" }),
  h("input", { name: "due_from", type: "date", value: params.get("due_from") || "", "aria-label": "due from" }),
  h("input", { name: "due_to", type: "date", value: params.get("due_to") || "", "aria-label": "due to" }),
  h("label", { class: "check" }, h("input", { type: "checkbox", name: "alerted", value: "true", checked: params.get("alerted") === "true" }), "alerted"),
  h("label", { class: "check" }, h("input", { type: "checkbox", name: "overdue", value: "true", checked: params.get("overdue") === "true" }), "overdue"),
  h("button", { type: "submit" }, "Filter"));
  const list = h("ul", { class: "orders" }, page.items.map((o) => h("li", { class: "order-card" },
    h("div", { class: "row" }, link(`/o/${o.order_number}`, o.order_number), statusBadge(o.status, o.on_hold)),
    h("div", { class: "row muted" }, value(o.customer_name), h("span", {}, "due ", value(o.promised_delivery || o.requested_delivery))),
    o.amount_net ? h("div", { class: "row muted" }, `${o.amount_net} ${value(o.currency)}`) : null)));
  const pageNo = Number(params.get("page") || 1);
  const pager = h("div", { class: "pager" },
    pageNo > 1 ? h("button", { onclick: () => { params.set("page", pageNo - 1); go(`/?${params}`); } }, "Previous") : null,
    page.more ? h("button", { onclick: () => { params.set("page", pageNo + 1); go(`/?${params}`); } }, "Next") : null);
  show(h("h1", {}, "Orders"), form, page.items.length ? list : h("p", {}, "No orders match."), pager);
}

const EDITABLE = [
  ["customer_po_number", "Customer PO", "text"], ["contact", "Contact", "text"],
  ["requested_delivery", "Requested delivery", "date"], ["priority", "Priority", "number"],
];

async function orderPage(ref) {
  const mine = generation;
  const printing = ref.endsWith("/print");
  if (printing) ref = ref.slice(0, -"/print".length);
  const mineRef = (o) => o && (o.order_id === ref || o.order_number === ref);
  let order = mineRef(pushed) ? pushed : null;
  const fromPush = Boolean(order);
  // an order just made may take a moment to reach the read model: look again for a few seconds
  for (let tries = 0; !order; tries += 1) {
    try {
      order = await get(`/api/v1/orders/${encodeURIComponent(ref)}`);
    } catch (problem) {
      if (problem.status !== 404) throw problem;
      if (tries >= 20) { show(h("p", { class: "notice" }, `No order ${ref}.`), link("/", "Orders")); return; }
      if (tries === 0) show(h("p", { class: "muted" }, `Looking for ${ref}...`));
      await new Promise((r) => setTimeout(r, 500));
      if (!current(mine)) return; // the person went elsewhere
    }
  }
  if (mineRef(pushed) && pushed.version > order.version) order = pushed; // the read model is a checkpoint behind
  if (printing) { location.replace(`/o/${encodeURIComponent(order.order_number)}/print`); return; }
  const [history, conflictList, alertList] = await Promise.all([
    get(`/api/v1/orders/${order.order_id}/history`).catch(() => []),
    get(`/api/v1/orders/${order.order_id}/conflicts`).catch(() => []),
    get(`/api/v1/orders/${order.order_id}/alerts`).catch(() => []),
  ]);
  const pending = (await queue.waiting(session.me.username)).filter((e) => e.order === order.order_id);
  const answered = Object.values(await queue.outcomesOf(session.me.username)).filter((o) => o.order === order.order_id);
  if (!current(mine)) return;
  const hidden = new Set(order.hidden_fields);
  const amounts = hidden.has("amounts.net") ? []
    : [h("dt", {}, "Net"), h("dd", {}, `${value(order.amounts.net)} ${value(order.currency)}`),
      h("dt", {}, "Gross"), h("dd", {}, `${value(order.amounts.gross)} ${value(order.currency)}`)];
  const message = h("p", { class: "result", role: "status" });
  const inputs = EDITABLE.map(([name, label, type]) => h("input", { name, type, value: order[name] ?? "" }));
  const editForm = h("form", {
    class: "card edit",
    onsubmit: async (event) => {
      event.preventDefault();
      const changes = {};
      inputs.forEach((input) => {
        const before = order[input.name] ?? "";
        if (String(input.value) !== String(before)) {
          changes[input.name] = input.value === "" ? null : input.type === "number" ? Number(input.value) : input.value;
        }
      });
      if (!Object.keys(changes).length) { message.textContent = "Nothing changed."; return; }
      const edit = await queue.keep(session.me.username, session.role, order.order_id, order.version, changes);
      message.textContent = `Kept on this device (${edit.event_id}); sending...`;
      if (!navigator.onLine) { message.textContent = "Offline: kept on this device, sent when the network is back."; return; }
      await sendQueued();
      const outcome = (await queue.outcomesOf(session.me.username))[edit.event_id];
      message.textContent = outcome ? `${outcome.outcome}${outcome.version ? `, version ${outcome.version}` : ""}${outcome.message ? `: ${outcome.message}` : ""}`
        : "Kept on this device, sent when the network is back.";
    },
  }, h("h2", {}, "Change"), EDITABLE.map(([name, label], i) => field(label, inputs[i])),
  h("button", { type: "submit" }, "Save"), message);

  const approve = order.approvals_waiting.map((level) => {
    const comment = h("input", { name: `comment-${level}`, placeholder: "comment (needed to refuse)" });
    const said = h("span", { class: "result" });
    const decide = (decision) => async () => {
      try {
        const d = await post(`/api/v1/orders/${order.order_id}/approvals/${level}`,
          { decision, comment: comment.value || null, base_version: order.version });
        said.textContent = `${d.outcome}, version ${d.version}`;
      } catch (problem) { said.textContent = problemText(problem); }
    };
    return h("div", { class: "card approve" }, h("h2", {}, `Approval: ${level}`), comment,
      h("button", { onclick: decide("approved") }, "Approve"), h("button", { class: "secondary", onclick: decide("refused") }, "Refuse"), said);
  });

  const timeline = history.filter((e) => e.diffs.some((d) => d.field === "status")).map((e) => {
    const d = e.diffs.find((x) => x.field === "status");
    return h("li", {}, statusBadge(json(d.after)), ` ${when(e.accepted_at)} by ${e.source_system} ${e.actor_id}`);
  });
  show(
    h("div", { class: "order-head" }, h("h1", {}, order.order_number), statusBadge(order.status, order.on_hold),
      h("span", { class: "version", dataset: { version: order.version } }, `version ${order.version}`),
      h("a", { href: `/o/${order.order_number}/print`, class: "print", target: "_blank" }, "Work order (print, QR)")),
    h("section", { class: "card" },
      h("dl", {}, h("dt", {}, "Customer"), h("dd", { class: "customer" }, value(order.customer && order.customer.name)),
        h("dt", {}, "Customer PO"), h("dd", { class: "po" }, value(order.customer_po_number)),
        h("dt", {}, "Requested"), h("dd", {}, value(order.requested_delivery)),
        h("dt", {}, "Promised"), h("dd", {}, value(order.promised_delivery)),
        h("dt", {}, "Hold"), h("dd", {}, order.on_hold ? order.hold_reasons.join("; ") : "no"), amounts)),
    h("section", { class: "card" }, h("h2", {}, "Lines"), h("table", {},
      h("thead", {}, h("tr", {}, h("th", {}, "Line"), h("th", {}, "Material"), h("th", {}, "Quantity"), h("th", {}, "Good"))),
      h("tbody", {}, order.lines.map((l) => h("tr", {}, h("td", {}, l.line_no), h("td", {}, l.material.id),
        h("td", {}, `${l.quantity} ${l.unit}`), h("td", {}, value(l.good_quantity))))))),
    pending.length || answered.length ? h("section", { class: "card offline" }, h("h2", {}, "Edits from this device"),
      h("ul", {}, pending.map((e) => h("li", { class: "queued" }, `waiting to be sent: ${Object.keys(e.changes).join(", ")}`)),
        answered.map((o) => h("li", { class: `answered outcome-${o.outcome.toLowerCase()}` },
          `${o.outcome}${o.version ? ` (version ${o.version})` : ""}: ${Object.keys(o.changes).join(", ")}${o.message ? ` - ${o.message}` : ""}`)))) : null,
    approve,
    editForm,
    conflictList.filter((c) => c.parked).length ? h("section", { class: "card" }, h("h2", {}, "Conflicts waiting"),
      conflictList.filter((c) => c.parked).map(conflictView)) : null,
    alertList.length ? h("section", { class: "card" }, h("h2", {}, "Alerts"),
      h("ul", {}, alertList.map((a) => h("li", {}, `${a.kind} ${a.stage} for ${a.notify}: ${a.reason}`)))) : null,
    h("section", { class: "card" }, h("h2", {}, "Status"), h("ol", { class: "timeline" }, timeline)),
    h("section", { class: "card" }, h("h2", {}, "Who changed what"), h("ol", { class: "history" }, history.slice().reverse().map((e) =>
      h("li", {}, h("strong", {}, `v${e.version} `), `${when(e.accepted_at)} ${e.source_system} ${e.actor_id} (${e.actor_role})`,
        h("ul", {}, e.diffs.map((d) => h("li", {}, `${d.field}: ${plain(d.before)} -> ${plain(d.after)}`))))))),
    h("section", { class: "card" }, h("h2", {}, "References"), h("ul", {}, order.external_refs.map((r) =>
      h("li", {}, `${r.system} ${r.object_type} ${r.external_number || r.external_id}`)))),
  );

  if (!current(mine)) return;
  // live: a new version re-renders the page (server-sent events), and so does an upload's answer
  const events = new EventSource(`/api/v1/orders/${encodeURIComponent(order.order_id)}/events`);
  events.addEventListener("version", (event) => {
    const data = JSON.parse(event.data);
    if (data.version > order.version) {
      pushed = data.order || null; // the engine's newest: shown at once, its history when the read model has it
      render();
    }
  });
  // shown from the push: its history etc. once the read model has caught up (then the push is not needed)
  const refresh = fromPush ? setTimeout(() => { if (current(mine)) render(); }, 3500) : null;
  const uploaded = () => render();
  window.addEventListener("orderhub:uploaded", uploaded);
  leave = () => { events.close(); clearTimeout(refresh); window.removeEventListener("orderhub:uploaded", uploaded); };
}

function conflictView(c) {
  const comment = h("input", { placeholder: "why (required)", name: "comment" });
  const said = h("span", { class: "result" });
  const resolve = (choice) => async () => {
    if (!comment.value) { said.textContent = "Say why."; return; }
    try {
      const d = await post(`/api/v1/conflicts/${encodeURIComponent(c.record_id)}/resolve`,
        { choice, comment: comment.value, role: session.role });
      said.textContent = `${d.outcome}${d.version ? `, version ${d.version}` : ""}`;
    } catch (problem) { said.textContent = problemText(problem); }
  };
  return h("div", { class: "conflict", dataset: { record: c.record_id } },
    h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "Field"), h("th", {}, "Now"), h("th", {}, "Proposed"))),
      h("tbody", {}, c.fields.map((f) => h("tr", {}, h("td", {}, f.field),
        h("td", {}, plain(f.current_value), h("br"), h("small", {}, `${f.current_writer.source_system} ${f.current_writer.actor_id}`)),
        h("td", {}, plain(f.proposed_value), h("br"), h("small", {}, `${f.proposed_writer.source_system} ${f.proposed_writer.actor_id}`)))))),
    comment, h("button", { onclick: resolve("current") }, "Keep now"), h("button", { onclick: resolve("proposed") }, "Take proposed"), said);
}

async function newOrder() {
  const fields = [
    ["customer.id", "Customer id", "text"], ["customer.name", "Customer name", "text"],
    ["requested_delivery", "Requested delivery", "date"], ["instruction", "Process requirement (e.g. coating: zinc)", "text"],
    ["lines.10.material.id", "Material", "text"], ["lines.10.quantity", "Quantity", "number"], ["lines.10.unit", "Unit (e.g. C62, KGM)", "text"],
  ];
  const inputs = Object.fromEntries(fields.map(([name, , type]) => [name, h("input", { name, type, step: type === "number" ? "any" : null })]));
  const message = h("p", { class: "result", role: "status" });
  show(h("form", {
    class: "card",
    onsubmit: async (event) => {
      event.preventDefault();
      main.querySelectorAll("small.error").forEach((e) => { e.textContent = ""; });
      const values = {};
      for (const [name, input] of Object.entries(inputs)) {
        if (input.value === "") continue;
        if (name === "instruction") {
          const [key, ...text] = input.value.split(":");
          values.instructions = [text.length ? { key: key.trim(), text: text.join(":").trim() } : { key: null, text: input.value }];
        } else values[name] = input.type === "number" ? Number(input.value) : input.value;
      }
      try {
        const d = await post("/api/v1/orders", { values, role: session.role, event_id: `web-${crypto.randomUUID()}` });
        message.textContent = `${d.outcome}: version ${d.version}`;
        setTimeout(() => go(`/o/${d.order_id}`), 400);
      } catch (problem) {
        message.textContent = problem.status === 422 ? "Please complete the fields marked." : problemText(problem);
        for (const e of (problem.body && problem.body.errors) || []) {
          const name = e.field === "instructions" ? "instruction" : e.field;
          const slot = main.querySelector(`small.error[data-for="${CSS.escape(name || "")}"]`);
          if (slot) slot.textContent = e.message;
        }
      }
    },
  }, h("h1", {}, "New order"), fields.map(([name, label]) => field(label, inputs[name])),
  h("button", { type: "submit" }, "Create"), message));
}

async function approvals() {
  const waiting = await get("/api/v1/approvals");
  show(h("h1", {}, "Approvals waiting for you"), waiting.length ? h("ul", { class: "orders" }, waiting.map((o) =>
    h("li", { class: "order-card" }, h("div", { class: "row" }, link(`/o/${o.order_number}`, o.order_number), statusBadge(o.status)),
      h("div", { class: "row muted" }, value(o.customer_name), `levels: ${o.levels.join(", ")}`)))) : h("p", {}, "Nothing waits for you."));
}

//: How often an open list of conflicts looks for newly parked ones.
const LIST_REFRESH_MS = 5000;

async function conflicts() {
  const mine = generation;
  const card = (c) => h("section", { class: "card", dataset: { record: c.record_id } },
    h("h2", {}, link(`/o/${c.order_number || c.order_id}`, c.order_number || c.order_id)), conflictView(c));
  const none = h("p", {}, "No conflict waits.");
  const parked = await get("/api/v1/conflicts");
  if (!current(mine)) return;
  const shown = new Set(parked.map((c) => c.record_id));
  show(h("h1", {}, "Conflicts waiting for a person"), parked.length ? parked.map(card) : none);
  // newly parked conflicts are added below; the cards shown stay as they are (a comment being typed too)
  const look = setInterval(async () => {
    const now = await get("/api/v1/conflicts").catch(() => null);
    if (!now || !current(mine)) return;
    for (const c of now.filter((c) => !shown.has(c.record_id))) {
      shown.add(c.record_id);
      none.remove();
      main.append(card(c));
    }
  }, LIST_REFRESH_MS);
  leave = () => clearInterval(look);
}

async function alerts() {
  const open = await get("/api/v1/alerts");
  show(h("h1", {}, "Open alerts"), open.length ? h("ul", { class: "orders" }, open.map((a) => {
    const said = h("span", { class: "result" }, a.acknowledged_by ? `acknowledged by ${a.acknowledged_by}` : "");
    return h("li", { class: "order-card" }, h("div", { class: "row" }, link(`/o/${a.order_number}`, a.order_number), h("span", {}, a.stage)),
      h("div", { class: "row muted" }, a.reason),
      a.acknowledged_by ? said : h("div", {}, h("button", {
        onclick: async () => { const v = await post(`/api/v1/alerts/${encodeURIComponent(a.record_id)}/ack`, {}); said.textContent = `acknowledged by ${v.acknowledged_by}`; },
      }, "Acknowledge"), said));
  })) : h("p", {}, "No open alerts."));
}

async function scan() {
  const number = h("input", { name: "number", placeholder: "order number", autocomplete: "off" });
  const status = h("p", { class: "muted" });
  const video = h("video", { playsinline: true, muted: true, hidden: true });
  show(h("h1", {}, "Scan a work order"), video, status,
    h("form", { class: "card narrow", onsubmit: (e) => { e.preventDefault(); if (number.value) go(`/o/${number.value.trim()}`); } },
      field("Or type the order number", number), h("button", { type: "submit" }, "Open")));
  if (!("BarcodeDetector" in window) || !navigator.mediaDevices) {
    status.textContent = "This browser cannot read QR codes with the camera: type the number.";
    return;
  }
  try {
    const stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" } });
    video.srcObject = stream;
    video.hidden = false;
    await video.play();
    const detector = new window.BarcodeDetector({ formats: ["qr_code"] });
    status.textContent = "Point the camera at the work order's QR code.";
    let active = true;
    leave = () => { active = false; stream.getTracks().forEach((t) => t.stop()); };
    while (active) {
      const codes = await detector.detect(video).catch(() => []);
      const url = codes.map((c) => c.rawValue).find((v) => /\/o\/[^/]+$/.test(v));
      if (url) { go(new URL(url, location.origin).pathname); return; }
      await new Promise((r) => setTimeout(r, 250));
    }
  } catch (error) {
    status.textContent = "No camera available: type the number.";
  }
}

// --- start ----------------------------------------------------------------------------------------

if ("serviceWorker" in navigator) {
  navigator.serviceWorker.register("/sw.js", { scope: "/" }).catch(() => {});
}
online();
render();
