"""Load what a command points at: a model folder, Hub id, `tiny:ARCH`, a run's `final/`, or an adapter.

    $ tunekit generate runs/lora/final --prompt "Reverse the words: red green blue"
    >>> ref = resolve_reference("runs/lora/final")   # doctest: +SKIP
    >>> ref.adapter is not None, ref.base              # doctest: +SKIP
    (True, '/home/me/.cache/tunekit/tiny/llama-seed0-v1')
    >>> loaded = load(ref)                             # doctest: +SKIP

An adapter folder (adapter_config.json, as a LoRA run's `final/` writes it) is put on the base its
config records (`base_model_name_or_path`); `MODEL --adapter DIR` names the base instead. The base of
a QLoRA adapter is loaded in 4-bit, as the run that trained it did (read from the run's recipe.yaml),
so what is measured is what was trained. Decoder-only models load as causal LMs, encoder-decoders
(T5, BART) as seq2seq LMs. Shared by `merge`, `generate`, `chat` and `eval`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tunekit.config.schema import ModelSection
from tunekit.errors import UserError
from tunekit.models.loading import (
    adapter_base,
    default_device,
    from_pretrained_or_explain,
    load_kwargs,
    load_tokenizer,
    resolve_model_path,
)

ADAPTER_CONFIG = "adapter_config.json"
# Heads that score or fill in text rather than continue it: nothing to generate with.
NOT_GENERATIVE = ("ForMaskedLM", "ForSequenceClassification", "ForTokenClassification", "ForQuestionAnswering")


@dataclass(frozen=True)
class Reference:
    """What `MODEL [--adapter DIR]` resolves to, before anything heavy is loaded."""

    name: str  # as the user gave it, for messages
    base: str  # absolute folder, or Hub id
    adapter: Path | None = None
    peft_type: str | None = None  # LORA, PROMPT_TUNING, ... as adapter_config.json says
    soft_prompt: bool = False  # prompt / prefix / p-tuning: virtual tokens, no weights to merge
    trained_as: ModelSection | None = None  # model section of the recipe that trained the adapter


@dataclass
class Loaded:
    model: Any
    tokenizer: Any
    ref: Reference
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


def resolve_reference(model: str, adapter: str | Path | None = None) -> Reference:
    """Find the base and the adapter of `MODEL [--adapter DIR]`; raises UserError naming what is missing."""
    path = Path(model).expanduser()
    if path.is_dir() and (path / "recipe.yaml").exists() and (path / "final").is_dir():
        path = path / "final"  # a run folder stands for what it trained
        model = str(path)
    if path.is_dir() and (path / ADAPTER_CONFIG).exists() and not (path / "config.json").exists():
        if adapter is not None:
            raise UserError(
                f"{model} is an adapter folder, and --adapter {adapter} names another; give a base model "
                "as MODEL with --adapter, or the adapter folder alone"
            )
        return _adapter_reference(path, base=None, name=model)
    if path.exists() and not path.is_dir():
        raise UserError(f"{model} is a file; MODEL is a model folder, an adapter folder, a Hub id or tiny:ARCH")
    if adapter is None:
        return Reference(name=model, base=resolve_model_path(model))
    return _adapter_reference(Path(adapter).expanduser(), base=resolve_model_path(model), name=model)


def _adapter_reference(folder: Path, base: str | None, name: str) -> Reference:
    if not folder.is_dir():
        raise UserError(f"adapter folder not found: {folder}")
    config_path = folder / ADAPTER_CONFIG
    if not config_path.exists():
        raise UserError(f"{folder} is not an adapter folder: it has no {ADAPTER_CONFIG}")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise UserError(f"{config_path}: invalid JSON: {err.msg}") from None
    if base is None:
        base = adapter_base(str(folder))
        assert base is not None  # the folder holds adapter_config.json
    from peft import PeftConfig

    soft = bool(PeftConfig.from_pretrained(str(folder)).is_prompt_learning)
    return Reference(
        name=name, base=base, adapter=folder, peft_type=config.get("peft_type"), soft_prompt=soft,
        trained_as=_training_model_section(folder),
    )


def _training_model_section(adapter: Path) -> ModelSection | None:
    """The `model` section of the recipe that trained `adapter` (a run's final/ or checkpoints/checkpoint-N/)."""
    import yaml

    for folder in (adapter.parent, adapter.parent.parent):
        recipe = folder / "recipe.yaml"
        if recipe.exists():
            try:
                section = (yaml.safe_load(recipe.read_text(encoding="utf-8")) or {}).get("model")
                return ModelSection.model_validate(section)
            except Exception:  # not a tunekit recipe, or an older schema: load as a plain adapter
                return None
    return None


def load(
    ref: Reference,
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
        notes.append(f"base loaded in {section.quantization} as the run that trained {ref.adapter} did")
    model, is_seq2seq = load_model(ref, section)
    if ref.adapter is not None:
        model = attach_adapter(model, ref)
        from tunekit.use.generate import cache_keeps_prefix

        if not cache_keeps_prefix(model, is_seq2seq):
            notes.append("with the installed peft and transformers this prefix-tuning adapter generates as its "
                         "base model: tunekit measures its loss, and generates nothing with it")
    model.eval()
    return Loaded(model, load_tokenizer_for(ref, section), ref, is_seq2seq, notes)


def _section(ref: Reference, dtype: str, quantization: str, trust_remote_code: bool) -> ModelSection:
    trained = ref.trained_as
    chosen = quantization
    if quantization == "auto":
        chosen = trained.quantization if trained is not None else "none"
    section = ModelSection(name_or_path=ref.base, dtype=dtype, quantization=chosen, trust_remote_code=trust_remote_code)
    if trained is not None and chosen == trained.quantization:
        # Same 4-bit data type, double quantisation and matmul precision as in training.
        section.quant_type, section.double_quant = trained.quant_type, trained.double_quant
        section.compute_dtype = trained.compute_dtype
    return section


def load_model(ref: Reference, section: ModelSection) -> tuple[Any, bool]:
    """The base model alone (no adapter): causal or seq2seq as its config says; placed on the GPU if any."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

    config = _load(AutoConfig, ref, section)
    architectures = getattr(config, "architectures", None) or []
    if architectures and all(a.endswith(NOT_GENERATIVE) for a in architectures):
        raise UserError(
            f"{ref.base} is a {architectures[0]} model: it scores or fills in text but cannot generate; "
            "use a decoder-only (GPT, LLaMA, Qwen) or encoder-decoder (T5, BART) model"
        )
    is_seq2seq = bool(getattr(config, "is_encoder_decoder", False))
    kwargs = load_kwargs(section)
    model = _load(AutoModelForSeq2SeqLM if is_seq2seq else AutoModelForCausalLM, ref, section, **kwargs)
    if "quantization_config" not in kwargs:
        model.to(default_device())
    return model, is_seq2seq


def _load(cls: Any, ref: Reference, section: ModelSection, **kwargs: Any) -> Any:
    """from_pretrained with tunekit's friendly errors; an adapter's base that will not load is named as such."""
    try:
        return from_pretrained_or_explain(cls, ref.base, section, **kwargs)
    except UserError as err:
        if ref.adapter is None:
            raise
        raise UserError(
            f"the base of adapter {ref.adapter} cannot be loaded: {err}; "
            f"give it explicitly: tunekit COMMAND BASE --adapter {ref.adapter}"
        ) from None


def attach_adapter(model: Any, ref: Reference) -> Any:
    """The peft model of `ref.adapter` on `model`; a shape mismatch means the adapter is for another base."""
    from peft import PeftModel

    assert ref.adapter is not None
    try:
        return PeftModel.from_pretrained(model, str(ref.adapter), is_trainable=False)
    except (RuntimeError, ValueError, KeyError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"adapter {ref.adapter} does not fit base {ref.base}: {first}") from None


def load_tokenizer_for(ref: Reference, section: ModelSection) -> Any:
    """The adapter folder's tokenizer if it has one (a run saves it there, with the chat template), else the base's."""
    own = ref.adapter is not None and (ref.adapter / "tokenizer_config.json").exists()
    return load_tokenizer(str(ref.adapter) if own else ref.base, section)
