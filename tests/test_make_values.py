"""Every make target passes every variable it reads (make help's `#>` lines) to its program as one
word, as typed: a value with a space, a quote, a `$` and a newline arrives whole and unexpanded. The programs
are replaced by a stub (PY=..., PYTHON3=...) that records the argv and environment it receives, so
no target does its real work here."""

import json
import re
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, run
from tests.test_generate_input import assert_make_one_line_error

# A quote, a space, a `$` that make and the shell must both leave alone, and a newline (a prompt of
# two lines: make once ended the recipe's line there).
VALUE = "it's a b$x\nJULIET:"
DOCUMENTED = re.findall(r"^#> ([a-z-]+) ([A-Z_0-9]+) ", (ROOT / "Makefile").read_text(), re.MULTILINE)
SPLIT_ON_PURPOSE = {"ARGS"}  # more trainer flags: the shell splits them into words
READ_FROM_THE_ENVIRONMENT = {("test", "DATA"), ("train", "OMP_NUM_THREADS")}
STUB = f"""#!{sys.executable}
import json, os, sys
with open(os.environ["STUB_LOG"], "a") as log:
    log.write(json.dumps({{"program": sys.argv[0], "argv": sys.argv[1:], "env": dict(os.environ)}}) + "\\n")
"""


@pytest.fixture
def stub(tmp_path) -> Path:
    path = tmp_path / "python"
    path.write_text(STUB)
    path.chmod(0o755)
    return path


def calls(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def make(target: str, stub: Path, log: Path, *variables: str):
    # VENV elsewhere: install's recipe (PYTHON3) then runs in a scratch folder, not on .venv.
    venv = [f"VENV={log.parent / 'venv'}"] if target == "install" else [f"PY={stub}"]
    return run(["make", "--no-print-directory", target, *venv, *variables], STUB_LOG=log)


def test_the_makefile_documents_the_variables_of_every_target():
    targets = {target for target, _ in DOCUMENTED}
    assert {"train", "serve", "bench", "bench-profile", "generate", "cpp-generate", "plot", "install"} <= targets


PASSED_WHOLE = [pair for pair in DOCUMENTED if pair[1] not in SPLIT_ON_PURPOSE]


@pytest.mark.parametrize("target, variable", PASSED_WHOLE, ids=[f"{t}-{v}" for t, v in PASSED_WHOLE])
def test_a_value_reaches_the_program_whole_and_unexpanded(stub, tmp_path, target, variable):
    log = tmp_path / "calls.jsonl"
    if target == "install":  # PYTHON3 is the program itself: the stub, in a folder named by VALUE
        program = tmp_path / VALUE / "python3"
        program.parent.mkdir()
        program.write_text(STUB)
        program.chmod(0o755)
        result = make(target, stub, log, f"PYTHON3={program}")
        assert calls(log) and calls(log)[0]["program"] == str(program), result.stderr
        return
    result = make(target, stub, log, f"{variable}={VALUE}")
    received = calls(log)
    assert received, result.stdout + result.stderr
    if (target, variable) in READ_FROM_THE_ENVIRONMENT:
        assert all(call["env"].get(variable) == VALUE for call in received), received
    else:
        assert any(VALUE in arg for call in received for arg in call["argv"]), (received, result.stderr)


@pytest.mark.parametrize("target", ["train", "serve", "plot", "export", "generate", "cpp-generate"])
def test_an_empty_out_is_refused_in_one_line_before_any_program_runs(stub, tmp_path, target):
    log = tmp_path / "calls.jsonl"
    assert_make_one_line_error(make(target, stub, log, "OUT="), "OUT is empty")
    assert calls(log) == []
