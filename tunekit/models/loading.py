"""Load the model a reference names (tunekit.models.refs) for training, in the recipe's precision.

    >>> from tunekit.config.sections import ModelSection
    >>> from tunekit.models.refs import resolve
    >>> section = ModelSection(name_or_path="tiny:llama")
    >>> model = load_model(resolve(section.name_or_path, build=True), section)  # doctest: +SKIP

Imports torch and transformers: used by the training commands only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
    BitsAndBytesConfig,
    PreTrainedTokenizerBase,
)

from tunekit.config.sections import AdapterSection, ModelSection
from tunekit.errors import UserError
from tunekit.models.refs import ModelRef

HEADS = {
    "causal-lm": AutoModelForCausalLM,
    "score": AutoModelForSequenceClassification,  # one score per sequence (reward models)
    "classify": AutoModelForSequenceClassification,  # one logit per label (`labels`)
    "tag": AutoModelForTokenClassification,  # one logit per tag, for every token (`labels`: the tag names)
    "masked-lm": AutoModelForMaskedLM,
    "seq2seq-lm": AutoModelForSeq2SeqLM,  # encoder-decoders (T5, BART): `tunekit sft` hands them to methods/seq2seq
}
EMBED = "embed"  # a sentence-transformers model (`tunekit embed`): load_sentence_transformer

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


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


def load_kwargs(section: ModelSection, dtype: torch.dtype | None = None) -> dict[str, Any]:
    """`from_pretrained` keywords for a model section: dtype, bitsandbytes config (placed whole on one
    device, as k-bit weights cannot move after loading), attention kernel."""
    kwargs: dict[str, Any] = {"dtype": dtype or resolve_dtype(section.dtype)}
    quant = quantization_config(section)
    if quant is not None:
        kwargs.update(quantization_config=quant, device_map={"": default_device()})
    if section.attn_implementation:
        kwargs["attn_implementation"] = section.attn_implementation
    return kwargs


def load_tokenizer(path: str, section: ModelSection) -> PreTrainedTokenizerBase:
    tokenizer = from_pretrained_or_explain(AutoTokenizer, path, section)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def add_tokens(tokenizer: PreTrainedTokenizerBase, tokens: list[str]) -> PreTrainedTokenizerBase:
    """`model.add_tokens` into the tokenizer (tokenizers' own add_tokens); one it already has is an error,
    since its embedding row is already trained and would not be the new one the recipe means."""
    known = [token for token in tokens if token in tokenizer.get_vocab()]
    if known:
        raise UserError(f"model.add_tokens: {', '.join(known)} already in the tokenizer's vocabulary")
    if tokens:
        tokenizer.add_tokens(tokens)
    return tokenizer


def new_token_ids(tokenizer: PreTrainedTokenizerBase, tokens: list[str]) -> list[int]:
    return [int(tokenizer.convert_tokens_to_ids(token)) for token in tokens]


def grow_embeddings(model: Any, tokenizer: PreTrainedTokenizerBase) -> Any:
    """Resize the input (and output) embeddings to the tokenizer (transformers' resize_token_embeddings: new
    rows start at the mean of the old ones), so the added tokens have rows to train."""
    if model.get_input_embeddings().weight.shape[0] < len(tokenizer):
        model.resize_token_embeddings(len(tokenizer))
    return model


def load_model(
    ref: ModelRef,
    section: ModelSection,
    adapter: AdapterSection | None = None,
    head: str = "causal-lm",
    dtype: torch.dtype | None = None,
    gradient_checkpointing: bool = False,
    labels: list[str] | None = None,
    command: str | None = None,
    pad_token_id: int | None = None,
) -> Any:
    """The model for training. A quantised base gets peft's k-bit preparation (fp32 norms, input grads);
    an adapter folder is merged into its base, or with `adapter.existing: continue` comes back as a
    trainable PeftModel. The `classify` and `tag` heads get one logit per name in `labels`; score and classify
    heads take the tokenizer's `pad_token_id`. `command` (the recipe's method) names the command in a refusal."""
    kwargs = load_kwargs(section, dtype)
    if head == EMBED:
        return load_sentence_transformer(ref, section, kwargs)
    quant = kwargs.get("quantization_config")
    if head in ("score", "classify"):
        kwargs["pad_token_id"] = pad_token_id
    if head == "score":
        kwargs["num_labels"] = 1
    if head in ("classify", "tag"):  # the label names travel in config.json (id2label), for any tool reading final/
        assert labels, f"the {head} head needs the label names"
        kwargs.update(
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={name: i for i, name in enumerate(labels)},
        )
    check_head(ref, head, command)  # first: T5 has no causal-LM class to load
    model = from_pretrained_or_explain(HEADS[head], ref.base.path, section, **kwargs)
    if quant is not None:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
        keep_4bit_layers_trainable(model)
    if ref.adapter is not None:
        model = _apply_adapter(model, ref, section, adapter)
    return model


def load_sentence_transformer(ref: ModelRef, section: ModelSection, kwargs: dict[str, Any]) -> Any:
    """A sentence-transformers model: a folder with its modules.json as it is; any other encoder (a BERT,
    a tiny model) gets sentence-transformers' default stack, the encoder then mean pooling."""
    from sentence_transformers import SentenceTransformer

    try:
        return SentenceTransformer(
            ref.base.path,
            device=default_device(),
            revision=section.revision,
            trust_remote_code=section.trust_remote_code,
            model_kwargs=kwargs,
        )
    except OSError as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UserError(f"cannot load {section.name_or_path} as an embedding model: {first}") from None


