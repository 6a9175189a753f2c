"""`tunekit classify` on a tiny random BERT: it learns a held-out word rule (full and LoRA), records its
labels where transformers reads them, and stops with file, row and field on bad rows.

The task (builtin:topics): does a short phrase name an animal or a food? The key words recur, the
phrases around them do not, so held-out accuracy moves from chance only if the rule was learned.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT, write_jsonl, write_recipe

TOPICS = [json.loads(line) for line in (ROOT / "tunekit" / "datasets" / "topics.jsonl").read_text().splitlines()]
# (steps, learning rate). LoRA on a random trunk must first route the rule into the [CLS] position through
# low-rank updates: it needs more steps, and a gentler rate (5e-3 stalls at chance for some seeds).
SETTINGS = {"none": (100, 2e-3), "lora": (600, 2e-3)}


def recipe(
    tmp_path: Path,
    adapter: str = "none",
    rows: list[dict] | None = None,
    eval_rows: list[dict] | None = None,
    **extra: object,
) -> Path:
    steps, lr = SETTINGS[adapter]
    data: dict[str, object] = {
        "train": str(write_jsonl(tmp_path / "train.jsonl", rows or TOPICS[:320])),
        "max_length": 32,
    }
    data["eval"] = str(write_jsonl(tmp_path / "eval.jsonl", eval_rows or TOPICS[320:]))
    return write_recipe(
        tmp_path / "recipe.yaml",
        method="classify",
        model={"name_or_path": "tiny:bert"},
        adapter={"type": adapter, "dropout": 0.0},
        data=data,
        training={"learning_rate": lr, "max_steps": steps, "batch_size": 16, "logging_steps": 50},
        output_dir=str(tmp_path / "run"),
        **extra,
    )


def accuracy_of_saved_model(final: Path, rows: list[dict]) -> float:
    """Held-out accuracy of final/ loaded with plain transformers, labels read from its config."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(final).eval()
    tokenizer = AutoTokenizer.from_pretrained(final)
    with torch.no_grad():
        logits = model(**tokenizer([r["text"] for r in rows], return_tensors="pt", padding=True)).logits
    names = [model.config.id2label[int(i)] for i in logits.argmax(-1)]
    return sum(name == row["label"] for name, row in zip(names, rows)) / len(rows)


def test_full_fine_tuning_learns_and_records_string_labels(cli, tmp_path: Path) -> None:
    result = cli("classify", str(recipe(tmp_path)))
    assert result.code == 0, result.err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert 0.3 <= summary["eval_accuracy_before"] <= 0.7  # a random head is at chance
    assert summary["eval_accuracy_after"] >= 0.9 and summary["eval_f1_after"] >= 0.9
    assert summary["eval_f1_after"] > summary["eval_f1_before"] + 0.3
    assert summary["eval_loss_after"] < summary["eval_loss_before"]
    assert summary["labels"] == ["animal", "food"]
    assert summary["trainable_parameters"] == summary["total_parameters"]
    config = json.loads((tmp_path / "run" / "final" / "config.json").read_text())
    assert config["id2label"] == {"0": "animal", "1": "food"} and config["label2id"] == {"animal": 0, "food": 1}
    assert accuracy_of_saved_model(tmp_path / "run" / "final", TOPICS[320:]) == summary["eval_accuracy_after"]


def test_lora_learns_with_integer_labels_and_trains_the_head(cli, tmp_path: Path) -> None:
    as_ints = [{"text": r["text"], "label": int(r["label"] == "food")} for r in TOPICS]
    result = cli("classify", str(recipe(tmp_path, "lora", as_ints[:320], as_ints[320:])))
    assert result.code == 0, result.err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert 0.3 <= summary["eval_accuracy_before"] <= 0.7
    # 0.85-0.975 over training seeds 0-3 and 42 on this CPU
    assert summary["eval_accuracy_after"] >= 0.8 and summary["eval_f1_after"] > summary["eval_f1_before"] + 0.3
    assert summary["labels"] == ["0", "1"]
    final = tmp_path / "run" / "final"
    adapter = json.loads((final / "adapter_config.json").read_text())
    assert adapter["task_type"] == "SEQ_CLS" and "classifier" in adapter["modules_to_save"]

    # Trainable = LoRA A/B on every linear layer of the trunk + the whole new classifier (64 x 2 + 2).
    from safetensors.torch import load_file

    saved = load_file(final / "adapter_model.safetensors")
    lora = sum(t.numel() for name, t in saved.items() if "lora_" in name)
    head = sum(t.numel() for name, t in saved.items() if "classifier" in name)
    assert head == 64 * 2 + 2
    assert summary["trainable_parameters"] == lora + head < summary["total_parameters"] // 5


