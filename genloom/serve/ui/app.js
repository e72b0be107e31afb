// genloom web UI: a thin page over the same OpenAI-compatible API applications use. No build step.
"use strict";

const $ = (sel) => document.querySelector(sel);
const state = { chat: [], models: [], jobTimer: null, openJob: null };

// ---- API -------------------------------------------------------------------------------------
function headers(json = true) {
  const h = {};
  if (json) h["Content-Type"] = "application/json";
  const key = $("#apikey").value.trim();
  if (key) h["Authorization"] = "Bearer " + key;
  return h;
}

function showError(message) {
  const box = $("#error");
  box.textContent = message;
  box.hidden = !message;
}

async function api(path, options = {}) {
  const res = await fetch(path, { ...options, headers: { ...headers(!(options.body instanceof FormData)), ...(options.headers || {}) } });
  if (!res.ok) {
    let msg = res.status + " " + res.statusText;
    try { msg = (await res.json()).error.message; } catch (e) { /* not JSON */ }
    throw new Error(msg);
  }
  return res;
}

// Server-sent events from a POST (EventSource only does GET): yield each parsed `data:` payload.
async function* sse(path, body) {
  const res = await api(path, { method: "POST", body: JSON.stringify(body) });
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += decoder.decode(value, { stream: true });
    let at;
    while ((at = buf.indexOf("\n\n")) >= 0) {
      const chunk = buf.slice(0, at);
      buf = buf.slice(at + 2);
      for (const line of chunk.split("\n")) {
        if (!line.startsWith("data: ")) continue;
        const data = line.slice(6);
        if (data === "[DONE]") return;
        yield JSON.parse(data);
      }
    }
  }
}

function numberOrUndefined(id) {
  const v = $(id).value;
  return v === "" ? undefined : Number(v);
}

// ---- tabs ------------------------------------------------------------------------------------
function openTab(name) {
  document.querySelectorAll("nav button").forEach((b) => b.classList.toggle("active", b.dataset.tab === name));
  document.querySelectorAll(".tab").forEach((s) => { s.hidden = s.id !== "tab-" + name; });
  showError("");
  if (name === "history") loadHistory();
  if (name === "jobs") loadJobs();
  if (name === "models") loadModels();
loadStores(true);
  if (name === "knowledge") loadStores();
}

// ---- models ----------------------------------------------------------------------------------
async function loadModels() {
  try {
    const data = await (await api("/v1/models")).json();
    state.models = data.data;
    const kind = (m) => (m.genloom && m.genloom.kind) || "text";
    for (const sel of document.querySelectorAll(".model-select, .image-model-select, .music-model-select, .speech-model-select, .asr-model-select")) {
      const keep = sel.value;
      sel.innerHTML = "";
      const want = sel.classList.contains("image-model-select") ? "image"
        : sel.classList.contains("music-model-select") ? "music"
        : sel.classList.contains("speech-model-select") ? "speech"
        : sel.classList.contains("asr-model-select") ? "speech-to-text" : "text";
      for (const m of state.models.filter((m) => kind(m) === want)) {
        const o = document.createElement("option");
        o.value = o.textContent = m.id;
        sel.appendChild(o);
      }
      if (keep) sel.value = keep;
    }
    if (state.models.some((m) => m.id === "chat")) $("#chat-model").value = "chat";
    showVoices();
    const body = $("#models-table tbody");
    body.innerHTML = "";
    for (const m of state.models) {
      const g = m.genloom || {};
      const tr = document.createElement("tr");
      for (const v of [m.id, g.family || "", g.parameters ? g.parameters.toLocaleString() : "", g.context || "",
                       g.description || ""]) {
        const td = document.createElement("td");
        td.textContent = v;
        tr.appendChild(td);
      }
      body.appendChild(tr);
    }
  } catch (e) { showError(e.message); }
}

