"""Which number format the training matmuls use: `--dtype auto` picks bf16 where the CPU has it natively.

bf16 autocast halves the cost of this model's matmuls only on CPUs that multiply bf16 in hardware
(AVX512_BF16, or AMX on recent Xeons); elsewhere oneDNN emulates it and it is slower than fp32.
The CPU is read, not guessed: Linux lists its features in /proc/cpuinfo. Weights, Adam state,
evaluation and the exports stay fp32 whatever is chosen.
"""

from pathlib import Path

NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
DTYPES = ("auto", "fp32", "bf16")


def cpuinfo_field(name: str, cpuinfo: Path = Path("/proc/cpuinfo")) -> str | None:
    """The first CPU's value of one /proc/cpuinfo field (`flags`, `model name`), None where absent."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == name:
            return value.strip()
    return None


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The x86 feature flags of the first CPU, or an empty set where there is no /proc/cpuinfo."""
    return set((cpuinfo_field("flags", cpuinfo) or "").split())


def resolve_dtype(requested: str, flags: set[str] | None = None) -> tuple[str, str]:
    """('fp32' or 'bf16', why): `auto` becomes bf16 only where the CPU has native bf16."""
    if requested != "auto":
        return requested, f"--dtype {requested}"
    import torch  # here, not above: trainer.config reads DTYPES, and --help should not load torch

    native = [flag for flag in NATIVE_BF16_FLAGS if flag in (cpu_flags() if flags is None else flags)]
    if native and torch.backends.mkldnn.is_available():
        return "bf16", f"--dtype auto: this CPU has {' and '.join(native)}"
    return "fp32", "--dtype auto: this CPU has no native bf16 (AVX512_BF16 or AMX)"


def autocast(dtype: str):
    """The context the forward pass runs in: bf16 autocast for the matmuls, or nothing for fp32."""
    import torch

    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16")


def torch_dtype(dtype: str):
    """torch.bfloat16 or torch.float32 for 'bf16' or 'fp32'."""
    import torch

    return torch.bfloat16 if dtype == "bf16" else torch.float32
