"""python -m bench.scaling: the scaling model fitted to bench.link's results, its predictions to 64 nodes, a plot.

A node is one rank (one core of the measured CPU). At N nodes, with the global batch B fixed at
32 windows, one step takes

    compute(N)   = per_window x B/N + fixed + sum over Muon's shapes of ceil(count/N) x newton_schulz
    allreduce(N) = 2(N-1)/N x gradient bytes / bandwidth + 2(N-1) x latency      (ring)
    allgather(N) = (N-1) x Muon's share bytes(N) / bandwidth + (N-1) x latency   (ring)
    loss(N)      = 2(N-1) x latency                                             (the loss's all-reduce)
    hidden(N)    = min(overlap x allreduce(N), BACKWARD_SHARE x per_window x B/N)
    step(N)      = compute(N) + allreduce(N) - hidden(N) + allgather(N) + loss(N)

Every rank computes its B/N windows and 1/N of Muon's Newton-Schulz (shares rounded up, as Muon
pads them), and the rest of the step (AdamW, the weights' average) in full. DDP all-reduces the
gradients (3.3 MB in fp32, half with --grad-compression bf16) in buckets during the backward pass,
so part of it hides behind the backward still to run (`overlap`); Muon's all-gather of its
orthogonalised updates and the loss's all-reduce come after it and hide behind nothing.
The constants are measured by bench.link: the compute ones in one process of one thread at
batches of 32, 16 and 8, the latency from the loss's all-reduce alone, the bandwidth of each link
rate from the gradients' all-reduce alone, and the overlap from the two-machine steps themselves.
"""

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

from bench.link_report import ONE_MACHINE, link_table, rate_label
from common.cli import OneLineParser, UsageError, command
from common.files import atomic_write

GLOBAL_BATCH = 32
NODES = (2, 4, 8, 16, 32, 64)
# The backward pass is about two thirds of a step's forward and backward (twice the forward's
# matmuls): the all-reduce can hide behind no more than that.
BACKWARD_SHARE = 2 / 3
COMPRESSED_BYTES = {"none": 1.0, "bf16": 0.5}


def batch_at(nodes: int) -> int:
    """The global batch at `nodes`: 32, or one window a rank where 32 windows do not go round."""
    return max(GLOBAL_BATCH, nodes)


def compute_ms(c: dict, nodes: int) -> float:
    ns = sum(math.ceil(count / nodes) * c["newton_schulz_ms"][f"{rows}x{cols}"] for count, rows, cols in c["stacks"])
    return c["per_window_ms"] * batch_at(nodes) / nodes + c["fixed_ms"] + ns


def allreduce_ms(c: dict, nodes: int, bandwidth: float, compression: str) -> float:
    """Ring all-reduce of the gradients: each rank sends and receives 2(N-1)/N of them, in 2(N-1) hops."""
    size = c["gradient_bytes"] * COMPRESSED_BYTES[compression]
    return 1000 * 2 * (nodes - 1) / nodes * size / bandwidth + 2 * (nodes - 1) * c["latency_ms"]


def update_share_bytes(c: dict, nodes: int) -> int:
    """The bytes of Muon's orthogonalised updates one rank computes and sends (its padded share)."""
    return sum(math.ceil(count / nodes) * rows * cols for count, rows, cols in c["stacks"]) * c["update_element_bytes"]


def allgather_ms(c: dict, nodes: int, bandwidth: float) -> float:
    """Ring all-gather of Muon's updates: each rank receives the N-1 other shares, in N-1 hops."""
    return 1000 * (nodes - 1) * update_share_bytes(c, nodes) / bandwidth + (nodes - 1) * c["latency_ms"]


def step_ms(c: dict, nodes: int, bandwidth: float, compression: str, overlap: float | None = None) -> dict:
    """The model's step at `nodes`, in its parts (ms)."""
    overlap = c["overlap"] if overlap is None else overlap
    allreduce = allreduce_ms(c, nodes, bandwidth, compression)
    parts = {"compute": compute_ms(c, nodes), "allreduce": allreduce,
             "hidden": min(overlap * allreduce, BACKWARD_SHARE * c["per_window_ms"] * batch_at(nodes) / nodes),
             "allgather": allgather_ms(c, nodes, bandwidth), "loss": 2 * (nodes - 1) * c["latency_ms"]}
    parts["step"] = parts["compute"] + parts["allreduce"] - parts["hidden"] + parts["allgather"] + parts["loss"]
    return parts