// ---- chat ------------------------------------------------------------------------------------
function addMessage(role, text) {
  const div = document.createElement("div");
  div.className = "msg " + role;
  const who = document.createElement("span");
  who.className = "who";
  who.textContent = role === "user" ? "you" : $("#chat-model").value + " (AI-generated)";
  const body = document.createElement("span");
  body.className = "body";
  body.textContent = text;
  div.append(who, body);
  $("#chat-log").appendChild(div);
  $("#chat-log").scrollTop = $("#chat-log").scrollHeight;
  return body;
}

// The passages a grounded reply was given (the message's `sources`), as collapsible citations under it.
function showSources(msgDiv, sources) {
  const old = msgDiv.querySelector(".sources");
  if (old) old.remove();
  if (!Array.isArray(sources)) return;
  const box = document.createElement("details");
  box.className = "sources";
  const summary = document.createElement("summary");
  summary.textContent = sources.length ? `${sources.length} source(s)` : "no source found in the documents";
  box.appendChild(summary);
  const list = document.createElement("ol");
  for (const s of sources) list.appendChild(passageItem(s.source, s.heading, s.text, s.cosine));
  box.appendChild(list);
  msgDiv.appendChild(box);
}

function passageItem(source, heading, text, cosine) {
  const li = document.createElement("li");
  const where = document.createElement("span");
  where.className = "where";
  where.textContent = source + (heading ? " › " + heading : "");
  const score = document.createElement("span");
  score.className = "muted";
  score.textContent = cosine === undefined || cosine === null ? "" : ` (cosine ${Number(cosine).toFixed(2)})`;
  const snippet = document.createElement("span");
  snippet.className = "snippet";
  snippet.textContent = text.length > 300 ? text.slice(0, 300) + "…" : text;
  li.append(where, score, snippet);
  return li;
}

async function sendChat(text, params) {
  showError("");
  state.chat.push({ role: "user", content: text });
  addMessage("user", text);
  const out = addMessage("assistant", "");
  $("#chat-send").disabled = true;
  const body = params || {
    model: $("#chat-model").value, messages: state.chat, stream: true,
    temperature: numberOrUndefined("#chat-temperature"), top_p: numberOrUndefined("#chat-top-p"),
    max_tokens: numberOrUndefined("#chat-max-tokens"), seed: numberOrUndefined("#chat-seed"),
  };
  body.messages = state.chat;
  body.stream = true;
  const kb = $("#chat-kb").value;
  if (kb && !params) body.tools = [{ type: "file_search", vector_store_ids: [kb] }];
  let reply = "";
  try {
    for await (const chunk of sse("/v1/chat/completions", body)) {
      if (chunk.error) throw new Error(chunk.error.message);
      const delta = chunk.choices[0].delta || {};
      if (delta.sources) showSources(out.parentElement, delta.sources);
      if (delta.content) { reply += delta.content; out.textContent = reply; }
    }
    state.chat.push({ role: "assistant", content: reply });
  } catch (e) {
    showError(e.message);
    out.parentElement.remove();
    state.chat.pop();
  } finally {
    $("#chat-send").disabled = false;
  }
}

// ---- completions -----------------------------------------------------------------------------
async function runCompletion(params) {
  showError("");
  const stop = $("#complete-stop").value.replace(/\\n/g, "\n");
  const body = params || {
    model: $("#complete-model").value, prompt: $("#complete-prompt").value, stream: true,
    temperature: numberOrUndefined("#complete-temperature"), top_p: numberOrUndefined("#complete-top-p"),
    max_tokens: numberOrUndefined("#complete-max-tokens"), seed: numberOrUndefined("#complete-seed"),
    stop: stop ? [stop] : undefined,
  };
  body.stream = true;
  $("#complete-out").textContent = body.prompt;
  $("#complete-run").disabled = true;
  let n = 0;
  try {
    for await (const chunk of sse("/v1/completions", body)) {
      $("#complete-out").textContent += chunk.choices[0].text;
      n += 1;
    }
    $("#complete-usage").textContent = n + " chunks streamed · AI-generated text";
  } catch (e) { showError(e.message); } finally { $("#complete-run").disabled = false; }
}

