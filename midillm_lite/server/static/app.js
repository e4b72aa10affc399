// The page of `midillm-lite serve`: a form that starts a generation, its live progress (Server-Sent Events), then
// per output the piano roll, an audio player when the server has an audio file for it, and downloads.
"use strict";

const $ = (id) => document.getElementById(id);
let token = null;
let current = null; // { id, source }

function loadToken() {
  const params = new URLSearchParams(location.search);
  const given = params.get("access_token");
  if (given) {
    sessionStorage.setItem("midillm-token", given);
    history.replaceState(null, "", location.pathname); // the token leaves the address bar
  }
  token = sessionStorage.getItem("midillm-token");
}

// A URL the browser loads by itself (img, audio, a link, EventSource) carries the token in the query.
function withToken(url) {
  return token ? url + (url.includes("?") ? "&" : "?") + "access_token=" + encodeURIComponent(token) : url;
}

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (token) headers["Authorization"] = "Bearer " + token;
  const response = await fetch(path, Object.assign({}, options, { headers }));
  if (response.status === 401) {
    $("auth").hidden = false;
    throw new Error("the server needs its access token");
  }
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error || response.status + " " + response.statusText);
  return body;
}

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "muted";
}

async function showModel() {
  try {
    const about = await api("/v1/model");
    const demo = about.model.demo ? " (the bundled demo model)" : "";
    $("model").textContent = `model: ${about.model.name}${demo}, ${about.model.quant}`;
    $("prompt").maxLength = about.limits.prompt_chars;
    document.querySelector("[name=n]").max = about.limits.n;
    document.querySelector("[name=max_tokens]").max = about.limits.max_tokens;
  } catch (err) {
    $("model").textContent = err.message;
  }
}

const MODE_HELP = {
  "": "Continues the file from that second (its end when empty), as gen --continue.",
  infill: "Keeps every note outside From..To and writes new ones inside it, leading into what follows (gen --infill).",
  accompany: "Keeps the named parts (all when empty; GM names, families, programs 0-127 or drums; or track " +
    "numbers from 0) and writes new parts around them (gen --accompany).",
};

// The inputs that do not go with the chosen mode are disabled, so the form does not send them: a span's end ends
// infilled or accompanied music (no Seconds), and only accompaniment keeps parts.
function syncMode() {
  const mode = $("mode").value;
  for (const label of document.querySelectorAll("[data-modes]")) {
    const shown = mode !== "" && label.dataset.modes.split(" ").includes(mode);
    label.hidden = !shown;
    label.querySelector("input").disabled = !shown;
  }
  $("seconds").disabled = mode !== "";
  $("from-seconds").placeholder = { "": "its end", infill: "required", accompany: "its start" }[mode];
  $("to-seconds").placeholder = mode === "infill" ? "required" : "its end";
  $("from-seconds").required = $("to-seconds").required = mode === "infill";
  $("mode-help").textContent = MODE_HELP[mode];
}

async function start(event) {
  event.preventDefault();
  const data = new FormData($("gen-form"));
  data.set("strict", $("strict").checked ? "true" : "false");
  data.set("dynamics", $("dynamics").checked ? "true" : "false");
  const file = data.get("midi");
  if (file && file.size === 0) data.delete("midi");
  $("generate").disabled = true;
  $("results").replaceChildren();
  setStatus("sending…");
  try {
    const job = await api("/v1/generations", { method: "POST", body: data });
    follow(job.id);
  } catch (err) {
    setStatus(err.message, true);
    $("generate").disabled = false;
  }
}

function follow(id) {
  if (current) current.source.close();
  const source = new EventSource(withToken(`/v1/generations/${encodeURIComponent(id)}/events`));
  current = { id, source };
  $("cancel").hidden = false;
  source.addEventListener("progress", (e) => showProgress(JSON.parse(e.data)));
  source.addEventListener("end", (e) => {
    source.close();
    finish(JSON.parse(e.data));
  });
  source.onerror = () => {
    if (source.readyState === EventSource.CLOSED) setStatus("lost the connection to the server", true);
  };
}

function showProgress(job) {
  const wanted = job.request.max_tokens || 0;
  const bars = job.progress.outputs.map((p, i) => {
    const row = document.createElement("div");
    const label = document.createElement("div");
    label.className = "muted";
    label.textContent = `output ${i + 1}: ${p.notes} notes, ${p.seconds.toFixed(1)} s${p.done ? " (done)" : ""}`;
    const bar = document.createElement("div");
    bar.className = "bar";
    const fill = document.createElement("div");
    const seconds = job.request.seconds || 100;
    const share = p.done ? 1 : Math.max(p.seconds / seconds, wanted ? p.tokens / wanted : 0);
    fill.style.width = Math.min(100, Math.round(share * 100)) + "%";
    bar.append(fill);
    row.append(label, bar);
    return row;
  });
  $("progress").replaceChildren(...bars);
  setStatus(job.status === "queued" ? "waiting for the model…" : `${job.status}: ${job.progress.tokens_per_s} tokens/s`);
}

