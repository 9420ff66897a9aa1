"""trainer.checkpoint: the shape check of --resume, and checkpoints saved and loaded whole."""

import copy
import dataclasses
import math

import pytest
import torch

from common.cli import UsageError
from model import GPT, GPTConfig, next_token_loss
from trainer.checkpoint import FORMAT, REQUIRED_KEYS, check_compatible, load, save, validate
from trainer.config import resolve
from trainer.optim import make_optimizer

CONFIG = GPTConfig(vocab_size=3, block_size=8, n_layer=2, n_head=2, n_embd=8)
CHECKPOINT = {"model_config": CONFIG.to_dict(), "vocab": "abc"}


def test_same_shape_and_vocab_is_compatible():
    check_compatible(CHECKPOINT, "model.pt", CONFIG, "abc")


def test_another_n_layer_names_the_field_and_the_flag():
    with pytest.raises(UsageError) as caught:
        check_compatible(CHECKPOINT, "model.pt", dataclasses.replace(CONFIG, n_layer=3), "abc")
    message = str(caught.value)
    assert "model.pt" in message
    assert "n_layer=2" in message and "n_layer=3" in message
    assert "pass --n-layer 2" in message


def test_another_vocab_size_asks_for_the_training_corpus():
    expected = "vocab_size=3 but this run has vocab_size=4: use the corpus it was trained on"
    with pytest.raises(UsageError, match=expected):
        check_compatible(CHECKPOINT, "model.pt", dataclasses.replace(CONFIG, vocab_size=4), "abcd")


def test_another_vocabulary_of_the_same_size_is_refused():
    with pytest.raises(UsageError, match="another corpus's vocabulary"):
        check_compatible(CHECKPOINT, "model.pt", CONFIG, "abd")


def test_dropout_is_not_part_of_the_shape():
    check_compatible(CHECKPOINT, "model.pt", dataclasses.replace(CONFIG, dropout=0.2, attn_dropout=0.1), "abc")


def one_step() -> tuple[dict, dict, dict]:
    """The weights, optimiser state (with Adam's moments and Muon's momentum) and train_config after a step."""
    cfg, _ = resolve({"n_layer": 2, "n_head": 2, "n_embd": 8, "block_size": 8})
    model = GPT(CONFIG)
    optimizer = make_optimizer(model, cfg)
    x = torch.randint(0, 3, (2, 8))
    next_token_loss(model(x), x).backward()
    optimizer.step()
    return model.state_dict(), optimizer.state_dict(), cfg.to_dict()


WEIGHTS, OPTIMIZER, TRAIN_CONFIG = one_step()


def a_checkpoint(**extra) -> dict:
    values = {"model": WEIGHTS, "training_weights": WEIGHTS, "model_config": CONFIG.to_dict(), "vocab": "abc",
              "step": 7, "optimizer": OPTIMIZER, "train_config": TRAIN_CONFIG, **extra}
    assert set(REQUIRED_KEYS) <= set(values)
    return values


def with_muon_moment(moment: torch.Tensor) -> dict:
    state = copy.deepcopy(OPTIMIZER)
    state["muon"]["state"][0]["momentum_buffer"] = moment
    return state


def test_save_then_load_round_trips(tmp_path):
    saved = a_checkpoint(losses={"train": 1.5, "val": 1.75})
    save(tmp_path / "model.pt", saved)
    loaded = load(tmp_path / "model.pt")
    assert loaded["format"] == FORMAT
    assert set(loaded) == {"format", *saved}
    assert all(torch.equal(loaded["model"][name], weight) for name, weight in saved["model"].items())
    assert {k: loaded[k] for k in ("model_config", "vocab", "step", "train_config", "losses")} == \
        {k: saved[k] for k in ("model_config", "vocab", "step", "train_config", "losses")}
    moments = loaded["optimizer"]["muon"]["state"][0]["momentum_buffer"]
    assert torch.equal(moments, saved["optimizer"]["muon"]["state"][0]["momentum_buffer"])
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]  # no temporary file left


@pytest.mark.parametrize("key", REQUIRED_KEYS)
def test_load_names_a_missing_required_key(tmp_path, key):
    partial = a_checkpoint()
    del partial[key]
    save(tmp_path / "model.pt", partial)
    with pytest.raises(UsageError) as caught:
        load(tmp_path / "model.pt")
    assert f"checkpoint {tmp_path / 'model.pt'} lacks '{key}'" in str(caught.value)


