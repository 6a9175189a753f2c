"""`tunekit estimate-memory TARGET` and `tunekit estimate-compute TARGET --tokens N`.

    $ tunekit estimate-memory llama-3-8b --method qlora --batch-size 4 --seq-len 2048
    $ tunekit estimate-memory recipes/tiny/sft-lora.yaml --measure
    $ tunekit estimate-compute mistral-7b --tokens 2B --gpu h100 --num-gpus 8

TARGET is a recipe, a local model folder or config.json, a preset name (`llama-3-8b`, `gpt2`, ...),
`tiny:ARCH`, or a Hub id. The analytic path imports no torch; `--measure` does.
"""

from __future__ import annotations

import difflib
import json
from typing import Any

import typer

from tunekit.errors import UserError
from tunekit.estimate.setup import (
    Setup,  # pure Python: the defaults the help text quotes
)

D = Setup()

TARGET = typer.Argument(..., help="Recipe, model folder, config.json, preset, tiny:ARCH or Hub id.", show_default=False)
OVERRIDES = typer.Argument(None, help="key.sub=value overrides for a recipe.", show_default=False)
METHOD = typer.Option(
    None,
    "--method",
    help="full | lora | qlora | prompt-tuning | prefix-tuning | p-tuning | "
    "freeze | inference (default: the recipe's, else full).",
)
DTYPE = typer.Option(
    None,
    "--dtype",
    help="Precision the base weights are held in: fp32 | fp16 | bf16 | int8 | "
    "int4 | all (default: the recipe's, else all).",
)
BATCH = typer.Option(None, "--batch-size", help=f"Sequences per GPU per micro-batch (default: {D.batch_size}).")
SEQ = typer.Option(None, "--seq-len", help=f"Tokens per sequence; the prompt for inference (default: {D.seq_len}).")
RANK = typer.Option(None, "--lora-r", help=f"LoRA rank (default: {D.lora_r}).")
TARGETS = typer.Option(None, "--lora-targets", help="all-linear, or module names separated by commas.")
DROPOUT = typer.Option(None, "--lora-dropout", min=0, max=0.99, help="LoRA dropout (its mask and copy cost memory).")
DORA = typer.Option(None, "--dora/--no-dora", help="DoRA: a magnitude vector per adapted layer.")
SAVED = typer.Option(None, "--modules-to-save", help="Modules trained in full next to LoRA, separated by commas.")
ADDED = typer.Option(None, "--add-tokens", min=0, help="New tokens: embedding rows, trainable tokens under LoRA.")
OPTIMIZER = typer.Option(
    None, "--optimizer", help="adamw (fused) | adamw-foreach | adamw-8bit | paged-adamw-8bit | sgd | adafactor."
)
CHECKPOINTING = typer.Option(
    None, "--gradient-checkpointing/--no-gradient-checkpointing", help="Recompute activations in backward."
)
ACCUM = typer.Option(None, "--grad-accum", help="Micro-batches per optimizer step.")
STAGE = typer.Option(None, "--stage", help="sft | dpo | kto | orpo | simpo | reward | ppo.")
GPUS = typer.Option(None, "--num-gpus", help="GPUs the run spans.")
SHARDING = typer.Option(None, "--sharding", help="none | ddp | zero1 | zero2 | zero3 | fsdp (per-GPU figures).")
OFFLOAD = typer.Option(None, "--offload/--no-offload", help="ZeRO / FSDP CPU offload.")
MASTER = typer.Option(
    None, "--master-weights/--no-master-weights", help="fp32 master copies for fp16/bf16 full fine-tuning."
)
ATTENTION = typer.Option(None, "--attention", help="sdpa | eager | flash_attention_2.")
PACKED = typer.Option(False, "--packed", help="Batches carry no padding mask (packed or equal lengths).")
VIRTUAL = typer.Option(None, "--virtual-tokens", help=f"Soft-prompt length (default: {D.virtual_tokens}).")
LAYERS = typer.Option(
    None, "--trainable-layers", help=f"freeze: top layers that train (default: {D.trainable_layers})."
)
NEW_TOKENS = typer.Option(None, "--new-tokens", help=f"inference: tokens generated (default: {D.new_tokens}).")
BEAMS = typer.Option(None, "--beams", help="inference: beam width.")
JSON = typer.Option(False, "--json", help="Print one JSON object (bytes) and nothing else.")
MEASURE = typer.Option(False, "--measure", help="Also run a few real steps here and compare.")
STEPS = typer.Option(3, "--steps", min=2, help="Steps --measure runs (the last is measured).")


