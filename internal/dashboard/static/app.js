// skein's dashboard: the records from /api/state, then every change from
// /api/stream (server-sent events). Every string from the cluster goes into
// the page as text, never as HTML.
"use strict";

const state = {};          // bucket → key → record
const loadHistory = {};    // server → recent load1 values, from its heartbeats
const events = [];         // newest first, at most 200
const renderTimes = [];    // ms from an event's arrival to the page showing it
window.skein = { state, renderTimes };

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else e.setAttribute(k, v);
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function values(bucket) { return Object.values(state[bucket] || {}); }

function fill(id, rows) {
  const tbody = document.querySelector(`#${id} tbody`);
  tbody.replaceChildren(...rows);
}

function ago(t) {
  const s = (Date.now() - new Date(t).getTime()) / 1000;
  return s < 0 ? 0 : s;
}

function sparkline(points) {
  const c = el("canvas", { width: 120, height: 20 });
  const g = c.getContext("2d");
  const max = Math.max(1, ...points);
  g.strokeStyle = "#2f6fde";
  g.beginPath();
  points.forEach((p, i) => {
    const x = points.length < 2 ? 0 : (i * 119) / (points.length - 1);
    const y = 19 - (p / max) * 18;
    if (i === 0) g.moveTo(x, y); else g.lineTo(x, y);
  });
  g.stroke();
  return c;
}

function renderServers() {
  const rows = values("skein_servers").sort((a, b) => a.name.localeCompare(b.name)).map(h => {
    const up = h.status === "up" && ago(h.time) < 7;
    const mem = h.mem_available ? (h.mem_available / 2 ** 30).toFixed(1) + " GiB" : "-";
    return el("tr", { "data-server": h.name }, el("td", {}, h.name), el("td", { class: up ? "up" : "down" }, up ? "up" : "down"),
      el("td", {}, (h.load1 || 0).toFixed(2)), el("td", {}, mem), el("td", {}, h.containers || 0),
      el("td", {}, sparkline(loadHistory[h.name] || [])));
  });
  fill("servers", rows);
  const sel = document.getElementById("f-server");
  const have = new Set([...sel.options].map(o => o.value));
  for (const h of values("skein_servers")) if (!have.has(h.name)) sel.append(el("option", { value: h.name }, h.name));
}

function renderContainers() {
  const rows = values("skein_containers").sort((a, b) => (a.server + a.name).localeCompare(b.server + b.name)).map(c =>
    el("tr", { "data-container": c.name }, el("td", {}, c.server), el("td", {}, c.name),
      el("td", { class: c.status, "data-status": c.status }, c.status), el("td", {}, c.ipv4 || "-"), el("td", {}, c.job || "")));
  fill("containers", rows);
}

function renderServices() {
  const health = {};
  for (const h of values("skein_health")) health[h.container] = h;
  const rows = values("skein_services").filter(d => (d.services || []).length + (d.checks || []).length > 0)
    .sort((a, b) => a.container.localeCompare(b.container)).map(d => {
      const h = health[d.container];
      const checks = (d.checks || []).map(c => {
        const st = h && h.checks ? h.checks[c.name] || "pending" : "pending";
        return el("span", { class: st }, `${c.name} (${st}) `);
      });
      const verdict = !h ? "-" : h.passing ? "passing" : "failing";
      return el("tr", { "data-service-of": d.container }, el("td", {}, d.container),
        el("td", {}, (d.services || []).map(s => `${s.name}:${s.port}`).join(", ")),
        el("td", {}, ...checks), el("td", { class: verdict, "data-health": verdict }, verdict));
    });
  fill("services", rows);
}

function renderLBs() {
  fill("lbs", values("skein_lbs").sort((a, b) => a.name.localeCompare(b.name)).map(l =>
    el("tr", {}, el("td", {}, l.name), el("td", {}, l.server), el("td", {}, l.kind), el("td", {}, l.mode),
      el("td", {}, (l.backends || []).map(b => `${b.name} ${b.host}:${b.port}`).join(", ")))));
}

function renderWS() {
  fill("ws", values("skein_ws").sort((a, b) => a.name.localeCompare(b.name)).map(w =>
    el("tr", {}, el("td", {}, w.name), el("td", {}, w.server),
      el("td", {}, (w.apps || []).map(a => a.url + (a.tls ? " (TLS)" : "")).join(", ")))));
}

function renderDBs() {
  fill("dbs", values("skein_dbs").sort((a, b) => a.name.localeCompare(b.name)).map(d =>
    el("tr", {}, el("td", {}, d.name), el("td", {}, d.kind), el("td", {}, d.server),
      el("td", {}, (d.databases || []).map(x => x.name).join(", ")), el("td", {}, (d.users || []).map(x => x.name).join(", ")))));
}

function renderVIPs() {
  const byName = {};
  for (const v of values("skein_vips")) (byName[v.name] = byName[v.name] || []).push(v);
  fill("vips", Object.keys(byName).sort().map(n => {
    const sides = byName[n];
    const holder = sides.find(s => s.holder);
    return el("tr", {}, el("td", {}, n), el("td", {}, sides[0].ip), el("td", { class: holder ? "up" : "down" }, holder ? holder.server : "none"),
      el("td", {}, holder && holder.since ? new Date(holder.since).toLocaleTimeString() : "-"));
  }));
}

