"""Every generator refuses what it cannot honestly run, in one line with exit status 2: a model file
that is not the one model.json records, a manifest that does not describe the model, bad flags.
And what a shell passes as PROMPT reaches the program unchanged."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, assert_one_line_error, child_env, run

EXPORTS = ["model.ts", "model.pt2", "model.onnx"]
EXAMPLE = ROOT / "export" / "onnx_generate.py"
BUILD_NOTE = "building the C++ generator (once, ~25 s)"
MAKE_FAILED = re.compile(r"make(\[\d+\])?: \*\*\* ")


@pytest.fixture
def export_set(trained_run, tmp_path) -> Path:
    """A copy of the trained run's checkpoint and export set, free to damage."""
    for name in ["model.pt", *EXPORTS, "model.json"]:
        shutil.copy(trained_run / name, tmp_path / name)
    return tmp_path


def make(target: str, *variables: str) -> subprocess.CompletedProcess:
    return run(["make", "--no-print-directory", target, *variables], timeout=600)


def assert_make_one_line_error(result: subprocess.CompletedProcess, *words: str) -> str:
    """The program's one line, once make's own closing line ("make: *** [...] Error 2", or make[1]
    under `make test`) and the
    note of a first C++ build are set aside."""
    own = [line for line in result.stderr.splitlines() if not MAKE_FAILED.match(line) and line != BUILD_NOTE]
    return assert_one_line_error(subprocess.CompletedProcess(result.args, result.returncode, result.stdout,
                                                             "\n".join(own)), *words)


