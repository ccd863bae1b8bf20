// zipedge page: pick a date range, download it; follow a background job when the range is
// too large to stream. Plain JS, no build step, no inline code (the page has a strict CSP).
"use strict";

const STORE_KEY = "zipedge.job"; // {id, status_url, events_url} of the job being followed
const TOKEN_KEY = "zipedge.token"; // the bearer token, for this tab only (sessionStorage)
const POLL_MS = 2000;
const SSE_MAX_ERRORS = 2; // consecutive EventSource errors before falling back to polling
const TERMINAL = new Set(["ready", "failed", "cancelled"]);
const DAY_MS = 86400000;
const DAYS_DEBOUNCE_MS = 250; // wait for typing to settle before asking /v1/days

const $ = (id) => document.getElementById(id);
const ui = {
  form: $("range"), from: $("from"), to: $("to"), download: $("download"),
  summary: $("summary"), days: $("days"), dayRows: $("day-rows"),
  auth: $("auth"), token: $("token"),
  job: $("job"), title: $("job-title"), bar: $("bar"), text: $("progress-text"),
  again: $("again"), cancel: $("cancel"), restart: $("restart"),
  status: $("status"), announce: $("announce"), error: $("error"),
  uploadForm: $("upload-form"), files: $("files"), plate: $("plate"), upload: $("upload"),
  dropzone: $("dropzone"), uploadList: $("upload-list"),
};
const reducedMotion = window.matchMedia("(prefers-reduced-motion: reduce)");

// The job being followed: {ref, es, timer, errors, start, step, status}; null when none.
let watch = null;
// The /v1/days request in flight (an AbortController) and the debounce timer.
let daysRequest = null;
let daysTimer = 0;

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

const plural = (n, word) => `${n.toLocaleString("en")}\u00a0${word}${n === 1 ? "" : "s"}`;

// A node for the page: text, or an element with a class, attributes and children.
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  node.append(...children);
  return node;
}

// ---- what the range holds (GET /v1/days) --------------------------------------------------

function scheduleDays() {
  window.clearTimeout(daysTimer);
  daysTimer = window.setTimeout(loadDays, DAYS_DEBOUNCE_MS);
}

async function loadDays() {
  if (daysRequest) daysRequest.abort();
  daysRequest = null;
  const range = { from: ui.from.value, to: ui.to.value };
  if (!range.from || !range.to) { showDays(null, "Pick both days to see which have photos."); return; }
  const request = new AbortController();
  daysRequest = request;
  ui.form.setAttribute("aria-busy", "true");
  try {
    const doc = await api(`/v1/days?${new URLSearchParams(range)}`, { signal: request.signal, cache: "no-store" });
    if (request === daysRequest) showDays(doc, "");
  } catch (error) {
    if (request !== daysRequest) return; // a newer request replaced this one
    showDays(null, error instanceof TypeError ? "The server could not be reached to count the photos." : error.message);
  } finally {
    if (request === daysRequest) { daysRequest = null; ui.form.removeAttribute("aria-busy"); }
  }
}

const dayName = (iso) => new Date(`${iso}T00:00:00Z`).toLocaleDateString("en-GB", {
  weekday: "short", day: "numeric", month: "short", year: "numeric", timeZone: "UTC",
});

