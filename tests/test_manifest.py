"""model.json and the facts inside model.onnx / model.pt2: one vocabulary entry per character in
every language, even for a character outside the Basic Multilingual Plane (an emoji)."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import onnx
import onnxruntime
import pytest
import torch

from export.manifest import FORMAT_VERSION, read_embedded_facts
from tests.conftest import EMOJI, EMOJI_CORPUS, ROOT, assert_one_line_error, run

PROMPT = f"to {EMOJI}"


def generated(path, *extra) -> str:
    result = run([sys.executable, "-m", "export.generate", path, "--prompt", PROMPT, "--tokens", 30,
                  "--temperature", 0, *extra])
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_manifest_stores_the_vocabulary_as_one_entry_per_character(emoji_run):
    manifest = json.loads((emoji_run / "model.json").read_text(encoding="utf-8"))
    corpus_chars = sorted(set(EMOJI_CORPUS))
    assert manifest["format"] == FORMAT_VERSION
    assert manifest["vocab"] == corpus_chars and EMOJI in manifest["vocab"]
    assert manifest["vocab"] == list(manifest["vocab"]) and all(len(c) == 1 for c in manifest["vocab"])
    assert manifest["block_size"] == 16 and manifest["config"]["vocab_size"] == len(corpus_chars)


def test_javascript_reads_as_many_entries_as_python(emoji_run):
    # JavaScript strings are UTF-16: the emoji would count twice in one string of the vocabulary.
    script = ("const m = JSON.parse(require('fs').readFileSync(process.argv[1], 'utf8'));"
              "console.log(JSON.stringify([m.vocab.length, m.vocab.join('').length, m.block_size]));")
    result = subprocess.run(["node", "-e", script, str(emoji_run / "model.json")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    entries, utf16_units, block_size = json.loads(result.stdout)
    vocab = json.loads((emoji_run / "model.json").read_text(encoding="utf-8"))["vocab"]
    assert entries == len(vocab) and utf16_units == len(vocab) + 1 and block_size == 16


def test_onnx_and_pt2_carry_the_vocabulary_and_block_size_themselves(emoji_run):
    manifest = json.loads((emoji_run / "model.json").read_text(encoding="utf-8"))
    expected = ("".join(manifest["vocab"]), manifest["block_size"])
    props = {p.key: p.value for p in onnx.load(emoji_run / "model.onnx").metadata_props}
    assert read_embedded_facts(props, "model.onnx") == expected
    # What any ONNX Runtime (the browser's too) shows of the file alone, without model.json:
    session = onnxruntime.InferenceSession(str(emoji_run / "model.onnx"), providers=["CPUExecutionProvider"])
    assert read_embedded_facts(session.get_modelmeta().custom_metadata_map, "model.onnx") == expected
    extra = {"vocab": "", "block_size": ""}
    torch.export.load(emoji_run / "model.pt2", extra_files=extra)
    assert read_embedded_facts(extra, "model.pt2") == expected


def test_an_emoji_prompt_gives_the_same_text_from_every_reader(emoji_run, cpp_program):
    text = generated(emoji_run / "model.pt")
    assert text.startswith(PROMPT) and len(text) == len(PROMPT) + 30 + 1
    for name in ("model.ts", "model.pt2", "model.onnx"):
        assert generated(emoji_run / name) == text, name
    example = run([sys.executable, ROOT / "export" / "onnx_generate.py", emoji_run / "model.onnx",
                   "--prompt", PROMPT, "--tokens", 30, "--temperature", 0])
    assert example.returncode == 0, example.stderr
    assert example.stdout == text
    cpp = run(["make", "--no-print-directory", "cpp-generate", f"MODEL={emoji_run / 'model.ts'}", f"PROMPT={PROMPT}",
               "TOKENS=30", "TEMPERATURE=0"], timeout=600)
    assert cpp.returncode == 0, cpp.stderr[-3000:]
    assert cpp.stdout == text


def format_1_set(emoji_run: Path, folder: Path, **changes) -> Path:
    """The set as exports before format 2 were: model.onnx without facts inside, the vocabulary
    in model.json as one string; `changes` then edit that manifest."""
    graph = onnx.load(emoji_run / "model.onnx")
    del graph.metadata_props[:]
    onnx.save(graph, folder / "model.onnx")
    manifest = json.loads((emoji_run / "model.json").read_text(encoding="utf-8"))
    del manifest["format"]
    manifest["vocab"] = "".join(manifest["vocab"])
    manifest["sha256"]["model.onnx"] = hashlib.sha256((folder / "model.onnx").read_bytes()).hexdigest()
    manifest.update(changes)
    (folder / "model.json").write_text(json.dumps(manifest, ensure_ascii=False), encoding="utf-8")
    return folder / "model.onnx"


def test_a_format_1_export_still_generates(emoji_run, tmp_path):
    old = format_1_set(emoji_run, tmp_path)
    expected = generated(emoji_run / "model.onnx")
    assert generated(old) == expected
    example = run([sys.executable, ROOT / "export" / "onnx_generate.py", old, "--prompt", PROMPT, "--tokens", 30,
                   "--temperature", 0])
    assert example.returncode == 0, example.stderr
    assert example.stdout == expected


@pytest.mark.parametrize("change", ["vocab", "block_size"])
def test_a_format_1_manifest_that_does_not_fit_its_model_is_refused(emoji_run, tmp_path, change):
    # Without facts inside the model, the logits' width and the longest context still tell.
    vocab = "".join(json.loads((emoji_run / "model.json").read_text(encoding="utf-8"))["vocab"])
    old = format_1_set(emoji_run, tmp_path, **({"vocab": vocab[:-1]} if change == "vocab" else {"block_size": 17}))
    assert_one_line_error(run([sys.executable, "-m", "export.generate", old, "--prompt", "to", "--tokens", 3]),
                          "does not match", "do not fit the model", "make export")
