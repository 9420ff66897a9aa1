"""The model and the DDP trainer: parameter count, first loss, DDP gradients, world-size invariance, reload."""

import math
import sys

import pytest
import torch

from common.dist_env import DistEnv
from model import GPT, GPTConfig, count_parameters, next_token_loss
from tests.conftest import QUICK, ROOT, STEPS, eval_records, run, step_losses, train_cmd
from trainer import checkpoint
from trainer.config import TrainConfig
from trainer.data import Batches, load_corpus
from trainer.train import Trainer


def test_parameter_count_is_the_courses():
    assert count_parameters(GPT(GPTConfig())) == 824_897


def test_first_loss_is_near_ln_65(corpus):
    data = load_corpus(corpus, 128)
    assert len(data.vocab) == 65
    torch.manual_seed(0)
    model = GPT(GPTConfig())
    x, y = Batches(data.train, seed=0, batch_size=32, block_size=128).draw("train", 1)
    assert abs(next_token_loss(model(x), y).item() - math.log(65)) < 0.15


def test_batches_are_one_global_sample_sliced_by_rank(corpus):
    data = load_corpus(corpus, 128).train
    whole_x, whole_y = Batches(data, seed=5, batch_size=32, block_size=128).draw("train", 7)
    parts = [Batches(data, seed=5, batch_size=32, block_size=128, rank=r, world_size=4).draw("train", 7)
             for r in range(4)]
    assert torch.equal(torch.cat([p[0] for p in parts]), whole_x)
    assert torch.equal(torch.cat([p[1] for p in parts]), whole_y)
    assert torch.equal(whole_x[:, 1:], whole_y[:, :-1])  # targets are the inputs shifted by one
    other_x, _ = Batches(data, seed=5, batch_size=32, block_size=128).draw("train", 8)
    assert not torch.equal(other_x, whole_x)


@pytest.fixture(scope="module")
def ddp_check(corpus) -> dict[str, list[float]]:
    """tests/ddp_gradient_check.py at NPROC=2: its `name value` lines, by name."""
    result = run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                  str(ROOT / "tests" / "ddp_gradient_check.py"), str(corpus)], timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    values: dict[str, list[float]] = {}
    for name, value in (line.split() for line in result.stdout.splitlines() if line.strip()):
        values.setdefault(name, []).append(float(value))
    return values


def test_ddp_gradient_at_nproc_2_equals_single_process_gradient(ddp_check):
    diffs = ddp_check["max_abs_diff"]
    assert len(diffs) == 2, ddp_check  # both ranks compared
    assert max(diffs) < 1e-5


def test_bf16_gradient_compression_all_reduces_bf16_values_close_to_the_fp32_gradient(ddp_check):
    # Every element a bf16 value: the hook ran, an fp32 average almost never is one. Each rank's
    # half is rounded to bf16 (relative error up to 2^-9) and so is their sum: measured 2.35e-3 of
    # the gradient's norm, held to 2^-7 (a hook that lost a rank's half would be near 0.5 or more).
    assert ddp_check["compressed_in_bf16"] == [1]
    assert ddp_check["compressed_rel_diff"][0] < 2 ** -7


def test_newton_schulz_shared_out_across_ranks_equals_one_rank_doing_it_all(ddp_check):
    # Each rank orthogonalises its share of each stack and one all-gather brings them together;
    # a share in the wrong place, or the padding left in, differs by about 1.
    diffs = ddp_check["shared_ns_diff"]
    assert len(diffs) == 2, ddp_check  # fp32 and bf16
    assert max(diffs) < 1e-5


def test_shutdown_leaves_no_gloo_thread_running(ddp_check):
    # Left running into interpreter shutdown, they abort a finished rank now and then (SIGABRT).
    assert ddp_check["gloo_threads_left"] == [0]


# fp32: the same sums in another order, so float rounding only, over the 12 steps of the runs the
# fault tests compare with (a batch of 8 windows, where one window weighs more than in the trainer's
# 32: measured 1.2e-4 apart at most, held to 5e-4). bf16: each rank's products are rounded to bf16
# before the gradients are summed, so the curves may part by more; measured here, 6e-5 at most over
# 10 steps at NPROC=2, held to 1e-3. bf16 runs 3 steps (two updates) of a batch of 8: where the CPU
# has no native bf16 it is emulated, about 15 times slower than fp32.


def test_fp32_loss_curves_agree_across_process_counts(reference_run):
    curves = {nproc: step_losses(reference_run(nproc)) for nproc in (1, 2, 4)}
    assert sorted(curves[1]) == list(range(1, STEPS + 1))
    assert abs(curves[1][1] - math.log(65)) < 0.15  # the trainer's own first-step loss
    assert curves[1][STEPS] < curves[1][1] - 0.5  # it learns
    for nproc in (2, 4):
        for step, loss in curves[1].items():
            assert abs(curves[nproc][step] - loss) < 5e-4, (nproc, step, curves[nproc][step], loss)


def test_bf16_loss_curves_agree_across_process_counts(corpus, tmp_path):
    curves = {}
    for nproc in (1, 2):
        out = tmp_path / str(nproc)
        args = ["--data", corpus, "--out", out, "--steps", 3, "--eval-every", 3, "--batch-size", 8, "--dtype", "bf16",
                *QUICK]
        result = run(train_cmd(nproc, *args), timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        curves[nproc] = step_losses(out)
    assert sorted(curves[1]) == [1, 2, 3]
    assert curves[1][3] < curves[1][1] - 0.2  # it learns
    for step, loss in curves[1].items():
        assert abs(curves[2][step] - loss) < 1e-3, (step, curves[2][step], loss)


def test_bf16_gradient_compression_flag_trains_close_to_the_uncompressed_run(reference_run):
    # The flag from the command line to DDP: the curve leaves the fp32 one (the hook ran), by bf16's
    # rounding of the gradients only: measured over the 12 steps at NPROC=2, 2.8e-4 at most.
    plain = step_losses(reference_run(2))
    compressed = step_losses(reference_run(2, "--grad-compression", "bf16"))
    assert sorted(compressed) == sorted(plain) == list(range(1, STEPS + 1))
    diffs = [abs(compressed[step] - loss) for step, loss in plain.items()]
    assert 0 < max(diffs) < 2e-3, diffs


def test_checkpoint_reloads_into_a_fresh_model_with_the_same_val_loss(trained_run, corpus):
    saved = checkpoint.load(trained_run / "model.pt")
    assert saved.step == 60 and len(saved.vocab) == 65
    cfg = TrainConfig(**saved.train_config)
    trainer = Trainer(cfg, DistEnv(), load_corpus(corpus, cfg.block_size), saved)
    fresh = GPT(GPTConfig.from_dict(saved.model_config))
    fresh.load_state_dict(saved.model)
    for name, tensor in fresh.state_dict().items():  # "model" is the weights' average; the others resume
        assert torch.equal(tensor, trainer.average.model.state_dict()[name])
        assert torch.equal(saved.training_weights[name], trainer.raw_model.state_dict()[name])
    losses = trainer.evaluate(saved.step)
    assert losses["val"] == pytest.approx(saved.losses["val"], abs=1e-6)
    assert losses["val"] == pytest.approx(eval_records(trained_run)[-1]["val_loss"], abs=1e-5)

