"""trainer.setup in one process: a checkpoint's settings on --resume, its checks, the sample prompt."""

import pytest

from common.cli import UsageError
from common.dist_env import DistEnv
from trainer.checkpoint import Checkpoint
from trainer.config import parse
from trainer.data import load_corpus
from trainer.run_folder import RunFolder, release
from trainer.setup import final_config, model_config, notes, prepare

SHAPE = ["--block-size", "8", "--n-layer", "1", "--n-head", "2", "--n-embd", "8"]


@pytest.fixture
def corpus_file(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("to be or not to be, that is the question\n" * 50)
    return path


def checkpoint_of(argv, corpus, step: int) -> Checkpoint:
    """What final_config reads of a checkpoint (no weights, no optimiser state)."""
    cfg, _ = parse(argv)
    return Checkpoint(model={}, model_config=model_config(cfg, corpus).to_dict(), vocab=corpus.vocab, step=step,
                      optimizer={}, train_config=cfg.to_dict())


def final(argv, corpus, saved, folder):
    return final_config(parse(argv)[1], folder, corpus, saved)


def test_a_fresh_run_is_set_up_as_given(tmp_path, corpus_file):
    cfg, options = parse(["--data", str(corpus_file), "--out", str(tmp_path / "out"), "--sample-tokens", "0", *SHAPE])
    run = prepare(cfg, options, DistEnv())
    release(tmp_path / "out")  # prepare holds the folder until the process ends
    assert (run.cfg, run.options) == (cfg, options) and run.saved is None and run.keeps_files
    assert run.corpus.vocab == "\n ,abehinoqrstu" and run.folder.path == tmp_path / "out"


def test_resume_takes_the_checkpoints_settings_under_the_command_lines(tmp_path, corpus_file):
    corpus = load_corpus(corpus_file, 8)
    saved = checkpoint_of(["--data", str(corpus_file), "--steps", "40", "--lr", "1e-3", *SHAPE], corpus, 20)
    resumed, options = final(["--resume", "--seed", "5"], corpus, saved, RunFolder(tmp_path))
    assert (resumed.steps, resumed.lr, resumed.n_layer, resumed.seed, options.resume) == (40, 1e-3, 1, 5, "")


def test_resume_refuses_a_finished_run_and_another_shape(tmp_path, corpus_file):
    corpus = load_corpus(corpus_file, 8)
    with pytest.raises(UsageError, match="has finished its 40 steps"):
        final(["--resume"], corpus, checkpoint_of(["--steps", "40", *SHAPE], corpus, 40), RunFolder(tmp_path))
    with pytest.raises(UsageError, match="has n_layer=1 but this run has n_layer=2"):
        final(["--resume", "--n-layer", "2"], corpus, checkpoint_of(["--steps", "40", *SHAPE], corpus, 20),
              RunFolder(tmp_path))


def test_a_corpus_without_the_default_prompts_characters_samples_from_its_start(tmp_path, corpus_file, capsys):
    run = prepare(*parse(["--data", str(corpus_file), "--out", str(tmp_path / "out"), *SHAPE]), DistEnv())
    release(tmp_path / "out")
    assert run.cfg.sample_prompt == "to be "
    assert capsys.readouterr().out.startswith("note: the corpus lacks characters of the default --sample-prompt")
    with pytest.raises(UsageError, match="^--sample-prompt 'ROMEO:' has characters the corpus lacks"):
        final(["--sample-prompt", "ROMEO:"], load_corpus(corpus_file, 8), None, RunFolder(tmp_path))


def test_flags_without_effect_get_a_note():
    assert notes(*parse([])) == []
    assert "--warmup-steps 100 is not shorter than the run's 50 steps" in notes(*parse(
        ["--recipe", "adamw", "--steps", "50"]))[0]
    assert "--muon-momentum have no effect without Muon" in notes(*parse(
        ["--recipe", "adamw", "--muon-momentum", "0.9"]))[-1]
