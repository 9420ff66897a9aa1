"""bench.data's parts that run no process: its flags, the generated corpus, and the reading of
/proc for a process's mapped token file."""

import os

import numpy as np
import pytest

from bench.data import descendants, generate, parse_args, process_memory, token_map_kb
from common.cli import UsageError
from trainer.forked import PR_SET_NAME


def test_sizes_are_whole_megabytes():
    assert parse_args(["--sizes", "1,100"]).sizes == [1, 100]


@pytest.mark.parametrize("sizes", ["", "1,,2", "0", "1.5", "-3", "a"])
def test_other_sizes_are_one_line(sizes):
    with pytest.raises(UsageError, match="--sizes"):
        parse_args(["--sizes", sizes])


def test_a_process_count_that_does_not_split_the_batch_is_refused():
    with pytest.raises(UsageError, match="--nproc"):
        parse_args(["--nproc", "3"])


@pytest.mark.parametrize("size", [1000, 5000])
def test_the_generated_corpus_is_the_source_repeated_to_whole_lines(tmp_path, size):
    source = "Ἀχιλλεύς:\nSing, goddess.\n".encode()
    path = tmp_path / "c.txt"
    generate(path, size, source)
    data = path.read_bytes()
    assert size - 4096 < len(data) <= size and data.endswith(b"\n")
    assert data == (source * (size // len(source) + 1))[:len(data)]
    data.decode("utf-8")  # no character cut


def test_the_token_maps_resident_pages_are_counted(tmp_path):
    path = tmp_path / "ids.bin"
    path.write_bytes(b"\1" * (64 << 10))
    ids = np.memmap(path, dtype=np.uint8, mode="r")
    assert int(ids[::4096].sum()) == 16  # every page touched
    assert token_map_kb(os.getpid(), str(path)) >= 60
    assert token_map_kb(os.getpid(), str(tmp_path / "other.bin")) == 0
    del ids


def test_descendants_start_with_the_process_itself():
    assert descendants(os.getpid())[0] == os.getpid()


def test_a_rank_that_has_ended_and_awaits_its_parent_is_not_sampled():
    import ctypes
    import time

    pid = os.fork()
    if pid == 0:  # a worker's name, then the end: a zombie until waited for
        ctypes.CDLL(None).prctl(PR_SET_NAME, b"rank 0")
        os._exit(0)
    try:
        deadline = time.monotonic() + 10
        while open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert process_memory(pid, "no-token-file") is None
    finally:
        os.waitpid(pid, 0)
    assert process_memory(os.getpid(), "no-token-file") is None  # neither a rank nor the launcher
