"""The hf/ folder of an export: real transformers, real transformers.js in Node and in Chromium."""

import hashlib
import json
import shutil
import sys

import numpy as np
import onnxruntime
import pytest
import torch
from tokenizers import Tokenizer

from common.vocab import encode
from export import hf
from export.artifacts import load_trained_model
from model import GPT, GPTConfig, count_parameters
from tests.conftest import ROOT, assert_one_line_error, run
from trainer.config import resolve
from trainer.optim import make_optimizer
from web.browser import drive, page_url
from web.serve import serving

PROMPT, TOKENS = "ROMEO:", 100


@pytest.fixture(scope="module")
def transformers_model(trained_run):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = trained_run / "hf"
    return (AutoModelForCausalLM.from_pretrained(folder, local_files_only=True).eval(),
            AutoTokenizer.from_pretrained(folder, local_files_only=True))


def test_the_folder_is_part_of_the_export_set_and_describes_the_run(trained_run):
    manifest = json.loads((trained_run / "model.json").read_text(encoding="utf-8"))
    for name in hf.MODEL_FILES:
        data = (trained_run / "hf" / name).read_bytes()
        assert manifest["sha256"][f"hf/{name}"] == hashlib.sha256(data).hexdigest(), name
    assert "hf/README.md" not in manifest["sha256"] and (trained_run / "hf" / "README.md").is_file()
    config = json.loads((trained_run / "hf" / "config.json").read_text())
    model, saved = load_trained_model(trained_run / "model.pt")
    c = model.config
    assert (config["n_positions"], config["n_embd"], config["n_layer"], config["n_head"], config["vocab_size"]) == \
        (c.block_size, c.n_embd, c.n_layer, c.n_head, c.vocab_size)
    assert config["n_inner"] == 4 * c.n_embd and config["activation_function"] == "relu"
    assert config["layer_norm_epsilon"] == 1e-5 and config["tie_word_embeddings"] is False
    card = (trained_run / "hf" / "README.md").read_text(encoding="utf-8")
    assert f"{count_parameters(GPT(GPTConfig())):,}-parameter" in card  # the default model's count
    assert f"train: {saved.losses['train']:.4f}" in card and f"val: {saved.losses['val']:.4f}" in card
    assert f"Step {saved.step} " in card and "from_pretrained" in card and f"{c.block_size} tokens" in card
    assert str(ROOT.parent) not in card  # no path of the machine that trained it


def test_safetensors_logits_match_the_checkpoint(trained_run, transformers_model):
    model, _ = load_trained_model(trained_run / "model.pt")
    shape = (4, model.config.block_size)
    ids = torch.randint(0, model.config.vocab_size, shape, generator=torch.Generator().manual_seed(4))
    with torch.inference_mode():
        difference = (transformers_model[0](ids).logits - model(ids)).abs().max()
    assert difference < 1e-4


def test_the_tokenizer_round_trips_the_whole_corpus(trained_run, transformers_model, corpus):
    _, saved = load_trained_model(trained_run / "model.pt")
    text = corpus.read_text(encoding="utf-8")
    ids = transformers_model[1](text).input_ids
    assert ids == encode(saved.vocab, text)
    assert transformers_model[1].decode(ids) == text


def test_the_tokenizer_is_exact_for_characters_byte_level_bpe_would_split():
    vocab = "".join(sorted(set("\t\n\r \u00a0é\u0301ß—“”中🎭\U0001f600<unk>")))
    tokenizer = Tokenizer.from_str(hf.tokenizer_json(vocab))
    text = "🎭中 é\u0301\r\n\t“ß”—\u00a0<unk>" * 3
    ids = tokenizer.encode(text).ids
    assert ids == encode(vocab, text) and tokenizer.decode(ids) == text


