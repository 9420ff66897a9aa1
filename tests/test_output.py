"""What a run shows and leaves: clean logs off a terminal, a sample per evaluation, loss.png, metrics.jsonl."""

import json
import re
import shutil
import struct
import subprocess
import sys

from tests.conftest import ROOT, child_env, eval_records, read_jsonl, step_losses


def test_log_off_a_terminal_has_no_control_characters(trained_run):
    log = (trained_run / "train.log").read_text()
    assert "step 60 | train loss: " in log
    assert "\r" not in log and "\x1b" not in log


def test_a_sample_is_printed_at_each_evaluation(trained_run):
    lines = (trained_run / "train.log").read_text().splitlines()
    evals = [i for i, line in enumerate(lines) if line.startswith("step ")]
    assert len(evals) == len(eval_records(trained_run)) == 3  # steps 1, 30, 60
    for i in evals:
        assert lines[i + 1].startswith("  sample: ROMEO:") and len(lines[i + 1]) > len("  sample: ROMEO:") + 20


def test_loss_png_is_a_real_picture(trained_run):
    png = (trained_run / "loss.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert width >= 400 and height >= 300 and len(png) > 20_000


def test_metrics_jsonl_has_a_record_per_step_and_per_evaluation(trained_run):
    records = read_jsonl(trained_run / "metrics.jsonl")
    steps = [r for r in records if "loss" in r]
    assert [r["step"] for r in steps] == list(range(1, 61))
    for record in eval_records(trained_run):
        assert set(record) == {"step", "train_loss", "val_loss", "steps_per_s", "elapsed_s", "train_s", "world_size"}
        assert record["steps_per_s"] > 0 and record["world_size"] == 1
    assert json.loads(json.dumps(records)) == records


def test_make_plot_draws_the_picture_from_metrics(trained_run, tmp_path):
    shutil.copy(trained_run / "metrics.jsonl", tmp_path)
    result = subprocess.run(["make", "--no-print-directory", "plot", f"OUT={tmp_path}"], cwd=ROOT,
                            env=child_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "loss.png").read_bytes()[:4] == b"\x89PNG"


def test_a_read_only_home_keeps_matplotlibs_warnings_out_of_the_output(trained_run, tmp_path):
    """...and the temporary folder matplotlib uses instead is removed at the end."""
    home, temporary = tmp_path / "home", tmp_path / "tmp"
    home.mkdir()
    temporary.mkdir()
    shutil.copy(trained_run / "metrics.jsonl", tmp_path)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(home)], check=True)
    try:
        env = {k: v for k, v in child_env(HOME=home, TMPDIR=temporary).items()
               if k not in ("MPLCONFIGDIR", "XDG_CONFIG_HOME", "XDG_CACHE_HOME", "PYTHONWARNINGS")}
        result = subprocess.run([sys.executable, "-m", "trainer.plot", tmp_path], cwd=ROOT, env=env,
                                capture_output=True, text=True, timeout=120)
    finally:
        subprocess.run(["umount", str(home)], check=True)
    assert result.returncode == 0 and "matplotlib" not in result.stderr.lower(), result.stderr
    assert (tmp_path / "loss.png").read_bytes()[:4] == b"\x89PNG"
    assert not list(temporary.iterdir())


def make(*args, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "--no-print-directory", *map(str, args)], cwd=ROOT, env=child_env(),
                          capture_output=True, text=True, timeout=timeout)


def help_sections(text: str) -> dict[str, dict[str, str]]:
    """make help's output as {target: {VARIABLE: value}}."""
    sections: dict[str, dict[str, str]] = {}
    for line in text.splitlines():
        if line and not line.startswith(" "):
            current = sections.setdefault(line.split()[0], {})
        elif line.strip():
            name, _, value = line.split()[0].partition("=")
            current[name] = value
    return sections


def test_make_help_lists_every_target_with_its_variables():
    sections = help_sections(make("help").stdout)
    makefile = (ROOT / "Makefile").read_text()
    phony = re.search(r"^\.PHONY:(.*)$", makefile, re.M).group(1).split()
    assert set(phony) <= set(sections)
    assert {"NPROC", "STEPS", "DATA", "OUT", "ARGS", "MAX_RESTARTS", "NNODES", "NODE_RANK", "MASTER_ADDR",
            "MASTER_PORT"} <= set(sections["train"])
    assert {"MODEL", "PROMPT", "TOKENS", "TEMPERATURE", "TOP_K", "SEED"} <= set(sections["generate"])
    assert sections["train"]["NPROC"] == "2" and sections["plot"]["OUT"] == "checkpoints"
    # Every variable a user may set (`NAME ?= default`) is documented for at least one target.
    settable = set(re.findall(r"^([A-Z_0-9]+) \?=", makefile, re.M))
    documented = {name for variables in sections.values() for name in variables}
    assert settable <= documented, settable - documented