def keep_4bit_layers_trainable(model: Any) -> None:
    """Hold every bitsandbytes `Linear4bit` of a model being trained in training mode, evaluations included.

    On a CPU with AVX512-BF16, bitsandbytes (0.49 to 0.50.2 at least) repacks a `Linear4bit`'s weight for
    its bf16 inference kernel the first time the layer runs in eval mode without gradients, and never packs
    it back: every later forward, training ones too, then goes through `bitsandbytes::gemv_4bit`, which has
    no backward, so the gradient through the frozen base is silently dropped (LoRA's gradients off by ~77%
    on the tiny LLaMA). A run evaluates before it trains, so all of QLoRA would train that way. The flag
    changes nothing else in the layer (no dropout): in training mode it dequantises and multiplies in
    `model.compute_dtype`, the same path as training. Inference (`tunekit generate`, `eval`) keeps the fast path.
    """
    from bitsandbytes.nn import Linear4bit

    def stay_in_training_mode(module: Any, args: Any) -> None:  # returns None: the input passes unchanged
        if not module.training:
            module.train()

    for module in model.modules():
        if isinstance(module, Linear4bit):
            module.register_forward_pre_hook(stay_in_training_mode)


def check_head(ref: ModelRef, head: str, command: str | None = None) -> None:
    """An encoder-decoder (T5, BART) loads as seq2seq-lm, or for classify / tag when transformers has a
    sequence- / token-classification class for its family; other heads need a decoder- or encoder-only model."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES,
        MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES,
    )

    if head == "seq2seq-lm" or not ref.is_encoder_decoder:
        return
    family = ref.family
    classes = {
        "classify": ("sequence", MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES, "T5/BART-family"),
        "tag": ("token", MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES, "T5-family"),
    }
    if head in classes and family in classes[head][1]:
        return
    shown = f"`tunekit {command}`" if command else "this command"
    if head in classes:
        kind, _, families = classes[head]
        raise UserError(
            f"{ref.name} is an encoder-decoder model ({family}) with no {kind}-classification head in transformers; "
            f"{shown} needs an encoder-only (BERT family), decoder-only, or {families} model"
        )
    raise UserError(
        f"{ref.name} is an encoder-decoder model ({family}); {shown} needs a decoder-only model "
        "(`tunekit sft` trains encoder-decoders)"
    )


def _apply_adapter(model: Any, ref: ModelRef, section: ModelSection, adapter: AdapterSection | None) -> Any:

    assert ref.adapter is not None
    path = str(ref.adapter.folder)
    if ref.adapter.soft_prompt:  # peft can neither merge nor re-train a soft prompt
        raise UserError(
            f"{section.name_or_path} is a soft prompt ({ref.adapter.peft_type}): it cannot be "
            "merged or trained further; set model.name_or_path to its base and train a new one"
        )
    if adapter is not None and adapter.existing == "continue":
        if adapter.type == "none":
            raise UserError(
                "adapter.existing: continue trains the adapter in model.name_or_path; set adapter.type to lora or qlora"
            )
        return load_adapter(model, path, is_trainable=True)
    if section.quantization != "none":
        raise UserError(
            f"{section.name_or_path} is an adapter: merging it into a {section.quantization} base would lose "
            "precision; merge it first (tunekit merge) or set adapter.existing: continue"
        )
    merged = load_adapter(model, path).merge_and_unload()
    merged.requires_grad_(True)  # peft froze the base while the adapter sat on it
    return merged


def load_adapter(model: Any, folder: str, is_trainable: bool = False) -> Any:
    """peft's PeftModel on `model`; a damaged adapter file is named."""
    from peft import PeftModel
    from safetensors import SafetensorError

    try:
        return PeftModel.from_pretrained(model, folder, is_trainable=is_trainable)
    except SafetensorError as err:
        raise (damaged_weights(folder) or UserError(f"cannot load adapter {folder}: {err}")) from None


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def file_problem(file: Path) -> str | None:
    """Cheap structural checks that catch a damaged or cut-short weight file without loading its tensors:
    a safetensors header must list tensors that fill the file exactly."""
    import json
    import zipfile

    try:
        if file.suffix == ".safetensors":
            with file.open("rb") as handle:
                length = int.from_bytes(handle.read(8), "little")
                header = json.loads(handle.read(length))
            end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
            if 8 + length + end != file.stat().st_size:
                return "does not hold the tensors its header lists"
        elif file.suffix in (".pt", ".pth", ".bin") and zipfile.is_zipfile(file):
            with zipfile.ZipFile(file) as archive:
                archive.namelist()
        elif file.suffix == ".json":
            json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError, KeyError, TypeError, AttributeError, zipfile.BadZipFile) as err:
        return f"is damaged ({type(err).__name__})"
    return None


def damaged_weights(folder: str | Path) -> UserError | None:
    """A UserError naming the weight files in `folder` that are cut short or damaged, or None."""
    folder = Path(folder)
    found = [(f, file_problem(f)) for f in sorted(folder.glob("*.safetensors"))] if folder.is_dir() else []
    bad = [f"{f.name} {problem}" for f, problem in found if problem]
    if not bad:
        return None
    return UserError(
        f"{folder}: {'; '.join(bad)}: the file is cut short or damaged (an interrupted copy or download?); "
        "copy or download it again"
    )


def from_pretrained_or_explain(cls: Any, path: str, section: ModelSection, **kwargs: Any) -> Any:
    from safetensors import SafetensorError

    try:
        return cls.from_pretrained(
            path, revision=section.revision, trust_remote_code=section.trust_remote_code, **kwargs
        )
    except SafetensorError as err:
        raise (damaged_weights(path) or UserError(f"cannot load {section.name_or_path}: {err}")) from None
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
