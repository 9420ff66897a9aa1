"""python -m export [CHECKPOINT]: write model.ts, model.pt2, model.onnx, hf/ and model.json beside it."""

import sys

from common import defaults
from common.cli import OneLineParser, command, lasting_imports


@command
def main(argv: list[str]) -> int:
    p = OneLineParser(prog="python -m export", description=__doc__.split(": ", 1)[1])
    p.add_argument("checkpoint", nargs="?", default=f"checkpoints/{defaults.CHECKPOINT}",
                   help="a model.pt written by the trainer")
    args = p.parse_args(argv)
    # After parsing (--help needs no torch). Exporting imports some 1,300 modules as it goes
    # (torch.export's and torch.onnx's), which live until exit like torch.
    with lasting_imports():
        from export.artifacts import export_checkpoint

        written = export_checkpoint(args.checkpoint, strict=True)
    print("wrote " + ", ".join(str(path) for path in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
