// One task, live: the conversation (model text as it streams, tool calls with their arguments,
// output and results, policy decisions and approvals), a timing waterfall, usage and cost, and
// the raw event log. Events are queued as they arrive and applied once per animation frame
// under a time budget, and the event table keeps only its newest rows, so a stream of tens of
// thousands of events keeps the page responsive.

import { api, path } from "../api.js";
import {
  TERMINAL_STATUSES,
  announce,
  errorState,
  formatDuration,
  formatJSON,
  formatNumber,
  formatTime,
  h,
  link,
  loadingState,
  replaceChildren,
  route,
  statusBadge,
  truncate,
} from "../dom.js";
import { EventList } from "../eventlist.js";
import { followTaskEvents } from "../sse.js";

const FRAME_BUDGET_MS = 10;
const MODEL_TEXT_LIMIT = 100_000;
const TOOL_OUTPUT_LIMIT = 20_000;
const RESULT_LIMIT = 100_000;
const PAGE_SYNC_MS = 250;
const WATERFALL_ROWS = 200;
const TASK_REFRESH_MS = 1000;

// -- the transcript ------------------------------------------------------------------------------

/**
 * Streamed text shown in a <pre>. Appends are buffered in memory and written to the page by
 * sync(), at most a few times a second under load: each write makes the browser lay the text
 * out again, which for a long text costs more than anything else on the page. "head" keeps the
 * first `limit` characters (a model's answer), "tail" the last (a tool's output, as a terminal).
 */
class StreamedText {
  constructor(mode, limit) {
    this.mode = mode;
    this.limit = limit;
    this.node = document.createTextNode("");
    this.note = h("span", { class: "muted", hidden: true });
    this.element = h("pre", { class: "stream" }, this.mode === "tail" ? [this.note, this.node] : [this.node, this.note]);
    this.shown = 0;
    this.buffered = "";
    this.dropped = 0;
    this.reset = false;
  }

  add(text) {
    this.buffered += text;
  }

  set(text) {
    this.reset = true;
    this.buffered = text;
    this.dropped = 0;
  }

  sync() {
    if (this.reset) {
      this.node.data = "";
      this.shown = 0;
      this.reset = false;
    }
    let text = this.buffered;
    this.buffered = "";
    if (this.mode === "head") {
      const room = Math.max(this.limit - this.shown, 0);
      if (text.length > room) {
        this.dropped += text.length - room;
        text = text.slice(0, room);
      }
      if (text) this.node.appendData(text);
      this.shown += text.length;
    } else {
      if (text.length > this.limit) {
        this.dropped += text.length - this.limit;
        text = text.slice(-this.limit);
      }
      const excess = this.shown + text.length - this.limit;
      if (excess > 0) {
        this.node.deleteData(0, excess);
        this.shown -= excess;
        this.dropped += excess;
      }
      this.node.appendData(text);
      this.shown += text.length;
    }
    this.note.hidden = this.dropped === 0;
    if (this.dropped) {
      const count = this.dropped.toLocaleString();
      this.note.textContent = this.mode === "head" ? `\n… ${count} more characters not shown` : `… ${count} earlier characters not shown\n`;
    }
  }
}

class Transcript {
  constructor(actions) {
    this.actions = actions;
    this.element = h("ol", { class: "transcript", "aria-label": "Conversation" });
    this.steps = new Map();
    this.calls = new Map();
    this.dirty = new Set();
  }

  /** Write buffered text to the page. */
  sync() {
    for (const text of this.dirty) text.sync();
    this.dirty.clear();
  }

  grow(text, add) {
    text.add(add);
    this.dirty.add(text);
  }

  replace(text, value) {
    text.set(value);
    this.dirty.add(text);
  }

