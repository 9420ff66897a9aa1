"""A free TCP port for a process group or a server that tests and benchmarks start themselves."""

import socket


def free_port() -> int:
    """A port on 127.0.0.1 that is free now (the OS picks it; the caller binds it soon after)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
