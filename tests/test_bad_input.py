"""Bad input: one line naming the problem and the fix, exit status 2, no traceback, nothing half-written."""

import shutil
import subprocess
import sys

import pytest

from tests.conftest import QUICK, ROOT, assert_one_line_error, child_env, run, trainer_cmd

SHORT_RUN = ["--steps", 2, "--eval-every", 2, *QUICK]


def train(tmp_path, *args, **env):
    return run(trainer_cmd(None, "--out", tmp_path / "out", *args), cwd=tmp_path, **env)


def assert_nothing_written(tmp_path):
    out = tmp_path / "out"
    assert not out.exists() or list(out.iterdir()) == []


@pytest.mark.parametrize("name, content, words", [
    ("empty.txt", b"", ["is empty", "--data"]),
    ("latin1.txt", "Ça ira, Roméo".encode("latin-1") * 100, ["not UTF-8", "convert it"]),
    ("short.txt", b"To be, or not to be.\n" * 20, ["too short", "--block-size"]),
])
def test_unusable_corpus(tmp_path, name, content, words):
    corpus = tmp_path / name
    corpus.write_bytes(content)
    assert_one_line_error(train(tmp_path, "--data", corpus, *SHORT_RUN), str(corpus), *words)
    assert_nothing_written(tmp_path)


def test_missing_corpus(tmp_path):
    result = train(tmp_path, "--data", tmp_path / "nowhere.txt", *SHORT_RUN)
    assert_one_line_error(result, "nowhere.txt", "does not exist", "--data")


def test_offline_without_the_corpus_says_where_to_put_it(tmp_path):
    # No data/ in this working directory and a download address that refuses at once.
    result = train(tmp_path, *SHORT_RUN, TINYSHAKESPEARE_URL="http://127.0.0.1:9/input.txt")
    assert_one_line_error(result, "cannot download", "data/tinyshakespeare.txt", "--data PATH (DATA= for make)")
    assert not (tmp_path / "data" / "tinyshakespeare.txt").exists()


def test_any_utf8_corpus_trains_with_its_own_vocabulary(tmp_path):
    corpus = tmp_path / "ode.txt"
    corpus.write_text("Ó ode, ἀοιδή, сонет — 詩!\n" * 400, encoding="utf-8")
    result = train(tmp_path, "--data", corpus, "--block-size", 32, *SHORT_RUN)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"vocab {len(set(corpus.read_text()))}" in result.stdout


