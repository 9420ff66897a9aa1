"""trainer.optim: which parameters each optimiser takes, Newton-Schulz, Muon's step and its state."""

import copy

import pytest
import torch

from model import GPT, GPTConfig, next_token_loss
from trainer.config import parse
from trainer.optim import make_optimizer, muon_matrices, newton_schulz, newton_schulz_gram, orthogonalize, pieces


def model_and_optimizer(*flags: str):
    torch.manual_seed(0)
    model = GPT(GPTConfig())
    return model, make_optimizer(model, parse(list(flags))[0])


def optimised(optimizer, name: str) -> list[torch.nn.Parameter]:
    return [p for group in optimizer.optimizers[name].param_groups for p in group["params"]]


def test_every_parameter_is_in_exactly_one_optimiser():
    model, optimizer = model_and_optimizer()
    muon, adamw = optimised(optimizer, "muon"), optimised(optimizer, "adamw")
    ids = [id(p) for p in muon + adamw]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))


def test_muon_takes_the_blocks_matrices_and_adamw_the_rest():
    model, optimizer = model_and_optimizer()
    names = {id(p): name for name, p in model.named_parameters()}
    muon = sorted(names[id(p)] for p in optimised(optimizer, "muon"))
    assert muon == sorted(f"blocks.{i}.{m}.weight" for i in range(4) for m in ("attn.qkv", "attn.proj", "mlp.fc",
                                                                               "mlp.proj"))
    adamw = {names[id(p)] for p in optimised(optimizer, "adamw")}
    assert {"tok_emb.weight", "pos_emb.weight", "lm_head.weight", "lm_head.bias", "ln_f.weight"} <= adamw
    assert all(p.dim() == 2 for p in optimised(optimizer, "muon"))


@pytest.mark.parametrize("recipe", ["adamw", "course"])
def test_the_adam_recipes_leave_muon_out(recipe):
    model, optimizer = model_and_optimizer("--recipe", recipe)
    assert list(optimizer.optimizers) == ["adamw"]
    assert len(optimised(optimizer, "adamw")) == len(list(model.parameters()))


def test_qkv_is_orthogonalised_as_its_three_matrices():
    model, optimizer = model_and_optimizer()
    qkv = model.blocks[0].attn.qkv.weight
    group = next(g for g in optimizer.optimizers["muon"].param_groups if any(p is qkv for p in g["params"]))
    assert group["split"] == 3 and [m.shape for m in pieces(qkv, 3)] == [(128, 128)] * 3
    assert pieces(model.blocks[0].mlp.fc.weight, 1)[0].shape == (128, 512)  # (512, 128) seen wide


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_newton_schulz_brings_every_singular_value_near_one(dtype):
    g = torch.randn(3, 64, 256) * torch.logspace(-1, 1, 64)[:, None]  # singular values over two decades
    s = torch.linalg.svdvals(orthogonalize(g, dtype).float())
    assert s.min() > 0.5 and s.max() < 1.3, (s.min(), s.max())


def test_the_gram_form_of_newton_schulz_is_the_same_iteration():
    x = torch.randn(4, 32, 128, dtype=torch.float64) * torch.logspace(-2, 0, 32, dtype=torch.float64)[:, None]
    x = x / x.norm(dim=(1, 2), keepdim=True)
    torch.testing.assert_close(newton_schulz_gram(x), newton_schulz(x), rtol=1e-9, atol=1e-9)


def test_a_step_moves_each_matrix_by_an_orthogonal_update_of_size_lr():
    model, optimizer = model_and_optimizer("--muon-lr", "0.01", "--muon-weight-decay", "0")
    proj = model.blocks[1].attn.proj.weight
    before = proj.detach().clone()
    x = torch.randint(0, 65, (2, 16))
    next_token_loss(model(x), x).backward()
    optimizer.step()
    s = torch.linalg.svdvals((before - proj.detach()) / 0.01)
    # The gradient of 32 positions has rank <= 32: its directions move by about 1, the rest not at all.
    assert s[:8].min() > 0.5 and s.max() < 1.3 and s[40:].max() < 1e-3


