"""trainer.stopping without processes: the one line of each cause, who prints it, and the stop requests."""

import os
import signal
from pathlib import Path

import pytest

from common.cli import EXIT_FAILED, EXIT_PEER_GONE
from common.dist_env import DistEnv
from trainer import stopping
from trainer.resume import STOP_SIGNALS
from trainer.stopping import Standing, Stopping, StopSignal

CHECKPOINT = Path("runs/a b/model.pt")
RESUME = "make train OUT=runs ARGS=--resume"


def standing(step: int = 40, saved_step: int | None = 40) -> Standing:
    return Standing(step, saved_step, CHECKPOINT, RESUME)


@pytest.fixture
def handlers():
    """The stop signals' handlers are put back after the test, whatever it installed."""
    before = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    yield
    for signum, handler in before.items():
        signal.signal(signum, handler)


@pytest.mark.parametrize("saved_step, expected", [
    (40, f"checkpoint saved to {CHECKPOINT}"),
    (30, f"the last good checkpoint, {CHECKPOINT} at step 30, is kept"),
    (None, f"{CHECKPOINT} is left as it was"),
])
def test_the_checkpoint_state_says_whether_this_step_was_saved(saved_step, expected):
    assert standing(40, saved_step).checkpoint_state() == expected


def test_a_stop_signal_is_two_lines_ending_in_the_resume_command_and_its_status_is_128_plus_the_signal():
    cause = StopSignal(signal.SIGINT)
    assert cause.line(standing()) == f"stopped at step 40: checkpoint saved to {CHECKPOINT}\nresume with: {RESUME}"
    assert cause.status == 128 + signal.SIGINT


def test_every_failure_is_one_error_line_with_the_checkpoint_state_once():
    where = standing(41, 40)
    lines = [stopping.Divergence(41, "the training loss is nan", 0.002, 0.0).line(where),
             stopping.SilentPeer("rank 1", 30).line(where), stopping.LostPeer().line(where),
             stopping.LastCheckpointLost("No space left").line(where)]
    for line in lines:
        assert line.startswith("error: ") and "\n" not in line
        assert line.count(where.checkpoint_state()) == 1
    assert lines[0] == (f"error: training diverged at step 41 (the training loss is nan), so it stopped; "
                        f"{where.checkpoint_state()}; try a lower --lr (now 0.002) or a gradient clip "
                        "(--grad-clip 1.0, now 0)")
    assert lines[1].startswith("error: rank 1 stopped answering: no reply within --timeout 30 s after step 41 ")
    assert all(line.endswith(f"resume with: {RESUME}") for line in lines[1:])
    assert "could not write the last checkpoint runs/a b/model.pt (No space left)" in lines[3]


@pytest.mark.parametrize("export, what", [(True, "the exports were not written"), (False, "loss.png was not written")])
def test_a_stop_after_the_last_step_names_make_export_with_the_path_quoted(export, what):
    cause = stopping.StoppedAfterLastStep(signal.SIGTERM, export)
    line = cause.line(standing())
    assert line.startswith(f"stopped by SIGTERM after the last step: the checkpoint {CHECKPOINT} is complete, "
                           f"but {what}")
    assert "make export CKPT='runs/a b/model.pt'" in line and cause.status == 128 + signal.SIGTERM


def test_a_stop_that_did_not_cut_the_writes_short_says_they_are_complete():
    cause = stopping.StoppedAfterLastStep(signal.SIGINT, True, finished=True)
    assert cause.line(standing()) == (f"stopped by SIGINT after the last step, too late to stop the writes: the "
                                      f"checkpoint {CHECKPOINT} and the exports are complete")
    assert cause.status == 128 + signal.SIGINT


ONE_NODE = DistEnv(rank=1, world_size=2, local_rank=1, local_world_size=2)
TWO_NODES_FIRST = DistEnv(rank=2, world_size=4, local_rank=0, local_world_size=2)
TWO_NODES_SECOND = DistEnv(rank=3, world_size=4, local_rank=1, local_world_size=2)


@pytest.mark.parametrize("silent, env, launched, expected", [
    ("rank 0", ONE_NODE, True, stopping.SilentPeer("rank 0", 30)),
    (None, ONE_NODE, True, stopping.PeerNamedElsewhere()),  # make train's launcher names the dead rank
    (None, ONE_NODE, False, stopping.LostPeer()),  # a bare torchrun: the survivors say it
    (None, TWO_NODES_FIRST, True, stopping.LostPeer()),  # a dead node: each other node's first process says it
    ("a rank other than 3", TWO_NODES_SECOND, True, stopping.PeerNamedElsewhere()),  # this node's first process says it
    ("a rank other than 3", TWO_NODES_SECOND, False, stopping.SilentPeer("a rank other than 3", 30)),
])
def test_a_failed_peer_is_named_once_per_machine(silent, env, launched, expected):
    assert stopping.peer_cause(silent, env, 30, launched) == expected


