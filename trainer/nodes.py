"""A run on several machines: which processes keep the run's files, and which checkpoint the nodes
continue from.

The first process of every node keeps a whole copy of the run folder in its own --out (model.pt,
metrics.jsonl, loss.png, the exports), so the run does not depend on which node the c10d
rendezvous makes global rank 0 (it can be another one after a restart) and survives the loss of
any one machine. Nodes on one machine that were given one --out (two nodes on 127.0.0.1) keep
one copy: the first of them writes it. On resume every node reads its own copy, and the nodes
continue only when all copies are at the same step; else one line says which file to copy where.
"""

import os
import socket
from pathlib import Path

from common.cli import UsageError
from common.dist_env import DistEnv
from trainer import checkpoint, distributed
from trainer.resume import NODE_ENV


def keeps_files(env: DistEnv, out: str) -> bool:
    """Whether this process writes the run's files. Every rank calls it (one all-gather)."""
    folder = folder_id(out) if env.first_on_node else None
    claims = distributed.gathered((folder, env.rank))  # on every rank, whatever it holds
    return folder is not None and min(rank for theirs, rank in claims if theirs == folder) == env.rank


def folder_id(out: str) -> tuple:
    """What tells one folder from another across the nodes: the machine (its kernel's boot id,
    which network namespaces and containers on it share), then the device and inode of the folder,
    or of its nearest existing parent and the names below it."""
    path, below = Path(os.path.realpath(out)), []
    while not path.exists() and path != path.parent:
        path, below = path.parent, [path.name, *below]
    where = path.stat()
    return machine_id(), where.st_dev, where.st_ino, *below


def machine_id() -> str:
    """This machine while it runs: its kernel's boot id (the host name where there is none)."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return socket.gethostname()


def this_node() -> str:
    """How the launcher names this node ("node 1 at 10.0.0.2"), else the host name."""
    return os.environ.get(NODE_ENV) or socket.gethostname()


def agreed_checkpoint(env: DistEnv, path: Path, resume: str | None, saved: checkpoint.Checkpoint | None, keeps: bool,
                      check_only: bool = False) -> checkpoint.Checkpoint | None:
    """The checkpoint every rank continues from (rank 0's, which keeps files), once the copies of
    every node that keeps them are at the same step; a UsageError that says which file to copy
    where when they are not. `path`: the checkpoint this run continues (--resume [CKPT], else its
    folder's); `saved`: this process's own copy (None: it has none, or keeps none)."""
    mine = {"node": this_node(), "path": str(path.absolute()), "step": saved and saved.step} if keeps else None
    copies = [copy for copy in distributed.gathered(mine) if copy]
    if len({copy["step"] for copy in copies}) > 1:
        raise UsageError(copy_advice(copies))
    saved = distributed.broadcast_from_main(env, saved)
    if resume is not None and saved is None and not check_only:  # (a dry run sees its own node only)
        checkpoint.load(path)  # no node has it: the usual error
    return saved


def copy_advice(copies: list[dict]) -> str:
    """One line: where each copy stands, and which to copy where (the newest over the others)."""
    newest = max(copies, key=lambda copy: copy["step"] or 0)
    behind = [copy for copy in copies if copy["step"] != newest["step"]]
    states = "; ".join(f"{copy['node']}: {copy['path']}, " + (f"step {copy['step']}" if copy["step"] else "none")
                       for copy in copies)
    targets = ", ".join(f"to {copy['path']} on {copy['node']}" for copy in behind)
    return (f"the nodes' checkpoints are not at the same step ({states}): copy {newest['path']} from "
            f"{newest['node']} {targets}, then run the resume command again on every node")
