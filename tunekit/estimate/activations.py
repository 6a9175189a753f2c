"""Activation memory: the tensors autograd saves for backward, replayed op by op on paper.

    >>> from tunekit.estimate.arch import read_dims
    >>> from tunekit.estimate.activations import Regime, activation_bytes
    >>> dims = read_dims({"model_type": "llama", "hidden_size": 64, "intermediate_size": 160,
    ...     "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 1000})
    >>> act = activation_bytes(dims, Regime(act=4, stream=4), batch=2, seq=32)
    >>> act.saved > 0 and act.loss_transient == 8 * 1000 * 64
    True

A `Tape` walks one transformer layer the way the transformers code runs it and records what each op
keeps for its backward, in bytes per token: a linear layer keeps its input only when its weight
trains, RMSNorm keeps an fp32 copy of its input, SiLU keeps its input, SDPA keeps q, k, v, its output
and the log-sum-exp, eager attention keeps the fp32 softmax (the s^2 term), LoRA keeps its dropout
mask and its cast input, and so on. Tensors saved by two ops are counted once. The dtypes follow the
precision regime (pure half, autocast, fp32, k-bit with peft's fp32 upcast). Tests check the result
against the tensors PyTorch really saves (saved-tensor hooks) on tiny models.

Pure Python arithmetic: no torch.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

from tunekit.estimate.arch import Dims

FP32 = 4


@dataclass(frozen=True)
class Regime:
    """How a training run holds and computes its tensors."""

    act: int  # bytes per element of matmul outputs (the compute dtype)
    stream: int  # bytes per element of the residual stream (the embedding's dtype)
    autocast: bool = False  # torch.autocast casts matmul inputs to `act`
    norm_weight: int = 0  # bytes of norm weights; 0: same as the stream
    adapter: int = FP32  # bytes of LoRA weights
    quantized: str = "none"  # "int8" / "int4": frozen bitsandbytes linears
    attention: str = "sdpa"  # sdpa | eager | flash_attention_2
    grad_checkpointing: bool = False
    padded: bool = True  # batches carry a padding mask (SDPA then repeats GQA heads)
    cpu: bool = False  # replay the CPU kernels: dropout keeps a scaled copy, not a bool mask; SDPA
    # with dropout or an additive bias falls back to the math kernel


@dataclass(frozen=True)
class Plan:
    """What trains: full weights (`full_layers` of the top layers), LoRA ranks by module, norms."""

    full_layers: int = 0  # layers whose weights all train (all layers for full fine-tuning)
    lora: Callable[[str], int] = field(default=lambda name: 0)  # module name -> LoRA rank (0: none)
    lora_dropout: float = 0.0
    head_trains: bool = False
    grad_below: bool = True  # a gradient flows through frozen layers (LoRA, soft prompts; not freeze)
    extra_tokens: int = 0  # soft-prompt tokens prepended to every sequence
    prefix_tokens: int = 0  # prefix-tuning key/value positions per layer


@dataclass(frozen=True)
class Activations:
    saved: int  # bytes autograd holds at the end of the forward pass
    loss_transient: int  # extra bytes at the start of backward: the logits' gradients (fp32 for LMs)
    recompute: int  # gradient checkpointing: one layer's activations, rebuilt during backward
    layer: int = 0  # one layer's activations: what is still alive when the last gradients are made


@dataclass(frozen=True)
class _T:
    key: int
    elems: float  # elements per token
    nbytes: int


class Tape:
    """Records the bytes per token that one forward pass leaves saved for backward."""

    def __init__(self, regime: Regime, plan: Plan, trains: bool, seq: int) -> None:
        self.r, self.plan, self.trains, self.seq = regime, plan, trains, seq
        self.softcap = False  # Gemma 2 soft-caps attention scores and logits with tanh
        self.prefix = plan.prefix_tokens  # prefix-tuning key/value positions in this layer
        self.saved: dict[int, float] = {}
        self._keys = itertools.count()

    def new(self, elems: float, nbytes: int) -> _T:
        return _T(next(self._keys), elems, nbytes)

    def save(self, *tensors: _T) -> None:
        for t in tensors:
            self.saved[t.key] = t.elems * t.nbytes

    def total(self) -> float:
        return sum(self.saved.values())

    def cast(self, x: _T, nbytes: int) -> _T:
        return x if x.nbytes == nbytes else self.new(x.elems, nbytes)

    def norm_bytes(self) -> int:
        return self.r.norm_weight or self.r.stream

    # -- layers ---------------------------------------------------------------------------------
    def linear(self, x: _T, out: int, name: str) -> _T:
        rank = self.plan.lora(name)
        quantized = self.r.quantized != "none" and not self.trains
        if quantized:
            if self.r.quantized == "int8":
                self.save(x)  # bitsandbytes' int8 matmul keeps its input for the input gradient
            result = self.new(out, x.nbytes)  # bitsandbytes casts the output back to the input dtype
        else:
            seen = self.cast(x, self.r.act) if self.r.autocast else x
            if self.trains:
                self.save(seen)
            result = self.new(out, seen.nbytes)
        if rank:
            self._lora(x, rank)
            result = self.new(out, result.nbytes)  # peft casts the sum back to the base layer's dtype
        return result

    def _lora(self, x: _T, rank: int) -> None:
        xa = self.cast(x, self.r.adapter)  # peft casts the input to the adapter's dtype
        if self.plan.lora_dropout > 0:
            self.save(self.new(x.elems, xa.nbytes if self.r.cpu else 1))
            xa = self.new(x.elems, xa.nbytes)
        seen = self.cast(xa, self.r.act) if self.r.autocast else xa
        self.save(seen, self.new(rank, seen.nbytes))  # lora_A's input, lora_B's input

    def rmsnorm(self, x: _T, style: str = "llama") -> _T:
        """transformers' RMSNorm: fp32 statistics; `gemma` scales by (1 + w) in fp32, `t5` keeps x."""
        self.save(self.cast(x, FP32), self.new(1, FP32))  # the fp32 input pow() and mul() keep, and 1/rms
        if style == "t5":
            self.save(x)  # T5 multiplies the un-cast input by 1/rms
        normed = self.new(x.elems, FP32)
        if style == "gemma":
            if self.trains:
                self.save(normed)
            return self.new(x.elems, x.nbytes)
        normed = self.cast(normed, x.nbytes if style == "llama" else self.norm_bytes())
        if self.trains:
            self.save(normed)
        return self.new(x.elems, max(x.nbytes, self.norm_bytes()) if style == "llama" else self.norm_bytes())

    def layernorm(self, x: _T) -> _T:
        # CUDA autocast runs layer_norm in fp32 (CPU autocast does not)
        seen = self.cast(x, FP32) if self.r.autocast and not self.r.cpu else x
        self.save(seen, self.new(2, FP32))  # input, mean and 1/std
        return self.new(x.elems, seen.nbytes)

    def act(self, x: _T, kind: str) -> _T:
        out = self.new(x.elems, x.nbytes)
        if kind == "relu":
            self.save(out)
        elif kind in ("gelu_new", "gelu_fast"):
            # python tanh-GELU: keeps x, tanh(.), 0.5 * x and 1 + tanh(.)
            self.save(x, *(self.new(x.elems, x.nbytes) for _ in range(3)))
        else:
            self.save(x)  # silu, gelu, gelu_pytorch_tanh, bloom's gelu keep their input
        return out

    def mul(self, a: _T, b: _T) -> _T:
        self.save(a, b)
        return self.new(a.elems, max(a.nbytes, b.nbytes))

    def dropout(self, x: _T, p: float) -> _T:
        if p <= 0:
            return x
        self.save(self.new(x.elems, x.nbytes if self.r.cpu else 1))  # a bool mask on CUDA
        return self.new(x.elems, x.nbytes)

    def attention(self, q: _T, k: _T, v: _T, heads: int, kv_len: int, p: float, bias: bool = False) -> _T:
        """Self or cross attention over `kv_len` key positions; returns the output o_proj reads."""
        impl = self.r.attention
        if self.r.autocast:
            q, k, v = (self.cast(t, self.r.act) for t in (q, k, v))
        if impl != "flash_attention_2" and (impl == "eager" or self.r.padded) and k.elems < q.elems:
            k, v = self.new(q.elems, k.nbytes), self.new(q.elems, v.nbytes)  # repeat_kv for GQA
        out = self.new(q.elems, q.nbytes)
        if impl == "sdpa" and self.r.cpu and (p > 0 or bias):
            # PyTorch's CPU fallback computes explicit fp32 scores: q, k, v copies, softmax, dropout
            scores = heads * kv_len
            self.save(*(self.new(t.elems, FP32) for t in (q, k, v)), self.new(scores, FP32))
            if p > 0:
                self.save(self.new(scores, FP32), self.new(scores, FP32))  # dropout mask, output
            return out
        self.save(q, k, v)
        if impl == "eager":
            scores = heads * kv_len
            if self.softcap:  # tanh soft-capping of the scores keeps its output
                self.save(self.new(scores, q.nbytes))
            softmax = self.new(scores, FP32)  # transformers runs the softmax in fp32
            self.save(softmax)
            probs = self.cast(softmax, q.nbytes)
            probs = self.dropout(probs, p)
            self.save(probs)
            out = self.new(q.elems, q.nbytes)  # transpose(1, 2).contiguous() for o_proj
            self.save(out)
            return out
        self.save(out, self.new(heads, FP32))  # output, log-sum-exp
        if bias:  # T5's position bias, merged with the padding mask, kept per layer
            self.save(self.new(heads * kv_len, q.nbytes))
        elif impl == "sdpa" and self.r.padded:
            # SDPA turns the boolean padding mask into an additive one of the query dtype, per call
            self.save(self.new(kv_len, q.nbytes))
        return out