def register(app: typer.Typer) -> None:
    app.command("estimate-memory")(estimate_memory)
    app.command("estimate-compute")(estimate_compute)


def estimate_memory(
    target: str = TARGET,
    overrides: list[str] | None = OVERRIDES,
    method: str | None = METHOD,
    dtype: str | None = DTYPE,
    batch_size: int | None = BATCH,
    seq_len: int | None = SEQ,
    lora_r: int | None = RANK,
    lora_targets: str | None = TARGETS,
    lora_dropout: float | None = DROPOUT,
    dora: bool | None = DORA,
    modules_to_save: str | None = SAVED,
    add_tokens: int | None = ADDED,
    optimizer: str | None = OPTIMIZER,
    gradient_checkpointing: bool | None = CHECKPOINTING,
    grad_accum: int | None = ACCUM,
    stage: str | None = STAGE,
    num_gpus: int | None = GPUS,
    sharding: str | None = SHARDING,
    offload: bool | None = OFFLOAD,
    master_weights: bool | None = MASTER,
    attention: str | None = ATTENTION,
    packed: bool = PACKED,
    virtual_tokens: int | None = VIRTUAL,
    trainable_layers: int | None = LAYERS,
    new_tokens: int | None = NEW_TOKENS,
    beams: int | None = BEAMS,
    as_json: bool = JSON,
    measure: bool = MEASURE,
    steps: int = STEPS,
) -> None:
    """Estimate GPU memory for training or inference, per dtype, broken down by term."""
    from tunekit.estimate.estimator import estimate_memory as run
    from tunekit.estimate.report import as_json as to_json
    from tunekit.estimate.report import memory_table

    if as_json and measure:
        raise UserError("--json prints the estimate object only; run --measure without --json")
    flags = _flags(locals())
    result = run(target, flags, overrides)
    if as_json:
        typer.echo(json.dumps(to_json(result.estimates)))
        return
    typer.echo(memory_table(_title(result), result.estimates, result.skipped, result.notes))
    if measure:
        recipe = result.target.recipe
        chosen = dtype not in (None, "all") or (
            dtype is None
            and recipe is not None
            and (recipe.model.dtype != "auto" or recipe.model.quantization != "none")
        )
        _measure(result, steps, keep_dtype=chosen)


def estimate_compute(
    target: str = TARGET,
    tokens: str = typer.Option(..., "--tokens", help="Training tokens: 2e9, 2B, 300M...", show_default=False),
    gpu: str = typer.Option("h100", "--gpu", help="GPU model for the time estimate (h100, a100, l40s, ...)."),
    num_gpus: int = typer.Option(1, "--num-gpus", help="GPUs training together."),
    mfu: float = typer.Option(0.4, "--mfu", help="Model FLOPs utilisation: achieved / peak throughput."),
    seq_len: int | None = typer.Option(None, "--seq-len", help="Tokens per sequence (default: recipe, else 2048)."),
    method: str | None = typer.Option(None, "--method", help="full, or a method that freezes the base."),
    gradient_checkpointing: bool = typer.Option(False, "--gradient-checkpointing", help="Add the recomputed forward."),
) -> None:
    """Training FLOPs, petaflop/s-days, GPU-hours and wall time, against Chinchilla's 20 tokens/parameter."""
    from tunekit.estimate import setup as s
    from tunekit.estimate.compute import parse_count, training_compute
    from tunekit.estimate.estimator import model_of, settings_for
    from tunekit.estimate.report import compute_report
    from tunekit.estimate.targets import resolve_target

    resolved = resolve_target(target)
    settings = settings_for(resolved, {"method": _choice(method, s.METHODS, "--method"), "seq_len": seq_len})
    length = settings.get("seq_len", 2048)
    plan = training_compute(
        model_of(resolved),
        parse_count(tokens),
        length,
        gpu=gpu,
        num_gpus=num_gpus,
        mfu=mfu,
        frozen_base=settings.get("method", "full") != "full",
        gradient_checkpointing=gradient_checkpointing or bool(settings.get("gradient_checkpointing")),
    )
    typer.echo(compute_report(resolved.name, plan, length))


