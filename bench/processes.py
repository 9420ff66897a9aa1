"""Child processes of the bench: python -m MODULE with this repository importable."""

import os
import subprocess
import sys
from pathlib import Path

from common.cli import CommandFailed

REPO_ROOT = Path(__file__).resolve().parents[1]


class BenchFailure(CommandFailed):
    """A measurement that could not run (not the user's input): exit status 1 with the reason."""


# torchrun keeps each job's logs under a new /tmp/torchelastic_* folder that it never removes; the
# bench neither redirects the workers' output nor reads their error files, so it asks for none.
TORCHRUN = ["torch.distributed.run", f"--log-dir={os.devnull}"]


def run_module(module: str, *args, what: str, **env) -> subprocess.CompletedProcess:
    """Run `python -m module args` to completion; its output is kept and shown only on failure."""
    child_env = dict(os.environ, **{k: str(v) for k, v in env.items()})
    child_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    result = subprocess.run([sys.executable, "-m", module, *map(str, args)], env=child_env,
                            capture_output=True, text=True)
    if result.returncode != 0:
        sys.stderr.write(result.stdout[-3000:] + result.stderr[-3000:])
        raise BenchFailure(f"{what} failed with exit status {result.returncode} (its output is above)")
    return result
