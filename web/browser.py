"""The page in headless Chromium, from Python: web/drive.mjs run on a URL, its JSON read back.

The tests and the bench use it. Chromium is Debian's (/usr/bin/chromium), driven through the
pinned playwright-core in web/node_modules: nothing is downloaded. One web/drive.mjs --stdin
(one Chromium) serves every page this process drives, each in a fresh browser context: a
Chromium start costs about a CPU-second, more than many of the pages.
"""

import atexit
import json
import select
import shutil
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import urlencode

WEB = Path(__file__).resolve().parent
CHROMIUM = Path("/usr/bin/chromium")
INSTALL_CHROMIUM = "apt-get update && apt-get install -y chromium"


def missing_requirement() -> str | None:
    """Why the page cannot be driven on this machine (what is missing and the command that installs it), or None."""
    if not CHROMIUM.is_file():
        return f"chromium not installed: {INSTALL_CHROMIUM}"
    if shutil.which("node") is None:
        return "node not installed: apt-get install -y nodejs npm"
    if not (WEB / "node_modules" / "playwright-core").is_dir():
        return "web/'s npm packages not installed: make web-install"
    return None


def page_url(base: str, **query) -> str:
    """The page at `base` with its fields set from `query`
    (prompt=, tokens=, temperature=, top_k=, seed=, autostart=)."""
    return f"{base}?{urlencode(query)}"


class Driver:
    """A web/drive.mjs --stdin, started on the first page and restarted after a failure."""

    def __init__(self):
        self.process: subprocess.Popen | None = None
        self.stderr = None

    def drive(self, url: str, *options: str, timeout: float = 120) -> dict:
        if self.process is None or self.process.poll() is not None:
            self.start()
        self.process.stdin.write(json.dumps([url, "--timeout", str(timeout), *map(str, options)]) + "\n")
        self.process.stdin.flush()
        answered, _, _ = select.select([self.process.stdout], [], [], timeout + 60)
        line = self.process.stdout.readline() if answered else ""
        if not line:
            self.stderr.seek(0)
            why = self.stderr.read().decode(errors="replace").strip()[-3000:] or f"no answer within {timeout + 60} s"
            self.close()
            raise RuntimeError(f"web/drive.mjs failed on {url}: {why}")
        reply = json.loads(line)
        if "driverError" in reply:
            raise RuntimeError(f"web/drive.mjs failed on {url}: {reply['driverError'][-3000:]}")
        return reply

    def start(self) -> None:
        self.close()
        self.stderr = tempfile.TemporaryFile()
        self.process = subprocess.Popen(["node", str(WEB / "drive.mjs"), "--stdin", "--chromium", str(CHROMIUM)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, text=True)

    def close(self) -> None:
        """End the process (its stdin closed, it closes Chromium and exits)."""
        if self.process is not None:
            try:
                self.process.stdin.close()
                self.process.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()
            self.process = None
        if self.stderr is not None:
            self.stderr.close()
            self.stderr = None


DRIVER = Driver()
atexit.register(DRIVER.close)


def drive(url: str, *options: str, timeout: float = 120) -> dict:
    """Open `url`, act as web/drive.mjs's `options` say, wait for #output to be done or failed: what the page shows."""
    return DRIVER.drive(url, *options, timeout=timeout)
