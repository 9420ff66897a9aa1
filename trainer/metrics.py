"""metrics.jsonl: one JSON object per training step and one per evaluation, written by rank 0,
and the speed the evaluation lines and the last line report.

Strict JSON (a non-finite number is written as null), one whole line per record: a record that
does not fit on the disk is dropped with a warning, never left half-written. Optionally the
same scalars go to TensorBoard (--tensorboard).
"""

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from common.cli import UsageError
from common.files import atomic_write

if TYPE_CHECKING:  # the run folder's module loads torch (trainer.checkpoint): not for make plot
    from trainer.run_folder import RunFolder


class MetricsLog:
    """Builds, writes and reports the records of one run. Every rank keeps one, for the timing;
    only the one made with write=True (rank 0's) touches files."""

    def __init__(self, folder: "RunFolder", resume_step: int | None, tensorboard: bool, write: bool = True):
        self.path = folder.metrics
        self.start, self.first_step = time.perf_counter(), (resume_step or 0) + 1
        self.train_time = 0.0  # seconds in training steps, evaluation, sampling and saving excluded
        self.window: list[float] = []  # the durations of the steps since the last evaluation
        self._fd = None
        self._tb = None
        if not write:
            return
        if resume_step is None:
            self.path.write_text("")
        else:
            self._truncate_after(resume_step)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        self._failing = False  # warn once per run of failed writes, not at every step
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # imported only when asked for

            # purge_step makes TensorBoard drop the events an earlier writer logged from that step
            # on: after the checkpoint on resume (this run logs them again), all of them on a new run.
            self._tb = SummaryWriter(log_dir=str(folder.tensorboard),
                                     purge_step=0 if resume_step is None else resume_step + 1)

    def _truncate_after(self, step: int) -> None:
        """A resumed run repeats the steps after its checkpoint: drop their old records."""
        if not self.path.exists():
            return
        kept = [record for record in read_records(self.path) if record["step"] <= step]
        try:
            atomic_write(self.path, lambda f: f.write("".join(json_line(record) for record in kept).encode()))
        except OSError as exc:
            raise UsageError(f"cannot rewrite {self.path} for the resumed run ({exc.strerror}): "
                             "free space in its folder and resume again") from None

    def step(self, step: int, loss: float, lr: float, seconds: float) -> None:
        """A training step that took `seconds`, with its global loss and learning rate."""
        self.train_time += seconds
        self.window.append(seconds)
        self._write({"step": step, "loss": round(loss, 6), "lr": lr})
        if self._tb:
            self._tb.add_scalar("loss/batch", loss, step)
            self._tb.add_scalar("lr", lr, step)

    def evaluation(self, step: int, losses: dict, world_size: int) -> str:
        """Record an evaluation's {train, val} losses; returns the line the console shows for it.

        Its speed counts the training steps since the previous evaluation, nothing else."""
        seconds, steps = sum(self.window), len(self.window)
        record = {"step": step, "train_loss": round(losses["train"], 6), "val_loss": round(losses["val"], 6),
                  "steps_per_s": round(steps / seconds, 3) if seconds > 0 else None,
                  "elapsed_s": round(time.perf_counter() - self.start, 2), "train_s": round(self.train_time, 2),
                  "world_size": world_size}
        self.window = []
        self._write(record)
        if self._tb:
            # One tag each (add_scalars would make a separate TensorBoard run per curve).
            for tag, key in (("loss/train", "train_loss"), ("loss/val", "val_loss"), ("steps_per_s", "steps_per_s")):
                self._tb.add_scalar(tag, record[key], step)
        return (f"step {step} | train loss: {losses['train']:.4f} | val loss: {losses['val']:.4f} | "
                f"{speed_label(step - steps + 1, step, seconds)}")

    def done_line(self, last_step: int, checkpoint_path: Path) -> str:
        """The last line of training: the steps this process ran, and where its wall time went."""
        steps, wall = last_step - self.first_step + 1, time.perf_counter() - self.start
        speed = f" ({steps / self.train_time:.2f} steps/s)" if self.train_time > 0 else ""
        return (f"done: {steps} steps in {wall:.0f} s: {self.train_time:.0f} s in training steps{speed}, "
                f"{wall - self.train_time:.0f} s evaluating, sampling and saving; checkpoint {checkpoint_path}")

    def _write(self, record: dict) -> None:
        if self._fd is None:
            return
        line = json_line(record).encode()
        size = os.fstat(self._fd).st_size
        try:
            # One write(2) per line; a short write means the disk filled up part way.
            if os.write(self._fd, line) != len(line):
                raise OSError(28, os.strerror(28))
            self._failing = False
        except OSError as exc:
            os.ftruncate(self._fd, size)  # drop the part of the line that was written
            if not self._failing:
                print(f"warning: could not write to {self.path} ({exc.strerror}); its records are "
                      "skipped until writing works again", file=sys.stderr, flush=True)
            self._failing = True

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._tb:
            self._tb.close()
            self._tb = None


