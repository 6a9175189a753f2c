"""Memory of one training or inference setup, term by term, and its per-GPU peak.

    >>> from tunekit.estimate.params import inventory
    >>> from tunekit.estimate.setup import Setup
    >>> model = inventory({"model_type": "gpt2", "n_embd": 768, "n_layer": 12, "n_head": 12,
    ...     "vocab_size": 50257, "n_positions": 1024})
    >>> est = estimate(model, Setup(method="full", dtype="fp32", batch_size=1, seq_len=128))
    >>> est.weights == 4 * model.parameters, est.gradients == 4 * model.parameters
    (True, True)

The peak is not the sum of the terms. With `zero_grad(set_to_none=True)` (what transformers'
Trainer does) gradients do not exist during the forward pass: activations peak at the start of
backward, gradients at the optimizer step. So

    peak = weights + optimizer + max(activations + early gradients, gradients + optimizer-step scratch)

plus whatever is held across both (gradient accumulation, DDP's gradient buckets), plus the CUDA
context, which sits outside PyTorch's allocator. `docs/memory.md` derives each term.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace

from tunekit.errors import UserError
from tunekit.estimate.activations import Activations, Plan, Regime, activation_bytes
from tunekit.estimate.arch import Dims
from tunekit.estimate.params import Model, Tensor
from tunekit.estimate.setup import ADAPTER_METHODS, BYTES, Setup
from tunekit.estimate.storage import (
    OPT_8BIT_MIN,
    QMAPS_8BIT,
    adafactor_bytes,
    adamw_8bit_bytes,
    adamw_bytes,
    int8_bytes,
    nf4_bytes,
)


@dataclass(frozen=True)
class Estimate:
    dtype: str
    method: str
    weights: int
    gradients: int
    optimizer: int
    activations: int  # saved activations plus the larger of the loss / recompute transient (KV cache for inference)
    overhead: int
    total: int  # the per-GPU peak
    parameters: int
    trainable: int
    notes: tuple[str, ...] = ()

    def as_json(self) -> dict[str, int | str]:
        return {
            "dtype": self.dtype,
            "method": self.method,
            "weights": self.weights,
            "gradients": self.gradients,
            "optimizer": self.optimizer,
            "activations": self.activations,
            "overhead": self.overhead,
            "total": self.total,
        }


@dataclass(frozen=True)
class Trainable:
    """One trainable tensor group: `copies` tensors of `shape`, stored at `nbytes` per value."""

    shape: tuple[int, ...]
    nbytes: int
    copies: int = 1
    embedding: bool = False

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


LEARNED_POSITIONS = ("gpt2", "opt", "bart", "bert")  # a position table: sequences cannot outgrow it


def estimate(model: Model, setup: Setup) -> Estimate:
    setup = setup.checked()
    model = trained_model(model, setup)
    _check_length(model, setup)
    if not setup.training:
        return _inference(model, setup)
    parts, notes = _stage_parts(model, setup)
    return _peak(model, setup, parts, notes)


def _check_length(model: Model, setup: Setup) -> None:
    d = model.dims
    if d.family not in LEARNED_POSITIONS or not d.max_positions:
        return
    extra = setup.virtual_tokens if setup.method in ("prompt-tuning", "p-tuning") else 0
    length = setup.seq_len + extra + (0 if setup.training else setup.new_tokens)
    if length > d.max_positions:
        raise UserError(
            f"{length} tokens per sequence exceed the {d.max_positions} positions {d.model_type} "
            "has (learned position embeddings); lower --seq-len"
        )


@dataclass(frozen=True)
class Part:
    """One model a stage holds: the policy, a frozen reference, a reward or value model."""

    weights: int
    grads: int = 0
    optim: int = 0
    step_scratch: int = 0
    acts: Activations = field(default_factory=lambda: Activations(0, 0, 0, 0))
    trainable: int = 0
    early_grads: int = 0  # the output projection's gradient, computed first in backward


def _part(model: Model, setup: Setup, batch: int | None = None, logits: bool = True) -> Part:
    train = trainables(model, setup)
    optim, scratch = optimizer_bytes(train, setup)
    return Part(
        weights=weight_bytes(model, setup),
        grads=sum(t.numel * t.copies * t.nbytes for t in train),  # gradients have their parameter's dtype
        optim=optim,
        step_scratch=scratch,
        acts=_activations(model, setup, batch, logits),
        trainable=sum(t.numel * t.copies for t in train),
        early_grads=_output_grad_bytes(model, setup) if logits else 0,
    )


def _frozen(model: Model, setup: Setup) -> Part:
    return Part(weights=weight_bytes(model, setup, adapters=False))


def _stage_parts(model: Model, setup: Setup) -> tuple[list[Part], list[str]]:
    """The models each stage holds, as trl's trainers hold them."""
    full = setup.method in ("full", "freeze")
    pair = 2 * setup.batch_size  # chosen and rejected sequences go through together
    if setup.stage == "sft":
        return [_part(model, setup)], []
    if setup.stage == "reward":
        return [_part(score_model(model), setup, batch=pair, logits=False)], [
            "reward: chosen and rejected sequences in one batch; a one-output score head replaces the LM head"
        ]
    if setup.stage in ("orpo", "simpo"):
        note = f"{setup.stage}: chosen and rejected in one batch, no reference model"
        return [_part(model, setup, batch=pair)], [note]
    if setup.stage in ("dpo", "kto"):  # kto: its batch plus the mismatched pairs of its KL term
        parts = [_part(model, setup, batch=pair)]
        if full:
            return parts + [_frozen(model, setup)], [f"{setup.stage}: a frozen reference copy of the weights"]
        return parts, [f"{setup.stage}: the reference is the base with the adapter switched off (no extra weights)"]
    value = score_model(model)
    parts = [_part(model, setup), _part(value, setup, logits=False), _frozen(value, setup)]
    if full:
        parts.append(_frozen(model, setup))
    reference = "a frozen copy" if full else "the policy with its adapter off"
    return parts, [f"ppo: policy and value model train together; reference is {reference}; reward model frozen"]


