"""Callbacks every transformers-based run gets: metrics.jsonl, a progress line, the first evaluation,
checkpoints that survive a crash, a stop on SIGINT/SIGTERM, a stop at the first non-finite loss, and the
DDP check.

    >>> from tunekit.train.callbacks import figures_line
    >>> figures_line({"eval_loss": 1.5, "eval_reward_accuracy": 0.75})
    'loss 1.5000, reward accuracy 0.7500'
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState

from tunekit.config import Recipe
from tunekit.train.trackers import RunLog


def callbacks(recipe: Recipe, out: Path, log: RunLog) -> list[TrainerCallback]:
    """metrics.jsonl and the trackers (tunekit.train.trackers.RunLog), the progress line, and what makes runs
    resumable: atomic checkpoints, a checkpoint on SIGINT/SIGTERM, per-process seeds."""
    from tunekit.train.checkpoints import CheckpointWriter, ProcessSeed, StopOnSignal

    return [
        MetricsLogger(log),
        ProgressReporter(),
        CheckpointWriter(recipe, out),
        StopOnSignal(),
        StopOnNonFinite(),  # after StopOnSignal: a step that went non-finite is never saved
        ProcessSeed(recipe.training.seed),
    ]


class MetricsLogger(TrainerCallback):
    """Each log record to metrics.jsonl and the trackers (main process only)."""

    def __init__(self, log: RunLog) -> None:
        self.log = log

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
        if state.is_world_process_zero and logs:
            self.log.metrics({"step": state.global_step, **logs})


class ProgressReporter(TrainerCallback):
    """A progress bar and one short line per log step, in place of transformers' printed dicts."""

    SHOWN = (("loss", "loss"), ("eval_loss", "eval loss"), ("grad_norm", "grad norm"), ("learning_rate", "lr"))

    def __init__(self) -> None:
        self.bar: Any = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.is_world_process_zero:
            from tqdm.auto import tqdm

            # disable=None: a bar on a terminal, only the log lines in CI logs and pipes.
            self.bar = tqdm(total=state.max_steps, desc="training", unit="step", dynamic_ncols=True, disable=None)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
        if self.bar is None or not logs:
            return
        parts = [f"{label} {logs[key]:.4g}" for key, label in self.SHOWN if key in logs]
        if parts:
            self.bar.write(f"step {state.global_step}/{state.max_steps}  " + "  ".join(parts))

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def replace_printers(trainer: Any) -> None:
    """Drop transformers' own progress/printer callbacks: ProgressReporter takes their place."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)


class FirstEvaluation(TrainerCallback, ExportableState):
    """Keep the figures of the first evaluation of `train()` (eval_on_start) and add the method's own to them.

    The figures travel in every checkpoint (trainer_state.json, as transformers saves an ExportableState),
    so a resumed run reports the "before" figures of the run's start, not of the checkpoint.
    """

    def __init__(
        self,
        trainer: Any,
        figures: dict[str, str],
        extra_eval: Callable[[], dict[str, float]] | None,
        report: Callable[[str], None],
        found: dict[str, float] | None = None,
    ) -> None:
        self.trainer, self.figures, self.extra_eval, self.report = trainer, figures, extra_eval, report
        self.found = found
        self.seconds = 0.0  # spent evaluating inside train()

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict | None = None, **kwargs: Any) -> None:
        if self.found is not None:
            return
        metrics = metrics or {}
        found = named_figures(metrics, self.figures)
        started = time.perf_counter()
        if self.extra_eval is not None:
            extra = self.extra_eval()
            self.trainer.log(extra)  # into metrics.jsonl with the trainer's own figures
            found.update(extra)
        self.seconds = float(metrics.get("eval_runtime", 0.0)) + time.perf_counter() - started
        self.found = found
        from tqdm.auto import tqdm

        with tqdm.external_write_mode():  # the progress bar has started: print around it
            self.report("before training: " + figures_line(found))

    def state(self) -> dict[str, Any]:
        return {"args": {}, "attributes": {"found": self.found}}


def named_figures(metrics: dict[str, Any], figures: dict[str, str]) -> dict[str, float]:
    """The summary's names for the trainer's metrics; a metric the method expects but the trainer did not
    report is a bug of ours (the checks before a run keep data that gives nothing to evaluate out)."""
    missing = [key for key in figures.values() if key not in metrics]
    if missing:
        raise AssertionError(f"the trainer reported no {missing}; it reported {sorted(metrics)}")
    return {name: float(metrics[key]) for name, key in figures.items()}


def figures_line(figures: dict[str, float]) -> str:
    return ", ".join(f"{name.removeprefix('eval_').replace('_', ' ')} {value:.4f}" for name, value in figures.items())


class RequireDDP(TrainerCallback):
    """Fail at the start of training, not after it, when several DDP processes would train unsynchronised
    copies (the model reached `train()` without its DistributedDataParallel wrapper)."""

    def __init__(self, trainer: Any) -> None:
        self.trainer = trainer

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        from torch.nn.parallel import DistributedDataParallel

        wrapped = self.trainer.model_wrapped  # set by train() before this event
        # modules(): torch.compile's wrapper holds the DDP module as a submodule
        if any(isinstance(module, DistributedDataParallel) for module in wrapped.modules()):
            return
        from importlib.metadata import version

        raise RuntimeError(
            f"Trainer.train() left the model without DDP ({type(wrapped).__name__}) under transformers "
            f"{version('transformers')} and accelerate {version('accelerate')}, so each of the {args.world_size} "
            "processes would train its own copy; run in one process, and please report it"
        )


class NonFiniteLoss(Exception):
    """Training reached a NaN or infinite loss (or weights) and stopped; the command exits 1."""


class StopOnNonFinite(TrainerCallback):
    """Stop at the first step whose trainable weights, or whose logged loss, are not finite; that step is
    neither saved nor evaluated, so every checkpoint holds finite weights and no final/ is written.

    The weights are checked after every optimizer step (one reduction per weight, one sync per step): a
    NaN or infinite loss makes its gradients, and so the weights, non-finite at that very step. The logged
    loss (transformers' nan/inf filter off, see builders.trainer_kwargs) catches what the weights cannot
    show: fp16's loss scaler skips the steps whose gradients overflowed, so there a NaN loss leaves the
    weights as they were. Several processes agree on the stop (one tiny all-reduce per step).
    """

    def __init__(self) -> None:
        self.last_finite: tuple[int, float] | None = None  # (step, loss) of the last finite logged loss
        self.found: tuple[int, str] | None = None  # (step, what was not finite)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
        loss = (logs or {}).get("loss")
        if not isinstance(loss, (int, float)):
            return
        if math.isfinite(loss):
            self.last_finite = (state.global_step, float(loss))
        elif self.found is None:
            self.found = (state.global_step, f"the loss is {loss}")
        self._stop(control)

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        trainable = [p for p in model.parameters() if p.requires_grad] if model is not None else []
        if self.found is None and not weights_finite(trainable, args.world_size):
            self.found = (state.global_step, "its update made the weights NaN or infinite")
        self._stop(control)

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._stop(control)

    def _stop(self, control: Any) -> None:
        if self.found is not None:
            control.should_training_stop = True
            control.should_save = control.should_evaluate = False

    def error(self, checkpoint: Path | None) -> NonFiniteLoss:
        """What the run says when it stopped: the step, the last finite loss, what is kept."""
        assert self.found is not None
        step, what = self.found
        last = (
            f"last finite loss {self.last_finite[1]:.4g} at step {self.last_finite[0]}"
            if self.last_finite
            else "no finite loss was logged before it"
        )
        kept = f"the last good checkpoint, {checkpoint.name}, is kept" if checkpoint else "no checkpoint was saved"
        return NonFiniteLoss(
            f"training stopped at step {step}: {what} ({last}); no final/ was written and {kept}; "
            "lower training.learning_rate, or check the data and model.dtype"
        )


def weights_finite(params: list[Any], world_size: int = 1) -> bool:
    """No NaN or inf in `params`: one float32 sum per tensor (a NaN or inf carries into it), one sync."""
    import torch

    sums = [p.detach().sum(dtype=torch.float32) for p in params]
    if not sums:
        return True
    finite = torch.isfinite(torch.stack(sums)).all().to(torch.int32)
    if world_size > 1:
        import torch.distributed as dist

        dist.all_reduce(finite, op=dist.ReduceOp.MIN)
    return bool(finite.item())
