"""Tiny random models (~100k-200k parameters) with a tokenizer trained offline, for CI and tests.

    $ tunekit tiny-model /tmp/tiny-llama --arch llama --seed 0
    >>> from transformers import AutoModelForCausalLM
    >>> AutoModelForCausalLM.from_pretrained("/tmp/tiny-llama")  # doctest: +SKIP

A recipe can name `tiny:llama` (or gpt2, t5, bert, bloom, mixtral, bart) as `model.name_or_path`: the
model is built on first use into tunekit's cache and reused after. The tokenizer does not depend on the
seed and is built with the `tokenizers` library alone, so `tunekit validate` can preview data without
torch. BLOOM has ALiBi positions (no position table); Mixtral is a mixture of experts (4 experts, 2 per
token, a router per layer); T5's tokenizer carries T5's sentinel tokens `<extra_id_0>` ... at the end of
its vocabulary, for span corruption.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from tunekit.errors import UserError

TINY_PREFIX = "tiny:"
# Bump when the tokenizer or a config below changes, so cached builds are not reused.
TINY_VERSION = 3
VOCAB_SIZE = 1024

PAD, BOS, EOS, UNK = "<|pad|>", "<|bos|>", "<|end|>", "<|unk|>"
ROLE_TOKENS = ["<|system|>", "<|user|>", "<|assistant|>"]
MASK, SEP, CLS = "<|mask|>", "<|sep|>", "<|cls|>"
SPECIAL_TOKENS = [PAD, BOS, EOS, UNK, *ROLE_TOKENS, MASK, SEP, CLS]  # ids 0..9, in this order
# T5's span-corruption sentinels, the last ids of the vocabulary as in T5 (`<extra_id_0>` is the very last).
# 32 of them: a block of up to ~640 tokens at T5's 15% noise in spans of 3 (T5 itself has 100).
SENTINELS = [f"<extra_id_{i}>" for i in range(32)]

# `{% generation %}` marks the tokens that carry loss under assistant-only training; the
# end-of-turn token sits inside it so the model learns to stop. A space (not a newline) follows each
# role marker, so a message's first word is the same `Ġword` token as anywhere else in the text and
# tiny models can relate words in answers to words in prompts. For the assistant the space opens the
# generated part: the generation prompt ends on `<|assistant|>`, never on a lone space token.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message['role'] == 'assistant' %}"
    "{{- '<|assistant|>' }}{% generation %}{{- ' ' + message['content'] + '<|end|>' }}{% endgeneration %}"
    "{{- '\\n' }}"
    "{%- else %}"
    "{{- '<|' + message['role'] + '|> ' + message['content'] + '<|end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|assistant|>' }}{%- endif %}"
)

_COMMON = {"vocab_size": VOCAB_SIZE, "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}
_CONFIGS: dict[str, dict[str, Any]] = {
    "llama": {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 512,
        "tie_word_embeddings": True,
    },
    "gpt2": {
        "model_type": "gpt2",
        "architectures": ["GPT2LMHeadModel"],
        "n_embd": 64,
        "n_layer": 2,
        "n_head": 4,
        "n_inner": 128,
        "n_positions": 256,
        "tie_word_embeddings": True,
    },
    "t5": {
        "model_type": "t5",
        "architectures": ["T5ForConditionalGeneration"],
        "d_model": 64,
        "d_kv": 16,
        "d_ff": 128,
        "num_layers": 2,
        "num_decoder_layers": 2,
        "num_heads": 4,
        "decoder_start_token_id": 0,
        "tie_word_embeddings": True,
    },
    "bert": {
        "model_type": "bert",
        "architectures": ["BertForMaskedLM"],
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "max_position_embeddings": 256,
    },
    "bloom": {  # ALiBi: attention biased by distance, no position embeddings
        "model_type": "bloom",
        "architectures": ["BloomForCausalLM"],
        "hidden_size": 64,
        "n_layer": 2,
        "n_head": 4,
        # 5x transformers' 0.02: the tied output layer of 0.02-scale random embeddings caps the logits so low
        # that LoRA (which leaves it frozen) cannot memorise in hundreds of steps; at 0.1 it does in 600.
        "initializer_range": 0.1,
        "tie_word_embeddings": True,
    },
    "mixtral": {  # mixture of experts: a router per layer sends each token to 2 of 4 gated-MLP experts
        "model_type": "mixtral",
        "architectures": ["MixtralForCausalLM"],
        "hidden_size": 64,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "num_local_experts": 4,
        "num_experts_per_tok": 2,
        "max_position_embeddings": 512,
        "tie_word_embeddings": True,
    },
    "bart": {
        "model_type": "bart",
        "architectures": ["BartForConditionalGeneration"],
        "d_model": 64,
        "encoder_layers": 2,
        "decoder_layers": 2,
        "encoder_attention_heads": 4,
        "decoder_attention_heads": 4,
        "encoder_ffn_dim": 128,
        "decoder_ffn_dim": 128,
        "max_position_embeddings": 128,
        "decoder_start_token_id": 2,  # BART starts decoding from EOS
        "forced_eos_token_id": 2,
        "init_std": 0.1,  # as BLOOM's initializer_range: a frozen tied output layer at 0.02 caps LoRA's logits
        "tie_word_embeddings": True,
    },
}
TINY_ARCHS = tuple(_CONFIGS)


def tiny_config(arch: str) -> dict[str, Any]:
    """The config.json contents of the tiny model for `arch` (pure Python)."""
    if arch not in _CONFIGS:
        raise UserError(f"unknown tiny architecture {arch!r}; choose one of: {', '.join(TINY_ARCHS)}")
    return {**_COMMON, **_CONFIGS[arch]}


def is_tiny_ref(name: str) -> bool:
    return name.startswith(TINY_PREFIX)


def tiny_arch(name: str) -> str:
    arch = name.removeprefix(TINY_PREFIX)
    tiny_config(arch)  # validates the name
    return arch


def cache_dir() -> Path:
    root = os.environ.get("TUNEKIT_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tunekit"
    return Path(root)


def tiny_path(arch: str, seed: int = 0) -> Path:
    return cache_dir() / "tiny" / f"{arch}-seed{seed}-v{TINY_VERSION}"


@dataclass(frozen=True)
class TinyTokenizer:
    tokenizer: Any  # tokenizers.Tokenizer
    chat_template: str | None
    special: dict[str, str]  # transformers name (bos_token, ...) -> token
    extra_special: list[str] = field(default_factory=list)  # T5's sentinels


def build_tokenizer(arch: str) -> TinyTokenizer:
    """Train a byte-level BPE on the shipped word list; deterministic, offline, torch-free."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE(unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    sentinels = SENTINELS if arch == "t5" else []
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE - len(sentinels),
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_corpus(), trainer=trainer)
    tokenizer.add_special_tokens(sentinels[::-1])  # ids VOCAB_SIZE - 32 ... VOCAB_SIZE - 1
    special = {"pad_token": PAD, "eos_token": EOS, "bos_token": BOS, "unk_token": UNK}
    template: str | None = CHAT_TEMPLATE
    if arch == "bert":
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{CLS} $A {SEP}", pair=f"{CLS} $A {SEP} $B {SEP}", special_tokens=[(CLS, 9), (SEP, 8)]
        )
        special = {"pad_token": PAD, "unk_token": UNK, "mask_token": MASK, "sep_token": SEP, "cls_token": CLS}
        template = None
    elif arch == "t5":
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"$A {EOS}", pair=f"$A {EOS} $B {EOS}", special_tokens=[(EOS, 2)]
        )
        special = {"pad_token": PAD, "eos_token": EOS, "unk_token": UNK}
    elif arch == "bart":  # BART wraps each text in <s> ... </s>
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{BOS} $A {EOS}", pair=f"{BOS} $A {EOS} $B {EOS}", special_tokens=[(BOS, 1), (EOS, 2)]
        )
    return TinyTokenizer(tokenizer, template, special, sentinels)


