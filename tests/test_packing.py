"""`data.packing`: padding-free SFT gives the loss of the unpacked examples, and trains end to end.

The equivalence is checked on the batches tunekit's own SFT trainer builds: every train example in one
packed batch (a single flat row, positions restarting per example) against the same examples padded
side by side. A control shows the check can fail: the flat row under one plain causal mask (attention
leaking across examples) gives a different loss.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from tests.conftest import ROOT, WORDS, chat_rows, reversal_pairs, write_jsonl, write_recipe


def variable_rows(n: int, seed: int = 0) -> list[dict]:
    """Prompt/completion rows from 1 to ~30 words: the length spread packing exists for."""
    rng = random.Random(seed)
    return [
        {
            "prompt": " ".join(rng.sample(WORDS, rng.randint(1, 8))),
            "completion": " " + " ".join(rng.sample(WORDS, rng.randint(1, 24))),
        }
        for _ in range(n)
    ]


def sft_trainer(tmp_path: Path, arch: str, rows: list[dict], packing: bool, train_on: str = "completion"):
    from tunekit.config.schema import parse_recipe
    from tunekit.methods.sft import build_trainer
    from tunekit.train.pipeline import load, preflight
    from tunekit.train.rundir import RunOptions

    data = write_jsonl(tmp_path / f"rows-{packing}.jsonl", rows)
    recipe = parse_recipe(
        {
            "method": "sft",
            "model": {"name_or_path": f"tiny:{arch}"},
            "data": {
                "train": str(data),
                "eval_fraction": 0,
                "max_length": 128,
                "packing": packing,
                "train_on": train_on,
            },
            "training": {"learning_rate": 1e-3, "max_steps": 1},
            "output_dir": str(tmp_path / f"run-{arch}-{packing}"),
        }
    )
    return build_trainer(load(preflight(recipe, RunOptions(overwrite=True))))


def summed_loss(model, batch: dict) -> tuple[float, int]:
    """(sum of token losses, number of loss-carrying tokens) of one collated batch."""
    import torch

    inputs = {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "position_ids")}
    with torch.no_grad():
        logits = model(**inputs).logits.float()
    labels = batch["labels"][:, 1:].reshape(-1)
    loss = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.size(-1)), labels, ignore_index=-100, reduction="sum"
    )
    return loss.item(), int((labels != -100).sum())


def whole_set(trainer) -> dict:
    dataset = trainer.train_dataset
    return trainer.data_collator([dataset[i] for i in range(len(dataset))])


@pytest.mark.parametrize(
    ("arch", "rows", "train_on"),
    [
        ("llama", variable_rows(24), "completion"),
        ("gpt2", variable_rows(24, seed=1), "all"),
        ("llama", chat_rows(reversal_pairs(16)), "completion"),  # assistant-only loss on chat rows
    ],
    ids=["llama-completion", "gpt2-all", "llama-chat"],
)
def test_packed_and_unpacked_give_the_same_loss(tmp_path: Path, arch: str, rows: list[dict], train_on: str) -> None:
    import torch

    packed_trainer = sft_trainer(tmp_path, arch, rows, packing=True, train_on=train_on)
    padded_trainer = sft_trainer(tmp_path, arch, rows, packing=False, train_on=train_on)
    model = padded_trainer.model.eval()
    packed, padded = whole_set(packed_trainer), whole_set(padded_trainer)

    assert packed["input_ids"].shape[0] == 1 and "attention_mask" not in packed  # padding-free: one flat row
    assert padded["input_ids"].shape[0] == len(rows)
    assert int((packed["position_ids"] == 0).sum()) == len(rows)  # positions restart at each example
    packed_sum, packed_tokens = summed_loss(model, packed)
    padded_sum, padded_tokens = summed_loss(model, padded)
    assert packed_tokens == padded_tokens > 0
    assert packed_sum == pytest.approx(padded_sum, rel=1e-6)

    # The same flat row under one causal mask: positions still restart, but attention crosses examples.
    leaking = dict(packed, attention_mask=torch.ones_like(packed["input_ids"]))
    leaking_sum, _ = summed_loss(model, leaking)
    assert abs(leaking_sum - padded_sum) / padded_sum > 1e-5  # ten times the tolerance above


def test_packed_sft_learns(cli, tmp_path: Path) -> None:
    rows = chat_rows(reversal_pairs(40, seed=3))
    data = write_jsonl(tmp_path / "pairs.jsonl", rows)
    recipe = write_recipe(
        tmp_path / "recipe.yaml",
        method="sft",
        model={"name_or_path": "tiny:llama"},
        data={"train": str(data), "eval": str(data), "max_length": 256, "packing": True},
        training={"learning_rate": 3e-3, "max_steps": 60, "batch_size": 2, "logging_steps": 20, "seed": 0},
        output_dir=str(tmp_path / "run"),
    )
    result = cli("sft", str(recipe))
    assert result.code == 0, result.err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["eval_loss_after"] < summary["eval_loss_before"] - 1.0
    # A batch of 2 packed rows of up to 256 tokens holds every ~30-token example many times over.
    assert summary["train_tokens"] > 60 * 2 * 30 * 2


def test_packing_is_refused_outside_sft(cli, tmp_path: Path) -> None:
    recipe = write_recipe(
        tmp_path / "recipe.yaml",
        method="dpo",
        model={"name_or_path": "tiny:llama"},
        data={"train": "builtin:reversal-preference", "packing": True},
        training={"learning_rate": 1e-3},
        output_dir=str(tmp_path / "run"),
    )
    result = cli("validate", str(recipe))
    assert result.code == 2 and "data.packing" in result.err


def test_validate_says_how_many_rows_packing_fills(cli) -> None:
    import re

    # builtin:reversal's chats are ~16-30 tokens: a 256-token row holds about ten of them.
    recipe = str(ROOT / "recipes" / "quickstart.yaml")
    result = cli("validate", recipe, "data.packing=true", "data.max_length=256", "--examples", "0")
    assert result.code == 0, result.err
    found = re.search(r"packing: ([\d,]+) examples \(([\d,]+) tokens\) fill about ([\d,]+) rows of 256", result.out)
    assert found, result.out
    examples, tokens, rows = (int(group.replace(",", "")) for group in found.groups())
    assert rows == -(-tokens // 256) and examples > 8 * rows
