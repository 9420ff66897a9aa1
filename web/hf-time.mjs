#!/usr/bin/env node
// Greedy tokens/s of transformers.js on an hf/ folder, for make bench: a warm-up run, then a timed
// one, printed as one JSON line.   node web/hf-time.mjs checkpoints/hf PROMPT TOKENS

import { resolve } from "node:path";

import { localPipeline } from "./hf-generate.mjs";

const [folder, prompt, tokens] = process.argv.slice(2);
const generator = await localPipeline(resolve(folder));
const greedy = { max_new_tokens: Number(tokens), do_sample: false };
await generator(prompt, { ...greedy, max_new_tokens: 8 }); // first-call compilation and allocation
const start = performance.now();
await generator(prompt, greedy);
const seconds = (performance.now() - start) / 1000;
process.stdout.write(JSON.stringify({ tokens_per_s: Number(tokens) / seconds, ms_per_token: 1000 * seconds / Number(tokens) }) + "\n");
