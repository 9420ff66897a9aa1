"""Bad input: one line naming the problem and the fix, exit status 2, no traceback, nothing half-written."""

import subprocess

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
    assert_one_line_error(result, "cannot download", "data/tinyshakespeare.txt", "--data PATH")
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
