#!/usr/bin/env python3
"""What one malloc/free pair costs with leakprobe's native hooks (issue 12).

A C library compiled here calls malloc(64)/free in a loop through its own
GOT (so the interposed hooks see every call), with the GIL released. Each
arm runs in a fresh process, the arms of a round back to back in a rotating
order; the figure per arm is the fastest of its rounds (other processes on
a shared machine only ever add time), as nanoseconds per pair and as a
ratio to the arm without native tracking:

* ``off``: leakprobe with its defaults (``LEAKPROBE_NATIVE=0``): no hooks;
* ``unsampled``: ``LEAKPROBE_NATIVE=1``, default 256 KiB mean: a 64-byte
  pair is sampled once in ~4096, so this is the unsampled path (a countdown
  on malloc, a filter probe on free, one more indirect call each);
* ``sampled``: ``LEAKPROBE_NATIVE_SAMPLE_BYTES=1``: every allocation is
  sampled (Python + native stack capture, interning, the table insert and,
  on free, the table erase).

Benchmarks are not tests: nothing here asserts on time.

Usage::

    .venv/bin/python scripts/bench_native.py --rounds 5 --pairs 2000000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

LIB_C = r"""
#include <stdlib.h>
#include <time.h>
double pairs(long n, long size) {
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (long i = 0; i < n; ++i) {
        void* volatile p = malloc((size_t)size);
        free(p);
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    return (b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec);
}
"""

CHILD = r"""
import ctypes, json, sys
import leakprobe
lib = ctypes.CDLL(sys.argv[1])
lib.pairs.restype = ctypes.c_double
lib.pairs.argtypes = (ctypes.c_long, ctypes.c_long)
n = int(sys.argv[2])
lib.pairs(n // 10, 64)  # warm-up
print(json.dumps(lib.pairs(n, 64) / n))
"""

ARMS = {
    "off": {"LEAKPROBE_NATIVE": "0"},
    "unsampled": {"LEAKPROBE_NATIVE": "1"},
    "sampled": {"LEAKPROBE_NATIVE": "1", "LEAKPROBE_NATIVE_SAMPLE_BYTES": "1"},
}


def run_arm(lib: Path, arm: str, pairs: int) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEAKPROBE_")}
    env.update(LEAKPROBE_PORT="0", LEAKPROBE_LOG_LEVEL="off", **ARMS[arm])
    n = pairs // 100 if arm == "sampled" else pairs
    out = subprocess.run([sys.executable, "-c", CHILD, str(lib), str(n)], env=env,
                         capture_output=True, text=True, timeout=600, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--pairs", type=int, default=2_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        lib = Path(tmp) / "libpairs.so"
        (Path(tmp) / "pairs.c").write_text(LIB_C)
        subprocess.run([sysconfig.get_config_var("CC").split()[0] or "cc", "-shared", "-fPIC",
                        "-O2", str(Path(tmp) / "pairs.c"), "-o", str(lib)], check=True)
        best = {arm: float("inf") for arm in ARMS}
        names = list(ARMS)
        for r in range(args.rounds):
            order = names[r % len(names):] + names[:r % len(names)]
            for arm in order:
                best[arm] = min(best[arm], run_arm(lib, arm, args.pairs))
    print("| arm | ns per malloc(64)/free pair | ratio to off |")
    print("| --- | --- | --- |")
    for arm in names:
        print(f"| {arm} | {best[arm]:.1f} | {best[arm] / best['off']:.2f}x |")
    print(json.dumps(best), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
