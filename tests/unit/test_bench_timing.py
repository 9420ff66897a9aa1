"""bench.timing's check that the machine is idle before a benchmark: /proc/stat's ticks, busy cores."""

import pytest

from bench import timing
from bench.timing import busy_cores, cpu_jiffies, warn_if_busy


def test_cpu_jiffies_counts_all_but_idle_and_iowait_as_busy(tmp_path):
    stat = tmp_path / "stat"
    stat.write_text("cpu  100 5 50 800 20 1 2 3 0 0\ncpu0 50 2 25 400 10 0 1 1 0 0\n")
    assert cpu_jiffies(stat) == (100 + 5 + 50 + 1 + 2 + 3, 100 + 5 + 50 + 800 + 20 + 1 + 2 + 3)


@pytest.mark.parametrize("text", [None, "", "cpu  a b c\n"])
def test_cpu_jiffies_is_none_without_a_readable_proc_stat(tmp_path, text):
    stat = tmp_path / "stat"
    if text is not None:
        stat.write_text(text)
    assert cpu_jiffies(stat) is None


def test_busy_cores_is_the_busy_share_of_the_ticks_times_the_cores():
    assert busy_cores((100, 1000), (150, 1100), cores=2) == pytest.approx(1.0)
    assert busy_cores((100, 1000), (100, 1000), cores=2) == 0.0  # no tick between the readings


@pytest.mark.parametrize("after, warned", [((190, 1100), True), ((120, 1100), False)])
def test_warn_if_busy_warns_when_over_half_the_cores_are_busy(monkeypatch, capsys, after, warned):
    readings = iter([(100, 1000), after])
    monkeypatch.setattr(timing, "cpu_jiffies", lambda: next(readings))
    busy = warn_if_busy(cores=2, seconds=0)
    assert busy == pytest.approx(2 * (after[0] - 100) / 100)
    err = capsys.readouterr().err
    assert ("warning: 1.8 of 2 cores busy before the bench" in err) == warned and (err == "") != warned


def test_warn_if_busy_falls_back_to_the_load_average_without_proc_stat(monkeypatch, capsys):
    monkeypatch.setattr(timing, "cpu_jiffies", lambda: None)
    monkeypatch.setattr(timing.os, "getloadavg", lambda: (3.0, 2.0, 1.0))
    assert warn_if_busy(cores=2) == 3.0
    assert "warning: load average 3.0 on 2 cores before the bench" in capsys.readouterr().err
