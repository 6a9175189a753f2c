"""The PEFT and training options of issue 15, each through peft / transformers: it trains on a tiny model (the
held-out loss falls), final/ loads back with plain peft (or transformers) and computes what the trained model
computed, `estimate-memory` counts the trainable parameters the run had, and what the libraries refuse exits 2
before anything is written."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import chat_rows, reversal_pairs, write_jsonl, write_recipe

ROWS = chat_rows(reversal_pairs(40, seed=11))


def recipe_for(tmp_path: Path, adapter: dict[str, Any], model: dict[str, Any] | None = None, **training: Any) -> Path:
    data = write_jsonl(tmp_path / "pairs.jsonl", ROWS)
    return write_recipe(
        tmp_path / "recipe.yaml",
        method="sft",
        model={"name_or_path": "tiny:llama", **(model or {})},
        adapter={"r": 8, "alpha": 16, "dropout": 0.0, **adapter},
        data={"train": str(data), "eval": str(data), "max_length": 48},
        training={"learning_rate": 1e-2, "max_steps": 40, "batch_size": 8, "logging_steps": 10, "seed": 0, **training},
        output_dir=str(tmp_path / "run"),
    )


def train_in_process(recipe_path: Path) -> tuple[Any, dict[str, Any]]:
    """The run's stages in this process: the trained model (peft puts its layers into the loaded model's
    own modules) and summary.json."""
    from tunekit.config import load_recipe
    from tunekit.train.pipeline import load, preflight, report, train
    from tunekit.train.rundir import RunOptions

    run = load(preflight(load_recipe(recipe_path), RunOptions()))
    summary = report(run, train(run, lambda line: None), lambda line: None)
    return run, summary


def learned(summary: dict[str, Any]) -> bool:
    """LoRA on a random tiny base learns slowly (tests/test_sft.py needs 600 steps to memorise); in the few
    seconds these runs take, held-out loss falls by 0.3-0.4 nats from ln(1024) = 6.93, never by chance."""
    return summary["eval_loss_before"] - summary["eval_loss_after"] > 0.2


def logits(model: Any, ids: list[int]) -> Any:
    import torch

    model.eval()
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0].float()


def probe(run: Any) -> list[int]:
    tokens = run.recipe.model.add_tokens
    text = "Reverse the words: red green blue " + " ".join(tokens)
    return run.tokenizer(text)["input_ids"]


def estimated_trainable(cli, recipe: Path) -> int:
    result = cli("estimate-memory", str(recipe), "--json")
    assert result.code == 0, result.err
    return json.loads(result.out)["trainable_parameters"]


CASES = {
    "dora": {"type": "lora", "use_dora": True},
    "rslora": {"type": "lora", "use_rslora": True},
    "gaussian": {"type": "lora", "init": "gaussian"},
    "pissa": {"type": "lora", "init": "pissa"},
    "olora": {"type": "lora", "init": "olora"},
    "modules_to_save": {"type": "lora", "modules_to_save": ["lm_head"]},
    "loraplus": {"type": "lora", "loraplus_lr_ratio": 16},
}


@pytest.mark.parametrize("name", list(CASES))
def test_option_trains_reloads_with_plain_peft_and_is_estimated(cli, tmp_path: Path, name: str) -> None:
    from peft import AutoPeftModelForCausalLM, PeftConfig

    recipe = recipe_for(tmp_path, CASES[name])
    run, summary = train_in_process(recipe)
    assert learned(summary)
    final = tmp_path / "run" / "final"
    config = PeftConfig.from_pretrained(final)
    loaded = AutoPeftModelForCausalLM.from_pretrained(final)  # on the original base that config names
    ids = probe(run)
    assert logits(loaded, ids).allclose(logits(run.model, ids), atol=1e-4), "final/ is not the trained model"
    if name in ("pissa", "olora"):  # converted by peft to a plain LoRA of rank 2r on the unchanged base
        assert config.r == 16 and config.init_lora_weights is True
    if name == "dora":
        assert config.use_dora
    assert estimated_trainable(cli, recipe) == summary["trainable_parameters"]


def test_loraplus_gives_b_matrices_the_ratio_of_the_learning_rate(tmp_path: Path) -> None:
    """The optimizer is peft's create_loraplus_optimizer, handed to the Trainer: its groups say so."""
    from tunekit.config import load_recipe
    from tunekit.train.builders import trainer_inputs
    from tunekit.train.pipeline import load, preflight
    from tunekit.train.rundir import RunOptions

    run = load(preflight(load_recipe(recipe_for(tmp_path, CASES["loraplus"])), RunOptions()))
    optimizer, scheduler = trainer_inputs(run)["optimizers"]
    rates = sorted({group["lr"] for group in optimizer.param_groups if group["params"]})
    assert scheduler is None and rates == [1e-2, 16 * 1e-2]


@pytest.mark.parametrize("adapter", ["lora", "none"])
def test_new_tokens_train_and_final_loads_with_plain_libraries(cli, tmp_path: Path, adapter: str) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokens = ["<tk_rev>", "<tk_end>"]
    recipe = recipe_for(tmp_path, {"type": adapter}, model={"add_tokens": tokens}, max_steps=40)
    run, summary = train_in_process(recipe)
    assert learned(summary)
    final = tmp_path / "run" / "final"
    tokenizer = AutoTokenizer.from_pretrained(final)
    assert len(tokenizer) == 1026 and tokenizer.convert_tokens_to_ids(tokens) == [1024, 1025]
    if adapter == "lora":
        from peft import AutoPeftModelForCausalLM

        loaded = AutoPeftModelForCausalLM.from_pretrained(final)  # peft resizes the base to the saved tokenizer
    else:
        loaded = AutoModelForCausalLM.from_pretrained(final)
    assert loaded.get_input_embeddings().weight.shape[0] == 1026
    ids = probe(run)
    assert {1024, 1025} <= set(ids)
    assert logits(loaded, ids).allclose(logits(run.model, ids), atol=1e-4)
    assert estimated_trainable(cli, recipe) == summary["trainable_parameters"]


