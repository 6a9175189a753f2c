"""Encoder-decoder SFT (tunekit.methods.seq2seq): T5 and BART learn a held-out task; bad input exits 2."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from tests.conftest import WORDS, write_jsonl, write_recipe

FIRST, SECOND = WORDS[:12], WORDS[12:24]


def group_rows(n: int, seed: int) -> list[dict]:
    """Which group do three words come from? Held-out rows are new triples of the same 24 words."""
    rng, rows, seen = random.Random(seed), [], set()
    while len(rows) < n:
        first = rng.random() < 0.5
        picked = tuple(rng.sample(FIRST if first else SECOND, 3))
        if picked not in seen:
            seen.add(picked)
            rows.append({"prompt": "Group of: " + " ".join(picked), "completion": "first" if first else "second"})
    return rows


@pytest.fixture(scope="module")
def task(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("groups")
    rows = group_rows(240, seed=0)
    return write_jsonl(folder / "train.jsonl", rows[:200]), write_jsonl(folder / "eval.jsonl", rows[200:])


def recipe(tmp_path: Path, task: tuple[Path, Path], model: str = "tiny:t5", **adapter: object) -> Path:
    return write_recipe(
        tmp_path / "recipe.yaml",
        method="sft",
        model={"name_or_path": model},
        adapter=adapter or {"type": "none"},
        data={"train": str(task[0]), "eval": str(task[1]), "max_length": 32},
        training={"learning_rate": 1e-2, "max_steps": 80, "batch_size": 16, "logging_steps": 40},
        output_dir=str(tmp_path / "run"),
    )


def summary_of(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "run" / "summary.json").read_text())


def assert_learned(summary: dict) -> None:
    assert summary["eval_loss_after"] < summary["eval_loss_before"] - 2.0
    for figure in ("eval_exact_match", "eval_rougeL"):
        assert summary[f"{figure}_before"] <= 0.2 and summary[f"{figure}_after"] >= 0.9, figure


@pytest.mark.parametrize("adapter", [{}, {"type": "lora", "r": 16, "alpha": 32}], ids=["full", "lora"])
def test_t5_learns_held_out_task(cli, tmp_path: Path, task, adapter: dict) -> None:
    result = cli("sft", str(recipe(tmp_path, task, **adapter)))
    assert result.code == 0, result.err
    summary = summary_of(tmp_path)
    assert_learned(summary)
    assert {"eval_bleu_before", "eval_bleu_after", "train_loss", "runtime_seconds"} <= set(summary)
    # the closing block shows what it learned: greedy answers to held-out prompts now match their references
    block = result.out[result.out.index("samples (greedy, 3 prompts):") :].splitlines()[1:]
    expected = [line.split(None, 1)[1] for line in block if line.split()[0] == "expected"]
    after = [line.split(None, 1)[1] for line in block if line.split()[0] == "after"]
    assert len(after) == 3 and sum(a == e for a, e in zip(after, expected)) >= 2, block
    total, trainable = summary["total_parameters"], summary["trainable_parameters"]
    assert (trainable == total) if not adapter else (0 < trainable < total / 3)
    final = tmp_path / "run" / "final"
    assert (final / ("adapter_config.json" if adapter else "config.json")).exists()
    # `tunekit eval` on the result scores the same held-out rows the same way.
    evaluated = cli("eval", str(tmp_path / "run"), "--data", str(task[1]), "--json")
    assert evaluated.code == 0, evaluated.err
    metrics = json.loads(evaluated.out)
    metrics = metrics[0] if isinstance(metrics, list) else metrics
    metrics = metrics.get("metrics", metrics)
    assert metrics["exact_match"] == pytest.approx(summary["eval_exact_match_after"])
    assert metrics["loss"] == pytest.approx(summary["eval_loss_after"], rel=0.1, abs=0.02)


def test_t5_qlora_trains_on_a_4bit_base(cli, tmp_path: Path, task) -> None:
    result = cli("sft", str(recipe(tmp_path, task, type="qlora", r=16, alpha=32)))
    assert result.code == 0, result.err
    summary = summary_of(tmp_path)
    assert_learned(summary)
    config = json.loads((tmp_path / "run" / "final" / "adapter_config.json").read_text())
    assert config["task_type"] == "SEQ_2_SEQ_LM" and config["peft_type"] == "LORA"


def test_t5_prompt_tuning_trains_only_the_prompt(cli, tmp_path: Path, task) -> None:
    path = recipe(tmp_path, task, type="prompt_tuning", num_virtual_tokens=10)
    result = cli("sft", str(path), "training.learning_rate=0.3")
    assert result.code == 0, result.err
    summary = summary_of(tmp_path)
    # peft gives an encoder-decoder one prompt for each side: 2 x 10 virtual tokens x d_model 64.
    assert summary["trainable_parameters"] == 2 * 10 * 64
    assert summary["eval_loss_after"] < summary["eval_loss_before"] - 1.0


def _tiny_bart(folder: Path) -> Path:
    """A 2-layer random BART with the tiny T5's tokenizer (ids: pad 0, bos 1, eos 2)."""
    from transformers import AutoTokenizer, BartConfig, BartForConditionalGeneration

    from tunekit.models.tiny import ensure_tiny

    config = BartConfig(
        vocab_size=1024,
        d_model=64,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=128,
        decoder_ffn_dim=128,
        max_position_embeddings=128,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=2,
        forced_eos_token_id=2,
    )
    import torch

    torch.manual_seed(0)
    BartForConditionalGeneration(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(ensure_tiny("tiny:t5")).save_pretrained(folder)
    return folder


def test_bart_learns_held_out_task(cli, tmp_path: Path, task) -> None:
    bart = _tiny_bart(tmp_path / "bart")
    result = cli("sft", str(recipe(tmp_path, task, model=str(bart))), "training.learning_rate=3e-3")
    assert result.code == 0, result.err
    assert_learned(summary_of(tmp_path))


def test_row_without_target_names_file_row_field(cli, tmp_path: Path, task) -> None:
    rows = group_rows(6, seed=1)
    rows[3]["completion"] = ""
    bad = write_jsonl(tmp_path / "bad.jsonl", rows)
    result = cli("sft", str(recipe(tmp_path, task)), f"data.train={bad}")
    assert result.code == 2
    assert "bad.jsonl, row 4" in result.err and "'completion'" in result.err and "empty" in result.err
    assert not (tmp_path / "run").exists()


def test_bad_input_exits_2_before_the_run_folder(cli, tmp_path: Path, task) -> None:
    path = recipe(tmp_path, task, type="lora", target_modules=["q_proj", "v_proj"])
    result = cli("sft", str(path))
    assert result.code == 2
    assert "adapter.target_modules: q_proj, v_proj not found in this t5 model" in result.err
    assert "q, " in result.err and "wi" in result.err  # T5's own names are listed
    text = write_jsonl(tmp_path / "text.jsonl", [{"text": "a b c"}] * 4)
    result = cli("sft", str(recipe(tmp_path, task)), f"data.train={text}", "data.eval=null")
    assert result.code == 2 and "format text has no targets" in result.err
    preference = cli(
        "dpo", str(recipe(tmp_path, task)), "method=dpo", "data.train=builtin:reversal-preference", "data.eval=null"
    )
    assert preference.code == 2 and "encoder-decoder" in preference.err and "`tunekit dpo` needs" in preference.err
    assert not (tmp_path / "run").exists()


def test_chat_ending_on_a_user_turn_is_refused_by_validate_and_sft(cli, tmp_path: Path, task) -> None:
    rows = [
        {"messages": [{"role": "user", "content": r["prompt"]}, {"role": "assistant", "content": r["completion"]}]}
        for r in group_rows(8, seed=2)
    ]
    rows[5]["messages"].append({"role": "user", "content": "and now?"})
    chat = write_jsonl(tmp_path / "chat.jsonl", rows)
    for command in ("validate", "sft"):
        result = cli(command, str(recipe(tmp_path, task)), f"data.train={chat}", "data.eval=null")
        assert result.code == 2, (command, result.err)
        assert "chat.jsonl (train example" in result.err and "field 'messages': ends with a user turn" in result.err
    assert not (tmp_path / "run").exists()


def test_validate_shows_source_then_target(cli, tmp_path: Path, task) -> None:
    result = cli("validate", str(recipe(tmp_path, task)), "--examples", "1")
    assert result.code == 0, result.err
    assert "encoder-decoder model" in result.out
    assert "Group of: " in result.out and ("\n[[first<|end|>]]" in result.out or "\n[[second<|end|>]]" in result.out)