def test_encoder_decoder_t5_learns_and_lora_trains_its_head(cli, tmp_path: Path) -> None:
    """T5 and BART have sequence-classification heads in transformers (named `classification_head`)."""
    path = recipe(tmp_path)
    result = cli("classify", str(path), "model.name_or_path=tiny:t5")
    assert result.code == 0, result.err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    # 0.51 -> 0.81 in 100 steps on this CPU
    assert (
        summary["eval_accuracy_after"] >= 0.7 and summary["eval_accuracy_after"] > summary["eval_accuracy_before"] + 0.2
    )

    lora = cli(
        "classify", str(path), "model.name_or_path=tiny:t5", "adapter.type=lora", "training.max_steps=2", "--overwrite"
    )
    assert lora.code == 0, lora.err
    from safetensors.torch import load_file

    saved = load_file(tmp_path / "run" / "final" / "adapter_model.safetensors")
    assert any("classification_head" in name and "lora_" not in name for name in saved)  # the new head trained whole


def test_explicit_label_order(cli, tmp_path: Path) -> None:
    path = recipe(tmp_path, classify={"labels": ["food", "animal"]})
    assert cli("classify", str(path), "training.max_steps=1").code == 0
    config = json.loads((tmp_path / "run" / "final" / "config.json").read_text())
    assert config["id2label"] == {"0": "food", "1": "animal"}

    result = cli("validate", str(path), "classify.labels=[food,plant]")
    assert result.code == 2 and "classify.labels" in result.err and "'animal'" in result.err


@pytest.mark.parametrize(
    ("row", "problem"),
    [
        ({"text": "a lone tiger"}, "missing"),
        ({"text": "a lone tiger", "label": ""}, "empty"),
        ({"text": "a lone tiger", "label": True}, "expected a class name or an integer"),
        ({"text": "", "label": "animal"}, "field 'text': empty"),
    ],
)
def test_bad_rows_exit_2_naming_file_row_and_field(cli, tmp_path: Path, row: dict, problem: str) -> None:
    rows = TOPICS[:5] + [row] + TOPICS[5:40]
    result = cli("classify", str(recipe(tmp_path, rows=rows)))
    assert result.code == 2
    assert "train.jsonl, row 6" in result.err and problem in result.err
    assert "'text'" in result.err or "'label'" in result.err
    assert not (tmp_path / "run").exists()  # stopped before anything was written


def test_eval_label_unseen_in_training_exits_2(cli, tmp_path: Path) -> None:
    eval_rows = TOPICS[320:322] + [{"text": "a red rose", "label": "plant"}] + TOPICS[322:330]
    result = cli("classify", str(recipe(tmp_path, eval_rows=eval_rows)))
    assert result.code == 2
    assert "eval.jsonl, row 3: field 'label': 'plant' never appears in the training rows" in result.err
    assert not (tmp_path / "run").exists()


def test_one_label_only_exits_2(cli, tmp_path: Path) -> None:
    animals = [r for r in TOPICS if r["label"] == "animal"]
    result = cli("validate", str(recipe(tmp_path, rows=animals, eval_rows=animals[:5])))
    assert result.code == 2 and "at least two labels" in result.err


def test_validate_shows_text_and_label(cli, tmp_path: Path) -> None:
    result = cli("validate", str(recipe(tmp_path)), "--examples", "1")
    assert result.code == 0, result.err
    assert "format classification (detected), loss on the label" in result.out
    assert f"{TOPICS[0]['text']} -> {TOPICS[0]['label']}" in result.out


def test_macro_f1_matches_its_definition() -> None:
    from tunekit.methods.classify import classification_metrics

    logits = np.eye(3)[[0, 0, 1, 2, 2, 2]]  # predictions 0 0 1 2 2 2
    labels = np.array([0, 1, 1, 2, 2, 0])
    # per label F1 = 2TP / (2TP + FP + FN): label 0: 2/4, label 1: 2/3, label 2: 4/5
    figures = classification_metrics(logits, labels)
    assert figures["accuracy"] == pytest.approx(4 / 6)
    assert figures["f1"] == pytest.approx((1 / 2 + 2 / 3 + 4 / 5) / 3)


def test_help(cli) -> None:
    result = cli("classify", "--help")
    assert result.code == 0 and "classification" in result.out
