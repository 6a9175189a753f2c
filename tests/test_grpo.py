"""GRPO through trl: learns the toy reward, takes the same reward sources, checks the group size."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import ROOT


def test_grpo_with_lora_and_a_function_reward(cli, tmp_path: Path) -> None:
    result = cli(
        "grpo",
        str(ROOT / "recipes" / "tiny" / "grpo.yaml"),
        f"output_dir={tmp_path / 'g'}",
        "adapter.type=lora",
        "adapter.r=4",
        "training.max_steps=3",
    )
    assert result.code == 0, result.err
    summary = json.loads((tmp_path / "g" / "summary.json").read_text())
    assert summary["method"] == "grpo" and {"eval_reward_before", "eval_reward_after"} <= set(summary)
    assert 0 < summary["trainable_parameters"] < summary["total_parameters"]
    assert (tmp_path / "g" / "final" / "adapter_config.json").exists()


def test_batch_must_hold_whole_groups(cli, tmp_path: Path) -> None:
    result = cli(
        "grpo", str(ROOT / "recipes" / "tiny" / "grpo.yaml"), f"output_dir={tmp_path / 'g'}", "training.batch_size=6"
    )
    assert result.code == 2 and "multiple of grpo.num_generations (4)" in result.err
    assert not (tmp_path / "g").exists()


def test_grpo_help(cli) -> None:
    assert cli("grpo", "--help").code == 0
