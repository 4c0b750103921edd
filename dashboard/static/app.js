// streamscore dashboard: one WebSocket, snapshots every ~500 ms, charts drawn on <canvas> with the tiny helpers
// below (no library, no build step). The WebSocket carries the HttpOnly session cookie set by /login.
"use strict";

const PALETTE = ["#5aa9ff", "#47d18c", "#f2b84b", "#ff6b6b", "#a78bfa", "#2dd4bf", "#f472b6", "#facc15",
  "#60a5fa", "#fb923c", "#34d399", "#c084fc"];
const COLORS = { in: "#5aa9ff", out: "#47d18c", grid: "#263047", axis: "#8592ab", bar: "#a78bfa",
  review: "#f2b84b", decline: "#ff6b6b" };

const $ = (id) => document.getElementById(id);
const fmtInt = (n) => (n === null || n === undefined) ? "–" : Math.round(n).toLocaleString("en-US");
const fmtRate = (n) => (n === null || n === undefined) ? "–" : (n >= 100 ? fmtInt(n) : n.toFixed(1));
const fmtSecs = (s) => {
  if (s === null || s === undefined) return "–";
  if (s < 1) return (s * 1000).toFixed(s < 0.01 ? 1 : 0) + " ms";
  return s.toFixed(2) + " s";
};
const fmtTime = (ms) => ms ? new Date(ms).toLocaleTimeString("en-GB", { hour12: false }) : "–";

function setText(id, text) {
  const el = $(id);
  if (el && el.textContent !== String(text)) el.textContent = text;
}

// ----------------------------------------------------------------------------------------------- canvas helpers

function prepare(canvas) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth, h = canvas.clientHeight;  // the CSS box decides the size
  if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
    canvas.width = Math.round(w * dpr);
    canvas.height = Math.round(h * dpr);
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  ctx.font = "11px system-ui, sans-serif";
  return { ctx, w, h };
}

function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function shortNum(v) {
  if (Math.abs(v) >= 1e6) return (v / 1e6).toFixed(1).replace(/\.0$/, "") + "M";
  if (Math.abs(v) >= 1e3) return (v / 1e3).toFixed(1).replace(/\.0$/, "") + "k";
  return Number.isInteger(v) ? String(v) : v.toFixed(2).replace(/0$/, "");
}

// A frame with y grid lines and labels; returns the plot rectangle and the y scale.
function frame(ctx, w, h, yMin, yMax, opts = {}) {
  const left = 44, right = 10, top = 8, bottom = opts.xLabels ? 22 : 8;
  const pw = w - left - right, ph = h - top - bottom;
  const y = (v) => top + ph - (v - yMin) / (yMax - yMin) * ph;
  ctx.strokeStyle = COLORS.grid; ctx.fillStyle = COLORS.axis; ctx.lineWidth = 1;
  ctx.textAlign = "right"; ctx.textBaseline = "middle";
  for (let i = 0; i <= 4; i++) {
    const v = yMin + (yMax - yMin) * i / 4, yy = Math.round(y(v)) + 0.5;
    ctx.beginPath(); ctx.moveTo(left, yy); ctx.lineTo(w - right, yy); ctx.stroke();
    ctx.fillText(opts.yFormat ? opts.yFormat(v) : shortNum(v), left - 6, yy);
  }
  if (opts.xLabels) {
    ctx.textBaseline = "top";
    for (const [frac, label] of opts.xLabels) {
      ctx.textAlign = frac <= 0 ? "left" : frac >= 1 ? "right" : "center";
      ctx.fillText(label, left + frac * pw, top + ph + 6);
    }
  }
  return { left, top, pw, ph, y };
}

function emptyNote(ctx, w, h, text) {
  ctx.fillStyle = COLORS.axis; ctx.textAlign = "center"; ctx.textBaseline = "middle";
  ctx.fillText(text, w / 2, h / 2);
}

