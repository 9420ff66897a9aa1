"""make bench-data: what a corpus's size costs the trainer: tokenizing, the time to the first step,
and the memory of each process.

For each size (1 MB, 100 MB and 1 GB by default) a corpus of that many bytes is generated in a
temporary folder (Tiny Shakespeare repeated: ASCII, 65 characters) and deleted after its row:
- tokenize MB/s: the corpus's bytes over the seconds token_cache.tokens takes to build its cache
  in this process (both passes, the SHA-256, the writes), and over the CPU seconds it takes;
- first step, cold and cached: seconds from `make train NPROC=N STEPS=1` to its "step 1" line
  (one evaluation batch per split), with no token cache and then with the one the cold run left;
  and the cold run's launcher's peak RSS, it being the process that tokenizes;
- memory: over a STEPS-step `make train` (default evaluation), each process's peak resident memory
  (VmHWM), the most of it that was file pages (the libraries' and the token file's, shared with
  other processes) and the most that was the token file's pages.
The corpus's own pages stay in the page cache between the runs: "cold" is without a token
cache, not from the disk.
"""

import argparse
import contextlib
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.processes import REPO_ROOT, BenchFailure
from common.cli import OneLineParser, UsageError, command
from trainer import token_cache
from trainer.config import TrainConfig, check_split
from trainer.data import corpus_files, resolve_corpus

MB = 10 ** 6


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = OneLineParser(prog="python -m bench.data", description=__doc__.splitlines()[0].split(": ", 1)[1])
    p.add_argument("--sizes", default="1,100,1000", help="corpus sizes in MB, comma-separated (default 1,100,1000)")
    p.add_argument("--nproc", type=int, default=2, help="ranks of each run (default 2)")
    p.add_argument("--steps", type=int, default=100, help="steps of the memory run (default 100)")
    p.add_argument("--data", help="the text repeated into each corpus (default data/tinyshakespeare.txt)")
    args = p.parse_args(argv)
    sizes = args.sizes.split(",")
    if not all(s.isdigit() and int(s) >= 1 for s in sizes):
        raise UsageError(f"--sizes {args.sizes!r} must be whole numbers of MB, at least 1, separated by commas "
                         "(SIZES=1,100,1000 for make)")
    if args.nproc < 1 or args.steps < 1:
        raise UsageError(f"--nproc {args.nproc} and --steps {args.steps} must be at least 1")
    check_split(TrainConfig.batch_size, args.nproc, f"use an --nproc that divides {TrainConfig.batch_size}")
    args.sizes = [int(s) for s in sizes]
    return args


def generate(path: Path, size: int, source: bytes) -> None:
    """`size` bytes of source repeated, cut at a line's end so that no character is cut."""
    block = source * max(1, (8 * MB) // len(source))
    with open(path, "wb") as f:
        left = size
        while left > 0:
            f.write(block[:left])
            left -= min(left, len(block))
    with open(path, "r+b") as f:  # end at the last newline, whole characters only
        f.seek(max(0, size - 4096))
        tail = f.read()
        f.truncate(max(0, size - 4096) + tail.rfind(b"\n") + 1)


def check_disk(folder: Path, size: int) -> None:
    """The corpus and its token file (one byte a character) must fit, with room to spare."""
    free = shutil.disk_usage(folder).free
    if free < 2 * size + 1024 * MB:
        raise BenchFailure(f"{folder} has {free / MB:,.0f} MB free, too little for a {size / MB:,.0f} MB corpus "
                           "and its token file: choose smaller --sizes or free space (TMPDIR= for another folder)")


def tokenize_rate(corpus: Path) -> tuple[float, float]:
    """MB/s of building the token cache of `corpus` from nothing: over the wall time, and over the
    CPU time of this process's threads (which a busy machine changes less)."""
    paths = corpus_files(corpus)
    remove_cache(corpus)
    start, start_cpu = time.perf_counter(), time.process_time()
    with contextlib.redirect_stdout(sys.stderr):  # its progress lines, away from the table
        token_cache.tokens(paths, str(corpus))
    size = corpus.stat().st_size / MB
    return size / (time.perf_counter() - start), size / (time.process_time() - start_cpu)


def remove_cache(corpus: Path) -> None:
    shutil.rmtree(corpus.parent / token_cache.FOLDER, ignore_errors=True)


def make_train(corpus: Path, out: Path, nproc: int, steps: int, *flags: str) -> list[str]:
    args = " ".join(["--no-export", "--progress", "lines", "--sample-tokens", "0", *flags])
    return ["make", "--no-print-directory", "train", f"NPROC={nproc}", f"STEPS={steps}", f"DATA={corpus}",
            f"OUT={out}", f"ARGS={args}"]


class MemoryWatch:
    """Polls every process under `root_pid`: its peak RSS (VmHWM) and the token file's resident
    pages in it (from /proc/PID/smaps), until stop()."""

    def __init__(self, root_pid: int, token_file: str):
        self.root_pid, self.token_file = root_pid, token_file
        self.peaks: dict[int, dict] = {}
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.poll, daemon=True)
        self.thread.start()

    def poll(self) -> None:
        while not self.stopped.wait(0.25):
            for pid in descendants(self.root_pid):
                try:
                    self.sample(pid)
                except OSError:  # gone meanwhile
                    pass

    def sample(self, pid: int) -> None:
        sampled = process_memory(pid, self.token_file)
        if sampled is None:
            return
        role, now = sampled
        seen = self.peaks.setdefault(pid, dict.fromkeys(now, 0.0))
        seen["role"] = role  # a worker seen in the instant between its fork and its name is one
        for key, value in now.items():
            seen[key] = max(seen[key], value)

    def stop(self) -> list[dict]:
        self.stopped.set()
        self.thread.join()
        return sorted(self.peaks.values(), key=lambda p: p["role"])


