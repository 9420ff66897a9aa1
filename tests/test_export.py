"""Exports of a trained checkpoint: the same logits and the same greedy text in every runtime."""

import hashlib
import json
import shutil
import sys

import onnx
import pytest
import torch

from common import defaults
from export import hf
from export.generate import load_model
from tests.conftest import ROOT, assert_one_line_error, run

FORMATS = ["model.pt", "model.ts", "model.pt2", "model.onnx"]
PROMPT, TOKENS = "ROMEO:", 80


def greedy_text(path) -> str:
    result = run([sys.executable, "-m", "export.generate", path, "--prompt", PROMPT,
                  "--tokens", TOKENS, "--temperature", 0])
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # no exporter or deprecation chatter in the user's output
    return result.stdout


@pytest.fixture(scope="module")
def greedy_texts(trained_run) -> dict[str, str]:
    """make generate's greedy text from each format of the trained run, by file name."""
    return {name: greedy_text(trained_run / name) for name in FORMATS}


def test_export_writes_every_format_and_a_manifest_with_their_hashes(trained_run):
    manifest = json.loads((trained_run / "model.json").read_text())
    assert len(manifest["vocab"]) == 65 and manifest["block_size"] == 128 and manifest["step"] == 60
    assert set(manifest["sha256"]) == {"model.ts", "model.pt2", "model.onnx",
                                       *(f"hf/{name}" for name in hf.MODEL_FILES)}
    for name, digest in manifest["sha256"].items():
        assert hashlib.sha256((trained_run / name).read_bytes()).hexdigest() == digest
    graph = onnx.load(trained_run / "model.onnx")
    onnx.checker.check_model(graph, full_check=True)
    assert graph.opset_import[0].version == manifest["onnx_opset"]
    assert [d.dim_param for d in graph.graph.input[0].type.tensor_type.shape.dim] == ["batch", "time"]


@pytest.mark.parametrize("shape", [(1, 1), (3, 17), (2, 128)])
def test_logits_agree_across_runtimes(trained_run, shape):
    ids = torch.randint(0, 65, shape, generator=torch.Generator().manual_seed(sum(shape)))
    models = {name: load_model(trained_run / name) for name in FORMATS}
    with torch.inference_mode():
        eager = models.pop("model.pt").logits(ids)
        assert eager.shape == (*shape, 65)
        for name, model in models.items():
            assert torch.allclose(model.logits(ids), eager, atol=1e-4, rtol=0), name


def test_greedy_text_is_the_same_from_every_format(greedy_texts):
    assert greedy_texts["model.pt"].startswith(PROMPT) and len(greedy_texts["model.pt"]) == len(PROMPT) + TOKENS + 1
    assert len(set(greedy_texts.values())) == 1, greedy_texts


def test_onnx_example_runs_with_torch_unimportable(trained_run, greedy_texts, tmp_path):
    # A package named torch that refuses to import, first on the path: any `import torch` fails.
    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "__init__.py").write_text("raise ImportError('torch is not available here')\n")
    example = shutil.copy(ROOT / "export" / "onnx_generate.py", tmp_path / "onnx_generate.py")
    probe = run([sys.executable, "-c", "import torch"], PYTHONPATH=tmp_path)
    assert probe.returncode != 0 and "torch is not available here" in probe.stderr
    result = run([sys.executable, example, trained_run / "model.onnx", "--prompt", PROMPT, "--tokens", TOKENS,
                  "--temperature", 0], cwd=tmp_path, PYTHONPATH=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == greedy_texts["model.pt"]


def test_cpp_program_builds_against_the_wheel_and_matches_python(trained_run, greedy_texts, cpp_program):
    result = run(["make", "--no-print-directory", "cpp-generate", f"MODEL={trained_run / 'model.ts'}",
                  f"PROMPT={PROMPT}", f"TOKENS={TOKENS}", "TEMPERATURE=0"], timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout == greedy_texts["model.pt"]


def test_make_export_rewrites_the_files_from_a_checkpoint(trained_run, tmp_path):
    shutil.copy(trained_run / "model.pt", tmp_path / "model.pt")
    result = run(["make", "--no-print-directory", "export", f"CKPT={tmp_path / 'model.pt'}"], timeout=600)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["model.pt", *defaults.EXPORTS, defaults.MANIFEST,
                                                                  defaults.HF_FOLDER])


@pytest.mark.parametrize("content", ["truncated", "foreign", "missing"])
def test_export_of_a_bad_checkpoint_is_a_clear_error_and_writes_nothing(trained_run, tmp_path, content):
    path = tmp_path / "model.pt"
    if content == "truncated":
        whole = (trained_run / "model.pt").read_bytes()
        path.write_bytes(whole[: len(whole) // 2])
    elif content == "foreign":
        torch.save({"weights": torch.zeros(3)}, path)
    words = {"truncated": ["corrupt or truncated", str(path)], "foreign": ["not a checkpoint"],
             "missing": ["does not exist"]}[content]
    assert_one_line_error(run([sys.executable, "-m", "export", path]), *words)
    assert not any(p.name != "model.pt" for p in tmp_path.iterdir())


def test_generate_rejects_unknown_files_and_characters(trained_run, tmp_path):
    (tmp_path / "model.bin").write_bytes(b"")
    assert_one_line_error(run([sys.executable, "-m", "export.generate", tmp_path / "model.bin"]), ".onnx")
    bad_prompt = run([sys.executable, "-m", "export.generate", trained_run / "model.onnx", "--prompt", "ROMEO€"])
    assert_one_line_error(bad_prompt, "outside the vocabulary", "€")
    lonely = shutil.copy(trained_run / "model.onnx", tmp_path / "model.onnx")
    assert_one_line_error(run([sys.executable, "-m", "export.generate", lonely]), "model.json is missing")