def test_load_refuses_a_dict_of_another_program(tmp_path):
    torch.save(a_checkpoint(), tmp_path / "other.pt")  # no "format" key
    with pytest.raises(UsageError, match="is not a checkpoint of this trainer"):
        load(tmp_path / "other.pt")


def test_load_of_a_truncated_file_is_a_usage_error(tmp_path):
    save(tmp_path / "model.pt", a_checkpoint())
    data = (tmp_path / "model.pt").read_bytes()
    (tmp_path / "model.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(UsageError, match="is corrupt or truncated"):
        load(tmp_path / "model.pt")


def test_a_checkpoint_with_the_old_random_state_entry_still_loads(tmp_path):
    save(tmp_path / "model.pt", a_checkpoint(rng={"torch": torch.get_rng_state()}))
    assert load(tmp_path / "model.pt")["step"] == 7


def without(mapping: dict, key: str) -> dict:
    return {k: v for k, v in mapping.items() if k != key}


@pytest.mark.parametrize("change, words", [
    (dict(step="12"), "'step' is '12'"),
    (dict(step=True), "'step' is True"),
    (dict(optimizer={}), "'optimizer' holds no optimiser state"),
    (dict(optimizer={"adamw": {}, "muon": {"state": {}, "param_groups": []}}), "'optimizer' holds no"),
    (dict(model=[]), "'model' is a list"),
    (dict(vocab="abcd"), "a vocabulary of 4 characters for a model of 3"),
    (dict(model_config={**CONFIG.to_dict(), "n_head": 3}), "'model_config' describes no model"),
    (dict(model=without(GPT(CONFIG).state_dict(), "lm_head.bias")), "weight lm_head.bias missing"),
    (dict(model={**GPT(CONFIG).state_dict(), "extra": torch.zeros(1)}), "weight extra unexpected"),
    (dict(model={**GPT(CONFIG).state_dict(), "lm_head.bias": torch.zeros(2)}), "lm_head.bias is not a tensor"),
    (dict(training_weights=without(GPT(CONFIG).state_dict(), "ln_f.bias")), "'training_weights': weight ln_f.bias"),
    (dict(training_weights=7), "'training_weights' is a int"),
    (dict(model={**WEIGHTS, "ln_f.bias": torch.full((8,), math.nan)}), "weight ln_f.bias holds NaN"),
    (dict(optimizer=with_muon_moment(torch.zeros(3))), "momentum_buffer of blocks.0.attn.qkv.weight is not a tensor"),
    (dict(optimizer={"adamw": OPTIMIZER["adamw"]}), "'optimizer' lacks the 'muon' state its train_config uses"),
    (dict(optimizer={**OPTIMIZER, "muon": OPTIMIZER["adamw"]}), "'muon' holds 20 parameters where its train_config"),
    (dict(train_config={}), "'train_config': it lacks 'steps'"),
    (dict(train_config={**TRAIN_CONFIG, "steps": "300"}), "'train_config': 'steps' is '300', not a value --steps"),
    (dict(train_config={**TRAIN_CONFIG, "lr": math.nan}), "'lr' is nan, not a value --lr takes"),
    (dict(train_config={**TRAIN_CONFIG, "recipe": "sgd"}), "'recipe' is 'sgd'"),
])
def test_validate_names_what_is_wrong_inside(tmp_path, change, words):
    assert validate(a_checkpoint()) is None
    assert words in validate(a_checkpoint(**change))
    save(tmp_path / "model.pt", a_checkpoint(**change))
    with pytest.raises(UsageError, match="is damaged"):
        load(tmp_path / "model.pt")


def test_an_averaged_run_without_its_training_weights_is_damaged():
    # Resuming from the average alone would silently continue from other weights than the run's.
    assert "an --ema-decay but it lacks 'training_weights'" in validate(without(a_checkpoint(), "training_weights"))
    assert validate(without(a_checkpoint(train_config={**TRAIN_CONFIG, "ema_decay": 0.0}), "training_weights")) is None


def test_load_tells_what_a_path_is_when_it_is_no_checkpoint(tmp_path):
    (tmp_path / "model.json").write_text("{}")
    for path, words in ((tmp_path, "is a directory, not a file"), (tmp_path / "none.pt", "does not exist"),
                        (tmp_path / "model.json", "is not a checkpoint (torch.save writes a zip archive")):
        with pytest.raises(UsageError) as caught:
            load(path)
        assert words in str(caught.value) and "corrupt" not in str(caught.value)