  step(number) {
    let step = this.steps.get(number);
    if (!step) {
      const text = new StreamedText("head", MODEL_TEXT_LIMIT);
      const meta = h("span", { class: "muted" });
      const tools = h("ol", { class: "calls", "aria-label": `Tool calls of step ${number}` });
      const element = h(
        "li",
        { class: "step" },
        h("h3", {}, `Step ${number} · model `, meta),
        text.element,
        tools,
      );
      step = { number, text, meta, tools, element, final: false };
      this.steps.set(number, step);
      this.element.append(element);
    }
    return step;
  }

  call(data) {
    let call = this.calls.get(data.call_id);
    if (!call) {
      const status = h("span", { class: "badge" }, "requested");
      const args = h("pre", { class: "args" });
      const decision = h("p", { class: "decision", hidden: true });
      const approval = h("div", { class: "approval-inline", hidden: true });
      const output = new StreamedText("tail", TOOL_OUTPUT_LIMIT);
      output.element.hidden = true;
      const result = h("pre", { class: "result", hidden: true });
      const timing = h("span", { class: "muted" });
      const element = h(
        "li",
        { class: "call" },
        h("h4", {}, h("span", { class: "tool-name" }, String(data.name ?? "tool")), " ", status, " ", timing),
        h("p", { class: "label" }, "Arguments"),
        args,
        decision,
        approval,
        output.element,
        result,
      );
      call = { status, args, decision, approval, output, result, timing, element };
      this.calls.set(data.call_id, call);
      this.step(data.step ?? 0).tools.append(element);
    }
    return call;
  }

  setStatus(call, label, kind) {
    call.status.textContent = label;
    call.status.className = `badge call-${kind}`;
  }

  apply(event) {
    const data = event.data ?? {};
    switch (event.type) {
      case "task.started":
        // A new attempt streams unfinished steps again: drop their partial text.
        for (const step of this.steps.values()) if (!step.final) this.replace(step.text, "");
        break;
      case "model.delta":
        this.grow(this.step(data.step ?? 0).text, String(data.text ?? ""));
        break;
      case "model.message": {
        const step = this.step(data.step ?? 0);
        step.final = true;
        if (typeof data.content === "string") this.replace(step.text, data.content);
        const usage = data.usage ?? {};
        step.meta.textContent = `${data.model ?? ""} · ${formatNumber(usage.input_tokens)} in / ${formatNumber(usage.output_tokens)} out · ${data.finish_reason ?? ""}`;
        break;
      }
      case "tool.requested": {
        const call = this.call(data);
        call.args.textContent = prettyArguments(data.arguments);
        break;
      }
      case "policy.decision": {
        const call = this.call(data);
        call.decision.hidden = false;
        call.decision.textContent = `Policy: ${data.decision}${data.rule ? ` (rule ${data.rule})` : ""}${data.reason ? ` — ${data.reason}` : ""}`;
        if (data.decision === "deny") this.setStatus(call, "denied by policy", "error");
        break;
      }
      case "approval.required": {
        const call = this.call(data);
        this.setStatus(call, "awaiting approval", "waiting");
        call.approval.hidden = false;
        replaceChildren(call.approval, this.actions.approvalControls(data));
        break;
      }
      case "approval.decided": {
        const call = this.call(data);
        // `decision` is the outcome that counts: an expired approval takes its default decision.
        const approved = data.decision === "approved";
        const how = data.status === "expired" ? " (expired: the default decision)" : "";
        this.setStatus(call, `${approved ? "approved" : "denied"}${data.edited ? " (arguments edited)" : ""}`, approved ? "ok" : "error");
        replaceChildren(
          call.approval,
          h("p", {}, `${approved ? "Approved" : "Denied"}${how} by ${data.decided_by ?? "?"}${data.reason ? `: ${data.reason}` : ""}`),
        );
        break;
      }
      case "tool.started": {
        const call = this.call(data);
        this.setStatus(call, "running", "running");
        if (data.arguments !== undefined) call.args.textContent = prettyArguments(data.arguments);
        break;
      }
      case "tool.output": {
        const call = this.call(data);
        call.output.element.hidden = false;
        this.grow(call.output, String(data.text ?? ""));
        break;
      }
      case "tool.finished": {
        const call = this.call(data);
        this.setStatus(call, data.is_error ? "error" : "done", data.is_error ? "error" : "ok");
        call.result.hidden = false;
        call.result.textContent = truncate(formatJSON(data.content ?? data.data ?? ""), RESULT_LIMIT);
        call.timing.textContent = data.duration_ms !== undefined ? formatDuration(data.duration_ms) : "";
        break;
      }
      default:
        break;
    }
  }
}

