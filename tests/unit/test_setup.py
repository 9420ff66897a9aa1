"""trainer.setup in one process: a checkpoint's settings on --resume, its checks, the sample prompt."""

import pytest

from common.cli import UsageError
from common.dist_env import DistEnv
from trainer.checkpoint import Checkpoint
from trainer.config import parse_config
from trainer.data import load_corpus
from trainer.run_folder import release
from trainer.setup import choose_sample_prompt, continue_run, model_config, prepare

SHAPE = ["--block-size", "8", "--n-layer", "1", "--n-head", "2", "--n-embd", "8"]


@pytest.fixture
def corpus_file(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("to be or not to be, that is the question\n" * 50)
    return path


def checkpoint_of(cfg, corpus, step: int) -> Checkpoint:
    """What continue_run reads of a checkpoint (no weights, no optimiser state)."""
    return Checkpoint(model={}, model_config=model_config(cfg, corpus).to_dict(), vocab=corpus.vocab, step=step,
                      optimizer={}, train_config=cfg.to_dict())


def test_a_fresh_run_is_set_up_as_given(tmp_path, corpus_file):
    cfg = parse_config(["--data", str(corpus_file), "--out", str(tmp_path / "out"), "--sample-tokens", "0", *SHAPE])
    final, corpus, saved, keeps = prepare(cfg, DistEnv())
    release(tmp_path / "out")  # prepare holds the folder until the process ends
    assert final == cfg and saved is None and keeps and corpus.vocab == "\n ,abehinoqrstu"


def test_resume_takes_the_checkpoints_settings_under_the_command_lines(corpus_file):
    original = parse_config(["--data", str(corpus_file), "--steps", "40", "--lr", "1e-3", *SHAPE])
    corpus = load_corpus(corpus_file, 8)
    resumed = continue_run(parse_config(["--resume", "--seed", "5"]), corpus, checkpoint_of(original, corpus, 20))
    assert (resumed.steps, resumed.lr, resumed.n_layer, resumed.seed, resumed.resume) == (40, 1e-3, 1, 5, "")


def test_resume_refuses_a_finished_run_and_another_shape(corpus_file):
    original = parse_config(["--steps", "40", *SHAPE])
    corpus = load_corpus(corpus_file, 8)
    with pytest.raises(UsageError, match="has finished its 40 steps"):
        continue_run(parse_config(["--resume"]), corpus, checkpoint_of(original, corpus, 40))
    with pytest.raises(UsageError, match="has n_layer=1 but this run has n_layer=2"):
        continue_run(parse_config(["--resume", "--n-layer", "2"]), corpus, checkpoint_of(original, corpus, 20))


def test_a_corpus_without_the_default_prompts_characters_samples_from_its_start(corpus_file, capsys):
    corpus = load_corpus(corpus_file, 8)
    cfg = choose_sample_prompt(parse_config([]), corpus, None, DistEnv())
    assert cfg.sample_prompt == "to be "
    assert capsys.readouterr().out.startswith("note: the corpus lacks characters of the default --sample-prompt")
    with pytest.raises(UsageError, match="^--sample-prompt 'ROMEO:' has characters the corpus lacks"):
        choose_sample_prompt(parse_config(["--sample-prompt", "ROMEO:"]), corpus, None, DistEnv())