def score_model(model: Model) -> Model:
    """The same model with a one-output score head in place of the LM head (reward and value models)."""
    body = tuple(t for t in model.tensors if t.kind != "head")
    # The head is a plain linear layer (peft also trains it under LoRA: H values, left out here).
    score = Tensor("score.weight", (1, model.dims.hidden), "head")
    return Model(replace(model.dims, tied=False), (*body, score), model.counted)


# Token embeddings by family (the first tensor `inventory` adds): the rows new tokens grow.
OUTPUT_HEADS = ("lm_head", "cls.predictions.decoder")  # the output projection, when tied to the embedding
TOKEN_EMBEDDINGS = ("embed_tokens.weight", "wte.weight", "word_embeddings.weight", "embed_in.weight", "shared.weight")


def trained_model(model: Model, setup: Setup) -> Model:
    """The model as training holds it: with `vocab_growth` rows more in the token embedding and the output
    head (transformers' resize_token_embeddings for `model.add_tokens`)."""
    rows = setup.vocab_growth
    if not rows:
        return model
    vocab = model.dims.vocab

    def grown(t: Tensor) -> Tensor:
        by_name = t.kind == "embedding" and t.name.endswith(TOKEN_EMBEDDINGS)
        output = t.kind == "head" or t.name == "cls.predictions.bias"
        if (by_name or output) and t.shape[0] == vocab:
            return replace(t, shape=(vocab + rows, *t.shape[1:]))
        return t

    return Model(replace(model.dims, vocab=vocab + rows), tuple(grown(t) for t in model.tensors), model.counted)


# -- weights ------------------------------------------------------------------------------------
def weight_bytes(model: Model, setup: Setup, *, adapters: bool = True) -> int:
    """Every parameter as held in GPU memory, adapters and soft prompts included."""
    linear = frozenset(t.module for t in model.tensors if t.kind == "linear" and not t.keep_fp32)
    total = sum(_tensor_bytes(t, setup, linear) * t.copies for t in model.tensors)
    if adapters:
        total += sum(t.numel * t.copies * t.nbytes for t in _extra_trainables(model, setup))
    return total