function finish(job) {
  $("generate").disabled = false;
  $("cancel").hidden = true;
  $("progress").replaceChildren();
  current = null;
  const usable = (job.outputs || []).filter((o) => o.usable).length;
  const none = job.status === "done" && usable === 0 ? ": no usable output (see each output's note)" : "";
  const note = job.error ? `: ${job.error}` : job.partial ? " (partial outputs kept)" : none;
  setStatus(`${job.status}${note}`, job.status === "failed");
  showResults(job);
  refreshRecent();
}

function plural(count, noun) {
  return `${count} ${noun}${count === 1 ? "" : "s"}`;
}

function link(file, text, download = true) {
  const a = document.createElement("a");
  a.href = withToken(file.url + (download ? "?download=1" : ""));
  a.textContent = text;
  a.className = file.kind;
  if (download) a.setAttribute("download", "");
  return a;
}

function showResults(job) {
  const files = job.files || [];
  const cards = (job.outputs || []).map((output) => {
    const mine = files.filter((f) => f.output === output.index);
    const card = document.createElement("article");
    card.className = "output";
    const title = document.createElement("h3");
    title.textContent = `Output ${output.index}`;
    for (const [flag, text] of [["partial", "partial"], ["rejected", "rejected"], ["failed", "no notes"]]) {
      if (output[flag]) {
        const badge = document.createElement("span");
        badge.className = "badge warn";
        badge.textContent = text;
        title.append(badge);
      }
    }
    card.append(title);
    if (output.new_notes != null) {
      // infill and accompany: the file holds every kept note plus these
      const told = document.createElement("p");
      told.className = "muted new-notes";
      const kept = output.notes - output.new_notes;
      told.textContent = `${plural(output.new_notes, "new note")}, ${kept} kept from the file`;
      card.append(told);
    }
    const png = mine.find((f) => f.kind === "image");
    if (png) {
      const img = document.createElement("img");
      img.src = withToken(png.url);
      img.alt = `piano roll of output ${output.index}`;
      card.append(img);
    }
    const audio = mine.find((f) => f.kind === "audio");
    if (audio) {
      const player = document.createElement("audio");
      player.controls = true;
      player.src = withToken(audio.url);
      card.append(player);
    }
    const links = document.createElement("div");
    links.className = "links";
    for (const f of mine) {
      if (f.kind === "midi") links.append(link(f, "MIDI"));
      else if (f.kind === "tokens") links.append(link(f, "tokens"));
      else if (f.kind === "audio") links.append(link(f, "audio"));
    }
    card.append(links);
    return card;
  });
  const stats = files.find((f) => f.name === "generation_stats.json");
  if (stats) {
    const more = document.createElement("p");
    more.append(link(stats, "generation stats", false));
    cards.push(more);
  }
  // What gen prints as warnings, e.g. that an accompaniment of a long piece did its first 95 s and where to go on.
  const warnings = (job.warnings || []).map((text) => {
    const line = document.createElement("p");
    line.className = "warning";
    line.textContent = text;
    return line;
  });
  $("results").replaceChildren(...warnings, ...cards);
}

async function refreshRecent() {
  try {
    const { generations } = await api("/v1/generations?limit=10");
    $("recent").replaceChildren(
      ...generations.map((job) => {
        const item = document.createElement("li");
        const a = document.createElement("a");
        a.href = "#";
        a.textContent = job.prompt || job.id;
        a.addEventListener("click", async (e) => {
          e.preventDefault();
          const fresh = await api(job.links.self);
          if (fresh.status === "queued" || fresh.status === "running") follow(fresh.id);
          else showResults(fresh);
        });
        item.append(a, document.createTextNode(` — ${job.status}`));
        return item;
      }),
    );
  } catch (err) {
    // the token box is shown by api(); nothing else to do
  }
}

async function cancel() {
  if (!current) return;
  try {
    await api(`/v1/generations/${encodeURIComponent(current.id)}/cancel`, { method: "POST" });
    setStatus("cancelling…");
  } catch (err) {
    setStatus(err.message, true);
  }
}

function init() {
  loadToken();
  $("gen-form").addEventListener("submit", start);
  $("mode").addEventListener("change", syncMode);
  syncMode();
  $("cancel").addEventListener("click", cancel);
  $("save-token").addEventListener("click", () => {
    token = $("token").value.trim();
    sessionStorage.setItem("midillm-token", token);
    $("auth").hidden = true;
    showModel();
    refreshRecent();
  });
  showModel();
  refreshRecent();
}

document.addEventListener("DOMContentLoaded", init);