function lineChart(canvas, xs, series, opts = {}) {
  const { ctx, w, h } = prepare(canvas);
  const values = series.flatMap((s) => s.values.filter((v) => v !== null && v !== undefined));
  if (!xs.length || !values.length) { frame(ctx, w, h, 0, 1, opts); emptyNote(ctx, w, h, "waiting for data"); return; }
  const yMin = opts.yMin !== undefined ? opts.yMin : 0;
  const yMax = opts.yMax !== undefined ? opts.yMax : niceMax(Math.max(...values) * 1.1);
  const x0 = xs[0], x1 = xs[xs.length - 1] === x0 ? x0 + 1 : xs[xs.length - 1];
  const f = frame(ctx, w, h, yMin, yMax, { ...opts, xLabels: opts.xLabel ? [0, 0.5, 1].map((fr) =>
    [fr, opts.xLabel(x0 + fr * (x1 - x0))]) : null });
  const x = (v) => f.left + (v - x0) / (x1 - x0) * f.pw;
  for (const s of series) {
    ctx.strokeStyle = s.color; ctx.lineWidth = 2; ctx.lineJoin = "round"; ctx.setLineDash(s.dash || []);
    ctx.beginPath();
    let pen = false;
    s.values.forEach((v, i) => {
      if (v === null || v === undefined) { pen = false; return; }
      const px = x(xs[i]), py = f.y(Math.max(yMin, Math.min(yMax, v)));
      if (pen) ctx.lineTo(px, py); else ctx.moveTo(px, py);
      pen = true;
    });
    ctx.stroke();
    ctx.setLineDash([]);
    if (s.fill) {
      ctx.globalAlpha = 0.12; ctx.fillStyle = s.color;
      ctx.lineTo(x(xs[xs.length - 1]), f.y(yMin)); ctx.lineTo(x(xs[0]), f.y(yMin)); ctx.closePath(); ctx.fill();
      ctx.globalAlpha = 1;
    }
    if (s.points) {
      ctx.fillStyle = s.color;
      s.values.forEach((v, i) => {
        if (v === null || v === undefined) return;
        ctx.beginPath(); ctx.arc(x(xs[i]), f.y(v), 2.5, 0, 2 * Math.PI); ctx.fill();
      });
    }
  }
}

function barChart(canvas, labels, values, opts = {}) {
  const { ctx, w, h } = prepare(canvas);
  if (!values.length) { frame(ctx, w, h, 0, 1); emptyNote(ctx, w, h, opts.empty || "waiting for data"); return; }
  const yMax = niceMax(Math.max(...values, 1) * 1.1);
  const f = frame(ctx, w, h, 0, yMax, { xLabels: [] });
  // As many labels as fit (about 62 px each), every `step`-th bar.
  const fit = Math.max(1, Math.floor(f.pw / 62));
  const step = Math.max(1, Math.ceil(labels.length / Math.min(fit, opts.maxLabels || 10)));
  const bw = f.pw / values.length;
  values.forEach((v, i) => {
    ctx.fillStyle = typeof opts.color === "function" ? opts.color(i) : (opts.color || COLORS.bar);
    const top = f.y(v);
    ctx.fillRect(f.left + i * bw + bw * 0.12, top, bw * 0.76, f.top + f.ph - top);
  });
  ctx.fillStyle = COLORS.axis; ctx.textAlign = "center"; ctx.textBaseline = "top";
  labels.forEach((l, i) => { if (i % step === 0) ctx.fillText(l, f.left + (i + 0.5) * bw, f.top + f.ph + 6); });
}

// ------------------------------------------------------------------------------------------------------- panels

let last = null;

function renderThroughput(p) {
  setText("events-in-rate", fmtRate(p.in_rate));
  setText("events-out-rate", fmtRate(p.out_rate));
  lineChart($("throughput-chart"), p.t, [
    { values: p.out, color: COLORS.out, fill: true }, { values: p.in, color: COLORS.in, dash: [5, 4] }],
  { xLabel: (s) => fmtTime(s * 1000) });
}

function renderHistogram(p) {
  setText("fraud-scores-total", fmtInt(p.total));
  setText("histogram-total", `${fmtInt(p.total)} scores · ${fmtInt(p.decisions.APPROVE)} approved`);
  const labels = p.bins.map((_, i) => p.edges[i].toFixed(2));
  barChart($("histogram-chart"), labels, p.bins, { maxLabels: 5,
    color: (i) => p.edges[i] >= 0.9 ? COLORS.decline : p.edges[i] >= 0.5 ? COLORS.review : COLORS.in });
}