function prettyArguments(value) {
  if (typeof value === "string") {
    try {
      return JSON.stringify(JSON.parse(value), null, 2);
    } catch {
      return value; // the model's raw text, as it sent it
    }
  }
  return formatJSON(value);
}

// -- the waterfall -------------------------------------------------------------------------------

class Timeline {
  constructor() {
    this.origin = null;
    this.end = null;
    this.bars = [];
    this.open = new Map();
    this.stepStart = null;
    this.seen = new Set();
  }

  bar(key, label, kind, start) {
    const bar = { label, kind, start, end: null };
    this.bars.push(bar);
    this.open.set(key, bar);
    return bar;
  }

  close(key, ts) {
    const bar = this.open.get(key);
    if (bar) {
      bar.end = ts;
      this.open.delete(key);
    }
  }

  apply(event) {
    const ts = event.ts;
    const data = event.data ?? {};
    if (this.origin === null) this.origin = ts;
    switch (event.type) {
      case "task.queued":
        this.bar("queue", "queued", "queue", ts);
        break;
      case "task.requeued":
        for (const key of [...this.open.keys()]) this.close(key, ts);
        this.bar("queue", `requeued (${data.reason ?? ""})`, "queue", ts);
        break;
      case "task.started":
        this.close("queue", ts);
        this.stepStart = ts;
        break;
      case "task.checkpoint":
        this.stepStart = ts;
        break;
      case "model.delta":
      case "model.message": {
        const key = `model:${data.step}`;
        if (!this.seen.has(key)) {
          this.seen.add(key);
          this.bar(key, `model · step ${data.step}`, "model", this.stepStart ?? ts);
        }
        if (event.type === "model.message") this.close(key, ts);
        break;
      }
      case "tool.started":
        this.bar(`tool:${data.call_id}`, `tool · ${data.name}`, "tool", ts);
        break;
      case "tool.finished": {
        const key = `tool:${data.call_id}`;
        if (!this.open.has(key) && typeof data.duration_ms === "number") {
          this.bar(key, `tool · ${data.name}`, "tool", ts - data.duration_ms / 1000);
        }
        this.close(key, ts);
        break;
      }
      case "approval.required":
        this.bar(`approval:${data.approval_id}`, `approval · ${data.name}`, "approval", ts);
        break;
      case "approval.decided":
        this.close(`approval:${data.approval_id}`, ts);
        this.stepStart = ts;
        break;
      case "task.completed":
      case "task.failed":
      case "task.cancelled":
        this.end = ts;
        for (const key of [...this.open.keys()]) this.close(key, ts);
        break;
      default:
        break;
    }
  }

