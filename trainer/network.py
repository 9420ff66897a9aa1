"""This machine's place on the network, for make train's launcher: the checks that make a bad
address one line before anything waits, and what torchrun and gloo are told so that two real
machines find each other.

torchrun's c10d rendezvous and gloo each guess this machine's address from its host name, which
resolves to a loopback address on most Debian installs and containers (127.0.1.1, 127.0.0.1): the
other machines cannot reach that. The launcher instead takes the local end of the route to
MASTER_ADDR, which is the address the other machines reach this one by, and the interface that
holds it (docs/training.md, "Several machines").
"""

import fcntl
import os
import socket
import struct
from dataclasses import dataclass
from pathlib import Path

from common.cli import UsageError

SIOCGIFADDR = 0x8915  # Linux: an interface's IPv4 address (ioctl)


@dataclass(frozen=True)
class NodeNetwork:
    address: str  # this node's address towards MASTER_ADDR (torchrun --local-addr)
    interface: str | None  # the interface that holds it (GLOO_SOCKET_IFNAME); None when none is seen
    hosts_master: bool  # MASTER_ADDR is an address of this machine


def node_network(master_addr: str, local_addr: str | None = None, node_rank: int | None = None) -> NodeNetwork:
    """Where this node stands towards MASTER_ADDR; `local_addr` (LOCAL_ADDR) overrides the address.

    UsageError when MASTER_ADDR does not resolve or no interface routes to it, when LOCAL_ADDR is
    not an address of this machine, or when node 0 (`node_rank`), which hosts the rendezvous at
    MASTER_ADDR, is not the machine that has it."""
    master_ip = resolve(master_addr)
    if local_addr:
        address = resolve(local_addr, "LOCAL_ADDR", "give one of this machine's addresses, or leave LOCAL_ADDR unset")
        if not is_local(address):
            raise UsageError(f"LOCAL_ADDR {local_addr} is not an address of this machine: give one of its own "
                             "addresses on the network the other nodes reach it by, or leave LOCAL_ADDR unset")
    else:
        address = route_source(master_ip, master_addr)
    network = NodeNetwork(address, interface_of(address), is_local(master_ip))
    if node_rank == 0 and not network.hosts_master:
        raise UsageError(f"NODE_RANK=0 hosts the rendezvous at MASTER_ADDR {master_addr}, which is not an "
                         f"address of this machine (this one is {address} towards it): run NODE_RANK=0 "
                         "on the machine that has MASTER_ADDR, or give this machine's address as MASTER_ADDR "
                         "on every node")
    return network


def gloo_interface(network: NodeNetwork) -> str:
    """gloo's interface for the other nodes, in GLOO_SOCKET_IFNAME (a value the user set wins):
    left to itself, gloo offers them the host name's address. Returns it as the launcher's start
    line says it."""
    if os.environ.get("GLOO_SOCKET_IFNAME"):
        return f"{os.environ['GLOO_SOCKET_IFNAME']} (GLOO_SOCKET_IFNAME)"
    if network.interface is None:
        return "an interface not found (name it with GLOO_SOCKET_IFNAME=)"
    os.environ["GLOO_SOCKET_IFNAME"] = network.interface
    return network.interface


def resolve(host: str, variable: str = "MASTER_ADDR",
            fix: str = "give node 0's IP address, or a host name this machine can look up "
                       "(the same MASTER_ADDR on every node)") -> str:
    """The IP address `host` names, or a UsageError: torchrun's own failure is a C++ stack that does not say so."""
    try:
        return socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)[0][4][0]
    except (OSError, UnicodeError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise UsageError(f"{variable} {host!r} does not resolve ({reason}): {fix}") from None


def route_source(ip: str, master_addr: str) -> str:
    """The local end of the route to `ip`: connect() of a UDP socket picks it and sends nothing."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect((ip, 9))
            return probe.getsockname()[0]
        except OSError as exc:
            raise UsageError(f"MASTER_ADDR {master_addr} is not reachable from this machine ({exc.strerror}): no "
                             "network interface here routes to it; give node 0's address on a network this machine "
                             "is on (ip route shows them), the same MASTER_ADDR on every node") from None


def is_local(ip: str) -> bool:
    """Whether `ip` is an address of this machine: only those can be bound."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((ip, 0))
            return True
        except OSError:
            return False


def interface_of(address: str) -> str | None:
    """The name of the network interface that holds `address`, or None when none is seen to."""
    if ":" in address:
        return _ipv6_interface(address)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        for _, name in socket.if_nameindex():
            try:
                answer = fcntl.ioctl(probe.fileno(), SIOCGIFADDR, struct.pack("256s", name.encode()[:15]))
            except OSError:  # an interface without an IPv4 address
                continue
            if socket.inet_ntoa(answer[20:24]) == address:
                return name
    return None


def _ipv6_interface(address: str) -> str | None:
    """From /proc/net/if_inet6 (Linux): address in 32 hex digits, ..., interface name."""
    wanted = socket.inet_pton(socket.AF_INET6, address.split("%")[0]).hex()
    try:
        rows = Path("/proc/net/if_inet6").read_text().splitlines()
    except OSError:
        return None
    return next((row.split()[-1] for row in rows if row.split()[0] == wanted), None)


def check_loopback() -> None:
    """The processes of a run on one machine meet on 127.0.0.1 (torchrun's store, gloo): without a
    working loopback they would wait out every timeout, then blame the network between machines."""
    try:
        with socket.create_server(("127.0.0.1", 0)) as server, \
                socket.create_connection(server.getsockname(), timeout=5):
            return
    except OSError as exc:
        raise UsageError(f"this machine's loopback network does not work (127.0.0.1: {exc.strerror or exc}), and "
                         "the processes of a run meet on it: bring it up (ip link set lo up) or run where it "
                         "is up") from None


def check_port(port: int) -> None:
    """On the node that hosts the rendezvous, MASTER_PORT must be free or held by this run's
    rendezvous (another node of it on the same machine may have got there first): a port held by
    another program would hang the rendezvous until it times out."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("", port))
            return
        except OSError:
            pass
    holder = port_holder(port)
    if holder and not any(word in holder for word in ("trainer.launch", "torchrun", "torch.distributed.run")):
        raise UsageError(f"MASTER_PORT {port} is taken by another program on this machine ({holder}): choose a "
                         "free port (the same MASTER_PORT on every node), or stop it")


def port_holder(port: int) -> str | None:
    """'pid N: command' of the process listening on TCP `port` here, from /proc (Linux); None
    when it cannot be seen (another user's process, another system)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":  # 0A: LISTEN
                inodes.add(f"socket:[{fields[9]}]")
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if any(os.readlink(fd) in inodes for fd in (proc / "fd").iterdir()):
                command = " ".join((proc / "cmdline").read_bytes().decode(errors="replace").replace("\0", " ").split())
                return f"pid {proc.name}: {command[:80]}"
        except OSError:
            continue
    return None
