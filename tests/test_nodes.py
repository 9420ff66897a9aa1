"""Two machines on one: make train NNODES=2 in two network namespaces joined by a veth pair, whose
host names resolve to loopback (tests/netns.py). Each node has its own --out, as two machines
have their own disks; root only.
"""

import os
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests import conftest, netns
from tests.conftest import ROOT, STEPS, child_env, eval_records, step_losses
from tests.test_launch import error_lines, without_make
from trainer import checkpoint

pytestmark = pytest.mark.skipif(netns.unavailable() is not None, reason=str(netns.unavailable()))

TIMEOUT = 20  # --timeout: how long a rank waits for a silent peer
# conftest.RUN is fp32: the two nodes sum the gradients in another order than one machine's two processes.
RUN = [*conftest.RUN, "--save-every", 3, "--timeout", TIMEOUT]
# c10d's rendezvous numbers the nodes by their addresses as strings: "10.215.0.10" < "10.215.0.9",
# so with these, global rank 0 is on node 1.
NORMAL, REVERSED = ("10.214.0.1", "10.214.0.2"), ("10.215.0.9", "10.215.0.10")
_ports = iter(range(29610, 29700))


@pytest.fixture
def reference(reference_run) -> Path:
    """The run on one machine with two processes."""
    return reference_run(2)


@pytest.fixture(scope="module")
def normal():
    with netns.two_hosts(NORMAL) as hosts:
        yield hosts


@pytest.fixture(scope="module")
def reversed_order():
    with netns.two_hosts(REVERSED) as hosts:
        yield hosts


def make_train(variables: dict) -> list[str]:
    return ["make", "--no-print-directory", "train", *(f"{k}={v}" for k, v in variables.items())]