  render(container) {
    if (this.origin === null) {
      replaceChildren(container, h("p", { class: "muted" }, "No timings yet."));
      return;
    }
    const now = Date.now() / 1000;
    const finish = this.end ?? Math.max(now, ...this.bars.map((b) => b.end ?? now));
    const span = Math.max(finish - this.origin, 0.001);
    const rows = this.bars.slice(0, WATERFALL_ROWS).map((bar) => {
      const end = bar.end ?? (this.end ?? now);
      const fill = h("span", { class: `bar bar-${bar.kind}${bar.end === null ? " bar-open" : ""}` });
      // CSSOM, not a style attribute: the Content-Security-Policy forbids inline styles.
      fill.style.left = `${((bar.start - this.origin) / span) * 100}%`;
      fill.style.width = `${Math.max(((end - bar.start) / span) * 100, 0.4)}%`;
      return h(
        "li",
        {},
        h("span", { class: "wf-label" }, bar.label),
        h("span", { class: "wf-track", "aria-hidden": "true" }, fill),
        h("span", { class: "wf-time" }, `${formatDuration((end - bar.start) * 1000)}${bar.end === null ? " …" : ""}`),
      );
    });
    replaceChildren(
      container,
      h("p", { class: "muted" }, `Total ${formatDuration(span * 1000)}${this.end === null ? " so far" : ""}.`),
      h("ol", { class: "waterfall", "aria-label": "Timing waterfall" }, rows),
      this.bars.length > WATERFALL_ROWS ? h("p", { class: "muted" }, `${this.bars.length - WATERFALL_ROWS} more spans not shown.`) : null,
    );
  }
}

// -- the page ------------------------------------------------------------------------------------

