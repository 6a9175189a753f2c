"""Merge a LoRA-style adapter into its base, and prove the merge did what it should.

    $ tunekit merge runs/lora/final runs/lora/merged
    $ tunekit merge runs/lora/final some/merged-elsewhere --check-only
    >>> check = merge("runs/lora/final", "runs/lora/merged")   # doctest: +SKIP
    >>> check.max_abs_diff <= check.tolerance                    # doctest: +SKIP
    True

The merged model is written as plain safetensors with the tokenizer and chat template, then loaded
back from disk and compared with the adapter model (base + unmerged adapter, same dtype) on a few
prompts: the largest logit difference must be within a tolerance, and the adapted weights must differ
from the base's (a merge into too coarse a dtype, or of an untrained adapter, silently changes
nothing). A failed check writes nothing and raises MergeCheckFailed. A QLoRA adapter is merged into
the base loaded in full precision, never into 4-bit weights.
"""

from __future__ import annotations

import gc
import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from tunekit.config.sections import ModelSection
from tunekit.errors import UserError
from tunekit.folders import MERGE_CHECK, MERGED, claim, writing
from tunekit.models.loading import from_pretrained_or_explain
from tunekit.models.refs import ModelRef
from tunekit.use.load import attach_adapter, load_base, load_tokenizer_for, resolve_reference, trained_section

PROBES = (
    "Reverse the words: apple river stone",
    "The capital of France is",
    "def fibonacci(n):",
    "Once upon a time, in a small village by the sea,",
)
# Largest tolerated |logit difference|, relative to the largest |logit| (at least 1): merging reorders
# the arithmetic, which moves logits by rounding error, more in 16-bit than in fp32.
RELATIVE_TOLERANCE = {"fp32": 1e-4, "fp16": 1e-2, "bf16": 5e-2}
DTYPE_NAMES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}
CHECK_FILE = MERGE_CHECK  # also what tells tunekit.folders a folder holds a merged model


class MergeCheckFailed(Exception):
    """The merged model does not match the adapter model, or equals the base. The CLI exits 1."""

    def __init__(self, check: MergeCheck) -> None:
        super().__init__("; ".join(check.problems()))
        self.check = check


@dataclass
class MergeCheck:
    dtype: str
    prompts: int
    max_abs_diff: float  # merged vs adapter model logits, over every position of every probe prompt
    tolerance: float
    adapter_effect: float  # max |logit change| the adapter makes over its base: 0 means it does nothing
    adapted: int  # weight tensors the adapter modifies
    unchanged: int  # of those, bit-identical to the base weights after merging
    missing: list[str] = field(default_factory=list)  # adapted modules absent from the merged model

    def problems(self) -> list[str]:
        found = []
        if self.missing:
            found.append(f"the merged model lacks {len(self.missing)} adapted modules (first: {self.missing[0]})")
        if self.max_abs_diff > self.tolerance:
            found.append(
                f"merged logits differ from the adapter model's by {self.max_abs_diff:.3g} "
                f"(tolerance {self.tolerance:.3g} in {self.dtype})"
            )
        if self.adapted and self.unchanged == self.adapted:
            cause = ""
            if self.adapter_effect == 0:
                cause = " (the adapter itself changes nothing: untrained, or its LoRA B weights are zero)"
            elif self.dtype != "fp32":
                cause = f" (the adapter's change is lost in {self.dtype} rounding; try --dtype fp32)"
            found.append(f"the merge changed none of the {self.adapted} adapted weights: it equals the base{cause}")
        return found

    def summary(self) -> str:
        return (
            f"{self.adapted - self.unchanged} of {self.adapted} adapted weights changed; "
            f"max |logit diff| merged vs adapter {self.max_abs_diff:.3g} (tolerance {self.tolerance:.3g}) "
            f"over {self.prompts} prompts; the adapter moves logits by up to {self.adapter_effect:.3g}"
        )


@dataclass
class _Probe:
    """What the adapter model does, recorded before its weights are merged in place."""

    inputs: list[torch.Tensor]
    adapter_logits: list[torch.Tensor]
    adapter_effect: float
    digests: dict[str, str]  # adapted module name -> hash of its base weight
    is_seq2seq: bool


def merge(
    adapter: str | Path,
    output: str | Path,
    dtype: str = "auto",
    base: str | None = None,
    tolerance: float | None = None,
    overwrite: bool = False,
    report: Callable[[str], None] = print,
    overwrite_any: bool = False,
) -> MergeCheck:
    """Merge `adapter` into its base, save to `output`, reload and check; nothing is written if the check fails.

    `output` follows tunekit.folders' rules: never the adapter's folder or its base's (nor a folder holding
    them, such as the adapter's run folder), replaced only with `overwrite` and only when it holds a
    merged model (unless `overwrite_any`); the merge is written beside it and swapped in once checked.
    """
    ref = _adapter_ref(adapter, base)
    assert ref.adapter is not None
    protected = [("the adapter", ref.adapter.folder)]
    if ref.base.kind != "hub":
        protected.append(("the adapter's base model", Path(ref.base.path)))
    folder = claim(
        str(output),
        "OUTPUT",
        MERGED,
        overwrite=overwrite,
        overwrite_any=overwrite_any,
        always_staged=True,
        protected=protected,
    )
    with writing(folder) as staging:
        dtype = _merge_dtype(ref, dtype, report)
        model, tokenizer, probe = _probe(ref, dtype)
        try:
            merged = model.merge_and_unload(safe_merge=True)  # safe_merge refuses weights that turn NaN
        except ValueError as err:
            raise UserError(f"cannot merge {adapter}: {err}") from None
        merged.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        del merged, model
        gc.collect()
        check = _compare(probe, staging, dtype, tolerance)
        if check.problems():
            raise MergeCheckFailed(check)
        (staging / CHECK_FILE).write_text(
            json.dumps({"adapter": str(ref.adapter.folder), "base": ref.base.path, **asdict(check)}, indent=2) + "\n",
            encoding="utf-8",
        )
    return check


