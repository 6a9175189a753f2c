"""Training compute: FLOPs, petaflop/s-days, GPU-hours and wall time, and the Chinchilla yardstick.

    >>> from tunekit.estimate.params import inventory
    >>> from tunekit.estimate.targets import resolve_target
    >>> plan = training_compute(inventory(resolve_target("llama-3-8b").config), tokens=10**9, seq_len=2048)
    >>> round(plan.flops / 1e18, 1)  # 6 N T plus attention, for a billion tokens
    48.2

FLOPs per token follow PaLM's accounting (Chowdhery et al. 2022, appendix B): 6 per matmul
parameter (2 forward, 4 backward) plus 12 * layers * attention width * sequence length for the
attention scores and their use. Embedding lookups are not matmuls and are left out; the output
projection is counted even when tied. Frozen weights (LoRA, soft prompts, freeze) skip their
weight-gradient matmul: 4 per frozen parameter instead of 6. Gradient checkpointing repeats the
forward: +2 per parameter and +4 * layers * width * seq for attention. Peak throughputs are vendor
datasheet figures for dense 16-bit tensor math (no sparsity).
"""

from __future__ import annotations

from dataclasses import dataclass

from tunekit.errors import UserError
from tunekit.estimate.params import Model

CHINCHILLA_TOKENS_PER_PARAMETER = 20  # Hoffmann et al. 2022, the compute-optimal ratio
PFLOP_DAY = 1e15 * 86400  # FLOPs in one petaflop/s-day


@dataclass(frozen=True)
class Gpu:
    name: str
    flops: float  # dense bf16/fp16 tensor peak, FLOP/s
    memory_gib: int


GPUS: dict[str, Gpu] = {
    "h100": Gpu("NVIDIA H100 SXM", 989e12, 80),
    "h100-pcie": Gpu("NVIDIA H100 PCIe", 756e12, 80),
    "h200": Gpu("NVIDIA H200 SXM", 989e12, 141),
    "b200": Gpu("NVIDIA B200", 2250e12, 180),
    "a100": Gpu("NVIDIA A100", 312e12, 80),
    "a100-40gb": Gpu("NVIDIA A100 40GB", 312e12, 40),
    "l40s": Gpu("NVIDIA L40S", 362e12, 48),
    "a6000": Gpu("NVIDIA RTX A6000", 155e12, 48),
    "a10": Gpu("NVIDIA A10", 125e12, 24),
    "l4": Gpu("NVIDIA L4", 121e12, 24),
    "rtx4090": Gpu("NVIDIA GeForce RTX 4090", 165e12, 24),
    "rtx3090": Gpu("NVIDIA GeForce RTX 3090", 71e12, 24),
    "v100": Gpu("NVIDIA V100", 125e12, 32),
    "t4": Gpu("NVIDIA T4", 65e12, 16),
    "mi300x": Gpu("AMD Instinct MI300X", 1307e12, 192),
}


@dataclass(frozen=True)
class Compute:
    parameters: int
    matmul_parameters: int
    tokens: int
    flops: float
    flops_per_token: float
    pflop_days: float
    gpu_hours: float
    wall_hours: float
    gpu: Gpu
    num_gpus: int
    mfu: float
    chinchilla_tokens: int
    note: str


def training_compute(
    model: Model,
    tokens: int,
    seq_len: int,
    gpu: str = "h100",
    num_gpus: int = 1,
    mfu: float = 0.4,
    frozen_base: bool = False,
    gradient_checkpointing: bool = False,
) -> Compute:
    if tokens < 1:
        raise UserError(f"--tokens must be at least 1, got {tokens}")
    if seq_len < 1:
        raise UserError(f"--seq-len must be at least 1, got {seq_len}")
    if num_gpus < 1:
        raise UserError(f"--num-gpus must be at least 1, got {num_gpus}")
    if not 0 < mfu <= 1:
        raise UserError(f"--mfu is a fraction of peak throughput in (0, 1], got {mfu}")
    chosen = find_gpu(gpu)
    d = model.dims
    matmul = matmul_parameters(model)
    per_param = 4 if frozen_base else 6
    attention = 12 * (d.layers + d.encoder_layers) * d.q_dim * seq_len
    per_token = float(per_param * matmul + attention)
    if gradient_checkpointing:  # the forward again: 2 per parameter, a third of attention's 12
        per_token += 2 * matmul + attention / 3
    flops = per_token * tokens
    gpu_seconds = flops / (chosen.flops * mfu)
    optimal = CHINCHILLA_TOKENS_PER_PARAMETER * model.parameters
    return Compute(
        parameters=model.parameters,
        matmul_parameters=matmul,
        tokens=tokens,
        flops=flops,
        flops_per_token=per_token,
        pflop_days=flops / PFLOP_DAY,
        gpu_hours=gpu_seconds / 3600,
        wall_hours=gpu_seconds / 3600 / num_gpus,
        gpu=chosen,
        num_gpus=num_gpus,
        mfu=mfu,
        chinchilla_tokens=optimal,
        note=chinchilla_note(tokens, optimal),
    )


def matmul_parameters(model: Model) -> int:
    """Parameters that take part in a matmul per token: all but embedding lookups and norms, plus
    the output projection (tied or not). A mixture of experts counts only the experts a token uses."""
    d = model.dims
    total = 0
    for t in model.tensors:
        if t.kind in ("linear", "head", "router"):
            total += t.total
        elif t.kind == "expert":
            total += t.total * d.experts_per_token // max(d.experts, 1)
    if d.tied:
        total += d.vocab * d.hidden
    return total


def chinchilla_note(tokens: int, optimal: int) -> str:
    ratio = tokens / optimal
    if ratio < 0.25:
        return (
            f"{ratio:.2g}x the compute-optimal token count: fine for fine-tuning; for pretraining from "
            "scratch this model is undertrained at this budget"
        )
    if ratio > 4:
        return (
            f"{ratio:.2g}x the compute-optimal token count: past Chinchilla-optimal (a smaller model "
            "would reach the same loss for this compute; long training still pays off at inference)"
        )
    return f"{ratio:.2g}x the compute-optimal token count: close to Chinchilla-optimal"


def find_gpu(name: str) -> Gpu:
    key = name.strip().lower().replace(" ", "").replace("_", "-")
    if key in GPUS:
        return GPUS[key]
    import difflib

    close = difflib.get_close_matches(key, list(GPUS), n=3, cutoff=0.4)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise UserError(f"unknown --gpu {name!r}{hint}; known: {', '.join(GPUS)}")


def parse_count(text: str) -> int:
    """`2e9`, `2B`, `300M`, `1.5T`, `20000` -> an integer count."""
    raw = text.strip().replace("_", "").replace(",", "")
    scale = {"K": 10**3, "M": 10**6, "B": 10**9, "G": 10**9, "T": 10**12}
    factor = 1
    if raw and raw[-1].upper() in scale:
        factor, raw = scale[raw[-1].upper()], raw[:-1]
    try:
        value = float(raw) * factor
    except ValueError:
        raise UserError(f"--tokens {text!r} is not a number (use e.g. 2e9, 2B, 300M)") from None
    if not value >= 1:  # also refuses nan
        raise UserError(f"--tokens must be at least 1, got {text}")
    return int(value)