def test_state_dict_round_trip_holds_the_momentum_buffers():
    model, optimizer = model_and_optimizer()
    x = torch.randint(0, 65, (2, 16))
    next_token_loss(model(x), x).backward()
    optimizer.step()
    state = copy.deepcopy(optimizer.state_dict())
    assert set(state) == {"adamw", "muon"}
    assert len(state["muon"]["state"]) == len(muon_matrices(model))
    other_model, other = model_and_optimizer()
    other.load_state_dict(state, optimizer.names)
    buffers = [s["momentum_buffer"] for s in other.optimizers["muon"].state.values()]
    assert len(buffers) == 16 and all(torch.equal(a, b["momentum_buffer"])
                                      for a, b in zip(buffers, state["muon"]["state"].values()))


def test_the_lr_scale_applies_to_each_groups_own_peak():
    model, optimizer = model_and_optimizer("--lr", "0.002", "--muon-lr", "0.02", "--embed-lr", "0.006",
                                           "--head-lr", "0.001")
    optimizer.set_lr_scale(0.5)
    lr_of = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    names = {name: lr_of[id(p)] for name, p in model.named_parameters()}
    assert (names["tok_emb.weight"], names["pos_emb.weight"], names["lm_head.weight"]) == (0.003, 0.003, 0.0005)
    assert names["lm_head.bias"] == names["ln_f.weight"] == names["blocks.0.ln1.weight"] == 0.001
    assert {lr for name, lr in names.items() if name.endswith(("qkv.weight", "fc.weight"))} == {0.01}


def test_embeddings_and_head_at_lr_share_one_group_with_the_other_matrices():
    model, optimizer = model_and_optimizer("--recipe", "adamw")
    groups = optimizer.optimizers["adamw"].param_groups
    assert len(groups) == 2 and {g["lr"] for g in groups} == {0.002}
    assert {id(model.tok_emb.weight), id(model.lm_head.weight), id(model.blocks[0].attn.qkv.weight)} <= {
        id(p) for p in groups[0]["params"]}


def stepped(*flags: str):
    model, optimizer = model_and_optimizer(*flags)
    x = torch.randint(0, 65, (2, 16))
    next_token_loss(model(x), x).backward()
    optimizer.step()
    return model, optimizer


def state_of(model, optimizer, name: str) -> dict:
    param = dict(model.named_parameters())[name]
    return next((opt.state[param] for opt in optimizer.optimizers.values() if param in opt.state), {})


def test_loaded_moments_train_with_this_runs_settings():
    _, saved = stepped()
    model, optimizer = model_and_optimizer("--lr", "0.001", "--muon-momentum", "0.9", "--beta2", "0.95")
    optimizer.load_state_dict(copy.deepcopy(saved.state_dict()), saved.names)
    assert {g["peak_lr"] for g in optimizer.optimizers["adamw"].param_groups} >= {0.001}
    assert {g["momentum"] for g in optimizer.optimizers["muon"].param_groups} == {0.9}
    assert {g["betas"] for g in optimizer.optimizers["adamw"].param_groups} == {(0.9, 0.95)}
    assert torch.equal(state_of(model, optimizer, "blocks.0.attn.qkv.weight")["momentum_buffer"],
                       saved.state_dict()["muon"]["state"][0]["momentum_buffer"])


@pytest.mark.parametrize("before, after", [((), ("--recipe", "adamw")), (("--recipe", "adamw"), ()),
                                           ((), ("--muon-lr", "0")), ((), ("--recipe", "course"))])
def test_another_layout_carries_the_moments_of_the_parameters_that_keep_their_optimiser(before, after):
    saved_model, saved = stepped(*before)
    model, optimizer = model_and_optimizer(*after)
    optimizer.load_state_dict(copy.deepcopy(saved.state_dict()), saved.names)
    for name in ("tok_emb.weight", "lm_head.bias"):  # AdamW's in every recipe
        assert torch.equal(state_of(model, optimizer, name)["exp_avg"], state_of(saved_model, saved, name)["exp_avg"])
    assert state_of(model, optimizer, "blocks.0.mlp.fc.weight") == {}  # changed optimiser: starts afresh
    x = torch.randint(0, 65, (2, 16))
    next_token_loss(model(x), x).backward()
    optimizer.step()
