"""trainer.memory: with the thresholds raised, freed 8 MB buffers come back without page faults."""

import os
import platform
import subprocess
import sys

import pytest

from trainer.memory import KEEP_MEMORY_ENV

# A fresh process allocates and touches six 8 MB buffers and frees them, 20 times, as a step does
# its activations, and prints the page faults those 20 rounds took.
ROUNDS = """
import resource, sys
from trainer.memory import keep_freed_memory
print(keep_freed_memory())
for i in range(21):
    buffers = [bytearray(8 << 20) for _ in range(6)]
    for buffer in buffers:
        buffer[::4096] = b"x" * len(buffer[::4096])
    del buffers, buffer
    if i == 0:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""
PAGES_PER_ROUND = 6 * (8 << 20) // 4096


def faults_of_rounds(**environment) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", ROUNDS], env={**os.environ, **environment},
                         capture_output=True, text=True, check=True).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the thresholds are glibc's")
def test_freed_buffers_are_reused_without_faulting_their_pages_in_again():
    kept, faults = faults_of_rounds()
    assert kept == "True"
    assert faults < PAGES_PER_ROUND  # 20 rounds fault in less than one round's pages


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the thresholds are glibc's")
def test_glibcs_own_thresholds_fault_every_round_and_the_switch_restores_them():
    kept, faults = faults_of_rounds(**{KEEP_MEMORY_ENV: "0"})
    assert kept == "False"
    assert faults >= 10 * PAGES_PER_ROUND  # most of the 20 rounds fault all their pages in again
