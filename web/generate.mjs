#!/usr/bin/env node
// Shakespeare from model.onnx in Node, with onnxruntime-web's wasm build and the page's own
// sampling code (sampling.mjs, onnx-model.mjs): the JavaScript twin of `make generate`.
//
//   node web/generate.mjs checkpoints/model.onnx --prompt ROMEO: --tokens 200 [--temperature 0.8]
//                         [--top-k K] [--seed N]
//
// Needs `npm ci` in web/ once (make serve and make test do it). Only the text (prompt included)
// goes to stdout, each character as it is generated; Ctrl-C ends it there (a newline, exit status
// 130). A problem is one line on stderr starting "error: ", exit status 2.

import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { parseArgs } from "node:util";
import * as ort from "onnxruntime-web";

import { openModel } from "./onnx-model.mjs";
import { encode, generateTokens, parseArgsProblem, parseSettings, randomSource, UsageError } from "./sampling.mjs";

const USAGE = "node web/generate.mjs MODEL.onnx [--prompt TEXT] [--tokens N] [--temperature T] [--top-k K] [--seed N]";

function options(argv) {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv, allowPositionals: true, options: {
        prompt: { type: "string", default: "ROMEO:" }, tokens: { type: "string" },
        temperature: { type: "string" }, "top-k": { type: "string" }, seed: { type: "string" },
      },
    });
  } catch (err) {
    throw new UsageError(`${parseArgsProblem(err)} (usage: ${USAGE})`);
  }
  const { values, positionals } = parsed;
  if (positionals.length !== 1) throw new UsageError(`give one model file (usage: ${USAGE})`);
  if (!values.prompt) throw new UsageError("--prompt is empty: give at least one character to start from");
  const settings = parseSettings({ tokens: values.tokens, temperature: values.temperature, topK: values["top-k"], seed: values.seed },
    { tokens: "--tokens", temperature: "--temperature", topK: "--top-k", seed: "--seed" });
  return { model: positionals[0], prompt: values.prompt, ...settings };
}

function read(path, what) {
  try {
    return readFileSync(path);
  } catch (err) {
    throw new UsageError(`cannot read ${what} ${path} (${err.code}): train (make train) and export (make export) first`);
  }
}

async function main(argv) {
  const args = options(argv);
  if (!args.model.endsWith(".onnx")) throw new UsageError(`${args.model} is not an ONNX model: pass the model.onnx that make export writes`);
  const onnx = new Uint8Array(read(args.model, "model"));
  const manifestPath = join(dirname(args.model), "model.json");
  const manifest = existsSync(manifestPath) ? read(manifestPath, "manifest").toString("utf8") : null;
  ort.env.wasm.numThreads = 1; // a batch-1 model this small gains nothing from threads in Node
  ort.env.logLevel = "error";
  const model = await openModel(ort, onnx, manifest);
  const ids = encode(model.vocab, args.prompt);
  const sampling = { temperature: args.temperature, topK: args.topK, random: randomSource(args.seed) };
  process.on("SIGINT", () => {
    process.stdout.write("\n"); // stdout is synchronous on Linux: the text so far is out already
    process.exit(130); // 128 + SIGINT, as a shell reports a program Ctrl-C ended
  });
  process.stdout.write(args.prompt);
  for await (const id of generateTokens(model.lastLogits, ids, args.tokens, model.blockSize, sampling)) {
    process.stdout.write(model.vocab[id]);
    // The model's run resolves in microtasks, which never let the SIGINT handler in: a real task boundary.
    await new Promise(setImmediate);
  }
  process.stdout.write("\n");
}

main(process.argv.slice(2)).catch((err) => {
  if (!(err instanceof UsageError)) throw err;
  process.stderr.write(`error: ${err.message}\n`);
  process.exitCode = 2;
});
