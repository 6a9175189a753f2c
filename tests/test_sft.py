"""`tunekit sft` end to end on a tiny LLaMA: it learns, and writes a run folder others can load.

Learning is judged the way a user would judge it: load `final/` with plain transformers / peft, apply
the saved chat template, decode greedily, and count exact reversals of a memorisation set.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import chat_rows, reversal_pairs, write_jsonl, write_recipe

PAIRS = reversal_pairs(40, seed=7)
# (adapter, steps, learning rate): the smallest budgets that reach exact match 1.0 on this CPU, with margin.
SETTINGS = {"none": (300, 3e-3), "lora": (600, 3e-3), "qlora": (600, 3e-3)}


def exact_match(final: Path, adapter: str, pairs: list[tuple[str, str]]) -> float:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    tokenizer = AutoTokenizer.from_pretrained(final)
    if adapter == "none":
        model = AutoModelForCausalLM.from_pretrained(final)
    else:
        from peft import AutoPeftModelForCausalLM

        quant = (
            BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type="nf4",
                bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=torch.float32,
            )
            if adapter == "qlora"
            else None
        )
        model = AutoPeftModelForCausalLM.from_pretrained(final, quantization_config=quant)
    model.eval()
    tokenizer.padding_side = "left"
    prompts = [
        tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
        for p, _ in pairs
    ]
    batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=12, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    texts = tokenizer.batch_decode(out[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
    return sum(text.strip() == target for text, (_, target) in zip(texts, pairs)) / len(pairs)


def memorise_recipe(tmp_path: Path, adapter: str) -> Path:
    steps, lr = SETTINGS[adapter]
    data = write_jsonl(tmp_path / "pairs.jsonl", chat_rows(PAIRS))
    return write_recipe(
        tmp_path / "recipe.yaml",
        method="sft",
        model={"name_or_path": "tiny:llama"},
        adapter={"type": adapter, "r": 16, "alpha": 32, "dropout": 0.0},
        data={"train": str(data), "eval": str(data), "max_length": 64},
        training={"learning_rate": lr, "max_steps": steps, "batch_size": 8, "logging_steps": 50, "seed": 0},
        output_dir=str(tmp_path / "run"),
    )


@pytest.mark.parametrize("adapter", ["none", "lora", "qlora"])
def test_sft_memorises_and_final_loads_with_plain_libraries(tmp_path: Path, cli, adapter: str) -> None:
    result = cli("sft", str(memorise_recipe(tmp_path, adapter)))
    assert result.code == 0, result.err
    run = tmp_path / "run"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["method"] == "sft" and summary["adapter"] == adapter
    assert summary["steps"] == SETTINGS[adapter][0]
    # LoRA leaves the random tied embeddings and the final norm frozen, which caps the logit scale: the
    # argmax becomes right long before the loss gets small, so the loss bar is a clear fall, not a collapse.
    assert summary["eval_loss_after"] < 0.9 * summary["eval_loss_before"]
    assert summary["train_tokens_per_second"] > 0
    if adapter == "none":
        assert summary["trainable_parameters"] == summary["total_parameters"]
    else:
        assert 0 < summary["trainable_parameters"] < 0.5 * summary["total_parameters"]
        assert (run / "final" / "adapter_config.json").exists()
    assert (run / "final" / "chat_template.jinja").exists()
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert records and all("step" in r for r in records)
    assert exact_match(run / "final", adapter, PAIRS) >= 0.9


def test_untrained_model_cannot_reverse(tmp_path: Path) -> None:
    from tunekit.models.tiny import ensure_tiny

    assert exact_match(ensure_tiny("tiny:llama"), "none", PAIRS[:10]) == 0.0


def short_recipe(tmp_path: Path, **training: object) -> Path:
    data = write_jsonl(tmp_path / "pairs.jsonl", chat_rows(PAIRS))
    return write_recipe(
        tmp_path / "recipe.yaml",
        method="sft",
        model={"name_or_path": "tiny:llama"},
        data={"train": str(data), "eval_fraction": 0.2, "max_length": 64},
        training={"learning_rate": 1e-3, "max_steps": 4, "batch_size": 4, "logging_steps": 2, **training},
        output_dir=str(tmp_path / "run"),
    )


def test_template_without_generation_markers_exits_2_before_writing(cli, tmp_path: Path, base: Path) -> None:
    import shutil

    model = tmp_path / "model"
    shutil.copytree(base, model)
    template = (model / "chat_template.jinja").read_text()
    unmarked = template.replace("{% generation %}", "").replace("{% endgeneration %}", "")
    assert unmarked != template
    (model / "chat_template.jinja").write_text(unmarked)
    path = short_recipe(tmp_path)
    result = cli("sft", str(path), f"model.name_or_path={model}")
    assert result.code == 2 and "no {% generation %} markers" in result.err and "data.train_on: all" in result.err
    assert not (tmp_path / "run").exists()
    assert cli("sft", str(path), f"model.name_or_path={model}", "data.train_on=all").code == 0


def test_existing_run_folder_is_kept_unless_overwrite(cli, tmp_path: Path) -> None:
    recipe = short_recipe(tmp_path)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("precious")
    refused = cli("sft", str(recipe))
    assert refused.code == 2 and "--overwrite" in refused.err
    not_a_run = cli("sft", str(recipe), "--overwrite")  # notes.txt is not tunekit's: --overwrite alone refuses
    assert not_a_run.code == 2 and "notes.txt" in not_a_run.err and "--overwrite-any" in not_a_run.err
    assert (tmp_path / "run" / "notes.txt").read_text() == "precious"
    assert cli("sft", str(recipe), "--overwrite-any").code == 0
    assert not (tmp_path / "run" / "notes.txt").exists()
    assert (tmp_path / "run" / "summary.json").exists()


def test_recipe_yaml_is_the_validated_recipe_with_overrides(cli, tmp_path: Path) -> None:
    import yaml

    assert cli("sft", str(short_recipe(tmp_path)), "training.max_steps=2", "adapter.type=lora").code == 0
    saved = yaml.safe_load((tmp_path / "run" / "recipe.yaml").read_text())
    assert saved["training"]["max_steps"] == 2 and saved["adapter"]["type"] == "lora"
    assert saved["adapter"]["r"] == 8  # defaults are spelled out
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["steps"] == 2


def test_tensorboard_event_files_land_in_the_run_folder(cli, tmp_path: Path) -> None:
    assert cli("sft", str(short_recipe(tmp_path, report_to="tensorboard"))).code == 0
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))


def test_lora_on_an_8bit_base(cli, tmp_path: Path) -> None:
    result = cli("sft", str(short_recipe(tmp_path)), "model.quantization=8bit", "adapter.type=lora")
    assert result.code == 0, result.err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert 0 < summary["trainable_parameters"] < summary["total_parameters"]


def test_bf16_trains_on_cpu_and_fp16_is_refused_without_gpu(cli, tmp_path: Path) -> None:
    assert cli("sft", str(short_recipe(tmp_path)), "model.dtype=bf16").code == 0
    refused = cli("sft", str(short_recipe(tmp_path)), "model.dtype=fp16", f"output_dir={tmp_path / 'fp16'}")
    assert refused.code == 2 and "fp16" in refused.err and "GPU" in refused.err
    assert not (tmp_path / "fp16").exists()


def test_alpaca_json_as_train_and_eval_trains_and_a_max_length_that_cuts_every_answer_exits_2(
    cli, tmp_path: Path
) -> None:
    """The Alpaca prompt template adds ~90 tokens: at max_length 64 no answer is left to learn or score."""
    rows = [{"instruction": f"Reverse the words: {p.split(': ')[1]}", "input": "", "output": c} for p, c in PAIRS]
    data = tmp_path / "alpaca.json"
    data.write_text(json.dumps(rows), encoding="utf-8")
    recipe = write_recipe(
        tmp_path / "recipe.yaml",
        method="sft",
        model={"name_or_path": "tiny:llama"},
        data={"train": str(data), "eval": str(data), "max_length": 64},
        training={"learning_rate": 3e-3, "max_steps": 10, "batch_size": 8},
        output_dir=str(tmp_path / "run"),
    )
    for command in ("validate", "sft"):
        short = cli(command, str(recipe))
        assert short.code == 2, short.err
        assert "data.max_length=64 cuts away every loss-carrying token" in short.err and "at least" in short.err
    assert not (tmp_path / "run").exists()
    trained = cli("sft", str(recipe), "data.max_length=256")
    assert trained.code == 0, trained.err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["data_format"] == "alpaca"
    assert summary["eval_loss_after"] < summary["eval_loss_before"]
