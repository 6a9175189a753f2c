"""Exact parameter counts: the analytic inventory against transformers' own models (meta device) and
published counts; config defaults against transformers' config classes; missing fields."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tunekit.errors import UserError
from tunekit.estimate.arch import read_dims
from tunekit.estimate.params import inventory
from tunekit.estimate.targets import load_preset, preset_names

SMALL = {"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}
# One reduced config per family, with the options that change the parameter set switched on.
FAMILY_CONFIGS: list[dict[str, Any]] = [
    {
        "model_type": "llama",
        "hidden_size": 64,
        "intermediate_size": 96,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 100,
    },
    {
        "model_type": "llama",
        "hidden_size": 64,
        "intermediate_size": 96,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "vocab_size": 100,
        "attention_bias": True,
        "mlp_bias": True,
        "tie_word_embeddings": True,
    },
    {
        "model_type": "mistral",
        "hidden_size": 64,
        "intermediate_size": 96,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "vocab_size": 100,
    },
    {
        "model_type": "mixtral",
        "hidden_size": 64,
        "intermediate_size": 96,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "vocab_size": 100,
        "num_local_experts": 4,
    },
    {
        "model_type": "qwen2",
        "hidden_size": 64,
        "intermediate_size": 96,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 100,
        "tie_word_embeddings": True,
    },
    {
        "model_type": "qwen3",
        "hidden_size": 64,
        "intermediate_size": 96,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 100,
    },
    {
        "model_type": "gemma",
        "hidden_size": 64,
        "intermediate_size": 96,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "vocab_size": 100,
    },
    {
        "model_type": "gemma2",
        "hidden_size": 64,
        "intermediate_size": 96,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 100,
    },
    {
        "model_type": "phi3",
        "hidden_size": 64,
        "intermediate_size": 96,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 100,
    },
    {"model_type": "gpt2", "n_embd": 64, "n_layer": 2, "n_head": 4, "vocab_size": 100, "n_positions": 32},
    {
        "model_type": "gpt2",
        "n_embd": 64,
        "n_layer": 2,
        "n_head": 4,
        "vocab_size": 100,
        "n_positions": 32,
        "n_inner": 80,
        "tie_word_embeddings": False,
    },
    {"model_type": "bloom", "hidden_size": 64, "n_layer": 2, "n_head": 4, "vocab_size": 100},
    {
        "model_type": "gpt_neox",
        "hidden_size": 64,
        "intermediate_size": 96,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "vocab_size": 100,
    },
    {
        "model_type": "opt",
        "hidden_size": 64,
        "ffn_dim": 96,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "vocab_size": 100,
        "max_position_embeddings": 40,
    },
    {
        "model_type": "opt",
        "hidden_size": 64,
        "ffn_dim": 96,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "vocab_size": 100,
        "max_position_embeddings": 40,
        "word_embed_proj_dim": 32,
        "do_layer_norm_before": False,
    },
    {
        "model_type": "phi",
        "hidden_size": 64,
        "intermediate_size": 96,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "vocab_size": 100,
    },
    {
        "model_type": "t5",
        "d_model": 64,
        "d_kv": 16,
        "d_ff": 96,
        "num_layers": 2,
        "num_decoder_layers": 3,
        "num_heads": 4,
        "vocab_size": 100,
    },
    {
        "model_type": "t5",
        "d_model": 64,
        "d_kv": 16,
        "d_ff": 96,
        "num_layers": 2,
        "num_heads": 4,
        "vocab_size": 100,
        "feed_forward_proj": "gated-gelu",
        "tie_word_embeddings": False,
    },
    {
        "model_type": "bart",
        "d_model": 64,
        "encoder_layers": 2,
        "decoder_layers": 1,
        "encoder_attention_heads": 4,
        "decoder_attention_heads": 4,
        "encoder_ffn_dim": 96,
        "decoder_ffn_dim": 80,
        "vocab_size": 100,
        "max_position_embeddings": 40,
    },
    {
        "model_type": "bert",
        "hidden_size": 64,
        "intermediate_size": 96,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "vocab_size": 100,
        "max_position_embeddings": 40,
    },
]
# Presets cross-checked on the meta device as well (one or two per family keep this fast).
META_PRESETS = [
    "llama-3-8b",
    "llama-3.2-1b",
    "mixtral-8x7b",
    "qwen2.5-7b",
    "gemma-2-9b",
    "phi-3-mini",
    "phi-2",
    "gpt2",
    "bloom-560m",
    "pythia-160m",
    "opt-350m",
    "flan-t5-base",
    "bart-base",
    "bert-base-uncased",
]


def meta_parameters(config: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    import torch
    from transformers import (
        AutoConfig,
        AutoModelForCausalLM,
        AutoModelForMaskedLM,
        AutoModelForSeq2SeqLM,
    )

    model_type = config["model_type"]
    cls = {"t5": AutoModelForSeq2SeqLM, "bart": AutoModelForSeq2SeqLM, "bert": AutoModelForMaskedLM}.get(
        model_type, AutoModelForCausalLM
    )
    with torch.device("meta"):
        model = cls.from_config(AutoConfig.for_model(**config))
    return {name: tuple(p.shape) for name, p in model.named_parameters()}


def analytic_parameters(config: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    return {name: t.shape for t in inventory(config).tensors for name in t.names()}


@pytest.mark.parametrize("config", FAMILY_CONFIGS, ids=lambda c: c["model_type"])
def test_inventory_matches_transformers_name_by_name(config: dict[str, Any]) -> None:
    config = {**config, **SMALL}
    assert analytic_parameters(config) == meta_parameters(config)


@pytest.mark.parametrize("arch", ["llama", "gpt2", "t5", "bert", "bloom", "mixtral", "bart"])
def test_tiny_models_are_counted_exactly(cli, arch: str) -> None:
    """`tunekit estimate-memory tiny:ARCH` counts the parameters of the model `tunekit tiny-model` builds."""
    from tunekit.models.tiny import ensure_tiny, tiny_config

    config = {key: value for key, value in tiny_config(arch).items() if key != "architectures"}
    assert analytic_parameters(config) == meta_parameters(config)
    result = cli("estimate-memory", f"tiny:{arch}", "--method", "full", "--seq-len", "64", "--json")
    assert result.code == 0, result.err
    import transformers

    auto = {"t5": "AutoModelForSeq2SeqLM", "bart": "AutoModelForSeq2SeqLM", "bert": "AutoModelForMaskedLM"}
    built = getattr(transformers, auto.get(arch, "AutoModelForCausalLM")).from_pretrained(ensure_tiny(f"tiny:{arch}"))
    assert json.loads(result.out)["parameters"] == inventory(config).parameters == built.num_parameters()


@pytest.mark.parametrize("name", META_PRESETS)
def test_presets_match_transformers_on_the_meta_device(name: str) -> None:
    config = load_preset(name).config
    real = meta_parameters(config)
    assert inventory(config).parameters == sum(_numel(shape) for shape in real.values())
    assert analytic_parameters(config) == real


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


@pytest.mark.parametrize("name", preset_names())
def test_every_preset_has_its_published_parameter_count(name: str) -> None:
    preset = load_preset(name)
    count = inventory(preset.config).parameters
    config = preset.config
    if config["model_type"] == "t5" and config.get("tie_word_embeddings") is False:
        # Published T5 v1.1 / FLAN-T5 counts have a separate lm_head; transformers 5 ties it to `shared`.
        count += config["vocab_size"] * config["d_model"]
    if preset.published_parameters is not None:
        assert count == preset.published_parameters


def test_a_few_dozen_presets_cover_the_families_the_issue_names() -> None:
    names = preset_names()
    assert len(names) >= 36
    for family in (
        "llama-2",
        "llama-3",
        "mistral",
        "mixtral",
        "qwen2.5",
        "gemma",
        "phi",
        "gpt2",
        "bloom",
        "pythia",
        "opt",
        "t5",
        "flan-t5",
        "bart",
        "bert",
    ):
        assert any(n.startswith(family) for n in names), family


def test_preset_files_are_small_config_json() -> None:
    from tunekit.estimate.targets import preset_dir

    for path in preset_dir().iterdir():
        raw = json.loads(path.read_text())
        assert set(raw) == {"hub_id", "published_parameters", "config"}
        assert len(path.read_text()) < 2000


@pytest.mark.parametrize(
    "model_type", ["llama", "mistral", "mixtral", "qwen2", "qwen3", "gemma", "gemma2", "phi3", "phi", "gpt_neox"]
)
def test_defaults_follow_transformers_config_classes(model_type: str) -> None:
    """A config.json that leaves options out means transformers' defaults for them."""
    from transformers import AutoConfig

    required = {
        "hidden_size": 64,
        "num_attention_heads": 4,
        "intermediate_size": 96,
        "num_hidden_layers": 2,
        "vocab_size": 100,
    }
    hf = AutoConfig.for_model(model_type, **required)
    dims = read_dims({"model_type": model_type, **required})
    assert dims.kv_heads == (getattr(hf, "num_key_value_heads", None) or hf.num_attention_heads)
    assert dims.head_dim == (getattr(hf, "head_dim", None) or hf.hidden_size // hf.num_attention_heads)
    assert dims.tied == hf.tie_word_embeddings


def test_a_config_lacking_a_needed_field_names_it() -> None:
    with pytest.raises(UserError, match="lacks hidden_size"):
        inventory(
            {
                "model_type": "llama",
                "num_hidden_layers": 2,
                "num_attention_heads": 4,
                "vocab_size": 10,
                "intermediate_size": 8,
            }
        )
    with pytest.raises(UserError, match="lacks vocab_size"):
        inventory({"model_type": "gpt2", "n_embd": 64, "n_layer": 2, "n_head": 4})
    with pytest.raises(UserError, match="num_attention_heads must be a positive integer"):
        inventory(
            {
                "model_type": "llama",
                "hidden_size": 64,
                "num_hidden_layers": 2,
                "num_attention_heads": 0,
                "vocab_size": 10,
                "intermediate_size": 8,
            }
        )


def test_unknown_architectures_are_counted_exactly_on_the_meta_device() -> None:
    from tunekit.estimate.meta import meta_inventory

    config = {
        "model_type": "falcon",
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "vocab_size": 100,
        **SMALL,
    }
    model = meta_inventory(config)
    assert model.counted == "meta device"
    assert model.parameters == sum(_numel(s) for s in meta_parameters(config).values())
    assert any(t.kind == "linear" for t in model.tensors)
