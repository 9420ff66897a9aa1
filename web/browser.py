"""The page in headless Chromium, from Python: web/drive.mjs run on a URL, its JSON read back.

The tests and the bench use it. Chromium is Debian's (/usr/bin/chromium), driven through the
pinned playwright-core in web/node_modules: nothing is downloaded.
"""

import json
import shutil
import subprocess
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


def drive(url: str, *options: str, timeout: float = 120) -> dict:
    """Open `url`, act as web/drive.mjs's `options` say, wait for #output to be done or failed: what the page shows."""
    cmd = ["node", str(WEB / "drive.mjs"), url, "--chromium", str(CHROMIUM), "--timeout", str(timeout),
           *map(str, options)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 60)
    if result.returncode != 0:
        raise RuntimeError(f"web/drive.mjs failed on {url}: {result.stderr.strip()[-3000:]}")
    return json.loads(result.stdout)