class Node:
    """make train NNODES=2 on one host: node `rank`, its own --out, its output in files."""

    def __init__(self, folder: Path, host: netns.Host, rank: int, master: str, port: int, corpus: Path, *args):
        self.host, self.rank, self.out = host, rank, folder / f"out{rank}"
        self.variables = {"NNODES": 2, "NODE_RANK": rank, "NPROC": 1, "MASTER_ADDR": master, "MASTER_PORT": port,
                          "DATA": corpus, "OUT": self.out, "ARGS": " ".join(map(str, [*RUN, *args]))}
        self.stdout, self.stderr = folder / f"node{rank}.out", folder / f"node{rank}.err"
        self.proc = None

    def start(self, command: list[str] | None = None) -> "Node":
        command = command or make_train(self.variables)
        with open(self.stdout, "w") as stdout, open(self.stderr, "w") as stderr:
            self.proc = subprocess.Popen(self.host.command(command), cwd=ROOT, env=child_env(), stdout=stdout,
                                         stderr=stderr, text=True, start_new_session=True)
        return self

    def wait_for(self, words: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while words not in self.stdout.read_text():
            assert self.proc.poll() is None and time.monotonic() < deadline, self.output()
            time.sleep(0.05)

    def finish(self, timeout: float = 300) -> int:
        self.proc.wait(timeout=timeout)
        return self.proc.returncode

    def output(self) -> str:
        return self.stdout.read_text() + self.stderr.read_text()


def two_nodes(tmp_path: Path, hosts, corpus: Path, first: int, *args) -> list[Node]:
    """Both nodes started, node `first` before the other (which starts once `first` waits)."""
    port = next(_ports)
    nodes = [Node(tmp_path, host, rank, hosts[0].address, port, corpus, *args) for rank, host in enumerate(hosts)]
    nodes[first].start().wait_for("waiting for 2 nodes")
    nodes[1 - first].start()
    return nodes


def assert_same_losses(out: Path, reference: Path) -> None:
    ours, theirs = step_losses(out), step_losses(reference)
    assert sorted(ours) == sorted(theirs) == list(range(1, STEPS + 1))
    for step in theirs:
        assert abs(ours[step] - theirs[step]) <= 1e-4, (step, ours[step], theirs[step])
    final, expected = eval_records(out)[-1], eval_records(reference)[-1]
    assert final["world_size"] == 2 and final["step"] == expected["step"] == STEPS
    assert abs(final["val_loss"] - expected["val_loss"]) <= 1e-4
    assert checkpoint.load(out / "model.pt").step == STEPS


def test_two_nodes_train_as_one_machine_with_rank_0_on_node_1_which_starts_first(
        tmp_path, corpus, reference, reversed_order):
    nodes = two_nodes(tmp_path, reversed_order, corpus, 1)
    for node in nodes:
        assert node.finish() == 0, node.output()[-3000:]
    for node, host in zip(nodes, reversed_order):
        first = node.stdout.read_text().splitlines()[0]
        assert first.startswith(f"node {node.rank} of 2 at {host.address} on {host.interface}"), first
        assert f"waiting for 2 nodes at {reversed_order[0].address}:" in first
        assert ("hosting the rendezvous" in first) == (node.rank == 0)
        assert_same_losses(node.out, reference)  # every node keeps the whole run
    assert "(rank 0 here)" in nodes[1].stdout.read_text()  # the addresses decide, not NODE_RANK


def last_step(out: Path) -> int:
    return max(step_losses(out), default=0) if (out / "metrics.jsonl").exists() else 0


def kill_host(host: netns.Host) -> None:
    """kill -9 of every process of this "machine"."""
    pids = subprocess.run(["ip", "netns", "pids", host.namespace], capture_output=True, text=True).stdout.split()
    for pid in pids:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.mark.parametrize("victim", [1, 0])
def test_kill_9_of_a_node_is_one_line_on_the_other_and_both_resume_to_the_same_run(
        tmp_path, corpus, reference, normal, reversed_order, victim):
    """Node 1 dies in the normal address order, node 0 (which hosts the rendezvous, and has
    rank 1) in the reversed one, with its disk. The dead node printed nothing: it runs the
    survivor's command with its own NODE_RANK and OUT."""
    hosts = normal if victim == 1 else reversed_order
    nodes = two_nodes(tmp_path, hosts, corpus, 0)
    dead, survivor = nodes[victim], nodes[1 - victim]
    while last_step(dead.out) < 4:  # the checkpoint of step 3 is on disk
        assert dead.proc.poll() is None and survivor.proc.poll() is None, dead.output() + survivor.output()
        time.sleep(0.02)
    kill_host(dead.host)
    killed = time.monotonic()
    assert survivor.finish(timeout=2 * TIMEOUT) != 0
    assert time.monotonic() - killed < TIMEOUT
    stderr = survivor.stderr.read_text()
    lines = [line for line in without_make(stderr) if line.strip() and "[c10d]" not in line]
    assert lines == error_lines(stderr) and len(lines) == 1, stderr[-3000:]
    assert "Traceback" not in stderr and "resume with: make train " in lines[0]
    command = lines[0].split("resume with: ", 1)[1]
    words = shlex.split(command)
    assert f"NODE_RANK={survivor.rank}" in words and f"OUT={survivor.out}" in words, command
    theirs = [{f"NODE_RANK={survivor.rank}": f"NODE_RANK={dead.rank}", f"OUT={survivor.out}": f"OUT={dead.out}"}
              .get(word, word) for word in words]
    dead.finish()
    if victim == 0:  # and its disk with it: the nodes say which copy to put where
        (dead.out / "model.pt").unlink()
        survivor.start(["bash", "-c", command])
        dead.start(theirs)
        advice = (f"copy {survivor.out / 'model.pt'} from node {survivor.rank} at {survivor.host.address} "
                  f"to {dead.out / 'model.pt'} on node {dead.rank} at {dead.host.address}, then run the resume")
        for node in nodes:
            assert node.finish() != 0
            lines = error_lines(node.stderr.read_text())
            assert len(lines) == 1 and advice in lines[0], node.output()[-3000:]
        shutil.copy(survivor.out / "model.pt", dead.out / "model.pt")
    survivor.start(["bash", "-c", command])
    dead.start(theirs)
    for node in nodes:
        assert node.finish() == 0, node.output()[-3000:]
        assert "resuming at step" in node.stdout.read_text()
        assert_same_losses(node.out, reference)



def refusal(prefix: list[str], tmp_path: Path, corpus: Path, **variables) -> str:
    """make train run after `prefix` (ip netns exec NS): its one line, refused at once with exit
    status 2 (make's own, after the launcher's 2), before anything waits or is written."""
    variables = {"NPROC": 1, "DATA": corpus, "OUT": tmp_path / "out", "ARGS": "--steps 2", "RDZV_TIMEOUT": 60,
                 **variables}
    began = time.monotonic()
    result = subprocess.run([*prefix, *make_train(variables)], cwd=ROOT, env=child_env(), capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2, result.stderr[-3000:]
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and without_make(result.stderr) == lines, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert time.monotonic() - began < 30  # nothing waited for a timeout
    assert not (tmp_path / "out").exists()
    return lines[0]


def test_a_master_addr_that_no_interface_routes_to_is_one_line(tmp_path, corpus, normal):
    line = refusal(normal[1].command([]), tmp_path, corpus, NNODES=2, NODE_RANK=1, MASTER_ADDR="10.216.0.1")
    assert "MASTER_ADDR 10.216.0.1 is not reachable from this machine" in line, line


def test_node_rank_0_on_a_machine_without_master_addr_is_one_line(tmp_path, corpus, normal):
    line = refusal(normal[1].command([]), tmp_path, corpus, NNODES=2, NODE_RANK=0, MASTER_ADDR=normal[0].address)
    assert f"NODE_RANK=0 hosts the rendezvous at MASTER_ADDR {normal[0].address}" in line, line
    assert f"this one is {normal[1].address}" in line, line


def test_a_one_machine_run_without_loopback_is_one_line(tmp_path, corpus):
    """A namespace of its own, whose lo stays down."""
    namespace = f"gpt{os.getpid() % 100000}lo"
    subprocess.run(["ip", "netns", "add", namespace], check=True, capture_output=True)
    try:
        line = refusal(["ip", "netns", "exec", namespace], tmp_path, corpus, NPROC=2)
    finally:
        netns.remove(namespace)
    assert "loopback network does not work" in line and "ip link set lo up" in line, line
