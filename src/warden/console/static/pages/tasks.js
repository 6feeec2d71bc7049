// Tasks: submit one, filter by status, agent and session, and watch statuses change live (the
// first page is re-read every two seconds while the tab is visible).

import { api } from "../api.js";
import {
  dataTable,
  emptyState,
  errorState,
  formatDuration,
  formatNumber,
  formatTime,
  h,
  link,
  loadingState,
  pageHeader,
  poll,
  replaceChildren,
  route,
  statusBadge,
  truncate,
} from "../dom.js";

const STATUSES = ["queued", "running", "awaiting_approval", "completed", "failed", "cancelled"];
const REFRESH_MS = 2000;
const PAGE_SIZE = 50;

function columns() {
  return [
    { label: "Task", cell: (t) => link(route("tasks", t.id), t.id, { class: "mono" }) },
    { label: "Status", cell: (t) => statusBadge(t.status) },
    { label: "Agent", cell: (t) => `${t.agent}@${t.agent_version}` },
    { label: "Input", cell: (t) => truncate(t.input, 80), class: "wrap" },
    { label: "Created", cell: (t) => formatTime(t.timings.created_at) },
    { label: "Duration", cell: (t) => formatDuration(t.timings.duration_ms) },
    { label: "Tokens", cell: (t) => formatNumber(t.usage.total.total_tokens), class: "num" },
  ];
}

function submitForm(agentNames, onSubmitted) {
  const agentSelect = h(
    "select",
    { id: "new-task-agent", name: "agent", required: true },
    agentNames.map((name) => h("option", { value: name }, name)),
  );
  const input = h("textarea", { id: "new-task-input", name: "input", rows: 3, required: true, placeholder: "What should the agent do?" });
  const session = h("input", { id: "new-task-session", name: "session", placeholder: "ses_… (optional)", autocomplete: "off" });
  const error = h("p", { class: "form-error", role: "alert" });
  const button = h("button", { type: "submit", class: "primary" }, "Submit task");
  const form = h(
    "form",
    { class: "card new-task", "aria-labelledby": "new-task-title" },
    h("h2", { id: "new-task-title" }, "New task"),
    h("div", { class: "fields" },
      h("div", {}, h("label", { for: "new-task-agent" }, "Agent"), agentSelect),
      h("div", {}, h("label", { for: "new-task-session" }, "Session"), session),
    ),
    h("label", { for: "new-task-input" }, "Input"),
    input,
    error,
    button,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    button.disabled = true;
    error.textContent = "";
    try {
      const body = { input: input.value };
      if (session.value.trim()) body.session_id = session.value.trim();
      if (agentSelect.value) body.agent = agentSelect.value;
      const accepted = await api("/v1/tasks", { method: "POST", body });
      onSubmitted(accepted.id);
    } catch (failure) {
      error.textContent = failure.message;
    } finally {
      button.disabled = false;
    }
  });
  return form;
}

