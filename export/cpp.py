"""python -m export.cpp MODEL.ts [--prompt ..] [--tokens ..] [--temperature ..] [--top-k ..] [--seed ..]:
build the libtorch generator, then run it.

The C++ program (export/cpp/generate.cpp) is compiled with g++ against the headers and shared
libraries inside the installed torch wheel, so no separate libtorch download is needed. The
binary is cached in build/ under a name that changes with the sources and the torch version.
The flags are those of `make generate` and are checked here first, so a mistake never waits for
a build; the program checks them again, since it also runs on its own. The program prints the
text as it comes; Ctrl-C ends it there, with exit status 130 and no traceback from this wrapper.
"""

import hashlib
import importlib.metadata
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from common.cli import UsageError, command
from common.files import existing_file
from export.generate import EXIT_INTERRUPTED, parse_generator_flags

SOURCE = Path(__file__).with_name("cpp") / "generate.cpp"
HEADERS = [SOURCE.with_name("sha256.h")]
BUILD_DIR = Path("build")


def build() -> Path:
    """The compiled generator, built on first use."""
    compiler = shutil.which(os.environ.get("CXX", "g++"))
    if compiler is None:
        raise UsageError("g++ not found: install a C++ compiler (apt install g++) or set CXX")
    sources = b"".join(path.read_bytes() for path in [SOURCE, *HEADERS])
    # torch's version from its metadata: torch itself is imported only to build.
    key = hashlib.sha256(sources + importlib.metadata.version("torch").encode()).hexdigest()[:12]
    binary = BUILD_DIR / f"generate-{key}"
    if binary.is_file():
        return binary
    print("building the C++ generator (once, ~25 s)", file=sys.stderr, flush=True)
    BUILD_DIR.mkdir(exist_ok=True)
    import torch

    torch_dir = Path(torch.__file__).parent
    include, lib = torch_dir / "include", torch_dir / "lib"
    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)  # must match the wheel's, or linking fails
    partial = binary.with_name(binary.name + f".{os.getpid()}.tmp")
    command = [compiler, "-std=c++17", "-O2", f"-D_GLIBCXX_USE_CXX11_ABI={abi}",
               f"-I{include}", f"-I{include / 'torch/csrc/api/include'}", str(SOURCE), "-o", str(partial),
               f"-L{lib}", f"-Wl,-rpath,{lib}", "-Wl,--no-as-needed", "-ltorch", "-ltorch_cpu", "-lc10"]
    try:
        result = subprocess.run(command, capture_output=True, text=True)
    except KeyboardInterrupt:  # an interrupted build leaves no half-written binary
        partial.unlink(missing_ok=True)
        raise
    if result.returncode != 0:
        partial.unlink(missing_ok=True)
        first_error = next((line for line in result.stderr.splitlines() if "error" in line), "see g++ output")
        raise UsageError(f"building {SOURCE.name} failed ({first_error.strip()[:120]}): "
                         "check g++ and the torch install")
    partial.replace(binary)
    return binary


@command
def main(argv: list[str]) -> int:
    args = parse_generator_flags("python -m export.cpp", " ".join(__doc__.split("\n\n")[0].split()),
                                 "model.ts written by make export", argv)
    if Path(args.model).suffix != ".ts":
        raise UsageError(f"{args.model} is not TorchScript: the C++ program loads a .ts file "
                         "(make cpp-generate MODEL=checkpoints/model.ts)")
    existing_file(args.model, "model", "name a model.ts, or train and export first (make train, make export)")
    flags = {"--prompt": args.prompt, "--tokens": args.tokens, "--temperature": args.temperature,
             "--top-k": args.top_k, "--seed": args.seed}
    try:
        program = [str(build()), args.model]
        for flag, value in flags.items():
            if value is not None:
                program += [flag, str(value)]
        return run_to_the_end(program)
    except KeyboardInterrupt:  # during the build
        return EXIT_INTERRUPTED


def run_to_the_end(program: list[str]) -> int:
    """The program's exit status; after Ctrl-C it ends its text with a newline, and this waits for it."""
    child = subprocess.Popen(program)
    try:
        status = child.wait()
    except KeyboardInterrupt:
        child.send_signal(signal.SIGINT)  # for a SIGINT sent to this process alone; once more is harmless
        status = child.wait()
    return 128 - status if status < 0 else status  # killed by signal N: 128 + N, as a shell says

if __name__ == "__main__":
    sys.exit(main())
