"""Fit a transformers / trl trainer the same way for every method: first evaluation inside `train()`,
training (resumed when asked), evaluation after, `final/` saved.

    trainer = SomeTrlTrainer(args=config, **trainer_inputs(run))   # the method's own part
    return fit_trainer(trainer, run, echo, {"eval_loss": "eval_loss"})

`figures` maps summary names to the trainer's metric names; `extra_eval` adds figures the trainer does not
compute (preference accuracy, generation scores), measured before and after alike.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tunekit.config import Recipe
from tunekit.data import Data
from tunekit.train.summary import Trained

if TYPE_CHECKING:
    from tunekit.train.pipeline import Echo, Run

ExtraEval = Callable[[], dict[str, float]]


def fit_trainer(
    trainer: Any,
    run: Run,
    echo: Echo,
    figures: dict[str, str],
    extra_eval: ExtraEval | None = None,
    extra_summary: dict[str, Any] | None = None,
) -> Trained:
    """The first evaluation runs inside `train()` (transformers' `eval_on_start`), after the model is wrapped
    for DDP / FSDP / DeepSpeed, so an evaluation never reaches the model unprepared. A resumed run takes
    its "before" figures from the checkpoint instead of evaluating the checkpoint."""
    from tunekit.train.builders import count_parameters, save_adapter
    from tunekit.train.callbacks import FirstEvaluation, RequireDDP, figures_line, replace_printers
    from tunekit.train.rundir import where
    from tunekit.train.samples import SampleCallback, sampler_for

    recipe, data, out = run.recipe, run.data, run.out
    replace_printers(trainer)
    total, trainable = count_parameters(trainer.model)
    echo(plan_line(recipe, data, total, trainable, trainer.args.max_steps, where(out, run.dest)))
    if trainer.args.world_size > 1 and not (trainer.is_fsdp_enabled or trainer.is_deepspeed_enabled):
        trainer.add_callback(RequireDDP(trainer))
    earlier = run.resume.before if run.resume is not None else {}
    first = FirstEvaluation(trainer, figures, extra_eval, echo, found=earlier or None)
    if trainer.eval_dataset is not None:
        trainer.add_callback(first)  # it also keeps the figures in every checkpoint, for a later --resume
        if earlier:
            echo("before training (when the run started): " + figures_line(earlier))
        else:
            trainer.args.eval_on_start = True
    sampler = sampler_for(run, echo)
    if sampler is not None and (trainer.is_fsdp_enabled or trainer.is_deepspeed_enabled):
        echo("note: no samples: generating on rank 0 alone would stall the other ranks' sharded weights")
        sampler = None
    if sampler is not None:
        trainer.add_callback(SampleCallback(sampler))
    started = time.perf_counter()
    result = _train(trainer, run, echo)
    sampling = sampler.seconds if sampler is not None else 0.0
    runtime = time.perf_counter() - started - first.seconds - sampling  # training alone
    after = _evaluate(trainer, figures, extra_eval) if trainer.eval_dataset is not None else {}

    final = out / "final"
    trainer.save_model(str(final))  # every rank: FSDP / ZeRO-3 gather the weights; rank 0 writes
    save_adapter(trainer.model, run)  # PiSSA / OLoRA: converted to a LoRA of the original base
    if trainer.is_world_process_zero():
        run.tokenizer.save_pretrained(str(final))
    # Tokens trained by this run: after a resume transformers counts on from the checkpoint's total.
    tokens = int(trainer.state.num_input_tokens_seen) - (run.resume.tokens_seen if run.resume else 0)
    return Trained(
        steps=trainer.state.global_step,
        runtime=runtime,
        train_loss=result.training_loss,
        total_parameters=total,
        trainable_parameters=trainable,
        before=first.found or {},
        after=after,
        eval_examples=len(trainer.eval_dataset) if trainer.eval_dataset is not None else 0,
        tokens=tokens,
        figures={**_scale_figures(trainer, run), **(extra_summary or {})},
        final=final,
        samples=sampler.pairs() if sampler is not None else [],
    )


def _train(trainer: Any, run: Run, echo: Echo) -> Any:
    """trainer.train(), from the checkpoint --resume found; a SIGINT/SIGTERM stop raises Stopped, a
    non-finite loss NonFiniteLoss."""
    from tunekit.train.callbacks import StopOnNonFinite
    from tunekit.train.checkpoints import CheckpointWriter, StopOnSignal, Stopped, describe

    resume = run.resume
    if resume is not None:
        for name, reason in resume.skipped:
            echo(f"skipping {name}: {reason}")
        if resume.path is None:
            echo(f"--resume: no complete checkpoint in {run.out / 'checkpoints'}; starting from step 0")
        else:
            echo(describe(resume, trainer.args.max_steps))
            made_with = resume.manifest.get("world_size", 1)
            if made_with != trainer.args.world_size:
                echo(
                    f"  note: made with {made_with} process(es), resumed with {trainer.args.world_size}: "
                    "the global batch and the data position per process differ"
                )
    result = trainer.train(resume_from_checkpoint=str(resume.path) if resume and resume.path else None)
    found = {type(cb): cb for cb in trainer.callback_handler.callbacks}
    stop, writer, diverged = found.get(StopOnSignal), found.get(CheckpointWriter), found.get(StopOnNonFinite)
    if diverged is not None and diverged.found is not None:
        raise diverged.error(writer.saved if writer else None)
    if stop is not None and stop.signum and trainer.state.global_step < trainer.state.max_steps:
        raise Stopped(stop.signum, writer.saved if writer else None)
    return result


def _scale_figures(trainer: Any, run: Run) -> dict[str, Any]:
    """Processes, global batch, the checkpoint resumed from, and (DDP) whether the replicas agree."""
    args = trainer.args
    figures: dict[str, Any] = {
        "world_size": args.world_size,
        "distributed_type": str(trainer.accelerator.distributed_type.value),  # NO, MULTI_CPU, MULTI_GPU, FSDP, ...
        # sequences per optimizer step: processes x per-device batch x accumulation
        "global_batch_size": args.world_size * args.per_device_train_batch_size * args.gradient_accumulation_steps,
    }
    if run.resume is not None and run.resume.path is not None:
        figures["resumed_from"] = run.resume.path.name
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


def _evaluate(trainer: Any, figures: dict[str, str], extra_eval: ExtraEval | None) -> dict[str, float]:
    from tunekit.train.callbacks import named_figures

    found = named_figures(trainer.evaluate(metric_key_prefix="eval"), figures)
    if extra_eval is not None:
        found.update(extra_eval())
    return found


def plan_line(recipe: Recipe, data: Data, total: int, trainable: int, steps: int, out: str) -> str:
    share = 100 * trainable / max(total, 1)
    eval_part = f", {data.eval_rows} eval ({data.eval_source})" if data.eval is not None else ", no eval"
    train = "streamed" if data.streaming else f"{data.train_rows}"
    return (
        f"tunekit {recipe.method}: {recipe.model.name_or_path} [{recipe.adapter.type}] "
        f"{total:,} parameters, {trainable:,} trainable ({share:.2f}%)\n"
        f"  data: {data.names} ({data.format}) {train} train{eval_part}\n"
        f"  {steps if steps > 0 else 'epoch-based'} steps -> {out}"
    )


# trl's metrics for preference trainers (DPO, ORPO, CPO/SimPO): summary name -> eval metric.
PREFERENCE_FIGURES = {"eval_reward_accuracy": "eval_rewards/accuracies", "eval_reward_margin": "eval_rewards/margins"}


def preference_eval(trainer: Any, run: Run) -> Callable[[], dict[str, float]]:
    """The reference-free held-out figure (tunekit.train.figures) on the recipe's eval pairs."""
    from tunekit.train.figures import preference_accuracy

    return lambda: {"eval_preference_accuracy": preference_accuracy(trainer.model, run.tokenizer, run.data.eval)}
