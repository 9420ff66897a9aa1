// The page: fields <-> URL query, model files from the server or from disk, and the worker's text
// streamed into #output. Scripts read #output's data-state (running, done, error) and #error.

import { parseSettings, UsageError } from "./sampling.mjs";

const FIELDS = ["prompt", "tokens", "temperature", "top_k", "seed"]; // element ids and query keys alike
const $ = (id) => document.getElementById(id);
const output = $("output"), errorBox = $("error"), notice = $("notice"), stats = $("stats");
let model = { url: new URL(".", location.href).href }; // or { key, onnx, json } chosen from disk
let worker = null;
// The generator behind the page: model.onnx through worker.mjs, or the hf/ folder (KV cache) through hf-worker.mjs.
const WORKERS = { onnx: "worker.mjs", hf: "hf-worker.mjs" };
let workerRuntime = null;
let filesChosen = 0;

function setState(state) {
  output.dataset.state = state;
  $("generate").disabled = state === "running";
  $("stop").disabled = state !== "running";
}

function showError(message) {
  errorBox.textContent = message;
  errorBox.hidden = false;
  setState("error");
}

function showNotice(text) {
  notice.textContent = text;
  notice.hidden = !text;
}

// The query names every field, so the address bar is a link that replays this generation.
function readQuery() {
  const query = new URLSearchParams(location.search);
  for (const name of FIELDS) if (query.has(name)) $(name).value = query.get(name);
  if (query.get("runtime") in WORKERS) $("runtime").value = query.get("runtime");
  return query.get("autostart") === "1";
}

function writeQuery(autostart) {
  const query = new URLSearchParams(FIELDS.map((name) => [name, $(name).value]));
  if ($("runtime").value !== "onnx") query.set("runtime", $("runtime").value);
  if (autostart || new URLSearchParams(location.search).get("autostart") === "1") query.set("autostart", "1");
  history.replaceState(null, "", `${location.pathname}?${query}`);
}

function startWorker() {
  workerRuntime = $("runtime").value;
  worker = new Worker(new URL(WORKERS[workerRuntime], import.meta.url), { type: "module" });
  worker.onmessage = ({ data }) => handlers[data.type](data);
  worker.onerror = (event) => {
    event.preventDefault();
    worker = null;
    showError(`the generator could not start (${event.message || "its scripts did not load"}): ` +
      "serve the page with make serve, which installs onnxruntime-web (npm ci in web/)");
  };
}

const handlers = {
  loaded({ vocabSize, blockSize, threads }) {
    stats.textContent = `Model loaded: ${vocabSize} characters, context ${blockSize}, ${threads} thread(s).`;
    stats.dataset.threads = threads;
  },
  notice({ text }) { showNotice(text); },
  text({ text }) { output.textContent += text; },
  done({ tokens, seconds, stopped }) {
    const rate = seconds > 0 ? tokens / seconds : 0;
    stats.dataset.tokensPerSecond = rate.toFixed(1);
    stats.textContent = `${stopped ? "Stopped after" : "Generated"} ${tokens} characters in ${seconds.toFixed(2)} s: ` +
      `${rate.toFixed(0)} tokens/s (${workerRuntime === "hf" ? "transformers.js, KV cache" : "onnxruntime-web"}, wasm, ` +
      `${stats.dataset.threads} thread(s)).`;
    output.dataset.stopped = stopped;
    setState("done");
  },
  error({ message }) { showError(message); },
};

function generate() {
  errorBox.hidden = true;
  showNotice("");
  output.textContent = "";
  delete stats.dataset.tokensPerSecond;
  writeQuery(true);
  let settings;
  try {
    settings = parseSettings({ tokens: $("tokens").value, temperature: $("temperature").value,
                               topK: $("top_k").value, seed: $("seed").value });
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    return showError(err.message);
  }
  setState("running");
  if (worker && workerRuntime !== $("runtime").value) {
    worker.terminate();
    worker = null;
  }
  if (!worker) startWorker();
  worker.postMessage({ type: "generate", model, prompt: $("prompt").value, settings });
}

async function useFiles(files) {
  const onnx = files.find((f) => f.name.endsWith(".onnx"));
  const json = files.find((f) => f.name.endsWith(".json"));
  if (!onnx) return showError("no .onnx file among the files chosen: choose model.onnx (and the model.json written with it)");
  filesChosen += 1; // a new key, so the worker loads these files even if their names are the same
  model = { key: `files-${filesChosen}`, onnx: await onnx.arrayBuffer(), json: json ? await json.text() : null };
  $("model-source").textContent = `${onnx.name}${json ? ` and ${json.name}` : ""} from disk`;
  errorBox.hidden = true;
}

function acceptDrops(zone) {
  document.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("dragging"); });
  document.addEventListener("dragleave", () => zone.classList.remove("dragging"));
  document.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("dragging");
    useFiles([...event.dataTransfer.files]);
  });
}

$("controls").addEventListener("submit", (event) => { event.preventDefault(); generate(); });
$("controls").addEventListener("input", () => writeQuery(false));
$("runtime").addEventListener("change", () => writeQuery(false));
$("stop").addEventListener("click", () => worker?.postMessage({ type: "stop" }));
$("model-files").addEventListener("change", (event) => useFiles([...event.target.files]));
acceptDrops($("model"));
if (readQuery()) generate();