def check_merged(
    adapter: str | Path,
    merged: str | Path,
    dtype: str = "auto",
    base: str | None = None,
    tolerance: float | None = None,
    report: Callable[[str], None] = print,
) -> MergeCheck:
    """Check a merge made elsewhere: does `merged` behave like base + `adapter`, and differ from the base?"""
    ref = _adapter_ref(adapter, base)
    dtype = _merge_dtype(ref, dtype, report)
    model, _, probe = _probe(ref, dtype)
    del model
    gc.collect()
    check = _compare(probe, Path(merged).expanduser(), dtype, tolerance)
    if check.problems():
        raise MergeCheckFailed(check)
    return check


def _adapter_ref(adapter: str | Path, base: str | None) -> ModelRef:
    folder = Path(adapter).expanduser()
    if not folder.is_dir():
        raise UserError(f"adapter folder not found: {adapter}")
    ref = resolve_reference(base, folder) if base else resolve_reference(str(folder))
    if ref.adapter is None:
        raise UserError(f"{adapter} holds a full model, not an adapter: there is nothing to merge")
    if ref.adapter.soft_prompt:
        raise UserError(
            f"{adapter} is a {ref.adapter.peft_type} adapter (a soft prompt): it adds virtual tokens, not weights, so "
            f"there is nothing to merge; use it as it is: tunekit generate {ref.base.name} --adapter {adapter}"
        )
    return ref


def _merge_dtype(ref: ModelRef, dtype: str, report: Callable[[str], None]) -> str:
    """`auto` is the dtype the base was saved in (fp32 when it records none)."""
    if dtype == "auto":
        from transformers import AutoConfig

        config = from_pretrained_or_explain(AutoConfig, ref.base.path, ModelSection(name_or_path=ref.base.path))
        dtype = DTYPE_NAMES.get(getattr(config, "dtype", None), "fp32")
    trained = trained_section(ref)
    quantized = trained is not None and trained.quantization != "none"
    note = ""
    if quantized:
        note = f" (the run trained it on a {trained.quantization} base: merging into full {dtype} weights instead)"
    report(f"merging {ref.adapter.peft_type} adapter {ref.adapter.folder} into {ref.base.path} in {dtype}{note}")
    return dtype


def _probe(ref: ModelRef, dtype: str) -> tuple[Any, Any, _Probe]:
    section = ModelSection(name_or_path=ref.base.path, dtype=dtype)
    base, is_seq2seq = load_base(ref, section)
    model = attach_adapter(base, ref)
    model.eval()
    tokenizer = load_tokenizer_for(ref, section)
    inputs = [tokenizer(text, return_tensors="pt")["input_ids"] for text in PROBES]
    adapter_logits = _logits(model, inputs, is_seq2seq)
    with model.disable_adapter():
        base_logits = _logits(model, inputs, is_seq2seq)
    effect = max(float((a - b).abs().max()) for a, b in zip(adapter_logits, base_logits))
    return model, tokenizer, _Probe(inputs, adapter_logits, effect, _digests(model), is_seq2seq)


def _logits(model: Any, inputs: list[torch.Tensor], is_seq2seq: bool) -> list[torch.Tensor]:
    device = next(model.parameters()).device
    out = []
    with torch.no_grad():
        for ids in inputs:
            ids = ids.to(device)
            extra = {"decoder_input_ids": ids} if is_seq2seq else {}
            out.append(model(input_ids=ids, **extra).logits.float().cpu())
    return out


def _digests(model: Any) -> dict[str, str]:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return {
        name: _digest(module.get_base_layer().weight)
        for name, module in model.get_base_model().named_modules()
        if isinstance(module, BaseTunerLayer) and hasattr(module.get_base_layer(), "weight")
    }


def _digest(weight: torch.Tensor) -> str:
    raw = weight.detach().contiguous().flatten().view(torch.uint8).cpu().numpy()
    return hashlib.blake2b(raw.tobytes(), digest_size=16).hexdigest()


def _compare(probe: _Probe, merged_dir: Path, dtype: str, tolerance: float | None) -> MergeCheck:
    ref = resolve_reference(str(merged_dir))
    if ref.adapter is not None:
        raise UserError(f"{merged_dir} holds an adapter, not a merged model")
    merged, _ = load_base(ref, ModelSection(name_or_path=ref.base.path, dtype=dtype))
    merged.eval()
    logits = _logits(merged, probe.inputs, probe.is_seq2seq)
    diff = max(float((a - b).abs().max()) for a, b in zip(logits, probe.adapter_logits))
    scale = max(1.0, max(float(a.abs().max()) for a in probe.adapter_logits))
    unchanged, missing = 0, []
    for name, digest in probe.digests.items():
        try:
            weight = merged.get_submodule(name).weight
        except AttributeError:
            missing.append(name)
            continue
        unchanged += _digest(weight) == digest
    return MergeCheck(
        dtype=dtype,
        prompts=len(probe.inputs),
        max_abs_diff=diff,
        tolerance=tolerance if tolerance is not None else RELATIVE_TOLERANCE[dtype] * scale,
        adapter_effect=probe.adapter_effect,
        adapted=len(probe.digests),
        unchanged=unchanged,
        missing=missing,
    )