def test_the_kv_cache_decoder_gives_the_cache_free_logits(trained_run):
    model, _ = load_trained_model(trained_run / "model.pt")
    c = model.config
    session = onnxruntime.InferenceSession(str(trained_run / "hf" / "onnx" / "model.onnx"))
    ids = torch.randint(0, c.vocab_size, (1, 40), generator=torch.Generator().manual_seed(40))
    with torch.inference_mode():
        expected = model(ids)[0].numpy()
    past = {name: np.zeros((1, c.n_head, 0, c.n_embd // c.n_head), np.float32)
            for name in hf.cache_names(c.n_layer, "past_key_values")}
    got, start = [], 0
    for end in [10, *range(11, 41)]:  # a prompt of 10, then one token a step, as generation feeds it
        outputs = session.run(None, {"input_ids": ids[:, start:end].numpy(),
                                     "attention_mask": np.ones((1, end), np.int64),
                                     "position_ids": np.arange(start, end)[None], **past})
        got.append(outputs[0][0])
        past = dict(zip(past, outputs[1:]))
        start = end
    assert np.abs(np.concatenate(got) - expected).max() < 1e-4
    assert next(iter(past.values())).shape[2] == 40


def make_generate(model_path) -> str:
    result = run(["make", "--no-print-directory", "generate", f"MODEL={model_path}", f"PROMPT={PROMPT}",
                  f"TOKENS={TOKENS}", "TEMPERATURE=0"])
    assert result.returncode == 0 and result.stderr == "", result.stderr
    return result.stdout.removesuffix("\n")


def test_greedy_text_is_the_same_in_python_transformers_node_and_the_page(trained_run, transformers_model):
    expected = make_generate(trained_run / "model.pt")
    assert len(expected) == len(PROMPT) + TOKENS and len(set(expected.removeprefix(PROMPT))) > 3, expected
    model, tokenizer = transformers_model
    ids = tokenizer(PROMPT, return_tensors="pt").input_ids
    with torch.inference_mode():
        out = model.generate(ids, max_new_tokens=TOKENS, do_sample=False)
    assert tokenizer.decode(out[0]) == expected
    assert make_generate(trained_run / "hf") == expected
    node = run(["node", ROOT / "web" / "hf-generate.mjs", trained_run / "hf", "--prompt", PROMPT, "--tokens", TOKENS])
    assert node.returncode == 0 and node.stdout == expected + "\n", node.stderr
    with serving(trained_run) as url:
        page = drive(page_url(url, prompt=PROMPT, tokens=TOKENS, temperature=0, autostart=1, runtime="hf"))
    assert page["state"] == "done" and page["output"] == expected, page
    assert "transformers.js, KV cache" in page["stats"]


@pytest.fixture
def export_copy(trained_run, tmp_path):
    """The checkpoint's model.json and hf/ copied, to damage without touching the shared run."""
    shutil.copy(trained_run / "model.json", tmp_path)
    shutil.copytree(trained_run / "hf", tmp_path / "hf")
    return tmp_path


def generate_from(folder, *extra) -> object:
    return run([sys.executable, "-m", "export.generate", folder, "--prompt", PROMPT, "--tokens", 5, *extra])


@pytest.mark.parametrize("damage, named", [
    ("truncate model.safetensors", "hf/model.safetensors"),
    ("remove tokenizer.json", "hf/tokenizer.json"),
    ("another export's config.json", "hf/config.json"),
])
def test_a_damaged_or_mismatched_folder_is_one_line(export_copy, damage, named):
    folder = export_copy / "hf"
    if damage.startswith("truncate"):
        data = (folder / "model.safetensors").read_bytes()
        (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    elif damage.startswith("remove"):
        (folder / "tokenizer.json").unlink()
    else:
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, "n_layer": config["n_layer"] + 1}))
    assert_one_line_error(generate_from(folder), named, "make export")
    if not damage.startswith("truncate"):  # transformers.js reads no safetensors
        node = run(["node", ROOT / "web" / "hf-generate.mjs", folder, "--tokens", 5])
        assert_one_line_error(node, named, "make export")


