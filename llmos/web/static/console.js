// The llmos console's few live parts: polling tables and charts, streaming chat, feedback.
// User-supplied text only ever enters the page through textContent, never innerHTML.
"use strict";

const CSRF = document.querySelector('meta[name="csrf-token"]').content;
const POLL_MS = 2000;

function el(tag, text, attrs) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  return node;
}

function row(cells) {
  const tr = el("tr");
  for (const c of cells) {
    const td = el("td");
    if (c instanceof Node) td.appendChild(c); else td.textContent = c === null || c === undefined ? "" : String(c);
    tr.appendChild(td);
  }
  return tr;
}

function fmtBytes(n) {
  const units = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return i === 0 ? `${n} B` : `${n.toFixed(1)} ${units[i]}`;
}

function fmtNum(v) { return typeof v === "number" ? Number(v.toPrecision(4)).toString() : (v ?? "-"); }

async function getJSON(url) {
  const r = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
  if (r.status === 401) { window.location = "/console/login?next=" + encodeURIComponent(location.pathname); }
  if (!r.ok) throw new Error(`${url}: ${r.status}`);
  return r.json();
}

async function postJSON(url, body) {
  return fetch(url, { method: "POST", credentials: "same-origin", body: JSON.stringify(body),
    headers: { "Content-Type": "application/json", "X-CSRF-Token": CSRF } });
}

function poll(fn) {
  const tick = async () => {
    let again = true;
    try { again = (await fn()) !== false; } catch (e) { console.warn(e); }
    if (again) setTimeout(tick, POLL_MS);
  };
  setTimeout(tick, POLL_MS);
}

function replaceRows(tbody, rows, emptyText, width) {
  tbody.replaceChildren(...rows);
  if (!rows.length) {
    const tr = row([emptyText]); tr.className = "empty"; tr.firstChild.setAttribute("colspan", width);
    tbody.appendChild(tr);
  }
}

// -- a small SVG line chart ------------------------------------------------------------------------
const SVG = "http://www.w3.org/2000/svg";
const COLORS = ["#2563eb", "#dc2626", "#059669", "#d97706"];

function svg(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  return node;
}

