"""The files a run writes after its last step: loss.png and (unless --no-export) the exports."""

import sys

from common import defaults
from common.cli import UsageError, lasting_imports
from trainer.run_folder import RunFolder


def write_outputs(folder: RunFolder, vocab_size: int, export: bool) -> None:
    """loss.png, drawn with the run's vocabulary, and (`export`) the exports of the run's checkpoint."""
    with lasting_imports():  # matplotlib loads slowly: only at the end
        from trainer.plot import plot_metrics

    # Exporting takes 5-20 s: say so, or the pause after "done:" looks like a hang.
    exports = ", ".join([*defaults.EXPORTS, f"{defaults.HF_FOLDER}/", defaults.MANIFEST])
    what = f"loss.png and the exports ({exports})" if export else "loss.png"
    print(f"writing {what} to {folder.path} ...", flush=True)
    written = []
    try:
        written.append(plot_metrics(folder.metrics, folder.loss_plot, vocab_size=vocab_size))
    except UsageError as exc:  # the run is trained and saved; a picture that cannot be drawn does not undo that
        print(f"warning: {exc}", file=sys.stderr, flush=True)
    if export:
        with lasting_imports():  # exporting imports some 1,300 modules as it goes (torch.export's, torch.onnx's)
            from export.artifacts import export_checkpoint

            written += export_checkpoint(folder.checkpoint)
    print("wrote " + ", ".join(str(p) for p in written), flush=True)
