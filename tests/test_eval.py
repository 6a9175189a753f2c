"""`tunekit eval`: the fine-tuned, merged model recalls what SFT taught it and the base does not; loss is
measured on the tokens training measures; demonstrations (--shots) never carry loss.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import reversal_pairs, write_jsonl, write_recipe

PAIRS = reversal_pairs(20, seed=7)
DEMOS = reversal_pairs(24, seed=7)[20:]  # four pairs that are not scored


def conversational(pairs: list[tuple[str, str]]) -> list[dict]:
    """trl's conversational prompt/completion rows."""
    return [
        {"prompt": [{"role": "user", "content": p}], "completion": [{"role": "assistant", "content": c}]}
        for p, c in pairs
    ]


def plain(pairs: list[tuple[str, str]]) -> list[dict]:
    return [{"prompt": p + "\nAnswer:", "completion": " " + c} for p, c in pairs]


def chats(pairs: list[tuple[str, str]]) -> list[dict]:
    return [{"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": c}]} for p, c in pairs]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA run that memorised PAIRS, merged. 120 epochs at lr 3e-3 as in test_sft (there: 40 pairs, 600
    steps), the smallest budget that reached exact match 1.0 here; 5e-3 does not learn at all."""
    from tunekit.cli import main
    from tunekit.use.merge import merge

    root = tmp_path_factory.mktemp("eval")
    data = write_jsonl(root / "pairs.jsonl", conversational(PAIRS))
    recipe = write_recipe(
        root / "recipe.yaml",
        method="sft",
        model={"name_or_path": "tiny:llama"},
        adapter={"type": "lora", "r": 16, "alpha": 32, "dropout": 0.0},
        data={"train": str(data), "eval": str(data), "max_length": 64},
        training={"learning_rate": 3e-3, "max_steps": 300, "batch_size": 8, "logging_steps": 100, "seed": 0},
        output_dir=str(root / "run"),
    )
    try:
        main(["sft", str(recipe)])
    except SystemExit as exit_:
        assert exit_.code in (0, None)
    merge(root / "run" / "final", root / "merged", report=lambda _: None)
    return root


def run_json(cli, *args: str) -> dict | list:
    result = cli("eval", *args, "--json")
    assert result.code == 0, result.err
    return json.loads(result.out)


def test_merged_model_recalls_the_memorised_set_and_the_base_does_not(cli, trained: Path) -> None:
    data = str(trained / "pairs.jsonl")
    merged, base = run_json(cli, str(trained / "merged"), "--data", data, "--compare", "tiny:llama")
    for row in (merged, base):
        assert {"loss", "perplexity", "exact_match", "rougeL", "bleu", "num_examples"} <= set(row)
        assert row["num_examples"] == 20
    assert merged["exact_match"] >= 0.9 and merged["rougeL"] >= 0.9 and merged["bleu"] >= 90
    assert base["exact_match"] <= 0.05 and base["rougeL"] < 0.2
    assert merged["loss"] < base["loss"] and merged["perplexity"] < base["perplexity"]


def test_loss_is_the_loss_training_reported(cli, trained: Path) -> None:
    # Same rows, same rendering: only the averaging differs (trl averages per batch, eval per token).
    summary = json.loads((trained / "run" / "summary.json").read_text())
    found = run_json(cli, str(trained / "run" / "final"), "--data", str(trained / "pairs.jsonl"))
    assert found["loss"] == pytest.approx(summary["eval_loss_after"], rel=0.02)


def test_loss_tokens_are_the_completion_tokens_trl_trains_on(cli, tmp_path: Path) -> None:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from tunekit.models.tiny import ensure_tiny

    rows = plain(PAIRS[:6])
    found = run_json(cli, "tiny:llama", "--data", str(write_jsonl(tmp_path / "plain.jsonl", rows)))
    path = ensure_tiny("tiny:llama")
    trainer = SFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(path),
        args=SFTConfig(output_dir=str(tmp_path / "unused"), report_to="none", max_steps=1, bf16=False),
        train_dataset=Dataset.from_list(rows),
        processing_class=AutoTokenizer.from_pretrained(path),
    )
    assert found["loss_tokens"] == sum(sum(label != -100 for label in r["labels"]) for r in trainer.train_dataset)
    assert found["exact_match"] is not None and found["num_examples"] == 6


@pytest.mark.parametrize("rows", [conversational, plain, chats], ids=["conversational", "plain", "messages"])
def test_demonstrations_carry_no_loss(cli, tmp_path: Path, rows) -> None:
    data = write_jsonl(tmp_path / "data.jsonl", rows(PAIRS[:4]))
    demos = write_jsonl(tmp_path / "demos.jsonl", rows(DEMOS))
    predictions = tmp_path / "predictions.jsonl"
    zero, two = run_json(
        cli,
        "tiny:llama",
        "--data",
        str(data),
        "--shots",
        "0",
        "--shots",
        "2",
        "--shots-from",
        str(demos),
        "--predictions",
        str(predictions),
        "--max-new-tokens",
        "4",
    )
    assert (zero["shots"], two["shots"]) == (0, 2) and zero["num_examples"] == two["num_examples"] == 4
    assert zero["loss_tokens"] == two["loss_tokens"] and zero["loss"] != two["loss"]
    shown = [json.loads(line) for line in predictions.read_text().splitlines()]
    assert len(shown) == 8
    with_demos = [r["prompt"] for r in shown if r["shots"] == 2]
    assert all(DEMOS[0][1] in p and DEMOS[1][1] in p and DEMOS[2][1] not in p for p in with_demos)


def test_default_demonstrations_are_the_first_rows_and_are_not_scored(cli, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "data.jsonl", conversational(PAIRS[:5]))
    result = cli("eval", "tiny:llama", "--data", str(data), "--shots", "2", "--max-new-tokens", "4")
    assert result.code == 0, result.err
    assert "3 examples scored; demonstrations from the first 2 rows" in result.out
    assert "model       shots  loss" in result.out and "tiny:llama  2" in result.out


def test_text_data_gives_loss_only(cli, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "text.jsonl", [{"text": " ".join(p)} for p in PAIRS[:4]])
    found = run_json(cli, "tiny:llama", "--data", str(data))
    assert found["loss"] > 0 and found["exact_match"] is None and found["bleu"] is None
    refused = cli("eval", "tiny:llama", "--data", str(data), "--shots", "1")
    assert refused.code == 2 and "--shots needs prompt/completion or chat data" in refused.err


def test_encoder_decoder_model(cli, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "plain.jsonl", plain(PAIRS[:4]))
    found = run_json(cli, "tiny:t5", "--data", str(data), "--max-new-tokens", "4")
    assert 0 < found["loss"] < 20 and found["exact_match"] == 0.0 and found["loss_tokens"] > 0


def test_bad_data_exits_2_naming_it(cli, tmp_path: Path) -> None:
    rows = conversational(PAIRS[:2])
    del rows[1]["completion"]
    broken = cli("eval", "tiny:llama", "--data", str(write_jsonl(tmp_path / "broken.jsonl", rows)))
    assert broken.code == 2 and "broken.jsonl, row 2: field 'completion': missing" in broken.err
    unknown = cli("eval", "tiny:llama", "--data", str(write_jsonl(tmp_path / "odd.jsonl", [{"question": "x"}])))
    assert unknown.code == 2 and "odd.jsonl, row 1: cannot detect the data format" in unknown.err
    missing = cli("eval", "tiny:llama", "--data", str(tmp_path / "none.jsonl"))
    assert missing.code == 2 and "data file not found" in missing.err
    few = cli("eval", "tiny:llama", "--data", str(write_jsonl(tmp_path / "two.jsonl", rows[:1])), "--shots", "1")
    assert few.code == 2 and "none left to score" in few.err
