"""Soft prompts (prompt tuning, prefix tuning, p-tuning) through `tunekit sft`: only the prompt trains,
held-out loss drops, the result loads for eval/generate, and bad combinations exit 2.

On a random tiny model a soft prompt can only steer the output distribution (no circuits to select), so
the held-out loss falls by about 0.2-0.4 nats here; tests/test_seq2seq.py has a soft prompt on T5 falling
by more than 1 nat.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import write_recipe

# type -> (learning rate, bar on the held-out loss drop); measured drops: 0.20, 0.37, 0.20.
TYPES = {"prompt_tuning": (0.3, 0.12), "prefix_tuning": (0.1, 0.25), "p_tuning": (0.03, 0.12)}


def recipe(tmp_path: Path, adapter: dict, model: str = "tiny:llama", steps: int = 100, lr: float = 0.1) -> Path:
    return write_recipe(
        tmp_path / "recipe.yaml",
        method="sft",
        model={"name_or_path": model},
        adapter=adapter,
        data={"train": "builtin:reversal", "max_length": 64},
        training={"learning_rate": lr, "max_steps": steps, "batch_size": 16, "logging_steps": 50},
        output_dir=str(tmp_path / "run"),
    )


def expected_trainable(kind: str, config: dict, tokens: int) -> int:
    """What peft trains for each soft prompt on a decoder-only model (tiny llama: d 64, 2 layers, 2 kv heads)."""
    d = config["hidden_size"]
    if kind == "prompt_tuning":
        return tokens * d  # one embedding per virtual token
    if kind == "prefix_tuning":  # a key and a value per layer, for the key/value heads
        kv = config["num_key_value_heads"] * d // config["num_attention_heads"]
        return tokens * config["num_hidden_layers"] * 2 * kv
    return tokens * d + 3 * (d * d + d)  # p-tuning: embeddings + the MLP encoder (d -> d -> d -> d)


@pytest.mark.parametrize("kind", TYPES)
def test_only_the_prompt_trains_and_held_out_loss_drops(cli, tmp_path: Path, base: Path, kind: str) -> None:
    lr, bar = TYPES[kind]
    result = cli("sft", str(recipe(tmp_path, {"type": kind, "num_virtual_tokens": 20}, lr=lr)))
    assert result.code == 0, result.err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    config = json.loads((base / "config.json").read_text())
    assert summary["adapter"] == kind
    assert summary["trainable_parameters"] == expected_trainable(kind, config, 20)
    assert summary["eval_loss_after"] < summary["eval_loss_before"] - bar
    adapter = json.loads((tmp_path / "run" / "final" / "adapter_config.json").read_text())
    assert adapter["peft_type"] == kind.upper() and adapter["num_virtual_tokens"] == 20
    if kind == "prefix_tuning":
        # final/ loads on its base: `tunekit eval` takes loss on the held-out rows as training did.
        held_out = tmp_path / "eval.jsonl"
        _write_eval_rows(held_out)
        evaluated = cli("eval", str(tmp_path / "run"), "--data", str(held_out), "--json")
        assert evaluated.code == 0, evaluated.err
        generated = cli(
            "generate",
            str(tmp_path / "run" / "final"),
            "--prompt",
            "Reverse the words: red green blue",
            "--max-new-tokens",
            "4",
        )
        # Where the installed libraries drop the prefixes in generate(), tunekit refuses (probed and checked in
        # test_prefix_tuned_generation_never_prints_the_base_models_text) instead of printing the base's text.
        assert generated.code == 0 or (generated.code == 2 and "drops the learned prefixes" in generated.err)


def _write_eval_rows(path: Path) -> None:
    from tunekit.config.sections import DataSection
    from tunekit.data import load_data

    data = load_data(DataSection(train="builtin:reversal"), seed=42, method="sft")
    path.write_text("".join(json.dumps(row) + "\n" for row in data.eval), encoding="utf-8")


def test_text_initialisation_starts_from_the_text_embeddings(base: Path) -> None:
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunekit.config.sections import AdapterSection
    from tunekit.train.builders import peft_config

    adapter = AdapterSection(
        type="prompt_tuning", num_virtual_tokens=8, prompt_init="text", prompt_init_text="Reverse the words:"
    )
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base), peft_config(adapter, tokenizer_path=str(base)))
    ids = AutoTokenizer.from_pretrained(base)("Reverse the words:", add_special_tokens=False)["input_ids"]
    ids = (ids * 8)[:8]  # peft repeats the text to fill the prompt
    start = model.prompt_encoder["default"].embedding.weight
    assert torch.equal(start, model.get_input_embeddings().weight[ids])


def test_gpt2_prefix_tuning_runs(cli, tmp_path: Path) -> None:
    result = cli("sft", str(recipe(tmp_path, {"type": "prefix_tuning", "num_virtual_tokens": 8}, "tiny:gpt2", 20)))
    assert result.code == 0, result.err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["trainable_parameters"] == 8 * 2 * 2 * 64  # 2 layers x key and value x d 64
    assert summary["eval_loss_after"] < summary["eval_loss_before"]


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        (["adapter.type=prompt_tuning", "adapter.prompt_init=text"], "adapter.prompt_init_text"),
        (
            ["adapter.type=prefix_tuning", "adapter.prompt_init=text", "adapter.prompt_init_text=hi"],
            "adapter.prompt_init",
        ),
        (["adapter.type=prefix_tuning", "training.gradient_checkpointing=true"], "adapter.type: prefix_tuning"),
        (["method=dpo", "adapter.type=p_tuning", "data.train=builtin:reversal-preference"], "adapter.type: p_tuning"),
    ],
)
def test_bad_soft_prompt_settings_exit_2(cli, tmp_path: Path, overrides: list[str], named: str) -> None:
    path = recipe(tmp_path, {"type": "none"})
    for command in ("validate", "sft"):
        result = cli(command, str(path), *overrides)
        assert result.code == 2 and named in result.err, (command, result.err)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("arch", ["llama", "t5"])
def test_prefix_tuned_generation_never_prints_the_base_models_text(arch: str) -> None:
    """Where the installed peft + transformers drop the prefixes in a cached generate() (peft 0.21 with
    transformers 5.24 do), tunekit's probe sees it and `generate` refuses; where they keep them, it
    decodes what the forward pass computes."""
    import torch
    from peft import PrefixTuningConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    from tunekit.errors import UserError
    from tunekit.models.refs import resolve
    from tunekit.models.tiny import ensure_tiny
    from tunekit.use.generate import Decoding, Prompt, cache_keeps_prefix, generate
    from tunekit.use.load import Loaded

    path = ensure_tiny(f"tiny:{arch}")
    seq2seq = arch == "t5"
    model = (AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM).from_pretrained(path)
    torch.manual_seed(0)
    task = "SEQ_2_SEQ_LM" if seq2seq else "CAUSAL_LM"
    model = get_peft_model(model, PrefixTuningConfig(task_type=task, num_virtual_tokens=4)).eval()
    with torch.no_grad():
        for weight in model.prompt_encoder.parameters():
            weight.mul_(50)  # prefixes large enough to change what the random model says
    tokenizer = AutoTokenizer.from_pretrained(path)
    ids = torch.tensor([tokenizer("Reverse the words: red green blue")["input_ids"]])
    with torch.no_grad():
        cached = model.generate(input_ids=ids, max_new_tokens=4, do_sample=False)
        with model.disable_adapter():
            base = model.generate(input_ids=ids, max_new_tokens=4, do_sample=False)
        extra = {"decoder_input_ids": torch.tensor([[model.config.decoder_start_token_id]])} if seq2seq else {}
        first = model(input_ids=ids, use_cache=False, **extra).logits[0, -1]
    new = cached[0, 1] if seq2seq else cached[0, ids.shape[1]]
    keeps = cache_keeps_prefix(model, seq2seq)
    assert keeps == (int(new) == int(first.argmax()))  # the probe tells what generate() does
    loaded = Loaded(model, tokenizer, resolve(f"tiny:{arch}"), is_seq2seq=seq2seq)
    if keeps:
        generate(loaded, [Prompt("Reverse the words: red green blue", True)], Decoding(max_new_tokens=4))
    else:
        assert torch.equal(cached, base)  # what refusing saves the user from
        with pytest.raises(UserError, match="drops the learned prefixes"):
            generate(loaded, [Prompt("Reverse the words: red green blue", True)], Decoding(max_new_tokens=4))


def test_prefix_tuning_refused_for_a_model_that_does_not_generate(base: Path) -> None:
    from transformers import AutoModelForMaskedLM

    from tunekit.config.sections import AdapterSection
    from tunekit.errors import UserError
    from tunekit.models.tiny import ensure_tiny
    from tunekit.train.preflight import check_adapter

    bert = AutoModelForMaskedLM.from_pretrained(ensure_tiny("tiny:bert"))
    with pytest.raises(UserError, match="attention cache"):
        check_adapter(AdapterSection(type="prefix_tuning"), bert)
