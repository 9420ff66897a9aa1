"""loss.png from metrics.jsonl: train and val loss by step, with the course's landmarks.

    python -m trainer.plot [OUT]     (make plot OUT=checkpoints)

The "guessing" line is the loss of a model that knows nothing, ln(vocabulary size), with the
vocabulary of the run's own checkpoint (model.pt beside metrics.jsonl).
"""

import atexit
import math
import os
import shutil
import sys
import tempfile
from pathlib import Path


def choose_matplotlib_dir() -> None:
    """matplotlib keeps its config and font cache under HOME; where it cannot write there (a
    read-only HOME) it warns into the run's output and uses a temporary folder. Choose that
    temporary folder first (MPLCONFIGDIR), so the run's output stays the run's, and remove it at
    exit as matplotlib removes its own."""
    if os.environ.get("MPLCONFIGDIR"):
        return
    home = Path.home()
    folders = [Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config") / "matplotlib",
               Path(os.environ.get("XDG_CACHE_HOME") or home / ".cache") / "matplotlib"]
    if not all(writable(folder) for folder in folders):
        os.environ["MPLCONFIGDIR"] = tempfile.mkdtemp(prefix="matplotlib-")
        atexit.register(shutil.rmtree, os.environ["MPLCONFIGDIR"], ignore_errors=True)


def writable(folder: Path) -> bool:
    """Whether `folder` can be written, or made where it does not exist yet."""
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder.is_dir() and os.access(folder, os.W_OK)


choose_matplotlib_dir()  # before matplotlib is imported: it reads MPLCONFIGDIR then
import matplotlib  # noqa: E402

matplotlib.use("Agg")  # no display needed
import matplotlib.pyplot as plt  # noqa: E402

from common import defaults  # noqa: E402
from common.cli import OneLineParser, UsageError, command  # noqa: E402
from common.files import atomic_write  # noqa: E402
from model import uniform_loss  # noqa: E402
from trainer import checkpoint  # noqa: E402
from trainer.metrics import read_metrics  # noqa: E402

COURSE_TARGET = 1.5  # the chapter's "loss drops to around 1.3-1.5"


def run_vocab_size(out: Path) -> int | None:
    """The vocabulary size of the run in `out`, from its checkpoint; None (with a warning) without one."""
    path = Path(out) / defaults.CHECKPOINT
    try:
        if path.is_file():
            return len(checkpoint.load(path).vocab)
        problem = f"{path} is missing"
    except UsageError as exc:
        problem = str(exc)
    print(f"warning: loss.png has no guessing line, ln(vocabulary size): {problem}", file=sys.stderr, flush=True)
    return None


def plot_metrics(metrics_path: Path, png_path: Path, vocab_size: int | None = None) -> Path:
    """Draw png_path from metrics_path. vocab_size: the run's (None: read from its checkpoint)."""
    if Path(png_path).is_dir():
        raise UsageError(f"{png_path} is a directory: move it away so the picture can be written there")
    if not Path(metrics_path).is_file():
        raise UsageError(f"{metrics_path} does not exist: train first (make train) or pass the run's --out directory")
    steps, evals = read_metrics(metrics_path)
    if not evals:
        raise UsageError(f"{metrics_path} has no evaluation yet: plot after the first evaluation")
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    if steps:
        ax.plot([r["step"] for r in steps], [r["loss"] for r in steps], color="0.8", lw=0.6, label="batch loss")
    ax.plot([r["step"] for r in evals], [r["train_loss"] for r in evals], "o-", label="train loss")
    ax.plot([r["step"] for r in evals], [r["val_loss"] for r in evals], "s-", label="val loss")
    vocab_size = run_vocab_size(Path(metrics_path).parent) if vocab_size is None else vocab_size
    if vocab_size is not None:
        ax.axhline(uniform_loss(vocab_size), ls="--", color="tab:red", lw=1,
                   label=f"ln {vocab_size} = {uniform_loss(vocab_size):.2f} (guessing)")
    ax.axhline(COURSE_TARGET, ls=":", color="tab:green", lw=1, label=f"course target {COURSE_TARGET}")
    last = evals[-1]
    ax.set_title(f"step {last['step']}: train {last['train_loss']:.4f}, val {last['val_loss']:.4f}")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy loss (nats)")
    finite = [r["train_loss"] for r in evals if math.isfinite(r["train_loss"])]
    ax.set_ylim(bottom=min([1.0, *(loss - 0.1 for loss in finite)]))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    try:
        atomic_write(Path(png_path), lambda f: fig.savefig(f, format="png"))
    except OSError as exc:
        raise UsageError(f"cannot write {png_path} ({exc.strerror}): "
                         "free some space or make the directory writable") from None
    finally:
        plt.close(fig)
    return Path(png_path)


@command
def main(argv: list[str]) -> int:
    p = OneLineParser(prog="python -m trainer.plot", description=__doc__.splitlines()[0])
    p.add_argument("out", nargs="?", type=Path, default=Path("checkpoints"), help="the run's --out directory")
    out = p.parse_args(argv).out
    print(plot_metrics(out / defaults.METRICS, out / defaults.LOSS_PLOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
