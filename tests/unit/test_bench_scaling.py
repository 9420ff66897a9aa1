"""bench.link's pure parts (link rates, the table's figures) and bench.scaling's model: its formula and its fit."""

import pytest

from bench import scaling
from bench.link import parse_rates
from bench.link_report import ONE_MACHINE, bits_per_s, link_rows, link_table, rate_label, tbf_burst
from common.cli import UsageError

STACKS = [[16, 128, 128], [8, 128, 512]]
NS_MS = {"128x128": 0.5, "128x512": 1.5}
CONSTANTS = {"per_window_ms": 10.0, "fixed_ms": 20.0, "newton_schulz_ms": NS_MS, "stacks": STACKS,
             "update_element_bytes": 4, "latency_ms": 0.1, "gradient_bytes": 3_300_000, "overlap": 0.25}


def test_link_rates_are_read_as_tc_writes_them():
    assert [bits_per_s(r) for r in ("100mbit", "10gbit", "1.5gbit", "64kbit")] == [1e8, 1e10, 1.5e9, 64e3]
    assert [rate_label(r) for r in ("10gbit", "100mbit", ONE_MACHINE)] == ["10 Gbit/s", "100 Mbit/s", ONE_MACHINE]
    for bad in ("fast", "0mbit", "10gbps", ""):
        with pytest.raises(ValueError):
            bits_per_s(bad)
    assert [tbf_burst(r) for r in ("100mbit", "1gbit", "10gbit")] == ["64kb", "244kb", "2441kb"]
    assert parse_rates("10gbit, 1gbit") == ["10gbit", "1gbit"]
    with pytest.raises(UsageError, match="^--rates: '1gb' is not a link rate"):
        parse_rates("10gbit,1gb")


def test_the_ring_all_reduce_sends_2_n_minus_1_over_n_of_the_bytes_in_2_n_minus_1_hops():
    bandwidth = 100e6  # bytes/s
    assert scaling.allreduce_ms(CONSTANTS, 2, bandwidth, "none") == pytest.approx(33.0 + 2 * 0.1)
    assert scaling.allreduce_ms(CONSTANTS, 4, bandwidth, "none") == pytest.approx(1.5 * 33.0 + 6 * 0.1)
    assert scaling.allreduce_ms(CONSTANTS, 4, bandwidth, "bf16") == pytest.approx(1.5 * 16.5 + 6 * 0.1)


def test_each_rank_computes_its_windows_and_its_padded_share_of_newton_schulz():
    # 2 nodes: 16 windows, 8 + 4 matrices; 32 nodes: 1 window, 1 + 1 (padded); 64 nodes: batch 64, 1 window.
    assert scaling.compute_ms(CONSTANTS, 2) == pytest.approx(160 + 20 + 8 * 0.5 + 4 * 1.5)
    assert scaling.compute_ms(CONSTANTS, 32) == pytest.approx(10 + 20 + 0.5 + 1.5)
    assert scaling.batch_at(64) == 64 and scaling.compute_ms(CONSTANTS, 64) == scaling.compute_ms(CONSTANTS, 32)
    # Muon's all-gather: each rank receives N-1 padded shares in N-1 hops.
    share = (8 * 128 * 128 + 4 * 128 * 512) * 4
    assert scaling.update_share_bytes(CONSTANTS, 2) == share
    assert scaling.allgather_ms(CONSTANTS, 2, 100e6) == pytest.approx(1000 * share / 100e6 + 0.1)


def test_the_step_hides_part_of_the_all_reduce_but_never_more_than_the_backward_pass():
    slow = scaling.step_ms(CONSTANTS, 2, 1e6, "none")  # a 3.3 s all-reduce: hidden up to 2/3 of 160 ms
    assert slow["hidden"] == pytest.approx(160 * 2 / 3)
    fast = scaling.step_ms(CONSTANTS, 2, 1e9, "none")
    assert fast["hidden"] == pytest.approx(0.25 * fast["allreduce"])
    assert fast["step"] == pytest.approx(fast["compute"] + 0.75 * fast["allreduce"] + fast["allgather"] + 0.2)


