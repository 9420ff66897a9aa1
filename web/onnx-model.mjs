// model.onnx (and model.json, when there is one) as a function from token ids to the next token's
// logits, with onnxruntime-web. Shared by the page's worker and the Node example; each passes in
// its own import of onnxruntime-web (the browser and Node load different builds of it).

import { UsageError, vocabularyOf } from "./sampling.mjs";

/** The key/value pairs of an ONNX file's metadata_props, read straight from its protobuf bytes.
 *
 * onnxruntime-web does not expose them, and this is all of protobuf that ModelProto needs here:
 * metadata_props is field 14, each entry a message with key (1) and value (2).
 */
export function onnxMetadata(bytes) {
  const props = {};
  for (const [field, entry] of protobufFields(bytes)) {
    if (field !== 14) continue;
    const pair = Object.fromEntries(protobufFields(entry).map(([f, v]) => [f, new TextDecoder().decode(v)]));
    props[pair[1]] = pair[2];
  }
  return props;
}

// [field number, bytes] of each length-delimited field of one message; other wire types are skipped.
function protobufFields(bytes) {
  const fields = [];
  let pos = 0;
  const varint = () => {
    let value = 0;
    for (let scale = 1; ; scale *= 128) {
      if (pos >= bytes.length) throw new UsageError("model.onnx is cut short or is not an ONNX file: export it again with make export");
      const byte = bytes[pos++];
      value += (byte & 127) * scale;
      if (byte < 128) return value;
    }
  };
  while (pos < bytes.length) {
    const key = varint(), field = Math.floor(key / 8), wire = key % 8;
    if (wire === 0) varint();
    else if (wire === 1) pos += 8;
    else if (wire === 5) pos += 4;
    else if (wire === 2) {
      const length = varint();
      if (pos + length > bytes.length) throw new UsageError("model.onnx is cut short or is not an ONNX file: export it again with make export");
      fields.push([field, bytes.subarray(pos, pos + length)]);
      pos += length;
    } else throw new UsageError("model.onnx is not an ONNX file: pass the model.onnx that make export writes");
  }
  return fields;
}

/** The vocabulary and context length: from model.json, or from the ONNX file's own metadata.
 *
 * `manifestText` is model.json's text, or null when there is none (model.onnx exported since
 * manifest format 2 carries both facts itself). When both are there they must agree: a model.json
 * from another export would turn the logits into the wrong characters.
 */
export function modelFacts(onnxBytes, manifestText) {
  const props = onnxMetadata(onnxBytes);
  const inside = "model.onnx's metadata";
  const embedded = "vocab" in props ? facts(parseJson(props.vocab, inside), props.block_size, inside) : null;
  if (manifestText === null) {
    if (embedded) return embedded;
    throw new UsageError("model.json is missing and this model.onnx carries no vocabulary of its own: " +
      "put the model.json written with it beside it (make export writes both)");
  }
  const manifest = parseJson(manifestText, "model.json");
  if (manifest === null || typeof manifest !== "object" || Array.isArray(manifest)) {
    throw new UsageError(`model.json is not a manifest (a JSON ${manifest === null ? "null" : typeof manifest}, ` +
      "not an object): put the model.json written with this model.onnx beside it (make export writes both)");
  }
  const listed = { ...facts(manifest.vocab, manifest.block_size, "model.json"), sha256: manifest.sha256?.["model.onnx"] };
  if (embedded && (embedded.vocab.join("") !== listed.vocab.join("") || embedded.blockSize !== listed.blockSize)) {
    throw new UsageError("model.json does not match model.onnx (a different vocabulary or context length): " +
      "use the model.json written with this model.onnx, or leave it out");
  }
  return listed;
}

function parseJson(text, where) {
  try {
    return JSON.parse(text);
  } catch {
    throw new UsageError(`${where} is not valid JSON: export the model again with make export`);
  }
}

// Manifest format 2 stores numbers and arrays; metadata_props stores strings (block_size "128").
function facts(vocab, blockSize, where) {
  const size = Number(blockSize);
  if (!Number.isInteger(size) || size < 1) {
    throw new UsageError(`${where} has no context length (block_size): export the model again with make export`);
  }
  return { vocab: vocabularyOf(vocab), blockSize: size, where };
}

const REDO = "use the model.json written with this model.onnx (make export writes both)";

/** The SHA-256 of `bytes` as lowercase hex (Web Crypto: the same in the page's worker and in Node). */
export async function sha256Hex(bytes) {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return Array.from(digest, (byte) => byte.toString(16).padStart(2, "0")).join("");
}

/** An onnxruntime-web session over model.onnx, checked against model.json (its SHA-256, the
 * vocabulary, the context length) when there is one.
 *
 * Returns { vocab, blockSize, lastLogits }, where lastLogits(ids) gives the logits of the last of
 * at most blockSize ids, as a Float32Array of one value per vocabulary character.
 */
export async function openModel(ort, onnxBytes, manifestText) {
  const { vocab, blockSize, where, sha256 } = modelFacts(onnxBytes, manifestText);
  if (manifestText !== null && typeof sha256 !== "string") {
    throw new UsageError(`model.json lists no SHA-256 for model.onnx: ${REDO}`);
  }
  if (manifestText !== null && (await sha256Hex(onnxBytes)) !== sha256.toLowerCase()) {
    throw new UsageError("model.json does not match model.onnx: its SHA-256 is not the one model.json records " +
      `(a damaged file, or a model.json from another export); ${REDO}`);
  }
  let session;
  try {
    session = await ort.InferenceSession.create(onnxBytes);
  } catch (err) {
    throw new UsageError(`model.onnx cannot be loaded by onnxruntime-web (${String(err.message || err).split("\n")[0]}): export it again with make export`);
  }
  const [input] = session.inputNames, [output] = session.outputNames;
  async function lastLogits(ids) {
    const tensor = new ort.Tensor("int64", BigInt64Array.from(ids, BigInt), [1, ids.length]);
    const logits = (await session.run({ [input]: tensor }))[output];
    const size = logits.dims[logits.dims.length - 1];
    return logits.data.subarray(logits.data.length - size);
  }
  // A full context through the model before any text: the logits must be one per character, and
  // the model must take the context length claimed (a runtime error mid-text otherwise).
  let size;
  try {
    size = (await lastLogits(new Array(blockSize).fill(0))).length;
  } catch {
    throw new UsageError(`${where} does not match model.onnx: the model does not take the context of ${blockSize} ` +
      `characters it claims; ${REDO}`);
  }
  if (size !== vocab.length) {
    throw new UsageError(`${where} does not match model.onnx: it lists ${vocab.length} characters, the model scores ${size}; ${REDO}`);
  }
  return { vocab, blockSize, lastLogits };
}
