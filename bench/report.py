"""The bench's rows and tables: one row per training run, one per generation format."""

import statistics

from bench.peak import mfu


def training_row(run: str, recipe: str | None, dtype: str, nproc: int, measured: dict, *, tokens_per_step: int,
                 flops_per_step: int, peak_gflops: float, baseline_steps_per_s: float, eta_steps: int) -> dict:
    """One run's figures; MFU divides by the matmul peak of the dtype the run multiplies in."""
    steps_per_s = measured["steps_per_s"]
    return {
        "run": run,
        "recipe": recipe,
        "dtype": dtype,
        "nproc": nproc,
        "threads_per_rank": measured["threads_per_rank"],
        "steps_per_s": steps_per_s,
        "tokens_per_s": steps_per_s * tokens_per_step,
        "ms_per_step": measured["ms_per_step"],
        "steps_per_s_by_round": measured["steps_per_s_by_round"],
        "mfu": mfu(flops_per_step, steps_per_s, peak_gflops),
        "speedup_vs_textbook": steps_per_s / baseline_steps_per_s,
        "eta_s": eta_steps / steps_per_s,
    }


def fastest_row(rows: list[dict], recipe: str, dtype: str) -> dict:
    """The row of the best NPROC: the most steps/s of `recipe` in `dtype`."""
    return max((r for r in rows if r["recipe"] == recipe and r["dtype"] == dtype), key=lambda r: r["steps_per_s"])


def recipe_ratios(rows: list[dict], recipe: str, other: str, dtype: str) -> list[dict]:
    """Steps/s of `recipe` over those of `other`, at each NPROC both ran in `dtype`: the median over
    the rounds of each round's ratio (the pair runs back to back in a round: bench.run.measuring_order)."""
    speeds = {(r["recipe"], r["nproc"]): r["steps_per_s_by_round"] for r in rows
              if r["run"] == "ddp" and r["dtype"] == dtype}
    ratios = {n: [a / b for a, b in zip(speeds[name, n], speeds[other, n], strict=True)]
              for (name, n) in speeds if name == recipe and (other, n) in speeds}
    return [{"nproc": n, "dtype": dtype, "ratio": statistics.median(by_round), "ratio_by_round": by_round}
            for n, by_round in ratios.items()]


def print_results(results: dict) -> None:
    """The tables, from the results JSON alone: what is printed is what is written."""
    machine, setup, rows = results["machine"], results["setup"], results["training"]
    peaks = machine["peak_gflops"]
    print(f"\n{machine['cpu']}, {machine['cores']} cores; training: global batch {setup['batch_size']} x "
          f"{setup['block_size']} = {setup['tokens_per_step']} tokens/step, {setup['flops_per_step'] / 1e9:.2f} "
          f"GFLOP/step, {setup['warmup_steps']} warm-up + {setup['timed_steps']} timed steps per run, the fastest of "
          f"{setup['rounds']} rounds (each round times every row in turn; 'rounds' lists each round's steps/s)")
    print(f"matmul peaks at all {machine['cores']} cores: fp32 {peaks['fp32']:.1f} GFLOP/s, bf16 {peaks['bf16']:.1f} "
          f"GFLOP/s; MFU is against the peak of the row's dtype. Default dtype: {setup['default_dtype']} "
          f"({setup['default_dtype_why']}). The ETA counts training steps only (no evaluation)\n")
    print(training_table(rows, setup["eta_steps"]))
    recipe = setup["default_recipe"]
    for dtype in dict.fromkeys(r["dtype"] for r in rows if r["run"] == "ddp"):
        best = fastest_row(rows, recipe, dtype)
        print(f"\nbest NPROC in {dtype}: {best['nproc']} ({best['steps_per_s']:.2f} steps/s, "
              f"{best['speedup_vs_textbook']:.2f}x the textbook loop)", end="")
    print()
    ratios = results["default_vs_adamw_recipe"]
    if ratios:
        rounds = [" ".join(f"{x:.2f}" for x in r["ratio_by_round"]) for r in ratios]
        print(f"the default {recipe} recipe's steps/s against the adamw recipe's, {ratios[0]['dtype']}, the median of "
              "the rounds' ratios (each round runs the two back to back): "
              + ", ".join(f"{r['ratio']:.2f}x at NPROC={r['nproc']} ({each})" for r, each in zip(ratios, rounds)))
    generation = results["generation"]
    if generation:
        print(f"\ngeneration: greedy, {generation['tokens']} characters after {generation['prompt']!r}, batch 1, "
              f"{generation['threads']} thread(s), from {generation['source']}\n")
        print(generation_table(generation["rows"]))
    if generation and generation.get("kv_cache"):
        kv = generation["kv_cache"]
        print(f"\ngeneration with and without a KV cache: greedy, {kv['tokens']} characters after {kv['prompt']!r}, "
              "batch 1\n")
        print(generation_table(kv["rows"]))


def training_table(rows: list[dict], eta_steps: int) -> str:
    header = ["run", "recipe", "dtype", "NPROC", "threads/rank", "steps/s", "rounds", "tokens/s", "ms/step", "MFU",
              "vs textbook", f"{eta_steps}-step ETA"]
    lines = [[r["run"], r["recipe"] or "-", r["dtype"], r["nproc"], r["threads_per_rank"], f"{r['steps_per_s']:.2f}",
              rounds_cell(r), f"{r['tokens_per_s']:,.0f}",
              f"{r['ms_per_step']:.0f}", f"{100 * r['mfu']:.1f}%", f"{r['speedup_vs_textbook']:.2f}x",
              _duration(r["eta_s"])] for r in rows]
    return format_table(header, lines)


def rounds_cell(row: dict) -> str:
    """Every round's steps/s of a row, in the order they ran."""
    return " ".join(f"{s:.2f}" for s in row["steps_per_s_by_round"])


def generation_table(rows: list[dict]) -> str:
    header = ["format", "runtime", "tokens/s", "ms/token"]
    lines = [[r["format"], r["runtime"], f"{r['tokens_per_s']:.0f}", f"{r['ms_per_token']:.2f}"]
             if "not_measured" not in r else [r["format"], r["runtime"], f"not measured: {r['not_measured']}", ""]
             for r in rows]
    return format_table(header, lines)


def _duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


def format_table(header: list, lines: list[list]) -> str:
    cells = [[str(c) for c in row] for row in [header, *lines]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]

    def fmt(row):  # first column left-aligned, numbers right-aligned
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))

    return "\n".join([fmt(cells[0]), "  ".join("-" * w for w in widths), *map(fmt, cells[1:])])