function renderDecisions(p) {
  setText("decisions-review", fmtInt(p.review));
  setText("decisions-decline", fmtInt(p.decline));
  const tbody = $("decisions-table").querySelector("tbody");
  const rows = p.latest.map((d) => {
    const tr = document.createElement("tr");
    tr.setAttribute("data-testid", "decision-row");
    const cells = [fmtTime(d.scored_at), d.transaction_id, d.customer_id, d.terminal_id,
      d.amount === null ? "–" : d.amount.toFixed(2), d.score === null ? "–" : d.score.toFixed(3)];
    cells.forEach((c, i) => {
      const td = document.createElement("td");
      td.textContent = c;
      if (i >= 4) td.className = "num";
      tr.appendChild(td);
    });
    const dec = document.createElement("td");
    const pill = document.createElement("span");
    pill.className = "pill " + d.decision; pill.textContent = d.decision;
    dec.appendChild(pill); tr.appendChild(dec);
    const feats = document.createElement("td");
    feats.className = "features";
    for (const f of d.top_features || []) {
      const span = document.createElement("span");
      span.className = "feat";
      const b = document.createElement("b");
      b.textContent = f.name;
      span.appendChild(b);
      span.appendChild(document.createTextNode(` ${shortNum(f.value)}` + (f.z === null ? "" : ` (z ${f.z})`)));
      feats.appendChild(span);
    }
    tr.appendChild(feats);
    return tr;
  });
  if (!rows.length) {
    const tr = document.createElement("tr"); tr.className = "empty";
    const td = document.createElement("td"); td.colSpan = 8; td.textContent = "no decisions yet";
    tr.appendChild(td); rows.push(tr);
  }
  tbody.replaceChildren(...rows);
}

function renderSentiment(p) {
  const topics = Object.keys(p.topics).sort();
  const xsSet = new Set();
  topics.forEach((t) => p.topics[t].t.forEach((x) => xsSet.add(x)));
  const xs = [...xsSet].sort((a, b) => a - b);
  const series = topics.map((t, i) => {
    const byX = new Map(p.topics[t].t.map((x, j) => [x, p.topics[t].mean[j]]));
    return { values: xs.map((x) => byX.has(x) ? byX.get(x) : null), color: PALETTE[i % PALETTE.length], points: true };
  });
  lineChart($("sentiment-chart"), xs, series, { yMin: 0, yMax: 1, yFormat: (v) => v.toFixed(2),
    xLabel: (ms) => fmtTime(ms) });
  const legend = $("sentiment-legend");
  legend.replaceChildren(...topics.map((t, i) => {
    const span = document.createElement("span");
    const sw = document.createElement("i"); sw.className = "sw"; sw.style.background = PALETTE[i % PALETTE.length];
    span.appendChild(sw); span.appendChild(document.createTextNode(t));
    span.setAttribute("data-testid", "sentiment-topic");
    return span;
  }));
  const total = Object.values(p.labels).reduce((a, b) => a + b, 0);
  setText("sentiment-scores-total", fmtInt(total));
  if (p.shift_threshold !== undefined) setText("shift-threshold", p.shift_threshold.toFixed(2));
  renderTopicCards(p, topics);
}

// One card per topic: its mean positivity line with the volume as bars under it, the shift marker, and the most
// negative / positive recent posts. Every text goes in through textContent, never parsed as HTML.
function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function examplesList(items, cls, testid) {
  const ul = el("ul", "examples " + cls);
  for (const r of items || []) {
    const li = el("li");
    li.setAttribute("data-testid", testid);
    li.appendChild(el("span", "pol", (r.polarity > 0 ? "+" : "") + r.polarity.toFixed(2)));
    li.appendChild(el("span", "txt", r.text === null || r.text === undefined ? `(post ${r.post_id})` : r.text));
    ul.appendChild(li);
  }
  if (!ul.children.length) ul.appendChild(el("li", "empty", "no posts yet"));
  return ul;
}

