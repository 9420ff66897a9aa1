"""The model's attention against PyTorch's reference, and the choice of dtype: no processes, milliseconds."""

import pytest
import torch
import torch.nn.functional as F

from model import GPT, GPTConfig
from model.gpt import causal_attention, causal_bias
from trainer.precision import cpu_flags, cpuinfo_field, resolve_dtype


@pytest.mark.parametrize("T", [1, 7, 128])
def test_attention_equals_sdpa_in_fp32_forward_and_gradients(T):
    torch.manual_seed(0)
    q, k, v = (torch.randn(8, T, 32, requires_grad=True) for _ in range(3))
    bias = causal_bias(T)
    ours = causal_attention(q, k, v, bias)
    reference = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert (ours - reference).abs().max() < 1e-5
    grad_out = torch.randn_like(ours)
    for a, b in zip(torch.autograd.grad(ours, (q, k, v), grad_out),
                    torch.autograd.grad(reference, (q, k, v), grad_out)):
        assert (a - b).abs().max() < 1e-5


def test_a_later_position_never_changes_an_earlier_output():
    torch.manual_seed(0)
    model = GPT(GPTConfig()).eval()
    idx = torch.randint(0, 65, (1, 20))
    changed = idx.clone()
    changed[0, 10:] = (changed[0, 10:] + 1) % 65
    with torch.no_grad():
        assert torch.allclose(model(idx)[0, :10], model(changed)[0, :10], atol=1e-6)
        assert not torch.allclose(model(idx)[0, 10:], model(changed)[0, 10:], atol=1e-3)


def test_bf16_autocast_stays_close_to_fp32():
    torch.manual_seed(0)
    model = GPT(GPTConfig())
    idx = torch.randint(0, 65, (4, 128))
    with torch.no_grad():
        exact = model(idx)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            approx = model(idx).float()
    assert (approx - exact).abs().max() < 0.05 * exact.abs().max() + 1e-2


def test_the_state_dict_holds_parameters_only():
    # Checkpoints written before the explicit attention load unchanged: nothing was added.
    model = GPT(GPTConfig())
    assert set(model.state_dict()) == {name for name, _ in model.named_parameters()}


@pytest.mark.parametrize("flags, expected", [
    ({"avx2", "avx512f", "avx512_bf16"}, "bf16"),
    ({"avx2", "amx_tile", "amx_bf16"}, "bf16"),
    ({"avx2", "avx512f"}, "fp32"),
    (set(), "fp32"),
])
def test_auto_dtype_follows_the_cpu_flags(flags, expected):
    dtype, why = resolve_dtype("auto", flags)
    if expected == "bf16" and not torch.backends.mkldnn.is_available():
        expected = "fp32"
    assert dtype == expected and "auto" in why


@pytest.mark.parametrize("requested", ["fp32", "bf16"])
def test_an_explicit_dtype_wins_over_the_cpu(requested):
    assert resolve_dtype(requested, {"avx512_bf16"})[0] == requested
    assert resolve_dtype(requested, set())[0] == requested


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512_bf16\n\nprocessor\t: 1\nflags\t\t: fpu\n")
    assert cpu_flags(cpuinfo) == {"fpu", "avx2", "avx512_bf16"}
    assert cpu_flags(tmp_path / "missing") == set()
    assert cpuinfo_field("processor", cpuinfo) == "0"
    assert cpuinfo_field("model name", cpuinfo) is None