def damage(path: Path) -> None:
    """4000 bytes of 0xff in the middle of the file, its size unchanged."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 4000] = b"\xff" * 4000
    path.write_bytes(bytes(data))


def edit_manifest(folder: Path, **changes) -> None:
    manifest = json.loads((folder / "model.json").read_text(encoding="utf-8"))
    manifest.update(changes)
    (folder / "model.json").write_text(json.dumps(manifest, ensure_ascii=False), encoding="utf-8")


def generate(path: Path, *flags) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "export.generate", path, "--tokens", 5, *flags])


# Every loader checks the file against model.json.

@pytest.mark.parametrize("name", EXPORTS)
def test_a_damaged_export_is_refused_by_make_generate(export_set, name):
    damage(export_set / name)
    assert_make_one_line_error(make("generate", f"MODEL={export_set / name}"),
                               str(export_set / name), "SHA-256", "make export")


def test_a_damaged_or_foreign_model_is_refused_by_the_cpp_program_and_the_onnx_example(export_set, tmp_path_factory):
    damage(export_set / "model.ts")
    assert_make_one_line_error(make("cpp-generate", f"MODEL={export_set / 'model.ts'}"),
                               str(export_set / "model.ts"), "SHA-256", "make export")
    damage(export_set / "model.onnx")
    assert_one_line_error(run([sys.executable, EXAMPLE, export_set / "model.onnx"]),
                          str(export_set / "model.onnx"), "SHA-256", "make export")


def test_a_manifest_without_the_files_hash_is_refused(export_set):
    edit_manifest(export_set, sha256={})
    assert_one_line_error(generate(export_set / "model.pt2"), "lists no SHA-256 for model.pt2", "make export")


# make generate with bad input.

@pytest.mark.parametrize("variable, words", [
    ("TEMPERATURE=nan", ["--temperature", "nan"]),
    ("TEMPERATURE=-1", ["--temperature"]),
    ("SEED=99999999999999999999999", ["--seed", "99999999999999999999999"]),
    ("TOKENS=-5", ["--tokens"]),
])
def test_make_generate_refuses_bad_sampling_flags(trained_run, variable, words):
    assert_make_one_line_error(make("generate", f"MODEL={trained_run / 'model.onnx'}", variable), *words)


def test_make_generate_refuses_a_malformed_manifest(export_set):
    (export_set / "model.json").write_text('{"vocab": ["a", ', encoding="utf-8")
    assert_make_one_line_error(make("generate", f"MODEL={export_set / 'model.ts'}"),
                               str(export_set / "model.json"), "make export")


@pytest.mark.parametrize("name, change", [("model.ts", "two characters swapped"), ("model.onnx", "one character less"),
                                          ("model.pt2", "block size 64"), ("model.onnx", "block size 256")])
def test_a_manifest_that_does_not_describe_the_model_is_refused(export_set, name, change):
    manifest = json.loads((export_set / "model.json").read_text(encoding="utf-8"))
    vocab, block_size = manifest["vocab"], manifest["block_size"]
    if change == "two characters swapped":
        vocab[1], vocab[2] = vocab[2], vocab[1]
    elif change == "one character less":
        vocab = vocab[:-1]
    else:
        block_size = int(change.split()[-1])
    edit_manifest(export_set, vocab=vocab, block_size=block_size)
    assert_make_one_line_error(make("generate", f"MODEL={export_set / name}"),
                               f"{export_set / 'model.json'} does not match", "make export")


def test_a_prompt_with_dollars_quotes_and_spaces_reaches_make_generate_unchanged(trained_run):
    prompt = "ROMEO: $HOME it's 'so'  $$ $x; -"  # every character is in the vocabulary
    result = make("generate", f"MODEL={trained_run / 'model.pt'}", f"PROMPT={prompt}", "TOKENS=0")
    assert result.returncode == 0, result.stderr
    assert result.stdout == prompt + "\n"


# make cpp-generate.

@pytest.mark.parametrize("variable, words", [
    ("PROMPT=", ["--prompt is empty"]),
    ("MODEL=x.pt", ["x.pt is not TorchScript", "model.ts"]),
    ("MODEL=x.onnx", ["x.onnx is not TorchScript", "model.ts"]),
    ("TEMPERATURE=nan", ["--temperature"]),
    ("TOP_K=0", ["--top-k"]),
])
def test_make_cpp_generate_refuses_bad_input(trained_run, variable, words):
    assert_make_one_line_error(make("cpp-generate", f"OUT={trained_run}", variable), *words)


def test_the_cpp_wrapper_refuses_before_building(trained_run, tmp_path):
    # From a fresh folder, where the program would be built (./build): nothing is built.
    for flags in [[trained_run / "model.onnx"], [trained_run / "model.ts", "--prompt", ""]]:
        assert_one_line_error(run([sys.executable, "-m", "export.cpp", *flags], cwd=tmp_path))
    assert not (tmp_path / "build").exists()


def test_the_cpp_program_says_it_builds_then_samples_like_make_generate(trained_run, cpp_program, tmp_path):
    flags = {"PROMPT": "JULIET:", "TOKENS": 60, "TEMPERATURE": 0.9, "TOP_K": 12, "SEED": 7}
    model = trained_run / "model.ts"
    cpp = [sys.executable, "-m", "export.cpp", model,
           *(f"--{k.lower().replace('_', '-')}={v}" for k, v in flags.items())]
    # From a fresh folder, so that this run builds the program (in ./build). The real build is the
    # cpp_program fixture's; here a stand-in compiler copies its result to the -o path, so the
    # wrapper's first-use note and its cache are tested without a second minute of compiling.
    compiler = tmp_path / "c++"
    compiler.write_text(f'#!/bin/sh\nwhile [ "$1" != -o ]; do shift; done\ncp "{cpp_program}" "$2"\n')
    compiler.chmod(0o755)
    first = run(cpp, cwd=tmp_path, CXX=compiler)
    assert first.returncode == 0, first.stderr[-3000:]
    assert first.stderr.splitlines() == [BUILD_NOTE]
    again = run(cpp, cwd=tmp_path, CXX=compiler)
    assert again.returncode == 0 and again.stderr == ""  # built once
    assert len(list((tmp_path / "build").iterdir())) == 1
    variables = [f"{k}={v}" for k, v in flags.items()]
    python = make("generate", f"MODEL={model}", *variables)
    assert python.returncode == 0, python.stderr
    assert first.stdout == again.stdout == python.stdout
    # make passes TEMPERATURE, TOP_K and SEED through: the same text, and another with another seed.
    assert make("cpp-generate", f"MODEL={model}", *variables).stdout == python.stdout
    other_seed = make("cpp-generate", f"MODEL={model}", *variables[:-1], "SEED=8")
    assert other_seed.stdout.startswith("JULIET:") and other_seed.stdout != python.stdout


# The ONNX-only example is as careful as the rest.

@pytest.mark.parametrize("flags, words", [
    (["--prompt", ""], ["--prompt is empty"]),
    (["--temperature", "nan"], ["--temperature", "nan"]),
    (["--temperature", "-1"], ["--temperature"]),
    (["--tokens", "-5"], ["--tokens"]),
    (["--tokens", "many"], ["--tokens", "many"]),
    (["--prompt", "ROMEO€"], ["outside the vocabulary", "€"]),
])
def test_the_onnx_example_refuses_bad_flags(trained_run, flags, words):
    assert_one_line_error(run([sys.executable, EXAMPLE, trained_run / "model.onnx", *flags]), *words)


@pytest.mark.parametrize("manifest", ["missing", "malformed", "another vocabulary"])
def test_the_onnx_example_refuses_a_missing_or_wrong_manifest(export_set, manifest):
    if manifest == "missing":
        (export_set / "model.json").unlink()
    elif manifest == "malformed":
        (export_set / "model.json").write_text("{", encoding="utf-8")
    else:
        vocab = json.loads((export_set / "model.json").read_text(encoding="utf-8"))["vocab"]
        edit_manifest(export_set, vocab=vocab[::-1])
    assert_one_line_error(run([sys.executable, EXAMPLE, export_set / "model.onnx"]),
                          str(export_set / "model.json"), "make export")


def test_the_onnx_example_names_a_block_size_its_model_cannot_run(export_set):
    """A model.onnx without its metadata beside a format-1 model.json that claims a longer context:
    onnxruntime's failure at the 129th character would be a traceback."""
    import hashlib

    import onnx

    model = onnx.load(export_set / "model.onnx")
    del model.metadata_props[:]
    data = model.SerializeToString()
    (export_set / "model.onnx").write_bytes(data)
    edit_manifest(export_set, block_size=256, sha256={"model.onnx": hashlib.sha256(data).hexdigest()})
    assert_one_line_error(run([sys.executable, EXAMPLE, export_set / "model.onnx", "--tokens", 130]),
                          "cannot run a context of 129 characters", "make export")