def activation_bytes(
    dims: Dims,
    regime: Regime,
    batch: int,
    seq: int,
    plan: Plan | None = None,
    cast_weight_elems: int = 0,
    vocab_logits: bool = True,
) -> Activations:
    """Saved activations of one micro-batch of `batch` sequences of `seq` tokens.

    `cast_weight_elems`: elements of fp32 weights that autocast copies to half precision and keeps
    for backward (every linear under fp16 AMP over fp32 weights; the fp32 lm_head after peft's
    k-bit preparation), counted once per forward.
    """
    plan = plan or Plan(full_layers=dims.layers + dims.encoder_layers, head_trains=True)
    # Soft prompts lengthen the encoder's input (the only input, for decoder-only models).
    enc_seq = seq + plan.extra_tokens
    dec_seq = seq if dims.encoder_decoder else enc_seq
    layer_fn = _LAYERS.get(dims.family, _llama_layer)

    def one(trains: bool, seq_len: int, encoder: bool = False) -> float:
        tape = Tape(regime, plan, trains, seq_len)
        tape.softcap = dims.softcap
        tape.prefix = 0 if encoder else plan.prefix_tokens  # peft's prefixes enter through the decoder cache
        layer_fn(tape, dims, encoder=encoder)
        return batch * seq_len * tape.total()

    trained = min(plan.full_layers, dims.layers)
    # Layers below the lowest trained one keep nothing unless a gradient flows through them anyway
    # (LoRA, soft prompts): freezing the bottom of the model saves their activations too.
    frozen = one(False, dec_seq) if plan.grad_below else 0.0
    layers = [one(True, dec_seq)] * trained + [frozen] * (dims.layers - trained)
    inputs = [batch * dec_seq * dims.hidden * regime.stream] * dims.layers
    if dims.encoder_decoder:
        enc_trains = plan.full_layers > dims.layers
        encoder = one(enc_trains, enc_seq, encoder=True) if enc_trains or plan.grad_below else 0.0
        layers += [encoder] * dims.encoder_layers
        inputs += [batch * enc_seq * dims.hidden * regime.stream] * dims.encoder_layers
    per_layer = max(layers, default=0.0)
    # Under gradient checkpointing each layer keeps only its input; one layer is recomputed at a time.
    body = sum(inputs) if regime.grad_checkpointing else sum(layers)
    head = batch * dec_seq * _head_bytes(dims, regime, plan, vocab_logits)
    copies = cast_weight_elems * regime.act if regime.autocast else 0
    return Activations(
        saved=int(body + head + copies),
        loss_transient=batch * dec_seq * 2 * _loss_bytes(dims, regime) * dims.vocab if vocab_logits else 0,
        recompute=int(per_layer) if regime.grad_checkpointing else 0,
        layer=int(per_layer),
    )