function renderTopicCards(p, chartTopics) {
  const box = $("topic-cards");
  if (!box) return;
  const names = Object.keys(p.topics).sort();
  const cards = names.map((t) => {
    const d = p.topics[t];
    const card = el("div", "topic-card" + (d.shifted ? " shifted" : ""));
    card.setAttribute("data-testid", "topic-card");
    card.setAttribute("data-topic", t);
    const h = el("h3");
    const sw = el("i", "sw");
    const ci = chartTopics.indexOf(t);
    sw.style.background = PALETTE[(ci < 0 ? 0 : ci) % PALETTE.length];
    h.appendChild(sw);
    h.appendChild(el("span", "name", t));
    const vol = d.count.length ? d.count[d.count.length - 1] : null;
    h.appendChild(el("span", "vol", vol === null ? "" : `${fmtInt(vol)} posts/window`));
    if (d.shifted) {
      const m = el("span", "shift-mark", `shift ${d.shift > 0 ? "+" : ""}${d.shift.toFixed(2)}`);
      m.setAttribute("data-testid", "shift-marker");
      h.appendChild(m);
    }
    card.appendChild(h);
    const canvas = el("canvas", "topic-chart");
    card.appendChild(canvas);
    card.appendChild(el("div", "ex-label", "most negative"));
    card.appendChild(examplesList(d.negative, "neg", "example-negative"));
    card.appendChild(el("div", "ex-label", "most positive"));
    card.appendChild(examplesList(d.positive, "pos", "example-positive"));
    return [card, canvas, d];
  });
  box.replaceChildren(...cards.map((c) => c[0]));
  for (const [, canvas, d] of cards) topicChart(canvas, d);
}

function topicChart(canvas, d) {
  const { ctx, w, h } = prepare(canvas);
  if (!d.t.length) { emptyNote(ctx, w, h, "no windows yet"); return; }
  const f = frame(ctx, w, h, 0, 1, { yFormat: (v) => v.toFixed(1) });
  const maxCount = Math.max(1, ...d.count);
  const n = d.t.length, bw = f.pw / n;
  ctx.fillStyle = COLORS.grid;
  d.count.forEach((c, i) => {
    const bh = c / maxCount * f.ph * 0.4;
    ctx.fillRect(f.left + i * bw + bw * 0.15, f.top + f.ph - bh, bw * 0.7, bh);
  });
  ctx.strokeStyle = COLORS.out; ctx.lineWidth = 2; ctx.beginPath();
  let pen = false;
  d.mean.forEach((v, i) => {
    if (v === null) { pen = false; return; }
    const px = f.left + (i + 0.5) * bw, py = f.y(v);
    if (pen) ctx.lineTo(px, py); else ctx.moveTo(px, py);
    pen = true;
  });
  ctx.stroke();
}

function renderCounts(p) {
  setText("late-transactions", fmtInt(p.late_transactions));
  setText("late-posts", fmtInt(p.late_posts));
  setText("dead-letter-total", fmtInt(p.dead_letters));
  setText("decode-errors", fmtInt(p.decode_errors));
  const reasons = Object.entries(p.dead_letter_reasons).sort((a, b) => b[1] - a[1]).slice(0, 2);
  setText("dead-letter-reasons", reasons.map(([r, n]) => `${r} ${fmtInt(n)}`).join(" · "));
  if (!last || !last.panels || !last.panels.sentiment) setText("sentiment-scores-total", fmtInt(p.sentiment_scores));
}

function renderLatency(p) {
  setText("latency-fraud-p50", fmtSecs(p.fraud.p50));
  setText("latency-fraud-p99", fmtSecs(p.fraud.p99));
  setText("latency-sentiment-p50", fmtSecs(p.sentiment.p50));
  setText("latency-sentiment-p99", fmtSecs(p.sentiment.p99));
}

function renderLag(p) {
  setText("lag-total", fmtInt(p.total));
  const rows = p.partitions.slice().sort((a, b) => a.topic.localeCompare(b.topic) || a.partition - b.partition);
  const topics = [...new Set(rows.map((r) => r.topic))];
  // Label a partition by what the topic holds (the names may be long or test-generated).
  const kindOf = {};
  for (const [kind, name] of Object.entries((last && last.meta.topics) || {})) kindOf[name] = SHORT[kind] || kind;
  barChart($("lag-chart"), rows.map((r) => `${kindOf[r.topic] || r.topic.slice(0, 8)}/${r.partition}`),
    rows.map((r) => r.lag),
    { maxLabels: 16, empty: "no partitions yet",
      color: (i) => PALETTE[topics.indexOf(rows[i].topic) % PALETTE.length] });
}

// The fraud job's state and restart count, as the server last read them from Flink's REST API.
function renderJob(p) {
  setText("job-state", p.state || "–");
  setText("job-restarts", fmtInt(p.restarts));
  const el = $("job-state");
  const title = p.error || (p.job_id ? `${p.name} ${p.job_id}` : "");
  if (el && el.title !== title) el.title = title;
  const kpi = $("job-kpi");
  const cls = p.state === "RUNNING" ? (p.restarts ? "kpi warn" : "kpi") : (p.state === "NOT WATCHED" ? "kpi" : "kpi bad");
  if (kpi && kpi.className !== cls) kpi.className = cls;
}

