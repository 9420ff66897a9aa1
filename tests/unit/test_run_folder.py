"""trainer.run_folder: which checkpoint a run continues, and the lock that keeps a folder to one run."""

import fcntl
import os

import pytest

from common.cli import UsageError
from tests.unit.test_checkpoint import a_checkpoint
from trainer import checkpoint
from trainer.run_folder import LOCK_NAME, RunFolder, acquire, release


def save(path, run_id: str) -> None:
    checkpoint.save(path, checkpoint.Checkpoint(**a_checkpoint(run_id=run_id, step=3)))


def test_a_fresh_run_starts_from_scratch_whatever_the_folder_holds(tmp_path):
    save(tmp_path / "model.pt", "earlier")
    assert RunFolder(tmp_path).checkpoint_to_resume(None, run_id="", restart=0) is None


def test_resume_reads_the_folders_checkpoint_or_the_one_named(tmp_path):
    save(tmp_path / "model.pt", "earlier")
    save(tmp_path / "other.pt", "another")
    folder = RunFolder(tmp_path)
    assert folder.checkpoint_to_resume("", run_id="now", restart=0).run_id == "earlier"
    assert folder.checkpoint_to_resume(str(tmp_path / "other.pt"), run_id="now", restart=0).run_id == "another"


def test_a_restarted_worker_continues_its_own_runs_checkpoint_only(tmp_path):
    folder = RunFolder(tmp_path)
    assert folder.checkpoint_to_resume(None, run_id="now", restart=1) is None  # none saved yet
    save(tmp_path / "model.pt", "earlier")
    assert folder.checkpoint_to_resume(None, run_id="now", restart=1) is None  # an earlier run's
    save(tmp_path / "model.pt", "now")
    assert folder.checkpoint_to_resume(None, run_id="now", restart=1).step == 3


def test_a_missing_checkpoint_on_resume_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        RunFolder(tmp_path).checkpoint_to_resume("", run_id="", restart=0)


def test_claim_refuses_a_folder_another_process_holds_and_check_only_keeps_nothing(tmp_path):
    fd = os.open(tmp_path / LOCK_NAME, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another open file: as another process would hold it
    try:
        with pytest.raises(UsageError, match="is in use by another training run"):
            RunFolder(tmp_path).claim()
    finally:
        os.close(fd)
    RunFolder(tmp_path).claim(check_only=True)
    fd = os.open(tmp_path / LOCK_NAME, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free: the check did not keep it
    finally:
        os.close(fd)
    acquire(tmp_path)
    release(tmp_path)


def test_claim_refuses_a_file_where_the_folder_should_be_and_abandon_leaves_it(tmp_path):
    (tmp_path / "a-file").write_text("not a folder")
    for out in (tmp_path / "a-file", tmp_path / "a-file" / "out"):
        folder = RunFolder(out)
        with pytest.raises(UsageError, match="^cannot write to --out"):
            folder.claim()
        folder.abandon()  # what the trainer does next: nothing to undo, and no error of its own
    assert (tmp_path / "a-file").read_text() == "not a folder"


@pytest.mark.parametrize("name, make, words", [
    ("model.pt", os.mkdir, "model.pt is a directory, not a file"),
    ("metrics.jsonl", os.mkfifo, "metrics.jsonl is a FIFO (named pipe), not a file"),
    (LOCK_NAME, os.mkdir, f"{LOCK_NAME} is a directory"),
    ("model.onnx", os.mkdir, "model.onnx is a directory"),
    ("tensorboard", lambda path: open(path, "w").close(), "tensorboard is not a folder"),
    ("hf", lambda path: open(path, "w").close(), "hf is not a folder"),
])
def test_claim_refuses_what_stands_where_the_run_writes(tmp_path, name, make, words):
    make(tmp_path / name)
    with pytest.raises(UsageError) as caught:
        RunFolder(tmp_path).claim(check_only=True)
    assert words in str(caught.value) and "choose another --out" in str(caught.value)


def test_claim_takes_a_folder_of_an_earlier_run(tmp_path):
    for name in ("model.pt", "metrics.jsonl", "loss.png", LOCK_NAME):
        (tmp_path / name).write_text("")
    (tmp_path / "hf").mkdir()
    RunFolder(tmp_path).claim(check_only=True)


def test_a_refused_run_leaves_no_trace_of_its_claim(tmp_path):
    made = RunFolder(tmp_path / "a" / "b")
    made.claim()
    made.abandon()
    assert not (tmp_path / "a").exists()  # the folders it made are gone again
    existing = RunFolder(tmp_path)
    existing.claim()
    existing.abandon()
    assert list(tmp_path.iterdir()) == []  # the lock file it made is gone, the folder stays
    acquire(tmp_path)  # and the folder can be taken again
    release(tmp_path)


def test_abandon_keeps_an_earlier_runs_lock_file_and_anothers_claim(tmp_path):
    (tmp_path / LOCK_NAME).write_text("pid 1 on earlier\n")
    earlier = RunFolder(tmp_path)
    earlier.claim()
    earlier.abandon()
    assert (tmp_path / LOCK_NAME).exists()
    dry = RunFolder(tmp_path / "new")
    dry.claim(check_only=True)  # the dry run checks and lets go
    fd = os.open(tmp_path / "new" / LOCK_NAME, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another run takes the folder meanwhile
    try:
        dry.abandon()
        assert (tmp_path / "new" / LOCK_NAME).exists()  # its lock file stays
    finally:
        os.close(fd)


def test_claim_removes_the_temporary_files_a_killed_run_left_and_only_those(tmp_path):
    left = [tmp_path / ".model.pt.k2j4.tmp", tmp_path / ".loss.png.x1.tmp"]
    kept = [tmp_path / ".model.json.a.tmp", tmp_path / "model.pt", tmp_path / "notes.tmp"]
    for path in left + kept:
        path.write_bytes(b"x")
    RunFolder(tmp_path).claim(check_only=True)  # the dry run holds no lock: it leaves them
    assert all(path.exists() for path in left)
    RunFolder(tmp_path).claim()
    release(tmp_path)
    assert not any(path.exists() for path in left) and all(path.exists() for path in kept)