def _loss_bytes(dims: Dims, regime: Regime) -> int:
    """Causal LMs upcast logits to fp32 for the loss; T5, BART and BERT do not, but autocast does."""
    return FP32 if regime.autocast or dims.family not in ("t5", "bart", "bert") else regime.act


def _head_bytes(dims: Dims, regime: Regime, plan: Plan, vocab_logits: bool = True) -> float:
    """Embedding-side norms, final norm, output projection and the loss's fp32 log-softmax, per token."""
    tape = Tape(regime, plan, plan.head_trains, 0)
    x = tape.new(dims.hidden, regime.stream)
    # BLOOM, BART (twice: encoder and decoder) and BERT normalise the embeddings.
    for _ in range({"bloom": 1, "bert": 1, "bart": 2}.get(dims.family, 0)):
        tape.layernorm(tape.new(dims.hidden, regime.stream))
    # Dropout on the embeddings (and T5's after each stack's final norm).
    for _ in range({"gpt2": 1, "bert": 1, "bart": 2, "t5": 4, "phi": 1, "gpt_neox": 1}.get(dims.family, 0)):
        tape.dropout(tape.new(dims.hidden, regime.stream), dims.dropout)
    if dims.family not in ("bart", "bert"):  # post-norm models have no final norm
        x = tape.rmsnorm(x, "t5" if dims.family == "t5" else "llama") if dims.norm == "rms" else tape.layernorm(x)
    if dims.family == "bert":  # the MLM head's transform: dense, GELU, LayerNorm
        x = tape.layernorm(tape.act(tape.linear(x, dims.hidden, "cls.predictions.transform.dense"), "gelu"))
    if tape.trains or not vocab_logits:
        tape.save(tape.cast(x, regime.act) if regime.autocast else x)
    if not vocab_logits:
        return tape.total()
    if dims.softcap:
        tape.save(tape.new(dims.vocab, regime.act))  # tanh(logits / cap)
    tape.save(tape.new(dims.vocab, _loss_bytes(dims, regime)))  # log_softmax's output, kept for backward
    tape.save(tape.new(1, 8))  # the int64 labels
    return tape.total()


