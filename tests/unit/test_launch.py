"""make train's launcher: what it refuses before anything starts."""

import pytest

from common.cli import UsageError
from trainer.launch import Launch, build_parser


@pytest.mark.parametrize("host", ["no-such-host.invalid", ""])
def test_a_master_addr_that_does_not_resolve_is_refused_before_the_rendezvous(host):
    options = build_parser().parse_args(["--nnodes", "2", "--master-addr", host, "--"])
    with pytest.raises(UsageError, match=f"MASTER_ADDR '{host}' does not resolve .*node 0's IP address"):
        Launch(options)


def test_a_master_addr_that_resolves_is_taken():
    options = build_parser().parse_args(["--nnodes", "2", "--master-addr", "localhost", "--"])
    assert Launch(options).master_addr == "localhost"