def _flags(given: dict[str, Any]) -> dict[str, Any]:
    """Setup fields from the flags; None where a flag was not given (the recipe or default decides)."""
    from tunekit.estimate import setup as s

    plain = (
        "batch_size",
        "seq_len",
        "lora_r",
        "lora_dropout",
        "gradient_checkpointing",
        "grad_accum",
        "num_gpus",
        "offload",
        "master_weights",
        "virtual_tokens",
        "trainable_layers",
        "new_tokens",
        "beams",
    )
    flags = {name: given[name] for name in plain}
    flags.update(
        {
            "method": _choice(given["method"], s.METHODS, "--method"),
            "dtype": _choice(given["dtype"], (*s.DTYPES, "all"), "--dtype"),
            "optimizer": _choice(given["optimizer"], s.OPTIMIZERS, "--optimizer"),
            "stage": _choice(given["stage"], s.STAGES, "--stage"),
            "sharding": _choice(given["sharding"], s.SHARDINGS, "--sharding"),
            "attention": _choice(given["attention"], s.ATTENTIONS, "--attention"),
            "lora_targets": _targets(given["lora_targets"]),
            "padded": False if given["packed"] else None,
            "use_dora": given["dora"],
            "modules_to_save": _names(given["modules_to_save"]),
            "added_tokens": given["add_tokens"],
            "vocab_growth": given["add_tokens"],  # a model's own tokenizer may fill padded rows first: see recipes
        }
    )
    return flags


def _names(value: str | None) -> tuple[str, ...] | None:
    return None if value is None else tuple(name.strip() for name in value.split(",") if name.strip())


def _choice(value: str | None, allowed: tuple[str, ...], flag: str) -> str | None:
    if value is None or value in allowed:
        return value
    close = difflib.get_close_matches(value, allowed, n=1, cutoff=0.5)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise UserError(f"{flag} {value!r} is not one of: {', '.join(allowed)}{hint}")


def _targets(text: str | None) -> str | tuple[str, ...] | None:
    if text is None or text == "all-linear":
        return text
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    if not names:
        raise UserError("--lora-targets needs module names separated by commas, or all-linear")
    return names


def _title(result: Any) -> list[str]:
    t, setup, first = result.target, result.setup, result.estimates[0]
    share = 100 * first.trainable / max(first.parameters, 1)
    source = {
        "preset": "preset",
        "recipe": "recipe",
        "folder": "folder",
        "config": "config",
        "tiny": "tiny model",
        "hub": "Hub config",
    }[t.source]
    name = f", {t.hub_id}" if t.hub_id and t.hub_id != t.label else ""
    lines = [
        (f"{t.label} ({source}{name}): {first.parameters:,} parameters, {first.trainable:,} trainable ({share:.2f}%)")
    ]
    gpus = f"{setup.num_gpus} GPUs ({setup.sharding})" if setup.num_gpus > 1 else "1 GPU"
    if setup.training:
        accum = f", grad accum {setup.grad_accum}" if setup.grad_accum > 1 else ""
        checkpoint = ", gradient checkpointing" if setup.gradient_checkpointing else ""
        lines.append(
            f"{setup.stage} / {setup.method}: batch {setup.batch_size} x {setup.seq_len} tokens{accum}, "
            f"{setup.optimizer}{checkpoint}, {gpus}"
        )
    else:
        lines.append(
            f"inference: batch {setup.batch_size} x {setup.seq_len} prompt + {setup.new_tokens} new "
            f"tokens, {setup.beams} beam(s), {gpus}"
        )
    return lines


def _measure(result: Any, steps: int, keep_dtype: bool) -> None:
    """Run real steps on this machine and print estimate vs measured, term by term."""
    import torch

    from tunekit.estimate.measure import describe_weights_source, measure
    from tunekit.estimate.memory import estimate, saved_activations
    from tunekit.estimate.report import measure_table

    device = "cuda" if torch.cuda.is_available() else "cpu"
    setup = result.setup
    if not keep_dtype:  # `auto` / `all`: what tunekit picks on this device
        setup = setup.with_(dtype="int4" if setup.method == "qlora" else "bf16" if device == "cuda" else "fp32")
    setup = setup.with_(device=device, cuda_context=0)
    est = estimate(result.model, setup)
    got = measure(result.target.config, setup, steps=steps, weights_from=result.target.weights)
    typer.echo(
        f"\nmeasured on {device}: {setup.method}, {setup.dtype}, {steps} steps "
        f"({describe_weights_source(result.target.weights)}), last step:"
    )
    terms = {
        "weights": est.weights,
        "gradients": est.gradients,
        "optimizer": est.optimizer,
        "activations saved": saved_activations(result.model, setup),
        "peak": est.total,
    }
    seen = {
        "weights": got.weights,
        "gradients": got.gradients,
        "optimizer": got.optimizer,
        "activations saved": got.activations,
        "peak": got.peak,
    }
    typer.echo(measure_table(terms, seen, got.peak_label))