# -- families -----------------------------------------------------------------------------------
def _attn(
    tape: Tape,
    x: _T,
    d: Dims,
    prefix: str,
    names: tuple[str, ...],
    kv_from: _T | None = None,
    rope: bool = True,
    bias: bool = False,
) -> _T:
    """Projections, attention and output projection; `names` = (q, k, v, o) or (qkv, o)."""
    src = kv_from or x
    kv_len = tape.seq + tape.prefix
    if len(names) == 2:
        qkv = tape.linear(x, d.q_dim + 2 * d.kv_dim, f"{prefix}.{names[0]}")
        q, k, v = tape.new(d.q_dim, qkv.nbytes), tape.new(d.kv_dim, qkv.nbytes), tape.new(d.kv_dim, qkv.nbytes)
    else:
        q = tape.linear(x, d.q_dim, f"{prefix}.{names[0]}")
        k = tape.linear(src, d.kv_dim, f"{prefix}.{names[1]}")
        v = tape.linear(src, d.kv_dim, f"{prefix}.{names[2]}")
    if rope:  # rotary embeddings write new q and k tensors
        q, k = tape.new(q.elems, q.nbytes), tape.new(k.elems, k.nbytes)
    out = tape.attention(q, k, v, d.heads, kv_len, d.attn_dropout, bias=bias)
    return tape.linear(out, d.hidden, f"{prefix}.{names[-1]}")


def _gated_mlp(tape: Tape, x: _T, d: Dims, prefix: str, fused: bool = False) -> _T:
    if fused:  # Phi-3: one gate_up_proj; the activation and the product keep views of its output
        both = tape.linear(x, 2 * d.ffn, f"{prefix}.gate_up_proj")
        tape.save(both)
        activated = tape.new(d.ffn, both.nbytes)
        tape.save(activated)
        hidden = tape.new(d.ffn, both.nbytes)
    else:
        gate = tape.linear(x, d.ffn, f"{prefix}.gate_proj")
        up = tape.linear(x, d.ffn, f"{prefix}.up_proj")
        hidden = tape.mul(tape.act(gate, d.activation), up)
    return tape.linear(hidden, d.hidden, f"{prefix}.down_proj")


