"""Load what a use command points at: a model folder, Hub id, `tiny:ARCH`, a run, its `final/`, or an adapter.

    $ tunekit generate runs/lora/final --prompt "Reverse the words: red green blue"
    >>> ref = resolve_reference("runs/lora/final")   # doctest: +SKIP
    >>> ref.adapter is not None, ref.base.path        # doctest: +SKIP
    (True, '/home/me/.cache/tunekit/tiny/llama-seed0-v2')
    >>> loaded = load(ref)                             # doctest: +SKIP

What a reference names is decided by tunekit.models.refs (one resolver for every command). An adapter
folder is put on the base its config records; `MODEL --adapter DIR` names the base instead. The base
of a QLoRA adapter is loaded in 4-bit, as the run that trained it did (read from the run's
recipe.yaml), so what is measured is what was trained. Decoder-only models load as causal LMs,
encoder-decoders (T5, BART) as seq2seq LMs. Shared by `merge`, `generate`, `chat` and `eval`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tunekit.config.sections import ModelSection
from tunekit.errors import UserError
from tunekit.models.loading import (
    default_device,
    from_pretrained_or_explain,
    load_adapter,
    load_kwargs,
    load_tokenizer,
)
from tunekit.models.refs import ModelRef, resolve

# Heads that score or fill in text rather than continue it: nothing to generate with.
NOT_GENERATIVE = ("ForMaskedLM", "ForSequenceClassification", "ForTokenClassification", "ForQuestionAnswering")


@dataclass
class Loaded:
    model: Any
    tokenizer: Any
    ref: ModelRef
    is_seq2seq: bool
    notes: list[str] = field(default_factory=list)  # decisions the user should hear about

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def context_length(self) -> int | None:
        """Positions the model can attend to, when its config says (None: no fixed limit known)."""
        config = self.model.config
        for key in ("max_position_embeddings", "n_positions", "max_sequence_length"):
            if isinstance(getattr(config, key, None), int):
                return int(getattr(config, key))
        return None


def resolve_reference(model: str, adapter: str | Path | None = None) -> ModelRef:
    """`MODEL [--adapter DIR]` as the use commands take it: a tiny model is built, a Hub config fetched."""
    return resolve(model, adapter=adapter, build=True, download=True)


def shown_name(ref: ModelRef) -> str:
    """How a row of results names the model: MODEL, or MODEL + ADAPTER when both were given."""
    # MODEL itself was the adapter folder, or the run folder holding it
    if ref.adapter is None or Path(ref.name).expanduser().resolve() in (ref.adapter.folder, ref.adapter.folder.parent):
        return ref.name
    return f"{ref.name} + {ref.adapter.folder}"


def load(
    ref: ModelRef,
    dtype: str = "auto",
    quantization: str = "auto",
    trust_remote_code: bool = False,
) -> Loaded:
    """Model (with its adapter, in eval mode) and tokenizer.

    `quantization` auto is what the run that trained the adapter used (QLoRA: 4-bit), else none.
    """
    section = _section(ref, dtype, quantization, trust_remote_code)
    notes = []
    if section.quantization != "none" and quantization == "auto":
        notes.append(f"base loaded in {section.quantization} as the run that trained {ref.adapter.folder} did")
    model, is_seq2seq = load_base(ref, section)
    if ref.adapter is not None:
        model = attach_adapter(model, ref)
        from tunekit.use.generate import cache_keeps_prefix

        if not cache_keeps_prefix(model, is_seq2seq):
            notes.append(
                "with the installed peft and transformers this prefix-tuning adapter generates as its "
                "base model: tunekit measures its loss, and generates nothing with it"
            )
    model.eval()
    return Loaded(model, load_tokenizer_for(ref, section), ref, is_seq2seq, notes)


def _section(ref: ModelRef, dtype: str, quantization: str, trust_remote_code: bool) -> ModelSection:
    trained = trained_section(ref)
    chosen = quantization
    if quantization == "auto":
        chosen = trained.quantization if trained is not None else "none"
    section = ModelSection(
        name_or_path=ref.base.path, dtype=dtype, quantization=chosen, trust_remote_code=trust_remote_code
    )
    if trained is not None and chosen == trained.quantization:
        # Same 4-bit data type, double quantisation and matmul precision as in training.
        section.quant_type, section.double_quant = trained.quant_type, trained.double_quant
        section.compute_dtype = trained.compute_dtype
    return section


def trained_section(ref: ModelRef) -> ModelSection | None:
    """The model section of the recipe that trained the adapter; None when not a tunekit run (or an older schema)."""
    recorded = ref.adapter.trained_as if ref.adapter is not None else None
    if recorded is None:
        return None
    try:
        return ModelSection.model_validate(recorded)
    except ValueError:
        return None


def load_base(ref: ModelRef, section: ModelSection) -> tuple[Any, bool]:
    """The base model alone (no adapter): causal or seq2seq as its config says; placed on the GPU if any."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

    config = _load(AutoConfig, ref, section)
    architectures = getattr(config, "architectures", None) or []
    if architectures and all(a.endswith(NOT_GENERATIVE) for a in architectures):
        raise UserError(
            f"{ref.base.name} is a {architectures[0]} model: it scores or fills in text but cannot generate; "
            "use a decoder-only (GPT, LLaMA, Qwen) or encoder-decoder (T5, BART) model"
        )
    is_seq2seq = bool(getattr(config, "is_encoder_decoder", False))
    kwargs = load_kwargs(section)
    model = _load(AutoModelForSeq2SeqLM if is_seq2seq else AutoModelForCausalLM, ref, section, **kwargs)
    if "quantization_config" not in kwargs:
        model.to(default_device())
    return model, is_seq2seq


def _load(cls: Any, ref: ModelRef, section: ModelSection, **kwargs: Any) -> Any:
    """from_pretrained with tunekit's friendly errors; an adapter's base that will not load is named as such."""
    try:
        return from_pretrained_or_explain(cls, ref.base.path, section, **kwargs)
    except UserError as err:
        if ref.adapter is None:
            raise
        raise UserError(
            f"the base of adapter {ref.adapter.folder} cannot be loaded: {err}; "
            f"give it explicitly: tunekit COMMAND BASE --adapter {ref.adapter.folder}"
        ) from None


def attach_adapter(model: Any, ref: ModelRef) -> Any:
    """The peft model of `ref.adapter` on `model`; a shape mismatch means the adapter is for another base."""
    assert ref.adapter is not None
    try:
        return load_adapter(model, str(ref.adapter.folder))
    except (RuntimeError, ValueError, KeyError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"adapter {ref.adapter.folder} does not fit base {ref.base.name}: {first}") from None


def load_tokenizer_for(ref: ModelRef, section: ModelSection) -> Any:
    """The adapter folder's tokenizer if it has one (a run saves it there, with the chat template), else the base's."""
    return load_tokenizer(ref.tokenizer_path, section)