def test_neftune_and_torch_compile_reach_the_trainer(tmp_path: Path) -> None:
    from tunekit.config import load_recipe
    from tunekit.train.builders import trainer_kwargs

    recipe = load_recipe(
        recipe_for(tmp_path, {"type": "lora"}), ["training.neftune_noise_alpha=5", "training.torch_compile=true"]
    )
    kwargs = trainer_kwargs(recipe, tmp_path, __import__("torch").float32, has_eval=True)
    assert kwargs["neftune_noise_alpha"] == 5 and kwargs["torch_compile"] is True


def test_neftune_trains(cli, tmp_path: Path) -> None:
    result = cli("sft", str(recipe_for(tmp_path, {"type": "lora"}, neftune_noise_alpha=5.0)))
    assert result.code == 0, result.err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert learned(summary)


@pytest.mark.slow
def test_torch_compile_trains(cli, tmp_path: Path) -> None:
    """torch.compile through TrainingArguments(torch_compile=True); inductor compiles with the C compiler."""
    result = cli("sft", str(recipe_for(tmp_path, {"type": "none"}, torch_compile=True, max_steps=10)))
    assert result.code == 0, result.err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["eval_loss_after"] < summary["eval_loss_before"]


def test_dora_over_a_4bit_base_trains(cli, tmp_path: Path) -> None:
    """peft 0.21 supports DoRA over bitsandbytes layers, so tunekit does not refuse it."""
    result = cli("sft", str(recipe_for(tmp_path, {"type": "qlora", "use_dora": True})))
    assert result.code == 0, result.err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert learned(summary)
    assert estimated_trainable(cli, tmp_path / "recipe.yaml") == summary["trainable_parameters"]


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="peft 0.21 runs LoftQ on a CUDA/XPU GPU")
def test_loftq_trains_on_a_gpu(cli, tmp_path: Path) -> None:
    result = cli("sft", str(recipe_for(tmp_path, {"type": "lora", "init": "loftq"})))
    assert result.code == 0, result.err


REFUSED = [
    ({"type": "qlora", "init": "pissa"}, {}, "adapter.init: pissa needs the base in full precision"),
    ({"type": "lora", "init": "loftq"}, {"quantization": "4bit"}, "adapter.init: loftq quantises the base itself"),
    ({"type": "lora", "init": "pissa", "use_dora": True}, {}, "adapter.init: pissa with adapter.use_dora"),
    ({"type": "none", "use_dora": True}, {}, "use_dora: LoRA settings (adapter.type lora or qlora), not for none"),
    ({"type": "prompt_tuning"}, {"add_tokens": ["<x>"]}, "model.add_tokens: a soft prompt (prompt_tuning)"),
    ({"type": "lora", "modules_to_save": ["no_such_head"]}, {}, "adapter.modules_to_save: no_such_head is not"),
    ({"type": "lora"}, {"add_tokens": ["<|end|>"]}, "model.add_tokens: <|end|> already in the tokenizer"),
]
if not __import__("torch").cuda.is_available():
    REFUSED.append(({"type": "lora", "init": "loftq"}, {}, "adapter.init: loftq needs a CUDA or XPU GPU"))


@pytest.mark.parametrize(("adapter", "model", "message"), REFUSED, ids=[r[2][:40] for r in REFUSED])
def test_what_the_libraries_refuse_exits_2_before_anything_is_written(
    cli, tmp_path: Path, adapter: dict, model: dict, message: str
) -> None:
    result = cli("sft", str(recipe_for(tmp_path, adapter, model=model)))
    assert result.code == 2, result.err
    assert message in result.err and "Traceback" not in result.err
    assert not (tmp_path / "run").exists()


def test_loraplus_under_fsdp_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    """The preflight stage, which the command runs before `accelerate launch` (so nothing is launched here)."""
    from tunekit.config import load_recipe
    from tunekit.errors import UserError
    from tunekit.train.pipeline import preflight
    from tunekit.train.rundir import RunOptions

    recipe = load_recipe(recipe_for(tmp_path, CASES["loraplus"]))
    with pytest.raises(UserError, match="adapter.loraplus_lr_ratio: transformers' Trainer takes no optimizer"):
        preflight(recipe, RunOptions(num_processes=2, accelerate_config="fsdp"))
    assert not (tmp_path / "run").exists()
    plan = preflight(recipe, RunOptions(num_processes=2, accelerate_config="ddp"))  # DDP takes it
    plan.folder.release()  # the run folder held only its lock
    assert not (tmp_path / "run").exists()


def test_loftq_is_estimated_as_the_lora_it_initialises(cli, tmp_path: Path) -> None:
    """LoftQ changes where A and B start, not how many there are (its training needs a GPU: see above)."""
    plain = estimated_trainable(cli, recipe_for(tmp_path, {"type": "lora"}))
    assert estimated_trainable(cli, recipe_for(tmp_path, {"type": "lora", "init": "loftq"})) == plain
