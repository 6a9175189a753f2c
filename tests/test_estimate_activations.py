"""Saved activations: the op-by-op replay against the tensors PyTorch really saves (saved-tensor hooks)
on tiny models of every family, in several precision regimes; and the arithmetic's structure."""

from __future__ import annotations

from typing import Any

import pytest

from tunekit.estimate.activations import Plan, Regime, Tape, activation_bytes
from tunekit.estimate.arch import read_dims
from tunekit.estimate.memory import plan, saved_activations
from tunekit.estimate.params import inventory
from tunekit.estimate.setup import Setup
from tunekit.models.tiny import tiny_config

SMALL = {"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2, "vocab_size": 1000}
LAYER = {"hidden_size": 64, "intermediate_size": 160, "num_hidden_layers": 2, "num_attention_heads": 4}
FAMILIES: dict[str, dict[str, Any]] = {
    "llama": dict(model_type="llama", num_key_value_heads=2, **LAYER),
    "qwen3": dict(model_type="qwen3", num_key_value_heads=2, head_dim=16, **LAYER),
    "gemma2": dict(model_type="gemma2", num_key_value_heads=2, head_dim=16, **LAYER),
    "phi3": dict(model_type="phi3", num_key_value_heads=2, **LAYER),
    "mixtral": dict(model_type="mixtral", num_key_value_heads=2, num_local_experts=4, **LAYER),
    "gpt_neox": dict(model_type="gpt_neox", **LAYER),
    "phi": dict(model_type="phi", **LAYER),
    "bloom": {"model_type": "bloom", "hidden_size": 64, "n_layer": 2, "n_head": 4},
    "opt": {
        "model_type": "opt",
        "hidden_size": 64,
        "ffn_dim": 160,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "max_position_embeddings": 128,
    },
    "bart": {
        "model_type": "bart",
        "d_model": 64,
        "encoder_layers": 2,
        "decoder_layers": 2,
        "encoder_attention_heads": 4,
        "decoder_attention_heads": 4,
        "encoder_ffn_dim": 160,
        "decoder_ffn_dim": 160,
        "max_position_embeddings": 128,
        "decoder_start_token_id": 0,
    },
}


def measured(config: dict[str, Any], setup: Setup) -> int:
    from tunekit.estimate.measure import build_model, random_batch, saved_tensor_bytes

    model = build_model(config, setup, "cpu")
    return saved_tensor_bytes(model, random_batch(config, setup, "cpu"), setup)


def check(config: dict[str, Any], setup: Setup, tolerance: float) -> None:
    got = measured(config, setup)
    est = saved_activations(inventory(config), setup)
    assert abs(est / got - 1) < tolerance, (est, got)


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_saved_activations_of_every_family(family: str, dtype: str) -> None:
    config = {**FAMILIES[family], **SMALL}
    check(config, Setup(method="full", dtype=dtype, batch_size=2, seq_len=32, device="cpu"), 0.05)


@pytest.mark.parametrize("arch", ["llama", "gpt2", "t5", "bert"])
@pytest.mark.parametrize(
    "fields",
    [
        {"method": "full", "dtype": "fp32"},
        {"method": "lora", "dtype": "fp32", "lora_dropout": 0.0},
        {"method": "lora", "dtype": "bf16", "lora_dropout": 0.1},
        {"method": "qlora", "dtype": "int4", "lora_dropout": 0.0},
    ],
    ids=["full", "lora", "lora-dropout-bf16", "qlora"],
)
def test_saved_activations_of_the_tiny_models(arch: str, fields: dict[str, Any]) -> None:
    """The tiny models train with their default dropout (CPU dropout keeps a copy, not a bool mask)."""
    check(tiny_config(arch), Setup(batch_size=2, seq_len=32, device="cpu", **fields), 0.07)


@pytest.mark.parametrize(
    "fields",
    [
        {"method": "full", "dtype": "fp32", "attention": "eager"},
        {"method": "full", "dtype": "fp16"},
        {"method": "prompt-tuning", "dtype": "fp32"},
        {"method": "prefix-tuning", "dtype": "fp32"},
        {"method": "full", "dtype": "bf16", "padded": False},
    ],
)
def test_saved_activations_of_llama_variants(fields: dict[str, Any]) -> None:
    check(tiny_config("llama"), Setup(batch_size=2, seq_len=48, device="cpu", **fields), 0.05)


def test_every_module_the_replay_asks_about_exists() -> None:
    """The replay names linear layers as transformers does, so LoRA targeting finds them."""
    for config in [*({**c, **SMALL} for c in FAMILIES.values()), *(tiny_config(a) for a in ("gpt2", "t5", "bert"))]:
        model = inventory(config)
        modules = {t.module for t in model.tensors}
        asked: list[str] = []
        activation_bytes(model.dims, Regime(act=2, stream=2), 1, 8, Plan(lora=_recorder(asked)))
        missing = {name for name in asked if name not in modules}
        assert not missing, (config["model_type"], missing)


def _recorder(asked: list[str]):
    def record(name: str) -> int:
        asked.append(name)
        return 0

    return record


def test_eager_attention_grows_with_the_square_of_the_sequence() -> None:
    dims = read_dims({**FAMILIES["llama"], **SMALL})
    sdpa = [activation_bytes(dims, Regime(act=2, stream=2, padded=False), 1, s).saved for s in (512, 1024)]
    eager = [activation_bytes(dims, Regime(act=2, stream=2, attention="eager"), 1, s).saved for s in (512, 1024)]
    assert sdpa[1] == 2 * sdpa[0]  # linear in s without a padding mask
    assert eager[1] > 2.5 * eager[0]


def test_gradient_checkpointing_keeps_one_input_per_layer() -> None:
    config = {**FAMILIES["llama"], **SMALL}
    model = inventory(config)
    full = saved_activations(model, Setup(method="full", dtype="bf16", seq_len=256))
    setup = Setup(method="full", dtype="bf16", seq_len=256, gradient_checkpointing=True)
    checkpointed = saved_activations(model, setup)
    assert checkpointed < full


def test_freezing_the_bottom_layers_saves_their_activations() -> None:
    model = inventory({**FAMILIES["llama"], **SMALL, "num_hidden_layers": 4})
    one = saved_activations(model, Setup(method="freeze", trainable_layers=1))
    four = saved_activations(model, Setup(method="freeze", trainable_layers=4))
    assert one < four
    assert plan(model, Setup(method="freeze", trainable_layers=1)).grad_below is False


def test_a_tape_counts_a_shared_tensor_once() -> None:
    tape = Tape(Regime(act=2, stream=2), Plan(), trains=True, seq=8)
    x = tape.new(64, 2)
    tape.linear(x, 64, "q")
    tape.linear(x, 32, "k")
    assert tape.total() == 64 * 2
