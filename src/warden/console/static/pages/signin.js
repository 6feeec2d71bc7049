// Sign-in with an API key: checked against the server (GET /v1/agents) before it is kept.

import { api, storeKey } from "../api.js";
import { h, replaceChildren } from "../dom.js";

export function render(main, { notice, onSignedIn }) {
  const input = h("input", {
    id: "api-key",
    name: "api-key",
    type: "password",
    autocomplete: "off",
    spellcheck: "false",
    required: true,
    placeholder: "wk_…",
    "aria-describedby": "api-key-help",
  });
  const message = h("p", { class: "form-error", role: "alert", id: "sign-in-error" }, notice ?? "");
  const button = h("button", { type: "submit", class: "primary" }, "Sign in");
  const form = h(
    "form",
    { class: "sign-in", "aria-labelledby": "sign-in-title" },
    h("h1", { id: "sign-in-title" }, "Sign in to Warden"),
    h("label", { for: "api-key" }, "API key"),
    input,
    h(
      "p",
      { id: "api-key-help", class: "hint" },
      "`warden serve` prints an admin key the first time it starts; `warden keys create` makes more. ",
      "The key is kept in this tab only (sessionStorage) and sent as a bearer token.",
    ),
    message,
    button,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const key = input.value.trim();
    if (!key) return;
    button.disabled = true;
    form.setAttribute("aria-busy", "true");
    message.textContent = "";
    try {
      await api("/v1/agents", { key });
      storeKey(key);
      onSignedIn();
    } catch (error) {
      if (error.status === 403) {
        // A valid key without tasks:read (an approver's, an auditor's): its pages still work.
        storeKey(key);
        onSignedIn();
        return;
      }
      message.textContent =
        error.status === 401 ? "The server does not know this key (or it was revoked)." : error.message;
      input.focus();
    } finally {
      button.disabled = false;
      form.removeAttribute("aria-busy");
    }
  });
  replaceChildren(main, form);
  input.focus();
  return () => {};
}
