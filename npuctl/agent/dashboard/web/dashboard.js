// npuctl dashboard: polls the server's JSON every 2 s and redraws. Plain DOM (textContent only: names and
// messages come from manifests) and hand-drawn SVG charts; nothing is loaded from anywhere else.
"use strict";

const DATA = "/dashboard/v1/data";
const POLL_MS = 2000;
const WINDOW_S = 600;
const MIN_SPAN_S = 30;
const SVG = "http://www.w3.org/2000/svg";

const CHARTS = [
  { metric: "requests", title: "requests/s", lines: [["requestsPerSecond", "a"]], digits: 1 },
  { metric: "latency", title: "latency p50 / p95 ms", lines: [["latencyP50Ms", "a"], ["latencyP95Ms", "b"]], digits: 1 },
  { metric: "queue", title: "queue depth", lines: [["queueDepth", "a"]], digits: 0 },
  { metric: "rejected", title: "429s/s", lines: [["rejectedPerSecond", "b"]], digits: 1 },
  { metric: "ttft", title: "TTFT p50 ms", lines: [["ttftP50Ms", "a"]], digits: 1, chat: true },
  { metric: "tokens", title: "tokens/s", lines: [["tokensPerSecond", "a"]], digits: 0, chat: true },
];

// What the user opened or closed survives the redraw every 2 s: a click on a <details data-key>'s summary is
// remembered (a click comes before the toggle, so the new state is the opposite of the current one).
const remembered = new Map();
document.addEventListener("click", (event) => {
  const summary = event.target instanceof Element ? event.target.closest("details[data-key] > summary") : null;
  if (summary) remembered.set(summary.parentElement.dataset.key, !summary.parentElement.open);
});