// ---- images ----------------------------------------------------------------------------------
function figure(src, caption) {
  const fig = document.createElement("figure");
  const img = document.createElement("img");
  img.src = src;
  img.alt = caption;
  const cap = document.createElement("figcaption");
  cap.textContent = caption;
  fig.append(img, cap);
  return fig;
}

async function runImages(params) {
  showError("");
  const model = $("#images-model").value;
  if (!model) { showError("no image model is being served"); return; }
  const body = params || { model, n: numberOrUndefined("#images-n"), seed: numberOrUndefined("#images-seed"),
                           prompt: $("#images-prompt").value || undefined, sampler: $("#images-sampler").value || undefined,
                           steps: numberOrUndefined("#images-steps"), guidance: numberOrUndefined("#images-guidance"),
                           response_format: "b64_json" };
  body.response_format = "b64_json";
  $("#images-run").disabled = true;
  try {
    const res = await (await api("/v1/images/generations", { method: "POST", body: JSON.stringify(body) })).json();
    const out = $("#images-out");
    out.innerHTML = "";
    res.data.forEach((d, i) => out.appendChild(figure("data:image/png;base64," + d.b64_json,
      `${body.model} · seed ${body.seed ?? "random"} · #${i} · AI-generated`)));
    $("#images-note").textContent = "Each PNG carries its generation parameters and an AI-generated label in its metadata.";
  } catch (e) { showError(e.message); } finally { $("#images-run").disabled = false; }
}

// ---- music -----------------------------------------------------------------------------------
function base64Of(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result.slice(reader.result.indexOf(",") + 1));
    reader.onerror = () => reject(new Error("cannot read " + file.name));
    reader.readAsDataURL(file);
  });
}

async function runMusic(ev) {
  if (ev) ev.preventDefault();
  showError("");
  const model = $("#music-model").value;
  if (!model) { showError("no music model is being served (e.g. genloom serve models/chorales)"); return; }
  const body = { model, bars: numberOrUndefined("#music-bars"), tempo: numberOrUndefined("#music-tempo"),
                 temperature: numberOrUndefined("#music-temperature"), top_k: numberOrUndefined("#music-top-k"),
                 seed: numberOrUndefined("#music-seed"), response_format: "json" };
  $("#music-run").disabled = true;
  try {
    const file = $("#music-primer").files[0];
    if (file) body.primer = await base64Of(file);
    const res = await (await api("/v1/audio/music", { method: "POST", body: JSON.stringify(body) })).json();
    const mp3 = "data:audio/mpeg;base64," + res.audio;
    const midi = "data:audio/midi;base64," + res.midi;
    $("#music-audio").src = mp3;
    $("#music-roll").src = "data:image/png;base64," + res.piano_roll;
    $("#music-dl-mp3").href = mp3;
    $("#music-dl-mp3").download = `${model}-seed${res.seed}.mp3`;
    $("#music-dl-midi").href = midi;
    $("#music-dl-midi").download = `${model}-seed${res.seed}.mid`;
    $("#music-info").textContent = `${model} · seed ${res.seed} · ${res.seconds.toFixed(1)} s at ${res.tempo} bpm · ` +
      `${res.new_tokens} tokens (${res.finish_reason}) · AI-generated music`;
    $("#music-out").hidden = false;
  } catch (e) { showError(e.message); } finally { $("#music-run").disabled = false; }
}

// ---- history ---------------------------------------------------------------------------------
// ---- speech ----------------------------------------------------------------------------------
function showVoices() {
  const m = state.models.find((m) => m.id === $("#speech-model").value);
  const sel = $("#speech-voice"), keep = sel.value;
  sel.innerHTML = "";
  for (const v of (m && m.genloom && m.genloom.voices) || []) {
    const o = document.createElement("option");
    o.value = o.textContent = v;
    sel.appendChild(o);
  }
  if (keep) sel.value = keep;
}