def _moe_mlp(tape: Tape, x: _T, d: Dims, prefix: str) -> _T:
    """Mixtral: a router, then each token through `experts_per_token` gated experts."""
    tape.linear(x, d.experts, f"{prefix}.gate")
    tape.save(tape.new(d.experts, FP32))  # router softmax
    k = d.experts_per_token
    routed = tape.new(d.hidden * k, x.nbytes)  # the tokens gathered for each expert
    if tape.trains:
        tape.save(routed)
    gate_up = tape.new(2 * d.ffn * k, x.nbytes)
    tape.save(gate_up)  # the activation and the product keep views of it
    hidden = tape.new(d.ffn * k, x.nbytes)
    tape.save(hidden)
    if tape.trains:
        tape.save(tape.new(d.ffn * k, x.nbytes))  # down_proj's input
    tape.save(tape.new(d.hidden * k, x.nbytes))  # expert outputs, scaled by the routing weights
    return tape.new(d.hidden, x.nbytes)


def _llama_layer(tape: Tape, d: Dims, encoder: bool = False) -> None:
    mt, base = d.model_type, "model.layers.{i}"
    style = "gemma" if mt in ("gemma", "gemma2") else "llama"
    x = tape.new(d.hidden, tape.r.stream)
    h = tape.rmsnorm(x, style)
    names = ("qkv_proj", "o_proj") if mt == "phi3" else ("q_proj", "k_proj", "v_proj", "o_proj")
    attn = _attn(tape, h, d, f"{base}.self_attn", names)
    if mt == "qwen3":  # per-head q/k RMSNorm
        tape.rmsnorm(tape.new(d.q_dim, attn.nbytes))
        tape.rmsnorm(tape.new(d.kv_dim, attn.nbytes))
    if mt == "gemma2":
        attn = tape.rmsnorm(attn, style)
    x = tape.new(d.hidden, max(x.nbytes, attn.nbytes))
    h = tape.rmsnorm(x, style)
    out = _moe_mlp(tape, h, d, f"{base}.mlp") if d.experts else _gated_mlp(tape, h, d, f"{base}.mlp", mt == "phi3")
    if mt == "gemma2":
        tape.rmsnorm(out, style)


def _gpt2_layer(tape: Tape, d: Dims, encoder: bool = False) -> None:
    base = "transformer.h.{i}"
    x = tape.new(d.hidden, tape.r.stream)
    h = tape.layernorm(x)
    a = _attn(tape, h, d, f"{base}.attn", ("c_attn", "c_proj"), rope=False)
    tape.dropout(a, d.dropout)
    h = tape.layernorm(tape.new(d.hidden, x.nbytes))
    m = tape.linear(tape.act(tape.linear(h, d.ffn, f"{base}.mlp.c_fc"), d.activation), d.hidden, f"{base}.mlp.c_proj")
    tape.dropout(m, d.dropout)


def _parallel_layer(tape: Tape, d: Dims, encoder: bool = False) -> None:
    """GPT-NeoX (two norms) and Phi (one norm): attention and MLP read the same input."""
    names: tuple[str, ...]
    if d.family == "phi":
        base, names, fc = "model.layers.{i}", ("q_proj", "k_proj", "v_proj", "dense"), ("mlp.fc1", "mlp.fc2")
    else:
        base, names = "gpt_neox.layers.{i}", ("query_key_value", "dense")
        fc = ("mlp.dense_h_to_4h", "mlp.dense_4h_to_h")
    attn_prefix = f"{base}.self_attn" if d.family == "phi" else f"{base}.attention"
    x = tape.new(d.hidden, tape.r.stream)
    h = tape.layernorm(x)
    tape.dropout(_attn(tape, h, d, attn_prefix, names), d.dropout)
    h2 = h if d.family == "phi" else tape.layernorm(x)
    m = tape.act(tape.linear(h2, d.ffn, f"{base}.{fc[0]}"), d.activation)
    tape.dropout(tape.linear(m, d.hidden, f"{base}.{fc[1]}"), d.dropout)