def results_from(c: dict, bandwidths: dict) -> dict:
    """What bench.link would measure on a machine that follows the model exactly."""
    full_ns = sum(count * NS_MS[f"{rows}x{cols}"] for count, rows, cols in STACKS)
    compute = {"step_ms_by_batch": {str(b): c["per_window_ms"] * b + c["fixed_ms"] + full_ns for b in (32, 16, 8)},
               "newton_schulz_ms_per_matrix": NS_MS, "muon_stacks": STACKS, "dtype": "fp32"}
    rows = []
    for link, bandwidth in bandwidths.items():
        collectives = {"allreduce_loss_ms": 2 * c["latency_ms"], "gradient_bytes_fp32": c["gradient_bytes"],
                       "allreduce_fp32_ms": scaling.allreduce_ms(c, 2, bandwidth, "none"),
                       "allreduce_bf16_ms": scaling.allreduce_ms(c, 2, bandwidth, "bf16")}
        for compression, loss in (("none", 3.5), ("bf16", 3.5002)):
            step = scaling.step_ms(c, 2, bandwidth, compression)["step"]
            rows.append({"link": link, "compression": compression, "ms_per_step": step, "steps_per_s": 1000 / step,
                         "steps_per_s_by_round": [1000 / step], "losses": [4.1, loss], "collectives": collectives})
    machine = {"cpu": "a CPU", "cores": 2, "torch": "2.13"}
    return {"machine": machine, "setup": {"warmup_steps": 2, "timed_steps": 8, "rounds": 1}, "compute": compute,
            "rows": rows}


def test_the_fit_gives_back_the_constants_of_a_machine_that_follows_the_model():
    bandwidths = {ONE_MACHINE: 500e6, "1gbit": 115e6, "100mbit": 12e6}
    model = scaling.fit(results_from(CONSTANTS, bandwidths))
    c = model["constants"]
    for name in ("per_window_ms", "fixed_ms", "latency_ms", "overlap"):
        assert c[name] == pytest.approx(CONSTANTS[name], rel=1e-4), name
    assert c["bandwidth_bytes_per_s"] == pytest.approx(bandwidths)
    assert all(k["predicted_ms"] == pytest.approx(k["measured_ms"], rel=1e-4) for k in model["checks"])
    nodes = [p["nodes"] for p in model["predictions"] if p["link"] == "1gbit" and p["compression"] == "bf16"]
    assert nodes == list(scaling.NODES)
    assert "one node" in scaling.model_report(model)


def test_the_table_compares_each_row_with_one_machine_and_with_its_uncompressed_twin():
    results = results_from(CONSTANTS, {ONE_MACHINE: 500e6, "100mbit": 12e6})
    rows = {(r["link"], r["compression"]): r for r in link_rows(results["rows"])}
    one, slow = rows[ONE_MACHINE, "none"], rows["100mbit", "bf16"]
    assert one["vs_one_machine"] == 1 and one["over_one_machine_ms"] == 0
    assert slow["vs_one_machine"] == pytest.approx(one["ms_per_step"] / slow["ms_per_step"])
    assert slow["over_one_machine_ms"] == pytest.approx(slow["ms_per_step"] - rows[ONE_MACHINE, "bf16"]["ms_per_step"])
    assert slow["allreduce_ms"] == slow["collectives"]["allreduce_bf16_ms"]
    assert slow["allreduce_share"] == pytest.approx(slow["allreduce_ms"] / slow["ms_per_step"])
    assert slow["loss_vs_uncompressed"] == pytest.approx(0.0002)
    table = link_table(results)
    assert "100 Mbit/s    bf16" in table and f"{slow['steps_per_s']:.2f}" in table


def test_several_runs_merge_into_each_figures_fastest_with_every_round_kept():
    quick = results_from(CONSTANTS, {ONE_MACHINE: 500e6, "100mbit": 12e6})
    slow = results_from({**CONSTANTS, "per_window_ms": 20.0, "latency_ms": 0.3}, {ONE_MACHINE: 400e6, "100mbit": 10e6})
    both = scaling.merged([slow, quick])
    assert both["compute"] == quick["compute"]
    assert [r["ms_per_step"] for r in both["rows"]] == [r["ms_per_step"] for r in quick["rows"]]
    assert [r["collectives"] for r in both["rows"]] == [r["collectives"] for r in quick["rows"]]
    assert both["rows"][0]["steps_per_s_by_round"] == [slow["rows"][0]["steps_per_s"], quick["rows"][0]["steps_per_s"]]
    assert both["setup"]["rounds"] == 2
