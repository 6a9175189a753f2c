"""Workarounds for the versions of the libraries tunekit runs on, each with the reason and its guard.

    >>> from tunekit._compat import ddp_after_evaluate  # called by methods.common.fit
"""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

from packaging.version import Version
from transformers import TrainerCallback

# Versions the DDP-after-evaluate workaround was written for and verified on (2 gloo processes):
# package -> [lowest, first one not known). pyproject's minimums are 5.23 / 1.15, so nothing older runs.
DDP_AFTER_EVALUATE_KNOWN = {"transformers": ("5.23", "5.24"), "accelerate": ("1.15", "1.16")}


def ddp_after_evaluate(trainer: Any) -> None:
    """Let `trainer.train()` wrap the model in DDP after `trainer.evaluate()` ran first.

    transformers 5.23 evaluates an unprepared model through accelerate 1.15's
    `prepare_model(model, evaluation_mode=True)`, which wraps nothing but marks the model
    `_is_accelerate_prepared`; `train()` then gets the model back unwrapped: no DDP, each process
    trains its own copy on its own share of the data and the copies drift apart (seen with 2 gloo
    processes: different weights on each rank). tunekit evaluates before training, so between the
    two it clears that mark and the accelerator's list of models.

    Guard: the workaround acts only on the versions in DDP_AFTER_EVALUATE_KNOWN, and only when the mark
    is there and the model is still unwrapped. On every version, `RequireDDP` then checks when training
    begins that the model really is wrapped, and raises RuntimeError if not (a newer release that
    still has the problem); `fit` also fails when the copies end up different.
    """
    if trainer.args.world_size <= 1 or trainer.is_fsdp_enabled or trainer.is_deepspeed_enabled:
        return  # FSDP and DeepSpeed prepare through accelerator.prepare(), which wraps for real
    trainer.add_callback(RequireDDP(trainer))
    if not versions_known(DDP_AFTER_EVALUATE_KNOWN):
        return
    model = trainer.model
    if trainer.model_wrapped is not model or not getattr(model, "_is_accelerate_prepared", False):
        return
    if hasattr(model, "_original_forward"):  # mixed precision wrapped forward in autocast: prepare does it again
        model.forward = model._original_forward
        del model._original_forward
    model._is_accelerate_prepared = False
    trainer.accelerator.free_memory()  # forget the evaluation-prepared model (no optimizer exists yet)


def installed_versions(packages: dict[str, tuple[str, str]]) -> dict[str, str]:
    return {name: version(name) for name in packages}


def versions_known(packages: dict[str, tuple[str, str]], installed: dict[str, str] | None = None) -> bool:
    """Whether every package's installed version lies in its [lowest, first not known) range."""
    installed = installed or installed_versions(packages)
    return all(
        Version(low) <= Version(Version(installed[name]).base_version) < Version(high)
        for name, (low, high) in packages.items()
    )


class RequireDDP(TrainerCallback):
    """Fail at the start of training, not after it, when several DDP processes would train unsynchronised copies."""

    def __init__(self, trainer: Any) -> None:
        self.trainer = trainer

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        from torch.nn.parallel import DistributedDataParallel

        wrapped = self.trainer.model_wrapped  # set by train() before this event
        wrapped = getattr(wrapped, "_orig_mod", wrapped)  # torch.compile wraps the DDP module
        if isinstance(wrapped, DistributedDataParallel):
            return
        found = ", ".join(f"{name} {v}" for name, v in installed_versions(DDP_AFTER_EVALUATE_KNOWN).items())
        known = ", ".join(f"{name} >={low},<{high}" for name, (low, high) in DDP_AFTER_EVALUATE_KNOWN.items())
        raise RuntimeError(
            f"with {found}, Trainer.train() after evaluate() left the model without DDP "
            f"({type(wrapped).__name__}), so each of the {args.world_size} processes would train its own copy. "
            f"tunekit._compat.ddp_after_evaluate is known to fix this for {known}: install those, or run in "
            "one process, and please report it"
        )