# One sampling rule, and text as it is generated.

def test_a_temperature_too_small_for_fp32_is_greedy_in_python_onnx_and_cpp(trained_run, cpp_program):
    model = trained_run / "model.ts"
    greedy = make("generate", f"MODEL={model}", "TOKENS=40", "TEMPERATURE=0")
    assert greedy.returncode == 0 and len(greedy.stdout) > 40, greedy.stderr
    tiny = ["TOKENS=40", "TEMPERATURE=1e-39"]
    example = run([sys.executable, EXAMPLE, trained_run / "model.onnx", "--tokens", 40, "--temperature", "1e-39"])
    for result in [make("generate", f"MODEL={model}", *tiny), make("cpp-generate", f"MODEL={model}", *tiny), example]:
        assert result.returncode == 0 and result.stdout == greedy.stdout, result.stderr[-2000:]
        assert "Traceback" not in result.stderr and "warning" not in result.stderr.lower()


@pytest.mark.parametrize("generator", ["python", "onnx example", "cpp", "node"])
def test_every_generator_streams_and_ctrl_c_keeps_the_text(trained_run, generator, request):
    if generator == "cpp":
        request.getfixturevalue("cpp_program")  # built beforehand, so that the program starts at once
    command = {"python": [sys.executable, "-m", "export.generate", trained_run / "model.pt"],
               "onnx example": [sys.executable, EXAMPLE, trained_run / "model.onnx"],
               "cpp": [sys.executable, "-m", "export.cpp", trained_run / "model.ts"],
               "node": ["node", ROOT / "web" / "generate.mjs", trained_run / "model.onnx"]}[generator]
    child = subprocess.Popen([str(arg) for arg in [*command, "--tokens", 1_000_000_000]], cwd=ROOT,
                             env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        first = child.stdout.read(100)  # a billion characters are never done: these came as they were made
        os.killpg(child.pid, signal.SIGINT)  # Ctrl-C in a terminal signals the whole group
        rest, err = child.communicate(timeout=120)
    finally:
        child.kill()
    text, err = (first + rest).decode(), err.decode()
    assert child.returncode == 130, err[-2000:]
    assert text.startswith("ROMEO:") and text.endswith("\n") and len(text) > 100
    assert "Traceback" not in err and "Error" not in err, err[-2000:]


def test_the_cpp_program_names_a_prompt_byte_that_is_not_utf8(trained_run, cpp_program):
    """A stray byte was called a character missing from the vocabulary."""
    result = subprocess.run([str(cpp_program), str(trained_run / "model.ts"), "--prompt", b"ROMEO\xff:"],
                            capture_output=True, text=True, errors="replace", env=child_env(), timeout=120)
    assert_one_line_error(result, "the prompt is not UTF-8 text (byte 0xFF at position 5)")
