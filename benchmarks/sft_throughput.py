"""Training throughput of `tunekit sft` against a plain script calling trl's SFTTrainer directly.

Same model, data, settings and seed; both run in this process, interleaved, several rounds; the
figure is non-padding training tokens per second over the training loop only (eval excluded).

    $ python benchmarks/sft_throughput.py --rounds 3 --steps 200
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from tunekit.config import validate
from tunekit.models.tiny import build_tiny_model, tiny_config
from tunekit.quiet import quiet_libraries
from tunekit.train.pipeline import run_recipe
from tunekit.train.rundir import RunOptions

# A bigger sibling of tiny:llama (4 layers, 256 wide, ~3.5M parameters) so a step is real work.
WIDER = {
    "hidden_size": 256,
    "intermediate_size": 688,
    "num_hidden_layers": 4,
    "num_attention_heads": 8,
    "num_key_value_heads": 4,
}


def build_model(folder: Path) -> Path:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    build_tiny_model(folder, "llama")
    spec = {**tiny_config("llama"), **WIDER}
    spec.pop("architectures")
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(AutoConfig.for_model(**spec)).save_pretrained(folder)
    return folder


def recipe(model: Path, steps: int, out: Path) -> dict:
    return {
        "method": "sft",
        "model": {"name_or_path": str(model)},
        "data": {"train": "builtin:reversal", "eval_fraction": 0.1, "max_length": 64},
        "training": {"learning_rate": 1e-3, "max_steps": steps, "batch_size": 16, "logging_steps": 25, "seed": 0},
        "output_dir": str(out),
    }


def run_tunekit(model: Path, steps: int, out: Path) -> float:
    summary = run_recipe(validate(recipe(model, steps, out)), RunOptions(overwrite=True), echo=lambda _: None)
    return summary["train_tokens"] / summary["runtime_seconds"]


def run_trl(model: Path, steps: int, out: Path) -> float:
    """What a user writes with trl alone: load, split, SFTTrainer, train."""
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from tunekit.data.sources import resolve_source

    data = load_dataset("json", data_files=str(resolve_source("builtin:reversal")), split="train")
    split = data.train_test_split(test_size=0.1, seed=0)
    trainer = SFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(model),
        args=SFTConfig(
            output_dir=str(out),
            learning_rate=1e-3,
            max_steps=steps,
            per_device_train_batch_size=16,
            logging_steps=25,
            seed=0,
            max_length=64,
            assistant_only_loss=True,
            bf16=False,
            activation_checkpointing=False,
            report_to="none",
            save_strategy="no",
            disable_tqdm=True,
        ),
        train_dataset=split["train"],
        processing_class=AutoTokenizer.from_pretrained(model),
    )
    started = time.perf_counter()
    trainer.train()
    runtime = time.perf_counter() - started
    return trainer.state.log_history[-2]["num_tokens"] / runtime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()
    quiet_libraries()
    with tempfile.TemporaryDirectory() as tmp:
        model = build_model(Path(tmp) / "model")
        results: dict[str, list[float]] = {"tunekit": [], "trl": []}
        for round_ in range(args.rounds):
            results["trl"].append(run_trl(model, args.steps, Path(tmp) / "trl"))
            results["tunekit"].append(run_tunekit(model, args.steps, Path(tmp) / "tunekit"))
            print(
                f"round {round_ + 1}: trl {results['trl'][-1]:,.0f} tok/s, tunekit {results['tunekit'][-1]:,.0f} tok/s"
            )
    trl_median, ours = statistics.median(results["trl"]), statistics.median(results["tunekit"])
    print(f"median: trl {trl_median:,.0f} tok/s, tunekit {ours:,.0f} tok/s, ratio {ours / trl_median:.3f}")


if __name__ == "__main__":
    main()