async function runSpeech(ev) {
  if (ev) ev.preventDefault();
  showError("");
  const model = $("#speech-model").value;
  if (!model) { showError("no voice is being served (e.g. genloom serve models/voice-joe)"); return; }
  const fmt = $("#speech-format").value;
  const body = { model, voice: $("#speech-voice").value, input: $("#speech-input").value,
                 speed: numberOrUndefined("#speech-speed"), response_format: fmt };
  $("#speech-run").disabled = true;
  try {
    const t0 = performance.now();
    const blob = await (await api("/v1/audio/speech", { method: "POST", body: JSON.stringify(body) })).blob();
    const url = URL.createObjectURL(blob);
    if ($("#speech-audio").src.startsWith("blob:")) URL.revokeObjectURL($("#speech-audio").src);
    $("#speech-audio").src = url;
    $("#speech-dl").href = url;
    $("#speech-dl").download = `${model}-${body.voice}.${fmt === "opus" ? "ogg" : fmt}`;
    $("#speech-dl").textContent = `Download ${fmt.toUpperCase()} (${(blob.size / 1024).toFixed(0)} KB)`;
    $("#speech-info").textContent = `${model} · voice ${body.voice} · speed ${body.speed ?? 1} · made in ` +
      `${((performance.now() - t0) / 1000).toFixed(1)} s · AI-generated speech`;
    $("#speech-out").hidden = false;
  } catch (e) { showError(e.message); } finally { $("#speech-run").disabled = false; }
}

async function loadHistory() {
  try {
    const rows = (await (await api("/ui/api/history?limit=50")).json()).data;
    const body = $("#history-table tbody");
    body.innerHTML = "";
    for (const r of rows) {
      const tr = document.createElement("tr");
      const params = { ...r.params };
      delete params.messages; delete params.prompt; delete params.model;
      const out = r.output || {};
      const text = Array.isArray(out.text) ? out.text.join("\n---\n") : (out.text || "");
      tr.append(cell(new Date(r.created_at + "Z").toLocaleString()), cell(r.route), cell(r.model),
                historyInput(r.params),
                cell(Object.entries(params).map(([k, v]) => `${k}: ${JSON.stringify(v)}`).join("\n"), "parameters"),
                cell(out.images ? `${out.images.length} image(s)` : text, "reply"));
      const td = document.createElement("td");
      const b = document.createElement("button");
      b.className = "secondary regenerate";
      b.textContent = "Regenerate";
      b.onclick = () => regenerate(r);
      td.appendChild(b);
      tr.appendChild(td);
      body.appendChild(tr);
    }
  } catch (e) { showError(e.message); }
}

function cell(text, className = "") {
  const td = document.createElement("td");
  if (className) td.className = className;
  const inner = document.createElement("div");
  inner.textContent = text;
  td.appendChild(inner);
  return td;
}

// What was asked: a chat's messages (one line per message, its role first) or a completion's prompt.
function historyInput(p) {
  const td = document.createElement("td");
  td.className = "input";
  if (Array.isArray(p.messages)) {
    for (const m of p.messages) {
      const line = document.createElement("div");
      line.className = "message";
      const role = document.createElement("b");
      role.textContent = m.role + ": ";
      const content = Array.isArray(m.content) ? m.content.map((part) => part.text || "").join("") : m.content;
      line.append(role, document.createTextNode(content));
      td.appendChild(line);
    }
  } else {
    const div = document.createElement("div");
    div.className = "prompt";
    div.textContent = Array.isArray(p.prompt) ? JSON.stringify(p.prompt) : (p.prompt ?? "");
    td.appendChild(div);
  }
  return td;
}

function regenerate(r) {
  const p = { ...r.params, model: r.model };
  if (r.route.endsWith("/images/generations")) {
    openTab("images");
    $("#images-model").value = p.model;
    runImages(p);
  } else if (r.route.endsWith("/chat/completions")) {
    openTab("chat");
    const msgs = p.messages || [];
    state.chat = msgs.slice(0, -1);
    $("#chat-log").innerHTML = "";
    for (const m of state.chat) addMessage(m.role, m.content);
    const last = msgs[msgs.length - 1];
    if (last) sendChat(last.content, p);
  } else {
    openTab("complete");
    $("#complete-prompt").value = p.prompt || "";
    runCompletion(p);
  }
}