def test_make_help_shows_the_values_the_command_line_set():
    text = make("help", "NPROC=4", "OUT=my runs").stdout
    assert help_sections(text)["train"]["NPROC"] == "4"
    assert re.search(r"^    OUT=my runs +directory for model.pt", text, re.M), text


def test_make_train_and_plot_take_an_out_with_a_space_and_a_quote(tmp_path, corpus):
    """...and --no-plot leaves loss.png to make plot: with --no-export, the run ends at its done: line."""
    out = tmp_path / "my runs" / "it's"
    result = make("train", "NPROC=1", f"OUT={out}", "STEPS=2", f"DATA={corpus}",
                  "ARGS=--eval-iters 1 --sample-tokens 0 --no-export --no-plot", timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(step_losses(out)) == [1, 2] and (out / "model.pt").is_file()
    assert result.stdout.splitlines()[-1].startswith("done: 2 steps in ") and not (out / "loss.png").exists()
    assert make("plot", f"OUT={out}").returncode == 0 and (out / "loss.png").is_file()


def eval_lines(log: str) -> dict[int, str]:
    return {int(line.split()[1]): line for line in log.splitlines() if line.startswith("step ")}


def test_eval_lines_label_their_speed_and_step_1_is_not_a_speed(trained_run):
    lines = eval_lines((trained_run / "train.log").read_text())
    assert lines[1].endswith(" s") and "step 1 took " in lines[1] and "steps/s" not in lines[1]
    assert "steps/s over steps 2-30 (training only)" in lines[30]
    assert "steps/s over steps 31-60 (training only)" in lines[60]


def test_done_line_says_where_the_time_went_then_what_is_being_written(trained_run):
    log = (trained_run / "train.log").read_text().splitlines()
    done = next(i for i, line in enumerate(log) if line.startswith("done: "))
    assert re.match(r"done: 60 steps in \d+ s: \d+ s in training steps \([\d.]+ steps/s\), \d+ s evaluating",
                    log[done]), log[done]
    assert log[done + 1].startswith("writing loss.png and the exports "
                                    "(model.ts, model.pt2, model.onnx, hf/, model.json)")
    assert log[done + 2].startswith("wrote ")


def test_progress_bar_says_its_rate_includes_evaluation(capsys):
    from trainer.progress import Progress

    bar = Progress(True, "bar", 3, 0)
    for loss in (4.0, 3.9, 3.8):
        bar.update(loss)
    bar.close()
    assert "step/s with evaluation" in capsys.readouterr().out


def test_samples_draw_a_new_seed_at_each_step_and_repeat_on_a_rerun(trained_run, corpus):
    from common.dist_env import DistEnv
    from trainer import checkpoint
    from trainer.config import TrainConfig
    from trainer.data import load_corpus
    from trainer.train import Trainer

    saved = checkpoint.load(trained_run / "model.pt")
    cfg = TrainConfig(**saved.train_config)
    trainer = Trainer(cfg, DistEnv(), load_corpus(corpus, cfg.block_size), saved)
    first, again, later = trainer.sample(30), trainer.sample(30), trainer.sample(60)
    assert first == again and first != later and first.startswith(cfg.sample_prompt)


def test_tensorboard_has_one_tag_per_curve_and_forgets_the_steps_a_resume_repeats(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from trainer.metrics import MetricsLog
    from trainer.run_folder import RunFolder

    def log(resume_step, steps, offset):
        metrics = MetricsLog(RunFolder(tmp_path), resume_step, tensorboard=True)
        for step in steps:
            metrics.step(step, offset + step, 1e-3, seconds=0.1)
            if step % 4 == 0:
                metrics.evaluation(step, {"train": offset + step, "val": offset + step + 0.5}, world_size=1)
        metrics.close()

    log(None, range(1, 9), 100)  # a run to step 8 whose checkpoint was at step 4 ...
    log(4, range(5, 9), 200)  # ... resumed from there
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert {"loss/batch", "loss/train", "loss/val"} <= set(events.Tags()["scalars"])
    assert [p for p in (tmp_path / "tensorboard").iterdir() if p.is_dir()] == []  # one run, not one per curve
    batch = [(e.step, e.value) for e in events.Scalars("loss/batch")]
    assert batch == [(s, 100 + s) for s in range(1, 5)] + [(s, 200 + s) for s in range(5, 9)]
    assert [(e.step, e.value) for e in events.Scalars("loss/val")] == [(4, 104.5), (8, 208.5)]
