// The page's generator, in a Web Worker so that the page stays responsive while the model runs.
//
// Messages in:  {type: "generate", model, prompt, settings}   model: {url} or {onnx: ArrayBuffer, json: text|null}
//               {type: "stop"}
// Messages out: {type: "loaded", vocabSize, blockSize, threads}  {type: "notice", text}
//               {type: "text", text}   {type: "done", tokens, seconds, stopped}   {type: "error", message}

import * as ort from "./node_modules/onnxruntime-web/dist/ort.wasm.min.mjs";
import { openModel } from "./onnx-model.mjs";
import { decode, encode, generateTokens, randomSource, UsageError } from "./sampling.mjs";

ort.env.logLevel = "error";
let loaded = null; // { key, model }: the session is kept while the same files are used
let stopRequested = false;

// The model's run() finishes within microtasks, which never let a message event in: without a real
// task boundary between characters, Stop would be read only after the last one. A MessageChannel
// message is such a boundary, without setTimeout's 4 ms clamp.
const channel = new MessageChannel();
const nextTask = () => new Promise((resolve) => { channel.port1.onmessage = resolve; channel.port2.postMessage(null); });

async function fetchModelFile(name, url) {
  try {
    return await fetch(new URL(name, url));
  } catch (err) {
    throw new UsageError(`cannot fetch ${name} from ${url} (${err.message}): is the server (make serve) still running?`);
  }
}

async function fetchModelFiles(url) {
  const onnx = await fetchModelFile("model.onnx", url);
  if (!onnx.ok) {
    throw new UsageError(`model.onnx was not found beside the page (HTTP ${onnx.status}): serve a folder that has it ` +
      "(make serve OUT=checkpoints), or choose model.onnx and model.json from disk below");
  }
  const json = await fetchModelFile("model.json", url);
  return { onnx: await onnx.arrayBuffer(), json: json.ok ? await json.text() : null };
}

async function modelFor(source) {
  const key = source.url ?? source.key;
  if (loaded?.key !== key) {
    loaded = null;
    const files = source.url ? await fetchModelFiles(source.url) : source;
    loaded = { key, model: await openModel(ort, new Uint8Array(files.onnx), files.json) };
    postMessage({ type: "loaded", vocabSize: loaded.model.vocab.length, blockSize: loaded.model.blockSize,
                  threads: ort.env.wasm.numThreads });
  }
  return loaded.model;
}

async function generate({ model: source, prompt, settings }) {
  stopRequested = false;
  if (!prompt) throw new UsageError("the prompt is empty: type at least one character to start from");
  const model = await modelFor(source);
  const ids = encode(model.vocab, prompt);
  if (ids.length > model.blockSize) {
    postMessage({ type: "notice", text: `The prompt has ${ids.length} characters; the model sees only the last ` +
      `${model.blockSize} (its context length), as in Python.` });
  }
  postMessage({ type: "text", text: prompt });
  const sampling = { temperature: settings.temperature, topK: settings.topK, random: randomSource(settings.seed) };
  const start = performance.now();
  let tokens = 0;
  for await (const id of generateTokens(model.lastLogits, ids, settings.tokens, model.blockSize, sampling)) {
    postMessage({ type: "text", text: decode(model.vocab, [id]) });
    tokens += 1;
    await nextTask(); // here the page's stop message is handled
    if (stopRequested) break;
  }
  postMessage({ type: "done", tokens, seconds: (performance.now() - start) / 1000, stopped: stopRequested });
}

onmessage = ({ data }) => {
  if (data.type === "stop") stopRequested = true;
  if (data.type !== "generate") return;
  generate(data).catch((err) => {
    const message = err instanceof UsageError ? err.message : `unexpected error: ${err?.message ?? err}`;
    postMessage({ type: "error", message });
  });
};
