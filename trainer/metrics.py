"""metrics.jsonl: one JSON object per training step and one per evaluation, written by rank 0.

Strict JSON (a non-finite number is written as null), one whole line per record: a record that
does not fit on the disk is dropped with a warning, never left half-written. Optionally the
same scalars go to TensorBoard (--tensorboard).
"""

import json
import math
import os
import sys
from pathlib import Path

from trainer.atomic import atomic_write
from trainer.errors import UsageError


class MetricsLog:
    def __init__(self, out: Path, resume_step: int | None, tensorboard: bool):
        self.path = Path(out) / "metrics.jsonl"
        if resume_step is None:
            self.path.write_text("")
        else:
            self._truncate_after(resume_step)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        self._failing = False  # warn once per run of failed writes, not at every step
        self._tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # imported only when asked for

            # purge_step makes TensorBoard drop the events an earlier writer logged from that step
            # on: after the snapshot on resume (this run logs them again), all of them on a new run.
            self._tb = SummaryWriter(log_dir=str(Path(out) / "tensorboard"),
                                     purge_step=0 if resume_step is None else resume_step + 1)

    def _truncate_after(self, step: int) -> None:
        """A resumed run repeats the steps after its snapshot: drop their old records."""
        if not self.path.exists():
            return
        kept = [record for record in read_records(self.path) if record["step"] <= step]
        try:
            atomic_write(self.path, lambda f: f.write("".join(json_line(record) for record in kept).encode()))
        except OSError as exc:
            raise UsageError(f"cannot rewrite {self.path} for the resumed run ({exc.strerror}): "
                             "free space in its folder and resume again") from None

    def step(self, step: int, loss: float, lr: float) -> None:
        self._write({"step": step, "loss": round(loss, 6), "lr": lr})
        if self._tb:
            self._tb.add_scalar("loss/batch", loss, step)
            self._tb.add_scalar("lr", lr, step)

    def evaluation(self, record: dict) -> None:
        self._write(record)
        if self._tb:
            # One tag each (add_scalars would make a separate TensorBoard run per curve).
            self._tb.add_scalar("loss/train", record["train_loss"], record["step"])
            self._tb.add_scalar("loss/val", record["val_loss"], record["step"])
            self._tb.add_scalar("steps_per_s", record["steps_per_s"], record["step"])

    def _write(self, record: dict) -> None:
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
        os.close(self._fd)
        if self._tb:
            self._tb.close()


def json_line(record: dict) -> str:
    """The record as one line of strict JSON: NaN and infinities, which JSON lacks, become null."""
    finite = {key: None if isinstance(value, float) and not math.isfinite(value) else value
              for key, value in record.items()}
    return json.dumps(finite, allow_nan=False) + "\n"


def read_records(path: Path) -> list[dict]:
    """The records of a metrics.jsonl. A last line without its newline is a write that was cut
    short (a full disk, a crash): it is dropped with a warning. Any other bad line raises
    json.JSONDecodeError."""
    text = Path(path).read_text()
    lines = text.splitlines()
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number < len(lines) or text.endswith("\n"):
                raise
            print(f"warning: the last line of {path} is incomplete (a write cut short, e.g. by a full "
                  "disk); it is ignored", file=sys.stderr, flush=True)
    return records


def read_metrics(path: Path) -> tuple[list[dict], list[dict]]:
    """(per-step records, evaluation records) of a metrics.jsonl."""
    records = read_records(path)
    return [r for r in records if "loss" in r], [r for r in records if "val_loss" in r]
