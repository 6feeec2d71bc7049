// Sessions: the conversations, newest first; one session's messages and its tasks.

import { api, path } from "../api.js";
import {
  dataTable,
  emptyState,
  errorState,
  formatJSON,
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

const REFRESH_MS = 5000;

export function renderList(main) {
  document.title = "Sessions · Warden";
  const region = h("section", { "aria-label": "Sessions", "aria-busy": "true" }, loadingState("Loading sessions…"));
  replaceChildren(main, pageHeader("Sessions"), region);
  const refresh = async () => {
    try {
      const sessions = await api("/v1/sessions", { query: { limit: 200 } });
      region.setAttribute("aria-busy", "false");
      if (!sessions.length) {
        replaceChildren(region, emptyState("No sessions yet.", "Every task without a session_id starts one."));
        return;
      }
      replaceChildren(
        region,
        dataTable("Sessions, newest first", [
          { label: "Session", cell: (s) => link(route("sessions", s.id), s.id, { class: "mono" }) },
          { label: "Agent", cell: (s) => s.agent },
          { label: "Multitask", cell: (s) => s.multitask },
          { label: "Active task", cell: (s) => (s.active_task_id ? link(route("tasks", s.active_task_id), s.active_task_id, { class: "mono" }) : "—") },
          { label: "Messages", cell: (s) => String(s.messages.length), class: "num" },
          { label: "Updated", cell: (s) => formatTime(s.updated_at) },
        ], sessions),
      );
    } catch (error) {
      replaceChildren(region, errorState(error, refresh));
      throw error;
    }
  };
  return poll(refresh, REFRESH_MS);
}

function messageItem(message) {
  const content = typeof message.content === "string" ? message.content : formatJSON(message.content ?? "");
  const calls = Array.isArray(message.tool_calls) ? message.tool_calls : [];
  return h(
    "li",
    { class: `message role-${String(message.role).replace(/[^a-z]/g, "")}` },
    h("p", { class: "label" }, String(message.role ?? "?"), message.name ? ` · ${message.name}` : ""),
    content ? h("pre", { class: "io" }, truncate(content, 20_000)) : null,
    calls.map((call) => h("pre", { class: "args" }, `${call.name ?? "tool"}(${truncate(typeof call.arguments === "string" ? call.arguments : formatJSON(call.arguments), 5000)})`)),
  );
}

export function renderOne(main, [sessionId]) {
  document.title = `${sessionId} · Warden`;
  replaceChildren(main, loadingState("Loading the session…"));
  let stopped = false;
  const load = async () => {
    try {
      const [session, tasks] = await Promise.all([
        api(path`/v1/sessions/${sessionId}`),
        api("/v1/tasks", { query: { session: sessionId, limit: 100 } }),
      ]);
      if (stopped) return;
      replaceChildren(
        main,
        pageHeader(h("span", {}, "Session ", h("span", { class: "mono" }, session.id))),
        h(
          "section",
          { class: "card", "aria-labelledby": "session-facts" },
          h("h2", { id: "session-facts" }, "Details"),
          h(
            "dl",
            { class: "facts" },
            h("dt", {}, "Agent"), h("dd", {}, link(route("agents", session.agent), session.agent)),
            h("dt", {}, "Multitask"), h("dd", {}, session.multitask),
            h("dt", {}, "Active task"), h("dd", {}, session.active_task_id ? link(route("tasks", session.active_task_id), session.active_task_id, { class: "mono" }) : "—"),
            h("dt", {}, "Created"), h("dd", {}, formatTime(session.created_at)),
            h("dt", {}, "Updated"), h("dd", {}, formatTime(session.updated_at)),
            h("dt", {}, "Metadata"), h("dd", {}, Object.keys(session.metadata).length ? h("pre", { class: "args" }, formatJSON(session.metadata)) : "—"),
          ),
        ),
        h(
          "section",
          { class: "card", "aria-labelledby": "session-tasks" },
          h("h2", { id: "session-tasks" }, "Tasks"),
          tasks.items.length
            ? dataTable("Tasks of this session", [
                { label: "Task", cell: (t) => link(route("tasks", t.id), t.id, { class: "mono" }) },
                { label: "Status", cell: (t) => statusBadge(t.status) },
                { label: "Input", cell: (t) => truncate(t.input, 100), class: "wrap" },
                { label: "Created", cell: (t) => formatTime(t.timings.created_at) },
              ], tasks.items)
            : emptyState("No tasks in this session."),
        ),
        h(
          "section",
          { class: "card", "aria-labelledby": "session-messages" },
          h("h2", { id: "session-messages" }, "Conversation"),
          session.messages.length
            ? h("ol", { class: "messages" }, session.messages.map(messageItem))
            : emptyState("No messages yet.", "The conversation is saved when a task of the session completes."),
        ),
      );
    } catch (error) {
      if (!stopped) replaceChildren(main, errorState(error, load));
    }
  };
  load();
  return () => {
    stopped = true;
  };
}
