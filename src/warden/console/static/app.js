// The console's shell: sign-in gate, navigation, hash routes and keyboard shortcuts. Each page
// module exports render(main, params, query) and returns a function that stops its timers and
// streams when the user leaves the page.

import { apiKey, forgetKey, onUnauthorized } from "./api.js";
import { h, replaceChildren } from "./dom.js";
import * as agents from "./pages/agents.js";
import * as approvals from "./pages/approvals.js";
import * as audit from "./pages/audit.js";
import * as sandboxes from "./pages/sandboxes.js";
import * as sessions from "./pages/sessions.js";
import * as signin from "./pages/signin.js";
import * as task from "./pages/task.js";
import * as tasks from "./pages/tasks.js";

const SECTIONS = [
  { key: "t", path: "/tasks", label: "Tasks" },
  { key: "a", path: "/approvals", label: "Approvals" },
  { key: "s", path: "/sessions", label: "Sessions" },
  { key: "b", path: "/sandboxes", label: "Sandboxes" },
  { key: "l", path: "/audit", label: "Audit log" },
  { key: "n", path: "/agents", label: "Agents" },
];

const ROUTES = [
  [/^\/tasks$/, tasks.render],
  [/^\/tasks\/([^/]+)$/, task.render],
  [/^\/approvals$/, approvals.render],
  [/^\/sessions$/, sessions.renderList],
  [/^\/sessions\/([^/]+)$/, sessions.renderOne],
  [/^\/sandboxes$/, sandboxes.renderList],
  [/^\/sandboxes\/([^/]+)$/, sandboxes.renderOne],
  [/^\/audit$/, audit.render],
  [/^\/agents$/, agents.renderList],
  [/^\/agents\/([^/]+)$/, agents.renderOne],
];

const main = document.getElementById("main");
let leavePage = () => {};
let signInNotice = null;

function currentRoute() {
  const raw = window.location.hash.replace(/^#/, "") || "/tasks";
  const [pathPart, queryPart = ""] = raw.split("?", 2);
  return { path: pathPart, query: new URLSearchParams(queryPart) };
}

function renderNav(activePath) {
  const nav = document.getElementById("nav");
  replaceChildren(
    nav,
    h(
      "ul",
      {},
      SECTIONS.map((section) => {
        const active = activePath === section.path || activePath.startsWith(`${section.path}/`);
        return h("li", {}, h("a", { href: `#${section.path}`, "aria-current": active ? "page" : null }, section.label));
      }),
    ),
  );
}

function show() {
  leavePage();
  leavePage = () => {};
  const { path, query } = currentRoute();
  const top = document.getElementById("top");
  if (!apiKey()) {
    top.hidden = true;
    document.title = "Sign in · Warden";
    leavePage = signin.render(main, { notice: signInNotice, onSignedIn: () => show() }) ?? (() => {});
    signInNotice = null;
    return;
  }
  top.hidden = false;
  renderNav(path);
  for (const [pattern, render] of ROUTES) {
    const match = pattern.exec(path);
    if (match) {
      const params = match.slice(1).map((p) => decodeURIComponent(p));
      leavePage = render(main, params, query) ?? (() => {});
      return;
    }
  }
  replaceChildren(main, h("h1", {}, "Not found"), h("p", {}, "No page here. "), h("a", { href: "#/tasks" }, "Go to tasks"));
}

function signOut(notice = null) {
  forgetKey();
  signInNotice = notice;
  show();
}

// -- keyboard ------------------------------------------------------------------------------------

let pendingG = null;

function typing(target) {
  return target instanceof HTMLElement && (target.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(target.tagName));
}

function moveRow(delta) {
  const links = [...main.querySelectorAll("table.data tbody tr td:first-child a, [data-row-focus]")];
  if (!links.length) return;
  const index = links.indexOf(document.activeElement);
  const next = index === -1 ? (delta > 0 ? 0 : links.length - 1) : Math.min(Math.max(index + delta, 0), links.length - 1);
  links[next].focus();
  links[next].closest("tr")?.scrollIntoView({ block: "nearest" });
}

function onKey(event) {
  if (event.defaultPrevented || event.ctrlKey || event.metaKey || event.altKey || typing(event.target)) return;
  if (!apiKey()) return;
  if (pendingG !== null) {
    clearTimeout(pendingG);
    pendingG = null;
    const section = SECTIONS.find((s) => s.key === event.key);
    if (section) {
      event.preventDefault();
      window.location.hash = `#${section.path}`;
    }
    return;
  }
  if (event.key === "g") {
    pendingG = setTimeout(() => (pendingG = null), 1200);
  } else if (event.key === "j" || event.key === "k") {
    event.preventDefault();
    moveRow(event.key === "j" ? 1 : -1);
  } else if (event.key === "/") {
    const filter = main.querySelector("[data-filter]");
    if (filter) {
      event.preventDefault();
      filter.focus();
    }
  } else if (event.key === "?") {
    document.getElementById("shortcuts").showModal();
  }
}

// -- start ---------------------------------------------------------------------------------------

onUnauthorized((error) => signOut(`Signed out: ${error.message}`));
document.getElementById("sign-out").addEventListener("click", () => signOut("Signed out."));
document.getElementById("shortcuts-button").addEventListener("click", () => document.getElementById("shortcuts").showModal());
document.getElementById("skip-link").addEventListener("click", () => main.focus());
document.addEventListener("keydown", onKey);
window.addEventListener("hashchange", () => {
  show();
  main.focus({ preventScroll: true });
});
show();
