"""The exact parameter inventory of a model, tensor by tensor, from its config.json dict.

    >>> from tunekit.estimate.params import inventory
    >>> model = inventory({"model_type": "gpt2", "n_embd": 768, "n_layer": 12, "n_head": 12,
    ...     "vocab_size": 50257, "n_positions": 1024})
    >>> model.parameters  # GPT-2 small, lm_head tied to the token embedding
    124439808

Pure Python. Each tensor carries the name transformers gives it (`{i}` standing for the layer
index), its shape, how many layers hold a copy, and its kind, which decides how it is stored
under quantisation and whether LoRA can adapt it:

- `linear`: an nn.Linear / Conv1D weight: bitsandbytes quantises it, LoRA targets it.
- `head`: the output projection (lm_head) when untied: stays in the compute dtype, never targeted
  by `all-linear`.
- `bias`, `norm`, `embedding`: stay in the compute dtype (fp32 after peft's k-bit preparation).
- `expert`, `router`: mixture-of-experts tensors, which transformers 5 stores as plain 3-D / 2-D
  parameters, not nn.Linear modules: bitsandbytes leaves them unquantised and `all-linear` skips them.

Tests compare every family here with the parameters of the transformers model built on the meta
device, name by name.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from tunekit.estimate.arch import Dims, read_dims

Kind = Literal["linear", "head", "bias", "norm", "embedding", "expert", "router"]


@dataclass(frozen=True)
class Tensor:
    name: str  # transformers' parameter name; "{i}" is the layer index
    shape: tuple[int, ...]
    kind: Kind
    copies: int = 1  # layers holding one each
    transposed: bool = False  # GPT-2's Conv1D stores (in, out)
    keep_fp32: bool = False  # transformers keeps it in fp32 when loading in fp16 (T5's `wo`)
    stack: str = ""  # "encoder" / "decoder" for per-layer tensors of a stack, else ""

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def total(self) -> int:
        return self.numel * self.copies

    @property
    def module(self) -> str:
        """The module's name, as peft's target_modules match it."""
        return self.name.rsplit(".", 1)[0]

    @property
    def in_out(self) -> tuple[int, int]:
        """(in_features, out_features) of a linear layer."""
        return (self.shape[0], self.shape[1]) if self.transposed else (self.shape[1], self.shape[0])

    def names(self) -> Iterator[str]:
        if "{i}" not in self.name:
            yield self.name
            return
        for i in range(self.copies):
            yield self.name.replace("{i}", str(i))


@dataclass(frozen=True)
class Model:
    dims: Dims
    tensors: tuple[Tensor, ...]
    counted: str = "analytic"  # or "meta device" for architectures counted by instantiating them

    @property
    def parameters(self) -> int:
        return sum(t.total for t in self.tensors)

    def of_kind(self, *kinds: str) -> list[Tensor]:
        return [t for t in self.tensors if t.kind in kinds]


class _Builder:
    """Collects tensors; `linear` adds a weight and its optional bias."""

    def __init__(self) -> None:
        self.tensors: list[Tensor] = []

    def add(self, name: str, shape: tuple[int, ...], kind: Kind, copies: int = 1, stack: str = "") -> None:
        self.tensors.append(Tensor(name, shape, kind, copies, stack=stack if copies > 1 or "{i}" in name else ""))

    def linear(
        self,
        name: str,
        fan_in: int,
        fan_out: int,
        bias: bool,
        copies: int = 1,
        *,
        conv1d: bool = False,
        keep_fp32: bool = False,
        stack: str = "",
    ) -> None:
        shape = (fan_in, fan_out) if conv1d else (fan_out, fan_in)
        layer_stack = stack if "{i}" in name else ""
        self.tensors.append(Tensor(f"{name}.weight", shape, "linear", copies, conv1d, keep_fp32, layer_stack))
        if bias:
            self.tensors.append(Tensor(f"{name}.bias", (fan_out,), "bias", copies, stack=layer_stack))

    def norm(self, name: str, size: int, bias: bool, copies: int = 1, stack: str = "") -> None:
        self.add(f"{name}.weight", (size,), "norm", copies, stack)
        if bias:
            self.add(f"{name}.bias", (size,), "norm", copies, stack)


def inventory(config: dict[str, Any]) -> Model:
    """Every parameter tensor of the model `config` describes (a `UserError` names a missing field)."""
    dims = read_dims(config)
    b = _Builder()
    builders = {
        "llama": _llama,
        "gpt2": _gpt2,
        "bloom": _bloom,
        "gpt_neox": _gpt_neox,
        "opt": _opt,
        "phi": _phi,
        "t5": _t5,
        "bart": _bart,
        "bert": _bert,
    }
    builders[dims.family](b, dims, config)
    return Model(dims, tuple(b.tensors))


def _llama(b: _Builder, d: Dims, config: dict[str, Any]) -> None:
    mt, h, n = d.model_type, d.hidden, d.layers
    attn_bias = bool(config.get("attention_bias", False)) and mt in ("llama", "gemma", "gemma2", "qwen3")
    mlp_bias = bool(config.get("mlp_bias", False)) and mt == "llama"
    layer, attn, mlp = "model.layers.{i}", "model.layers.{i}.self_attn", "model.layers.{i}.mlp"
    b.add("model.embed_tokens.weight", (d.vocab, h), "embedding")
    if mt == "phi3":
        b.linear(f"{attn}.o_proj", d.q_dim, h, False, n, stack="decoder")
        b.linear(f"{attn}.qkv_proj", h, d.q_dim + 2 * d.kv_dim, False, n, stack="decoder")
    else:
        qkv_bias = attn_bias or mt == "qwen2"  # Qwen2 always has q/k/v biases, never an o_proj bias
        b.linear(f"{attn}.q_proj", h, d.q_dim, qkv_bias, n, stack="decoder")
        b.linear(f"{attn}.k_proj", h, d.kv_dim, qkv_bias, n, stack="decoder")
        b.linear(f"{attn}.v_proj", h, d.kv_dim, qkv_bias, n, stack="decoder")
        b.linear(f"{attn}.o_proj", d.q_dim, h, attn_bias, n, stack="decoder")
    if mt == "qwen3":
        b.norm(f"{attn}.q_norm", d.head_dim, False, n, "decoder")
        b.norm(f"{attn}.k_norm", d.head_dim, False, n, "decoder")
    if d.experts:
        b.add(f"{mlp}.gate.weight", (d.experts, h), "router", n, "decoder")
        b.add(f"{mlp}.experts.gate_up_proj", (d.experts, 2 * d.ffn, h), "expert", n, "decoder")
        b.add(f"{mlp}.experts.down_proj", (d.experts, h, d.ffn), "expert", n, "decoder")
    elif mt == "phi3":
        b.linear(f"{mlp}.gate_up_proj", h, 2 * d.ffn, False, n, stack="decoder")
        b.linear(f"{mlp}.down_proj", d.ffn, h, False, n, stack="decoder")
    else:
        b.linear(f"{mlp}.gate_proj", h, d.ffn, mlp_bias, n, stack="decoder")
        b.linear(f"{mlp}.up_proj", h, d.ffn, mlp_bias, n, stack="decoder")
        b.linear(f"{mlp}.down_proj", d.ffn, h, mlp_bias, n, stack="decoder")
    norms = ["input_layernorm", "post_attention_layernorm"]
    if mt == "gemma2":
        norms += ["pre_feedforward_layernorm", "post_feedforward_layernorm"]
    for norm in norms:
        b.norm(f"{layer}.{norm}", h, False, n, "decoder")
    b.norm("model.norm", h, False)
    if not d.tied:
        b.add("lm_head.weight", (d.vocab, h), "head")


def _gpt2(b: _Builder, d: Dims, config: dict[str, Any]) -> None:
    h, n, layer = d.hidden, d.layers, "transformer.h.{i}"
    b.add("transformer.wte.weight", (d.vocab, h), "embedding")
    b.add("transformer.wpe.weight", (d.max_positions, h), "embedding")
    b.norm(f"{layer}.ln_1", h, True, n, "decoder")
    b.linear(f"{layer}.attn.c_attn", h, 3 * h, True, n, conv1d=True, stack="decoder")
    b.linear(f"{layer}.attn.c_proj", h, h, True, n, conv1d=True, stack="decoder")
    b.norm(f"{layer}.ln_2", h, True, n, "decoder")
    b.linear(f"{layer}.mlp.c_fc", h, d.ffn, True, n, conv1d=True, stack="decoder")
    b.linear(f"{layer}.mlp.c_proj", d.ffn, h, True, n, conv1d=True, stack="decoder")
    b.norm("transformer.ln_f", h, True)
    if not d.tied:
        b.add("lm_head.weight", (d.vocab, h), "head")


def _bloom(b: _Builder, d: Dims, config: dict[str, Any]) -> None:
    h, n, layer = d.hidden, d.layers, "transformer.h.{i}"
    b.add("transformer.word_embeddings.weight", (d.vocab, h), "embedding")
    b.norm("transformer.word_embeddings_layernorm", h, True)
    b.norm(f"{layer}.input_layernorm", h, True, n, "decoder")
    b.linear(f"{layer}.self_attention.query_key_value", h, 3 * h, True, n, stack="decoder")
    b.linear(f"{layer}.self_attention.dense", h, h, True, n, stack="decoder")
    b.norm(f"{layer}.post_attention_layernorm", h, True, n, "decoder")
    b.linear(f"{layer}.mlp.dense_h_to_4h", h, d.ffn, True, n, stack="decoder")
    b.linear(f"{layer}.mlp.dense_4h_to_h", d.ffn, h, True, n, stack="decoder")
    b.norm("transformer.ln_f", h, True)
    if not d.tied:
        b.add("lm_head.weight", (d.vocab, h), "head")


def _gpt_neox(b: _Builder, d: Dims, config: dict[str, Any]) -> None:
    h, n, layer = d.hidden, d.layers, "gpt_neox.layers.{i}"
    bias = bool(config.get("attention_bias", True))
    b.add("gpt_neox.embed_in.weight", (d.vocab, h), "embedding")
    b.norm(f"{layer}.input_layernorm", h, True, n, "decoder")
    b.norm(f"{layer}.post_attention_layernorm", h, True, n, "decoder")
    b.linear(f"{layer}.attention.query_key_value", h, 3 * h, bias, n, stack="decoder")
    b.linear(f"{layer}.attention.dense", h, h, bias, n, stack="decoder")
    b.linear(f"{layer}.mlp.dense_h_to_4h", h, d.ffn, True, n, stack="decoder")
    b.linear(f"{layer}.mlp.dense_4h_to_h", d.ffn, h, True, n, stack="decoder")
    b.norm("gpt_neox.final_layer_norm", h, True)
    if not d.tied:
        b.add("lm_head.weight", (d.vocab, h), "head")


def _opt(b: _Builder, d: Dims, config: dict[str, Any]) -> None:
    h, n, layer = d.hidden, d.layers, "model.decoder.layers.{i}"
    proj = int(config.get("word_embed_proj_dim") or h)
    bias = bool(config.get("enable_bias", True))
    affine = bool(config.get("layer_norm_elementwise_affine", True))
    b.add("model.decoder.embed_tokens.weight", (d.vocab, proj), "embedding")
    b.add("model.decoder.embed_positions.weight", (d.max_positions + 2, h), "embedding")  # OPT offsets positions by 2
    if proj != h:
        b.linear("model.decoder.project_out", h, proj, False)
        b.linear("model.decoder.project_in", proj, h, False)
    if config.get("do_layer_norm_before", True) and not config.get("_remove_final_layer_norm", False) and affine:
        b.norm("model.decoder.final_layer_norm", h, True)
    for name in ("k_proj", "v_proj", "q_proj", "out_proj"):
        b.linear(f"{layer}.self_attn.{name}", h, h, bias, n, stack="decoder")
    if affine:
        b.norm(f"{layer}.self_attn_layer_norm", h, True, n, "decoder")
    b.linear(f"{layer}.fc1", h, d.ffn, bias, n, stack="decoder")
    b.linear(f"{layer}.fc2", d.ffn, h, bias, n, stack="decoder")
    if affine:
        b.norm(f"{layer}.final_layer_norm", h, True, n, "decoder")
    if not d.tied:
        b.add("lm_head.weight", (d.vocab, proj), "head")


def _phi(b: _Builder, d: Dims, config: dict[str, Any]) -> None:
    h, n, attn = d.hidden, d.layers, "model.layers.{i}.self_attn"
    b.add("model.embed_tokens.weight", (d.vocab, h), "embedding")
    b.linear(f"{attn}.q_proj", h, d.q_dim, True, n, stack="decoder")
    b.linear(f"{attn}.k_proj", h, d.kv_dim, True, n, stack="decoder")
    b.linear(f"{attn}.v_proj", h, d.kv_dim, True, n, stack="decoder")
    b.linear(f"{attn}.dense", d.q_dim, h, True, n, stack="decoder")
    if config.get("qk_layernorm", False):
        b.norm(f"{attn}.q_layernorm", d.head_dim, True, n, "decoder")
        b.norm(f"{attn}.k_layernorm", d.head_dim, True, n, "decoder")
    b.linear("model.layers.{i}.mlp.fc1", h, d.ffn, True, n, stack="decoder")
    b.linear("model.layers.{i}.mlp.fc2", d.ffn, h, True, n, stack="decoder")
    b.norm("model.layers.{i}.input_layernorm", h, True, n, "decoder")
    b.norm("model.final_layernorm", h, True)
    if not d.tied:
        b.add("lm_head.weight", (d.vocab, h), "head")
        b.add("lm_head.bias", (d.vocab,), "head")


def _t5(b: _Builder, d: Dims, config: dict[str, Any]) -> None:
    h, inner = d.hidden, d.q_dim
    buckets = int(config.get("relative_attention_num_buckets", 32))
    b.add("shared.weight", (d.vocab, h), "embedding")
    for stack, layers in (("encoder", d.encoder_layers), ("decoder", d.layers)):
        block = f"{stack}.block.{{i}}"
        parts = ["SelfAttention"] if stack == "encoder" else ["SelfAttention", "EncDecAttention"]
        for idx, part in enumerate(parts):
            for name in ("q", "k", "v"):
                b.linear(f"{block}.layer.{idx}.{part}.{name}", h, inner, False, layers, stack=stack)
            b.linear(f"{block}.layer.{idx}.{part}.o", inner, h, False, layers, stack=stack)
            b.norm(f"{block}.layer.{idx}.layer_norm", h, False, layers, stack)
        ff = f"{block}.layer.{len(parts)}"
        if d.gated_mlp:
            b.linear(f"{ff}.DenseReluDense.wi_0", h, d.ffn, False, layers, stack=stack)
            b.linear(f"{ff}.DenseReluDense.wi_1", h, d.ffn, False, layers, stack=stack)
        else:
            b.linear(f"{ff}.DenseReluDense.wi", h, d.ffn, False, layers, stack=stack)
        b.linear(f"{ff}.DenseReluDense.wo", d.ffn, h, False, layers, keep_fp32=True, stack=stack)
        b.norm(f"{ff}.layer_norm", h, False, layers, stack)
        # Only the first block of each stack owns the relative position buckets.
        b.add(f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight", (buckets, d.heads), "embedding")
        b.norm(f"{stack}.final_layer_norm", h, False)
    # transformers 5 always ties T5's lm_head to `shared`, even for T5 v1.1 / FLAN-T5 configs that say
    # tie_word_embeddings: false (it keeps that flag only to decide whether to rescale the decoder output).


def _bart(b: _Builder, d: Dims, config: dict[str, Any]) -> None:
    h = d.hidden
    b.add("model.shared.weight", (d.vocab, h), "embedding")
    for stack, layers in (("encoder", d.encoder_layers), ("decoder", d.layers)):
        base = f"model.{stack}"
        ffn = int(config.get(f"{stack}_ffn_dim") or d.ffn)
        b.add(f"{base}.embed_positions.weight", (d.max_positions + 2, h), "embedding")  # BART offsets by 2
        attns = ["self_attn"] if stack == "encoder" else ["self_attn", "encoder_attn"]
        for attn in attns:
            for name in ("k_proj", "v_proj", "q_proj", "out_proj"):
                b.linear(f"{base}.layers.{{i}}.{attn}.{name}", h, h, True, layers, stack=stack)
            b.norm(f"{base}.layers.{{i}}.{attn}_layer_norm", h, True, layers, stack)
        b.linear(f"{base}.layers.{{i}}.fc1", h, ffn, True, layers, stack=stack)
        b.linear(f"{base}.layers.{{i}}.fc2", ffn, h, True, layers, stack=stack)
        b.norm(f"{base}.layers.{{i}}.final_layer_norm", h, True, layers, stack)
        b.norm(f"{base}.layernorm_embedding", h, True)
    if not d.tied:
        b.add("lm_head.weight", (d.vocab, h), "head")


def _bert(b: _Builder, d: Dims, config: dict[str, Any]) -> None:
    """BertForMaskedLM (the head tunekit trains): no pooler, decoder tied to the word embeddings."""
    h, n, layer = d.hidden, d.layers, "bert.encoder.layer.{i}"
    emb = "bert.embeddings"
    b.add(f"{emb}.word_embeddings.weight", (d.vocab, h), "embedding")
    b.add(f"{emb}.position_embeddings.weight", (d.max_positions, h), "embedding")
    b.add(f"{emb}.token_type_embeddings.weight", (int(config.get("type_vocab_size", 2)), h), "embedding")
    b.norm(f"{emb}.LayerNorm", h, True)
    for name in ("query", "key", "value"):
        b.linear(f"{layer}.attention.self.{name}", h, h, True, n, stack="decoder")
    b.linear(f"{layer}.attention.output.dense", h, h, True, n, stack="decoder")
    b.norm(f"{layer}.attention.output.LayerNorm", h, True, n, "decoder")
    b.linear(f"{layer}.intermediate.dense", h, d.ffn, True, n, stack="decoder")
    b.linear(f"{layer}.output.dense", d.ffn, h, True, n, stack="decoder")
    b.norm(f"{layer}.output.LayerNorm", h, True, n, "decoder")
    b.add("cls.predictions.bias", (d.vocab,), "bias")
    b.linear("cls.predictions.transform.dense", h, h, True)
    b.norm("cls.predictions.transform.LayerNorm", h, True)
    if not d.tied:
        b.add("cls.predictions.decoder.weight", (d.vocab, h), "head")
