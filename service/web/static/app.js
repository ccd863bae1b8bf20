// zipedge page: pick a date range, download it; follow a background job when the range is
// too large to stream. Plain JS, no build step, no inline code (the page has a strict CSP).
"use strict";

const STORE_KEY = "zipedge.job"; // {id, status_url, events_url} of the job being followed
const TOKEN_KEY = "zipedge.token"; // the bearer token, for this tab only (sessionStorage)
const POLL_MS = 2000;
const SSE_MAX_ERRORS = 2; // consecutive EventSource errors before falling back to polling
const TERMINAL = new Set(["ready", "failed", "cancelled"]);
const DAY_MS = 86400000;

const $ = (id) => document.getElementById(id);
const ui = {
  form: $("range"), from: $("from"), to: $("to"), download: $("download"),
  auth: $("auth"), token: $("token"),
  job: $("job"), title: $("job-title"), bar: $("bar"), text: $("progress-text"),
  again: $("again"), cancel: $("cancel"), restart: $("restart"),
  status: $("status"), announce: $("announce"), error: $("error"),
};
const reducedMotion = window.matchMedia("(prefers-reduced-motion: reduce)");

// The job being followed: {ref, es, timer, errors, start, step, status}; null when none.
let watch = null;

// ---- small helpers ---------------------------------------------------------------------

const isoDay = (date) => date.toISOString().slice(0, 10); // the UTC day, as the API counts

