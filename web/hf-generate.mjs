#!/usr/bin/env node
// Shakespeare from the hf/ folder in Node, through transformers.js: pipeline("text-generation")
// on the folder's tokenizer and onnx/model.onnx, a decoder that reuses its KV cache.
//
//   node web/hf-generate.mjs checkpoints/hf --prompt ROMEO: --tokens 100 [--temperature T]
//
// Local files only: nothing is fetched from a model hub. Greedy by default (temperature 0), which
// gives make generate's text. The context is the model's 128 characters and transformers.js does
// not slide it: the prompt and the new characters must fit in it. Only the text (prompt included)
// goes to stdout, each character as it is generated (Ctrl-C ends the line there, exit status 130); a
// problem is one line on stderr starting "error: ", exit status 2.

import { createHash } from "node:crypto";
import { existsSync, readFileSync, statSync } from "node:fs";
import { basename, dirname, join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { env, pipeline, TextStreamer } from "@huggingface/transformers";

import { parseArgsProblem, parseSettings, UsageError } from "./sampling.mjs";

const USAGE = "node web/hf-generate.mjs HF_FOLDER [--prompt TEXT] [--tokens N] [--temperature T]";
const NEEDED = ["config.json", "tokenizer.json", "tokenizer_config.json", "onnx/model.onnx"];
const REDO = "export again with make export";

function options(argv) {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv, allowPositionals: true,
      options: { prompt: { type: "string", default: "ROMEO:" }, tokens: { type: "string" }, temperature: { type: "string" } },
    });
  } catch (err) {
    throw new UsageError(`${parseArgsProblem(err)} (usage: ${USAGE})`);
  }
  const { values, positionals } = parsed;
  if (positionals.length !== 1) throw new UsageError(`give one hf folder (usage: ${USAGE})`);
  if (!values.prompt) throw new UsageError("--prompt is empty: give at least one character to start from");
  const settings = parseSettings({ tokens: values.tokens, temperature: values.temperature ?? "0" },
    { tokens: "--tokens", temperature: "--temperature" });
  return { folder: resolve(positionals[0]), prompt: values.prompt, ...settings };
}

/** The vocabulary of the model.json beside the folder (under any name), once every file transformers.js
 * reads matches its SHA-256, as every other loader checks: another export's onnx/model.onnx is refused. */
export function checkedVocabulary(folder) {
  if (!existsSync(folder)) throw new UsageError(`${folder} does not exist: train (make train) and export (make export) first`);
  if (!statSync(folder).isDirectory()) {
    throw new UsageError(`${folder} is a file, not an hf folder: name the hf folder that make export writes`);
  }
  const missing = NEEDED.filter((name) => !existsSync(join(folder, name)));
  if (missing.length) throw new UsageError(`${join(folder, missing[0])} is missing: ${REDO}`);
  const path = join(dirname(folder), "model.json");
  let manifest;
  try {
    manifest = JSON.parse(readFileSync(path, "utf8"));
  } catch (err) {
    throw new UsageError(`${path} ${err.code === "ENOENT" ? "is missing" : "is not readable JSON"}: it holds the ` +
      `files' SHA-256; ${REDO}`);
  }
  for (const name of NEEDED) {
    const expected = manifest?.sha256?.[`hf/${name}`];
    const actual = createHash("sha256").update(readFileSync(join(folder, name))).digest("hex");
    if (typeof expected !== "string" || actual !== expected.toLowerCase()) {
      throw new UsageError(`${join(folder, name)} does not match ${path} (its SHA-256 differs: a file of another ` +
        `export): ${REDO}`);
    }
  }
  if (!Array.isArray(manifest.vocab)) throw new UsageError(`${path} has no vocabulary: ${REDO}`);
  return manifest.vocab;
}

/** The text-generation pipeline of a local folder; transformers.js reads no other place. */
export async function localPipeline(folder) {
  checkedVocabulary(folder);
  env.allowRemoteModels = false;
  env.localModelPath = dirname(folder) + "/";
  try {
    return await pipeline("text-generation", basename(folder), { dtype: "fp32", device: "cpu" });
  } catch (err) {
    throw new UsageError(`transformers.js cannot load ${folder} (${err.message.split("\n")[0]}): export it again with make export`);
  }
}

async function main(argv) {
  const args = options(argv);
  const vocab = checkedVocabulary(args.folder);
  const unknown = [...new Set([...args.prompt].filter((c) => !vocab.includes(c)))].sort();
  if (unknown.length) {
    throw new UsageError(`the prompt has characters the model does not know (${JSON.stringify(unknown.join(""))}): ` +
      "use characters of its training corpus");
  }
  const generator = await localPipeline(args.folder);
  const limit = generator.model.config.max_position_embeddings ?? generator.model.config.n_positions;
  const ids = generator.tokenizer.encode(args.prompt);
  if (ids.length + args.tokens > limit) {
    throw new UsageError(`the prompt (${ids.length} characters) and --tokens ${args.tokens} exceed the model's context ` +
      `of ${limit}: transformers.js does not slide it; ask for fewer characters`);
  }
  // top_k 0 samples among all characters, as make generate does (transformers.js would default to 50)
  const sampling = args.temperature === 0 ? { do_sample: false } : { do_sample: true, temperature: args.temperature, top_k: 0 };
  // Each character as it is picked, as the other generators print (one id is one character).
  const streamer = new TextStreamer(generator.tokenizer, {
    skip_prompt: true, callback_function: () => {},
    token_callback_function: (tokens) => process.stdout.write(generator.tokenizer.decode(tokens)),
  });
  process.on("SIGINT", () => {
    process.stdout.write("\n"); // stdout is synchronous on Linux: the text so far is out already
    process.exit(130); // 128 + SIGINT, as a shell reports a program Ctrl-C ended
  });
  process.stdout.write(args.prompt);
  await generator(args.prompt, { max_new_tokens: args.tokens, streamer, ...sampling });
  process.stdout.write("\n");
}

if (process.argv[1] && resolve(process.argv[1]) === resolve(new URL(import.meta.url).pathname)) {
  main(process.argv.slice(2)).catch((err) => {
    if (!(err instanceof UsageError)) throw err;
    process.stderr.write(`error: ${err.message}\n`);
    process.exitCode = 2;
  });
}