// ---- jobs ------------------------------------------------------------------------------------
async function loadJobs() {
  try {
    const jobs = (await (await api("/v1/fine_tuning/jobs?limit=20")).json()).data;
    const body = $("#jobs-table tbody");
    body.innerHTML = "";
    for (const j of jobs) {
      const tr = document.createElement("tr");
      tr.dataset.job = j.id;
      for (const v of [j.id, j.model, j.status, j.genloom_progress || "", j.fine_tuned_model || ""]) {
        const td = document.createElement("td");
        td.textContent = v;
        tr.appendChild(td);
      }
      const td = document.createElement("td");
      const view = document.createElement("button");
      view.className = "secondary";
      view.textContent = "Watch";
      view.onclick = () => watchJob(j.id);
      td.appendChild(view);
      if (j.status === "queued" || j.status === "running") {
        const cancel = document.createElement("button");
        cancel.className = "secondary";
        cancel.textContent = "Cancel";
        cancel.onclick = async () => { await api(`/v1/fine_tuning/jobs/${j.id}/cancel`, { method: "POST" }); loadJobs(); };
        td.appendChild(cancel);
      }
      tr.appendChild(td);
      body.appendChild(tr);
    }
  } catch (e) { showError(e.message); }
}

function drawCurve(points) {
  const c = $("#job-curve");
  const ctx = c.getContext("2d");
  ctx.clearRect(0, 0, c.width, c.height);
  ctx.fillStyle = "#666";
  ctx.font = "12px system-ui";
  if (points.length < 2) { ctx.fillText("waiting for training steps...", 20, 30); return; }
  const pad = 36;
  const xs = points.map((p) => p.step), ys = points.map((p) => p.loss);
  const [x0, x1] = [Math.min(...xs), Math.max(...xs)], [y0, y1] = [Math.min(...ys), Math.max(...ys)];
  const X = (x) => pad + (x - x0) / Math.max(1e-9, x1 - x0) * (c.width - 2 * pad);
  const Y = (y) => c.height - pad - (y - y0) / Math.max(1e-9, y1 - y0) * (c.height - 2 * pad);
  ctx.strokeStyle = "#ccc";
  ctx.strokeRect(pad, pad, c.width - 2 * pad, c.height - 2 * pad);
  ctx.fillText(y1.toFixed(3), 2, pad + 4);
  ctx.fillText(y0.toFixed(3), 2, c.height - pad);
  ctx.fillText("step " + x1, c.width - pad - 40, c.height - 10);
  ctx.fillText("training loss", pad + 4, pad - 8);
  ctx.strokeStyle = "#2956b2";
  ctx.lineWidth = 1.5;
  ctx.beginPath();
  points.forEach((p, i) => (i ? ctx.lineTo(X(p.step), Y(p.loss)) : ctx.moveTo(X(p.step), Y(p.loss))));
  ctx.stroke();
}

async function refreshJob() {
  const id = state.openJob;
  if (!id) return;
  try {
    const job = await (await api(`/v1/fine_tuning/jobs/${id}`)).json();
    const events = (await (await api(`/v1/fine_tuning/jobs/${id}/events?limit=1000`)).json()).data;
    events.sort((a, b) => a.created_at - b.created_at);
    const steps = events.filter((e) => e.data && e.data.loss !== undefined);
    drawCurve(steps.map((e) => e.data));
    const last = steps[steps.length - 1];
    const frac = job.status === "succeeded" ? 1 : last ? last.data.step / last.data.total_steps : 0;
    $("#job-bar").style.width = (100 * frac).toFixed(1) + "%";
    $("#job-progress").textContent = `${job.status}` + (last ? ` · step ${last.data.step}/${last.data.total_steps}` +
      ` · loss ${last.data.loss.toFixed(4)} · ETA ${Math.round(last.data.eta_s)} s` : "") +
      (job.fine_tuned_model ? ` · model ${job.fine_tuned_model}` : "");
    $("#job-events").textContent = events.map((e) => e.message).join("\n");
    if (["succeeded", "failed", "cancelled"].includes(job.status)) {
      clearInterval(state.jobTimer);
      state.jobTimer = null;
      loadJobs();
      loadModels();
loadStores(true);
    }
  } catch (e) { showError(e.message); }
}