def test_node_checks_the_folder_as_every_loader_does(export_copy, trained_run):
    """Another export's decoder (model.json's SHA-256), a prompt outside the vocabulary, a file for a folder."""
    hf_generate = ["node", ROOT / "web" / "hf-generate.mjs"]
    assert_one_line_error(run([*hf_generate, trained_run / "model.json"]), "is a file, not an hf folder")
    assert_one_line_error(run([*hf_generate, export_copy / "hf", "--prompt", "ROMEO€", "--tokens", 5]),
                          'characters the model does not know ("€")')
    decoder = export_copy / "hf" / "onnx" / "model.onnx"
    decoder.write_bytes(decoder.read_bytes() + b"\0")  # as good as another export's: not the one model.json lists
    assert_one_line_error(run([*hf_generate, export_copy / "hf", "--tokens", 5]), "hf/onnx/model.onnx does not match",
                          "make export")


def test_an_edited_card_and_a_renamed_copy_of_the_folder_still_generate(export_copy):
    """The card (README.md) is for people to edit before push_to_hub: model.json hashes what the model needs."""
    (export_copy / "hf" / "README.md").write_text("# My Shakespeare\n", encoding="utf-8")
    (export_copy / "hf").rename(export_copy / "shakespeare-hf")
    for command in ([sys.executable, "-m", "export.generate"], ["node", ROOT / "web" / "hf-generate.mjs"]):
        result = run([*command, export_copy / "shakespeare-hf", "--prompt", PROMPT, "--tokens", 5,
                      "--temperature", 0])
        assert result.returncode == 0 and result.stdout.startswith(PROMPT), result.stderr[-2000:]


def test_node_refuses_more_characters_than_the_context_in_one_line(trained_run):
    result = run(["node", ROOT / "web" / "hf-generate.mjs", trained_run / "hf", "--tokens", 200])
    assert_one_line_error(result, "context of 128", "does not slide")


def test_export_of_a_model_gpt2_cannot_represent_writes_the_rest_and_says_why_in_one_line(trained_run, tmp_path):
    # n_embd 16 < 65 characters: lm_head's bias cannot fold into ln_f, the model is not GPT-2.
    saved = torch.load(trained_run / "model.pt", weights_only=True)
    config = GPTConfig(vocab_size=len(saved["vocab"]), block_size=16, n_layer=1, n_head=2, n_embd=16)
    model = GPT(config)
    weights = model.state_dict()
    optimizer = make_optimizer(model, resolve({}, saved["train_config"])[0]).state_dict()  # one of this model
    torch.save({**saved, "model_config": config.to_dict(), "model": weights, "training_weights": weights,
                "optimizer": optimizer}, tmp_path / "model.pt")
    result = run([sys.executable, "-m", "export", tmp_path / "model.pt"])
    assert_one_line_error(result, "hf/ not written", "lm_head", "--n-embd")
    manifest = json.loads((tmp_path / "model.json").read_text(encoding="utf-8"))
    assert set(manifest["sha256"]) == {"model.ts", "model.pt2", "model.onnx"}
    assert not (tmp_path / "hf").exists()
    assert generate_from(tmp_path / "model.onnx").returncode == 0


def test_the_bench_times_the_cached_runtimes_against_the_cache_free_model(trained_run):
    """make bench's generation rows for the hf/ folder, on 10 characters: every runtime measured."""
    from bench.hf_generation import measure_cached_generation

    table = measure_cached_generation(trained_run, tokens=10)
    assert [row["runtime"] for row in table["rows"]] == [
        "onnxruntime, no cache", "onnxruntime, KV cache", "transformers (Python), KV cache",
        "transformers (Python), no cache", "transformers.js (Node), KV cache", "transformers.js (Chromium), KV cache"]
    assert all(row.get("tokens_per_s", 0) > 0 and "not_measured" not in row for row in table["rows"]), table