function renderJobs() {
  const ctrs = values("skein_containers");
  fill("jobs", values("skein_jobs").sort((a, b) => a.name.localeCompare(b.name)).map(j => {
    const mine = ctrs.filter(c => c.job === j.name);
    const running = mine.filter(c => c.status === "Running").length;
    let rollout = "-";
    if (j.rollout && (j.rollout.status === "running" || j.rollout.status === "reverting")) {
      const done = mine.filter(c => c.job_version === j.rollout.to && c.status === "Running").length;
      const pct = Math.min(100, Math.round((100 * done) / Math.max(1, j.count)));
      rollout = el("span", {}, el("span", { class: "bar", "data-progress": pct }, el("span", { style: `width:${pct}%` })), ` ${done}/${j.count} at version ${j.rollout.to}`);
    } else if (j.rollout) {
      rollout = `version ${j.rollout.to}: ${j.rollout.status}`;
    }
    return el("tr", { "data-job": j.name }, el("td", {}, j.name), el("td", {}, j.image), el("td", {}, j.version),
      el("td", {}, `${running} of ${j.count} running`), el("td", {}, rollout));
  }));
}

function describe(env) {
  const d = env.data || {};
  return d.name || d.container || d.job || d.instance || d.ws || d.url || d.command || "";
}

function renderEvents() {
  const server = document.getElementById("f-server").value;
  const type = document.getElementById("f-type").value.trim();
  fill("events", events.filter(e => (!server || e.server === server) && (!type || e.type.startsWith(type))).slice(0, 100).map(e =>
    el("tr", {}, el("td", {}, new Date(e.time).toLocaleTimeString()), el("td", {}, e.server || ""), el("td", {}, e.type), el("td", {}, describe(e)))));
}

const renderers = {
  skein_servers: [renderServers], skein_containers: [renderContainers, renderJobs], skein_services: [renderServices],
  skein_health: [renderServices], skein_lbs: [renderLBs], skein_ws: [renderWS], skein_dbs: [renderDBs],
  skein_vips: [renderVIPs], skein_jobs: [renderJobs], skein_endpoints: [],
};

function renderAll() {
  renderServers(); renderContainers(); renderServices(); renderLBs(); renderWS(); renderDBs(); renderVIPs(); renderJobs(); renderEvents();
}

// Renders wait for the next frame: a burst of changes is drawn once.
const dirty = new Set();
let pending = [];
function schedule(fns, arrived) {
  fns.forEach(f => dirty.add(f));
  pending.push(arrived);
  if (pending.length > 1) return;
  requestAnimationFrame(() => {
    const fs = [...dirty];
    dirty.clear();
    fs.forEach(f => f());
    const now = performance.now();
    for (const t of pending) renderTimes.push(now - t);
    pending = [];
    if (renderTimes.length > 1000) renderTimes.splice(0, renderTimes.length - 1000);
    const sorted = [...renderTimes].sort((a, b) => a - b);
    document.getElementById("lag").textContent = `change to screen: ${sorted[Math.floor(sorted.length / 2)].toFixed(1)} ms median`;
  });
}

function onRecord(r) {
  const b = (state[r.bucket] = state[r.bucket] || {});
  if (r.value === null) delete b[r.key]; else b[r.key] = r.value;
  if (r.bucket === "skein_servers" && r.value) {
    const h = (loadHistory[r.value.name] = loadHistory[r.value.name] || []);
    h.push(r.value.load1 || 0);
    if (h.length > 120) h.shift();
  }
}

async function start() {
  const res = await fetch("/api/state");
  Object.assign(state, await res.json());
  renderAll();
  const es = new EventSource("/api/stream");
  const conn = document.getElementById("conn");
  let opened = false;
  es.onopen = async () => {
    conn.textContent = "live"; conn.className = "up";
    if (opened) {
      // Back after a break: what changed meanwhile is in the records.
      const again = await (await fetch("/api/state")).json();
      for (const k of Object.keys(state)) delete state[k];
      Object.assign(state, again);
      renderAll();
    }
    opened = true;
  };
  es.onerror = async () => {
    conn.textContent = "reconnecting"; conn.className = "down";
    // Beyond loopback a session can end (expired, credentials revoked): say so.
    const r = await fetch("/api/state").catch(() => null);
    if (r && r.status === 401) { es.close(); conn.textContent = "logged out: reload to log in"; conn.className = "down out"; }
  };
  es.addEventListener("record", m => {
    const arrived = performance.now();
    const r = JSON.parse(m.data);
    onRecord(r);
    schedule(renderers[r.bucket] || [], arrived);
  });
  es.addEventListener("event", m => {
    const arrived = performance.now();
    events.unshift(JSON.parse(m.data));
    if (events.length > 200) events.pop();
    schedule([renderEvents], arrived);
  });
  // A server whose heartbeats stop turns down by its age: redraw now and then.
  setInterval(renderServers, 2000);
  document.getElementById("f-server").onchange = renderEvents;
  document.getElementById("f-type").oninput = renderEvents;
}

start();