def speed_label(first: int, last: int, seconds: float) -> str:
    """The eval line's speed: training steps first..last only, evaluation and sampling excluded.

    One step alone (the first of a process, or --eval-every 1) includes start-up work, so it is
    shown as a time, not as the run's speed.
    """
    if first == last:
        return f"step {last} took {seconds:.2f} s"
    return f"{(last - first + 1) / seconds:.2f} steps/s over steps {first}-{last} (training only)"


def json_line(record: dict) -> str:
    """The record as one line of strict JSON: NaN and infinities, which JSON lacks, become null."""
    finite = {key: None if isinstance(value, float) and not math.isfinite(value) else value
              for key, value in record.items()}
    return json.dumps(finite, allow_nan=False) + "\n"


def read_records(path: Path) -> list[dict]:
    """The records of a metrics.jsonl: JSON objects, each with a whole-number "step".

    A last line without its newline is a write that was cut short (a full disk, a crash): it is
    dropped with a warning. Any other line that is no such record (not JSON, not an object, no
    step, invalid UTF-8: an edit, another program's file) is skipped, with one warning for them
    all, so that neither --resume nor make plot stops at a line it does not need.
    """
    lines = Path(path).read_bytes().split(b"\n")
    torn = lines.pop()  # b"" when the file ends with its newline, as every whole write does
    records, skipped = [], []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        record, problem = parse_record(line)
        if problem:
            skipped.append(f"line {number}: {problem}")
        else:
            records.append(record)
    if torn.strip():
        record, problem = parse_record(torn)
        if problem is None:
            records.append(record)  # whole, only its newline lost
        else:
            print(f"warning: the last line of {path} is incomplete (a write cut short, e.g. by a full "
                  "disk); it is ignored", file=sys.stderr, flush=True)
    if skipped:
        print(f"warning: {path} has {len(skipped)} line(s) that are not records of this trainer "
              f"({skipped[0]}); they are ignored", file=sys.stderr, flush=True)
    return records


def parse_record(line: bytes) -> tuple[dict | None, str | None]:
    """(record, None) for one line of metrics.jsonl, or (None, what is wrong with it)."""
    try:
        record = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError:
        return None, "not UTF-8"
    except json.JSONDecodeError:
        return None, "not JSON"
    if not isinstance(record, dict):
        return None, f"a JSON {type(record).__name__}, not an object"
    step = record.get("step")
    if not isinstance(step, int) or isinstance(step, bool):
        return None, 'no whole-number "step"'
    return record, None


def read_metrics(path: Path) -> tuple[list[dict], list[dict]]:
    """(per-step records, evaluation records) of a metrics.jsonl, their losses as floats: a
    non-finite loss (written as null) or any other non-number is NaN, a gap in the curve."""
    records = read_records(path)
    steps = [{**r, "loss": as_float(r["loss"])} for r in records if "loss" in r]
    evals = [{**r, "train_loss": as_float(r.get("train_loss")), "val_loss": as_float(r["val_loss"])}
             for r in records if "val_loss" in r]
    return steps, evals


def as_float(value) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan
