"""Load models and tokenizers from a local folder, a Hub id or `tiny:ARCH`, in the recipe's precision.

    >>> from tunekit.config.schema import ModelSection
    >>> model, tokenizer = load_causal_lm(ModelSection(name_or_path="tiny:llama"))  # doctest: +SKIP

Imports torch and transformers: used by the training commands only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig, PreTrainedTokenizerBase

from tunekit.config.schema import ModelSection
from tunekit.errors import UserError
from tunekit.tiny import ensure_tiny, is_tiny_ref

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_model_path(name: str) -> str:
    """An absolute folder for local and tiny models (what an adapter records as its base), else the Hub id."""
    if is_tiny_ref(name):
        return str(ensure_tiny(name).resolve())
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise UserError(f"model folder {name} has no config.json")
        return str(path.resolve())
    if name.startswith((".", "/", "~")):
        raise UserError(f"model folder not found: {name}")
    return name


def resolve_dtype(name: str) -> torch.dtype:
    """`auto` is bf16 on a GPU that supports it, fp32 elsewhere (CPU fp16/bf16 training is slow and lossy)."""
    if name == "auto":
        return torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float32
    return DTYPES[name]


def quantization_config(section: ModelSection) -> BitsAndBytesConfig | None:
    if section.quantization == "none":
        return None
    if section.quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    compute = resolve_dtype(section.compute_dtype if section.compute_dtype != "auto" else section.dtype)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=section.quant_type,
        bnb_4bit_use_double_quant=section.double_quant,
        bnb_4bit_compute_dtype=compute,
        # Keep non-quantised weights (norms, embeddings) in the compute dtype, not fp32 copies of it.
        bnb_4bit_quant_storage=torch.uint8,
    )


def load_tokenizer(path: str, section: ModelSection) -> PreTrainedTokenizerBase:
    tokenizer = _from_pretrained(AutoTokenizer, path, section)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(section: ModelSection, dtype: torch.dtype | None = None) -> tuple[Any, PreTrainedTokenizerBase]:
    path = resolve_model_path(section.name_or_path)
    tokenizer = load_tokenizer(path, section)
    kwargs: dict[str, Any] = {"dtype": dtype or resolve_dtype(section.dtype)}
    quant = quantization_config(section)
    if quant is not None:
        kwargs["quantization_config"] = quant
        kwargs["device_map"] = {"": _default_device()}
    if section.attn_implementation:
        kwargs["attn_implementation"] = section.attn_implementation
    model = _from_pretrained(AutoModelForCausalLM, path, section, **kwargs)
    if getattr(model.config, "is_encoder_decoder", False):
        raise UserError(f"{section.name_or_path} is an encoder-decoder model; tunekit sft needs a decoder-only model here")
    return model, tokenizer


def _default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _from_pretrained(cls: Any, path: str, section: ModelSection, **kwargs: Any) -> Any:
    try:
        return cls.from_pretrained(
            path, revision=section.revision, trust_remote_code=section.trust_remote_code, **kwargs
        )
    except OSError as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        if Path(path).exists():
            raise UserError(f"cannot load {section.name_or_path}: {first}") from None
        raise UserError(
            f"cannot load model {section.name_or_path!r}: not a local folder, not in the Hugging Face cache, "
            f"and the Hub could not provide it ({first})"
        ) from None
    except ValueError as err:
        if "trust_remote_code" in str(err):
            raise UserError(
                f"{section.name_or_path} ships its own modelling code; set model.trust_remote_code: true "
                "if you trust it"
            ) from None
        raise
