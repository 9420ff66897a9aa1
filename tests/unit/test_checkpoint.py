"""trainer.checkpoint: the schema saved and loaded whole, what validate refuses, the upgrade of the
earlier format, and the shape check of --resume."""

import copy
import dataclasses
import math

import pytest
import torch

from common.cli import UsageError
from model import GPT, GPTConfig, next_token_loss
from trainer.checkpoint import (
    EARLIER_FORMAT,
    FORMAT,
    REQUIRED_KEYS,
    Checkpoint,
    check_compatible,
    load,
    save,
    upgrade,
    validate,
)
from trainer.config import resolve
from trainer.optim import make_optimizer

CONFIG = GPTConfig(vocab_size=3, block_size=8, n_layer=2, n_head=2, n_embd=8)


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
    """The entries of a checkpoint of FORMAT after one step, less "format", with `extra` over them."""
    values = {"model": WEIGHTS, "training_weights": WEIGHTS, "model_config": CONFIG.to_dict(), "vocab": "abc",
              "step": 7, "optimizer": OPTIMIZER, "train_config": TRAIN_CONFIG, **extra}
    assert set(REQUIRED_KEYS) <= set(values)
    return values


def write(path, entries: dict, format: str = FORMAT) -> None:
    """A model.pt holding `entries` as they are, which save() would not write (being a Checkpoint's)."""
    torch.save({"format": format, **entries}, path)


TRAINED = Checkpoint(**a_checkpoint())


def test_same_shape_and_vocab_is_compatible():
    check_compatible(TRAINED, "model.pt", CONFIG, "abc")


def test_another_n_layer_names_the_field_and_the_flag():
    with pytest.raises(UsageError) as caught:
        check_compatible(TRAINED, "model.pt", dataclasses.replace(CONFIG, n_layer=3), "abc")
    message = str(caught.value)
    assert "model.pt" in message
    assert "n_layer=2" in message and "n_layer=3" in message
    assert "pass --n-layer 2" in message


def test_another_vocab_size_asks_for_the_training_corpus():
    expected = "vocab_size=3 but this run has vocab_size=4: use the corpus it was trained on"
    with pytest.raises(UsageError, match=expected):
        check_compatible(TRAINED, "model.pt", dataclasses.replace(CONFIG, vocab_size=4), "abcd")


def test_another_vocabulary_of_the_same_size_is_refused():
    with pytest.raises(UsageError, match="another corpus's vocabulary"):
        check_compatible(TRAINED, "model.pt", CONFIG, "abd")


def test_dropout_is_not_part_of_the_shape():
    check_compatible(TRAINED, "model.pt", dataclasses.replace(CONFIG, dropout=0.2, attn_dropout=0.1), "abc")


def with_muon_moment(moment: torch.Tensor) -> dict:
    state = copy.deepcopy(OPTIMIZER)
    state["muon"]["state"][0]["momentum_buffer"] = moment
    return state


def test_save_then_load_round_trips(tmp_path):
    saved = Checkpoint(**a_checkpoint(losses={"train": 1.5, "val": 1.75}, world_size=2, run_id="run",
                                      trained_on={"corpus": "input.txt", "dtype": "bf16"}))
    save(tmp_path / "model.pt", saved)
    on_disk = torch.load(tmp_path / "model.pt", weights_only=True)
    assert on_disk["format"] == FORMAT == "shakespeare-gpt/2"
    assert set(on_disk) == {"format", *(f.name for f in dataclasses.fields(Checkpoint))}
    loaded = load(tmp_path / "model.pt")
    for name in ("model", "training_weights"):
        weights = getattr(loaded, name)
        assert weights.keys() == WEIGHTS.keys() and all(torch.equal(weights[k], w) for k, w in WEIGHTS.items())
    assert (loaded.model_config, loaded.vocab, loaded.step, loaded.train_config, loaded.losses, loaded.world_size,
            loaded.run_id, loaded.trained_on) == (CONFIG.to_dict(), "abc", 7, TRAIN_CONFIG, {"train": 1.5, "val": 1.75},
                                                  2, "run", {"corpus": "input.txt", "dtype": "bf16"})
    moments = loaded.optimizer["muon"]["state"][0]["momentum_buffer"]
    assert torch.equal(moments, saved.optimizer["muon"]["state"][0]["momentum_buffer"])
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]  # no temporary file left


def test_an_unaveraged_run_saves_its_weights_once(tmp_path):
    # At --ema-decay 0 the average is the weights themselves: no training_weights entry, and the
    # optimiser resumes from "model".
    saved = Checkpoint(**without(a_checkpoint(train_config={**TRAIN_CONFIG, "ema_decay": 0.0}), "training_weights"))
    save(tmp_path / "model.pt", saved)
    assert "training_weights" not in torch.load(tmp_path / "model.pt", weights_only=True)
    loaded = load(tmp_path / "model.pt")
    assert loaded.training_weights is None and loaded.stepped_weights is loaded.model


@pytest.mark.parametrize("key", REQUIRED_KEYS)
def test_load_names_a_missing_required_key(tmp_path, key):
    write(tmp_path / "model.pt", without(a_checkpoint(), key))
    with pytest.raises(UsageError) as caught:
        load(tmp_path / "model.pt")
    assert f"checkpoint {tmp_path / 'model.pt'} lacks '{key}'" in str(caught.value)