def process_memory(pid: int, token_file: str) -> tuple[str, dict] | None:
    """("launcher" or "worker", its memory now) for a process of the run, None for any other, and
    for one that has ended and awaits its parent (a zombie: its status has no memory lines)."""
    # The launcher forks the workers, which name themselves "rank N"; make is neither.
    if Path(f"/proc/{pid}/comm").read_text().startswith("rank "):
        role = "worker"
    elif b"trainer.launch" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0"):
        role = "launcher"
    else:
        return None
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    if "VmHWM" not in status:
        return None
    return role, {"peak_mb": int(status["VmHWM"].split()[0]) / 1024,  # the kernel's own peak of VmRSS
                  "file_mb": int(status["RssFile"].split()[0]) / 1024,  # file pages: libraries and the map
                  "token_map_mb": token_map_kb(pid, token_file) / 1024}


def descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int(Path(entry, "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def token_map_kb(pid: int, token_file: str) -> int:
    """Resident kB of the token file's mappings in the process."""
    total, inside = 0, False
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            field = line.split(None, 1)[0]
            if not field.endswith(":"):  # a mapping's header: "start-end perms offset device inode path"
                inside = line.rstrip("\n").endswith(token_file)
            elif inside and field == "Rss:":
                total += int(line.split()[1])
    return total


def timed_run(command: list[str], token_file: str | None = None) -> tuple[float, list[dict]]:
    """Seconds from the command to its "step 1" line, and (with token_file) the processes' memory."""
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    watch = MemoryWatch(process.pid, token_file) if token_file else None
    first_step, lines = None, []
    for line in process.stdout:
        lines.append(line)
        if first_step is None and line.startswith("step 1 |"):
            first_step = time.perf_counter() - start
    memory = watch.stop() if watch else []
    if process.wait() != 0 or first_step is None:
        sys.stderr.write("".join(lines[-30:]))
        raise BenchFailure(f"{' '.join(command[:4])} failed with exit status {process.returncode} "
                           "(its output is above)")
    return first_step, memory


def measure(corpus: Path, args: argparse.Namespace, work: Path) -> dict:
    rate, rate_cpu = tokenize_rate(corpus)
    bin_path, _ = token_cache.entry(corpus_files(corpus), str(corpus))
    remove_cache(corpus)
    quick = ("--eval-iters", "1")
    cold, tokenizing = timed_run(make_train(corpus, work / "cold", args.nproc, 1, *quick), token_file=str(bin_path))
    cached, _ = timed_run(make_train(corpus, work / "cached", args.nproc, 1, *quick))
    _, memory = timed_run(make_train(corpus, work / "memory", args.nproc, args.steps), token_file=str(bin_path))
    launcher = next((p["peak_mb"] for p in tokenizing if p["role"] == "launcher"), float("nan"))
    return {"size_mb": corpus.stat().st_size / MB, "tokenize_mb_s": rate, "tokenize_mb_cpu_s": rate_cpu,
            "first_step_cold_s": cold, "first_step_cached_s": cached, "tokenizing_launcher_mb": launcher,
            "processes": memory}


def report(row: dict) -> str:
    processes = ", ".join(f"{p['role']} {p['peak_mb']:.0f} ({p['file_mb']:.0f}, {p['token_map_mb']:.0f})"
                          for p in row["processes"])
    return (f"| {row['size_mb']:,.0f} MB | {row['tokenize_mb_s']:.0f} ({row['tokenize_mb_cpu_s']:.0f}) "
            f"| {row['first_step_cold_s']:.1f} s "
            f"({row['tokenizing_launcher_mb']:.0f} MB) | {row['first_step_cached_s']:.1f} s | {processes} |")


@command
def main(argv: list[str]) -> int:
    args = parse_args(argv)
    source = Path(resolve_corpus(args.data, download=True)).read_bytes()
    print(f"corpus sizes {args.sizes} MB, NPROC={args.nproc}, memory over {args.steps} steps: each process's "
          "peak RSS in MB (the most of it in file pages, and in the token file's pages)", flush=True)
    print("| corpus | tokenize MB/s (per CPU s) | first step, cold (launcher's peak RSS) | first step, cached "
          "| peak RSS MB (file pages, token map) |")
    print("| --- | --- | --- | --- | --- |", flush=True)
    for size_mb in args.sizes:
        with tempfile.TemporaryDirectory(prefix="bench-data-") as folder:
            work = Path(folder)
            check_disk(work, size_mb * MB)
            corpus = work / "corpus" / f"generated-{size_mb}MB.txt"
            corpus.parent.mkdir()
            generate(corpus, size_mb * MB, source)
            print(report(measure(corpus, args, work)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