def _corpus() -> list[str]:
    words = resources.files("tunekit.datasets").joinpath("words.txt").read_text().split()
    lines = [" ".join(words[i : i + 8]) for i in range(0, len(words), 4)]
    lines += [f"{w} {w.capitalize()} {w}s {w}." for w in words]
    lines += [" Reverse the words: Reverse these words: Answer: Question: You are a helpful assistant."] * 4
    return lines


def build_tiny_model(output: Path, arch: str, seed: int = 0, replace: bool = True) -> Path:
    """Write model + tokenizer to `output` via a temporary folder renamed into place (atomic): the cache's
    builds (`tunekit tiny-model` goes through tunekit.folders instead).

    With `replace=False` a folder that appears meanwhile (a concurrent build) is kept.
    """
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        write_tiny_model(staging, arch, seed)
        if output.exists() and replace:
            shutil.rmtree(output)
        try:
            staging.rename(output)
        except OSError:
            if replace or not (output / "config.json").exists():
                raise
            shutil.rmtree(staging)  # another process finished the same build first: keep theirs
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return output


def write_tiny_model(folder: Path, arch: str, seed: int = 0) -> None:
    """Save the tiny `arch` model (weights from `seed`) and its tokenizer into `folder`."""
    import torch
    from transformers import (
        AutoConfig,
        AutoModelForCausalLM,
        AutoModelForMaskedLM,
        AutoModelForSeq2SeqLM,
        PreTrainedTokenizerFast,
    )

    spec = tiny_config(arch)
    config = AutoConfig.for_model(**{k: v for k, v in spec.items() if k != "architectures"})
    auto = {"bert": AutoModelForMaskedLM, "t5": AutoModelForSeq2SeqLM, "bart": AutoModelForSeq2SeqLM}.get(
        arch, AutoModelForCausalLM
    )
    torch.manual_seed(seed)
    model = auto.from_config(config)
    parts = build_tokenizer(arch)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=parts.tokenizer, extra_special_tokens=parts.extra_special, **parts.special
    )
    if parts.chat_template:
        tokenizer.chat_template = parts.chat_template
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def ensure_tiny(name: str) -> Path:
    """The folder of `tiny:ARCH`, built into the cache on first use."""
    arch = tiny_arch(name)
    path = tiny_path(arch)
    if not (path / "config.json").exists():
        build_tiny_model(path, arch, seed=0, replace=False)
    return path
