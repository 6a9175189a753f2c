"""Render estimates: a table per dtype with the GPUs each fits, the `--json` object, compute plans.

    >>> from tunekit.estimate.memory import Estimate
    >>> est = Estimate("bf16", "lora", 2 * 2**30, 0, 0, 2**30, 2**29, int(3.5 * 2**30), 10, 1)
    >>> fits(est)
    ['24 GB', '40 GB', '48 GB', '80 GB']

Sizes print in GiB (2**30 bytes); a GPU sold as "24 GB" holds 24 GiB. Pure Python.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from tunekit.estimate.compute import Compute
from tunekit.estimate.memory import Estimate

GIB = 2**30
GPU_CLASSES = ((24, "24 GB"), (40, "40 GB"), (48, "48 GB"), (80, "80 GB"))  # GiB, label
TERMS = ("weights", "gradients", "optimizer", "activations", "overhead")


@dataclass(frozen=True)
class LocalGpu:
    name: str
    memory_bytes: int


@lru_cache(maxsize=1)
def local_gpu() -> LocalGpu | None:
    """The first local NVIDIA GPU, asked of nvidia-smi (torch stays unimported)."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout
        name, mib = out.splitlines()[0].rsplit(",", 1)
        return LocalGpu(name.strip(), int(float(mib)) * 2**20)
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def fits(est: Estimate, local: LocalGpu | None = None) -> list[str]:
    labels = [label for gib, label in GPU_CLASSES if est.total <= gib * GIB]
    if local is not None and est.total <= local.memory_bytes:
        labels.append(f"this {local.name}")
    return labels


def gib(n: float) -> str:
    return f"{n / GIB:.2f}"


def as_json(estimates: list[Estimate]) -> dict[str, Any]:
    """Exactly the documented object: parameters, trainable_parameters, estimates (bytes)."""
    first = estimates[0]
    return {
        "parameters": first.parameters,
        "trainable_parameters": first.trainable,
        "estimates": [e.as_json() for e in estimates],
    }


def memory_table(title: list[str], estimates: list[Estimate], skipped: list[str], notes: list[str]) -> str:
    local = local_gpu()
    header = ["dtype", *TERMS, "peak", "fits"]
    rows = [
        [
            e.dtype,
            *(gib(getattr(e, term)) for term in TERMS),
            gib(e.total),
            ", ".join(fits(e, local)) or "none of 24/40/48/80 GB",
        ]
        for e in estimates
    ]
    rows += [[dtype, *(["-"] * (len(header) - 2)), reason] for dtype, reason in _skipped_rows(skipped)]
    lines = [*title, "", *_grid(header, rows)]
    lines.append("")
    lines.append("GiB per GPU. peak = weights + optimizer + overhead + the larger of (activations, plus")
    lines.append("gradients held through backward) and (gradients + optimizer-step scratch): terms do not add up.")
    lines += [f"note: {note}" for note in dict.fromkeys(notes)]
    return "\n".join(lines)


def _skipped_rows(skipped: list[str]) -> list[tuple[str, str]]:
    return [tuple(item.split(":", 1)) for item in skipped]  # type: ignore[misc]


def _grid(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        left = [
            str(c).ljust(w) if i in (0, len(cells) - 1) else str(c).rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths))
        ]
        return "  ".join(left).rstrip()

    return [line(header), *(line(r) for r in rows)]


def measure_table(estimate_terms: dict[str, int], measured: dict[str, int], peak_label: str) -> str:
    header = ["term", "estimate", "measured", "estimate/measured"]
    rows = []
    for term, value in estimate_terms.items():
        got = measured.get(term, 0)
        ratio = f"{value / got:.3f}" if got else "-"
        rows.append([term, f"{value:,}", f"{got:,}" if got else "n/a", ratio])
    lines = _grid(header, rows)
    lines.append(
        f"bytes. peak: {peak_label}; the estimate's peak leaves out the CUDA context, which the allocator does not see."
    )
    return "\n".join(lines)


def compute_report(label: str, plan: Compute, seq_len: int) -> str:
    g = plan.gpu
    lines = [
        f"{label}: {plan.parameters:,} parameters ({plan.matmul_parameters:,} in matmuls per token)",
        f"tokens            {plan.tokens:,} (sequences of {seq_len})",
        f"FLOPs per token   {plan.flops_per_token:.4g}",
        f"training FLOPs    {plan.flops:.4g}",
        f"petaflop/s-days   {plan.pflop_days:.4g}",
        (
            f"GPU-hours         {plan.gpu_hours:,.1f} on {g.name} ({g.flops / 1e12:,.0f} TFLOP/s dense bf16 peak) "
            f"at {plan.mfu:.0%} MFU"
        ),
        f"wall time         {_duration(plan.wall_hours)} on {plan.num_gpus} GPU{'s' if plan.num_gpus > 1 else ''}",
        f"Chinchilla tokens {plan.chinchilla_tokens:,} (20 per parameter)",
        f"note: {plan.note}",
    ]
    return "\n".join(lines)


def _duration(hours: float) -> str:
    if hours < 1:
        return f"{hours * 60:.1f} minutes"
    if hours < 48:
        return f"{hours:.1f} hours"
    return f"{hours / 24:.1f} days"
