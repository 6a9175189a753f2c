"""Instruction SFT of decoder-only models (full, LoRA, QLoRA) through trl's SFTTrainer.

    $ tunekit sft recipes/quickstart.yaml training.max_steps=50

Reads top to bottom: checks and model (common.prepare) -> SFTTrainer -> eval / train / eval / save
(common.fit). summary.json adds `eval_loss_before` / `eval_loss_after`.
"""

from __future__ import annotations

from typing import Any

from tunekit.config import Recipe
from tunekit.errors import UserError
from tunekit.methods.common import Report, fit, prepare, trainer_inputs
from tunekit.run import RunOptions


def run(recipe: Recipe, options: RunOptions = RunOptions(), report: Report = print) -> dict[str, Any]:
    setup = prepare(recipe, options)
    data = setup.data
    assistant_only = data.kind == "messages" and recipe.data.train_on == "completion"
    if assistant_only:
        _check_generation_markers(setup.tokenizer, recipe)

    from trl import SFTConfig, SFTTrainer

    from tunekit.training import trainer_kwargs

    config = SFTConfig(
        **trainer_kwargs(recipe, setup.out, setup.dtype, has_eval=bool(data.eval)),
        max_length=recipe.data.max_length,
        assistant_only_loss=assistant_only,
        completion_only_loss=recipe.data.train_on == "completion",
    )
    trainer = SFTTrainer(args=config, **trainer_inputs(setup))
    return fit(trainer, setup, report, {"eval_loss": "eval_loss"})


def _check_generation_markers(tokenizer: Any, recipe: Recipe) -> None:
    """Assistant-only loss needs `{% generation %}` markers, or a training template trl knows for this model."""
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
