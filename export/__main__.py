"""python -m export [CHECKPOINT]: write model.ts, model.pt2, model.onnx and model.json beside it."""

import sys

from trainer.errors import OneLineParser, report_usage_errors


def main(argv: list[str] | None = None) -> int:
    p = OneLineParser(prog="python -m export", description=__doc__.split(": ", 1)[1])
    p.add_argument("checkpoint", nargs="?", default="checkpoints/model.pt", help="a model.pt written by the trainer")

    def body() -> int:
        args = p.parse_args(argv)
        from export.artifacts import export_checkpoint  # after parsing: --help needs no torch

        written = export_checkpoint(args.checkpoint)
        print("wrote " + ", ".join(str(path) for path in written))
        return 0

    return report_usage_errors(body)


if __name__ == "__main__":
    sys.exit(main())