function watchJob(id) {
  state.openJob = id;
  $("#job-detail").hidden = false;
  $("#job-title").textContent = id;
  if (state.jobTimer) clearInterval(state.jobTimer);
  state.jobTimer = setInterval(refreshJob, 1000);
  refreshJob();
}

async function startJob(ev) {
  ev.preventDefault();
  showError("");
  const file = $("#job-file").files[0];
  if (!file) { showError("choose a training text file first"); return; }
  try {
    const form = new FormData();
    form.append("file", file);
    form.append("purpose", "fine-tune");
    const uploaded = await (await api("/v1/files", { method: "POST", body: form })).json();
    const job = await (await api("/v1/fine_tuning/jobs", {
      method: "POST",
      body: JSON.stringify({ model: $("#job-model").value, training_file: uploaded.id,
                             genloom_config: { train: { max_steps: Number($("#job-steps").value) } } }),
    })).json();
    await loadJobs();
    watchJob(job.id);
  } catch (e) { showError(e.message); }
}

// ---- knowledge bases -------------------------------------------------------------------------
async function loadStores(quiet = false) {
  try {
    const stores = (await (await api("/v1/vector_stores")).json()).data;
    const body = $("#kb-table tbody");
    body.innerHTML = "";
    for (const v of stores) {
      const tr = document.createElement("tr");
      for (const x of [v.id, v.name, v.file_counts.total, v.usage_bytes.toLocaleString()]) {
        const td = document.createElement("td");
        td.textContent = x;
        tr.appendChild(td);
      }
      const td = document.createElement("td");
      const del = document.createElement("button");
      del.className = "secondary";
      del.textContent = "Delete";
      del.onclick = async () => {
        if (!confirm(`Delete knowledge base ${v.name || v.id}?`)) return;
        try { await api(`/v1/vector_stores/${encodeURIComponent(v.id)}`, { method: "DELETE" }); } catch (e) { showError(e.message); }
        loadStores();
      };
      td.appendChild(del);
      tr.appendChild(td);
      body.appendChild(tr);
    }
    for (const sel of [$("#kb-select"), $("#chat-kb")]) {
      const keep = sel.value;
      sel.querySelectorAll("option[value]:not([value=''])").forEach((o) => o.remove());
      if (sel.id === "kb-select") sel.innerHTML = "";
      for (const v of stores) {
        const o = document.createElement("option");
        o.value = v.id;
        o.textContent = v.name && v.name !== v.id ? `${v.name} (${v.id})` : v.id;
        sel.appendChild(o);
      }
      if (keep && stores.some((v) => v.id === keep)) sel.value = keep;
    }
  } catch (e) { if (!quiet) showError(e.message); }  // quiet at start: a server with no data dir has no stores
}

async function createStore(ev) {
  ev.preventDefault();
  showError("");
  const name = $("#kb-name").value.trim();
  if (!name) { showError("give the new knowledge base a name"); return; }
  try {
    const store = await (await api("/v1/vector_stores", { method: "POST", body: JSON.stringify({ name }) })).json();
    $("#kb-name").value = "";
    $("#kb-status").textContent = `created ${store.name} (${store.id})`;
    await loadStores();
    $("#kb-select").value = store.id;
  } catch (e) { showError(e.message); }
}

async function addStoreFile(ev) {
  ev.preventDefault();
  showError("");
  const store = $("#kb-select").value, file = $("#kb-file").files[0];
  if (!store) { showError("create a knowledge base first"); return; }
  if (!file) { showError("choose a document to add"); return; }
  $("#kb-add").disabled = true;
  $("#kb-status").textContent = `indexing ${file.name}...`;
  try {
    const form = new FormData();
    form.append("file", file);
    form.append("purpose", "assistants");
    const uploaded = await (await api("/v1/files", { method: "POST", body: form })).json();
    const attached = await (await api(`/v1/vector_stores/${encodeURIComponent(store)}/files`, {
      method: "POST", body: JSON.stringify({ file_id: uploaded.id }) })).json();
    await loadStores();
    $("#kb-status").textContent = `${file.name}: ${attached.status}, ${attached.attributes.passages} passage(s)`;
  } catch (e) { showError(e.message); $("#kb-status").textContent = ""; } finally { $("#kb-add").disabled = false; }
}

