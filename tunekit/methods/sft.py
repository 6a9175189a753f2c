"""Instruction SFT of decoder-only models (full, LoRA, QLoRA) through trl's SFTTrainer.

    $ tunekit sft recipes/quickstart.yaml training.max_steps=50

Reads top to bottom: data -> run folder -> model -> trainer -> eval before -> train -> eval after
-> save -> summary.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tunekit.config import Recipe
from tunekit.data import Data, load_data
from tunekit.errors import UserError
from tunekit.run import check_run_dir, prepare_run_dir, write_summary


def run(recipe: Recipe, overwrite: bool = False, report: Callable[[str], None] = print) -> dict[str, Any]:
    check_run_dir(recipe, overwrite)
    data = load_data(recipe.data, recipe.training.seed)

    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from tunekit.models import load_causal_lm, resolve_dtype
    from tunekit.quiet import quiet_libraries
    from tunekit.training import (
        callbacks,
        check_environment,
        count_parameters,
        lora_config,
        prepare_quantized,
        replace_printers,
        trainer_kwargs,
    )

    quiet_libraries()
    check_environment(recipe)
    dtype = resolve_dtype(recipe.model.dtype)
    # The grad scaler cannot step fp16 weights: full fine-tuning in fp16 keeps fp32 weights under autocast.
    full_fp16 = recipe.model.dtype == "fp16" and recipe.adapter.type == "none"
    model, tokenizer = load_causal_lm(recipe.model, dtype=resolve_dtype("fp32") if full_fp16 else None)
    _check_chat_template(tokenizer, data, recipe)
    model = prepare_quantized(model, recipe)
    out = prepare_run_dir(recipe, overwrite)  # every check passed: now something is written

    config = SFTConfig(
        **trainer_kwargs(recipe, out, dtype, has_eval=bool(data.eval)),
        max_length=recipe.data.max_length,
        assistant_only_loss=data.kind == "messages" and recipe.data.train_on == "completion",
        completion_only_loss=recipe.data.train_on == "completion",
        dataset_num_proc=None,
    )
    trainer = SFTTrainer(
        model=model,
        args=config,
        train_dataset=Dataset.from_list(data.train),
        eval_dataset=Dataset.from_list(data.eval) if data.eval else None,
        processing_class=tokenizer,
        peft_config=lora_config(recipe.adapter),
        callbacks=callbacks(recipe, out),
    )
    replace_printers(trainer)
    total, trainable = count_parameters(trainer.model)
    report(_plan(recipe, data, total, trainable, trainer.args.max_steps, out))

    before = trainer.evaluate(metric_key_prefix="eval") if data.eval else {}
    if before:
        report(f"eval loss before training: {before['eval_loss']:.4f}")
    started = time.perf_counter()
    result = trainer.train()
    runtime = time.perf_counter() - started
    after = trainer.evaluate(metric_key_prefix="eval") if data.eval else {}

    final = out / "final"
    trainer.save_model(str(final))
    tokenizer.save_pretrained(str(final))

    summary: dict[str, Any] = {
        "method": "sft",
        "adapter": recipe.adapter.type,
        "model": recipe.model.name_or_path,
        "data_format": data.format,
        "total_parameters": total,
        "trainable_parameters": trainable,
        "steps": trainer.state.global_step,
        "runtime_seconds": round(runtime, 3),
        "train_loss": result.training_loss,
        "train_tokens": int(trainer.state.num_input_tokens_seen),
        "train_tokens_per_second": round(trainer.state.num_input_tokens_seen / runtime, 2),
        "world_size": trainer.args.world_size,
    }
    if data.eval:
        summary["eval_examples"] = len(data.eval)
        summary["eval_loss_before"] = before["eval_loss"]
        summary["eval_loss_after"] = after["eval_loss"]
    if trainer.is_world_process_zero():
        write_summary(out, summary)
    report(_result_line(summary, final))
    return summary


def _check_chat_template(tokenizer: Any, data: Data, recipe: Recipe) -> None:
    conversational = data.kind == "messages" or (data.train and isinstance(data.train[0].get("prompt"), list))
    if conversational and not tokenizer.chat_template:
        raise UserError(
            f"{recipe.model.name_or_path} has no chat template, and {recipe.data.train} holds chat messages "
            f"(format {data.format}); use a model with a chat template, or prompt/completion strings"
        )
    if data.kind == "messages" and recipe.data.train_on == "completion":
        from trl.chat_template_utils import get_training_chat_template, has_generation_markers

        if has_generation_markers(tokenizer.chat_template):
            return
        try:
            get_training_chat_template(tokenizer)
        except ValueError:
            raise UserError(
                f"the chat template of {recipe.model.name_or_path} cannot mark assistant turns for "
                "assistant-only loss (no {% generation %} markers, and trl has no training template for it); "
                "set data.train_on: all to train on every token"
            ) from None


def _plan(recipe: Recipe, data: Data, total: int, trainable: int, steps: int, out: Path) -> str:
    share = 100 * trainable / max(total, 1)
    eval_part = f", {len(data.eval)} eval ({data.eval_source})" if data.eval else ", no eval"
    return (
        f"tunekit sft: {recipe.model.name_or_path} [{recipe.adapter.type}] "
        f"{total:,} parameters, {trainable:,} trainable ({share:.2f}%)\n"
        f"  data: {recipe.data.train} ({data.format}) {len(data.train)} train{eval_part}\n"
        f"  {steps if steps > 0 else 'epoch-based'} steps -> {out}"
    )


def _result_line(summary: dict[str, Any], final: Path) -> str:
    lines = [f"done in {summary['runtime_seconds']:.1f}s: {summary['steps']} steps, train loss {summary['train_loss']:.4f}, "
             f"{summary['train_tokens_per_second']:,.0f} tokens/s"]
    if "eval_loss_before" in summary:
        lines.append(f"eval loss {summary['eval_loss_before']:.4f} -> {summary['eval_loss_after']:.4f}")
    lines.append(f"saved {final}")
    return "\n".join(lines)
