"""Data sources and formats: detection, normalisation, bad rows named by file/row/field, previews."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tests.conftest import ROOT, chat_rows, reversal_pairs, write_jsonl, write_recipe
from tunekit.config.sections import DataSection
from tunekit.data import load_data
from tunekit.data.formats import normalise
from tunekit.errors import DataError

PAIRS = reversal_pairs(12, seed=3)
EXAMPLES = {
    "text": [{"text": f"{p} -> {c}"} for p, c in PAIRS],
    "prompt_completion": [{"prompt": p, "completion": c} for p, c in PAIRS],
    "messages": [{"messages": [{"role": "system", "content": "Be brief."}, *r["messages"]]} for r in chat_rows(PAIRS)],
    "alpaca": [{"instruction": "Reverse the words.", "input": p.split(": ")[1], "output": c} for p, c in PAIRS],
    "sharegpt": [{"conversations": [{"from": "human", "value": p}, {"from": "gpt", "value": c}]} for p, c in PAIRS],
}


@pytest.mark.parametrize("fmt", list(EXAMPLES))
def test_each_format_is_detected_and_normalised(tmp_path: Path, fmt: str) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", EXAMPLES[fmt])
    data = load_data(DataSection(train=str(path), eval_fraction=0.25), seed=0, method="sft")
    assert data.format == fmt
    assert len(data.train) == 9 and len(data.eval) == 3
    row = data.train[0]
    expected_keys = {"text": {"text"}, "messages": {"messages"}}.get(data.kind, {"prompt", "completion"})
    assert set(row) == expected_keys | {"_source"}  # _source: which source gave the row (counted for summary.json)


def test_sharegpt_roles_become_openai_roles() -> None:
    row = normalise(EXAMPLES["sharegpt"][0], "sharegpt")
    assert [m["role"] for m in row["messages"]] == ["user", "assistant"]


def test_alpaca_renders_the_alpaca_prompt_with_input() -> None:
    row = normalise(EXAMPLES["alpaca"][0], "alpaca")
    assert "### Instruction:\nReverse the words." in row["prompt"]
    assert "### Input:\n" in row["prompt"] and row["prompt"].endswith("### Response:\n")


def test_declared_format_overrides_detection(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "a", "prompt": "p", "completion": "c"}] * 4)
    assert load_data(DataSection(train=str(path)), seed=0, method="sft").format == "prompt_completion"
    assert load_data(DataSection(train=str(path), format="text"), seed=0, method="sft").format == "text"


def test_eval_split_is_seeded(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", EXAMPLES["text"])
    first = load_data(DataSection(train=str(path), eval_fraction=0.25), seed=1, method="sft").eval
    again = load_data(DataSection(train=str(path), eval_fraction=0.25), seed=1, method="sft").eval
    other = load_data(DataSection(train=str(path), eval_fraction=0.25), seed=2, method="sft").eval
    assert first.to_list() == again.to_list() and first.to_list() != other.to_list()


def test_csv_parquet_json_and_disk_sources(tmp_path: Path) -> None:
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = EXAMPLES["prompt_completion"]
    with (tmp_path / "d.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["prompt", "completion"])
        writer.writeheader()
        writer.writerows(rows)
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    (tmp_path / "d.json").write_text(json.dumps(rows))
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "disk"))
    for source in ("d.csv", "d.parquet", "d.json", "disk"):
        data = load_data(DataSection(train=str(tmp_path / source), eval_fraction=0), seed=0, method="sft")
        assert data.format == "prompt_completion" and len(data.train) == len(rows), source


@pytest.mark.parametrize(
    "rows, expected",
    [
        ([{"prompt": "a", "completion": "b"}, {"prompt": "c"}], "row 2: field 'completion': missing"),
        (
            [{"prompt": "a", "completion": "b"}, {"prompt": "c", "completion": 3}],
            "row 2: field 'completion': expected a string",
        ),
        (
            [{"messages": [{"role": "user", "content": "hi"}, {"role": "bot", "content": "x"}]}],
            "row 1: field 'messages[1].role': 'bot' is not one of",
        ),
        ([{"messages": [{"role": "user", "content": "hi"}]}], "row 1: field 'messages': no assistant message"),
        ([{"conversations": [{"from": "alien", "value": "x"}]}], "row 1: field 'conversations[0].from'"),
        ([{"question": "q", "answer": "a"}], "cannot detect the data format from fields (answer, question)"),
    ],
)
def test_bad_rows_name_file_row_and_field(tmp_path: Path, rows: list[dict], expected: str) -> None:
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(DataError) as caught:
        load_data(DataSection(train=str(path)), seed=0, method="sft")
    assert str(path) in str(caught.value) and expected in str(caught.value)


def test_invalid_json_line_is_named(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "a"}\n{"text": oops}\n')
    with pytest.raises(DataError, match="line 2: invalid JSON"):
        load_data(DataSection(train=str(path)), seed=0, method="sft")


def test_csv_rows_are_numbered_as_a_spreadsheet_shows_them(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("prompt,completion\na,b\nc,\n")
    with pytest.raises(DataError, match=r"row 3: field 'completion': empty"):
        load_data(DataSection(train=str(path)), seed=0, method="sft")


def test_missing_file_and_offline_hub_dataset(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="data file not found"):
        load_data(DataSection(train=str(tmp_path / "nope.jsonl")), seed=0, method="sft")
    with pytest.raises(DataError, match="cannot load dataset 'someone/not-here'"):
        load_data(DataSection(train="someone/not-here"), seed=0, method="sft")


def test_sft_bad_data_exits_2_before_writing_the_run_folder(cli, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "a", "completion": "b"}, {"prompt": "c"}])
    recipe = write_recipe(
        tmp_path / "r.yaml",
        method="sft",
        model={"name_or_path": "tiny:llama"},
        data={"train": str(data)},
        training={"learning_rate": 1e-3, "max_steps": 2},
        output_dir=str(tmp_path / "run"),
    )
    result = cli("sft", str(recipe))
    assert result.code == 2 and f"{data}, row 2: field 'completion': missing" in result.err
    assert not (tmp_path / "run").exists()


def test_preview_masks_match_transformers_assistant_masks() -> None:
    from transformers import AutoTokenizer

    from tunekit.data.preview import Preview
    from tunekit.models.tiny import ensure_tiny

    tokenizer = AutoTokenizer.from_pretrained(ensure_tiny("tiny:llama"))
    preview = Preview.from_tiny("llama")
    for row in EXAMPLES["messages"]:
        expected = tokenizer.apply_chat_template(
            row["messages"], tokenize=True, return_dict=True, return_assistant_tokens_mask=True
        )
        shown = preview.render(row, "messages", "completion")
        assert shown.ids == expected["input_ids"] and shown.mask == expected["assistant_masks"]


def test_preview_masks_match_trl_labels_for_prompt_completion() -> None:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from tunekit.data.preview import Preview
    from tunekit.models.tiny import ensure_tiny

    path = ensure_tiny("tiny:llama")
    rows = EXAMPLES["prompt_completion"][:4]
    trainer = SFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(path),
        args=SFTConfig(
            output_dir="/tmp/unused", report_to="none", max_steps=1, bf16=False, activation_checkpointing=False
        ),
        train_dataset=Dataset.from_list(rows),
        processing_class=AutoTokenizer.from_pretrained(path),
    )
    preview = Preview.from_tiny("llama")
    for row, prepared in zip(rows, trainer.train_dataset):
        shown = preview.render(row, "prompt_completion", "completion")
        assert shown.ids == prepared["input_ids"]
        assert shown.mask == [int(label != -100) for label in prepared["labels"]]


def test_validate_shows_marked_examples_and_length_stats(cli) -> None:
    result = cli("validate", str(ROOT / "recipes" / "quickstart.yaml"), "data.max_length=20")
    assert result.code == 0, result.err
    assert "[[" in result.out and "<|end|>]]" in result.out
    assert "tokens per example: min" in result.out
    assert "sequences exceed data.max_length=20" in result.out and "truncation: 0 of" not in result.out