async function searchStore(ev) {
  ev.preventDefault();
  showError("");
  const store = $("#kb-select").value, query = $("#kb-query").value.trim();
  if (!store || !query) { showError("pick a knowledge base and type a question"); return; }
  try {
    const page = await (await api(`/v1/vector_stores/${encodeURIComponent(store)}/search`, {
      method: "POST", body: JSON.stringify({ query, max_num_results: 5 }) })).json();
    const list = $("#kb-results");
    list.innerHTML = "";
    for (const r of page.data) {
      list.appendChild(passageItem(r.filename, r.attributes.heading, r.content.map((c) => c.text).join("\n"),
                                   r.attributes.cosine));
    }
    if (!page.data.length) list.textContent = "nothing found";
  } catch (e) { showError(e.message); }
}

// ---- provenance ------------------------------------------------------------------------------
async function checkProvenance(file) {
  showError("");
  if (!file) return;
  $("#prov-title").textContent = `checking ${file.name}...`;
  try {
    const form = new FormData();
    form.append("file", file);
    const rep = await (await api("/v1/provenance", { method: "POST", body: form })).json();
    $("#prov-title").textContent = `${rep.filename}: ${rep.kind} (${rep.format}, ${rep.bytes} bytes)`;
    const body = $("#prov-table tbody");
    body.innerHTML = "";
    for (const s of rep.sections) {
      const tr = document.createElement("tr");
      tr.className = s.found ? "found" : "absent";
      for (const v of [s.name, s.found ? "yes" : "no", s.summary]) {
        const td = document.createElement("td");
        td.textContent = v;
        tr.appendChild(td);
      }
      body.appendChild(tr);
    }
    $("#prov-table").hidden = false;
    $("#prov-json").textContent = JSON.stringify(rep, null, 2);
    $("#prov-details").hidden = false;
  } catch (e) { showError(e.message); $("#prov-title").textContent = ""; $("#prov-table").hidden = true; }
}

// ---- transcribe ------------------------------------------------------------------------------
// Upload a file or record from the microphone (MediaRecorder, WebM/Opus or what the browser makes); the same
// /v1/audio/transcriptions and /translations routes as the openai client.
const recording = { recorder: null, chunks: [] };

async function transcribe(blob, filename) {
  const model = $("#asr-model").value;
  if (!model) { showError("no speech recognition model is being served (genloom serve models/asr-whisper-base)"); return; }
  const task = $("#asr-task").value;
  const format = $("#asr-format").value;
  const form = new FormData();
  form.append("file", blob, filename);
  form.append("model", model);
  form.append("response_format", format);
  const language = $("#asr-language").value.trim();
  if (language && task === "transcribe") form.append("language", language);
  if (format === "verbose_json") form.append("timestamp_granularities[]", "segment");
  showError("");
  $("#asr-run").disabled = true;
  $("#asr-status").textContent = `${task === "translate" ? "translating" : "transcribing"} ${filename}...`;
  const t0 = performance.now();
  try {
    const res = await api(task === "translate" ? "/v1/audio/translations" : "/v1/audio/transcriptions",
                          { method: "POST", body: form });
    const body = $("#asr-segments tbody");
    body.innerHTML = "";
    $("#asr-segments").hidden = true;
    if (format === "json" || format === "verbose_json") {
      const data = await res.json();
      $("#asr-out").textContent = data.text;
      for (const seg of data.segments || []) {
        const tr = document.createElement("tr");
        for (const v of [seg.start.toFixed(2), seg.end.toFixed(2), seg.text]) {
          const td = document.createElement("td");
          td.textContent = v;
          tr.appendChild(td);
        }
        body.appendChild(tr);
      }
      $("#asr-segments").hidden = !(data.segments || []).length;
      $("#asr-status").textContent = `${model} · ${data.language ? data.language + " · " : ""}` +
        `${data.duration ? data.duration.toFixed(1) + " s of audio · " : ""}${((performance.now() - t0) / 1000).toFixed(1)} s`;
    } else {
      $("#asr-out").textContent = await res.text();
      $("#asr-status").textContent = `${model} · ${format} · ${((performance.now() - t0) / 1000).toFixed(1)} s`;
    }
  } catch (e) {
    showError(e.message);
    $("#asr-status").textContent = "";
  } finally { $("#asr-run").disabled = false; }
}

