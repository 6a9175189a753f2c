"""How fast `tunekit estimate-memory` answers from a preset or a config (median of N runs each).

    $ python benchmarks/estimate_speed.py --runs 10

Each run is a fresh `python` process (interpreter start-up included), as a user would see it, and
checks that torch was not imported. The in-process column times the arithmetic alone. The issue's
bar: under 1 s on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Runs the command through `tunekit.cli` when it registers estimate-memory, else on a bare Typer app.
RUNNER = """
import sys, typer
from tunekit.cli import estimate
try:
    from tunekit.cli import app
    registered = any(c.name == "estimate-memory" for c in app.registered_commands)
except Exception:
    registered = False
if not registered:
    app = typer.Typer()
    @app.callback()
    def _root() -> None: pass
    estimate.register(app)
try:
    app(args=sys.argv[1:], prog_name="tunekit")
except SystemExit:
    pass
print("TORCH_IMPORTED" if "torch" in sys.modules else "", file=sys.stderr)
"""

CASES = {
    "preset, all dtypes (table)": ["estimate-memory", "llama-3-8b"],
    "preset, qlora --json": ["estimate-memory", "llama-3.1-70b", "--method", "qlora", "--json"],
    "preset, zero3 x 8 GPUs": ["estimate-memory", "mixtral-8x7b", "--num-gpus", "8", "--sharding", "zero3"],
    "config.json, lora": ["estimate-memory", "{config}", "--method", "lora"],
    "estimate-compute": ["estimate-compute", "qwen2.5-7b", "--tokens", "2B"],
}


def timed(args: list[str]) -> float:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", RUNNER, *args], capture_output=True, text=True, check=True)
    elapsed = time.perf_counter() - started
    if "TORCH_IMPORTED" in done.stderr:
        raise SystemExit(f"torch was imported by: tunekit {' '.join(args)}")
    return elapsed


def in_process(runs: int) -> float:
    from tunekit.estimate.estimator import estimate_memory

    times = []
    for _ in range(runs):
        started = time.perf_counter()
        estimate_memory("llama-3-8b", {"method": "lora", "dtype": "all", "seq_len": 2048})
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    from tunekit.estimate.targets import load_preset

    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "config.json"
        config.write_text(json.dumps(load_preset("llama-3.2-3b").config))
        cases = {name: [a.replace("{config}", str(config)) for a in argv] for name, argv in CASES.items()}
        for argv in cases.values():
            timed(argv)  # warm the file cache once
        print(f"{'case':32s} {'median':>8s} {'max':>8s}   ({args.runs} fresh processes each)")
        worst = 0.0
        for name, argv in cases.items():
            times = [timed(argv) for _ in range(args.runs)]
            worst = max(worst, statistics.median(times))
            print(f"{name:32s} {statistics.median(times):7.3f}s {max(times):7.3f}s")
    print(f"{'in-process, 5 dtypes (arithmetic)':32s} {in_process(args.runs) * 1000:6.1f}ms")
    print(f"slowest median: {worst:.3f} s -> {'under' if worst < 1 else 'OVER'} the 1 s bar; torch never imported")


if __name__ == "__main__":
    main()
