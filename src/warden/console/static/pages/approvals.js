// The approvals inbox: tool calls waiting for a person. Approve or deny with a reason; approve
// with edited arguments. New requests appear live; a card being edited is never redrawn.

import { api, path } from "../api.js";
import {
  announce,
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
} from "../dom.js";

const REFRESH_MS = 2000;
const STATUSES = ["pending", "approved", "denied", "expired"];

function card(approval, onDecided) {
  const titleId = `approval-${approval.id}-title`;
  const original = formatJSON(approval.arguments);
  const argsId = `approval-${approval.id}-args`;
  const reasonId = `approval-${approval.id}-reason`;
  const args = h("textarea", { id: argsId, rows: Math.min(14, original.split("\n").length + 1), spellcheck: "false", class: "mono", value: original });
  const reason = h("input", { id: reasonId, type: "text", placeholder: "Why (kept in the audit log)", maxlength: 2000 });
  const error = h("p", { class: "form-error", role: "alert" });
  const decided = h("p", { class: "decided", role: "status" });
  const approve = h("button", { type: "button", class: "primary" }, "Approve");
  const deny = h("button", { type: "button", class: "danger" }, "Deny");
  const pending = approval.status === "pending";

  const decide = async (decision) => {
    error.textContent = "";
    const body = { decision, reason: reason.value.trim() || null };
    if (decision === "approve" && args.value.trim() !== original.trim()) {
      let edited;
      try {
        edited = JSON.parse(args.value);
      } catch (failure) {
        error.textContent = `The arguments are not valid JSON: ${failure.message}`;
        args.focus();
        return;
      }
      if (edited === null || typeof edited !== "object" || Array.isArray(edited)) {
        error.textContent = "The arguments must be a JSON object.";
        args.focus();
        return;
      }
      body.arguments = edited;
    }
    approve.disabled = true;
    deny.disabled = true;
    try {
      const result = await api(path`/v1/approvals/${approval.id}`, { method: "POST", body });
      decided.textContent = `${result.status === "approved" ? "Approved" : "Denied"} by ${result.decided_by}${body.arguments ? " with edited arguments" : ""}.`;
      element.classList.add("is-decided");
      args.readOnly = true;
      reason.readOnly = true;
      announce(`${approval.tool}: ${result.status}.`);
      onDecided(approval.id);
    } catch (failure) {
      error.textContent = failure.message;
      approve.disabled = false;
      deny.disabled = false;
    }
  };
  approve.addEventListener("click", () => decide("approve"));
  deny.addEventListener("click", () => decide("deny"));
  approve.setAttribute("aria-label", `Approve ${approval.tool} for task ${approval.task_id}`);
  deny.setAttribute("aria-label", `Deny ${approval.tool} for task ${approval.task_id}`);

  const element = h(
    "article",
    { class: "card approval", "aria-labelledby": titleId, dataset: { approvalId: approval.id } },
    h("h2", { id: titleId }, h("span", { class: "tool-name" }, approval.tool), " ", statusBadge(approval.status)),
    h(
      "dl",
      { class: "facts" },
      h("dt", {}, "Task"), h("dd", {}, link(route("tasks", approval.task_id), approval.task_id, { class: "mono", "data-row-focus": true })),
      h("dt", {}, "Agent"), h("dd", {}, `${approval.agent} · step ${approval.step}`),
      h("dt", {}, "Rule"), h("dd", {}, `${approval.rule}${approval.reason ? ` — ${approval.reason}` : ""}`),
      h("dt", {}, "Asked"), h("dd", {}, formatTime(approval.created_at)),
      h("dt", {}, "Expires"), h("dd", {}, approval.expires_at ? `${formatTime(approval.expires_at)} (then: ${approval.default_decision})` : "never"),
      approval.decided_by ? [h("dt", {}, "Decided"), h("dd", {}, `${approval.decided_by}, ${formatTime(approval.decided_at)}${approval.decision_reason ? `: ${approval.decision_reason}` : ""}`)] : null,
    ),
    h("label", { for: argsId }, pending ? "Arguments (edit to change what the tool gets)" : "Arguments"),
    pending ? args : h("pre", { class: "args" }, approval.edited_arguments ? formatJSON(approval.edited_arguments) : original),
    pending ? [h("label", { for: reasonId }, "Reason"), reason, error, h("div", { class: "actions" }, approve, deny), decided] : null,
  );
  return element;
}

export function render(main, _params, query) {
  document.title = "Approvals · Warden";
  let status = query.get("status") ?? "pending";
  const list = h("div", { class: "approvals", "aria-busy": "true" });
  const statusSelect = h(
    "select",
    { id: "approval-status", "data-filter": true },
    STATUSES.map((s) => h("option", { value: s, selected: s === status }, s)),
    h("option", { value: "", selected: status === "" }, "all"),
  );
  const cards = new Map();
  const decidedHere = new Set();

  const refresh = async (reset = false) => {
    if (reset) {
      cards.clear();
      replaceChildren(list, loadingState("Loading approvals…"));
    }
    let page;
    try {
      page = await api("/v1/approvals", { query: { status, limit: 200 } });
    } catch (error) {
      replaceChildren(list, errorState(error, () => refresh(true)));
      cards.clear();
      throw error;
    }
    list.setAttribute("aria-busy", "false");
    const ids = new Set(page.items.map((a) => a.id));
    // Cards that left the list go, unless decided here (their outcome stays on screen).
    for (const [id, element] of cards) {
      if (!ids.has(id) && !decidedHere.has(id)) {
        element.remove();
        cards.delete(id);
      }
    }
    list.querySelector(".state")?.remove();
    for (const approval of page.items) {
      if (cards.has(approval.id)) continue;
      const element = card(approval, (id) => decidedHere.add(id));
      cards.set(approval.id, element);
      list.append(element);
    }
    if (!cards.size) {
      replaceChildren(list, emptyState(status === "pending" ? "Nothing waits for a decision." : "No approvals here.", status === "pending" ? "Tool calls that a policy answers `ask` appear here as they happen." : null));
    }
  };

  statusSelect.addEventListener("change", () => {
    status = statusSelect.value;
    decidedHere.clear();
    history.replaceState(null, "", `#/approvals${status ? `?status=${encodeURIComponent(status)}` : "?status="}`);
    refresh(true).catch(() => {});
  });

  replaceChildren(
    main,
    pageHeader("Approvals", h("span", { class: "live-dot", title: "New requests appear within 2 seconds" }, "live")),
    h("form", { class: "filters", "aria-label": "Filter approvals", onsubmit: (e) => e.preventDefault() }, h("div", {}, h("label", { for: "approval-status" }, "Status"), statusSelect)),
    list,
  );
  replaceChildren(list, loadingState("Loading approvals…"));
  return poll(() => refresh(false), REFRESH_MS);
}
