// The audit log, newest first, with the verification of its hash chain at the top.

import { api } from "../api.js";
import {
  dataTable,
  emptyState,
  errorState,
  formatJSON,
  formatTime,
  h,
  loadingState,
  pageHeader,
  replaceChildren,
  truncate,
} from "../dom.js";

const PAGE_SIZE = 100;

function verificationBanner(result) {
  if (result.ok) {
    return h(
      "div",
      { class: "banner banner-ok", role: "status", id: "audit-verification" },
      h("strong", {}, "Chain verified. "),
      `${result.entries.toLocaleString()} entries, each linked to the one before by its hash.`,
    );
  }
  return h(
    "div",
    { class: "banner banner-bad", role: "alert", id: "audit-verification" },
    h("strong", {}, `Chain broken at entry ${result.first_bad_seq}. `),
    `${result.problem ?? ""} ${result.entries.toLocaleString()} entries before it are sound.`,
  );
}

function entryDetails(entry) {
  const details = h("details", {}, h("summary", {}, truncate(entry.reason ?? (Object.keys(entry.data).length ? JSON.stringify(entry.data) : "—"), 90)));
  details.addEventListener("toggle", () => {
    if (details.open && details.childElementCount === 1) {
      details.append(h("pre", { class: "args" }, formatJSON({ data: entry.data, prev_hash: entry.prev_hash, hash: entry.hash })));
    }
  });
  return details;
}

export function render(main) {
  document.title = "Audit log · Warden";
  const banner = h("div", {}, loadingState("Verifying the hash chain…"));
  const region = h("section", { "aria-label": "Audit entries", "aria-busy": "true" }, loadingState("Loading the audit log…"));
  const more = h("div", { class: "more" });
  const action = h("input", { id: "audit-action", placeholder: "tool.decision", "data-filter": true, autocomplete: "off" });
  const subject = h("input", { id: "audit-subject", placeholder: "task id, approval id…", autocomplete: "off" });
  const since = h("input", { id: "audit-since", type: "datetime-local" });
  const until = h("input", { id: "audit-until", type: "datetime-local" });
  const form = h(
    "form",
    { class: "filters", role: "search", "aria-label": "Filter the audit log" },
    h("div", {}, h("label", { for: "audit-action" }, "Action"), action),
    h("div", {}, h("label", { for: "audit-subject" }, "Subject"), subject),
    h("div", {}, h("label", { for: "audit-since" }, "Since"), since),
    h("div", {}, h("label", { for: "audit-until" }, "Until"), until),
    h("div", {}, h("button", { type: "submit" }, "Filter")),
  );
  let items = [];
  let cursor = null;
  let stopped = false;

  const iso = (input) => (input.value ? new Date(input.value).toISOString() : null);
  const query = (next) => ({ action: action.value.trim(), subject: subject.value.trim(), since: iso(since), until: iso(until), limit: PAGE_SIZE, cursor: next });

  const show = () => {
    region.setAttribute("aria-busy", "false");
    replaceChildren(
      region,
      items.length
        ? dataTable("Audit entries, newest first", [
            { label: "Seq", cell: (e) => String(e.seq), class: "num mono" },
            { label: "Time", cell: (e) => formatTime(e.time) },
            { label: "Actor", cell: (e) => e.actor, class: "breakable" },
            { label: "Action", cell: (e) => h("span", { class: "mono" }, e.action) },
            { label: "Subject", cell: (e) => h("span", { class: "mono" }, e.subject ?? "—"), class: "breakable" },
            { label: "Outcome", cell: (e) => e.outcome ?? "—" },
            { label: "Rule", cell: (e) => e.rule ?? "—" },
            { label: "Details", cell: entryDetails, class: "wrap" },
          ], items)
        : emptyState("No audit entries match.", "Policy decisions, approvals and key changes are recorded here."),
    );
    replaceChildren(more, cursor ? h("button", { type: "button", onclick: loadMore }, "Load older entries") : null);
  };

  const load = async () => {
    region.setAttribute("aria-busy", "true");
    replaceChildren(region, loadingState("Loading the audit log…"));
    try {
      const page = await api("/v1/audit", { query: query(null) });
      if (stopped) return;
      items = page.items;
      cursor = page.next_cursor;
      show();
    } catch (error) {
      if (!stopped) replaceChildren(region, errorState(error, load));
    }
  };

  async function loadMore() {
    try {
      const page = await api("/v1/audit", { query: query(cursor) });
      items = items.concat(page.items);
      cursor = page.next_cursor;
      show();
    } catch (error) {
      replaceChildren(more, errorState(error, loadMore));
    }
  }

  const verify = async () => {
    replaceChildren(banner, loadingState("Verifying the hash chain…"));
    try {
      const result = await api("/v1/audit/verify");
      if (!stopped) replaceChildren(banner, verificationBanner(result), h("button", { type: "button", onclick: verify }, "Verify again"));
    } catch (error) {
      if (!stopped) replaceChildren(banner, errorState(error, verify));
    }
  };

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    load();
  });
  replaceChildren(main, pageHeader("Audit log"), banner, form, region, more);
  verify();
  load();
  return () => {
    stopped = true;
  };
}
