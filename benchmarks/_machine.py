"""What machine a benchmark ran on: CPU model and vector extensions (and, printed, the load).

Timings differ by CPU as much as by load (docs/performance.md, session 8: the same code gave a
warm box p95 of 200 ms on an AVX2-only AMD EPYC and 94 ms on an AVX-512 + AMX Intel Xeon), so
every timing benchmark prints this line and stores :func:`machine` in its JSON.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "amx_bf16")


def machine() -> dict[str, Any]:
    """``{"cpu": model name, "cpus": count, "flags": [the vector extensions found]}`` (Linux
    ``/proc/cpuinfo``; "unknown" elsewhere). The load average is the caller's to record, at
    the moments it means something (before and after a run)."""
    model, flags = "unknown", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model == "unknown":
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    return {
        "cpu": model,
        "cpus": os.cpu_count(),
        "flags": [f for f in _FLAGS if f in flags],
    }


def describe() -> str:
    """One line: ``machine: Intel(R) Xeon(R) Processor, 2 CPUs (avx2 avx512f …), load 0.3``."""
    m = machine()
    return (
        f"machine: {m['cpu']}, {m['cpus']} CPUs ({' '.join(m['flags']) or 'no AVX2'}), "
        f"load average {os.getloadavg()[0]:.2f}"
    )