function formatBytes(n) {
  const units = ["bytes", "kB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i += 1; }
  return `${i === 0 ? n : n.toFixed(n < 10 ? 1 : 0)}\u00a0${units[i]}`; // never wrap "420 | MB"
}

function formatDuration(s) {
  if (s < 60) return `${Math.max(1, Math.round(s))}\u00a0s`;
  if (s < 3600) return `${Math.round(s / 60)}\u00a0min`;
  return `${Math.floor(s / 3600)}\u00a0h ${Math.round((s % 3600) / 60)}\u00a0min`;
}

function say(message) { ui.status.textContent = message; }
function showError(message) { ui.error.textContent = message; }
function clearMessages() { say(""); showError(""); }

// ---- identity ------------------------------------------------------------------------------
// Without authentication on the server the page needs nothing. With it, the page holds a
// bearer token (pasted, or given as #token=… in the address, which never reaches a server)
// and turns each download into a signed link first, so the download itself stays a plain
// navigation the browser handles (no header needed).

const token = () => ui.token.value.trim();
const authHeaders = () => (token() ? { Authorization: `Bearer ${token()}` } : {});

function needToken(message) {
  ui.auth.hidden = false;
  ui.auth.open = true;
  ui.token.focus();
  showError(message);
}

// fetch + JSON; throws an Error carrying the API's own message (and .status) on failure.
async function api(url, options = {}) {
  const headers = { Accept: "application/json", ...authHeaders(), ...(options.headers || {}) };
  const response = await fetch(url, { ...options, headers });
  const isJson = (response.headers.get("content-type") || "").includes("json");
  let doc = null;
  if (isJson) doc = await response.json();
  else if (response.body) response.body.cancel(); // never read a ZIP into memory
  if (!response.ok) {
    const message = doc && doc.error && doc.error.message;
    const error = new Error(message || `The server answered ${response.status} ${response.statusText}.`);
    error.status = response.status;
    throw error;
  }
  return doc;
}

// ---- starting a download ----------------------------------------------------------------

async function submit(event) {
  event.preventDefault();
  clearMessages();
  const range = { from: ui.from.value, to: ui.to.value };
  let url = `/v1/zip?${new URLSearchParams(range)}`;
  ui.download.disabled = true;
  try {
    if (token()) {
      sessionStorage.setItem(TOKEN_KEY, token());
      const link = await api("/v1/links", {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(range),
      });
      url = link.url; // signed: opens with no header, valid for a while, shareable
    }
    // HEAD answers like GET without fetching a photo: it tells us stream, cache or job.
    const head = await fetch(url, { method: "HEAD", redirect: "manual" });
    if (head.type === "opaqueredirect" || (head.ok && head.status !== 202)) {
      // 200 streams now, a redirect points at an archive built before. Navigating to an
      // attachment keeps this page and lets the browser show its own download progress.
      window.location.assign(url);
      say("Download started. Your browser shows its progress.");
    } else if (head.status === 202) {
      // Too large to stream: a background job (HEAD has no body, so ask for the job).
      const job = await api("/v1/jobs", {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(range),
      });
      follow(job);
    } else if (head.status === 401) {
      needToken("This server needs an access token: paste yours under “Access token”.");
    } else {
      await api(url); // the same request as GET, for the error's JSON message
      showError(`The server answered ${head.status}.`);
    }
  } catch (error) {
    if (error.status === 401) needToken(`The access token was refused: ${error.message}`);
    else showError(error instanceof TypeError ? "The server could not be reached. Please try again." : error.message);
  } finally {
    ui.download.disabled = false;
  }
}

// ---- following a job ----------------------------------------------------------------------

function follow(job) {
  stop();
  const id = job.id;
  const ref = {
    id,
    status_url: job.status_url || `/v1/jobs/${encodeURIComponent(id)}`,
    events_url: job.events_url || `/v1/jobs/${encodeURIComponent(id)}/events`,
  };
  localStorage.setItem(STORE_KEY, JSON.stringify(ref)); // survives a reload
  watch = { ref, es: null, timer: 0, errors: 0, start: null, step: -1, status: "" };
  ui.form.hidden = true;
  ui.job.hidden = false;
  ui.again.hidden = ui.restart.hidden = true;
  ui.cancel.hidden = false;
  ui.cancel.disabled = false;
  if (job.status) update(job);
  else render({ status: "queued", entries_done: 0, entries_total: 0, bytes_done: 0, bytes_total: 0 });
  ui.title.focus(); // move focus to the new view so keyboard and screen reader users follow
  if (watch) listen();
}

function listen() {
  // EventSource cannot send a header: with a token, poll instead.
  if (!("EventSource" in window) || token()) { poll(); return; }
  const w = watch;
  const es = new EventSource(w.ref.events_url);
  w.es = es;
  const onEvent = (event) => {
    if (w !== watch) return;
    w.errors = 0;
    update(JSON.parse(event.data));
  };
  for (const name of ["progress", ...TERMINAL]) es.addEventListener(name, onEvent);
  es.onerror = () => {
    if (w !== watch) return;
    // EventSource reconnects by itself (sending Last-Event-ID). If it keeps failing (a
    // proxy that buffers or blocks streams) or gave up (404), poll the status instead.
    w.errors += 1;
    if (es.readyState === EventSource.CLOSED || w.errors >= SSE_MAX_ERRORS) {
      es.close();
      w.es = null;
      poll();
    }
  };
}

async function poll() {
  const w = watch;
  if (!w) return;
  try {
    const job = await api(w.ref.status_url, { cache: "no-store" });
    if (w === watch) update(job);
  } catch (error) {
    if (w !== watch) return;
    if (error.status === 404) {
      stop();
      localStorage.removeItem(STORE_KEY);
      showEnd("This job is no longer known", "The server does not know this job (it may have expired or the server restarted). Please start over.");
      return;
    }
    say("Connection problem; retrying…"); // transient: keep polling
  }
  if (w === watch) w.timer = window.setTimeout(poll, POLL_MS);
}

function stop() {
  if (!watch) return;
  if (watch.es) watch.es.close();
  window.clearTimeout(watch.timer);
  watch = null;
}

// One job document (from SSE or polling): show it; act on the end states.
function update(job) {
  const w = watch;
  if (!w || job.id !== w.ref.id) return;
  if (ui.status.textContent) say("");
  render(job);
  if (!TERMINAL.has(job.status)) return;
  stop();
  localStorage.removeItem(STORE_KEY);
  if (job.status === "ready") {
    ui.title.textContent = "Your archive is ready";
    ui.text.textContent = `${job.filename || "The archive"} · ${formatBytes(job.bytes_total)} · the download has started.`;
    ui.again.href = job.download_url;
    ui.again.hidden = ui.restart.hidden = false;
    ui.cancel.hidden = true;
    ui.announce.textContent = "Your archive is ready; the download has started.";
    ui.title.focus();
    window.location.assign(job.download_url); // the file is an attachment: this page stays
  } else if (job.status === "failed") {
    showEnd("The archive could not be built", job.error || "The job failed.");
  } else {
    showEnd("Download cancelled", "");
  }
}

function render(job) {
  const w = watch;
  const done = job.entries_done || 0;
  const total = job.entries_total || 0;
  const counts = `${done} of ${total} photo${total === 1 ? "" : "s"} · ${formatBytes(job.bytes_done || 0)} of ${formatBytes(job.bytes_total || 0)}`;
  if (job.status === "queued" || (job.status === "running" && !job.bytes_done)) {
    ui.title.textContent = job.status === "queued" ? "Waiting to start…" : "Preparing your archive";
    // Indeterminate bars animate; with reduced motion show an empty bar instead.
    if (reducedMotion.matches) ui.bar.value = 0;
    else ui.bar.removeAttribute("value");
    ui.text.textContent = `${counts} · estimating time left`;
  } else {
    ui.title.textContent = "Preparing your archive";
    ui.bar.value = job.progress || 0;
    ui.text.textContent = `${counts} · ${eta(w, job)}`;
  }
  if (w) announce(w, job);
}

// Time left from the rate observed by this page. The first sample slides forward while no
// bytes arrive, so time spent waiting for a worker does not count as a slow rate.
function eta(w, job) {
  if (!w || job.status !== "running") return "estimating time left";
  const now = Date.now();
  if (!w.start || job.bytes_done <= w.start.bytes) w.start = { t: now, bytes: job.bytes_done };
  const rate = (job.bytes_done - w.start.bytes) / ((now - w.start.t) / 1000);
  if (!(rate > 0)) return "estimating time left";
  return `about ${formatDuration((job.bytes_total - job.bytes_done) / rate)} left`;
}

// The visible text changes every second, too often to read out: announce status changes
// and every tenth of the way instead.
function announce(w, job) {
  const step = Math.floor((job.progress || 0) * 10);
  if (job.status === w.status && step === w.step) return;
  w.status = job.status;
  w.step = step;
  if (!TERMINAL.has(job.status)) ui.announce.textContent = `${ui.title.textContent} ${step * 10}% done.`;
}

function showEnd(title, message) {
  ui.form.hidden = true;
  ui.job.hidden = false;
  ui.title.textContent = title;
  ui.bar.value = 0;
  ui.text.textContent = "";
  ui.cancel.hidden = ui.again.hidden = true;
  ui.restart.hidden = false;
  showError(message);
  ui.title.focus();
}

async function cancel() {
  const w = watch;
  if (!w) return;
  ui.cancel.disabled = true;
  try {
    update(await api(w.ref.status_url, { method: "DELETE" }));
  } catch (error) {
    if (w === watch) { showError(error.message); ui.cancel.disabled = false; }
  }
}

function restart() {
  stop();
  localStorage.removeItem(STORE_KEY);
  clearMessages();
  ui.job.hidden = true;
  ui.form.hidden = false;
  ui.from.focus();
}

// ---- start-up -----------------------------------------------------------------------------

function init() {
  const fragment = new URLSearchParams(window.location.hash.slice(1));
  if (fragment.get("token")) {
    sessionStorage.setItem(TOKEN_KEY, fragment.get("token"));
    window.history.replaceState(null, "", window.location.pathname + window.location.search);
  }
  ui.token.value = sessionStorage.getItem(TOKEN_KEY) || "";
  ui.auth.hidden = !ui.token.value;
  ui.token.addEventListener("change", () => sessionStorage.setItem(TOKEN_KEY, token()));

  const today = new Date();
  ui.from.value = isoDay(new Date(today.getTime() - 6 * DAY_MS)); // the last 7 days, UTC
  ui.to.value = isoDay(today);
  ui.form.addEventListener("submit", submit);
  ui.cancel.addEventListener("click", cancel);
  ui.restart.addEventListener("click", restart);

  // Resume: ?job=<id> is where a browser lands after GET /v1/zip answered 303; otherwise
  // the job this browser was following before a reload.
  const params = new URLSearchParams(window.location.search);
  let ref = null;
  if (params.get("job")) {
    ref = { id: params.get("job") };
    window.history.replaceState(null, "", window.location.pathname); // a reload uses storage
  } else {
    try { ref = JSON.parse(localStorage.getItem(STORE_KEY) || "null"); } catch { ref = null; }
  }
  if (ref && typeof ref.id === "string") follow(ref);
}

init();
