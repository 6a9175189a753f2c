"""Preference alignment: data formats, LoRA references, SFT -> DPO, reward scoring, bad input.

The learning bars of each method on held-out pairs live in test_recipes.py (the tiny recipes run
as shipped); here, the mechanics around them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import ROOT, write_jsonl, write_recipe
from tunekit.config.sections import DataSection
from tunekit.data import load_data

PAIRS = [json.loads(line) for line in (ROOT / "tunekit" / "datasets" / "reversal-preference.jsonl").open()][:24]


def recipe(tmp_path: Path, method: str, data: Path | str, steps: int = 6, **extra: object) -> Path:
    return write_recipe(
        tmp_path / f"{method}.yaml",
        method=method,
        model=extra.pop("model", {"name_or_path": "tiny:llama"}),
        adapter=extra.pop("adapter", {"type": "none"}),
        data={"train": str(data), "eval_fraction": 0.25, "max_length": 64},
        training={"learning_rate": 1e-3, "max_steps": steps, "batch_size": 4, "logging_steps": 3},
        output_dir=str(tmp_path / f"run-{method}"),
        **extra,
    )


def test_preference_formats_normalise_to_explicit_pairs(tmp_path: Path) -> None:
    explicit_text = [{"prompt": "a b ->", "chosen": " b a", "rejected": " a b"}] * 4
    implicit_chat = [{"chosen": p["prompt"] + p["chosen"], "rejected": p["prompt"] + p["rejected"]} for p in PAIRS[:4]]
    hh = [{"chosen": "\n\nHuman: a b?\n\nAssistant: b a", "rejected": "\n\nHuman: a b?\n\nAssistant: a b"}] * 4
    for rows, expected_prompt in (
        (explicit_text, "a b ->"),
        (implicit_chat, PAIRS[0]["prompt"]),
        (hh, [{"role": "user", "content": "a b?"}]),
    ):
        path = write_jsonl(tmp_path / "p.jsonl", rows)
        data = load_data(DataSection(train=str(path), eval_fraction=0), seed=0, method="dpo")
        assert data.format == "preference"
        assert data.train[0]["prompt"] == expected_prompt
        assert set(data.train[0]) == {"prompt", "chosen", "rejected", "_source"}


def test_kto_rows_and_pairs(tmp_path: Path) -> None:
    rows = [{"prompt": "x", "completion": " y", "label": i % 2 == 0} for i in range(6)]
    data = load_data(DataSection(train=str(write_jsonl(tmp_path / "k.jsonl", rows)), eval_fraction=0), 0, "kto")
    assert data.format == "unpaired" and data.train[1]["label"] is False


@pytest.mark.parametrize(
    "rows, method, expected",
    [
        (
            [{"prompt": "p", "chosen": "c"}],
            "dpo",
            "format prompt does not fit `tunekit dpo`, which needs prompt/chosen/rejected",
        ),
        ([{"question": "q", "chosen": "c"}], "dpo", "cannot detect the data format"),
        ([{"prompt": "p", "chosen": "c", "rejected": 3}], "dpo", "row 1: field 'rejected': expected a string"),
        ([{"chosen": "c", "rejected": "r"}], "dpo", "row 1: field 'prompt': missing"),
        ([{"prompt": "p", "completion": "c", "label": "maybe"}], "kto", "row 1: field 'label'"),
        ([{"prompt": "p", "completion": "c"}], "dpo", "format prompt_completion does not fit `tunekit dpo`"),
        ([{"prompt": "p", "chosen": "c", "rejected": "r"}], "sft", "format preference does not fit `tunekit sft`"),
    ],
)
def test_bad_preference_data_exits_2_naming_it(cli, tmp_path: Path, rows: list, method: str, expected: str) -> None:
    path = write_jsonl(tmp_path / "bad.jsonl", rows * 4)
    result = cli(method, str(recipe(tmp_path, method, path)))
    assert result.code == 2 and expected in result.err and str(path) in result.err
    assert not (tmp_path / f"run-{method}").exists()


def test_method_section_must_match_the_command(cli, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "p.jsonl", PAIRS)
    wrong = cli("dpo", str(recipe(tmp_path, "dpo", path, kto={"beta": 0.2})))
    assert wrong.code == 2 and "kto (line 16): this section is for `method: kto`" in wrong.err
    other = cli("kto", str(recipe(tmp_path, "dpo", path)))
    assert other.code == 2 and "a recipe for `tunekit dpo`, not `tunekit kto`" in other.err


def test_dpo_with_lora_needs_no_reference_copy(cli, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "p.jsonl", PAIRS)
    result = cli("dpo", str(recipe(tmp_path, "dpo", path, adapter={"type": "lora", "r": 4})))
    assert result.code == 0, result.err
    summary = json.loads((tmp_path / "run-dpo" / "summary.json").read_text())
    assert 0 < summary["trainable_parameters"] < summary["total_parameters"]
    assert {"eval_reward_accuracy_before", "eval_reward_margin_after", "eval_preference_accuracy_after"} <= set(summary)
    assert (tmp_path / "run-dpo" / "final" / "adapter_config.json").exists()
    assert "samples (greedy, 3 prompts):" in result.out  # DPO generates: it ends with its before/after block


@pytest.mark.parametrize("existing, adapter", [("merge", "none"), ("continue", "lora")])
def test_dpo_starts_from_an_sft_adapter(cli, tmp_path: Path, existing: str, adapter: str) -> None:
    sft = write_recipe(
        tmp_path / "sft.yaml",
        method="sft",
        model={"name_or_path": "tiny:llama"},
        adapter={"type": "lora", "r": 4},
        data={"train": "builtin:reversal", "max_length": 64},
        training={"learning_rate": 1e-3, "max_steps": 3},
        output_dir=str(tmp_path / "sft"),
    )
    assert cli("sft", str(sft)).code == 0
    path = write_jsonl(tmp_path / "p.jsonl", PAIRS)
    dpo = recipe(
        tmp_path,
        "dpo",
        path,
        model={"name_or_path": str(tmp_path / "sft" / "final")},
        adapter={"type": adapter, "r": 4, "existing": existing},
    )
    result = cli("dpo", str(dpo))
    assert result.code == 0, result.err
    summary = json.loads((tmp_path / "run-dpo" / "summary.json").read_text())
    if existing == "continue":  # the SFT adapter itself trains on: same rank-4 LoRA size
        assert summary["trainable_parameters"] < summary["total_parameters"]
        assert (tmp_path / "run-dpo" / "final" / "adapter_config.json").exists()
    else:
        assert summary["trainable_parameters"] == summary["total_parameters"]


def test_score_reports_pairwise_accuracy_of_a_trained_reward_model(cli, tmp_path: Path) -> None:
    shipped = ROOT / "recipes" / "tiny" / "reward.yaml"
    section = DataSection(train="builtin:reversal-preference", eval_fraction=0.05)
    held_out = write_jsonl(
        tmp_path / "held.jsonl",
        load_data(section, seed=42, method="reward").eval.select(range(16)).remove_columns("_source").to_list(),
    )
    assert cli("reward", str(shipped), f"output_dir={tmp_path / 'rm'}").code == 0
    result = cli("score", str(tmp_path / "rm" / "final"), "--data", str(held_out), "--json")
    assert result.code == 0, result.err
    scored = json.loads(result.out)
    assert scored["num_examples"] == 16 and len(scored["chosen"]) == 16
    assert scored["accuracy"] >= 0.8 and scored["margin"] > 0
    text = cli("score", str(tmp_path / "rm" / "final"), "--data", str(held_out))
    assert "16 pairs: accuracy" in text.out


def test_score_refuses_sft_data_and_non_reward_models(cli, tmp_path: Path) -> None:
    chat = write_jsonl(tmp_path / "chat.jsonl", [{"messages": [{"role": "user", "content": "x"}]}])
    refused = cli("score", "tiny:llama", "--data", str(chat))
    assert refused.code == 2 and "needs prompt/chosen/rejected" in refused.err
    pairs = write_jsonl(tmp_path / "pairs.jsonl", PAIRS[:2])
    not_reward = cli("score", "tiny:llama", "--data", str(pairs))
    assert not_reward.code == 2 and "a reward model has one score" in not_reward.err