// The models panel (issue 27): deciding versions and their decision mix, the A/B split, production against
// shadow, and the newest live-quality snapshot per version side by side. Text only (textContent), "–" for null.
const fmtShare = (x) => (x === null || x === undefined) ? "–" : (100 * x).toFixed(1) + " %";
const fmtNum = (x, d = 3) => (x === null || x === undefined) ? "–" : Number(x).toFixed(d);
const QUALITY_ROWS = [["stage", "stage", (v) => v === null || v === undefined ? "–" : v],
  ["labels", "labels", fmtInt], ["frauds", "frauds", fmtInt], ["AUC", "auc_roc", fmtNum],
  ["average precision", "average_precision", fmtNum], ["precision @ review", "precision_review", fmtNum],
  ["recall @ review", "recall_review", fmtNum], ["precision @ decline", "precision_decline", fmtNum],
  ["recall @ decline", "recall_decline", fmtNum], ["card precision@100", "card_precision_at_100", fmtNum],
  ["training AP", "training_average_precision", fmtNum], ["updated", "updated_at", fmtTime]];

function row(cells, testid, numFrom) {
  const tr = el("tr");
  if (testid) tr.setAttribute("data-testid", testid);
  cells.forEach((c, i) => {
    const td = el("td", i >= numFrom ? "num" : "txt", c);
    if (i < numFrom) td.title = c;
    tr.appendChild(td);
  });
  return tr;
}

function emptyRow(cols, text) {
  const tr = el("tr", "empty");
  const td = el("td", null, text); td.colSpan = cols;
  tr.appendChild(td);
  return tr;
}

function renderModels(p) {
  const th = p.thresholds;
  setText("models-note", `last ${Math.round(p.window_s / 60)} min · both scores decided at the configured thresholds ` +
    `(review ≥ ${fmtNum(th.review, 2)}, decline ≥ ${fmtNum(th.decline, 2)}), not each record's rule set`);
  const vrows = p.versions.map((v) => {
    const d = v.decisions, mix = (k) => v.n ? `${fmtInt(d[k])} (${fmtShare(d[k] / v.n)})` : "–";
    const tr = row([v.version, v.stage || "–", fmtInt(v.n), fmtShare(v.share), mix("APPROVE"), mix("REVIEW"),
      mix("DECLINE")], "models-version-row", 2);
    tr.setAttribute("data-version", v.version);
    return tr;
  });
  $("models-versions").querySelector("tbody").replaceChildren(...(vrows.length ? vrows : [emptyRow(7, "no scores yet")]));
  setText("models-ab", p.ab.length ? "A/B split: " + p.ab.map((a) =>
    `${a.arm} ${fmtShare(a.share)} (${a.versions.join(", ")})`).join(" · ") : "no A/B split");
  setText("models-last-n-head", `declines (last ${fmtInt(p.last_n)}): deciding / shadow`);
  const srows = p.shadow.map((s) => {
    const tr = row([s.deciding, s.shadow, fmtInt(s.n), `${fmtShare(s.differ_share)} (${fmtInt(s.differ)})`,
      fmtNum(s.mean_abs_diff, 4), `${fmtInt(s.declines_deciding)} / ${fmtInt(s.declines_shadow)} of ${fmtInt(s.last_n)}`],
    "models-shadow-row", 2);
    tr.setAttribute("data-deciding", s.deciding); tr.setAttribute("data-shadow", s.shadow);
    tr.children[3].setAttribute("data-testid", "models-differ");
    if (s.differ) tr.children[3].classList.add("differ");
    const notes = [];
    if (s.otherwise) notes.push(`${fmtInt(s.otherwise)} records were decided otherwise than the configured thresholds say (rule set or hard rule)`);
    if (s.unscored) notes.push(`${fmtInt(s.unscored)} records named the shadow without a usable score`);
    tr.title = notes.join("; ");
    return tr;
  });
  $("models-shadow").querySelector("tbody").replaceChildren(...(srows.length ? srows : [emptyRow(6, "no shadow scores yet")]));
  const table = $("models-quality");
  const head = el("tr");
  head.appendChild(el("th", null, "metric"));
  for (const q of p.quality) {
    const h = el("th", "num", q.version);
    h.setAttribute("data-testid", "models-quality-version");
    h.title = `${q.model || ""} ${q.version}`;
    head.appendChild(h);
  }
  table.querySelector("thead").replaceChildren(head);
  const qrows = p.quality.length ? QUALITY_ROWS.map(([label, key, fmt]) => {
    const tr = el("tr");
    tr.setAttribute("data-metric", key);
    tr.appendChild(el("td", null, label));
    for (const q of p.quality) {
      const td = el("td", "num", fmt(q[key]));
      td.setAttribute("data-testid", "models-quality-cell");
      td.setAttribute("data-version", q.version);
      tr.appendChild(td);
    }
    return tr;
  }) : [emptyRow(1, "no quality snapshots yet")];
  table.querySelector("tbody").replaceChildren(...qrows);
}

