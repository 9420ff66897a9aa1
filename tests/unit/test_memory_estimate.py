"""trainer.memory: the estimate of a step's memory and the one-line refusal of what cannot fit."""

import pytest

from common.cli import UsageError
from model import GPT, GPTConfig, count_parameters
from trainer.memory import check_fits, machine_bytes, step_bytes

GIB = 2 ** 30


def test_the_estimate_counts_the_parameters_and_grows_with_the_batch():
    config = GPTConfig()
    fixed = 24 * count_parameters(GPT(config))  # weight, average, gradient, AdamW's two moments, DDP bucket
    one, two = step_bytes(config, 16) - fixed, step_bytes(config, 32) - fixed
    assert one > 0 and two == 2 * one
    # measured: 5.6 MB of resident memory per window of the default model; the estimate may be above, not far below
    assert 5.0e6 <= one / 16 <= 8e6


def test_what_fits_passes_and_what_does_not_is_one_line_naming_the_estimate():
    check_fits(GPTConfig(), 32, 2, 24 * GIB)
    check_fits(GPTConfig(n_embd=100_000), 32, 1, None)  # no figure for the machine: nothing refused
    with pytest.raises(UsageError) as caught:
        check_fits(GPTConfig(), 100_000_000, 1, 24 * GIB)
    assert "needs about" in str(caught.value) and "24.0 GB" in str(caught.value) and "--batch-size" in str(caught.value)


def test_machine_memory_is_read_from_meminfo(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24576000 kB\nMemFree:        1000 kB\n")
    assert machine_bytes(meminfo) == 24576000 * 1024
    assert machine_bytes(tmp_path / "none") is None
