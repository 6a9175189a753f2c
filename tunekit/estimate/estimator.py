"""From a target and settings to estimates: the library entry point the CLI calls.

    >>> result = estimate_memory("gpt2", {"method": "lora", "dtype": "all", "seq_len": 256})
    >>> [e.dtype for e in result.estimates]
    ['fp32', 'fp16', 'bf16', 'int8', 'int4']
    >>> result.estimates[0].trainable  # LoRA r=8 on c_attn, c_proj, c_fc and c_proj of 12 layers
    1179648

A recipe fills the settings from its own fields; explicit settings (command-line flags) override
them. Torch is imported only for architectures without an analytic inventory (meta device).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from tunekit.errors import UserError
from tunekit.estimate.arch import FAMILIES
from tunekit.estimate.memory import Estimate, estimate, trained_model
from tunekit.estimate.params import Model, inventory
from tunekit.estimate.setup import DTYPES, Setup
from tunekit.estimate.targets import Target, resolve_target, setup_from_recipe

SETUP_FIELDS = {f.name for f in fields(Setup)}


@dataclass(frozen=True)
class MemoryResult:
    target: Target
    model: Model
    setup: Setup  # the settings of the first estimate (dtype aside)
    estimates: list[Estimate]
    skipped: list[str]  # "dtype:why" for dtypes the method cannot use
    notes: list[str]


def model_of(target: Target) -> Model:
    """The parameter inventory: analytic for known families, else built on the meta device."""
    if target.config.get("model_type") in FAMILIES:
        return inventory(target.config)
    from tunekit.estimate.meta import meta_inventory

    return meta_inventory(target.config)


def settings_for(target: Target, flags: dict[str, Any]) -> dict[str, Any]:
    """Recipe settings overlaid with the flags that were given (None means not given)."""
    unknown = set(flags) - SETUP_FIELDS
    if unknown:
        raise ValueError(f"unknown setup fields: {sorted(unknown)}")  # a programming error, not the user's
    merged = setup_from_recipe(target.recipe) if target.recipe is not None else {}
    merged.update({k: v for k, v in flags.items() if v is not None})
    return merged


def dtypes_for(settings: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(dtypes to estimate, "dtype:reason" for the ones the method cannot use)."""
    wanted = settings.get("dtype", "all")
    method = settings.get("method", "full")
    if wanted != "all":
        return [wanted], []
    if method == "qlora":
        return ["int4"], []
    if method in ("full", "freeze"):
        reason = f"{method} fine-tuning cannot train quantised weights (use lora/qlora)"
        return ["fp32", "fp16", "bf16"], [f"int8:{reason}", f"int4:{reason}"]
    return list(DTYPES), []


def estimate_memory(target: str | Target, flags: dict[str, Any], overrides: list[str] | None = None) -> MemoryResult:
    resolved = target if isinstance(target, Target) else resolve_target(target, overrides)
    settings = settings_for(resolved, flags)
    dtypes, skipped = dtypes_for(settings)
    model = model_of(resolved)
    notes = list(resolved.notes)
    if model.counted != "analytic":
        notes.append(
            f"{model.dims.model_type}: parameters counted on the meta device; activations use the "
            "Llama-like layer model and are approximate"
        )
    estimates = []
    setup = Setup()
    for dtype in dtypes:
        setup = _setup(settings, dtype)
        est = estimate(model, setup)
        notes += est.notes
        estimates.append(est)
    notes += _precision_notes(setup, dtypes, model)
    return MemoryResult(resolved, trained_model(model, setup), setup, estimates, skipped, notes)


def _setup(settings: dict[str, Any], dtype: str) -> Setup:
    values = {k: v for k, v in settings.items() if k in SETUP_FIELDS}
    values["dtype"] = dtype
    try:
        return Setup(**values).checked()
    except TypeError as err:  # a value of the wrong type from a recipe or flag
        raise UserError(f"bad setting: {err}") from None


def _precision_notes(setup: Setup, dtypes: list[str], model: Model) -> list[str]:
    notes = []
    method = setup.method
    if method in ("full", "freeze") and "bf16" in dtypes and not setup.uses_master_weights:
        notes.append(
            "bf16: pure bf16 (weights, gradients and AdamW states in bf16), as transformers' Trainer "
            "runs a bf16-loaded model; --master-weights adds fp32 master copies (DeepSpeed style)"
        )
    if method in ("full", "freeze") and "fp16" in dtypes and not setup.uses_master_weights:
        notes.append("fp16: fp32 weights under fp16 autocast (AMP), the only way fp16 full fine-tuning trains")
    if any(d in ("int8", "int4") for d in dtypes) and setup.training and setup.kbit_upcast:
        notes.append(
            "int8/int4: peft's prepare_model_for_kbit_training keeps embeddings, norms and the "
            "output head in fp32 (tunekit calls it); adapters train in the compute dtype (trl)"
        )
    if model.dims.experts and any(d in ("int8", "int4") for d in dtypes):
        notes.append(
            "mixture of experts: transformers 5 stores experts as 3-D parameters, which bitsandbytes "
            "does not quantise; `all-linear` LoRA adapts them (peft's target_parameters) and leaves the router frozen"
        )
    if model.dims.needs_eager and setup.attention in (None, "sdpa"):
        notes.append(f"{model.dims.model_type}: no SDPA path in transformers, eager attention assumed (s^2 scores)")
    return notes


def estimate_one(target: Target, setup: Setup) -> Estimate:
    return estimate(model_of(target), setup)
