// Agents: what this server runs, and one agent's limits, tools and versions.

import { api, path } from "../api.js";
import {
  dataTable,
  emptyState,
  errorState,
  formatJSON,
  h,
  link,
  loadingState,
  pageHeader,
  replaceChildren,
  route,
  truncate,
} from "../dom.js";

function priceText(price) {
  return price ? `$${price.input_per_mtok} in / $${price.output_per_mtok} out per million tokens` : "—";
}

export function renderList(main) {
  document.title = "Agents · Warden";
  const region = h("section", { "aria-label": "Agents", "aria-busy": "true" }, loadingState("Loading agents…"));
  replaceChildren(main, pageHeader("Agents"), region);
  let stopped = false;
  const load = async () => {
    try {
      const agents = await api("/v1/agents");
      if (stopped) return;
      region.setAttribute("aria-busy", "false");
      replaceChildren(
        region,
        agents.length
          ? dataTable("Agents", [
              { label: "Agent", cell: (a) => link(route("agents", a.name), a.name) },
              { label: "Version", cell: (a) => h("span", { class: "mono" }, a.version) },
              { label: "Model", cell: (a) => a.model },
              { label: "Tools", cell: (a) => a.tools.join(", ") || "—", class: "wrap" },
              { label: "Description", cell: (a) => truncate(a.description, 120), class: "wrap" },
            ], agents)
          : emptyState("No agents are configured.", "Declare them in warden.yaml or agents/*.yaml."),
      );
    } catch (error) {
      if (!stopped) replaceChildren(region, errorState(error, load));
    }
  };
  load();
  return () => {
    stopped = true;
  };
}

export function renderOne(main, [name]) {
  document.title = `${name} · Warden`;
  replaceChildren(main, loadingState("Loading the agent…"));
  let stopped = false;
  const load = async () => {
    try {
      const agent = await api(path`/v1/agents/${name}`);
      if (stopped) return;
      const versions = agent.versions ?? [];
      replaceChildren(
        main,
        pageHeader(h("span", {}, "Agent ", agent.name), link(`#/tasks?agent=${encodeURIComponent(agent.name)}`, "Its tasks")),
        h(
          "section",
          { class: "card", "aria-labelledby": "agent-facts" },
          h("h2", { id: "agent-facts" }, "Current version"),
          h(
            "dl",
            { class: "facts" },
            h("dt", {}, "Version"), h("dd", { class: "mono" }, agent.version),
            h("dt", {}, "Model"), h("dd", {}, agent.model),
            h("dt", {}, "Price"), h("dd", {}, priceText(agent.price)),
            h("dt", {}, "Tools"), h("dd", {}, agent.tools.join(", ") || "—"),
            h("dt", {}, "Description"), h("dd", {}, agent.description || "—"),
          ),
          h("h3", {}, "Limits"),
          h("pre", { class: "args" }, formatJSON(agent.limits)),
        ),
        h(
          "section",
          { class: "card", "aria-labelledby": "agent-versions" },
          h("h2", { id: "agent-versions" }, `Versions (${versions.length}, newest first)`),
          versions.length
            ? h("ol", { class: "versions", reversed: true }, [...versions].reverse().map((v) => h("li", { class: "mono" }, v, v === agent.version ? h("span", { class: "badge" }, "current") : null)))
            : emptyState("No versions recorded."),
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
