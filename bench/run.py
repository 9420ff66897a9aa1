"""The whole benchmark: model FLOPs, matmul peaks, rounds of (textbook loop, each recipe, dtype and NPROC),
generation."""

import json
import platform
import sys
import tempfile
from pathlib import Path

import torch

from bench import report
from bench.generation import measure_generation
from bench.peak import matmul_peak_gflops, model_flops_per_step
from bench.processes import TORCHRUN, run_module
from bench.textbook import measure_textbook
from bench.timing import fastest_round, warn_if_busy
from common.dist_env import DistEnv
from model import GPT
from trainer.config import RunOptions, TrainConfig
from trainer.data import load_corpus, resolve_corpus
from trainer.distributed import machine_cores, threads_per_rank
from trainer.precision import cpuinfo_field, resolve_dtype
from trainer.setup import model_config


def run_bench(nprocs: list[int], data: str | None, warmup: int, steps: int, rounds: int,
              ckpt: Path | None, skip_generation: bool, peak_seconds: float) -> dict:
    cfg = TrainConfig()
    data = str(resolve_corpus(data, download=True))
    corpus = load_corpus(data, cfg.block_size)
    tokens_per_step = cfg.batch_size * cfg.block_size
    flops_per_step = model_flops_per_step(GPT(model_config(cfg, corpus)), tokens_per_step)
    cores = machine_cores()
    busy = warn_if_busy(cores)
    # The trainer's default dtype on this CPU, and fp32 as well when that default is bf16, so the
    # table shows what the bf16 units add and what a CPU without them would see.
    default_dtype, why = resolve_dtype(RunOptions.dtype)
    dtypes = [default_dtype] + (["fp32"] if default_dtype != "fp32" else [])

    peaks = {}
    for dtype in ("fp32", "bf16"):
        progress(f"{dtype} matmul peak at {cores} threads")
        peaks[dtype] = matmul_peak_gflops(cores, dtype, budget_s=peak_seconds)
    # The default recipe at every dtype and NPROC; the adamw recipe (AdamW alone, no moving
    # average) beside it at the default dtype, so the table shows what the default's optimisers cost.
    recipe = cfg.recipe
    runs = ([("textbook", None, "fp32", 1)] + [("ddp", recipe, dtype, n) for dtype in dtypes for n in nprocs]
            + [("ddp", "adamw", default_dtype, n) for n in nprocs if recipe != "adamw"])
    by_round = {run: [] for run in runs}
    for r in range(1, rounds + 1):
        for key in measuring_order(runs, recipe, r):
            run, run_recipe, dtype, n = key
            if run == "textbook":
                progress(f"round {r}/{rounds}, the textbook loop: {warmup} + {steps} steps")
                by_round[key].append(measure_textbook(corpus, warmup, steps))
            else:
                progress(f"round {r}/{rounds}, NPROC={n} under torchrun, {dtype}, the {run_recipe} recipe: "
                         f"{warmup} + {steps} steps")
                by_round[key].append(run_ddp(n, data, warmup, steps, dtype=dtype, recipe=run_recipe))
    measured = [(*run, fastest_round(by_round[run])) for run in runs]
    textbook = measured[0][4]

    def row(run, run_recipe, dtype, n, result):
        return report.training_row(run, run_recipe, dtype, n, result, tokens_per_step=tokens_per_step,
                                   flops_per_step=flops_per_step, peak_gflops=peaks[dtype],
                                   baseline_steps_per_s=textbook["steps_per_s"], eta_steps=cfg.steps)

    rows = [row(*m) for m in measured]
    generation = None
    if not skip_generation:
        progress("generation speed of each format")
        generation = measure_generation(ckpt, data)
    return {
        "machine": {"cores": cores, "cpu": cpu_name(), "platform": platform.platform(), "torch": torch.__version__,
                    "busy_cores_at_start": busy, "peak_gflops": peaks, "peak_threads": cores,
                    "peak": "1024 x 1024 matmul, best round, all cores"},
        "setup": {"batch_size": cfg.batch_size, "block_size": cfg.block_size, "tokens_per_step": tokens_per_step,
                  "flops_per_step": flops_per_step, "warmup_steps": warmup, "timed_steps": steps, "rounds": rounds,
                  "eta_steps": cfg.steps, "default_dtype": default_dtype, "default_dtype_why": why,
                  "default_recipe": recipe},
        "training": rows,
        "default_vs_adamw_recipe": report.recipe_ratios(rows, recipe, "adamw", default_dtype),
        "best_nproc": report.fastest_row(rows, recipe, default_dtype)["nproc"],
        "generation": generation,
    }


def measuring_order(runs: list[tuple], recipe: str, round_number: int) -> list[tuple]:
    """The runs in the order round `round_number` times them: each row of another recipe (adamw)
    right beside the default recipe's row of its dtype and NPROC, after it in odd rounds and
    before it in even ones.

    Their ratio (report.recipe_ratios) is taken within each round, so the two rows it compares are
    timed seconds apart, inside one slow spell or outside it together; a spell that lasts minutes
    otherwise falls on one row of the pair and moves the ratio by a tenth.
    """
    partner = {("ddp", recipe, *key[2:]): key for key in runs if key[0] == "ddp" and key[1] != recipe}
    order = []
    for key in runs:
        if key in partner.values():  # timed beside its default-recipe row
            continue
        pair = [key, partner[key]] if key in partner else [key]
        order += pair if round_number % 2 else pair[::-1]
    return order


def run_ddp(nproc: int, data: str, warmup: int, steps: int, ddp_options: dict | None = None,
            dtype: str = RunOptions.dtype, recipe: str = TrainConfig.recipe, **environment) -> dict:
    """One torchrun job of bench.ddp_worker; threads per rank as `make train` gives them, and
    `environment` added to the workers' (bench.levers turns pinning off with it)."""
    threads = threads_per_rank(DistEnv(local_world_size=nproc))  # OMP_NUM_THREADS if the user set it
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        result_file = Path(tmp) / "result.json"
        run_module(*TORCHRUN, "--standalone", f"--nproc-per-node={nproc}", "-m", "bench.ddp_worker",
                   "--data", data, "--warmup", warmup, "--steps", steps, "--result", result_file,
                   "--ddp-options", json.dumps(ddp_options or {}), "--dtype", dtype, "--recipe", recipe,
                   what=f"the NPROC={nproc} run", OMP_NUM_THREADS=threads, **environment)
        return json.loads(result_file.read_text())


def cpu_name() -> str:
    """The CPU's model name as Linux reports it (figures are only comparable on the same CPU)."""
    return cpuinfo_field("model name") or platform.processor() or "unknown"


def progress(message: str) -> None:
    print(f"measuring {message} ...", file=sys.stderr, flush=True)