def test_who_prints_each_line_and_on_which_stream(capsys):
    second = DistEnv(rank=1, world_size=2, local_rank=1, local_world_size=2)
    assert Stopping(second).end(StopSignal(signal.SIGTERM), standing()) == 128 + signal.SIGTERM
    assert Stopping(second).end(stopping.Divergence(3, "x", 0.1, 0), standing()) == EXIT_FAILED
    assert Stopping(second).end(stopping.PeerNamedElsewhere(), standing()) == EXIT_PEER_GONE
    assert capsys.readouterr() == ("", "")  # the node's first process speaks for it
    assert Stopping(second).end(stopping.LostPeer(), standing()) == EXIT_FAILED
    assert capsys.readouterr().err.startswith("error: the connection to another rank closed after step 40 ")
    Stopping(DistEnv()).end(StopSignal(signal.SIGINT), standing())
    out, err = capsys.readouterr()
    assert out.startswith("stopped at step 40: ") and out.endswith(f"resume with: {RESUME}\n") and err == ""


def test_a_first_stop_signal_is_recorded_and_a_second_stops_at_once():
    stops = Stopping(DistEnv())
    assert not stops.requested
    stops.request(signal.SIGHUP)
    assert stops.requested and stops.stop_signal() == StopSignal(signal.SIGHUP)
    with pytest.raises(KeyboardInterrupt):
        stops.request(signal.SIGINT)
    assert stops.signum == signal.SIGHUP


def test_the_launchers_death_asks_to_stop_as_sigterm_without_hiding_an_earlier_signal(capsys):
    stops = Stopping(DistEnv())
    stops.launcher_gone(1234)
    assert stops.stop_signal() == StopSignal(signal.SIGTERM)
    assert capsys.readouterr().err == "warning: the launcher (torchrun, pid 1234) is gone: stopping after this step\n"
    earlier = Stopping(DistEnv(rank=1, world_size=2, local_rank=1, local_world_size=2))
    earlier.request(signal.SIGINT)
    earlier.launcher_gone(1234)
    assert earlier.signum == signal.SIGINT and capsys.readouterr().err == ""


def test_watching_installs_the_handlers_and_puts_back_the_previous_ones(handlers, monkeypatch):
    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)  # no launcher to watch
    before = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    stops = Stopping(DistEnv())
    with stops.watching():
        assert all(signal.getsignal(signum) == stops.request for signum in STOP_SIGNALS)
    assert {signum: signal.getsignal(signum) for signum in STOP_SIGNALS} == before


def test_after_a_stop_one_more_signal_ends_the_process_at_once(handlers, monkeypatch):
    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    stops = Stopping(DistEnv())
    with stops.watching():
        stops.request(signal.SIGINT)
    assert all(signal.getsignal(signum) is stopping.exit_at_once for signum in STOP_SIGNALS)


def test_a_signal_while_the_files_are_written_cuts_them_short_in_one_line(handlers, capsys):
    written = []

    def write():
        signal.raise_signal(signal.SIGTERM)
        written.append("after the signal")

    status = Stopping(DistEnv()).finish(write, standing(), export=True)
    assert status == 128 + signal.SIGTERM and written == []
    assert capsys.readouterr().err.startswith("stopped by SIGTERM after the last step: ")
    assert signal.getsignal(signal.SIGTERM) is stopping.exit_at_once


def test_files_written_without_a_signal_end_in_status_0_with_the_handlers_put_back(handlers, capsys):
    before = signal.getsignal(signal.SIGINT)
    assert Stopping(DistEnv()).finish(lambda: None, standing(), export=False) == 0
    assert signal.getsignal(signal.SIGINT) == before and capsys.readouterr() == ("", "")


def signalled_write(catch):
    """A write that gets SIGTERM in its middle; `catch` does what a library there does with the
    handler's exception."""
    def write():
        try:
            os.kill(os.getpid(), signal.SIGTERM)
        except BaseException as exc:
            catch(exc)
    return write


def convert(exc):
    raise ImportError("initialization failed") from exc


@pytest.mark.parametrize("catch, words", [
    (convert, "the exports were not written"),  # the writes stopped
    (lambda exc: None, "too late to stop the writes"),  # they went on to the end
])
def test_a_signal_during_the_writes_is_its_line_whatever_the_write_does_with_it(capsys, catch, words):
    handlers = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    try:
        assert Stopping(DistEnv()).finish(signalled_write(catch), standing(), export=True) == 128 + signal.SIGTERM
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("stopped by SIGTERM after the last step") and words in line
