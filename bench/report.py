"""The bench's rows and tables: one row per training run, one per generation format."""

from bench.peak import mfu


def training_row(run: str, nproc: int, measured: dict, *, tokens_per_step: int, flops_per_step: int,
                 peak_gflops: float, baseline_steps_per_s: float, eta_steps: int) -> dict:
    steps_per_s = measured["steps_per_s"]
    return {
        "run": run,
        "nproc": nproc,
        "threads_per_rank": measured["threads_per_rank"],
        "steps_per_s": steps_per_s,
        "tokens_per_s": steps_per_s * tokens_per_step,
        "ms_per_step": measured["ms_per_step"],
        "mfu": mfu(flops_per_step, steps_per_s, peak_gflops),
        "speedup_vs_textbook": steps_per_s / baseline_steps_per_s,
        "eta_s": eta_steps / steps_per_s,
    }


def print_results(results: dict) -> None:
    """The tables, from the results JSON alone: what is printed is what is written."""
    machine, setup, rows = results["machine"], results["setup"], results["training"]
    print(f"\ntraining: global batch {setup['batch_size']} x {setup['block_size']} = {setup['tokens_per_step']} "
          f"tokens/step, {setup['flops_per_step'] / 1e9:.2f} GFLOP/step, {setup['warmup_steps']} warm-up + "
          f"{setup['timed_steps']} timed steps per run")
    print(f"MFU against the fp32 matmul peak at all {machine['cores']} cores ({machine['peak_threads']} threads): "
          f"{machine['peak_gflops']:.1f} GFLOP/s; the ETA counts training steps only (no evaluation)\n")
    print(training_table(rows, setup["eta_steps"]))
    best = next(r for r in rows[1:] if r["nproc"] == results["best_nproc"])
    print(f"\nbest NPROC on this machine: {best['nproc']} ({best['steps_per_s']:.2f} steps/s, "
          f"{best['speedup_vs_textbook']:.2f}x the textbook loop)")
    generation = results["generation"]
    if generation:
        print(f"\ngeneration: greedy, {generation['tokens']} characters after {generation['prompt']!r}, batch 1, "
              f"{generation['threads']} thread(s), from {generation['source']}\n")
        print(generation_table(generation["rows"]))


def training_table(rows: list[dict], eta_steps: int) -> str:
    header = ["run", "NPROC", "threads/rank", "steps/s", "tokens/s", "ms/step", "MFU",
              "vs textbook", f"{eta_steps}-step ETA"]
    lines = [[r["run"], r["nproc"], r["threads_per_rank"], f"{r['steps_per_s']:.2f}", f"{r['tokens_per_s']:,.0f}",
              f"{r['ms_per_step']:.0f}", f"{100 * r['mfu']:.1f}%", f"{r['speedup_vs_textbook']:.2f}x",
              _duration(r["eta_s"])] for r in rows]
    return format_table(header, lines)


def generation_table(rows: list[dict]) -> str:
    header = ["format", "runtime", "tokens/s", "ms/token"]
    lines = [[r["format"], r["runtime"], f"{r['tokens_per_s']:.0f}", f"{r['ms_per_token']:.2f}"] if "not_measured" not in r
             else [r["format"], r["runtime"], f"not measured: {r['not_measured']}", ""] for r in rows]
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
