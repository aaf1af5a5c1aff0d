"""CLI start-up time: the median wall time of `newsletter --help` and `newsletter --version`.

    python -m bench.startup [--runs N]

Each is run N times as a fresh process, as cron and an operator's shell run it; the target is
0.3 s for each (the commands import only what they use: see newsletter/cli.py).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

TARGET = 0.3


def command() -> list[str]:
    """The installed entry point beside this interpreter, else the module."""
    script = Path(sys.executable).with_name("newsletter")
    if script.exists():
        return [str(script)]
    found = shutil.which("newsletter")
    return [found] if found else [sys.executable, "-m", "newsletter.cli"]


def median_seconds(argv: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.startup", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--runs", type=int, default=11, help="runs per command; the median counts")
    args = parser.parse_args(argv)
    slow = 0
    for flag in ("--help", "--version"):
        seconds = median_seconds([*command(), flag], args.runs)
        verdict = "ok" if seconds <= TARGET else "over"
        slow += seconds > TARGET
        print(
            f"newsletter {flag:<10} median {seconds:.3f} s of {args.runs} runs "
            f"(target {TARGET} s: {verdict})"
        )
    return 1 if slow else 0


if __name__ == "__main__":
    sys.exit(main())
