"""Read the dimensions the estimator needs from a config.json dict, with transformers' defaults.

    >>> dims = read_dims({"model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
    ...     "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 1024})
    >>> dims.family, dims.kv_heads, dims.head_dim
    ('llama', 2, 16)

Pure Python: no torch, no transformers. The core sizes (hidden size, layers, heads, vocabulary, ffn
size) must be in the config, else a `UserError` names the missing field; everything else falls back
to the default of transformers' config class for that model type (a test checks these defaults
against transformers itself).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tunekit.errors import UserError

# Decoder-only models built like Llama: RMSNorm, rotary attention with optional GQA, gated MLP.
LLAMA_LIKE = ("llama", "mistral", "mixtral", "qwen2", "qwen3", "gemma", "gemma2", "phi3")
FAMILIES = (*LLAMA_LIKE, "gpt2", "bloom", "gpt_neox", "opt", "phi", "t5", "mt5", "bart", "bert")

# Defaults of the transformers config classes that matter here, per model type.
_TIED_BY_DEFAULT = {"gemma", "gemma2", "gpt2", "bloom", "opt", "t5", "mt5", "bart", "bert"}
_HEAD_DIM_DEFAULT = {"gemma": 256, "gemma2": 256, "qwen3": 128}
_KV_HEADS_DEFAULT = {"mistral": 8, "mixtral": 8, "qwen2": 32, "qwen3": 32, "gemma": 16, "gemma2": 4}
_ACT_DEFAULT = {
    "gemma": "gelu_pytorch_tanh",
    "gemma2": "gelu_pytorch_tanh",
    "gpt2": "gelu_new",
    "bloom": "bloom_gelu",
    "gpt_neox": "gelu",
    "opt": "relu",
    "phi": "gelu_new",
    "bart": "gelu",
    "bert": "gelu",
}
_DROPOUT_DEFAULT = {"gpt2": 0.1, "opt": 0.1, "t5": 0.1, "mt5": 0.1, "bart": 0.1, "bert": 0.1}


@dataclass(frozen=True)
class Dims:
    """The sizes of one model, as the estimator uses them (decoder stack for encoder-decoders)."""

    model_type: str
    family: str  # one of FAMILIES, or "generic" for a model counted on the meta device
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    ffn: int
    vocab: int
    max_positions: int
    gated_mlp: bool
    activation: str
    norm: str  # "rms" or "layer"
    tied: bool
    encoder_layers: int = 0  # encoder-decoder models only
    experts: int = 0  # mixture-of-experts: experts per layer, and how many each token uses
    experts_per_token: int = 0
    dropout: float = 0.0  # residual / hidden-state dropout while training
    attn_dropout: float = 0.0
    needs_eager: bool = False  # no SDPA path: logit soft-capping (Gemma 2), ALiBi (BLOOM)
    softcap: bool = False  # tanh soft-capping of attention scores and final logits (Gemma 2)

    @property
    def encoder_decoder(self) -> bool:
        return self.encoder_layers > 0

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim


class _Config:
    """A config dict read field by field, naming the model type when a needed field is missing."""

    def __init__(self, raw: dict[str, Any]) -> None:
        self.raw = raw
        self.model_type = str(raw.get("model_type") or "")

    def need(self, *names: str) -> int:
        for name in names:
            value = self.raw.get(name)
            if value is not None:
                return _positive_int(value, name, self.model_type)
        raise UserError(f"config for {self.model_type or 'this model'} lacks {names[0]}, which the estimate needs")

    def get(self, name: str, default: Any) -> Any:
        value = self.raw.get(name)
        return default if value is None else value


def _positive_int(value: Any, name: str, model_type: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"config for {model_type}: {name} must be a positive integer, got {value!r}")
    return value


def text_config(raw: dict[str, Any]) -> dict[str, Any]:
    """The language-model part of a config (multimodal configs nest it under text_config)."""
    inner = raw.get("text_config")
    if raw.get("model_type") not in FAMILIES and isinstance(inner, dict) and inner.get("model_type") in FAMILIES:
        return inner
    return raw


def read_dims(raw: dict[str, Any]) -> Dims:
    """Dims of a model type this module knows (see FAMILIES); `UserError` for a missing field."""
    c = _Config(raw)
    if c.model_type in LLAMA_LIKE:
        return _llama_like(c)
    readers = {
        "gpt2": _gpt2,
        "bloom": _bloom,
        "gpt_neox": _gpt_neox,
        "opt": _opt,
        "phi": _phi,
        "t5": _t5,
        "mt5": _t5,
        "bart": _bart,
        "bert": _bert,
    }
    if c.model_type not in readers:
        raise UserError(f"no analytic model of architecture {c.model_type!r}")
    return readers[c.model_type](c)


def _common(c: _Config) -> dict[str, Any]:
    return {
        "model_type": c.model_type,
        "tied": bool(c.get("tie_word_embeddings", c.model_type in _TIED_BY_DEFAULT)),
        "activation": str(c.get("hidden_act", c.get("hidden_activation", _ACT_DEFAULT.get(c.model_type, "silu")))),
    }


def _llama_like(c: _Config) -> Dims:
    hidden, heads = c.need("hidden_size"), c.need("num_attention_heads")
    act_key = "hidden_activation" if c.model_type in ("gemma", "gemma2") else "hidden_act"
    common = _common(c)
    common["activation"] = str(c.get(act_key, _ACT_DEFAULT.get(c.model_type, "silu")))
    experts = int(c.get("num_local_experts", 8 if c.model_type == "mixtral" else 0))
    return Dims(
        **common,
        family="llama",
        hidden=hidden,
        layers=c.need("num_hidden_layers"),
        heads=heads,
        kv_heads=int(c.get("num_key_value_heads", _KV_HEADS_DEFAULT.get(c.model_type, heads))),
        head_dim=int(c.get("head_dim", _HEAD_DIM_DEFAULT.get(c.model_type, hidden // heads))),
        ffn=c.need("intermediate_size"),
        vocab=c.need("vocab_size"),
        max_positions=int(c.get("max_position_embeddings", 2048)),
        gated_mlp=True,
        norm="rms",
        experts=experts,
        experts_per_token=int(c.get("num_experts_per_tok", 2)) if experts else 0,
        attn_dropout=float(c.get("attention_dropout", 0.0)),
        dropout=float(c.get("resid_pdrop", 0.0)),
        needs_eager=c.get("attn_logit_softcapping", 50.0 if c.model_type == "gemma2" else None) is not None,
        softcap=c.get("attn_logit_softcapping", 50.0 if c.model_type == "gemma2" else None) is not None,
    )


def _plain(c: _Config, family: str, hidden: int, heads: int, **fields: Any) -> Dims:
    """A layer-norm, plain-MLP, multi-head family; `fields` are the ones that differ (they win)."""
    return Dims(
        **{
            **_common(c),
            "family": family,
            "hidden": hidden,
            "heads": heads,
            "kv_heads": heads,
            "head_dim": hidden // heads,
            "vocab": c.need("vocab_size"),
            "gated_mlp": False,
            "norm": "layer",
            **fields,
        }
    )


def _gpt2(c: _Config) -> Dims:
    hidden = c.need("n_embd", "hidden_size")
    return _plain(
        c,
        "gpt2",
        hidden,
        c.need("n_head", "num_attention_heads"),
        activation=str(c.get("activation_function", "gelu_new")),
        layers=c.need("n_layer", "num_hidden_layers"),
        ffn=int(c.get("n_inner", 4 * hidden)),
        max_positions=int(c.get("n_positions", 1024)),
        dropout=float(c.get("resid_pdrop", 0.1)),
        attn_dropout=float(c.get("attn_pdrop", 0.1)),
    )


def _bloom(c: _Config) -> Dims:
    hidden = c.need("hidden_size", "n_embed")
    return _plain(
        c,
        "bloom",
        hidden,
        c.need("n_head", "num_attention_heads"),
        layers=c.need("n_layer", "num_hidden_layers"),
        ffn=4 * hidden,
        max_positions=0,  # ALiBi: no position table
        needs_eager=True,  # transformers has no SDPA path for ALiBi
        dropout=float(c.get("hidden_dropout", 0.0)),
        attn_dropout=float(c.get("attention_dropout", 0.0)),
    )


def _gpt_neox(c: _Config) -> Dims:
    return _plain(
        c,
        "gpt_neox",
        c.need("hidden_size"),
        c.need("num_attention_heads"),
        layers=c.need("num_hidden_layers"),
        ffn=c.need("intermediate_size"),
        max_positions=int(c.get("max_position_embeddings", 2048)),
        dropout=float(c.get("hidden_dropout", 0.0)),
        attn_dropout=float(c.get("attention_dropout", 0.0)),
    )


def _opt(c: _Config) -> Dims:
    return _plain(
        c,
        "opt",
        c.need("hidden_size"),
        c.need("num_attention_heads"),
        activation=str(c.get("activation_function", "relu")),
        layers=c.need("num_hidden_layers"),
        ffn=c.need("ffn_dim"),
        max_positions=int(c.get("max_position_embeddings", 2048)),
        dropout=float(c.get("dropout", 0.1)),
        attn_dropout=float(c.get("attention_dropout", 0.0)),
    )


def _phi(c: _Config) -> Dims:
    heads = c.need("num_attention_heads")
    return _plain(
        c,
        "phi",
        c.need("hidden_size"),
        heads,
        kv_heads=int(c.get("num_key_value_heads", heads)),
        layers=c.need("num_hidden_layers"),
        ffn=c.need("intermediate_size"),
        max_positions=int(c.get("max_position_embeddings", 2048)),
        dropout=float(c.get("resid_pdrop", 0.0)),
        attn_dropout=float(c.get("attention_dropout", 0.0)),
    )


def _t5(c: _Config) -> Dims:
    heads = c.need("num_heads")
    proj = str(c.get("feed_forward_proj", "relu"))
    gated = proj.startswith("gated-")
    act = proj.removeprefix("gated-")
    layers = c.need("num_layers")
    return Dims(
        model_type=c.model_type,
        tied=True,  # transformers 5 ties T5's lm_head whatever the config says
        activation="gelu_new" if act == "gelu" and gated else act,
        family="t5",
        hidden=c.need("d_model"),
        layers=int(c.get("num_decoder_layers", layers)),
        encoder_layers=layers,
        heads=heads,
        kv_heads=heads,
        head_dim=c.need("d_kv"),
        ffn=c.need("d_ff"),
        vocab=c.need("vocab_size"),
        max_positions=0,  # relative position buckets, see params
        gated_mlp=gated,
        norm="rms",
        dropout=float(c.get("dropout_rate", 0.1)),
        attn_dropout=float(c.get("dropout_rate", 0.1)),
    )


def _bart(c: _Config) -> Dims:
    return _plain(
        c,
        "bart",
        c.need("d_model"),
        c.need("decoder_attention_heads", "encoder_attention_heads"),
        activation=str(c.get("activation_function", "gelu")),
        layers=c.need("decoder_layers"),
        encoder_layers=c.need("encoder_layers"),
        ffn=c.need("decoder_ffn_dim", "encoder_ffn_dim"),
        max_positions=int(c.get("max_position_embeddings", 1024)),
        dropout=float(c.get("dropout", 0.1)),
        attn_dropout=float(c.get("attention_dropout", 0.0)),
    )


def _bert(c: _Config) -> Dims:
    return _plain(
        c,
        "bert",
        c.need("hidden_size"),
        c.need("num_attention_heads"),
        layers=c.need("num_hidden_layers"),
        ffn=c.need("intermediate_size"),
        max_positions=int(c.get("max_position_embeddings", 512)),
        dropout=float(c.get("hidden_dropout_prob", 0.1)),
        attn_dropout=float(c.get("attention_probs_dropout_prob", 0.1)),
    )


def generic_dims(raw: dict[str, Any], layers_hint: int = 0) -> Dims:
    """Best-effort Dims of an architecture without an analytic model (activations are approximate)."""
    c = _Config(raw)
    hidden = c.need("hidden_size", "n_embd", "d_model", "dim")
    heads = c.need("num_attention_heads", "n_head", "num_heads", "n_heads")
    ffn = raw.get("intermediate_size") or raw.get("ffn_dim") or raw.get("d_ff") or raw.get("n_inner") or 4 * hidden
    layers = raw.get("num_hidden_layers") or raw.get("n_layer") or raw.get("num_layers") or layers_hint
    if not layers:
        raise UserError(f"config for {c.model_type or 'this model'} lacks num_hidden_layers, which the estimate needs")
    return Dims(
        model_type=c.model_type or "unknown",
        family="generic",
        hidden=hidden,
        layers=int(layers),
        heads=heads,
        kv_heads=int(raw.get("num_key_value_heads") or heads),
        head_dim=int(raw.get("head_dim") or hidden // heads),
        ffn=int(ffn),
        vocab=c.need("vocab_size", "padded_vocab_size"),
        max_positions=int(raw.get("max_position_embeddings") or 0),
        gated_mlp="intermediate_size" in raw,
        activation=str(raw.get("hidden_act") or "silu"),
        norm="rms",
        tied=bool(raw.get("tie_word_embeddings", False)),
    )
