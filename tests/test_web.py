"""The page in headless Chromium and the Node example: Python's greedy text, seeded runs that repeat,
Stop, clear failures."""

import hashlib
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import urllib.error
import urllib.request

import onnx
import pytest

from tests.conftest import EMOJI, EMOJI_CORPUS, ROOT, assert_one_line_error, child_env, run, trainer_cmd
from trainer.plot import run_vocab_size
from web.browser import drive, missing_requirement, page_url
from web.serve import serving

PROMPT, TOKENS = "ROMEO:", 200
BLOCK_SIZE = 32  # small, so that prompts longer than the context are cheap to test
# A model small enough to train in seconds, trained enough that greedy text is more than one repeated character.
TINY_MODEL = ["--steps", 300, "--block-size", BLOCK_SIZE, "--n-layer", 1, "--n-head", 2, "--n-embd", 48,
              "--lr", 0.01, "--eval-every", 1000, "--eval-iters", 1, "--sample-tokens", 0]


@pytest.fixture(scope="module")
def web_model(tmp_path_factory, corpus):
    """A folder with the tiny model's model.onnx and model.json only, as a person serves it."""
    trained = tmp_path_factory.mktemp("web-trained")
    result = run(trainer_cmd(None, "--data", corpus, "--out", trained, *TINY_MODEL), timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    served = tmp_path_factory.mktemp("web-model")
    for name in ("model.onnx", "model.json"):
        shutil.copy(trained / name, served / name)
    return served


@pytest.fixture(scope="session")
def chromium():
    reason = missing_requirement()
    if reason:  # CI installs both (.ci/run); a machine without them is told how, never skipped
        pytest.fail(f"the browser tests cannot run: {reason}", pytrace=False)


def python_text(model_dir, prompt=PROMPT, tokens=TOKENS, *options) -> str:
    result = run([sys.executable, "-m", "export.generate", model_dir / "model.onnx", "--prompt", prompt,
                  "--tokens", tokens, *options])
    assert result.returncode == 0, result.stderr
    return result.stdout.removesuffix("\n")


def node_example(*args) -> subprocess.CompletedProcess:
    return run(["node", ROOT / "web" / "generate.mjs", *args])


@pytest.fixture(scope="module")
def greedy_text(web_model):
    text = python_text(web_model, PROMPT, TOKENS, "--temperature", 0)
    assert len(set(text.removeprefix(PROMPT))) > 3, text  # the comparison means something only on varied text
    return text


def generate_in_page(model_dir, *options, **query) -> dict:
    with serving(model_dir) as url:
        return drive(page_url(url, **{"prompt": PROMPT, "tokens": TOKENS, **query}), *options)


def test_greedy_text_in_the_page_is_python_s_and_the_link_keeps_the_fields(chromium, web_model, greedy_text, tmp_path):
    shot = tmp_path / "page.png"
    query = {"prompt": PROMPT, "tokens": TOKENS, "temperature": 0, "top_k": "", "seed": 1, "autostart": 1}
    page = generate_in_page(web_model, "--screenshot", shot, **query)
    assert page["state"] == "done" and page["error"] == "", page
    assert page["output"] == greedy_text
    assert page["tokensPerSecond"] > 0 and "tokens/s" in page["stats"]
    assert page["fields"] == {"prompt": PROMPT, "tokens": "200", "temperature": "0", "top_k": "", "seed": "1"}
    assert page["query"] == "?" + "&".join(f"{k}={v}" for k, v in query.items()).replace(":", "%3A")
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert width == 1000 and height >= 720 and len(png) > 20_000  # the full page at the driver's viewport


def test_fields_typed_in_the_page_go_into_the_link(chromium, web_model):
    page = generate_in_page(web_model, "--set", "prompt=JULIET:", "--set", "tokens=5", "--set", "seed=42",
                            "--generate", temperature=0)
    assert page["state"] == "done" and page["output"].startswith("JULIET:") and len(page["output"]) == 12
    assert "prompt=JULIET%3A&tokens=5&temperature=0&top_k=&seed=42&autostart=1" in page["query"]


def test_node_example_gives_python_s_greedy_text(web_model, greedy_text):
    result = node_example(web_model / "model.onnx", "--prompt", PROMPT, "--tokens", TOKENS, "--temperature", 0)
    assert result.returncode == 0, result.stderr
    assert result.stdout == greedy_text + "\n" and result.stderr == ""


def test_a_seed_gives_the_same_sample_every_time_in_the_page_and_in_node(chromium, web_model, greedy_text):
    sampled = {"temperature": 1.0, "top_k": 10, "autostart": 1}
    first, again = (generate_in_page(web_model, seed=7, **sampled) for _ in range(2))
    other = generate_in_page(web_model, seed=8, **sampled)
    assert first["state"] == again["state"] == other["state"] == "done"
    assert first["output"] == again["output"] != other["output"]
    assert first["output"] != greedy_text and len(first["output"]) == len(PROMPT) + TOKENS
    node = node_example(web_model / "model.onnx", "--prompt", PROMPT, "--tokens", TOKENS,
                        "--temperature", 1.0, "--top-k", 10, "--seed", 7)
    assert node.returncode == 0 and node.stdout == first["output"] + "\n", node.stderr


def test_a_temperature_too_small_for_float64_is_greedy_in_the_page_and_in_node(chromium, web_model, greedy_text):
    page = generate_in_page(web_model, temperature="1e-320", autostart=1)
    assert page["state"] == "done" and page["output"] == greedy_text, page
    node = node_example(web_model / "model.onnx", "--prompt", PROMPT, "--tokens", TOKENS, "--temperature", "1e-320")
    assert node.returncode == 0 and node.stdout == greedy_text + "\n", node.stderr


def test_stop_ends_a_long_generation(chromium, web_model):
    page = generate_in_page(web_model, "--stop-after", 40, tokens=100_000, temperature=0, autostart=1)
    assert page["state"] == "done" and page["stopped"], page
    assert 40 <= len(page["output"]) < 2_000 and page["stats"].startswith("Stopped after")


@pytest.mark.parametrize("how", ["--files", "--drop"])
def test_model_files_chosen_from_disk(chromium, web_model, greedy_text, tmp_path, how):
    # Served from an empty folder: the model comes only from the file input or a drop, as on any static host.
    files = f"{web_model / 'model.onnx'},{web_model / 'model.json'}"
    page = generate_in_page(tmp_path, how, files, "--generate", temperature=0)
    assert page["state"] == "done" and page["output"] == greedy_text, page


def test_model_onnx_alone_is_enough_in_the_page_and_in_node(chromium, web_model, greedy_text, tmp_path):
    shutil.copy(web_model / "model.onnx", tmp_path)  # its metadata_props hold the vocabulary and block size
    page = generate_in_page(tmp_path, temperature=0, autostart=1)
    assert page["state"] == "done" and page["output"] == greedy_text, page
    node = node_example(tmp_path / "model.onnx", "--prompt", PROMPT, "--tokens", TOKENS, "--temperature", 0)
    assert node.returncode == 0 and node.stdout == greedy_text + "\n", node.stderr


def test_a_prompt_longer_than_the_context_is_cropped_as_in_python(chromium, web_model, corpus):
    prompt = corpus.read_text(encoding="utf-8")[:3 * BLOCK_SIZE]
    page = generate_in_page(web_model, prompt=prompt, tokens=40, temperature=0, autostart=1)
    assert page["state"] == "done" and f"only the last {BLOCK_SIZE}" in page["notice"], page
    assert page["output"] == python_text(web_model, prompt, 40, "--temperature", 0)


def without_metadata(onnx_path):
    """model.onnx as exported before the vocabulary went into the ONNX file itself."""
    graph = onnx.load(onnx_path)
    del graph.metadata_props[:]
    onnx.save(graph, onnx_path)


def mismatched_pair(folder, web_model, keep_metadata: bool, **changes):
    """model.onnx and a model.json that records its SHA-256 but describes another model: by default
    another corpus's vocabulary (one character fewer)."""
    shutil.copy(web_model / "model.onnx", folder / "model.onnx")
    if not keep_metadata:
        without_metadata(folder / "model.onnx")
    manifest = json.loads((web_model / "model.json").read_text(encoding="utf-8"))
    manifest |= changes or {"vocab": manifest["vocab"][:-1]}
    manifest["sha256"]["model.onnx"] = hashlib.sha256((folder / "model.onnx").read_bytes()).hexdigest()
    (folder / "model.json").write_text(json.dumps(manifest), encoding="utf-8")


def hostile_pair(folder, web_model, case: str):
    """Pairs the page must refuse: a model.json of another export (its SHA-256), model.json = null,
    and a metadata-less model.onnx whose model.json claims a larger context than the model takes."""
    if case == "larger context":
        return mismatched_pair(folder, web_model, keep_metadata=False, block_size=BLOCK_SIZE * 2)
    shutil.copy(web_model / "model.onnx", folder / "model.onnx")
    manifest = json.loads((web_model / "model.json").read_text(encoding="utf-8"))
    manifest["sha256"]["model.onnx"] = hashlib.sha256(b"another export").hexdigest()
    (folder / "model.json").write_text("null" if case == "null" else json.dumps(manifest), encoding="utf-8")


HOSTILE_PAIRS = [("another export", ["does not match model.onnx", "SHA-256"]), ("null", ["not a manifest"]),
                 ("larger context", ["does not match model.onnx", f"context of {BLOCK_SIZE * 2}"])]


@pytest.mark.parametrize("case, words", [
    ("no model files", ["model.onnx was not found", "make serve OUT="]),
    ("model.onnx without metadata and no model.json", ["model.json is missing", "make export"]),
    ("model.json of another model", ["does not match model.onnx"]),
    ("model.json of another model, model.onnx without metadata", ["lists 64 characters, the model scores 65"]),
    ("prompt outside the vocabulary", ["outside the model's vocabulary", "☃"]),
    ("negative characters", ["tokens must be a whole number"]),
    *HOSTILE_PAIRS,
])
def test_each_failure_is_a_message_in_the_page(chromium, web_model, tmp_path, case, words):
    query = {"temperature": 0, "autostart": 1}
    if case in dict(HOSTILE_PAIRS):
        hostile_pair(tmp_path, web_model, case)
    elif case.startswith("model.json of another model"):
        mismatched_pair(tmp_path, web_model, keep_metadata="without metadata" not in case)
    elif case.startswith("model.onnx without metadata"):
        shutil.copy(web_model / "model.onnx", tmp_path)
        without_metadata(tmp_path / "model.onnx")
    elif case != "no model files":
        shutil.copy(web_model / "model.onnx", tmp_path)
        shutil.copy(web_model / "model.json", tmp_path)
        query |= {"prompt": "ROMEO ☃:"} if case.startswith("prompt") else {"tokens": -1}
    page = generate_in_page(tmp_path, **query)
    assert page["state"] == "error" and page["output"] == "", page
    for word in words:
        assert word in page["error"], page["error"]


def test_node_example_errors_are_one_line(web_model, tmp_path):
    assert_one_line_error(node_example(tmp_path / "model.onnx"), "cannot read model", "make export")
    for tokens in ["many", "1e9", "0x10"]:  # Python's int() refuses the last two as well
        assert_one_line_error(node_example(web_model / "model.onnx", "--tokens", tokens), "--tokens", "whole number")
    assert_one_line_error(node_example(web_model / "model.onnx", "--prompt", "ROMEO ☃"),
                          "outside the model's vocabulary")
    mismatched_pair(tmp_path, web_model, keep_metadata=False)
    assert_one_line_error(node_example(tmp_path / "model.onnx"), "model.json does not match model.onnx", "make export")
    for case, words in HOSTILE_PAIRS:
        hostile_pair(tmp_path, web_model, case)
        assert_one_line_error(node_example(tmp_path / "model.onnx"), *words)


def test_node_decodes_a_character_outside_the_bmp_as_python_does(emoji_run):
    # An emoji is one character in Python and two UTF-16 units in JavaScript: indexes must not shift.
    # loss.png's guessing line is ln of this run's vocabulary, not of Tiny Shakespeare's 65 characters.
    assert run_vocab_size(emoji_run) == len(set(EMOJI_CORPUS))
    prompt = f"be {EMOJI}"
    expected = python_text(emoji_run, prompt, 60, "--temperature", 0)
    node = node_example(emoji_run / "model.onnx", "--prompt", prompt, "--tokens", 60, "--temperature", 0)
    assert node.returncode == 0, node.stderr
    assert node.stdout == expected + "\n" and EMOJI in expected.removeprefix(prompt)


def test_make_serve_prints_the_url_and_sends_what_onnxruntime_web_needs(web_model):
    serve = subprocess.Popen(["make", "--no-print-directory", "serve", f"OUT={web_model}", "PORT=0"], cwd=ROOT,
                             env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
    try:
        line = serve.stdout.readline()
        assert line.startswith("serving the page at http://127.0.0.1:"), line  # (stderr would wait for the end)
        url = line.split()[4]
        with urllib.request.urlopen(url) as page:
            assert page.headers["Cross-Origin-Opener-Policy"] == "same-origin"
            assert page.headers["Cross-Origin-Embedder-Policy"] == "require-corp"
            assert b'id="output"' in page.read()
        wasm_url = url + "node_modules/onnxruntime-web/dist/ort-wasm-simd-threaded.wasm"
        wasm = urllib.request.Request(wasm_url, method="HEAD")
        with urllib.request.urlopen(wasm) as response:
            assert response.headers["Content-Type"] == "application/wasm"
        with urllib.request.urlopen(url + "model.onnx") as response:
            assert response.read() == (web_model / "model.onnx").read_bytes()
        with pytest.raises(urllib.error.HTTPError, match="404"):
            urllib.request.urlopen(url + "serve.py")  # only the page's own files leave web/
    finally:
        os.killpg(serve.pid, signal.SIGINT)
        serve.wait(timeout=30)


def test_make_serve_on_a_busy_port_is_one_line(web_model):
    with serving(web_model) as url:
        port = url.rsplit(":", 1)[1].strip("/")
        result = run([sys.executable, "-m", "web.serve", "--out", web_model, "--port", port])
    assert_one_line_error(result, f"127.0.0.1:{port}", "PORT=")


# The server's bad input.

@pytest.mark.parametrize("port", [70000, -1])
def test_a_port_out_of_range_is_one_line(tmp_path, port):
    assert_one_line_error(run([sys.executable, "-m", "web.serve", "--out", tmp_path, f"--port={port}"]),
                          str(port), "PORT=")


MALFORMED = [b"GET /%00 HTTP/1.1", b"GET /node_modules/%00.mjs HTTP/1.1", b"GET /" + b"a" * 5000 + b" HTTP/1.1",
             b"GET /" + b"a/" * 3000 + b" HTTP/1.1", b"GARBAGE", b"GET", b"GET /\xff\xfe%0a HTTP/1.1"]


def test_malformed_requests_and_an_aborted_download_cost_at_most_a_line_each(tmp_path):
    server = subprocess.Popen([sys.executable, "-m", "web.serve", "--out", tmp_path, "--port", "0"], cwd=ROOT,
                              env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        port = int(server.stdout.readline().split()[4].rsplit(":", 1)[1].strip("/"))
        for request in MALFORMED:
            with socket.create_connection(("127.0.0.1", port), timeout=30) as client:
                client.sendall(request + b"\r\nHost: 127.0.0.1\r\n\r\n")
                reply = client.makefile("rb").read()  # the server closes the connection after it
                # Without a version in the request line (HTTP/0.9) the reply is the error page alone.
                status = reply.split(b"\r\n")[0] if b"\r\n" in reply else reply
                assert re.search(rb"\b(400|404)\b", status), request[:40]
        with socket.create_connection(("127.0.0.1", port), timeout=30) as client:  # hangs up mid-download
            client.sendall(b"GET /node_modules/onnxruntime-web/dist/ort-wasm-simd-threaded.wasm HTTP/1.1\r\n"
                           b"Host: 127.0.0.1\r\n\r\n")
            client.recv(100)
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = reset
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/") as page:
            assert page.status == 200  # still serving
    finally:
        server.send_signal(signal.SIGINT)
        _, err = server.communicate(timeout=30)
    assert server.returncode == 0 and "Traceback" not in err, err[-3000:]
    assert len(err.splitlines()) <= len(MALFORMED), err[-3000:]


def test_the_server_sends_no_file_through_a_link_out_of_the_run_folder_nor_to_another_host(tmp_path):
    """A link in --out to a file outside it is not followed, and a request for another host name is
    refused (DNS rebinding: a site whose name now points at 127.0.0.1 would read the run's files)."""
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the browser")
    out = tmp_path / "run"
    out.mkdir()
    (out / "model.json").symlink_to(secret)
    (out / "model.onnx").write_bytes(b"onnx")
    with serving(out) as url:
        with pytest.raises(urllib.error.HTTPError, match="404"):
            urllib.request.urlopen(url + "model.json")
        with urllib.request.urlopen(url + "model.onnx") as response:
            assert response.read() == b"onnx"
        rebound = urllib.request.Request(url + "model.onnx", headers={"Host": "attacker.example:8000"})
        with pytest.raises(urllib.error.HTTPError, match="403"):
            urllib.request.urlopen(rebound)
        with urllib.request.urlopen(urllib.request.Request(url, headers={"Host": "localhost"})) as page:
            assert page.status == 200
    assert_one_line_error(run([sys.executable, "-m", "web.serve", "--out", secret, "--port", "0"]),
                          "is a file, not a run folder", "OUT=")


@pytest.mark.parametrize("args, words", [
    (["--seed", str(2 ** 53 + 1)], "--seed must be at most 9007199254740991"),
    (["--bogus"], "Unknown option '--bogus' (usage: "),
    (["--seed", "-1"], "Option '--seed' argument is ambiguous (usage: "),
])
def test_node_flag_errors_are_one_line_of_our_own(tmp_path, args, words):
    """A seed past 2^53-1 (beyond exact JavaScript integers) names its bound, and parseArgs' errors are one line."""
    assert_one_line_error(run(["node", ROOT / "web" / "generate.mjs", tmp_path / "model.onnx", *args]), words)