def _tensor_bytes(t: Tensor, setup: Setup, linear_modules: frozenset[str] = frozenset()) -> int:
    """Bytes of one copy of `t`; `linear_modules` names the quantised layers whose biases it recasts."""
    if setup.quantized and t.kind == "linear" and not t.keep_fp32:
        if setup.dtype == "int4":
            return nf4_bytes(t.numel, setup.double_quant)
        return int8_bytes(t.numel, t.in_out[1])
    if setup.dtype == "int4" and t.kind == "bias" and t.module in linear_modules:
        return t.numel * BYTES[setup.compute_dtype]  # bitsandbytes recasts a 4-bit layer's bias on first use
    if t.keep_fp32 and setup.dtype == "fp16":
        return t.numel * 4
    return t.numel * setup.base_bytes


# -- what trains --------------------------------------------------------------------------------
def trainables(model: Model, setup: Setup) -> list[Trainable]:
    method = setup.method
    if method == "full":
        return [
            Trainable(t.shape, _tensor_bytes(t, setup) // t.numel, t.copies, t.kind == "embedding")
            for t in model.tensors
        ]
    if method == "freeze":
        top = [t for t in model.tensors if t.stack == "decoder"]
        n = min(setup.trainable_layers, model.dims.layers)
        return [Trainable(t.shape, _tensor_bytes(t, setup) // t.numel, n) for t in top]
    extra = _extra_trainables(model, setup)
    if method in ADAPTER_METHODS and setup.lora_bias != "none":
        targeted = {t.module for t in lora_targets(model, setup.lora_targets)}
        for t in model.tensors:
            if t.name.endswith(".bias") and (setup.lora_bias == "all" or t.module in targeted):
                extra.append(Trainable(t.shape, _tensor_bytes(t, setup) // t.numel, t.copies))
    return extra


def _extra_trainables(model: Model, setup: Setup) -> list[Trainable]:
    """Parameters the method adds: LoRA matrices, soft prompts, prefix tables, p-tuning's encoder."""
    d, nbytes, tokens = model.dims, setup.adapter_bytes, setup.virtual_tokens
    if setup.method in ADAPTER_METHODS:
        out: list[Trainable] = []
        # trl casts QLoRA's adapters to the compute dtype but leaves DoRA's magnitude in peft's fp32
        magnitude = 4 if setup.quantized else nbytes
        for t in lora_targets(model, setup.lora_targets):
            if t.kind == "expert":  # peft's target_parameters: one A (r*E, in) and B (out, r*E) per layer
                experts, fan_out, fan_in = t.shape
                rank = setup.lora_r * experts
                out += [Trainable((rank, fan_in), nbytes, t.copies), Trainable((fan_out, rank), nbytes, t.copies)]
                continue
            fan_in, fan_out = t.in_out
            out += [
                Trainable((setup.lora_r, fan_in), nbytes, t.copies),
                Trainable((fan_out, setup.lora_r), nbytes, t.copies),
            ]
            if setup.use_dora:
                out.append(Trainable((fan_out,), magnitude, t.copies))
        return out + _saved_modules(model, setup) + _new_token_modules(model, setup)
    submodules = 2 if d.encoder_decoder else 1  # peft gives encoder-decoders a prompt per stack
    if setup.method == "prompt-tuning":
        return [Trainable((tokens * submodules, d.hidden), nbytes)]
    if setup.method == "prefix-tuning":
        # peft sizes the prefix by the key/value width (GQA aware for configs with num_key_value_heads)
        width = d.kv_dim if d.family == "llama" else d.hidden
        layers = d.encoder_layers or d.layers
        return [Trainable((tokens, layers * 2 * width), nbytes)]
    if setup.method == "p-tuning":  # embedding + peft's default 3-layer MLP encoder (hidden -> hidden)
        h = d.hidden
        return [
            Trainable((tokens * submodules, h), nbytes),
            *[Trainable((h, h), nbytes) for _ in range(3)],
            *[Trainable((h,), nbytes) for _ in range(3)],
        ]
    return []


def _saved_modules(model: Model, setup: Setup) -> list[Trainable]:
    """peft's modules_to_save: a trainable copy of each named module next to its frozen original."""
    out = []
    for wanted in setup.modules_to_save:
        found = [t for t in model.tensors if t.module == wanted or t.module.endswith("." + wanted)]
        if not found and model.dims.tied and wanted.endswith(OUTPUT_HEADS):  # a tied head: peft copies it untied
            embedding = next(t for t in model.tensors if t.kind == "embedding" and t.name.endswith(TOKEN_EMBEDDINGS))
            found = [replace(embedding, name=f"{wanted}.weight", kind="head")]
        if not found:
            raise UserError(f"modules_to_save: {wanted!r} is not a module of {model.dims.model_type}")
        for t in found:
            nbytes = setup.adapter_bytes if setup.quantized else _tensor_bytes(t, setup) // t.numel
            out.append(Trainable(t.shape, nbytes, t.copies, t.kind == "embedding"))
    return out


def _new_token_modules(model: Model, setup: Setup) -> list[Trainable]:
    """New tokens under LoRA: the token embedding and the output head train in full (peft's modules_to_save,
    as tunekit.train.builders.embedding_modules chooses), each a trainable copy."""
    if not setup.added_tokens:
        return []
    embedding = next(t for t in model.tensors if t.kind == "embedding" and t.name.endswith(TOKEN_EMBEDDINGS))
    heads = [t for t in model.tensors if t.kind == "head" and t.name.endswith("weight")]
    if model.dims.tied:
        heads = [replace(embedding, name="lm_head.weight", kind="head")]  # peft copies the tied head on its own

    def saved(t: Tensor) -> bool:  # already a modules_to_save copy
        return any(t.module == name or t.module.endswith("." + name) for name in setup.modules_to_save)

    return [
        Trainable(t.shape, setup.adapter_bytes if setup.quantized else _tensor_bytes(t, setup) // t.numel, t.copies)
        for t in (embedding, *heads)
        if not saved(t)
    ]


def lora_targets(model: Model, targets: str | tuple[str, ...] | list[str]) -> list[Tensor]:
    """The linear weights peft's `target_modules` selects (a name list matches module-name suffixes). `all-linear`
    also takes the 3-D expert weights of a mixture of experts, as tunekit trains them (train.builders.lora_targets);
    the router is left alone."""
    linear = [t for t in model.tensors if t.kind in ("linear", "head") and t.name.endswith("weight")]
    if targets == "all-linear":
        return [t for t in linear if t.kind == "linear"] + model.of_kind("expert")
    if isinstance(targets, str):
        pattern = re.compile(targets)
        chosen = [t for t in linear if any(pattern.fullmatch(n.rsplit(".", 1)[0]) for n in t.names())]
        if not chosen:
            raise UserError(f"adapter target_modules {targets!r} matches no linear layer of {model.dims.model_type}")
        return chosen
    chosen = []
    leaves = sorted({t.module.rsplit(".", 1)[-1] for t in linear if t.kind == "linear"})
    for target in targets:
        hits = [t for t in linear if _suffix_match(t, target)]
        if not hits:
            raise UserError(
                f"adapter target_modules: {target!r} matches no linear layer of {model.dims.model_type}; "
                f"its linear layers are: {', '.join(leaves)}"
            )
        chosen += [t for t in hits if t not in chosen]
    return chosen


def _suffix_match(t: Tensor, target: str) -> bool:
    return any(name.rsplit(".", 1)[0] == target or name.rsplit(".", 1)[0].endswith("." + target) for name in t.names())


# -- optimizer ----------------------------------------------------------------------------------
def optimizer_bytes(train: list[Trainable], setup: Setup) -> tuple[int, int]:
    """(persistent state bytes, scratch bytes during the optimizer step)."""
    master = setup.uses_master_weights
    total = scratch = 0
    for t in train:
        state = 4 if master else t.nbytes  # torch keeps AdamW states in the parameter's dtype
        n = t.numel
        if setup.optimizer in ("adamw", "adamw-foreach"):
            per = adamw_bytes(n, state)
        elif setup.optimizer in ("adamw-8bit", "paged-adamw-8bit"):
            per = adamw_8bit_bytes(n, force_32bit=t.embedding)  # the Trainer keeps embeddings 32-bit
        elif setup.optimizer == "adafactor":
            per = adafactor_bytes(t.shape) + 4  # and a 0-d RMS tensor per parameter
        else:
            per = 0  # SGD without momentum keeps no state
        total += (per + (4 * n if master else 0)) * t.copies
        if setup.optimizer == "adamw-foreach":
            scratch += n * state * t.copies  # foreach AdamW builds sqrt(exp_avg_sq) for all tensors at once
    if setup.optimizer in ("adamw-8bit", "paged-adamw-8bit") and any(
        t.numel >= OPT_8BIT_MIN and not t.embedding for t in train
    ):
        total += QMAPS_8BIT  # allocated with the first 8-bit state
    if setup.optimizer == "adafactor" and train:
        scratch = 3 * 4 * max(t.numel for t in train)  # fp32 copies of the largest tensor, one at a time
    return total, scratch


# -- activations --------------------------------------------------------------------------------
def regime(setup: Setup, dims: Dims) -> Regime:
    attention = "eager" if dims.needs_eager and setup.attention in (None, "sdpa") else setup.attention_for
    act = setup.compute_bytes if setup.autocast or setup.quantized else setup.base_bytes
    return Regime(
        act=act,
        stream=setup.regime_stream,
        autocast=setup.autocast and act < 4,
        norm_weight=setup.base_bytes,
        adapter=setup.adapter_bytes,
        quantized=setup.dtype if setup.quantized else "none",
        attention=attention,
        grad_checkpointing=setup.gradient_checkpointing,
        padded=setup.padded,
        cpu=setup.device == "cpu",
    )


def plan(model: Model, setup: Setup) -> Plan:
    d = model.dims
    if setup.method == "full":
        return Plan(full_layers=d.layers + d.encoder_layers, head_trains=True)
    if setup.method == "freeze":
        return Plan(full_layers=min(setup.trainable_layers, d.layers), grad_below=False)
    if setup.method in ADAPTER_METHODS:
        chosen = {t.module for t in lora_targets(model, setup.lora_targets)}
        rank = setup.lora_r
        return Plan(
            lora=lambda name: rank if name in chosen else 0,
            lora_dropout=setup.lora_dropout,
            head_trains=any(t.kind == "head" for t in lora_targets(model, setup.lora_targets)),
        )
    if setup.method == "prefix-tuning":
        return Plan(prefix_tokens=setup.virtual_tokens)
    return Plan(extra_tokens=setup.virtual_tokens)  # prompt-tuning, p-tuning


def _activations(model: Model, setup: Setup, batch: int | None = None, logits: bool = True) -> Activations:
    reg = regime(setup, model.dims)
    return activation_bytes(
        model.dims,
        reg,
        batch or setup.batch_size,
        setup.seq_len,
        plan(model, setup),
        cast_weight_elems=_autocast_copies(model, setup),
        vocab_logits=logits,
    )


def saved_activations(model: Model, setup: Setup) -> int:
    """Bytes autograd holds at the end of one micro-batch's forward pass (what --measure counts)."""
    return _activations(model, setup.checked()).saved


def _autocast_copies(model: Model, setup: Setup) -> int:
    """fp32 weights autocast copies to half precision and keeps for the backward pass."""
    if not setup.autocast or setup.compute_bytes == 4:
        return 0
    if setup.amp_over_fp32:
        return sum(t.total for t in model.tensors if t.kind in ("linear", "head")) + _tied_head(model)
    if setup.quantized and setup.kbit_upcast:  # peft's preparation leaves an fp32 lm_head
        return sum(t.total for t in model.tensors if t.kind == "head") + _tied_head(model)
    return 0


def _tied_head(model: Model) -> int:
    return model.dims.vocab * model.dims.hidden if model.dims.tied else 0


# -- peak and sharding --------------------------------------------------------------------------
def _peak(model: Model, setup: Setup, parts: list[Part], notes: list[str]) -> Estimate:
    n, shard = setup.num_gpus, setup.sharding
    weights = sum(p.weights for p in parts)
    grads = sum(p.grads for p in parts)
    optim, step_scratch = sum(p.optim for p in parts), sum(p.step_scratch for p in parts)
    early_grads = max(p.early_grads for p in parts)
    acts = Activations(
        sum(p.acts.saved for p in parts),
        max(p.acts.loss_transient for p in parts),
        max(p.acts.recompute for p in parts),
        max(p.acts.layer for p in parts),
    )
    if shard in ("zero1", "zero2", "zero3", "fsdp"):
        optim, step_scratch = -(-optim // n), -(-step_scratch // n)
    if shard in ("zero2", "zero3", "fsdp"):
        grads, early_grads = -(-grads // n), 0
    if shard in ("zero3", "fsdp"):
        weights = -(-weights // n) + _gathered_layers(model, setup)
    if setup.offload:
        optim, step_scratch = 0, 0
        if shard in ("zero3", "fsdp"):
            weights = _gathered_layers(model, setup)
        notes.append("offload: optimizer states (and, sharded, weights) live in CPU memory")
    held = 0  # gradient memory held through forward and backward
    if shard == "ddp":
        held = grads  # DDP's reduction buckets, a second copy of the gradients
        grads *= 2
    if setup.grad_accum > 1:
        held, early_grads = grads, 0
    # Three moments compete: the start of backward (all activations, the loss's gradients; the output
    # projection's gradient comes once those are freed), its end (every gradient made, the first
    # layer's activations, or its recomputation, still alive), and the optimizer step.
    start = acts.saved + max(acts.loss_transient, acts.recompute + early_grads) + held
    end = grads + (acts.recompute or acts.layer) + (held if shard == "ddp" else 0)
    during_step = grads + step_scratch
    during_backward = max(start, end)
    overhead = setup.cuda_context
    total = weights + optim + max(during_backward, during_step) + overhead
    return Estimate(
        dtype=setup.dtype,
        method=setup.method,
        weights=weights,
        gradients=grads,
        optimizer=optim,
        activations=acts.saved + max(acts.loss_transient, acts.recompute),
        overhead=overhead,
        total=total,
        parameters=model.parameters,
        trainable=parts[0].trainable,
        notes=tuple(notes),
    )


def _output_grad_bytes(model: Model, setup: Setup) -> int:
    """The output projection's gradient, computed first in backward while activations are all held."""
    if setup.method != "full":
        return 0
    d = model.dims  # (tied or not, V x H: the head's weight gradient)
    return d.vocab * d.hidden * (2 if setup.uses_master_weights else setup.base_bytes)


def _gathered_layers(model: Model, setup: Setup) -> int:
    """ZeRO-3 / FSDP gather a layer's full weights to run it, and prefetch the next one."""
    layer = sum(_tensor_bytes(t, setup) for t in model.tensors if t.copies > 1 and "{i}" in t.name)
    return 2 * layer


# -- inference ----------------------------------------------------------------------------------
def _inference(model: Model, setup: Setup) -> Estimate:
    d = model.dims
    inference = replace(setup, kbit_upcast=False)
    weights = weight_bytes(model, inference, adapters=False)
    if setup.sharding in ("zero3", "fsdp"):
        weights = -(-weights // setup.num_gpus) + _gathered_layers(model, inference)
    act = setup.compute_bytes
    sequences = setup.batch_size * setup.beams
    positions = setup.seq_len + setup.new_tokens
    kv = 2 * d.layers * d.kv_dim * act * sequences * (positions if not d.encoder_decoder else setup.new_tokens)
    if d.encoder_decoder:  # cross-attention keys/values over the encoded prompt
        kv += 2 * d.layers * d.kv_dim * act * sequences * setup.seq_len
    prompt_tokens = setup.batch_size * setup.seq_len
    working = prompt_tokens * (3 * d.ffn * max(d.experts_per_token, 1) + 6 * d.hidden) * act
    if d.needs_eager or setup.attention == "eager":
        working += setup.batch_size * d.heads * setup.seq_len**2 * (4 + act)
    working += sequences * d.vocab * 4 * 2  # last-position logits and their fp32 processed scores
    activations = kv + working
    total = weights + activations + setup.cuda_context
    return Estimate(
        dtype=setup.dtype,
        method="inference",
        weights=weights,
        gradients=0,
        optimizer=0,
        activations=activations,
        overhead=setup.cuda_context,
        total=total,
        parameters=model.parameters,
        trainable=0,
        notes=(_kv_note(setup, kv, sequences, positions),),
    )


def _kv_note(setup: Setup, kv: int, sequences: int, positions: int) -> str:
    return (
        f"inference, {setup.dtype}: KV cache {kv / 1024**3:.2f} GiB for {sequences} sequence(s) x {positions} positions"
    )
