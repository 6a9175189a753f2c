"""Exact parameter inventory of any architecture transformers knows, by building it on the meta device.

    >>> model = meta_inventory({"model_type": "falcon", "hidden_size": 64, "num_hidden_layers": 2,
    ...     "num_attention_heads": 4, "vocab_size": 100})  # doctest: +SKIP
    >>> model.counted  # doctest: +SKIP
    'meta device'

The fallback for model types without an analytic inventory (params.py): it imports torch and
transformers (a few seconds), allocates nothing (meta tensors have shapes, no storage), and reads
every parameter with its module's type. Activations for these models use the Llama-like layer
model with the config's sizes, so they are approximate; the report says so.
"""

from __future__ import annotations

import re
from typing import Any

from tunekit.errors import UserError
from tunekit.estimate.arch import generic_dims
from tunekit.estimate.params import Kind, Model, Tensor

_LAYER_INDEX = re.compile(r"\.(\d+)\.")


def meta_inventory(config: dict[str, Any]) -> Model:
    model = _build_on_meta(config)
    output = model.get_output_embeddings()
    kinds = _module_kinds(model, output)
    grouped: dict[tuple[str, tuple[int, ...], str], int] = {}
    for name, param in model.named_parameters():
        module = name.rsplit(".", 1)[0]
        kind = _kind(name, param.dim(), kinds.get(module, "other"))
        pattern = _LAYER_INDEX.sub(".{i}.", name, count=1)
        key = (pattern, tuple(param.shape), kind)
        grouped[key] = grouped.get(key, 0) + 1
    tensors = tuple(
        Tensor(name, shape, kind, copies, stack="decoder" if "{i}" in name else "")  # type: ignore[arg-type]
        for (name, shape, kind), copies in grouped.items()
    )
    layers = max((t.copies for t in tensors), default=1)
    dims = generic_dims(config, layers_hint=layers)
    return Model(dims=dims, tensors=tensors, counted="meta device")


def _build_on_meta(config: dict[str, Any]) -> Any:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

    try:
        hf_config = AutoConfig.for_model(**config)
    except (ValueError, KeyError) as err:
        raise UserError(f"transformers does not know model_type {config.get('model_type')!r}: {err}") from None
    with torch.device("meta"):
        for cls in (AutoModelForCausalLM, AutoModelForSeq2SeqLM):
            try:
                return cls.from_config(hf_config)
            except ValueError:
                continue
    raise UserError(f"{config.get('model_type')} is neither a causal nor a sequence-to-sequence LM in transformers")


def _module_kinds(model: Any, output: Any) -> dict[str, str]:
    from torch import nn
    from transformers.pytorch_utils import Conv1D

    kinds: dict[str, str] = {}
    for name, module in model.named_modules():
        if module is output:
            kinds[name] = "head"
        elif isinstance(module, (nn.Linear, Conv1D)):
            kinds[name] = "linear"
        elif isinstance(module, nn.Embedding):
            kinds[name] = "embedding"
        elif "norm" in type(module).__name__.lower():
            kinds[name] = "norm"
    return kinds


def _kind(name: str, ndim: int, module_kind: str) -> Kind:
    if module_kind == "norm":
        return "norm"
    if name.endswith(".bias") and module_kind in ("linear", "head"):
        return "bias"
    if module_kind in ("linear", "head", "embedding"):
        return module_kind  # type: ignore[return-value]
    return "expert" if ndim >= 3 else ("router" if ndim == 2 else "norm")