export function render(main, [taskId]) {
  document.title = `${taskId} · Warden`;
  let stopped = false;
  let task = null;
  let agentPrice = null;
  let stream = null;
  let eventCount = 0;
  // Events received and not yet applied; applied from `nextPending` on, a frame at a time.
  const pending = [];
  let nextPending = 0;
  // Applied events not yet handed to the event list.
  const unlisted = [];
  let taskChanged = false;
  // Approvals asked for and not yet decided. The task becomes awaiting_approval only when its
  // step ends, a moment after approval.required, with no event of its own: while some are open
  // and the task still reads "running", it is read again until it does not.
  let approvalsOpen = 0;
  let frameRequested = false;
  let dirtyTimeline = false;
  let lastSync = 0;

  const statusSlot = h("span");
  const connection = h("span", { class: "connection", role: "status", "aria-live": "polite" }, "connecting…");
  const cancelButton = h("button", { type: "button", class: "danger", hidden: true }, "Cancel task");
  const facts = h("dl", { class: "facts" });
  const outcome = h("div");
  const usage = h("div");
  const waterfall = h("div");
  const eventList = new EventList("Task events, oldest first");
  const eventCountBadge = h("span", { class: "badge", id: "event-count" }, "0");

  const approvalControls = (data) => {
    const reason = h("input", { type: "text", placeholder: "Reason (optional)", "aria-label": `Reason for the ${data.name} call` });
    const decide = async (decision) => {
      try {
        await api(path`/v1/approvals/${data.approval_id}`, { method: "POST", body: { decision, reason: reason.value || null } });
        announce(`${decision === "approve" ? "Approved" : "Denied"} ${data.name}.`);
      } catch (error) {
        announce(error.message, "error");
      }
    };
    return h(
      "div",
      { class: "inline-actions" },
      h("span", {}, `Needs approval${data.reason ? `: ${data.reason}` : ""}. `),
      reason,
      h("button", { type: "button", class: "primary", onclick: () => decide("approve"), "aria-label": `Approve the ${data.name} call` }, "Approve"),
      h("button", { type: "button", class: "danger", onclick: () => decide("deny"), "aria-label": `Deny the ${data.name} call` }, "Deny"),
      link(`#/approvals`, "Edit arguments in the inbox"),
    );
  };

  const transcript = new Transcript({ approvalControls });
  const timeline = new Timeline();

  const renderTask = () => {
    if (!task) return;
    replaceChildren(statusSlot, statusBadge(task.status));
    cancelButton.hidden = TERMINAL_STATUSES.has(task.status) || task.cancel_requested;
    const t = task.timings;
    replaceChildren(
      facts,
      h("dt", {}, "Agent"), h("dd", {}, link(route("agents", task.agent), `${task.agent}@${task.agent_version}`)),
      h("dt", {}, "Session"), h("dd", {}, task.session_id ? link(route("sessions", task.session_id), task.session_id, { class: "mono" }) : "—"),
      h("dt", {}, "Attempt"), h("dd", {}, `${task.attempt} of ${task.max_attempts}`),
      h("dt", {}, "Created"), h("dd", {}, formatTime(t.created_at)),
      h("dt", {}, "Started"), h("dd", {}, formatTime(t.started_at)),
      h("dt", {}, "Finished"), h("dd", {}, formatTime(t.finished_at)),
      h("dt", {}, "Queue wait"), h("dd", {}, formatDuration(t.queue_wait_ms)),
      h("dt", {}, "Duration"), h("dd", {}, formatDuration(t.duration_ms)),
      h("dt", {}, "Run time"), h("dd", {}, formatDuration(t.run_seconds * 1000)),
    );
    replaceChildren(
      outcome,
      h("h2", {}, "Input"),
      h("pre", { class: "io" }, task.input),
      task.output !== null && task.output !== undefined ? [h("h2", {}, "Output"), h("pre", { class: "io output" }, formatJSON(task.output))] : null,
      task.error ? [h("h2", {}, "Error"), h("pre", { class: "io error-text" }, `${task.error.code}: ${task.error.message}`)] : null,
    );
    const byModel = Object.entries(task.usage.by_model ?? {});
    const total = task.usage.total;
    let cost = "—";
    if (agentPrice) {
      const dollars = (total.input_tokens * agentPrice.input_per_mtok + total.output_tokens * agentPrice.output_per_mtok) / 1_000_000;
      cost = `$${dollars.toFixed(dollars < 0.01 ? 6 : 4)}`;
    }
    replaceChildren(
      usage,
      h(
        "table",
        { class: "data compact" },
        h("caption", { class: "visually-hidden" }, "Token usage by model"),
        h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Model"), h("th", { scope: "col", class: "num" }, "Input tokens"), h("th", { scope: "col", class: "num" }, "Output tokens"))),
        h(
          "tbody",
          {},
          byModel.map(([model, u]) => h("tr", {}, h("td", {}, model), h("td", { class: "num" }, formatNumber(u.input_tokens)), h("td", { class: "num" }, formatNumber(u.output_tokens)))),
          h("tr", { class: "total" }, h("td", {}, "Total"), h("td", { class: "num" }, formatNumber(total.input_tokens)), h("td", { class: "num" }, formatNumber(total.output_tokens))),
        ),
      ),
      h(
        "p",
        {},
        h("strong", {}, "Cost: "),
        h("span", { id: "task-cost" }, cost),
        agentPrice ? h("span", { class: "muted" }, " (estimated at the agent's model price in warden.yaml)") : h("span", { class: "muted" }, " (no price for this agent's model in warden.yaml)"),
      ),
    );
  };

  let refreshing = false;
  let refreshAgain = false;
  const refreshTask = async () => {
    if (refreshing) {
      refreshAgain = true;
      return;
    }
    refreshing = true;
    try {
      task = await api(path`/v1/tasks/${taskId}`);
      if (!stopped) renderTask();
      if (!stopped && approvalsOpen > 0 && task.status === "running") refreshAgain = true;
    } catch {
      // The stream's state line tells the user about connection trouble.
    } finally {
      refreshing = false;
      if (refreshAgain && !stopped) {
        refreshAgain = false;
        setTimeout(refreshTask, TASK_REFRESH_MS);
      }
    }
  };

  const flush = () => {
    frameRequested = false;
    if (stopped) return;
    const started = performance.now();
    while (nextPending < pending.length && performance.now() - started < FRAME_BUDGET_MS) {
      const event = pending[nextPending++];
      transcript.apply(event);
      timeline.apply(event);
      unlisted.push(event);
      if (event.type !== "model.delta" && event.type !== "tool.output") taskChanged = true;
      if (event.type === "approval.required") approvalsOpen += 1;
      if (event.type === "approval.decided") approvalsOpen = Math.max(0, approvalsOpen - 1);
      eventCount += 1;
    }
    const burstOver = nextPending >= pending.length;
    if (burstOver) {
      pending.length = 0;
      nextPending = 0;
    }
    // The page is written when a burst is over, or every PAGE_SYNC_MS while it goes on: each
    // write makes the browser lay the page out again, and that, not the events, is the cost.
    if (burstOver || started - lastSync > PAGE_SYNC_MS) {
      lastSync = started;
      transcript.sync();
      eventList.push(unlisted);
      unlisted.length = 0;
      eventList.render();
      eventCountBadge.textContent = String(eventCount);
      dirtyTimeline = true;
      if (taskChanged) {
        taskChanged = false;
        refreshTask();
      }
    }
    if (!burstOver) schedule();
  };

  const schedule = () => {
    if (!frameRequested) {
      frameRequested = true;
      requestAnimationFrame(flush);
    }
  };

  cancelButton.addEventListener("click", async () => {
    cancelButton.disabled = true;
    try {
      task = await api(path`/v1/tasks/${taskId}/cancel`, { method: "POST" });
      renderTask();
      announce("Cancel requested.");
    } catch (error) {
      announce(error.message, "error");
    } finally {
      cancelButton.disabled = false;
    }
  });

  replaceChildren(main, loadingState("Loading the task…"));

  const timelineTimer = setInterval(() => {
    // Open spans grow with the clock while the task runs.
    if (dirtyTimeline || (timeline.end === null && timeline.origin !== null)) {
      dirtyTimeline = false;
      timeline.render(waterfall);
    }
  }, 500);

  const start = async () => {
    try {
      task = await api(path`/v1/tasks/${taskId}`);
    } catch (error) {
      if (!stopped) replaceChildren(main, errorState(error, start));
      return;
    }
    if (stopped) return;
    replaceChildren(
      main,
      h(
        "div",
        { class: "page-header" },
        h("h1", {}, "Task ", h("span", { class: "mono" }, taskId)),
        statusSlot,
        connection,
        cancelButton,
      ),
      h("div", { class: "task-grid" },
        h("section", { class: "card", "aria-labelledby": "facts-title" }, h("h2", { id: "facts-title" }, "Details"), facts),
        h("section", { class: "card", "aria-labelledby": "usage-title" }, h("h2", { id: "usage-title" }, "Usage and cost"), usage),
      ),
      h("section", { class: "card", "aria-label": "Input and output" }, outcome),
      h("section", { class: "card live-section", "aria-labelledby": "conversation-title" }, h("h2", { id: "conversation-title" }, "Live stream"), transcript.element),
      h("section", { class: "card", "aria-labelledby": "timing-title" }, h("h2", { id: "timing-title" }, "Timing"), waterfall),
      h(
        "section",
        { class: "card", "aria-labelledby": "events-title" },
        h("h2", { id: "events-title" }, "Events ", eventCountBadge),
        eventList.element,
      ),
    );
    renderTask();
    api(path`/v1/agents/${task.agent}`)
      .then((agent) => {
        agentPrice = agent.price;
        if (!stopped) renderTask();
      })
      .catch(() => {});
    stream = followTaskEvents(taskId, {
      after: 0,
      onEvent: (event) => {
        pending.push(event);
        schedule();
      },
      onState: (state, detail) => {
        const labels = {
          connecting: "connecting…",
          live: "live",
          reconnecting: detail?.inMs ? `reconnecting in ${(detail.inMs / 1000).toFixed(1)} s…` : "reconnecting…",
          ended: "ended",
          error: `stream refused: ${detail?.message ?? ""}`,
        };
        connection.textContent = labels[state] ?? state;
        connection.dataset.state = state;
        if (state === "ended") refreshTask();
      },
    });
  };
  start();

  return () => {
    stopped = true;
    clearInterval(timelineTimer);
    if (stream) stream.stop();
  };
}
