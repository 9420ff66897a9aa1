"""metrics.jsonl: one JSON object per training step and one per evaluation, written by rank 0.

Optionally the same scalars go to TensorBoard (--tensorboard).
"""

import json
from pathlib import Path

from trainer.atomic import atomic_write


class MetricsLog:
    def __init__(self, out: Path, resume_step: int | None, tensorboard: bool):
        self.path = Path(out) / "metrics.jsonl"
        if resume_step is None:
            self.path.write_text("")
        else:
            self._truncate_after(resume_step)
        self._file = self.path.open("a", buffering=1)
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
        kept = [line for line in self.path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
        atomic_write(self.path, lambda f: f.write("".join(line + "\n" for line in kept).encode()))

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
        self._file.write(json.dumps(record) + "\n")

    def close(self) -> None:
        self._file.close()
        if self._tb:
            self._tb.close()


def read_metrics(path: Path) -> tuple[list[dict], list[dict]]:
    """(per-step records, evaluation records) of a metrics.jsonl."""
    records = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    return [r for r in records if "loss" in r], [r for r in records if "val_loss" in r]
