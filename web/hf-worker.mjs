// The page's generator for the hf/ folder: transformers.js's text-generation pipeline, which
// runs hf/onnx/model.onnx with its KV cache, each new character one step over one token. Same
// messages as worker.mjs, so the page treats both alike.
//
// The files come from the server beside the page (make serve sends OUT/hf/), never from a hub.
// transformers.js does not slide the context: prompt and new characters must fit in it, and its
// sampling takes no seed (greedy text, temperature 0, is make generate's).

import { env, InterruptableStoppingCriteria, pipeline } from "./node_modules/@huggingface/transformers/dist/transformers.js";
import { sha256Hex } from "./onnx-model.mjs";
import { UsageError } from "./sampling.mjs";

const FOLDER = "hf";
// What transformers.js reads of the folder, each checked against model.json's SHA-256 as every loader does.
const CHECKED = ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "onnx/model.onnx"];
const REDO = "export again with make export, and serve that folder (make serve OUT=...)";
env.allowRemoteModels = false;
env.allowLocalModels = true; // off by default in browsers
// a path, not a URL: transformers.js looks for local files only under a path (the server beside the page)
env.localModelPath = new URL(".", self.location.href).pathname;
env.useBrowserCache = false; // a re-exported folder is picked up on the next load
// transformers.js would fetch the wasm runtime from a CDN: take its own onnxruntime-web, served from node_modules.
env.backends.onnx.wasm.wasmPaths = new URL("./node_modules/@huggingface/transformers/node_modules/onnxruntime-web/dist/",
  import.meta.url).href;

let generator = null;
let stopping = null;
let vocab = null; // model.json's characters: a prompt is checked against them before transformers.js sees it

/** model.json's vocabulary, once every file transformers.js reads matches its SHA-256. */
async function checkedVocabulary() {
  const manifest = await fetch("model.json").then((r) => (r.ok ? r.json() : null)).catch(() => null);
  if (!manifest || !Array.isArray(manifest.vocab)) throw new UsageError(`model.json could not be read: ${REDO}`);
  for (const name of CHECKED) {
    const response = await fetch(`${FOLDER}/${name}`).catch(() => null);
    const digest = response?.ok ? await sha256Hex(await response.arrayBuffer()) : null;
    if (digest === null || digest !== String(manifest.sha256?.[`${FOLDER}/${name}`]).toLowerCase()) {
      throw new UsageError(`${FOLDER}/${name} does not match model.json (its SHA-256 differs: a file of another ` +
        `export, or none): ${REDO}`);
    }
  }
  return manifest.vocab;
}

async function load() {
  if (generator) return generator;
  vocab = await checkedVocabulary();
  try {
    generator = await pipeline("text-generation", FOLDER, { dtype: "fp32", device: "wasm" });
  } catch (err) {
    throw new UsageError(`the hf folder could not be loaded (${String(err?.message ?? err).split("\n")[0]}): serve a ` +
      "folder that has it (make serve OUT=checkpoints, after make export)");
  }
  const config = generator.model.config;
  postMessage({ type: "loaded", vocabSize: config.vocab_size, blockSize: config.n_positions,
                threads: env.backends.onnx.wasm.numThreads ?? 1 });
  return generator;
}

async function generate({ prompt, settings }) {
  if (!prompt) throw new UsageError("the prompt is empty: type at least one character to start from");
  const pipe = await load();
  const unknown = [...new Set([...prompt].filter((c) => !vocab.includes(c)))].sort().join("");
  if (unknown) {
    throw new UsageError(`the prompt has characters the model does not know (${JSON.stringify(unknown)}): ` +
      "use characters of its training corpus");
  }
  const limit = pipe.model.config.n_positions;
  const length = pipe.tokenizer.encode(prompt).length;
  if (length + settings.tokens > limit) {
    throw new UsageError(`the prompt (${length} characters) and ${settings.tokens} new ones exceed the cached model's ` +
      `context of ${limit}, which transformers.js does not slide: ask for fewer characters, or choose model.onnx`);
  }
  if (settings.seed !== null) postMessage({ type: "notice", text: "transformers.js samples without a seed: the seed is not used." });
  postMessage({ type: "text", text: prompt });
  stopping = new InterruptableStoppingCriteria();
  let tokens = 0, promptSeen = false;
  const streamer = { // put() is called with the prompt's ids first, then with each new id
    put(ids) {
      if (!promptSeen) { promptSeen = true; return; }
      tokens += 1;
      postMessage({ type: "text", text: pipe.tokenizer.decode(ids[0].map(Number)) });
    },
    end() {},
  };
  const sampling = settings.temperature === 0 ? { do_sample: false }
    : { do_sample: true, temperature: settings.temperature, top_k: settings.topK ?? 0 }; // 0: all characters, as in Python
  const start = performance.now();
  await pipe(prompt, { max_new_tokens: settings.tokens, ...sampling, streamer, stopping_criteria: stopping });
  postMessage({ type: "done", tokens, seconds: (performance.now() - start) / 1000, stopped: stopping.interrupted });
}

onmessage = ({ data }) => {
  if (data.type === "stop") stopping?.interrupt();
  if (data.type !== "generate") return;
  generate(data).catch((err) => {
    const message = err instanceof UsageError ? err.message : `unexpected error: ${err?.message ?? err}`;
    postMessage({ type: "error", message });
  });
};
