"""python -m bench: training steps/s by NPROC against the textbook loop and the adamw recipe, MFU, generation.

Every training run times the same steps (--warmup untimed, then --steps timed) of the same
32 x 128 batches: the textbook loop in this process, then each NPROC under torchrun running the
trainer's own step, with the default recipe and, at the default dtype, the adamw recipe.
--rounds times them all that many times, in turn, and keeps each row's fastest round. Results are
printed as tables and written as JSON to --out.
"""

import json
import sys
from pathlib import Path

from bench.timing import add_step_flags, check_out_file, check_step_flags
from common import defaults
from common.cli import OneLineParser, UsageError, command
from trainer.config import TrainConfig, check_split

DEFAULT_CKPT = Path("checkpoints") / defaults.CHECKPOINT


def build_parser() -> OneLineParser:
    p = OneLineParser(prog="python -m bench", description=__doc__.splitlines()[0].split(": ", 1)[1])
    p.add_argument("--nprocs", default="1,2,4",
                   help="comma-separated process counts, each dividing the batch of 32 (default 1,2,4)")
    p.add_argument("--out", default="bench/results.json", help="JSON results file (default bench/results.json)")
    add_step_flags(p, warmup=3, steps=20, what="run", rounds=3)
    p.add_argument("--ckpt", type=Path, help=f"checkpoint for the generation speeds (default {DEFAULT_CKPT} if it "
                   "exists, else a one-step one trained for the purpose)")
    p.add_argument("--skip-generation", action="store_true", help="time training only")
    p.add_argument("--peak-seconds", type=float, default=2.0,
                   help="seconds of matmuls that measure each dtype's peak, the MFU's denominator (default 2)")
    return p


def parse_nprocs(text: str, global_batch: int) -> list[int]:
    try:
        nprocs = [int(part) for part in text.split(",")]
    except ValueError:
        raise UsageError(f"--nprocs {text!r} is not a comma-separated list of process counts: "
                         "write e.g. --nprocs 1,2,4") from None
    for n in nprocs:
        if n < 1:
            raise UsageError(f"--nprocs {n}: a run needs at least 1 process: write e.g. --nprocs 1,2,4")
        check_split(global_batch, n,
                    f"use --nprocs counts that divide {global_batch}, e.g. --nprocs 1,2,4 (NPROCS= for make)")
    return nprocs


def checkpoint_for_generation(ckpt: Path | None) -> Path | None:
    if ckpt is None:
        ckpt = DEFAULT_CKPT if DEFAULT_CKPT.is_file() else None
    elif ckpt.suffix != ".pt" or not ckpt.is_file():
        raise UsageError(f"checkpoint {ckpt} is not an existing .pt file: pass a model.pt written by the trainer, "
                         "or leave --ckpt out")
    if ckpt is not None:
        from trainer import checkpoint  # loads torch: only when there is a checkpoint to read

        checkpoint.load(ckpt)  # a broken file is one line now, not after minutes of measuring
    return ckpt


@command
def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    nprocs = parse_nprocs(args.nprocs, TrainConfig.batch_size)
    check_step_flags(args)
    if not 0 < args.peak_seconds <= 600:
        raise UsageError(f"--peak-seconds {args.peak_seconds} must be more than 0 and at most 600: "
                         "e.g. --peak-seconds 2")
    check_out_file(Path(args.out), "BENCH_OUT")
    ckpt = None if args.skip_generation else checkpoint_for_generation(args.ckpt)
    # Imported after the checks, so bad input is answered without loading torch.
    from bench.report import print_results
    from bench.run import run_bench
    from common.files import atomic_write

    results = run_bench(nprocs, args.data, args.warmup, args.steps, args.rounds, ckpt, args.skip_generation,
                        args.peak_seconds)
    print_results(results)
    text = json.dumps(results, indent=2) + "\n"
    atomic_write(Path(args.out), lambda f: f.write(text.encode()))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
