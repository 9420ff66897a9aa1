// Characters in, characters out: the tokenizer and the sampling loop of model/sample.py, in plain
// JavaScript. The page's worker and the Node example (generate.mjs) both import this module, so
// they decode alike. Greedy decoding (temperature 0) gives Python's text exactly; sampling uses a
// seeded generator of our own, so a seed gives the same text in every browser and in Node, but not
// the text torch's generator gives for that seed.

/** A problem the user can fix; the message names the problem and the fix. */
export class UsageError extends Error {}

/** The vocabulary as an array of one-character strings.
 *
 * model.json stores an array; older exports stored one string, which Array.from splits by code
 * point as Python does (vocab[i] and vocab.length would split a character outside the BMP in two).
 */
export function vocabularyOf(vocab) {
  const chars = typeof vocab === "string" ? Array.from(vocab) : vocab;
  if (!Array.isArray(chars) || !chars.length || !chars.every((ch) => typeof ch === "string" && Array.from(ch).length === 1)) {
    throw new UsageError("the vocabulary is not a list of single characters: export the model again with make export");
  }
  if (new Set(chars).size !== chars.length) {
    throw new UsageError("the vocabulary repeats a character: export the model again with make export");
  }
  return chars;
}

/** The first sentence of node:util parseArgs' message: the rest is advice for its own API ("To specify a positional
 * argument starting with a '-', ..."), not for this command's user. */
export function parseArgsProblem(err) {
  return String(err.message).split(/\.\s|\n/)[0];
}

/** The generation settings from text fields (empty = default), checked; `names` label the fields in errors. */
export function parseSettings({ tokens, temperature, topK, seed }, names = {}) {
  const label = { tokens: "tokens", temperature: "temperature", topK: "top-k", seed: "seed", ...names };
  const number = (key, text, fallback, { integer = false, min = 0 } = {}) => {
    if (text === undefined || text === null || String(text).trim() === "") return fallback;
    const value = Number(text);
    // Number() also reads "1e9" and "0x10"; a whole number is written in digits, as Python's int() wants it.
    const digits = /^\s*[+-]?\d+\s*$/.test(String(text));
    if (integer && digits && value > Number.MAX_SAFE_INTEGER) {
      throw new UsageError(`${label[key]} must be at most ${Number.MAX_SAFE_INTEGER} (2^53-1, the largest whole number ` +
        `JavaScript holds exactly), not ${JSON.stringify(String(text))}`);
    }
    if (!Number.isFinite(value) || (integer && !(digits && Number.isSafeInteger(value))) || value < min) {
      throw new UsageError(`${label[key]} must be ${integer ? "a whole number" : "a number"} of at least ${min}, not ${JSON.stringify(String(text))}`);
    }
    return value;
  };
  return {
    tokens: number("tokens", tokens, 200, { integer: true }),
    temperature: number("temperature", temperature, 0.8),
    topK: number("topK", topK, null, { integer: true, min: 1 }),
    seed: number("seed", seed, null, { integer: true }),
  };
}

/** Token ids of `text`; every character must be in the vocabulary. */
export function encode(vocab, text) {
  const index = new Map(vocab.map((ch, i) => [ch, i]));
  const chars = Array.from(text);
  const unknown = [...new Set(chars.filter((ch) => !index.has(ch)))];
  if (unknown.length) {
    throw new UsageError(`the prompt has characters outside the model's vocabulary: ${JSON.stringify(unknown.join(""))}; ` +
      "remove them or use characters of the training text");
  }
  return chars.map((ch) => index.get(ch));
}

export function decode(vocab, ids) {
  return ids.map((i) => vocab[i]).join("");
}

/** Uniform numbers in [0, 1): sfc32 seeded by a non-negative integer, or Math.random without a seed. */
export function randomSource(seed) {
  if (seed === null || seed === undefined) return Math.random;
  let a = seed >>> 0, b = Math.floor(seed / 2 ** 32) >>> 0, c = 0x9e3779b9, d = 1;
  const next = () => {
    const t = (((a + b) | 0) + d) | 0;
    d = (d + 1) | 0;
    a = b ^ (b >>> 9);
    b = (c + (c << 3)) | 0;
    c = (c << 21) | (c >>> 11);
    c = (c + t) | 0;
    return (t >>> 0) / 2 ** 32;
  };
  for (let i = 0; i < 12; i++) next(); // mix the seed in before the first number is used
  return next;
}

/** logits / temperature, or null where the pick must be greedy: model/sample.py's scaled_logits.
 *
 * Greedy at temperature 0 and at one so small that a quotient is not finite (1e-320 makes them
 * infinite even in float64, and their weights NaN): sampling tends to the argmax as the temperature falls.
 */
export function scaledLogits(logits, temperature) {
  if (temperature === 0) return null;
  const scaled = Float64Array.from(logits, (x) => x / temperature);
  return scaled.every(Number.isFinite) ? scaled : null;
}

/** The next token id from one position's logits, as model/sample.py picks it. */
export function pickToken(logits, { temperature = 0.8, topK = null, random = Math.random } = {}) {
  const scaled = scaledLogits(logits, temperature);
  if (scaled === null) return argmax(logits);
  if (topK !== null && topK < scaled.length) {
    // torch.topk(...).values[-1]: the k-th largest; values tied with it stay in the running
    const kth = Float64Array.from(scaled).sort()[scaled.length - topK];
    scaled.forEach((x, i) => { if (x < kth) scaled[i] = -Infinity; });
  }
  const top = Math.max(...scaled);
  const weights = scaled.map((x) => Math.exp(x - top));
  let rest = random() * weights.reduce((sum, w) => sum + w, 0);
  for (let i = 0; i < weights.length; i++) {
    rest -= weights[i];
    if (rest < 0) return i;
  }
  return weights.findLastIndex((w) => w > 0); // rounding left a sliver past the last weight
}

function argmax(values) {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i] > values[best]) best = i; // first of equals, as torch
  return best;
}

/** Extend `ids` one token at a time, yielding each new id: model/sample.py's generate as a stream.
 *
 * `lastLogits(context)` returns the logits of the last position for a list of at most blockSize
 * ids; the context is cropped to the last blockSize ids, as in Python.
 */
export async function* generateTokens(lastLogits, ids, count, blockSize, options = {}) {
  const out = [...ids];
  for (let n = 0; n < count; n++) {
    const id = pickToken(await lastLogits(out.slice(-blockSize)), options);
    out.push(id);
    yield id;
  }
}
