// The playground of charrnn serve: reads the model card and its limits (GET /v1/model), streams
// a generation (POST /v1/generate, "stream": true) as server-sent events through fetch.
"use strict";
const $ = (id) => document.getElementById(id);
const SETTINGS = ["temperature", "num_chars", "top_k", "top_p", "seed"];
const KEY = "charrnn-api-key";  // sessionStorage: this tab only
let running = null;  // the AbortController of the generation in progress

// Each slider and its number box show the same value.
for (const name of ["temperature", "num_chars", "top_p"]) {
  const box = $(name), slider = $(name + "-range");
  slider.addEventListener("input", () => { box.value = slider.value; });
  box.addEventListener("input", () => { slider.value = box.value; });
}
$("new-seed").addEventListener("click", () => { $("seed").value = Math.floor(Math.random() * 2147483647); });

function headers(extra) {
  const key = sessionStorage.getItem(KEY);
  return Object.assign({}, extra, key ? { Authorization: `Bearer ${key}` } : {});
}

function setValue(name, value) {
  $(name).value = value;
  const slider = $(name + "-range");
  if (slider) slider.value = value;
}

function row(term, value, kind) {
  const dt = document.createElement("dt"), dd = document.createElement("dd");
  dt.textContent = term;
  dd.textContent = value === null || value === undefined || value === "" ? "unknown" : String(value);
  if (kind) dd.className = kind;
  return [dt, dd];
}

// The server's own limits on each setting: the number boxes refuse what it would refuse.
function applyLimits(limits) {
  for (const [name, range] of Object.entries(limits.settings || {})) {
    const box = $(name);
    if (!box) continue;
    if (range.min !== undefined) box.min = range.min;
    if (range.max !== undefined) box.max = range.max;
  }
  $("num_chars-range").max = limits.max_chars;
  $("prompt").maxLength = limits.max_prompt_chars;
}

function showCard(card) {
  $("model-name").textContent = card.model;
  const a = card.architecture, m = card.mlflow, h = card.held_out;
  const rows = [
    ["model", card.model, "id"],
    ["corpus", card.corpus && card.corpus.source],
    ["held-out", h && h.bpc != null ? `${h.bpc.toFixed(4)} bits/char` + (h.loss != null ? `, ${h.loss.toFixed(4)} nats` : "") : null],
    ["experiment", m && (m.dvc_experiment || m.experiment)],
    ["MLflow run", m && m.run_id ? `${m.run_name || ""} ${m.run_id}`.trim() : null, "id"],
    ["registered", m && m.version ? `${m.registered_model} version ${m.version}` + (m.aliases.length ? `, @${m.aliases.join(", @")}` : "") : null],
    ["architecture", a ? `${a.cell.toUpperCase()}, ${a.layers} layer(s) of ${a.units} units, embedding ${a.embedding_dim}` : null],
    ["vocabulary", `${card.vocab_size} ids ([UNK] included)`],
  ];
  $("card").replaceChildren(...rows.flatMap(([t, v, kind]) => row(t, v, kind)));
  for (const name of SETTINGS) setValue(name, card.sampling_defaults[name]);
  applyLimits(card.limits);
  if (!$("prompt").value) $("prompt").value = card.default_prompt || "";
}

function request() {
  const body = { prompt: $("prompt").value, stream: true };
  for (const name of SETTINGS) {
    const box = $(name);
    if (!box.checkValidity()) {
      throw new Error(`${box.labels[0].textContent.split(" (")[0]} must be from ${box.min} to ${box.max}`);
    }
    body[name] = Number(box.value);
  }
  return body;
}

// Server-sent events, as charrnn serve sends them: blocks separated by a blank line, each with
// an optional "event: name" line and one "data: {json}" line.
function parseEvent(block) {
  let name = "message", data = "";
  for (const line of block.split("\n")) {
    if (line.startsWith("event:")) name = line.slice(6).trim();
    else if (line.startsWith("data:")) data += line.slice(5).replace(/^ /, "");
  }
  return { name, data: data ? JSON.parse(data) : null };
}

async function problemOf(response) {
  const body = await response.json().catch(() => ({}));
  if (response.status === 401) askForKey();
  return new Error(body.error || `${response.status} ${response.statusText}`);
}

async function generate() {
  if (running) running.abort();
  const controller = new AbortController();
  running = controller;
  const output = $("output");
  output.replaceChildren();
  $("error").textContent = "";
  $("status").dataset.state = "";
  $("status").textContent = "waiting for the model…";
  $("stop").disabled = false;
  $("text").scrollIntoView({ behavior: "smooth", block: "start" });
  const started = performance.now();
  let chars = 0, first = true;
  try {
    const response = await fetch("/v1/generate", {
      method: "POST", headers: headers({ "Content-Type": "application/json" }),
      body: JSON.stringify(request()), signal: controller.signal,
    });
    if (!response.ok) throw await problemOf(response);
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value.replace(/\r\n?/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const event = parseEvent(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
        if (event.name === "error") throw new Error(event.data.error);
        if (event.name === "done") {
          const seconds = (performance.now() - started) / 1000;
          $("status").textContent = `done: ${chars} characters in ${seconds.toFixed(2)} s` +
            (event.data.warnings.length ? ` (${event.data.warnings.join("; ")})` : "");
          $("status").dataset.state = "done";
        } else if (event.name === "message") {
          if (first) {  // the first event of a prompt is the prompt itself
            const span = document.createElement("span");
            span.className = "prompt";
            span.textContent = event.data.text;
            output.append(span);
            first = false;
          } else {
            output.append(event.data.text);
            chars += event.data.text.length;
            $("status").textContent = `generating… ${chars} characters`;
          }
        }
      }
    }
  } catch (e) {
    if (e.name === "AbortError") {
      $("status").textContent = "stopped";
    } else {
      $("error").textContent = e.message;
      $("status").textContent = "";
    }
  } finally {
    if (running === controller) { running = null; $("stop").disabled = true; }
  }
}

function askForKey() {
  $("key-box").hidden = false;
  $("api-key").focus();
}

async function loadCard() {
  try {
    const response = await fetch("/v1/model", { headers: headers() });
    if (!response.ok) throw await problemOf(response);
    $("error").textContent = "";
    showCard(await response.json());
  } catch (e) {
    $("error").textContent = `cannot read the model card: ${e.message}`;
  }
}

$("use-key").addEventListener("click", () => {
  sessionStorage.setItem(KEY, $("api-key").value.trim());
  $("key-box").hidden = true;
  loadCard();
});
$("generate").addEventListener("click", () => generate());
$("stop").addEventListener("click", () => { if (running) running.abort(); });
$("prompt").addEventListener("keydown", (e) => { if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) generate(); });
loadCard();