// series: [{name, points: [[x, y], ...]}]; x and y are numbers.
function drawChart(box, series, opts) {
  const W = 520, H = 200, L = 48, R = 10, T = 10, B = 26;
  const pts = series.flatMap(s => s.points).filter(p => p[1] !== null && p[1] !== undefined);
  const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", class: "linechart" });
  if (!pts.length) {
    const t = svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "axis" });
    t.textContent = box.dataset.empty || "no data yet";
    chart.appendChild(t); box.replaceChildren(chart); return;
  }
  const xs = pts.map(p => p[0]), ys = pts.map(p => p[1]);
  const x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 1e-9);
  const low = opts && opts.fromZero === false ? Math.min(...ys) : Math.min(0, ...ys);
  const top = Math.max(...ys), pad = opts && opts.fromZero === false ? (top - low) * 0.05 : 0;
  const y0 = low === 0 ? 0 : low - pad, y1 = top - low > 1e-9 ? top + pad : y0 + 1;
  const sx = x => L + (x - x0) / (x1 - x0 || 1) * (W - L - R);
  const sy = y => H - B - (y - y0) / (y1 - y0 || 1) * (H - T - B);
  chart.appendChild(svg("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, class: "axisline" }));
  chart.appendChild(svg("line", { x1: L, y1: T, x2: L, y2: H - B, class: "axisline" }));
  for (const [y, label] of [[y0, y0], [y1, y1]]) {
    const t = svg("text", { x: L - 4, y: sy(y) + 4, "text-anchor": "end", class: "axis" });
    t.textContent = fmtNum(label); chart.appendChild(t);
  }
  const xt = svg("text", { x: W - R, y: H - 6, "text-anchor": "end", class: "axis" });
  xt.textContent = opts && opts.xlabel ? opts.xlabel(x1) : ""; chart.appendChild(xt);
  series.forEach((s, i) => {
    const good = s.points.filter(p => p[1] !== null && p[1] !== undefined);
    if (!good.length) return;
    const d = good.map((p, j) => `${j ? "L" : "M"}${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join(" ");
    chart.appendChild(svg("path", { d, fill: "none", stroke: COLORS[i % COLORS.length], "stroke-width": 2 }));
    const key = svg("text", { x: L + i * 170, y: H - 6, fill: COLORS[i % COLORS.length], class: "legend" });
    key.textContent = `${s.name}: ${fmtNum(good[good.length - 1][1])}`;
    chart.appendChild(key);
  });
  box.replaceChildren(chart);
}

// -- pages -----------------------------------------------------------------------------------------
function overviewPage() {
  const tbody = document.querySelector("#ps-table tbody");
  poll(async () => {
    const ps = await getJSON("/console/api/ps");
    const used = document.getElementById("mem-used");  // admins only: the budget is the machine's
    if (used && ps.used_bytes !== null) used.textContent = fmtBytes(ps.used_bytes);
    const rows = ps.models.map(m => row([m.model, m.loaded ? "yes" : "no", fmtBytes(m.footprint_bytes), m.in_use,
      m.queue ? m.queue.waiting : 0, m.queue ? m.queue.running : 0, m.queue ? m.queue.tokens_per_s.toFixed(1) : 0,
      m.queue ? m.queue.finished : 0, m.queue ? m.queue.rejected : 0,
      m.expires_in_s === null ? "-" : `${Math.round(m.expires_in_s)} s`]));
    replaceRows(tbody, rows, "No model loaded or queued yet: models load on their first request.", 10);
    const devices = document.querySelector("#devices-table tbody");  // admins only
    if (devices) replaceRows(devices, ps.devices.map(d => row([d.id, d.name, fmtBytes(d.used_bytes),
      fmtBytes(d.budget_bytes), d.models.join(", ") || "-", Object.keys(d.reserved).join(", ") || "-"])),
      "No device.", 6);
  });
}

function jobLink(id) { return el("a", id, { href: "/console/jobs/" + encodeURIComponent(id) }); }

function progressCell(p) {
  const span = el("span");
  span.appendChild(el("progress", null, { max: p.total || 1, value: p.step }));
  span.appendChild(document.createTextNode(` ${p.step}/${p.total ?? "?"}`));
  return span;
}

function jobsPage() {
  const tbody = document.querySelector("#jobs-table tbody");
  poll(async () => {
    const jobs = (await getJSON("/console/api/jobs")).data;
    const rows = jobs.map(j => row([jobLink(j.id), j.kind, el("span", j.state, { class: "state state-" + j.state }),
      progressCell(j.progress), "loss" in j.progress.metrics ? fmtNum(j.progress.metrics.loss) : "-",
      j.result_model ? el("a", j.result_model, { href: "/console/models/" + encodeURIComponent(j.result_model) }) : "",
      (j.created_at || "").slice(0, 19)]));
    replaceRows(tbody, rows, "No jobs yet.", 7);
  });
}

function jobPage(box) {
  const id = box.dataset.job;
  const chart = document.getElementById("loss-chart");
  const update = async () => {
    const data = await getJSON("/console/api/jobs/" + encodeURIComponent(id));
    const j = data.job;
    const state = document.getElementById("job-state");
    state.textContent = j.state; state.className = "state state-" + j.state;
    const bar = document.getElementById("job-progress");
    bar.max = j.progress.total || 1; bar.value = j.progress.step;
    document.getElementById("job-step").textContent = `${j.progress.step}/${j.progress.total ?? "?"}`;
    const result = document.getElementById("job-result");
    if (j.result_model && !result.querySelector("a")) {
      result.replaceChildren(el("a", j.result_model, { href: "/console/models/" + encodeURIComponent(j.result_model) }));
    }
    document.getElementById("job-eta").textContent = j.progress.eta_s == null ? "-" : `${Math.round(j.progress.eta_s)} s`;
    drawChart(chart, [{ name: "training loss", points: data.loss }, { name: "validation loss", points: data.eval_loss }],
      { xlabel: x => `step ${Math.round(x)}`, fromZero: false });
    replaceRows(document.querySelector("#job-events tbody"),
      data.events.map(e => row([(e.at || "").slice(11, 19), e.kind, el("code", JSON.stringify(e.data))])), "no events", 3);
    document.getElementById("job-log").textContent = data.log;
    return !["succeeded", "failed", "cancelled"].includes(j.state);
  };
  update().then(again => { if (again) poll(update); }).catch(console.warn);
}

function metricsPage() {
  const history = [];
  const boxes = [...document.querySelectorAll("#live-charts .chart")];
  const update = async () => {
    const s = await getJSON("/console/api/stats");
    history.push(s);
    if (history.length > 150) history.shift();
    const t0 = history[0].t;
    for (const box of boxes) {
      const names = box.dataset.metric.split(",");
      drawChart(box, names.map(n => ({ name: n.replaceAll("_", " "), points: history.map(h => [h.t - t0, h[n]]) })),
        { xlabel: x => `last ${Math.round(x)} s` });
    }
  };
  update().catch(console.warn);
  poll(update);
}

// -- playground ------------------------------------------------------------------------------------
function feedbackWidget(requestId, correctionOf) {
  const node = document.getElementById("feedback-template").content.firstElementChild.cloneNode(true);
  node.dataset.requestId = requestId;
  let rating = null;
  const status = node.querySelector(".feedback-status");
  node.querySelectorAll(".thumb").forEach(b => b.addEventListener("click", () => {
    rating = Number(b.dataset.rating);
    node.querySelectorAll(".thumb").forEach(o => o.classList.toggle("chosen", o === b));
  }));
  node.querySelector(".send").addEventListener("click", async () => {
    const correction = node.querySelector(".correction").value.trim();
    const comment = node.querySelector(".comment").value.trim();
    const body = { request_id: requestId };
    if (rating !== null) body.rating = rating;
    if (correction) body.correction = correctionOf ? correctionOf(correction) : correction;
    if (comment) body.comment = comment;
    status.textContent = "sending…";
    const r = await postJSON("/console/api/feedback", body);
    const answer = await r.json().catch(() => ({}));
    status.textContent = r.ok ? "feedback saved" : `not saved: ${(answer.error && answer.error.message) || r.status}`;
    status.className = "feedback-status " + (r.ok ? "ok" : "error");
  });
  return node;
}

async function readSSE(response, onData) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, cut); buffer = buffer.slice(cut + 2);
      for (const line of event.split("\n")) {
        if (!line.startsWith("data: ")) continue;
        const payload = line.slice(6);
        if (payload !== "[DONE]") onData(JSON.parse(payload));
      }
    }
  }
}

function chatPanel() {
  const form = document.getElementById("chat-form");
  if (!form) return;
  const log = document.getElementById("chat-log");
  const messages = [];
  form.addEventListener("submit", async ev => {
    ev.preventDefault();
    const input = document.getElementById("chat-input");
    const text = input.value.trim();
    if (!text) return;
    input.value = "";
    messages.push({ role: "user", content: text });
    log.appendChild(el("div", text, { class: "msg user" }));
    const answer = el("div", "", { class: "msg assistant streaming" });
    log.appendChild(answer);
    const send = document.getElementById("chat-send");
    send.disabled = true;
    try {
      const r = await postJSON("/console/api/chat", { model: document.getElementById("chat-model").value,
        messages, max_tokens: Number(document.getElementById("chat-max").value) || 48 });
      if (!r.ok) {
        const err = await r.json().catch(() => ({}));
        answer.textContent = "error: " + ((err.error && err.error.message) || r.status);
        answer.classList.add("error"); messages.pop(); return;
      }
      const requestId = r.headers.get("X-Request-Id");
      let finish = null;
      await readSSE(r, chunk => {
        if (chunk.error) { answer.classList.add("error"); answer.textContent += ` [${chunk.error.message}]`; return; }
        const choice = chunk.choices && chunk.choices[0];
        if (!choice) return;
        if (choice.delta && choice.delta.content) answer.textContent += choice.delta.content;
        if (choice.finish_reason) finish = choice.finish_reason;
      });
      answer.classList.remove("streaming");
      answer.dataset.finish = finish || "";
      messages.push({ role: "assistant", content: answer.textContent });
      log.appendChild(feedbackWidget(requestId));
    } finally {
      send.disabled = false;
    }
  });
}

function taskPanels() {
  document.querySelectorAll(".task-form").forEach(form => form.addEventListener("submit", async ev => {
    ev.preventDefault();
    const task = form.dataset.task;
    const out = document.getElementById(task + "-result");
    const text = form.querySelector("textarea").value;
    out.replaceChildren(el("p", "running…", { class: "muted" }));
    const r = await postJSON("/console/api/" + task, { model: form.querySelector("select").value, input: text });
    const data = await r.json().catch(() => ({}));
    if (!r.ok) { out.replaceChildren(el("p", "error: " + ((data.error && data.error.message) || r.status), { class: "error" })); return; }
    const item = data.data[0];
    const shown = el("div", null, { class: "msg assistant" });
    if (task === "classify") {
      shown.textContent = `${item.label} (${fmtNum(item.score)})`;
    } else {
      shown.textContent = item.entities.length
        ? item.entities.map(e => `${e.text || text.slice(e.start, e.end)} → ${e.label}`).join(", ") : "no entities";
    }
    const parse = task === "tag" ? (c => { try { return JSON.parse(c); } catch (e) { return c; } }) : null;
    out.replaceChildren(shown, feedbackWidget(data.id, parse));
  }));
}

document.addEventListener("DOMContentLoaded", () => {
  const page = document.body.dataset.page;
  if (page === "overview") overviewPage();
  if (page === "jobs") {
    const box = document.getElementById("job");
    if (box) jobPage(box); else jobsPage();
  }
  if (page === "metrics") metricsPage();
  if (page === "playground") { chatPanel(); taskPanels(); }
});
