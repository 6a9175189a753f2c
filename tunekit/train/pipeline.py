"""The part every training method shares: checks before writing anything, then eval -> train -> eval -> save.

    setup = prepare(recipe, options)                  # data, model, tokenizer, run folder
    trainer = SomeTrlTrainer(args=config, **trainer_inputs(setup))  # the method's own part
    return fit(trainer, setup, report, {"eval_loss": "eval_loss"})

`fit` writes `summary.json` with PRODUCT.md's keys plus `<name>_before` / `<name>_after` for each
eval figure the method names.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunekit.config import Recipe
from tunekit.data import Data, load_data
from tunekit.errors import UserError
from tunekit.train.rundir import RunOptions, check_run_dir, prepare_run_dir, write_summary

Report = Callable[[str], None]
Check = Callable[[Recipe, Data, Any], None]  # a method's own checks: (recipe, data, tokenizer) -> raise UserError
# trl's metrics for preference trainers (DPO, ORPO, CPO/SimPO): summary name -> eval metric.
PREFERENCE_FIGURES = {"eval_reward_accuracy": "eval_rewards/accuracies", "eval_reward_margin": "eval_rewards/margins"}


@dataclass
class Setup:
    recipe: Recipe
    data: Data
    model: Any
    tokenizer: Any
    out: Path
    dtype: Any  # torch.dtype the run computes in
    options: RunOptions
    resume: Any = None  # tunekit.train.checkpoints.Found with --resume (its path None: nothing to resume)


def prepare(recipe: Recipe, options: RunOptions, head: str = "causal-lm", check: Check | None = None) -> Setup:
    """Every check that can fail on the user's input runs here, before the run folder is written:
    `check(recipe, data, tokenizer)` adds the method's own, before the model loads.

    With --num-processes / --accelerate-config the checks run here, then the command runs again under
    `accelerate launch` (tunekit.train.launch.relaunch raises Launched); in launched processes only rank 0
    writes the run folder. The model loads after the recipe's seed is set (a new head, LoRA).
    """
    from tunekit.train import launch

    main = launch.is_main_process()
    if main:
        check_run_dir(recipe, options.overwrite, options.resume)
    data = load_data(recipe.data, recipe.training.seed, recipe.method, getattr(recipe.classify, "labels", None))

    from transformers import set_seed

    from tunekit.models.loading import load_model, load_tokenizer, resolve_dtype, resolve_model_path
    from tunekit.train.builders import check_adapter, check_environment

    check_environment(recipe)
    # The tokenizer loads in moments: the checks that need it run before a relaunch and the model's load.
    tokenizer = load_tokenizer(resolve_model_path(recipe.model.name_or_path), recipe.model)
    if data.conversational and not tokenizer.chat_template:
        raise UserError(
            f"{recipe.model.name_or_path} has no chat template, and {recipe.data.train} holds chat messages "
            f"(format {data.format}); use a model with a chat template, or plain-text prompts"
        )
    if check is not None:
        check(recipe, data, tokenizer)
    resume = _find_resume(recipe, options)
    if launch.launch_requested(options.num_processes, options.accelerate_config):
        launch.relaunch(options.launch_args, options.num_processes, options.accelerate_config)
    # The grad scaler cannot step fp16 weights: full fine-tuning in fp16 keeps fp32 weights under autocast.
    full_fp16 = recipe.model.dtype == "fp16" and recipe.adapter.type == "none"
    set_seed(recipe.training.seed)  # new weights (a classification head, LoRA) start from the recipe's seed
    model, tokenizer = load_model(
        recipe.model,
        recipe.adapter,
        head=head,
        dtype=resolve_dtype("fp32") if full_fp16 else None,
        gradient_checkpointing=recipe.training.gradient_checkpointing,
        labels=data.labels or None,
        command=recipe.method,
        tokenizer=tokenizer,
    )
    check_adapter(recipe.adapter, model)
    out = Path(recipe.output_dir).expanduser()
    if main:
        prepare_run_dir(recipe, options.overwrite, options.resume)
        _start_resumed(out, resume)
    launch.wait_for_everyone()
    return Setup(recipe, data, model, tokenizer, out, resolve_dtype(recipe.model.dtype), options, resume)


def _find_resume(recipe: Recipe, options: RunOptions) -> Any:
    if not options.resume:
        return None
    from tunekit.train.checkpoints import find_resume

    return find_resume(recipe, Path(recipe.output_dir).expanduser(), options.force)


def _start_resumed(out: Path, resume: Any) -> None:
    """Clear half-written checkpoints; drop metrics the resumed run will log again."""
    from tunekit.train.checkpoints import clear_staging, trim_metrics

    clear_staging(out)
    if resume is not None:
        trim_metrics(out, resume.step)


def trainer_inputs(
    setup: Setup,
    task_type: str = "CAUSAL_LM",
    train: list[dict[str, Any]] | None = None,
    evaluation: list[dict[str, Any]] | None = None,
    wrap_peft: bool = False,
) -> dict[str, Any]:
    """The keyword arguments every trl trainer takes alike: model, datasets, tokenizer, LoRA, callbacks.

    `train` / `evaluation` replace the recipe's rows when a method reshapes them (KTO unpairs pairs).
    `wrap_peft`, for trainers that take no `peft_config` (transformers' Trainer, Seq2SeqTrainer): the
    model comes back wrapped in the recipe's new adapter, as trl would wrap it, and no `peft_config`.
    """
    from datasets import Dataset

    from tunekit.models.loading import resolve_model_path
    from tunekit.train.builders import callbacks, peft_config

    train = setup.data.train if train is None else train
    evaluation = setup.data.eval if evaluation is None else evaluation
    adapter = peft_config(
        setup.recipe.adapter, setup.model, task_type, tokenizer_path=resolve_model_path(setup.recipe.model.name_or_path)
    )
    inputs: dict[str, Any] = {
        "model": setup.model,
        "train_dataset": Dataset.from_list(train),
        "eval_dataset": Dataset.from_list(evaluation) if evaluation else None,
        "processing_class": setup.tokenizer,
        "peft_config": adapter,
        "callbacks": callbacks(setup.recipe, setup.out),
    }
    if wrap_peft:
        del inputs["peft_config"]
        if adapter is not None:
            from peft import get_peft_model

            inputs["model"] = get_peft_model(setup.model, adapter)
    return inputs


def preference_eval(trainer: Any, setup: Setup) -> Callable[[], dict[str, float]]:
    """The reference-free held-out figure (tunekit.train.figures) on the recipe's eval pairs."""
    from tunekit.train.figures import preference_accuracy

    return lambda: {"eval_preference_accuracy": preference_accuracy(trainer.model, setup.tokenizer, setup.data.eval)}


def fit(
    trainer: Any,
    setup: Setup,
    report: Report,
    figures: dict[str, str],
    extra_eval: Callable[[], dict[str, float]] | None = None,
    extra_summary: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Evaluate, train, evaluate, save `final/`, write summary.json; `figures` maps summary name -> trl metric,
    `extra_summary` adds the method's own keys (classify: the label names).

    The first evaluation runs inside `train()` (transformers' `eval_on_start`), after the model is wrapped
    for DDP / FSDP / DeepSpeed, so an evaluation never reaches the model unprepared. A resumed run takes
    its "before" figures from the checkpoint instead of evaluating the checkpoint.
    """
    from tunekit.train.builders import FirstEvaluation, RequireDDP, count_parameters, figures_line, replace_printers

    recipe, data, out = setup.recipe, setup.data, setup.out
    replace_printers(trainer)
    total, trainable = count_parameters(trainer.model)
    report(_plan(recipe, data, total, trainable, trainer.args.max_steps, out))
    if trainer.args.world_size > 1 and not (trainer.is_fsdp_enabled or trainer.is_deepspeed_enabled):
        trainer.add_callback(RequireDDP(trainer))
    earlier = setup.resume.before if setup.resume is not None else {}
    first = FirstEvaluation(trainer, figures, extra_eval, report, found=earlier or None)
    if data.eval:
        trainer.add_callback(first)  # it also keeps the figures in every checkpoint, for a later --resume
        if earlier:
            report("before training (when the run started): " + figures_line(earlier))
        else:
            trainer.args.eval_on_start = True
    started = time.perf_counter()
    result = _train(trainer, setup, report)
    runtime = time.perf_counter() - started - first.seconds  # training alone
    before = first.found or {}
    after = _evaluate(trainer, figures, extra_eval) if data.eval else {}

    final = out / "final"
    trainer.save_model(str(final))  # every rank: FSDP / ZeRO-3 gather the weights; rank 0 writes
    if trainer.is_world_process_zero():
        setup.tokenizer.save_pretrained(str(final))

    # Tokens trained by this run: after a resume transformers counts on from the checkpoint's total.
    tokens = int(trainer.state.num_input_tokens_seen) - (setup.resume.tokens_seen if setup.resume else 0)
    summary: dict[str, Any] = {
        "method": recipe.method,
        "adapter": recipe.adapter.type,
        "model": recipe.model.name_or_path,
        "data_format": data.format,
        "total_parameters": total,
        "trainable_parameters": trainable,
        "steps": trainer.state.global_step,
        "runtime_seconds": round(runtime, 3),
        "train_loss": result.training_loss,  # mean over the steps this run trained (after a resume: since it)
        **_scale_figures(trainer, setup),
    }
    if tokens:  # trainers whose batches carry no `input_ids` (ORPO, CPO) are not counted by transformers
        summary.update(train_tokens=tokens, train_tokens_per_second=round(tokens / runtime, 2))
    if data.eval:
        summary["eval_examples"] = len(data.eval)
        for name in after:
            summary[f"{name}_before"] = before.get(name)
            summary[f"{name}_after"] = after[name]
    summary.update(extra_summary or {})
    if trainer.is_world_process_zero():
        write_summary(out, summary)
    speed = f", {summary['train_tokens_per_second']:,.0f} tokens/s" if tokens else ""
    report(f"done in {runtime:.1f}s: {summary['steps']} steps, train loss {summary['train_loss']:.4f}{speed}")
    if after:
        report("after training: " + figures_line(after))
    report(f"saved {final}")
    if summary.get("replicas_identical") is False:  # DDP failed to keep the copies in sync: not a result to trust
        raise RuntimeError(
            f"the {summary['world_size']} processes ended with different weights (checksums "
            f"{summary['replica_checksums']}); {out / 'summary.json'} records it and final/ holds rank 0's copy"
        )
    return summary


def _train(trainer: Any, setup: Setup, report: Report) -> Any:
    """trainer.train(), from the checkpoint --resume found; a SIGINT/SIGTERM stop raises Stopped."""
    from tunekit.train.checkpoints import CheckpointWriter, StopOnSignal, Stopped, describe

    resume = setup.resume
    if resume is not None:
        for name, reason in resume.skipped:
            report(f"skipping {name}: {reason}")
        if resume.path is None:
            report(f"--resume: no complete checkpoint in {setup.out / 'checkpoints'}; starting from step 0")
        else:
            report(describe(resume, trainer.args.max_steps))
            made_with = resume.manifest.get("world_size", 1)
            if made_with != trainer.args.world_size:
                report(f"  note: made with {made_with} process(es), resumed with {trainer.args.world_size}: "
                       "the global batch and the data position per process differ")
    result = trainer.train(resume_from_checkpoint=str(resume.path) if resume and resume.path else None)
    found = {type(cb): cb for cb in trainer.callback_handler.callbacks}
    stop, writer = found.get(StopOnSignal), found.get(CheckpointWriter)
    if stop is not None and stop.signum and trainer.state.global_step < trainer.state.max_steps:
        raise Stopped(stop.signum, writer.saved if writer else None)
    return result


def _scale_figures(trainer: Any, setup: Setup) -> dict[str, Any]:
    """Processes, global batch, the checkpoint resumed from, and (DDP) whether the replicas agree."""
    args = trainer.args
    figures: dict[str, Any] = {
        "world_size": args.world_size,
        "distributed_type": str(trainer.accelerator.distributed_type.value),  # NO, MULTI_CPU, MULTI_GPU, FSDP, ...
        # sequences per optimizer step: processes x per-device batch x accumulation
        "global_batch_size": args.world_size * args.per_device_train_batch_size * args.gradient_accumulation_steps,
    }
    if setup.resume is not None and setup.resume.path is not None:
        figures["resumed_from"] = setup.resume.path.name
    if args.world_size > 1 and not (trainer.is_fsdp_enabled or trainer.is_deepspeed_enabled):
        import torch
        from accelerate.utils import gather_object

        # DDP keeps a full copy per process: position-weighted sums tell whether the copies still agree.
        total = torch.zeros((), dtype=torch.float64, device=args.device)
        for i, param in enumerate(trainer.model.parameters()):
            total += (i + 1) * param.detach().double().sum() + param.detach().double().square().sum()
        checksums = gather_object([total.item()])
        figures.update(replica_checksums=checksums, replicas_identical=len(set(checksums)) == 1)
    return figures


def _evaluate(trainer: Any, figures: dict[str, str], extra_eval: Callable[[], dict[str, float]] | None) -> dict:
    from tunekit.train.builders import named_figures

    found = named_figures(trainer.evaluate(metric_key_prefix="eval"), figures)
    if extra_eval is not None:
        found.update(extra_eval())
    return found


def _plan(recipe: Recipe, data: Data, total: int, trainable: int, steps: int, out: Path) -> str:
    share = 100 * trainable / max(total, 1)
    eval_part = f", {len(data.eval)} eval ({data.eval_source})" if data.eval else ", no eval"
    return (
        f"tunekit {recipe.method}: {recipe.model.name_or_path} [{recipe.adapter.type}] "
        f"{total:,} parameters, {trainable:,} trainable ({share:.2f}%)\n"
        f"  data: {recipe.data.train} ({data.format}) {len(data.train)} train{eval_part}\n"
        f"  {steps if steps > 0 else 'epoch-based'} steps -> {out}"
    )
