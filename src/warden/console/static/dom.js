// Building the page. Every string from the server (task input and output, model text, tool
// arguments and results, file contents) is attacker-controlled: it only ever becomes a text
// node or an attribute value, never markup. Nothing here touches innerHTML.

/** h("a", {href: "#/tasks", onclick: fn, class: "x"}, "text", node, [more]) */
export function h(tag, props = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(props ?? {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) {
      // Handlers are functions only: an on* attribute would be code made of a string.
      if (typeof value === "function") element.addEventListener(name.slice(2), value);
    } else if (name === "class") {
      element.className = value;
    } else if (name === "dataset") {
      Object.assign(element.dataset, value);
    } else if (name === "value" || name === "checked" || name === "selected") {
      element[name] = value;
    } else if (name === "href") {
      element.setAttribute("href", safeHref(value));
    } else {
      element.setAttribute(name, value === true ? "" : String(value));
    }
  }
  append(element, children);
  return element;
}

function safeHref(value) {
  const href = String(value);
  // Only the console's own routes and blob: downloads: never javascript: or another origin.
  return href.startsWith("#/") || href.startsWith("blob:") ? href : "#/";
}

export function append(parent, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    parent.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return parent;
}

export function replaceChildren(parent, ...children) {
  parent.replaceChildren();
  return append(parent, children);
}

/** A link to a console route: `route("tasks", id)` → `#/tasks/<id>` with each part encoded. */
export function route(...parts) {
  return `#/${parts.map((p) => encodeURIComponent(p)).join("/")}`;
}

export function link(href, label, props = {}) {
  return h("a", { href, ...props }, label);
}

// -- formatting ----------------------------------------------------------------------------------

export function formatTime(value) {
  if (value === null || value === undefined || value === "") return "—";
  const date = typeof value === "number" ? new Date(value * 1000) : new Date(value);
  if (Number.isNaN(date.getTime())) return String(value);
  return date.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "medium" });
}

export function formatDuration(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return "—";
  if (ms < 1) return `${ms.toFixed(2)} ms`;
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(2)} s`;
  const minutes = Math.floor(ms / 60_000);
  return `${minutes} min ${Math.round((ms % 60_000) / 1000)} s`;
}

export function formatBytes(size) {
  if (size === null || size === undefined) return "—";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = size;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(1)} ${units[unit]}`;
}

export function formatNumber(value) {
  return typeof value === "number" ? value.toLocaleString() : "—";
}

export function formatJSON(value) {
  if (typeof value === "string") return value;
  try {
    return JSON.stringify(value, null, 2);
  } catch {
    return String(value);
  }
}

export function truncate(textValue, limit) {
  const s = String(textValue ?? "");
  return s.length > limit ? `${s.slice(0, limit)}…` : s;
}

export const TERMINAL_STATUSES = new Set(["completed", "failed", "cancelled"]);

export function statusBadge(status) {
  return h("span", { class: `badge status-${String(status).replace(/[^a-z_]/g, "")}` }, String(status).replace("_", " "));
}

// -- states: loading, empty, error ---------------------------------------------------------------

export function loadingState(label = "Loading…") {
  return h("p", { class: "state loading", role: "status", "aria-live": "polite" }, label);
}

export function emptyState(message, hint) {
  return h("div", { class: "state empty", role: "status" }, h("p", {}, message), hint ? h("p", { class: "hint" }, hint) : null);
}

export function errorState(error, retry) {
  const scopeHint =
    error && error.code === "missing_scope" ? "Sign in with a key that has this scope, or an admin key." : null;
  return h(
    "div",
    { class: "state error", role: "alert" },
    h("p", {}, h("strong", {}, "Could not load this. "), error?.message ?? String(error)),
    scopeHint ? h("p", { class: "hint" }, scopeHint) : null,
    retry ? h("button", { type: "button", onclick: retry }, "Try again") : null,
  );
}

/** A table; `columns` are {label, cell(row) → node|string, class?}. */
export function dataTable(caption, columns, rows, { rowLink } = {}) {
  const head = h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col", class: c.class }, c.label))));
  const body = h(
    "tbody",
    {},
    rows.map((row) => h("tr", { dataset: rowLink ? { href: rowLink(row) } : {} }, columns.map((c) => h("td", { class: c.class }, c.cell(row))))),
  );
  return h("table", { class: "data" }, h("caption", { class: "visually-hidden" }, caption), head, body);
}

/** Run `fn` now and every `ms` while the tab is visible; returns a function that stops it. */
export function poll(fn, ms) {
  let timer = null;
  let stopped = false;
  const tick = async () => {
    timer = null;
    if (stopped) return;
    if (!document.hidden) {
      try {
        await fn();
      } catch {
        // The page shows its own error state; polling goes on so it recovers by itself.
      }
    }
    if (!stopped) timer = setTimeout(tick, ms);
  };
  tick();
  return () => {
    stopped = true;
    if (timer !== null) clearTimeout(timer);
  };
}

export function pageHeader(title, ...extra) {
  return h("div", { class: "page-header" }, h("h1", {}, title), ...extra);
}

let toastRegion = null;

/** A short message for screen readers and eyes alike (decisions made, files saved). */
export function announce(message, kind = "info") {
  if (toastRegion === null) {
    toastRegion = h("div", { class: "toasts", role: "status", "aria-live": "polite" });
    document.body.append(toastRegion);
  }
  const toast = h("p", { class: `toast toast-${kind}` }, message);
  toastRegion.append(toast);
  setTimeout(() => toast.remove(), 5000);
}