export function render(main, _params, query) {
  const filters = {
    status: query.get("status") ?? "",
    agent: query.get("agent") ?? "",
    session: query.get("session") ?? "",
  };
  const listRegion = h("section", { "aria-labelledby": "task-list-title", "aria-busy": "true" });
  const more = h("div", { class: "more" });
  const formSlot = h("div");
  let items = [];
  let nextCursor = null;
  let extraPages = false;

  const statusSelect = h(
    "select",
    { id: "filter-status", "data-filter": true },
    h("option", { value: "" }, "Any status"),
    STATUSES.map((s) => h("option", { value: s, selected: s === filters.status }, s.replace("_", " "))),
  );
  const agentSelect = h("select", { id: "filter-agent" }, h("option", { value: "" }, "Any agent"));
  const sessionInput = h("input", { id: "filter-session", value: filters.session, placeholder: "ses_…", autocomplete: "off" });
  const filterForm = h(
    "form",
    { class: "filters", role: "search", "aria-label": "Filter tasks" },
    h("div", {}, h("label", { for: "filter-status" }, "Status"), statusSelect),
    h("div", {}, h("label", { for: "filter-agent" }, "Agent"), agentSelect),
    h("div", {}, h("label", { for: "filter-session" }, "Session"), sessionInput),
  );

  const applyFilters = () => {
    filters.status = statusSelect.value;
    filters.agent = agentSelect.value;
    filters.session = sessionInput.value.trim();
    const qs = new URLSearchParams(Object.entries(filters).filter(([, v]) => v)).toString();
    // replaceState: the URL remembers the filters without re-rendering the page.
    history.replaceState(null, "", `#/tasks${qs ? `?${qs}` : ""}`);
    extraPages = false;
    refresh(true);
  };
  statusSelect.addEventListener("change", applyFilters);
  agentSelect.addEventListener("change", applyFilters);
  filterForm.addEventListener("submit", (event) => {
    event.preventDefault();
    applyFilters();
  });
  sessionInput.addEventListener("change", applyFilters);

  const show = () => {
    listRegion.setAttribute("aria-busy", "false");
    // A live refresh rebuilds the table: keep keyboard focus on the same task's link.
    const focusedHref = listRegion.contains(document.activeElement) ? document.activeElement.getAttribute("href") : null;
    if (!items.length) {
      const filtered = filters.status || filters.agent || filters.session;
      replaceChildren(
        listRegion,
        h("h2", { id: "task-list-title", class: "visually-hidden" }, "Tasks"),
        emptyState(filtered ? "No tasks match these filters." : "No tasks yet.", filtered ? null : "Submit one above, or with `warden run`."),
      );
    } else {
      replaceChildren(
        listRegion,
        h("h2", { id: "task-list-title", class: "visually-hidden" }, "Tasks"),
        dataTable("Tasks, newest first", columns(), items, { rowLink: (t) => route("tasks", t.id) }),
      );
      if (focusedHref) [...listRegion.querySelectorAll("a")].find((a) => a.getAttribute("href") === focusedHref)?.focus();
    }
    replaceChildren(
      more,
      nextCursor ? h("button", { type: "button", onclick: loadMore }, "Load more") : null,
    );
  };

  const params = (cursor) => ({
    status: filters.status,
    agent: filters.agent,
    session: filters.session,
    limit: PAGE_SIZE,
    cursor,
  });

  let generation = 0;
  const refresh = async (reset = false) => {
    // Once the user paged further, a live refresh would drop those rows: refresh only page one.
    if (extraPages && !reset) return;
    const mine = ++generation;
    if (reset) {
      listRegion.setAttribute("aria-busy", "true");
      replaceChildren(listRegion, loadingState("Loading tasks…"));
    }
    try {
      const page = await api("/v1/tasks", { query: params(null) });
      if (mine !== generation) return;
      items = page.items;
      nextCursor = page.next_cursor;
      show();
    } catch (error) {
      if (mine !== generation) return;
      listRegion.setAttribute("aria-busy", "false");
      replaceChildren(listRegion, errorState(error, () => refresh(true)));
      throw error;
    }
  };

  async function loadMore() {
    try {
      const page = await api("/v1/tasks", { query: params(nextCursor) });
      extraPages = true;
      items = items.concat(page.items);
      nextCursor = page.next_cursor;
      show();
    } catch (error) {
      replaceChildren(more, errorState(error, loadMore));
    }
  }

  replaceChildren(
    main,
    pageHeader("Tasks", h("span", { class: "live-dot", title: "Statuses refresh every 2 seconds" }, "live")),
    formSlot,
    filterForm,
    listRegion,
    more,
  );
  document.title = "Tasks · Warden";
  replaceChildren(listRegion, loadingState("Loading tasks…"));

  api("/v1/agents")
    .then((agents) => {
      const names = agents.map((a) => a.name);
      replaceChildren(formSlot, submitForm(names, (id) => (window.location.hash = route("tasks", id))));
      for (const name of names) agentSelect.append(h("option", { value: name, selected: name === filters.agent }, name));
    })
    .catch((error) => replaceChildren(formSlot, errorState(error)));

  return poll(() => refresh(false), REFRESH_MS);
}
