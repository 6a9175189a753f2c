"""Start-up time of `tunekit --help` against `trl --help` (median of N runs each, interleaved).

$ python benchmarks/startup.py --runs 10
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import time


def timed(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    commands = {name: [shutil.which(name) or name, "--help"] for name in ("tunekit", "trl")}
    for command in commands.values():
        timed(command)  # warm the file cache once
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(args.runs):
        for name, command in commands.items():
            times[name].append(timed(command))
    for name, values in times.items():
        print(f"{name} --help: median {statistics.median(values):.3f} s (min {min(values):.3f}, {args.runs} runs)")
    ratio = statistics.median(times["trl"]) / statistics.median(times["tunekit"])
    print(f"tunekit starts {ratio:.1f}x faster than trl")


if __name__ == "__main__":
    main()