def test_world_size_that_does_not_divide_the_batch(tmp_path, corpus):
    result = subprocess.run(["make", "--no-print-directory", "train", "NPROC=3", f"DATA={corpus}",
                             f"OUT={tmp_path / 'out'}", "STEPS=2"], cwd=ROOT, env=child_env(),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    error = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(error) == 1 and "32 windows" in error[0] and "3 processes" in error[0], result.stderr
    assert "NPROC=1, 2, 4, 8, 16, 32" in error[0] and "--batch-size that 3 processes split (e.g. 33)" in error[0]
    assert "Traceback" not in result.stderr
    assert_nothing_written(tmp_path)
    # The trainer itself says the same line under torchrun (a world of 3, rank 0 speaks).
    direct = train(tmp_path, "--data", corpus, *SHORT_RUN, "--dry-run", WORLD_SIZE=3)
    assert_one_line_error(direct, "does not split evenly over 3 processes")


def test_unwritable_out(tmp_path, corpus):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    result = run(trainer_cmd(None, "--data", corpus, "--out", blocker / "out", *SHORT_RUN))
    assert_one_line_error(result, "cannot write to --out", "writable directory")


def test_unknown_flag(tmp_path):
    assert_one_line_error(train(tmp_path, "--learning-rate", "1"), "--learning-rate", "--help")


@pytest.mark.parametrize("args, words", [
    (["--steps", "0"], ["--steps must be at least 1"]),
    (["--n-embd", "130"], ["not a multiple of --n-head"]),
    (["--dropout", "1.5"], ["--dropout"]),
    (["--steps", "ten"], ["--steps", "invalid int"]),
])
def test_bad_values(tmp_path, args, words):
    assert_one_line_error(train(tmp_path, *args), *words)


@pytest.mark.parametrize("args, words", [
    (["--lr", "inf"], ["--lr", "finite", "inf"]),
    (["--lr", "1e30"], ["--lr", "(0, 1]"]),
    (["--lr", "nan"], ["--lr", "nan"]),
    (["--lr", "0"], ["--lr", "(0, 1]"]),
    (["--min-lr", "nan", "--warmup-steps", "0"], ["--min-lr", "nan"]),
    (["--min-lr", "0.01", "--lr", "0.001"], ["--min-lr 0.01 is above --lr 0.001"]),
    (["--beta1", "nan"], ["--beta1", "nan"]),
    (["--beta2", "2"], ["--beta2", "[0, 1)"]),
    (["--weight-decay", "-1"], ["--weight-decay", "-1"]),
    (["--grad-clip", "nan"], ["--grad-clip", "nan"]),
    (["--grad-clip", "inf"], ["--grad-clip", "inf"]),
    (["--dropout", "nan"], ["--dropout", "nan"]),
    (["--block-size", "1"], ["--block-size must be at least 2"]),
    (["--sample-prompt", ""], ["--sample-prompt is empty"]),
    (["--extend"], ["--extend", "--resume and --steps"]),
])
def test_out_of_range_flags_are_refused_before_anything_runs(tmp_path, corpus, args, words):
    assert_one_line_error(train(tmp_path, "--data", corpus, "--dry-run", *args), *words)
    assert_nothing_written(tmp_path)


def test_a_low_lr_alone_lowers_the_decay_floor_with_it(tmp_path, corpus):
    # The tuned recipe's --min-lr 1e-4 would sit above --lr 5e-5; only an explicit one is refused.
    assert train(tmp_path, "--data", corpus, "--dry-run", "--lr", "5e-5").returncode == 0
    edges = ["--beta2", "0", "--grad-clip", "0", "--lr", "1"]
    assert train(tmp_path, "--data", corpus, "--dry-run", *edges).returncode == 0


def test_sample_prompt_outside_the_corpus_is_refused_by_the_dry_run(tmp_path, corpus):
    result = train(tmp_path, "--data", corpus, "--dry-run", "--sample-prompt", "ROMEO€")
    assert_one_line_error(result, "--sample-prompt 'ROMEO€'", "'€'", "--sample-tokens 0")
    # Without samples the prompt is never used, so it is no reason to refuse the run.
    no_samples = ["--sample-prompt", "ROMEO€", "--sample-tokens", 0]
    assert train(tmp_path, "--data", corpus, "--dry-run", *no_samples).returncode == 0


def test_sample_prompt_outside_the_corpus_at_nproc_2_is_one_line(tmp_path, corpus):
    result = subprocess.run(["make", "--no-print-directory", "train", "NPROC=2", f"DATA={corpus}",
                             f"OUT={tmp_path / 'out'}", "STEPS=2", "ARGS=--sample-prompt ROMEO€"], cwd=ROOT,
                            env=child_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "'€'" in errors[0], result.stderr
    assert "Traceback" not in result.stderr and "gloo" not in result.stderr
    assert_nothing_written(tmp_path)


def test_a_corpus_without_the_default_prompt_samples_from_its_own_start(tmp_path):
    corpus = tmp_path / "a.txt"
    corpus.write_text("a" * 2000)
    result = train(tmp_path, "--data", corpus, "--block-size", 8, "--steps", 1, "--eval-iters", 1,
                   "--sample-tokens", 5, "--no-export")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "lacks characters of the default --sample-prompt 'ROMEO:'" in result.stdout
    assert "  sample: aaaaaaaaaaa" in result.stdout
    # A prompt asked for by name is not replaced: it is refused.
    refused = train(tmp_path, "--data", corpus, "--block-size", 8, "--dry-run", "--sample-prompt", "ROMEO:")
    assert_one_line_error(refused, "--sample-prompt 'ROMEO:'", "lacks")


@pytest.mark.parametrize("name, kind", [("model.pt2", "torch.export"), ("model.ts", "TorchScript"),
                                        ("model.onnx", "ONNX")])
def test_resume_from_an_export_says_it_is_an_export(tmp_path, corpus, trained_run, name, kind):
    result = train(tmp_path, "--data", corpus, "--resume", trained_run / name, *SHORT_RUN)
    assert_one_line_error(result, f"{trained_run / name} is an export ({kind})", "model.pt")


def test_checkpoint_without_the_optimizer_state_names_the_key(tmp_path, corpus, trained_run):
    import torch

    saved = torch.load(trained_run / "model.pt", weights_only=True)
    del saved["optimizer"]
    torch.save(saved, tmp_path / "model.pt")
    result = train(tmp_path, "--data", corpus, "--resume", tmp_path / "model.pt", *SHORT_RUN)
    assert_one_line_error(result, "lacks 'optimizer'", str(tmp_path / "model.pt"))


# A damaged checkpoint is one line in every reader (the trainer's --resume, make export,
# make generate), since all of them read it through trainer.checkpoint.load.
# The values inside, too (a NaN weight, a train_config value no flag takes, a moment of another shape).
@pytest.mark.parametrize("damage, reader", [("weight", "resume"), ("optimizer", "export"), ("step", "generate"),
                                            ("a directory", "generate"), ("model.json", "resume"),
                                            ("nan weight", "generate"), ("steps string", "resume"),
                                            ("moment shape", "resume")])
def test_a_damaged_checkpoint_is_one_line_in_every_reader(tmp_path, corpus, trained_run, damage, reader):
    import torch

    path = tmp_path / "model.pt"
    saved = torch.load(trained_run / "model.pt", weights_only=True)
    if damage == "weight":
        del saved["model"]["lm_head.weight"]
    saved["optimizer"] = {} if damage == "optimizer" else saved["optimizer"]
    saved["step"] = "12" if damage == "step" else saved["step"]
    if damage == "nan weight":
        saved["model"]["ln_f.bias"][0] = float("nan")
    if damage == "steps string":
        saved["train_config"]["steps"] = "60"
    if damage == "moment shape":
        saved["optimizer"]["muon"]["state"][0]["momentum_buffer"] = torch.zeros(3)
    if damage == "a directory":
        path.mkdir()
    elif damage == "model.json":
        shutil.copy(trained_run / "model.json", path)
    else:
        torch.save(saved, path)
    command = {"resume": trainer_cmd(None, "--data", corpus, "--out", tmp_path / "out", "--resume", path, *SHORT_RUN),
               "export": [sys.executable, "-m", "export", path],
               "generate": [sys.executable, "-m", "export.generate", path, "--tokens", 5]}[reader]
    words = {"weight": "weight lm_head.weight missing", "optimizer": "'optimizer' holds no optimiser state",
             "step": "'step' is '12'", "a directory": "is a directory, not a file",
             "model.json": "is not a checkpoint", "nan weight": "weight ln_f.bias holds NaN",
             "steps string": "'steps' is '60', not a value --steps takes",
             "moment shape": "momentum_buffer of blocks.0.attn.qkv.weight is not a tensor of shape"}[damage]
    line = assert_one_line_error(run(command, cwd=tmp_path), str(path), words)
    assert "corrupt" not in line
    # No export beside it, and no trace of the refused run's --out (it claimed the folder, then let go).
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]


def test_a_step_larger_than_the_machines_memory_is_refused_before_training(tmp_path, corpus):
    result = train(tmp_path, "--data", corpus, "--batch-size", 100_000_000, *SHORT_RUN)
    assert_one_line_error(result, "a training step needs about", "GB", "--batch-size")
    assert not (tmp_path / "out" / "metrics.jsonl").exists()


def test_make_plot_onto_a_directory_is_one_line(trained_run, tmp_path):
    shutil.copy(trained_run / "metrics.jsonl", tmp_path)
    (tmp_path / "loss.png").mkdir()
    result = subprocess.run(["make", "--no-print-directory", "plot", f"OUT={tmp_path}"], cwd=ROOT,
                            env=child_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "loss.png is a directory" in errors[0], result.stderr
    assert "Traceback" not in result.stderr and (tmp_path / "loss.png").is_dir()


BENCH = [sys.executable, "-m", "bench", "--nprocs", "1", "--steps", 1, "--warmup", 0]


def test_bench_into_a_directory_fails_before_measuring(tmp_path):
    result = run([*BENCH, "--out", tmp_path], timeout=60)
    assert_one_line_error(result, f"--out {tmp_path} is a directory", "BENCH_OUT=")
    assert "steps/s" not in result.stdout and list(tmp_path.iterdir()) == []


def test_bench_with_a_broken_checkpoint_fails_before_measuring(tmp_path, trained_run):
    broken = tmp_path / "broken.pt"
    broken.write_bytes((trained_run / "model.pt").read_bytes()[:5000])
    result = run([*BENCH, "--out", tmp_path / "r.json", "--ckpt", broken], timeout=60)
    assert_one_line_error(result, str(broken), "corrupt or truncated")
    assert "steps/s" not in result.stdout and not (tmp_path / "r.json").exists()