// The summary under the dates and, for the days that have photos, one row each.
function showDays(doc, message) {
  ui.dayRows.replaceChildren();
  if (!doc) {
    ui.summary.replaceChildren(message);
    ui.days.hidden = true;
    return;
  }
  const full = doc.days.filter((day) => day.objects > 0);
  for (const day of full) {
    ui.dayRows.append(el("tr", {},
      el("th", { scope: "row" }, el("time", { datetime: day.day }, dayName(day.day))),
      el("td", {}, day.objects.toLocaleString("en")),
      el("td", {}, formatBytes(day.bytes))));
  }
  ui.days.hidden = full.length === 0;
  if (doc.objects === 0) {
    ui.summary.replaceChildren(doc.from === doc.to ? "No photos on this day." : "No photos on these days.");
    return;
  }
  const held = `${plural(doc.objects, "photo")} on ${full.length} of ${plural(doc.days.length, "day")}. `;
  const archive = doc.archive;
  if (archive) {
    // <data>: the exact byte count for machines, a rounded size for people.
    const size = el("data", { value: String(archive.size), id: "archive-size" }, formatBytes(archive.size));
    const how = archive.job ? "prepared in the background first, then downloaded." : "downloads at once.";
    ui.summary.replaceChildren(held, "The archive is ", size, ` and ${how}`);
  } else if (doc.no_archive && doc.no_archive.code === "not_laid_out") {
    ui.summary.replaceChildren(held, `${formatBytes(doc.bytes)} of photos; the archive is prepared in the background first.`);
  } else {
    ui.summary.replaceChildren(held, (doc.no_archive && doc.no_archive.message) || "");
  }
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

// ---- uploading photos ----------------------------------------------------------------------
// Each file: CRC-32 here, POST /v1/uploads for a URL bound to its size, type and CRC, a PUT of
// the bytes straight to storage with exactly the headers handed out (progress from XHR's
// upload events), then POST …/complete. The service never carries the bytes (with folder
// storage the URL is the service's own signed one).

const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n += 1) {
    let c = n;
    for (let k = 0; k < 8; k += 1) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();
const CRC_SLICE = 4 * 1024 * 1024; // read the file a few MB at a time, not whole

async function crc32(file) {
  let crc = 0xffffffff;
  for (let start = 0; start < file.size; start += CRC_SLICE) {
    const bytes = new Uint8Array(await file.slice(start, start + CRC_SLICE).arrayBuffer());
    for (let i = 0; i < bytes.length; i += 1) crc = CRC_TABLE[(crc ^ bytes[i]) & 0xff] ^ (crc >>> 8);
  }
  return ((crc ^ 0xffffffff) >>> 0).toString(16).padStart(8, "0");
}

// Headers the browser sets itself (and refuses to have set): it sends the right length.
const BROWSER_SET = new Set(["content-length", "host"]);

function put(ticket, file, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open(ticket.method || "PUT", ticket.url);
    for (const [name, value] of Object.entries(ticket.headers || {})) {
      if (!BROWSER_SET.has(name.toLowerCase())) xhr.setRequestHeader(name, value);
    }
    xhr.upload.onprogress = (event) => { if (event.lengthComputable) onProgress(event.loaded / event.total); };
    xhr.onload = () => (xhr.status >= 200 && xhr.status < 300
      ? resolve()
      : reject(new Error(`Storage refused the photo (${xhr.status}).`)));
    xhr.onerror = () => reject(new Error("The photo could not be sent to storage."));
    xhr.send(file);
  });
}

function uploadRow(name) {
  const li = document.createElement("li");
  const label = document.createElement("span");
  label.className = "name";
  label.textContent = name;
  const bar = document.createElement("progress");
  bar.max = 1;
  bar.value = 0;
  bar.setAttribute("aria-label", `Upload of ${name}`);
  const state = document.createElement("span");
  state.className = "state";
  li.append(label, bar, state);
  ui.uploadList.append(li);
  return {
    li, bar,
    state: (text) => { state.textContent = text; },
    fail: (text) => { li.classList.add("failed"); state.textContent = text; },
  };
}

function fileName(file, plate, index, count) {
  const clean = plate.trim();
  if (!clean) return file.name;
  return count === 1 ? clean : `${clean}-${index + 1}`;
}

async function uploadOne(file, name) {
  const row = uploadRow(name);
  try {
    row.state("Checking…");
    const ticket = await api("/v1/uploads", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({
        filename: name,
        content_type: file.type,
        size: file.size,
        crc32: await crc32(file),
        taken_at: new Date(file.lastModified || Date.now()).toISOString(),
      }),
    });
    row.state("Uploading…");
    await put(ticket, file, (fraction) => {
      row.bar.value = fraction;
      row.state(`${Math.round(fraction * 100)}% of ${formatBytes(file.size)}`);
    });
    row.bar.value = 1;
    row.state("Filing…");
    const done = await api(ticket.complete_url, { method: "POST" });
    row.li.dataset.key = done.key;
    row.state(`Done: ${done.key}`);
  } catch (error) {
    row.fail(error instanceof TypeError ? "The server could not be reached." : error.message);
  }
}

async function uploadAll(files) {
  const list = [...files];
  if (!list.length) return;
  ui.upload.disabled = true;
  const plate = ui.plate.value;
  try {
    // One after another: a phone's uplink is the limit, and each row shows its own progress.
    for (const [i, file] of list.entries()) await uploadOne(file, fileName(file, plate, i, list.length));
  } finally {
    ui.upload.disabled = false;
    ui.files.value = "";
    ui.plate.value = "";
  }
}

function initUploads() {
  ui.uploadForm.addEventListener("submit", (event) => {
    event.preventDefault();
    uploadAll(ui.files.files);
  });
  for (const name of ["dragenter", "dragover"]) {
    ui.dropzone.addEventListener(name, (event) => { event.preventDefault(); ui.dropzone.classList.add("over"); });
  }
  for (const name of ["dragleave", "drop"]) {
    ui.dropzone.addEventListener(name, () => ui.dropzone.classList.remove("over"));
  }
  ui.dropzone.addEventListener("drop", (event) => {
    event.preventDefault();
    uploadAll(event.dataTransfer.files);
  });
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
  for (const input of [ui.from, ui.to]) {
    input.addEventListener("input", () => { clearMessages(); scheduleDays(); }); // old news go
  }
  loadDays();
  ui.cancel.addEventListener("click", cancel);
  ui.restart.addEventListener("click", restart);
  initUploads();

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
