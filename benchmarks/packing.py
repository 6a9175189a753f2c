"""Real (non-padding) training tokens per second of `tunekit sft`, packed (`data.packing: true`) vs padded.

Same model (the 4-layer, 256-wide random LLaMA of sft_throughput.py), same variable-length data
(prompt/completion rows whose lengths follow a long-tailed distribution, 5 to 250 tokens, as
instruction data does), same seed and learning rate, `max_length` 256. Both run in this process,
interleaved, several rounds. The figure is transformers' non-padding input-token count over the
training loop's wall time (eval excluded). Padded runs batch 8 examples; packed runs batch
`--packed-batch` rows of up to 256 tokens each (flattened into one padding-free sequence).

    $ python benchmarks/packing.py --rounds 3 --steps 60
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
from pathlib import Path

from sft_throughput import build_model

from tunekit.config import validate
from tunekit.quiet import quiet_libraries
from tunekit.train.pipeline import run_recipe
from tunekit.train.rundir import RunOptions

WORDS = (Path(__file__).resolve().parents[1] / "tunekit" / "datasets" / "words.txt").read_text().split()


def write_rows(path: Path, n: int, seed: int = 0) -> Path:
    """Prompt 2-20 words; completion log-normal, median ~25 words, capped at 200."""
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as handle:
        for _ in range(n):
            prompt = " ".join(rng.choices(WORDS, k=rng.randint(2, 20)))
            length = min(200, max(1, int(rng.lognormvariate(3.2, 0.9))))
            handle.write(
                json.dumps({"prompt": prompt, "completion": " " + " ".join(rng.choices(WORDS, k=length))}) + "\n"
            )
    return path


def run(model: Path, data: Path, packing: bool, batch: int, steps: int, out: Path) -> float:
    recipe = {
        "method": "sft",
        "model": {"name_or_path": str(model)},
        "data": {"train": str(data), "eval_fraction": 0, "max_length": 256, "packing": packing},
        "training": {"learning_rate": 1e-3, "max_steps": steps, "batch_size": batch, "logging_steps": 20, "seed": 0},
        "output_dir": str(out),
    }
    summary = run_recipe(validate(recipe), RunOptions(overwrite=True), echo=lambda _: None)
    return summary["train_tokens"] / summary["runtime_seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--padded-batch", type=int, default=8)
    parser.add_argument("--packed-batch", type=int, default=2)
    args = parser.parse_args()
    quiet_libraries()
    with tempfile.TemporaryDirectory() as tmp:
        model = build_model(Path(tmp) / "model")
        data = write_rows(Path(tmp) / "rows.jsonl", 2000)
        results: dict[str, list[float]] = {"padded": [], "packed": []}
        for round_ in range(args.rounds):
            results["padded"].append(run(model, data, False, args.padded_batch, args.steps, Path(tmp) / "padded"))
            results["packed"].append(run(model, data, True, args.packed_batch, args.steps, Path(tmp) / "packed"))
            print(
                f"round {round_ + 1}: padded {results['padded'][-1]:,.0f} tok/s, "
                f"packed {results['packed'][-1]:,.0f} tok/s"
            )
    padded, packed = statistics.median(results["padded"]), statistics.median(results["packed"])
    print(f"median real tokens/s: padded {padded:,.0f}, packed {packed:,.0f}, speed-up {packed / padded:.2f}x")


if __name__ == "__main__":
    main()
