"""python -m bench.link's table, from its results JSON alone: what is printed is what is written."""

import re

ONE_MACHINE = "one machine"
RATE_UNITS = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}


def bits_per_s(rate: str) -> float:
    """A link rate as tc writes it ("100mbit", "10gbit") in bits per second."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([kmg]?)bit", rate.strip().lower())
    if not match or float(match[1]) <= 0:
        raise ValueError(f"not a link rate: {rate!r}")
    return float(match[1]) * RATE_UNITS[match[2]]


def tbf_burst(rate: str) -> str:
    """The bucket tc's tbf needs to carry `rate`: 2 ms of it, and at least 64 KB (tests/netns.py
    has the figures: a bucket too small for the timer's ticks caps the link below its rate)."""
    return f"{max(64, round(bits_per_s(rate) / 8 * 0.002 / 1024))}kb"


def rate_label(link: str) -> str:
    """"10gbit" -> "10 Gbit/s"; the one-machine row keeps its name."""
    if link == ONE_MACHINE:
        return link
    bits = bits_per_s(link)
    unit, scale = next((u, s) for u, s in (("Gbit/s", 1e9), ("Mbit/s", 1e6), ("kbit/s", 1e3), ("bit/s", 1))
                       if bits >= s)
    return f"{bits / scale:g} {unit}"


def allreduce_ms(row: dict) -> float:
    """The gradient all-reduce alone, as the row's compression sends it."""
    return row["collectives"]["allreduce_bf16_ms" if row["compression"] == "bf16" else "allreduce_fp32_ms"]


def link_rows(rows: list[dict]) -> list[dict]:
    """Each row with what the table shows: its ratio to one machine's uncompressed steps/s, the
    all-reduce alone and its share of the step, the step's time over one machine's step of the
    same compression, and the last step's loss against the uncompressed run of the same link."""
    one = {r["compression"]: r for r in rows if r["link"] == ONE_MACHINE}
    plain = {r["link"]: r for r in rows if r["compression"] == "none"}
    shown = []
    for row in rows:
        step = row["ms_per_step"]
        shown.append({**row, "vs_one_machine": row["steps_per_s"] / one["none"]["steps_per_s"],
                      "allreduce_ms": allreduce_ms(row), "allreduce_share": allreduce_ms(row) / step,
                      "over_one_machine_ms": step - one[row["compression"]]["ms_per_step"],
                      "last_loss": row["losses"][-1],
                      "loss_vs_uncompressed": row["losses"][-1] - plain[row["link"]]["losses"][-1]})
    return shown


def link_table(results: dict) -> str:
    machine, setup = results["machine"], results["setup"]
    head = (f"{machine['cpu']}, {machine['cores']} cores, torch {machine['torch']}; 2 ranks of 1 thread, global batch "
            f"32 x 128, {setup['warmup_steps']} warm-up + {setup['timed_steps']} timed steps, the fastest of "
            f"{setup['rounds']} rounds ('rounds' lists each round's steps/s).\n"
            "all-reduce alone: the gradients' all-reduce timed by itself on that link (its share: of the row's "
            "step); over one machine: the row's step minus one machine's step of the same compression.\n")
    shown = link_rows(results["rows"])
    rounds = [" ".join(f"{s:.2f}" for s in r["steps_per_s_by_round"]) for r in shown]
    width = max(len("rounds"), *map(len, rounds))
    columns = (f"{'link':<13} {'compression':<11} {'steps/s':>7}  {'rounds':<{width}} {'vs one machine':>14}  "
               f"{'all-reduce alone':>16} {'share':>6}  {'over one machine':>16}  {'last loss':>9} {'vs none':>8}")
    lines = [head, columns]
    for r, by_round in zip(shown, rounds):
        lines.append(f"{rate_label(r['link']):<13} {r['compression']:<11} {r['steps_per_s']:>7.2f}  "
                     f"{by_round:<{width}} "
                     f"{r['vs_one_machine']:>13.2f}x  {r['allreduce_ms']:>13.1f} ms {r['allreduce_share']:>6.0%}  "
                     f"{r['over_one_machine_ms']:>13.1f} ms  {r['last_loss']:>9.4f} {r['loss_vs_uncompressed']:>+8.4f}")
    return "\n".join(lines)
