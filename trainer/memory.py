"""Keep the memory a training step frees, so that the next step does not fault it back in.

A step allocates and frees the same few dozen activation buffers (up to a few MB each) every
time. glibc's malloc serves blocks above its mmap threshold with fresh mmaps and hands the freed
top of its heap back to the OS, so every step would touch its buffers' pages anew, paying page
faults and kernel time. Raising both thresholds keeps the blocks in the heap and the heap whole
(docs/speed.md has the measurements).

Both thresholds must be set: setting either one turns off glibc's adjusting of the other, and
the trim threshold alone leaves the mmap threshold at 128 KB, which is far worse. The cost is
memory the process keeps after its peak: the peak of a step, a few hundred MB.
TRAINER_KEEP_MEMORY=0 keeps glibc's own thresholds (docs/usage.md).
"""

import ctypes
import os
import platform

# Set to 0 to keep glibc's own thresholds.
KEEP_MEMORY_ENV = "TRAINER_KEEP_MEMORY"

# mallopt's parameter numbers, from glibc's malloc.h
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # glibc's ceiling for it on 64-bit machines
TRIM_THRESHOLD = 1 << 30


def keep_freed_memory() -> bool:
    """Raise glibc's thresholds for this process; False where the C library is not glibc (macOS,
    musl) or TRAINER_KEEP_MEMORY=0 says not to."""
    if os.environ.get(KEEP_MEMORY_ENV) == "0" or platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(None)
    return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