const SHORT = { fraud_score: "fraud", sentiment_score: "sent", trend: "trend", late_transaction: "late-tx",
  late_post: "late-post", dead_letter: "dlq", post: "posts", model_quality: "quality" };

const RENDER = { throughput: renderThroughput, histogram: renderHistogram, decisions: renderDecisions,
  sentiment: renderSentiment, counts: renderCounts, latency: renderLatency, lag: renderLag, job: renderJob,
  models: renderModels };

function render(msg) {
  last = msg;
  setText("snapshot-seq", msg.seq);
  setText("meta-clients", msg.meta.clients);
  setText("meta-kafka", msg.meta.kafka ? "up" : "down");
  setText("meta-interval", msg.meta.interval_s);
  setText("last-update", fmtTime(msg.ts * 1000));
  for (const [name, fn] of Object.entries(RENDER)) {
    if (msg.panels[name]) {
      try { fn(msg.panels[name]); } catch (e) { console.error("panel", name, e); }
    }
  }
}

// --------------------------------------------------------------------------------------------------- connection

let attempt = 0, socket = null, pending = null, retryTimer = null, countdownTimer = null;

function status(cls, text) {
  const el = $("connection-status");
  el.className = "status " + cls;
  el.textContent = text;
  el.setAttribute("data-state", cls);
  document.body.classList.toggle("stale", cls !== "connected");
}

function connect() {
  clearTimeout(retryTimer); clearInterval(countdownTimer);
  status(attempt ? "reconnecting" : "connecting", attempt ? `reconnecting (attempt ${attempt + 1})…` : "connecting…");
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  socket = new WebSocket(`${proto}//${location.host}/ws`);
  let opened = false;
  socket.onopen = () => { opened = true; attempt = 0; status("connected", "connected"); };
  socket.onmessage = (ev) => {
    let msg;
    try { msg = JSON.parse(ev.data); } catch (e) { return; }
    if (msg.type !== "snapshot") {
      if (msg.type === "error") console.warn("dashboard error frame", msg);
      return;
    }
    // Draw at most once per animation frame, always the newest snapshot.
    const first = pending === null;
    pending = msg;
    if (first) requestAnimationFrame(() => { const m = pending; pending = null; render(m); });
  };
  socket.onclose = (ev) => {
    socket = null;
    // Exponential backoff with jitter: 0.5 s, 1 s, 2 s ... capped at 15 s.
    const delay = Math.min(15000, 500 * Math.pow(2, attempt)) * (0.8 + 0.4 * Math.random());
    attempt += 1;
    const until = Date.now() + delay;
    const why = ev.code === 1008 ? ` (${ev.reason || "policy"})` : "";
    // Refused at the handshake, or closed because the session ended: back to the login page if logged out.
    if (!opened || ev.code === 1008) {
      fetch("/session", { credentials: "same-origin", cache: "no-store" })
        .then((r) => { if (r.status === 401) location.replace("/login"); }).catch(() => {});
    }
    const tick = () => status("disconnected",
      `disconnected${why} — reconnecting in ${Math.max(0, (until - Date.now()) / 1000).toFixed(1)}s`);
    tick();
    countdownTimer = setInterval(tick, 200);
    retryTimer = setTimeout(connect, delay);
  };
  socket.onerror = () => { /* onclose follows */ };
}

// Keep the server's idle detection and our own liveness view honest: a ping every 15 s.
setInterval(() => {
  if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify({ type: "ping", id: Date.now() }));
}, 15000);
window.addEventListener("resize", () => { if (last) render(last); });
window.dashboard = { get last() { return last; }, get socket() { return socket; } };
connect();
