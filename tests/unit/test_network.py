"""trainer.network on this machine's own loopback, and trainer.nodes' advice when the nodes' checkpoints differ."""

import pytest

from common.cli import UsageError
from common.dist_env import DistEnv
from trainer.network import interface_of, node_network
from trainer.nodes import copy_advice
from trainer.progress import nodes_part


def test_a_master_addr_on_loopback_is_this_machines_own_on_lo():
    network = node_network("127.0.0.1")
    assert (network.address, network.hosts_master) == ("127.0.0.1", True)
    assert network.interface == interface_of("127.0.0.1") and network.interface is not None


def test_a_local_addr_that_is_not_this_machines_is_refused():
    with pytest.raises(UsageError, match="^LOCAL_ADDR 192.0.2.77 is not an address of this machine: "):
        node_network("127.0.0.1", "192.0.2.77")  # TEST-NET-1, nobody's


def test_a_local_addr_given_is_taken():
    assert node_network("127.0.0.1", "localhost").address == "127.0.0.1"


def test_no_interface_holds_an_address_that_is_not_here():
    assert interface_of("192.0.2.77") is None


def test_the_newest_copy_is_to_be_copied_over_the_older_and_the_missing_ones():
    copies = [{"node": "node 0 at 10.0.0.1", "path": "/a/model.pt", "step": 9},
              {"node": "node 1 at 10.0.0.2", "path": "/b/model.pt", "step": 12},
              {"node": "node 2 at 10.0.0.3", "path": "/c/model.pt", "step": None},
              {"node": "node 3 at 10.0.0.4", "path": "/d/model.pt", "step": 12}]
    advice = copy_advice(copies)
    assert "node 0 at 10.0.0.1: /a/model.pt, step 9; " in advice and "/c/model.pt, none" in advice
    assert advice.endswith(": copy /b/model.pt from node 1 at 10.0.0.2 to /a/model.pt on node 0 at 10.0.0.1, "
                           "to /c/model.pt on node 2 at 10.0.0.3, then run the resume command again on every node")


@pytest.mark.parametrize("env, expected", [
    (DistEnv(rank=1, world_size=2, local_rank=1, local_world_size=2), ""),
    (DistEnv(rank=0, world_size=2, local_rank=0, local_world_size=1), " on 2 nodes (rank 0 here)"),
    (DistEnv(rank=5, world_size=8, local_rank=1, local_world_size=4), " on 2 nodes (ranks 4-7 here)"),
])
def test_the_banner_says_which_global_ranks_a_node_holds(env, expected):
    assert nodes_part(env) == expected


def test_without_a_process_group_the_first_process_of_a_node_keeps_its_files(tmp_path):
    """As in the launcher's dry run on node 1, which checks its own --out."""
    from trainer.nodes import keeps_files

    assert keeps_files(DistEnv(rank=1, world_size=2, local_rank=0, local_world_size=1), str(tmp_path))
    assert not keeps_files(DistEnv(rank=1, world_size=2, local_rank=1, local_world_size=2), str(tmp_path))


def test_a_folder_is_told_apart_by_what_it_is_not_by_its_name(tmp_path):
    from trainer.nodes import folder_id

    (tmp_path / "a").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "a")
    assert folder_id(str(tmp_path / "link")) == folder_id(str(tmp_path / "a")) != folder_id(str(tmp_path))
    assert folder_id(str(tmp_path / "new" / "out"))[-2:] == ("new", "out")  # not made yet: its parent and the names