def test_load_refuses_a_dict_of_another_program(tmp_path):
    torch.save(a_checkpoint(), tmp_path / "other.pt")  # no "format" key
    with pytest.raises(UsageError, match="is not a checkpoint of this trainer"):
        load(tmp_path / "other.pt")


def test_load_refuses_a_format_it_does_not_know(tmp_path):
    write(tmp_path / "model.pt", a_checkpoint(), format="shakespeare-gpt/3")
    with pytest.raises(UsageError, match="is not a checkpoint of this trainer"):
        load(tmp_path / "model.pt")


def test_load_of_a_truncated_file_is_a_usage_error(tmp_path):
    save(tmp_path / "model.pt", Checkpoint(**a_checkpoint()))
    data = (tmp_path / "model.pt").read_bytes()
    (tmp_path / "model.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(UsageError, match="is corrupt or truncated"):
        load(tmp_path / "model.pt")


def without(mapping: dict, *keys: str) -> dict:
    return {k: v for k, v in mapping.items() if k not in keys}


# What a run before Muon, the embeddings' own rate and the average wrote: one AdamW's state, a
# train_config without those fields (recipe "tuned"), and the random state.
BEFORE_MUON = resolve({"recipe": "adamw", "ema_decay": 0.0, "n_layer": 2, "n_head": 2, "n_embd": 8, "block_size": 8})[0]


def an_earlier_checkpoint() -> dict:
    model = GPT(CONFIG)
    adamw = make_optimizer(model, BEFORE_MUON).state_dict()["adamw"]
    train_config = without(BEFORE_MUON.to_dict(), "muon_lr", "embed_lr", "head_lr", "ema_decay", "muon_momentum",
                           "muon_weight_decay") | {"recipe": "tuned"}
    return {"format": EARLIER_FORMAT, "model": model.state_dict(), "model_config": CONFIG.to_dict(), "vocab": "abc",
            "step": 7, "optimizer": adamw, "train_config": train_config, "rng": {"torch": torch.get_rng_state()}}


def test_upgrade_fills_in_what_the_earlier_format_lacks():
    earlier = an_earlier_checkpoint()
    upgraded = upgrade(earlier)
    assert validate(earlier) is not None and validate(upgraded) is None
    assert upgraded["format"] == FORMAT and "rng" not in upgraded
    assert upgraded["optimizer"] == {"adamw": earlier["optimizer"]}
    config = upgraded["train_config"]
    assert (config["recipe"], config["muon_lr"], config["embed_lr"], config["head_lr"], config["ema_decay"]) == \
        ("adamw", 0.0, 0.0, 0.0, 0.0)  # what the run trained with: AdamW alone at one rate, no average
    assert (config["muon_momentum"], config["muon_weight_decay"]) == (resolve({})[0].muon_momentum,
                                                                    resolve({})[0].muon_weight_decay)
    assert {k: v for k, v in config.items() if k in earlier["train_config"] and k != "recipe"} == \
        without(earlier["train_config"], "recipe")  # what it held stays
    assert upgrade(upgraded) == upgraded and upgrade(a_checkpoint()) == a_checkpoint()  # FORMAT, or not ours


def test_upgrade_of_a_run_from_before_the_embeddings_own_rate_keeps_its_muon():
    earlier = {"format": EARLIER_FORMAT, **a_checkpoint(train_config=without(TRAIN_CONFIG, "embed_lr", "head_lr"))}
    config = upgrade(earlier)["train_config"]
    assert (config["muon_lr"], config["embed_lr"], config["head_lr"]) == (TRAIN_CONFIG["muon_lr"], 0.0, 0.0)


def test_upgrade_keeps_what_a_later_earlier_format_checkpoint_holds():
    # The trainer wrote every field under the earlier format too before FORMAT: nothing of it is replaced,
    # and the corpus and dtype its train_config held then are what the model card names.
    old_config = {**TRAIN_CONFIG, "ema_decay": 0.5, "data": "data/input.txt", "dtype": "bf16"}
    earlier = {"format": EARLIER_FORMAT, **a_checkpoint(train_config=old_config)}
    assert upgrade(earlier) == {**earlier, "format": FORMAT,
                                "trained_on": {"corpus": "data/input.txt", "dtype": "bf16"}}


def test_a_checkpoint_of_the_earlier_format_loads_and_resumes_its_optimiser(tmp_path):
    torch.save(an_earlier_checkpoint(), tmp_path / "model.pt")
    loaded = load(tmp_path / "model.pt")
    assert loaded.step == 7 and loaded.train_config["muon_lr"] == 0.0 and loaded.stepped_weights is loaded.model
    optimizer = make_optimizer(GPT(CONFIG), resolve({}, loaded.train_config)[0])  # what a --resume builds
    assert list(optimizer.optimizers) == ["adamw"]


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
    (dict(losses=[1.5]), "'losses' is a list, not a dict"),
    (dict(optimizer=OPTIMIZER["adamw"]), "'optimizer' holds no optimiser state"),  # one AdamW's: the earlier format
    (dict(train_config=without(TRAIN_CONFIG, "ema_decay")), "'train_config': it lacks 'ema_decay'"),
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
    write(tmp_path / "model.pt", a_checkpoint(**change))
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
