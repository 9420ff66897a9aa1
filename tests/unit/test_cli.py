"""common: the @command plumbing, whole-or-nothing writes, the write probe and the vocabulary."""

import gc
import os
import sys

import pytest

from common.cli import CommandFailed, OneLineParser, UsageError, command, lasting_imports
from common.files import atomic_write, check_writable
from common.vocab import decode, encode


@pytest.fixture(autouse=True)
def rank_zero(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)  # as a plain python -m, not a torchrun rank


@command
def usage_error(argv):
    raise UsageError("x: do y")


@command
def failed(argv):
    raise CommandFailed("the run crashed")


@command
def echo(argv):
    echo.seen = argv
    return 5


def test_usage_error_is_status_2_and_one_line_on_stderr(capsys):
    assert usage_error([]) == 2
    out, err = capsys.readouterr()
    assert err == "error: x: do y\n" and out == ""


def test_command_failed_is_status_1_and_one_line_on_stderr(capsys):
    assert failed([]) == 1
    assert capsys.readouterr().err == "error: the run crashed\n"


def test_other_ranks_of_a_node_print_nothing_but_keep_the_status(monkeypatch, capsys):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert usage_error([]) == 2
    assert failed([]) == 1
    assert capsys.readouterr() == ("", "")


def test_the_first_rank_of_every_node_prints_the_line(monkeypatch, capsys):
    monkeypatch.setenv("RANK", "2")  # node 1's first rank, two ranks a node: its machine's console shows it
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert usage_error([]) == 2
    assert capsys.readouterr().err == "error: x: do y\n"


def test_the_status_of_a_normal_run_passes_through(capsys):
    assert echo(("--a", "b")) == 5
    assert echo.seen == ["--a", "b"]  # a list, whatever sequence was passed
    assert capsys.readouterr() == ("", "")


def test_argv_none_reads_the_command_line(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["prog", "--steps", "3"])
    echo()
    assert echo.seen == ["--steps", "3"]


def test_a_bug_is_not_swallowed():
    @command
    def buggy(argv):
        raise KeyError("oops")

    with pytest.raises(KeyError):
        buggy([])


def test_parser_error_is_a_usage_error_naming_help():
    p = OneLineParser(prog="python -m thing")
    p.add_argument("--n", type=int)
    with pytest.raises(UsageError, match=r"argument --n: invalid int value: 'x' \(see python -m thing --help\)"):
        p.parse_args(["--n", "x"])


def test_parser_error_through_command_is_one_line(capsys):
    @command
    def main(argv):
        OneLineParser(prog="prog").parse_args(argv)
        return 0

    assert main(["--nope"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: unrecognized arguments: --nope") and "--help" in err


def test_lasting_imports_run_without_the_collector_then_freeze_what_they_made():
    frozen = gc.get_freeze_count()
    try:
        with lasting_imports():
            assert not gc.isenabled()
            made = [[] for _ in range(100)]
        assert gc.isenabled() and gc.get_freeze_count() >= frozen + len(made)
        with pytest.raises(KeyError), lasting_imports():  # an import that fails turns it back on too
            raise KeyError
        assert gc.isenabled()
    finally:
        gc.unfreeze()


# common.files

def test_atomic_write_writes_the_bytes(tmp_path):
    atomic_write(tmp_path / "f.bin", lambda f: f.write(b"\x00new\xff"))
    assert (tmp_path / "f.bin").read_bytes() == b"\x00new\xff"
    assert os.listdir(tmp_path) == ["f.bin"]


def test_atomic_write_gives_the_usual_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write(tmp_path / "f.bin", lambda f: f.write(b"x"))
    finally:
        os.umask(old)
    assert (tmp_path / "f.bin").stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600


def test_a_failed_write_leaves_the_previous_file_and_no_temporary(tmp_path):
    (tmp_path / "f.bin").write_bytes(b"previous")

    def half_then_fail(f):
        f.write(b"half of the new")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(tmp_path / "f.bin", half_then_fail)
    assert (tmp_path / "f.bin").read_bytes() == b"previous"
    assert os.listdir(tmp_path) == ["f.bin"]


def test_check_writable_creates_the_folder_and_leaves_it_empty(tmp_path):
    check_writable(tmp_path / "a" / "b")
    assert (tmp_path / "a" / "b").is_dir() and os.listdir(tmp_path / "a" / "b") == []


def test_check_writable_refuses_a_file_where_a_folder_should_be(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(OSError):
        check_writable(tmp_path / "file")
    with pytest.raises(OSError):
        check_writable(tmp_path / "file" / "sub")


def test_check_writable_refuses_a_read_only_folder(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        if os.geteuid() != 0:  # root writes anyway
            with pytest.raises(PermissionError):
                check_writable(folder)
        else:
            check_writable(folder)
        assert os.listdir(folder) == []
    finally:
        folder.chmod(0o755)


# common.vocab

def test_encode_then_decode_round_trips():
    vocab = " !abc\n"
    ids = encode(vocab, "cab !\n")
    assert ids == [4, 2, 3, 0, 1, 5]
    assert decode(vocab, ids) == "cab !\n"


def test_encode_names_the_characters_outside_the_vocabulary():
    with pytest.raises(UsageError, match=r"outside the vocabulary: 'XZ'"):
        encode("abc", "aZbXZ")


@pytest.mark.parametrize("value", ["-Infinity", "-inf", "-nan", "-1e-3", "-2.5E+4", "-.5", "-7"])
def test_a_negative_number_of_any_form_is_the_flags_value(value):
    """A value such as -Infinity reaches the flag, whose own check names it (argparse alone reads it as a flag)."""
    p = OneLineParser(prog="prog")
    p.add_argument("--rate", type=float)
    assert str(p.parse_args(["--rate", value]).rate) == str(float(value))