def line_fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares slope and intercept."""
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    return slope, my - slope * mx


def compute_constants(compute: dict) -> dict:
    """per_window_ms and fixed_ms from the one-process steps at several batches, Newton-Schulz apart."""
    batches = sorted(compute["step_ms_by_batch"], key=int)
    per_window, intercept = line_fit([int(b) for b in batches], [compute["step_ms_by_batch"][b] for b in batches])
    ns = compute["newton_schulz_ms_per_matrix"]
    full_ns = sum(count * ns[f"{rows}x{cols}"] for count, rows, cols in compute["muon_stacks"])
    return {"per_window_ms": per_window, "fixed_ms": intercept - full_ns, "newton_schulz_ms": ns,
            "stacks": compute["muon_stacks"], "update_element_bytes": 2 if compute["dtype"] == "bf16" else 4,
            "one_process_ms": compute["step_ms_by_batch"][str(GLOBAL_BATCH)], "compute_scale": 1.0}


def compute_scale(c: dict, one_machine: dict, bandwidth: float) -> float:
    """The factor that makes the model's step of NPROC=2 on one machine the measured one.

    The one-process job gives the compute's shape (per window, per step, Newton-Schulz); the
    two-rank job on one machine gives its level, as a rank of two on this machine's cores
    computes, under the load the two-machine jobs of the same rounds met (other processes on the
    machine slow all of them alike)."""
    parts = step_ms(c, 2, bandwidth, "none")
    return (one_machine["ms_per_step"] - (parts["step"] - parts["compute"])) / parts["compute"]


def scaled(c: dict, factor: float) -> dict:
    return {**c, "per_window_ms": c["per_window_ms"] * factor, "fixed_ms": c["fixed_ms"] * factor,
            "newton_schulz_ms": {shape: ms * factor for shape, ms in c["newton_schulz_ms"].items()},
            "compute_scale": c["compute_scale"] * factor}


def link_constants(rows: list[dict]) -> tuple[float, dict]:
    """The latency per hop (median over the links) and each link's bandwidth, from the collectives alone:
    at N=2, the loss's all-reduce is 2 hops and the gradients' all-reduce sends their bytes once."""
    collectives = {r["link"]: r["collectives"] for r in rows}
    latency = statistics.median(c["allreduce_loss_ms"] / 2 for c in collectives.values())
    bandwidth = {link: c["gradient_bytes_fp32"] / ((c["allreduce_fp32_ms"] - 2 * latency) / 1000)
                 for link, c in collectives.items()}
    return latency, bandwidth


def fitted_overlap(c: dict, rows: list[dict], bandwidth: dict) -> float:
    """The fraction of the all-reduce the measured two-rank steps hid, least squares over the rows of
    hidden = no-overlap model - measured = overlap x all-reduce: the slow links, whose all-reduce is
    long, weigh most (on a fast one the few ms it lasts drown in the step's noise). Kept in [0, 1]."""
    pairs = []
    for row in rows:
        parts = step_ms(c, 2, bandwidth[row["link"]], row["compression"], overlap=0.0)
        pairs.append((parts["allreduce"], parts["step"] - row["ms_per_step"]))
    return min(1.0, max(0.0, sum(a * h for a, h in pairs) / sum(a * a for a, _ in pairs)))


def fit(results: dict) -> dict:
    """The model's constants from bench.link's results, its check against every measured row, its predictions."""
    c = compute_constants(results["compute"])
    c["latency_ms"], bandwidth = link_constants(results["rows"])
    c["gradient_bytes"] = results["rows"][0]["collectives"]["gradient_bytes_fp32"]
    c["bandwidth_bytes_per_s"] = bandwidth
    c["overlap"] = 0.0
    one = next(r for r in results["rows"] if r["link"] == ONE_MACHINE and r["compression"] == "none")
    links = [r for r in results["rows"] if r["link"] != ONE_MACHINE]
    # The scale and the overlap each move the other a little (one machine's all-reduce hides too):
    # a few rounds settle both.
    for _ in range(20):
        c = scaled(c, compute_scale(c, one, bandwidth[ONE_MACHINE]))
        c["overlap"] = fitted_overlap(c, links, bandwidth)
    checks = [{"link": r["link"], "compression": r["compression"], "measured_ms": r["ms_per_step"],
               "predicted_ms": step_ms(c, 2, bandwidth[r["link"]], r["compression"])["step"],
               "no_overlap_ms": step_ms(c, 2, bandwidth[r["link"]], r["compression"], overlap=0.0)["step"]}
              for r in results["rows"]]
    rates = [link for link in bandwidth if link != ONE_MACHINE]
    predictions = [{"link": link, "compression": compression, "nodes": n, "batch": batch_at(n),
                    **step_ms(c, n, bandwidth[link], compression)}
                   for link in rates for compression in COMPRESSED_BYTES for n in NODES]
    c["one_node_ms"] = compute_ms(c, 1)
    return {"constants": c, "checks": checks, "predictions": predictions}


def merged(runs: list[dict]) -> dict:
    """Several bench.link results as one, as the bench keeps a row's fastest round: each row's fastest
    step over all their rounds (every round's figure kept), each collective's and each compute time's
    fastest. Other processes only ever slow a figure down, so the fastest is the least disturbed."""
    first = runs[0]
    compute = {**first["compute"],
               "step_ms_by_batch": {b: min(r["compute"]["step_ms_by_batch"][b] for r in runs)
                                    for b in first["compute"]["step_ms_by_batch"]},
               "newton_schulz_ms_per_matrix": {shape: min(r["compute"]["newton_schulz_ms_per_matrix"][shape]
                                                          for r in runs)
                                               for shape in first["compute"]["newton_schulz_ms_per_matrix"]}}
    rows = []
    for i, row in enumerate(first["rows"]):
        same = [r["rows"][i] for r in runs]
        fastest = min(same, key=lambda r: r["ms_per_step"])
        rows.append({**fastest, "steps_per_s_by_round": [s for r in same for s in r["steps_per_s_by_round"]],
                     "collectives": {name: min(r["collectives"][name] for r in same) for name in row["collectives"]}})
    setup = {**first["setup"], "rounds": sum(r["setup"]["rounds"] for r in runs), "runs": len(runs)}
    return {**first, "setup": setup, "compute": compute, "rows": rows}


def model_report(model: dict) -> str:
    c = model["constants"]
    ns = ", ".join(f"{shape} {ms:.2f} ms" for shape, ms in c["newton_schulz_ms"].items())
    lines = ["the scaling model's constants (one rank = one thread):",
             f"  compute: {c['per_window_ms']:.2f} ms a window + {c['fixed_ms']:.1f} ms a step + Newton-Schulz "
             f"per matrix ({ns}); one node, batch 32: {c['one_node_ms']:.0f} ms",
             f"  (the one-process job's times x {c['compute_scale']:.2f}: the model's NPROC=2 step on one machine "
             "is the measured one)",
             f"  latency {1000 * c['latency_ms']:.0f} us a hop; overlap: {c['overlap']:.0%} of the all-reduce hidden "
             f"(at most {BACKWARD_SHARE:.2f} of the windows' compute)",
             "  bandwidth: " + ", ".join(f"{rate_label(link)} {bw / 1e6:.0f} MB/s"
                                         for link, bw in c["bandwidth_bytes_per_s"].items()),
             "", "checked against the measured two-rank steps (ms):",
             f"  {'link':<13} {'compression':<11} {'measured':>8} {'model':>8} {'off by':>7} {'no overlap':>10}"]
    for k in model["checks"]:
        off = k["predicted_ms"] / k["measured_ms"] - 1
        lines.append(f"  {rate_label(k['link']):<13} {k['compression']:<11} {k['measured_ms']:>8.1f} "
                     f"{k['predicted_ms']:>8.1f} {off:>+7.0%} {k['no_overlap_ms']:>10.1f}")
    lines += ["", "predicted steps/s (global batch 32; at 64 nodes 64, one window a rank), "
              f"one node: {1000 / c['one_node_ms']:.2f}:",
              f"  {'link':<13} {'compression':<11} " + " ".join(f"{n:>6}" for n in NODES)]
    by_line: dict[tuple, list] = {}
    for p in model["predictions"]:
        by_line.setdefault((p["link"], p["compression"]), []).append(1000 / p["step"])
    for (link, compression), speeds in by_line.items():
        lines.append(f"  {rate_label(link):<13} {compression:<11} " + " ".join(f"{s:>6.2f}" for s in speeds))
    return "\n".join(lines)


def plot(model: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    c = model["constants"]
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    by_line: dict[tuple, list] = {}
    for p in model["predictions"]:
        by_line.setdefault((p["link"], p["compression"]), []).append((p["nodes"], 1000 / p["step"]))
    colours = {link: f"C{i}" for i, link in enumerate(dict.fromkeys(link for link, _ in by_line))}
    for (link, compression), points in by_line.items():
        style = "-" if compression == "none" else "--"
        ax.plot(*zip(*points), style, color=colours[link], marker=".", label=f"{rate_label(link)}, {compression}")
    for k in model["checks"]:
        if k["link"] != ONE_MACHINE:
            ax.plot(2, 1000 / k["measured_ms"], "kx")
    ax.plot([], [], "kx", label="measured, 2 nodes")
    ax.axhline(1000 / c["one_node_ms"], color="grey", lw=0.8, label="one node")
    ax.set(xscale="log", yscale="log", xlabel="nodes (one rank of one thread each)", ylabel="steps/s",
           title="Predicted steps/s, global batch 32 (64 at 64 nodes)")
    ax.xaxis.set_minor_locator(ticker.NullLocator())
    ax.set_xticks(NODES, [str(n) for n in NODES])
    ax.yaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
    ax.yaxis.set_minor_formatter(ticker.FormatStrFormatter("%g"))
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)


@command
def main(argv: list[str]) -> int:
    p = OneLineParser(prog="python -m bench.scaling", description=__doc__.splitlines()[0].split(": ", 1)[1])
    p.add_argument("results", type=Path, nargs="+", help="python -m bench.link's JSON (make bench-link writes "
                   "bench/link.json); several: each figure's fastest over all of them")
    p.add_argument("--plot", type=Path, help="draw the predictions into this PNG")
    args: argparse.Namespace = p.parse_args(argv)
    runs = []
    for path in args.results:
        try:
            runs.append(json.loads(path.read_text()))
        except (OSError, ValueError) as exc:
            raise UsageError(f"cannot read {path} ({exc}): run make bench-link first, or name its JSON") from None
    results = merged(runs)
    model = fit(results)
    print(link_table(results), end="\n\n")
    print(model_report(model))
    if args.plot:
        plot(model, args.plot)
        print(f"drawn into {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
