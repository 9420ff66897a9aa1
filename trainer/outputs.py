"""The files a run writes after its last step: loss.png and the exports, unless --no-plot and --no-export."""

import sys

from common import defaults
from common.cli import UsageError, lasting_imports
from trainer.run_folder import RunFolder


def write_outputs(folder: RunFolder, vocab_size: int, plot: bool, export: bool) -> None:
    """loss.png (`plot`), drawn with the run's vocabulary, and the exports of the run's checkpoint
    (`export`): at least one of them."""
    exports = ", ".join([*defaults.EXPORTS, f"{defaults.HF_FOLDER}/", defaults.MANIFEST])
    what = [name for name, wanted in (("loss.png", plot), (f"the exports ({exports})", export)) if wanted]
    # Exporting takes 5-20 s: say so, or the pause after "done:" looks like a hang.
    print(f"writing {' and '.join(what)} to {folder.path} ...", flush=True)
    written = []
    if plot:
        with lasting_imports():  # matplotlib loads slowly: only at the end
            from trainer.plot import plot_metrics
        try:
            written.append(plot_metrics(folder.metrics, folder.loss_plot, vocab_size=vocab_size))
        except UsageError as exc:  # the run is trained and saved; a picture that cannot be drawn does not undo that
            print(f"warning: {exc}", file=sys.stderr, flush=True)
    if export:
        with lasting_imports():  # exporting imports some 1,300 modules as it goes (torch.export's, torch.onnx's)
            from export.artifacts import export_checkpoint

            written += export_checkpoint(folder.checkpoint)
    print("wrote " + ", ".join(str(p) for p in written), flush=True)
