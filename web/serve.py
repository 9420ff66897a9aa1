"""Serve the page in web/ and OUT's model files on localhost: python -m web.serve [--out DIR] [--port N].

The page asks for model.onnx and model.json beside itself; they come from --out, everything
else from web/. onnxruntime-web needs wasm served as application/wasm, and its threads need
SharedArrayBuffer, which browsers allow only on cross-origin-isolated pages (COOP and COEP).
The page's hf/ Runtime asks for the hf/ folder's files that transformers.js reads, also from --out.
Only 127.0.0.1 is bound: the server is for the person at this machine. A request it cannot serve
(a malformed path, a client that hangs up mid-download) costs at most one line in the terminal.
"""

import contextlib
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

from common import defaults
from common.cli import OneLineParser, UsageError, command

WEB = Path(__file__).resolve().parent
ONNX_FILES = ("model.onnx", defaults.MANIFEST)
MODEL_FILES = (*ONNX_FILES, *defaults.HF_BROWSER_FILES)  # and what transformers.js reads of hf/ (the page's Runtime)
# Only these are served from web/: its Python files and caches are not for the browser.
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".mjs": "text/javascript; charset=utf-8",
                 ".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
                 ".wasm": "application/wasm", ".json": "application/json; charset=utf-8",
                 ".onnx": "application/octet-stream", ".png": "image/png"}
MAX_PORT = 65535
LOGGED_REQUEST = 200  # characters of a request line shown in the terminal; the rest is cut
ISOLATION_HEADERS = {"Cross-Origin-Opener-Policy": "same-origin", "Cross-Origin-Embedder-Policy": "require-corp"}


class PageHandler(BaseHTTPRequestHandler):
    out: Path  # the run's folder, whose model files are served: set by handler_for

    def do_GET(self):
        self.send_file(include_body=True)

    def do_HEAD(self):
        self.send_file(include_body=False)

    def send_file(self, include_body: bool):
        if not self.from_this_machine():
            # DNS rebinding: a page of another site whose name now points at 127.0.0.1 would read the files.
            self.send_error(HTTPStatus.FORBIDDEN, "this server answers requests for 127.0.0.1 and localhost only")
            return
        try:
            path = self.file_for(unquote(urlsplit(self.path).path))
            body = None if path is None else path.read_bytes()
        except ValueError:  # a NUL byte in the path, an impossible URL
            self.send_error(HTTPStatus.BAD_REQUEST)
            return
        except OSError:  # a name too long for the file system, a file that vanished or is unreadable
            body = None
        if body is None:
            self.send_error(HTTPStatus.NOT_FOUND)
            return
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", CONTENT_TYPES[path.suffix])
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-cache")  # a re-exported model is picked up on reload
        for name, value in ISOLATION_HEADERS.items():
            self.send_header(name, value)
        self.end_headers()
        if include_body:
            self.wfile.write(body)

    def from_this_machine(self) -> bool:
        """Whether the Host header names this server as the browser at this machine reaches it."""
        host = self.headers.get("Host", "").lower()
        name, _, port = host.rpartition(":") if not host.endswith("]") else (host, "", "")
        name = name if port.isdigit() else host
        return name in ("127.0.0.1", "localhost")

    def file_for(self, url_path: str) -> Path | None:
        name = url_path.lstrip("/") or "index.html"
        if name in MODEL_FILES:
            # A regular file that resolves inside --out: a link out of it (model.json -> /etc/passwd) is not served.
            path = (self.out / name).resolve()
            return path if self.out in path.parents and path.is_file() else None
        path = (WEB / name).resolve()
        if WEB not in path.parents or path.suffix not in CONTENT_TYPES:
            return None
        return path if path.is_file() else None

    def log_message(self, format, *args):  # keep the terminal for the URL and real problems
        # A request line too malformed to parse has no path; it is shown as received, on one line.
        request = f"{self.command} {self.path}" if getattr(self, "path", None) else self.requestline
        if args and str(args[1]).startswith(("4", "5")) and not request.endswith("favicon.ico"):
            shown = request.encode("unicode_escape").decode("ascii")[:LOGGED_REQUEST]
            sys.stderr.write(f"{shown}: {args[1]}\n")


def handler_for(out: Path) -> type[BaseHTTPRequestHandler]:
    """PageHandler serving `out`'s model files beside the page."""
    return type("PageHandlerForRun", (PageHandler,), {"out": out})


class PageServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        """A client that hangs up (an aborted download, a closed tab) is no problem of the server's:
        nothing is printed. Anything else is one line, never socketserver's traceback."""
        error = sys.exc_info()[1]
        if not isinstance(error, ConnectionError):
            sys.stderr.write(f"a request from port {client_address[1]} failed: {type(error).__name__}: {error}\n")


def make_server(out: Path, port: int) -> ThreadingHTTPServer:
    if not 0 <= port <= MAX_PORT:
        raise UsageError(f"port {port} is not a TCP port: pick one from 1 to {MAX_PORT} with PORT=... "
                         "(0 picks a free one)")
    try:
        return PageServer(("127.0.0.1", port), handler_for(Path(out).resolve()))
    except OSError as exc:
        raise UsageError(f"cannot listen on 127.0.0.1:{port} ({exc.strerror}): "
                         "pick another port with PORT=...") from None


def url_of(server: ThreadingHTTPServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}/"


@contextlib.contextmanager
def serving(out: Path):
    """The page and `out`'s model files on a free port, in a thread, for as long as the block runs: its URL."""
    server = make_server(out, 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield url_of(server)
    finally:
        server.shutdown()
        server.server_close()


@command
def main(argv: list[str]) -> int:
    p = OneLineParser(prog="python -m web.serve", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("checkpoints"), help="folder with model.onnx and model.json")
    p.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    args = p.parse_args(argv)
    if args.out.exists() and not args.out.is_dir():
        raise UsageError(f"{args.out} is a file, not a run folder: OUT= names the folder that holds model.onnx and "
                         "model.json (make train and make export write them)")
    if not (WEB / "node_modules" / "onnxruntime-web").is_dir():
        raise UsageError("onnxruntime-web is not installed: run make serve (it runs npm ci in web/)")
    server = make_server(args.out, args.port)
    missing = [name for name in ONNX_FILES if not (args.out / name).is_file()]
    print(f"serving the page at {url_of(server)} (Ctrl-C stops)", flush=True)
    if missing:
        print(f"note: {args.out} has no {' or '.join(missing)}: train and export first (make train OUT={args.out}), "
              "or choose the model files in the page", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
