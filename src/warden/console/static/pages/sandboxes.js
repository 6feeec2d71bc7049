// Sandboxes: their state, resources (the template's limits), files (browse, open, download)
// and snapshots. File bytes are fetched with the key and shown as text or as an image from a
// blob: URL, never as markup.

import { api, path } from "../api.js";
import {
  announce,
  dataTable,
  emptyState,
  errorState,
  formatBytes,
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

const WORKSPACE = "/workspace";
const TEXT_PREVIEW_BYTES = 1024 * 1024;
const IMAGE_TYPES = { png: "image/png", jpg: "image/jpeg", jpeg: "image/jpeg", gif: "image/gif", webp: "image/webp" };
const REFRESH_MS = 5000;

export function renderList(main) {
  document.title = "Sandboxes · Warden";
  const region = h("section", { "aria-label": "Sandboxes", "aria-busy": "true" }, loadingState("Loading sandboxes…"));
  replaceChildren(main, pageHeader("Sandboxes"), region);
  const refresh = async () => {
    try {
      const sandboxes = await api("/v1/sandboxes");
      region.setAttribute("aria-busy", "false");
      const focusedHref = region.contains(document.activeElement) ? document.activeElement.getAttribute("href") : null;
      replaceChildren(
        region,
        sandboxes.length
          ? dataTable("Sandboxes", [
              { label: "Sandbox", cell: (s) => link(route("sandboxes", s.id), s.id, { class: "mono" }) },
              { label: "State", cell: (s) => statusBadge(s.state) },
              { label: "Template", cell: (s) => s.template },
              { label: "Backend", cell: (s) => s.backend },
              { label: "Session", cell: (s) => (s.session_id ? link(route("sessions", s.session_id), s.session_id, { class: "mono" }) : "—") },
              { label: "Last used", cell: (s) => formatTime(s.last_used_at) },
              { label: "Expires", cell: (s) => formatTime(s.expires_at) },
            ], sandboxes)
          : emptyState("No sandboxes.", "Agents get one on their first sandbox tool call; `warden sandbox create` makes one by hand."),
      );
      if (focusedHref) [...region.querySelectorAll("a")].find((a) => a.getAttribute("href") === focusedHref)?.focus();
    } catch (error) {
      replaceChildren(region, errorState(error, refresh));
      throw error;
    }
  };
  return poll(refresh, REFRESH_MS);
}

function extension(name) {
  const dot = name.lastIndexOf(".");
  return dot === -1 ? "" : name.slice(dot + 1).toLowerCase();
}

async function fetchFile(sandboxId, filePath) {
  const response = await api(path`/v1/sandboxes/${sandboxId}/files/content`, { query: { path: filePath }, raw: true });
  return response.blob();
}

function saveBlob(blob, name) {
  const url = URL.createObjectURL(blob);
  const anchor = h("a", { href: url, download: name, hidden: true });
  document.body.append(anchor);
  anchor.click();
  anchor.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

function fileBrowser(sandboxId) {
  let current = WORKSPACE;
  let objectUrl = null;
  const crumbs = h("nav", { class: "crumbs", "aria-label": "Folder" });
  const listing = h("div", { "aria-live": "polite" });
  const viewer = h("section", { class: "viewer", "aria-label": "File viewer", hidden: true });

  const closeViewer = () => {
    viewer.hidden = true;
    replaceChildren(viewer);
    if (objectUrl) URL.revokeObjectURL(objectUrl);
    objectUrl = null;
  };

  const download = async (entry) => {
    try {
      saveBlob(await fetchFile(sandboxId, entry.path), entry.name);
      announce(`Downloading ${entry.name}.`);
    } catch (error) {
      announce(error.message, "error");
    }
  };

  const open = async (entry) => {
    closeViewer();
    viewer.hidden = false;
    replaceChildren(viewer, loadingState(`Opening ${entry.name}…`));
    let blob;
    try {
      blob = await fetchFile(sandboxId, entry.path);
    } catch (error) {
      replaceChildren(viewer, errorState(error, () => open(entry)));
      return;
    }
    const header = h(
      "div",
      { class: "viewer-header" },
      h("h3", {}, h("span", { class: "mono" }, entry.path), ` · ${formatBytes(blob.size)}`),
      h("button", { type: "button", onclick: () => download(entry) }, `Download ${entry.name}`),
      h("button", { type: "button", onclick: closeViewer, "aria-label": "Close the file viewer" }, "Close"),
    );
    const imageType = IMAGE_TYPES[extension(entry.name)];
    let body;
    if (imageType) {
      objectUrl = URL.createObjectURL(new Blob([blob], { type: imageType }));
      body = h("img", { src: objectUrl, alt: `Contents of ${entry.name}`, class: "preview" });
    } else {
      const bytes = new Uint8Array(await blob.slice(0, TEXT_PREVIEW_BYTES).arrayBuffer());
      let textValue = null;
      try {
        textValue = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
      } catch {
        // Not UTF-8 text: offer the download instead of showing bytes.
      }
      body =
        textValue === null || textValue.includes("\u0000")
          ? h("p", { class: "muted" }, "A binary file; download it to look inside.")
          : [
              h("pre", { class: "file-text", tabindex: "0", "aria-label": `Contents of ${entry.name}` }, textValue),
              blob.size > TEXT_PREVIEW_BYTES ? h("p", { class: "muted" }, `The first ${formatBytes(TEXT_PREVIEW_BYTES)} are shown.`) : null,
            ];
    }
    replaceChildren(viewer, header, body);
    viewer.querySelector("button")?.focus();
  };

  const load = async (folder) => {
    current = folder;
    closeViewer();
    const parts = folder.slice(WORKSPACE.length).split("/").filter(Boolean);
    const crumbLinks = [h("button", { type: "button", class: "link", onclick: () => load(WORKSPACE) }, "workspace")];
    parts.forEach((part, i) => {
      const target = `${WORKSPACE}/${parts.slice(0, i + 1).join("/")}`;
      crumbLinks.push(" / ", h("button", { type: "button", class: "link", onclick: () => load(target) }, part));
    });
    replaceChildren(crumbs, crumbLinks);
    replaceChildren(listing, loadingState("Listing files…"));
    try {
      const result = await api(path`/v1/sandboxes/${sandboxId}/files`, { query: { path: folder, depth: 1 } });
      const entries = [...result.entries].sort((a, b) => (a.type === "dir") === (b.type === "dir") ? a.name.localeCompare(b.name) : a.type === "dir" ? -1 : 1);
      if (!entries.length) {
        replaceChildren(listing, emptyState("This folder is empty."));
        return;
      }
      replaceChildren(
        listing,
        dataTable(`Files in ${folder}`, [
          {
            label: "Name",
            cell: (e) =>
              h(
                "button",
                {
                  type: "button",
                  class: "link file-link",
                  "data-row-focus": true,
                  onclick: () => (e.type === "dir" ? load(e.path) : open(e)),
                  "aria-label": e.type === "dir" ? `Open folder ${e.name}` : `Open file ${e.name}`,
                },
                e.type === "dir" ? `${e.name}/` : e.name,
              ),
          },
          { label: "Type", cell: (e) => e.type },
          { label: "Size", cell: (e) => (e.type === "dir" ? "—" : formatBytes(e.size)), class: "num" },
          { label: "Modified", cell: (e) => formatTime(e.mtime) },
          {
            label: "Download",
            cell: (e) => (e.type === "file" ? h("button", { type: "button", onclick: () => download(e), "aria-label": `Download ${e.name}` }, "Download") : ""),
          },
        ], entries),
      );
    } catch (error) {
      replaceChildren(listing, errorState(error, () => load(current)));
    }
  };

  load(WORKSPACE);
  return [crumbs, listing, viewer, () => load(current)];
}

export function renderOne(main, [sandboxId]) {
  document.title = `${sandboxId} · Warden`;
  let stopped = false;
  replaceChildren(main, loadingState("Loading the sandbox…"));
  const stateSlot = h("span");
  const facts = h("dl", { class: "facts" });
  const resources = h("div", {}, loadingState());
  const snapshots = h("div", {}, loadingState());
  const actions = h("div", { class: "actions" });

  const showSandbox = (sandbox) => {
    replaceChildren(stateSlot, statusBadge(sandbox.state));
    replaceChildren(
      facts,
      h("dt", {}, "Template"), h("dd", {}, sandbox.template),
      h("dt", {}, "Backend"), h("dd", {}, sandbox.backend),
      h("dt", {}, "Session"), h("dd", {}, sandbox.session_id ? link(route("sessions", sandbox.session_id), sandbox.session_id, { class: "mono" }) : "—"),
      h("dt", {}, "Created"), h("dd", {}, formatTime(sandbox.created_at)),
      h("dt", {}, "Last used"), h("dd", {}, formatTime(sandbox.last_used_at)),
      h("dt", {}, "Expires"), h("dd", {}, formatTime(sandbox.expires_at)),
    );
    const verb = sandbox.state === "paused" ? "resume" : "pause";
    replaceChildren(
      actions,
      h("button", { type: "button", onclick: () => act(verb) }, verb === "pause" ? "Pause" : "Resume"),
      h("button", { type: "button", onclick: snapshot }, "Create snapshot"),
    );
  };

  const loadSnapshots = async () => {
    try {
      const items = await api(path`/v1/sandboxes/${sandboxId}/snapshots`);
      replaceChildren(
        snapshots,
        items.length
          ? dataTable("Snapshots", [
              { label: "Snapshot", cell: (s) => h("span", { class: "mono" }, s.id) },
              { label: "Size", cell: (s) => formatBytes(s.size_bytes), class: "num" },
              { label: "Created", cell: (s) => formatTime(s.created_at) },
            ], items)
          : emptyState("No snapshots.", "A snapshot keeps memory and files; restore or fork from it."),
      );
    } catch (error) {
      replaceChildren(snapshots, errorState(error, loadSnapshots));
    }
  };

  const act = async (verb) => {
    try {
      showSandbox(await api(path`/v1/sandboxes/${sandboxId}/${verb}`, { method: "POST" }));
      announce(`Sandbox ${verb}d.`);
    } catch (error) {
      announce(error.message, "error");
    }
  };

  async function snapshot() {
    announce("Taking a snapshot…");
    try {
      const made = await api(path`/v1/sandboxes/${sandboxId}/snapshots`, { method: "POST" });
      announce(`Snapshot ${made.id} taken.`);
      await loadSnapshots();
    } catch (error) {
      announce(error.message, "error");
    }
  }

  const start = async () => {
    let sandbox;
    try {
      sandbox = await api(path`/v1/sandboxes/${sandboxId}`);
    } catch (error) {
      if (!stopped) replaceChildren(main, errorState(error, start));
      return;
    }
    if (stopped) return;
    const [crumbs, listing, viewer, reloadFiles] = fileBrowser(sandboxId);
    replaceChildren(
      main,
      h("div", { class: "page-header" }, h("h1", {}, "Sandbox ", h("span", { class: "mono" }, sandboxId)), stateSlot, actions),
      h(
        "div",
        { class: "task-grid" },
        h("section", { class: "card", "aria-labelledby": "sandbox-facts" }, h("h2", { id: "sandbox-facts" }, "Details"), facts),
        h("section", { class: "card", "aria-labelledby": "sandbox-resources" }, h("h2", { id: "sandbox-resources" }, "Resources"), resources),
      ),
      h(
        "section",
        { class: "card", "aria-labelledby": "sandbox-files" },
        h("div", { class: "section-header" }, h("h2", { id: "sandbox-files" }, "Files"), h("button", { type: "button", onclick: reloadFiles }, "Refresh")),
        crumbs,
        listing,
        viewer,
      ),
      h("section", { class: "card", "aria-labelledby": "sandbox-snapshots" }, h("h2", { id: "sandbox-snapshots" }, "Snapshots"), snapshots),
    );
    showSandbox(sandbox);
    loadSnapshots();
    api(path`/v1/sandboxes/${sandboxId}/resources`)
      .then((r) => {
        const l = r.limits;
        replaceChildren(
          resources,
          h(
            "dl",
            { class: "facts" },
            h("dt", {}, "CPUs"), h("dd", {}, String(l.cpus)),
            h("dt", {}, "Memory"), h("dd", {}, formatBytes(l.memory_mb * 1024 * 1024)),
            h("dt", {}, "Disk"), h("dd", {}, formatBytes(l.disk_mb * 1024 * 1024)),
            h("dt", {}, "Processes"), h("dd", {}, String(l.pids)),
            h("dt", {}, "Output cap"), h("dd", {}, formatBytes(l.output_bytes)),
            h("dt", {}, "Call timeout"), h("dd", {}, `${l.timeout} s`),
            h("dt", {}, "Network"), h("dd", {}, r.egress ? `egress to ${r.allow.join(", ") || "nothing listed"}` : "off"),
          ),
        );
      })
      .catch((error) => replaceChildren(resources, errorState(error)));
  };
  start();

  const stopPolling = poll(async () => {
    if (stopped || !facts.isConnected) return;
    showSandbox(await api(path`/v1/sandboxes/${sandboxId}`));
  }, REFRESH_MS);
  return () => {
    stopped = true;
    stopPolling();
  };
}
