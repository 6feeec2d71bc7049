// A task's event stream over fetch(), not EventSource: EventSource cannot send the key in a
// header (it would have to go in the URL, and so into logs). Reconnects with backoff after a
// dropped connection or a server restart and resumes with Last-Event-ID, so every event is
// delivered once and in order.

import { authHeaders, errorOf, path } from "./api.js";

const TERMINAL = new Set(["task.completed", "task.failed", "task.cancelled"]);
const FIRST_RETRY_MS = 250;
const MAX_RETRY_MS = 5000;

/** Split a byte stream's text into SSE fields and dispatch each complete event. */
export class SseParser {
  constructor(onMessage) {
    this.onMessage = onMessage;
    this.buffer = "";
    this.data = [];
    this.eventType = "";
    this.lastId = null;
  }

  push(chunk) {
    this.buffer += chunk;
    const text = this.buffer;
    let start = 0;
    for (;;) {
      let end = start;
      while (end < text.length && text[end] !== "\n" && text[end] !== "\r") end += 1;
      if (end >= text.length) break;
      // A CR at the very end may be the first half of CRLF: wait for the next chunk.
      if (text[end] === "\r" && end + 1 >= text.length) break;
      this.line(text.slice(start, end));
      start = end + (text[end] === "\r" && text[end + 1] === "\n" ? 2 : 1);
    }
    this.buffer = text.slice(start);
  }

  line(line) {
    if (line === "") {
      if (this.data.length) this.onMessage({ id: this.lastId, event: this.eventType || "message", data: this.data.join("\n") });
      this.data = [];
      this.eventType = "";
      return;
    }
    if (line.startsWith(":")) return;
    const colon = line.indexOf(":");
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") this.data.push(value);
    else if (field === "event") this.eventType = value;
    else if (field === "id") this.lastId = value;
  }
}

/**
 * Follow a task's events after `after`. Callbacks: onEvent(event) for each event in order,
 * onState(state, detail) with "connecting" | "live" | "reconnecting" | "ended" | "error",
 * onFatal(error) for a refusal that retrying cannot fix (401, 403, 404). Returns stop().
 */
export function followTaskEvents(taskId, { after = 0, onEvent, onState = () => {}, onFatal = () => {} }) {
  let lastSeq = after;
  let stopped = false;
  let controller = null;
  let retryTimer = null;
  let retryMs = FIRST_RETRY_MS;

  const connect = async () => {
    retryTimer = null;
    if (stopped) return;
    controller = new AbortController();
    onState(lastSeq > 0 ? "reconnecting" : "connecting");
    let ended = false;
    try {
      const headers = { Accept: "text/event-stream", ...authHeaders() };
      if (lastSeq > 0) headers["Last-Event-ID"] = String(lastSeq);
      const response = await fetch(path`/v1/tasks/${taskId}/events`, {
        headers,
        signal: controller.signal,
        cache: "no-store",
      });
      if (!response.ok) {
        const error = await errorOf(response);
        if ([401, 403, 404, 422].includes(response.status)) {
          stopped = true;
          onState("error", error);
          onFatal(error);
          return;
        }
        throw error;
      }
      onState("live");
      const parser = new SseParser((message) => {
        let event;
        try {
          event = JSON.parse(message.data);
        } catch {
          return; // not an event frame
        }
        // Seqs only grow: a repeat (a resumed stream overlapping what we have) is dropped.
        if (typeof event.seq !== "number" || event.seq <= lastSeq) return;
        lastSeq = event.seq;
        retryMs = FIRST_RETRY_MS;
        if (TERMINAL.has(event.type)) ended = true;
        onEvent(event);
      });
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        parser.push(value);
      }
    } catch (error) {
      if (stopped || error.name === "AbortError") return;
    }
    if (stopped) return;
    if (ended) {
      onState("ended");
      return;
    }
    // The stream closed before the task ended: the server restarted or the network dropped.
    onState("reconnecting", { inMs: retryMs });
    retryTimer = setTimeout(connect, retryMs);
    retryMs = Math.min(retryMs * 2, MAX_RETRY_MS);
  };

  connect();
  return {
    stop() {
      stopped = true;
      if (retryTimer !== null) clearTimeout(retryTimer);
      if (controller !== null) controller.abort();
    },
    get lastSeq() {
      return lastSeq;
    },
  };
}
