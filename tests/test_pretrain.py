"""`tunekit pretrain`: causal LM on a tiny LLaMA, masked LM on a tiny BERT and T5's span corruption on a tiny T5
lower held-out perplexity; documents become fixed blocks; mismatched objectives and impossible blocks exit 2
before any writing.

Text: the sentences of builtin:sentiment (train) and builtin:sentiment-test (held out), a .txt file
with one document per line.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.conftest import ROOT, write_recipe


def sentences(name: str) -> list[str]:
    path = ROOT / "tunekit" / "datasets" / f"{name}.jsonl"
    return [json.loads(line)["text"] for line in path.read_text().splitlines()]


def recipe(
    tmp_path: Path, model: str, adapter: str = "none", steps: int = 60, lr: float = 3e-3, **pretrain: object
) -> Path:
    train = tmp_path / "train.txt"
    train.write_text("\n\n".join(sentences("sentiment")) + "\n", encoding="utf-8")  # blank lines are skipped
    held_out = tmp_path / "eval.txt"
    held_out.write_text("\n".join(sentences("sentiment-test")) + "\n", encoding="utf-8")
    return write_recipe(
        tmp_path / "recipe.yaml",
        method="pretrain",
        model={"name_or_path": model},
        adapter={"type": adapter, "r": 16, "alpha": 32, "dropout": 0.0},
        data={"train": str(train), "eval": str(held_out)},
        pretrain={"block_size": 64, **pretrain},
        training={"learning_rate": lr, "max_steps": steps, "batch_size": 8, "logging_steps": 20},
        output_dir=str(tmp_path / "run"),
    )


def run_summary(cli, path: Path, *overrides: str) -> dict:
    result = cli("pretrain", str(path), *overrides)
    assert result.code == 0, result.err
    return json.loads((path.parent / "run" / "summary.json").read_text())


# adapter: (steps, learning rate, largest after/before perplexity ratio). LoRA cannot touch the random
# embeddings and (tied) output layer of the tiny model, so it moves perplexity far less than full training
# does on this CPU (1041 -> 703 in 80 steps, against 1041 -> 38 in 100 for full training).
CLM = {"none": (60, 3e-3, 1 / 3), "lora": (80, 1e-2, 0.8)}


@pytest.mark.parametrize("adapter", CLM)
def test_causal_lm_lowers_held_out_perplexity(cli, tmp_path: Path, adapter: str) -> None:
    steps, lr, ratio = CLM[adapter]
    summary = run_summary(cli, recipe(tmp_path, "tiny:llama", adapter=adapter, steps=steps, lr=lr))
    assert summary["data_format"] == "text"
    # A random model is near uniform over the 1,024-token vocabulary before training.
    assert summary["eval_perplexity_before"] > 500
    assert summary["eval_perplexity_after"] < summary["eval_perplexity_before"] * ratio
    assert summary["eval_perplexity_after"] == pytest.approx(math.exp(summary["eval_loss_after"]))
    final = tmp_path / "run" / "final"
    if adapter == "lora":
        assert summary["trainable_parameters"] < summary["total_parameters"] // 2
        assert (final / "adapter_config.json").exists()
    else:
        from transformers import AutoModelForCausalLM

        AutoModelForCausalLM.from_pretrained(final)


def test_masked_lm_lowers_held_out_perplexity_on_fixed_masks(cli, tmp_path: Path) -> None:
    summary = run_summary(cli, recipe(tmp_path, "tiny:bert", mlm_probability=0.2))
    assert summary["eval_perplexity_before"] > 500
    assert summary["eval_perplexity_after"] < summary["eval_perplexity_before"] / 3
    # The held-out masks are drawn once from the seed: the same run scores the same before-figure.
    again = run_summary(cli, tmp_path / "recipe.yaml", "training.max_steps=1", "--overwrite")
    assert again["eval_loss_before"] == pytest.approx(summary["eval_loss_before"], rel=1e-6)
    from transformers import AutoModelForMaskedLM

    AutoModelForMaskedLM.from_pretrained(tmp_path / "run" / "final")  # the saved model keeps its masked-LM head


def test_blocks_concatenate_documents_with_eos_between() -> None:
    from transformers import AutoTokenizer

    from tunekit.methods.pretrain import blocks
    from tunekit.models.tiny import ensure_tiny

    tokenizer = AutoTokenizer.from_pretrained(ensure_tiny("tiny:llama"))
    docs = [{"text": text} for text in sentences("sentiment-test")]
    cut = blocks({"text": [d["text"] for d in docs]}, tokenizer, 32, "clm")  # one batch of documents
    made = [dict(zip(cut, values)) for values in zip(*cut.values())]
    stream = [i for doc in tokenizer([d["text"] for d in docs])["input_ids"] for i in doc + [tokenizer.eos_token_id]]
    assert len(made) == len(stream) // 32 and all(len(b["input_ids"]) == 32 for b in made)
    assert [i for b in made for i in b["input_ids"]] == stream[
        : len(made) * 32
    ]  # nothing reordered or lost but the tail
    assert all(b["labels"] == b["input_ids"] for b in made)  # the model shifts labels itself

    bert = AutoTokenizer.from_pretrained(ensure_tiny("tiny:bert"))
    masked_cut = blocks({"text": [d["text"] for d in docs]}, bert, 32, "mlm")
    masked = [dict(zip(masked_cut, values)) for values in zip(*masked_cut.values())]
    flat = [i for b in masked for i in b["input_ids"]]
    assert "labels" not in masked[0] and flat.count(bert.cls_token_id) >= len(docs) - 1  # [CLS] ... [SEP] per document


@pytest.mark.parametrize(
    ("model", "settings", "message"),
    [
        ("tiny:llama", ["pretrain.objective=mlm"], "pretrain.objective: mlm needs an encoder-only model"),
        ("tiny:bert", ["pretrain.objective=clm"], "pretrain.objective: clm is for decoder-only models"),
        ("tiny:t5", ["pretrain.objective=clm"], "pretrain.objective: clm is not for encoder-decoder models"),
        ("tiny:llama", ["pretrain.objective=span_corruption"], "span_corruption needs an encoder-decoder model"),
        ("tiny:bart", [], "T5's sentinel tokens (<extra_id_0>, ...); the tokenizer of tiny:bart has none"),
        ("tiny:t5", ["pretrain.block_size=768"], "38 noise spans at pretrain.noise_density 0.15"),
        ("tiny:bert", ["pretrain.block_size=1024"], "pretrain.block_size: 1024 tokens"),
    ],
)
def test_mismatches_exit_2_before_writing(cli, tmp_path: Path, model: str, settings: list[str], message: str) -> None:
    result = cli("pretrain", str(recipe(tmp_path, model)), *settings)
    assert result.code == 2 and message in result.err
    assert not (tmp_path / "run").exists()


# adapter: (steps, learning rate, largest after/before perplexity ratio), measured on a 2-core CPU: full 1860 -> 91,
# LoRA r 16 (lr 1e-2) 1860 -> 219 in 100 steps.
SPAN = {"none": (100, 3e-3, 1 / 8), "lora": (100, 1e-2, 1 / 3)}


@pytest.mark.parametrize("adapter", SPAN)
def test_span_corruption_lowers_held_out_perplexity_on_fixed_spans(cli, tmp_path: Path, adapter: str) -> None:
    steps, lr, ratio = SPAN[adapter]
    path = recipe(tmp_path, "tiny:t5", adapter=adapter, steps=steps, lr=lr)
    summary = run_summary(cli, path)  # pretrain.objective auto: span_corruption for an encoder-decoder
    assert summary["eval_perplexity_before"] > 500
    assert summary["eval_perplexity_after"] < summary["eval_perplexity_before"] * ratio
    # The held-out spans are drawn once from the seed: the same run scores the same before-figure.
    again = run_summary(cli, path, "training.max_steps=1", "--overwrite")
    assert again["eval_loss_before"] == pytest.approx(summary["eval_loss_before"], rel=1e-6)
    final = tmp_path / "run" / "final"
    if adapter == "none":
        from transformers import AutoModelForSeq2SeqLM

        AutoModelForSeq2SeqLM.from_pretrained(final)
    else:
        assert json.loads((final / "adapter_config.json").read_text())["task_type"] == "SEQ_2_SEQ_LM"


def test_span_corruption_hides_spans_behind_sentinels_and_the_target_spells_them_out() -> None:
    import random

    from tunekit.data.spans import corrupt, noise_mask, span_counts

    sentinels = [1000 - i for i in range(12)]
    block = list(range(10, 210))  # 200 tokens: 30 hidden in 10 spans
    assert span_counts(200, 0.15, 3) == (30, 10)
    inputs, target = corrupt(block, sentinels, 2, 0.15, 3, random.Random(5))
    assert inputs[-1] == target[-1] == 2
    assert len(target) - 1 == 30 + 10 and len(inputs) - 1 == 170 + 10
    # Putting each span back in place of its sentinel gives the block again, sentinels in order.
    spans, current = {}, None
    for token in target[:-1]:
        if token in sentinels:
            current = token
            spans[current] = []
        else:
            spans[current].append(token)
    assert list(spans) == sentinels[:10]
    restored = [t for token in inputs[:-1] for t in (spans[token] if token in spans else [token])]
    assert restored == block
    # Over many draws: the share of hidden tokens and the mean span length are T5's.
    rng = random.Random(0)
    masks = [noise_mask(100, 0.15, 3, rng) for _ in range(500)]
    starts = sum(m[i] and (i == 0 or not m[i - 1]) for m in masks for i in range(100))
    assert sum(map(sum, masks)) == 500 * 15 and sum(map(sum, masks)) / starts == pytest.approx(3, rel=0.01)
    assert not any(m[0] for m in masks)  # a block opens with kept tokens, as in T5


def test_validate_shows_a_corrupted_block(cli, tmp_path: Path) -> None:
    result = cli("validate", str(recipe(tmp_path, "tiny:t5")), "--examples", "1")
    assert result.code == 0, result.err
    assert "15% of the tokens hidden in spans of 3" in result.out
    assert "example 1, span corruption: input, then the target" in result.out
    shown = result.out.split("target", 2)[2]
    source, target = shown.split("\n")[1], shown.split("\n")[2]
    assert "<extra_id_0>" in source and "<extra_id_1>" in source
    assert target.startswith("[[<extra_id_0>") and target.endswith("<|end|>]]")


@pytest.mark.parametrize(("setting", "source"), [("data.train", "short.txt"), ("data.eval", "short.txt")])
def test_less_text_than_one_block_exits_2_before_writing(cli, tmp_path: Path, setting: str, source: str) -> None:
    path = recipe(tmp_path, "tiny:llama")
    (tmp_path / "short.txt").write_text("a few words\n", encoding="utf-8")
    result = cli("pretrain", str(path), f"{setting}={tmp_path / 'short.txt'}")
    assert result.code == 2 and source in result.err and "less than one block of 64" in result.err
    assert not (tmp_path / "run").exists()


def test_labelled_rows_need_format_text(cli, tmp_path: Path) -> None:
    path = recipe(tmp_path, "tiny:llama")
    result = cli("pretrain", str(path), "data.train=builtin:sentiment")
    assert result.code == 2 and "format classification does not fit `tunekit pretrain`" in result.err


def test_help(cli) -> None:
    result = cli("pretrain", "--help")
    assert result.code == 0 and "masked LM" in result.out
