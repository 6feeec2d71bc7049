// A task's event log as a virtualised table: every event is kept (up to MAX_KEPT) and can be
// scrolled to, but only the rows in view (plus a few) exist in the page, so ten thousand
// events cost the browser no more layout than thirty. It follows the newest event until the
// user scrolls up. Arrow keys, Home and End move the selection; the selected event's JSON is
// shown below the table.

import { formatJSON, h, replaceChildren, truncate } from "./dom.js";

const ROW_HEIGHT = 26;
const OVERSCAN = 12;
const MAX_KEPT = 100_000;

function summary(event) {
  const data = event.data ?? {};
  switch (event.type) {
    case "model.delta":
    case "tool.output":
      return truncate(data.text, 200);
    case "tool.requested":
    case "tool.started":
      return `${data.name} ${truncate(typeof data.arguments === "string" ? data.arguments : JSON.stringify(data.arguments), 160)}`;
    case "tool.finished":
      return `${data.name} ${data.is_error ? "error" : "ok"} ${truncate(formatJSON(data.content ?? ""), 160)}`;
    default:
      return truncate(JSON.stringify(data), 200);
  }
}

function cell(className, text) {
  return h("span", { role: "cell", class: className }, text);
}

export class EventList {
  constructor(label) {
    this.events = [];
    this.dropped = 0;
    this.origin = null;
    this.follow = true;
    this.selected = null;
    this.frameRequested = false;
    this.rows = h("div", { class: "event-rows", role: "rowgroup" });
    this.viewport = h(
      "div",
      { class: "event-viewport", role: "table", tabindex: "0", "aria-label": label, "aria-rowcount": "1" },
      h(
        "div",
        { class: "event-head", role: "rowgroup" },
        h("div", { class: "event-row", role: "row", "aria-rowindex": "1" }, ["Seq", "Time", "Type", "Data"].map((name) => h("span", { role: "columnheader" }, name))),
      ),
      this.rows,
    );
    this.note = h("p", { class: "muted", role: "status" }, "No events yet.");
    this.detail = h("pre", { class: "event-detail", hidden: true, "aria-live": "polite", "aria-label": "The selected event" });
    this.element = h("div", { class: "event-list" }, this.note, this.viewport, this.detail);

    this.renderedTop = 0;
    this.viewport.addEventListener("scroll", () => {
      const { scrollTop, clientHeight, scrollHeight } = this.viewport;
      // The scroll that render() itself made (following the newest event) needs no new render.
      if (scrollTop === this.renderedTop) return;
      this.follow = scrollTop + clientHeight >= scrollHeight - ROW_HEIGHT;
      this.schedule();
    });
    this.viewport.addEventListener("click", (event) => {
      const row = event.target.closest("[data-index]");
      if (row) this.select(Number(row.dataset.index));
    });
    this.viewport.addEventListener("keydown", (event) => this.onKey(event));
  }

  push(batch) {
    if (this.origin === null && batch.length) this.origin = batch[0].ts;
    for (const event of batch) this.events.push(event);
    const excess = this.events.length - MAX_KEPT;
    if (excess > 0) {
      // Very long streams keep their newest events; the oldest stay in the server's log.
      this.events.splice(0, excess);
      this.dropped += excess;
      if (this.selected !== null) this.selected = this.selected >= excess ? this.selected - excess : null;
    }
  }

  get count() {
    return this.events.length + this.dropped;
  }

  schedule() {
    if (!this.frameRequested) {
      this.frameRequested = true;
      requestAnimationFrame(() => {
        this.frameRequested = false;
        this.render();
      });
    }
  }

  render() {
    const total = this.events.length;
    this.viewport.setAttribute("aria-rowcount", String(this.count + 1));
    this.note.textContent = this.dropped
      ? `${this.count.toLocaleString()} events; the oldest ${this.dropped.toLocaleString()} are no longer listed here.`
      : `${total.toLocaleString()} event${total === 1 ? "" : "s"}.`;
    // CSSOM, not a style attribute: the Content-Security-Policy forbids inline styles.
    this.rows.style.height = `${total * ROW_HEIGHT}px`;
    if (this.follow) this.viewport.scrollTop = this.viewport.scrollHeight;
    this.renderedTop = this.viewport.scrollTop;
    const top = Math.max(this.renderedTop - this.rows.offsetTop, 0);
    const height = this.viewport.clientHeight || ROW_HEIGHT * 16;
    const first = Math.max(Math.floor(top / ROW_HEIGHT) - OVERSCAN, 0);
    const last = Math.min(Math.ceil((top + height) / ROW_HEIGHT) + OVERSCAN, total);
    const rows = [];
    for (let index = first; index < last; index += 1) rows.push(this.row(index));
    replaceChildren(this.rows, rows);
    const active = this.selected !== null && this.selected >= first && this.selected < last;
    if (active) this.viewport.setAttribute("aria-activedescendant", `event-row-${this.selected}`);
    else this.viewport.removeAttribute("aria-activedescendant");
  }

  row(index) {
    const event = this.events[index];
    const element = h(
      "div",
      {
        class: `event-row${index === this.selected ? " is-selected" : ""}`,
        role: "row",
        id: `event-row-${index}`,
        "aria-rowindex": String(index + this.dropped + 2),
        "aria-selected": index === this.selected ? "true" : "false",
        dataset: { index: String(index), seq: String(event.seq) },
      },
      cell("num mono", String(event.seq)),
      cell("num", this.origin === null ? "" : `+${((event.ts - this.origin) * 1000).toFixed(0)} ms`),
      cell("mono", event.type),
      cell("summary", summary(event)),
    );
    element.style.top = `${index * ROW_HEIGHT}px`;
    return element;
  }

  select(index) {
    if (index < 0 || index >= this.events.length) return;
    this.selected = index;
    this.detail.hidden = false;
    this.detail.textContent = formatJSON(this.events[index]);
    // Keep the selected row in view.
    const top = index * ROW_HEIGHT + this.rows.offsetTop;
    const { scrollTop, clientHeight } = this.viewport;
    if (top < scrollTop + this.rows.offsetTop) this.viewport.scrollTop = top - this.rows.offsetTop;
    else if (top + ROW_HEIGHT > scrollTop + clientHeight) this.viewport.scrollTop = top + ROW_HEIGHT - clientHeight;
    this.follow = false;
    this.render();
  }

  onKey(event) {
    const last = this.events.length - 1;
    const current = this.selected ?? last;
    const page = Math.max(Math.floor(this.viewport.clientHeight / ROW_HEIGHT) - 1, 1);
    const moves = {
      ArrowDown: current + 1,
      ArrowUp: current - 1,
      PageDown: current + page,
      PageUp: current - page,
      Home: 0,
      End: last,
    };
    if (!(event.key in moves)) return;
    event.preventDefault();
    event.stopPropagation();
    this.select(Math.min(Math.max(moves[event.key], 0), last));
  }
}