function transcribeFile(ev) {
  ev.preventDefault();
  const file = $("#asr-file").files[0];
  if (!file) { showError("choose an audio file first"); return; }
  $("#asr-audio").src = URL.createObjectURL(file);
  $("#asr-audio").hidden = false;
  transcribe(file, file.name);
}

async function toggleRecording() {
  const button = $("#asr-record");
  if (recording.recorder && recording.recorder.state === "recording") {
    recording.recorder.stop();
    return;
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  } catch (e) { showError("microphone unavailable: " + e.message); return; }
  recording.chunks = [];
  const recorder = new MediaRecorder(stream);
  recording.recorder = recorder;
  recorder.ondataavailable = (e) => { if (e.data.size) recording.chunks.push(e.data); };
  recorder.onstop = () => {
    stream.getTracks().forEach((t) => t.stop());
    button.textContent = "Record";
    const type = recorder.mimeType || "audio/webm";
    const blob = new Blob(recording.chunks, { type });
    $("#asr-audio").src = URL.createObjectURL(blob);
    $("#asr-audio").hidden = false;
    transcribe(blob, "recording." + (type.includes("ogg") ? "ogg" : type.includes("mp4") ? "m4a" : "webm"));
  };
  recorder.start();
  button.textContent = "Stop";
  $("#asr-status").textContent = "recording... press Stop to transcribe";
}

// ---- wiring ----------------------------------------------------------------------------------
document.querySelectorAll("nav button").forEach((b) => b.addEventListener("click", () => openTab(b.dataset.tab)));
$("#chat-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const text = $("#chat-input").value.trim();
  if (!text) return;
  $("#chat-input").value = "";
  sendChat(text);
});
$("#chat-clear").addEventListener("click", () => { state.chat = []; $("#chat-log").innerHTML = ""; });
$("#complete-run").addEventListener("click", () => runCompletion());
$("#images-run").addEventListener("click", () => runImages());
$("#music-form").addEventListener("submit", runMusic);
$("#speech-form").addEventListener("submit", runSpeech);
$("#speech-model").addEventListener("change", showVoices);
$("#asr-form").addEventListener("submit", transcribeFile);
$("#asr-record").addEventListener("click", toggleRecording);
$("#history-refresh").addEventListener("click", loadHistory);
$("#job-form").addEventListener("submit", startJob);
$("#kb-create-form").addEventListener("submit", createStore);
$("#kb-add-form").addEventListener("submit", addStoreFile);
$("#kb-search-form").addEventListener("submit", searchStore);
$("#prov-file").addEventListener("change", () => checkProvenance($("#prov-file").files[0]));
$("#prov-drop").addEventListener("dragover", (ev) => { ev.preventDefault(); $("#prov-drop").classList.add("over"); });
$("#prov-drop").addEventListener("dragleave", () => $("#prov-drop").classList.remove("over"));
$("#prov-drop").addEventListener("drop", (ev) => {
  ev.preventDefault();
  $("#prov-drop").classList.remove("over");
  checkProvenance(ev.dataTransfer.files[0]);
});
$("#apikey").value = localStorage.getItem("genloom-key") || "";
$("#apikey").addEventListener("change", () => { localStorage.setItem("genloom-key", $("#apikey").value); loadModels(); });
loadModels();
loadStores(true);
