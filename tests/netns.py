"""Two machines on one: network namespaces joined by a veth pair, for the tests and benchmarks
that need a real network between nodes (root only).

Each host has its own network stack, its own address on the veth, loopback up, and its own
/etc/hosts (`ip netns exec` bind-mounts /etc/netns/NAME/hosts over /etc/hosts), in which this
machine's hostname resolves to 127.0.0.1, as it resolves to a loopback address on a default
Debian install and in most containers. Traffic goes only between the two namespaces made here.
Everything is removed on leaving the `two_hosts` block, whatever happens inside it.
"""

import itertools
import os
import shutil
import signal
import socket
import subprocess
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

NETNS_ETC = Path("/etc/netns")
_names = itertools.count()


@dataclass(frozen=True)
class Host:
    namespace: str
    address: str
    interface: str

    def command(self, argv: list) -> list[str]:
        """`argv` run inside this host's network namespace."""
        return ["ip", "netns", "exec", self.namespace, *map(str, argv)]


def unavailable() -> str | None:
    """Why namespaces cannot be made here, or None when they can."""
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add); run as root, as .ci/run does"
    if shutil.which("ip") is None:
        return "network namespaces need iproute2's ip (apt-get install iproute2)"
    return None


def _ip(*args) -> None:
    subprocess.run(["ip", *map(str, args)], check=True, capture_output=True, text=True)


@contextmanager
def two_hosts(addresses: tuple[str, str] = ("10.213.0.1", "10.213.0.2"), rate: str | None = None,
              burst: str = "64kb"):
    """(host A, host B) joined by a veth pair with these addresses (one /24), optionally limited
    to `rate` (tc's tbf, e.g. "100mbit") in each direction, with a bucket of `burst` bytes.

    The bucket must hold what the link carries between two of the kernel's timer ticks: 64 KB
    carries 100 Mbit/s (12 MB/s measured), but holds 1 Gbit/s to 55 MB/s (250 KB: 112 MB/s)."""
    tag = f"{os.getpid() % 100000}x{next(_names)}"
    hosts = (Host(f"gpt{tag}a", addresses[0], f"v{tag}a"), Host(f"gpt{tag}b", addresses[1], f"v{tag}b"))
    try:
        for host in hosts:
            _ip("netns", "add", host.namespace)
            (NETNS_ETC / host.namespace).mkdir(parents=True, exist_ok=True)
            (NETNS_ETC / host.namespace / "hosts").write_text(f"127.0.0.1 localhost {socket.gethostname()}\n")
        _ip("link", "add", hosts[0].interface, "type", "veth", "peer", "name", hosts[1].interface)
        for host in hosts:
            _ip("link", "set", host.interface, "netns", host.namespace)
            _ip("-n", host.namespace, "addr", "add", f"{host.address}/24", "dev", host.interface)
            _ip("-n", host.namespace, "link", "set", host.interface, "up")
            _ip("-n", host.namespace, "link", "set", "lo", "up")
            if rate:
                # latency bounds the queue.
                subprocess.run(["tc", "-n", host.namespace, "qdisc", "add", "dev", host.interface, "root", "tbf",
                                "rate", rate, "burst", burst, "latency", "100ms"], check=True, capture_output=True)
        yield hosts
    finally:
        for host in hosts:
            remove(host.namespace)


def remove(namespace: str) -> None:
    """Kill what still runs in `namespace`, then delete it (and its veth end) and its /etc/netns folder."""
    pids = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True).stdout.split()
    for pid in pids:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass
    subprocess.run(["ip", "netns", "del", namespace], capture_output=True)
    shutil.rmtree(NETNS_ETC / namespace, ignore_errors=True)
