"""Workarounds for the versions of the libraries tunekit runs on, each with the reason and its guard.

    >>> from tunekit._compat import ddp_after_evaluate  # called by methods.common.fit
"""

from __future__ import annotations

from typing import Any


def ddp_after_evaluate(trainer: Any) -> None:
    """Let `trainer.train()` wrap the model in DDP after `trainer.evaluate()` ran first.

    transformers 5.23 evaluates an unprepared model through accelerate 1.15's
    `prepare_model(model, evaluation_mode=True)`, which wraps nothing but marks the model
    `_is_accelerate_prepared`; `train()` then gets the model back unwrapped: no DDP, each process
    trains its own copy on its own share of the data and the copies drift apart (seen with 2 gloo
    processes: different weights on each rank). tunekit evaluates before training, so between the
    two it clears that mark and the accelerator's list of models. Guard: it acts only when the mark
    is there and the model is still unwrapped; `fit` checks afterwards that the copies agree
    (`replicas_identical` in summary.json), so a change upstream shows up as a failed check.
    """
    if trainer.args.world_size <= 1 or trainer.is_fsdp_enabled or trainer.is_deepspeed_enabled:
        return  # FSDP and DeepSpeed prepare through accelerator.prepare(), which wraps for real
    model = trainer.model
    if trainer.model_wrapped is not model or not getattr(model, "_is_accelerate_prepared", False):
        return
    if hasattr(model, "_original_forward"):  # mixed precision wrapped forward in autocast: prepare does it again
        model.forward = model._original_forward
        del model._original_forward
    model._is_accelerate_prepared = False
    trainer.accelerator.free_memory()  # forget the evaluation-prepared model (no optimizer exists yet)