function foldable(key, openByDefault, summary, ...children) {
  const open = remembered.has(key) ? remembered.get(key) : openByDefault;
  return el("details", { "data-key": key, open }, el("summary", {}, summary), ...children);
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svg(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  return node;
}

function percent(value) {
  return value === null || value === undefined ? "-" : `${(value * 100).toFixed(value < 1 && value > 0 ? 1 : 0)}%`;
}

function chip(phase) {
  return el("span", { class: `chip phase phase-${phase}` }, phase);
}

function condition(status, type) {
  return (status.conditions || []).find((c) => c.type === type);
}

// --- the overview table -------------------------------------------------------------------------------

function overviewRows(data) {
  const rows = [];
  for (const agent of data.agents) {
    const sources = agent.sources.join(", ") || "-";
    const soc = agent.host ? [agent.host.soc, agent.host.socModel ? `soc ${agent.host.socModel}` : null, agent.host.npu].filter(Boolean).join(" · ") : "";
    if (agent.error || agent.deployments.length === 0) {
      rows.push(el("tr", { "data-agent": agent.url }, el("td", {}, agent.url), el("td", {}, "-"),
        el("td", {}, agent.error ? chip(agent.invalid ? "Invalid" : "Unreachable") : "-"), el("td", { colspan: 3 }, agent.error || "no deployments"),
        el("td", {}, soc), el("td", {}, sources), el("td", {}, "-")));
    }
    for (const d of agent.deployments) {
      const s = d.status;
      rows.push(el("tr", { "data-agent": agent.url, "data-name": s.name },
        el("td", {}, agent.url), el("td", {}, s.name), el("td", {}, chip(s.phase)), el("td", {}, d.where || "-"),
        el("td", {}, s.provider || "-"), el("td", {}, percent(s.npuCoverage)), el("td", {}, soc), el("td", {}, sources),
        el("td", { class: "bench" }, d.bench || "-")));
    }
  }
  return rows;
}

// --- one deployment -----------------------------------------------------------------------------------

function banners(d) {
  const s = d.status;
  const out = [];
  const valid = condition(s, "Valid");
  const serving = condition(s, "Serving");
  if (valid && valid.status === "False") {
    const still = serving && serving.status === "True";
    out.push(el("div", { class: "banner bad invalid" }, el("b", {}, "Invalid manifest: "), el("span", { class: "mono" }, valid.message),
      still ? el("div", { class: "still-serving" }, "The last valid version is still serving.") : null));
  }
  for (const type of ["ArtifactsReady", "Loaded"]) {
    const c = condition(s, type);
    if (c && c.status === "False") out.push(el("div", { class: "banner bad" }, el("b", {}, `${c.reason}: `), c.message));
  }
  return out;
}

function buildBar(build) {
  if (!build) return null;
  const segments = build.steps.map((step) => el("span", { class: `seg ${step.state}`, title: `${step.name}: ${step.state}` }));
  segments.push(el("span", { class: "seg running", title: build.running || "running" }));
  const last = build.steps.length ? build.steps[build.steps.length - 1].name : null;
  return el("div", { class: "build" },
    el("div", { class: "progress" }, segments),
    el("div", { class: "muted" }, `build: ${build.steps.length} step(s) finished${last ? ` (last: ${last})` : ""}; step ${build.steps.length + 1} running`),
    build.running ? el("div", { class: "muted step-progress" }, build.running) : null);
}

function conditionsTable(agent, status) {
  return foldable(`${agent.url} ${status.name} conditions`, status.phase !== "Ready", "conditions",
    el("table", { class: "grid conditions" },
      el("thead", {}, el("tr", {}, el("th", {}, "type"), el("th", {}, "status"), el("th", {}, "reason"), el("th", {}, "message"))),
      el("tbody", {}, (status.conditions || []).map((c) => el("tr", { "data-type": c.type },
        el("td", {}, c.type), el("td", { class: `cond-${c.status}` }, c.status), el("td", {}, c.reason),
        el("td", { class: "mono" }, c.message || ""))))));
}

function artifactsTable(status) {
  const artifacts = status.artifacts || [];
  if (!artifacts.length) return null;
  return el("table", { class: "grid artifacts" },
    el("thead", {}, el("tr", {}, ["target", "soc", "precision", "bucket", "accuracy vs fp32", "NPU coverage"].map((h) => el("th", {}, h)))),
    el("tbody", {}, artifacts.map((a) => {
      const acc = a.accuracy;
      const accuracy = acc ? `${acc.metric} ${Number(acc.value).toFixed(4)}${acc.threshold !== undefined ? ` (${acc.metric === "max_abs_error" ? "≤" : "≥"} ${acc.threshold})` : ""}` : "prebuilt, not measured here";
      return el("tr", {}, el("td", {}, a.target), el("td", {}, a.socModel), el("td", {}, a.precision),
        el("td", {}, a.bucket || "-"), el("td", {}, accuracy), el("td", {}, percent(a.npuCoverage)));
    })));
}

function benchLine(d) {
  const power = d.status.power;
  const policy = power ? ` · power ${power.policy}${power.source ? ` (agent default on ${power.source})` : ""}` : "";
  return d.bench || power ? el("p", { class: "bench muted" }, `last bench: ${d.bench || "none"}${policy}`) : null;
}

function preflightLine(d) {
  if (!d.preflight) return null;
  return el("div", { class: `preflight${d.refused ? " refused" : ""}` }, el("span", { class: "muted" }, d.preflight),
    d.refused ? el("div", { class: "warning" }, `refused: the build needs ${d.refused}`) : null);
}

function deploymentCard(agent, d) {
  const s = d.status;
  const series = agent.series.find((x) => x.deployment === s.name);
  const where = d.where
    ? el("p", { class: "where" }, el("b", {}, d.where), ` · ${s.provider || "?"} · NPU coverage ${percent(s.npuCoverage)}`, d.why ? ` — ${d.why}` : "")
    : el("p", { class: "where muted" }, "not serving", d.why ? ` — ${d.why}` : "");
  return el("article", { class: "deployment", "data-name": s.name, "data-agent": agent.url },
    el("header", {}, el("h3", {}, s.name), chip(s.phase),
      el("span", { class: "muted" }, [d.model && d.model !== s.name ? `as '${d.model}'` : null, d.task, s.file].filter(Boolean).join(" · "))),
    where, d.cost ? el("p", { class: "cost muted" }, `cost: ${d.cost}`) : null, preflightLine(d),
    benchLine(d), banners(d), buildBar(d.build), conditionsTable(agent, s), artifactsTable(s),
    series ? charts(series) : null);
}

// --- charts -------------------------------------------------------------------------------------------

function charts(series) {
  const samples = series.samples;
  const end = samples.length ? samples[samples.length - 1].time : Date.now() / 1000;
  // The x axis spans what the server kept (up to its 10 minutes), at least MIN_SPAN_S: a young agent's
  // charts are not a sliver at the right edge.
  const span = Math.min(WINDOW_S, Math.max(MIN_SPAN_S, samples.length ? end - samples[0].time : 0));
  return el("div", { class: "charts", "data-span": Math.round(span) },
    CHARTS.filter((c) => !c.chat || series.chat).map((c) => chart(c, samples, end, span)));
}

function spanText(span) {
  return span >= 90 ? `${Math.round(span / 60)} min` : `${Math.round(span)} s`;
}

function chart(spec, samples, end, span) {
  const width = 300, height = 56;
  let top = 0;
  for (const s of samples) for (const [key] of spec.lines) if (s[key] !== null && s[key] !== undefined) top = Math.max(top, s[key]);
  top = top > 0 ? top * 1.15 : 1;
  const x = (t) => ((t - (end - span)) / span) * width;
  const y = (v) => height - 2 - (v / top) * (height - 4);
  const picture = svg("svg", { viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: "none", "data-metric": spec.metric });
  picture.append(svg("line", { class: "axis", x1: 0, y1: height - 1, x2: width, y2: height - 1 }));
  const values = [];
  for (const [key, cls] of spec.lines) {
    let run = [];
    const flush = () => {
      if (run.length > 1) picture.append(svg("polyline", { class: `line-${cls}`, points: run.join(" ") }));
      else if (run.length === 1) { // a lone sample between gaps: a dot, or it would not show
        const [cx, cy] = run[0].split(",");
        picture.append(svg("circle", { class: `dot-${cls}`, cx, cy, r: 1.8 }));
      }
      run = [];
    };
    let last = null;
    for (const s of samples) {
      const v = s[key];
      if (v === null || v === undefined) { flush(); continue; }
      run.push(`${x(s.time).toFixed(1)},${y(v).toFixed(1)}`);
      last = v;
    }
    flush();
    values.push(last);
  }
  const shown = values.map((v) => (v === null ? "-" : Number(v).toFixed(spec.digits))).join(" / ");
  picture.setAttribute("data-last", values[0] === null ? "" : String(values[0]));
  picture.setAttribute("data-samples", String(samples.length));
  return el("div", { class: "chart" },
    el("div", { class: "head" }, el("span", {}, `${spec.title} · last ${spanText(span)}`), el("span", { class: "value" }, shown)),
    picture);
}

// --- events and agents --------------------------------------------------------------------------------

function eventsPanel(agent) {
  return el("section", { class: "events-panel" },
    el("div", { class: "events" }, el("table", { class: "grid" },
      el("thead", {}, el("tr", {}, ["time", "deployment", "reason", "message"].map((h) => el("th", {}, h)))),
      el("tbody", {}, agent.events.length === 0 ? el("tr", {}, el("td", { colspan: 4, class: "muted" }, "no events yet")) : agent.events.map((e) => el("tr", { class: e.type },
        el("td", { class: "mono", title: e.time }, new Date(e.time).toLocaleTimeString()), el("td", {}, e.deployment), el("td", {}, e.reason), el("td", {}, e.message)))))));
}

function agentSection(agent, fleet) {
  const host = agent.host ? `${agent.host.soc || "unknown SoC"} · NPU: ${agent.host.npu}` : "";
  return el("section", { class: "agent", "data-agent": agent.url },
    el("h2", {}, fleet ? agent.url : "This machine", el("span", { class: "muted" }, host)),
    agent.error ? el("div", { class: "banner bad" }, agent.error) : null,
    agent.budget ? el("div", { class: "budget muted" }, agent.budget) : null,
    el("div", { class: "cards" }, agent.deployments.map((d) => deploymentCard(agent, d))),
    agent.error ? null : foldable(`${agent.url} events`, true, "Recent events", eventsPanel(agent)));
}

// Samples per model as this page has them: the first poll gets the server's whole window, later ones only
// what came since (`?seconds=`, counted from the last answer, so agents' clocks need not agree with ours).
const kept = new Map();
let lastAnswer = null;

function merge(agent) {
  for (const series of agent.series) {
    const key = `${agent.url} ${series.deployment}`;
    const have = kept.get(key);
    const samples = have && have.model === series.model ? have.samples : [];
    const newest = samples.length ? samples[samples.length - 1].time : -Infinity;
    for (const sample of series.samples) if (sample.time > newest) samples.push(sample);
    const end = samples.length ? samples[samples.length - 1].time : 0;
    while (samples.length && samples[0].time <= end - WINDOW_S) samples.shift();
    kept.set(key, { ...series, samples });
    series.samples = samples;
  }
}

function render(data) {
  for (const agent of data.agents) merge(agent);
  document.getElementById("scope").textContent = data.fleet ? `lab of ${data.agents.length} agents` : data.agents.map((a) => a.url).join(", ");
  document.getElementById("overview-title").textContent = data.fleet ? "Agents and deployments" : "Deployments";
  document.getElementById("phases").replaceChildren(...data.phases.map((p) => el("span", { class: `chip phase-${p.phase}`, "data-phase": p.phase }, `${p.count} ${p.phase}`)));
  document.querySelector("#table tbody").replaceChildren(...overviewRows(data));
  document.getElementById("agents").replaceChildren(...data.agents.map((a) => agentSection(a, data.fleet)));
  document.getElementById("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
}

async function poll() {
  try {
    const asked = Date.now();
    // A margin over the time since the last answer: a late or throttled poll (a background tab) leaves no gap.
    const seconds = lastAnswer === null ? null : Math.min(WINDOW_S, Math.ceil((asked - lastAnswer) / 1000) + 6);
    const response = await fetch(seconds === null ? DATA : `${DATA}?seconds=${seconds}`, { credentials: "same-origin", cache: "no-store" });
    if (response.status === 401) {
      window.location.reload(); // the server answers / with its login form
      return;
    }
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    render(await response.json());
    lastAnswer = asked;
  } catch (err) {
    document.getElementById("updated").textContent = `no answer from the server (${err.message}); retrying`;
  }
  setTimeout(poll, POLL_MS);
}

poll();