def _bloom_layer(tape: Tape, d: Dims, encoder: bool = False) -> None:
    """BLOOM: ALiBi attention always runs the eager path (an s^2 score matrix per layer)."""
    base = "transformer.h.{i}"
    x = tape.new(d.hidden, tape.r.stream)
    h = tape.layernorm(x)
    qkv = tape.linear(h, 3 * d.hidden, f"{base}.self_attention.query_key_value")
    tape.save(tape.new(d.hidden, qkv.nbytes))  # q and k for the scores, v for the output: views of qkv
    scores = d.heads * tape.seq
    tape.save(tape.new(scores, FP32), tape.new(scores, qkv.nbytes))  # fp32 softmax, cast probabilities
    out = tape.new(d.hidden, qkv.nbytes)
    tape.save(out)
    tape.dropout(tape.linear(out, d.hidden, f"{base}.self_attention.dense"), d.dropout)
    h = tape.layernorm(tape.new(d.hidden, x.nbytes))
    m = tape.act(tape.linear(h, d.ffn, f"{base}.mlp.dense_h_to_4h"), "gelu")
    tape.dropout(tape.linear(m, d.hidden, f"{base}.mlp.dense_4h_to_h"), d.dropout)


def _post_norm_layer(tape: Tape, d: Dims, encoder: bool = False) -> None:
    """OPT (pre- or post-norm), BART and BERT: attention, dropout, add, LayerNorm, MLP."""
    if d.family == "bert":
        base = "bert.encoder.layer.{i}"
        attn_prefix, names = f"{base}.attention", ("self.query", "self.key", "self.value", "output.dense")
        fc = (f"{base}.intermediate.dense", f"{base}.output.dense")
    else:
        stack = "model.encoder" if encoder else "model.decoder"
        base = f"{stack}.layers.{{i}}"
        attn_prefix, names = f"{base}.self_attn", ("q_proj", "k_proj", "v_proj", "out_proj")
        fc = (f"{base}.fc1", f"{base}.fc2")
    x = tape.new(d.hidden, tape.r.stream)
    tape.dropout(_attn(tape, tape.layernorm(x), d, attn_prefix, names, rope=False), d.dropout)
    h = tape.new(d.hidden, x.nbytes)
    if d.family == "bart" and not encoder:
        memory = tape.new(d.hidden, tape.r.stream)
        cross_out = _attn(tape, tape.layernorm(h), d, f"{base}.encoder_attn", names, kv_from=memory, rope=False)
        tape.dropout(cross_out, d.dropout)
    m = tape.act(tape.linear(tape.layernorm(h), d.ffn, fc[0]), d.activation)
    tape.dropout(tape.linear(m, d.hidden, fc[1]), d.dropout)


def _t5_layer(tape: Tape, d: Dims, encoder: bool = False) -> None:
    stack = "encoder" if encoder else "decoder"
    base = f"{stack}.block.{{i}}"
    x = tape.new(d.hidden, tape.r.stream)
    names = ("q", "k", "v", "o")
    a = _attn(tape, tape.rmsnorm(x, "t5"), d, f"{base}.layer.0.SelfAttention", names, rope=False, bias=True)
    tape.dropout(a, d.dropout)
    ff_index = 1
    if not encoder:
        memory = tape.new(d.hidden, tape.r.stream)
        c = _attn(
            tape,
            tape.rmsnorm(x, "t5"),
            d,
            f"{base}.layer.1.EncDecAttention",
            names,
            kv_from=memory,
            rope=False,
            bias=True,
        )
        tape.dropout(c, d.dropout)
        ff_index = 2
    ff = f"{base}.layer.{ff_index}.DenseReluDense"
    h = tape.rmsnorm(tape.new(d.hidden, x.nbytes), "t5")
    if d.gated_mlp:
        gate = tape.act(tape.linear(h, d.ffn, f"{ff}.wi_0"), d.activation)
        hidden = tape.mul(gate, tape.linear(h, d.ffn, f"{ff}.wi_1"))
    else:
        hidden = tape.act(tape.linear(h, d.ffn, f"{ff}.wi"), d.activation)
    hidden = tape.dropout(hidden, d.dropout)
    tape.dropout(tape.linear(hidden, d.hidden, f"{ff}.wo"), d.dropout)


_LAYERS: dict[str, Callable[..., None]] = {
    "llama": _llama_layer,
    "gpt2": _gpt2_layer,
    "gpt_neox": _parallel_layer,
    "phi": _parallel_layer,
    "bloom": _bloom_layer,
    "opt": _post_norm_layer,
    "bart": _post_norm_layer,
    "bert": _post_norm_layer,
    "t5": _t5_layer,
}
