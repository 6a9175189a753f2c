"""Instruction SFT of decoder-only models (full, LoRA, QLoRA, soft prompts) through trl's SFTTrainer;
encoder-decoder models (T5, BART) go to tunekit.methods.seq2seq (tunekit.train.pipeline.module_for).

    $ tunekit sft recipes/quickstart.yaml training.max_steps=50

Reads top to bottom: `check` (in the preflight stage) -> SFTTrainer -> eval / train / eval / save
(tunekit.train.fit). summary.json adds `eval_loss_before` / `eval_loss_after`.
"""

from __future__ import annotations

from typing import Any

from tunekit.errors import UserError
from tunekit.train.builders import trainer_inputs
from tunekit.train.fit import fit_trainer
from tunekit.train.pipeline import Echo, Plan, Run
from tunekit.train.summary import Trained


def check(plan: Plan) -> None:
    """Assistant-only loss needs a template that marks assistant turns; an example cut at data.max_length
    must keep some of its loss-carrying tokens."""
    from tunekit.data.preview import Preview
    from tunekit.train.launch import on_main
    from tunekit.train.preflight import check_loss_survives

    recipe, data = plan.recipe, plan.data
    if data.kind == "messages" and recipe.data.train_on == "completion":
        _check_generation_markers(plan.tokenizer, recipe.model.name_or_path)
    for note in check_loss_survives(Preview.from_tokenizer(plan.tokenizer), data, recipe):
        on_main(print)(f"note: {note}")


def train(run: Run, echo: Echo) -> Trained:
    return fit_trainer(build_trainer(run), run, echo, {"eval_loss": "eval_loss"})


def build_trainer(run: Run) -> Any:
    """trl's SFTTrainer for the recipe: loss on completions / assistant turns, LoRA, packing."""
    recipe, data = run.recipe, run.data
    assistant_only = data.kind == "messages" and recipe.data.train_on == "completion"  # `check` vouched for it

    from trl import SFTConfig, SFTTrainer

    from tunekit.train.builders import trainer_kwargs

    config = SFTConfig(
        **trainer_kwargs(recipe, run.out, run.dtype, has_eval=bool(data.eval)),
        max_length=recipe.data.max_length,
        assistant_only_loss=assistant_only,
        completion_only_loss=recipe.data.train_on == "completion",
        # Best-fit-decreasing packing is padding-free: one flat sequence per batch whose position ids restart at
        # each example, from which transformers builds a block-diagonal mask (or flash attention's varlen
        # boundaries). Eval stays unpacked so eval_loss means the same with and without packing.
        packing=recipe.data.packing,
        packing_strategy="bfd",
        eval_packing=False,
    )
    return SFTTrainer(args=config, **trainer_inputs(run))


def _check_generation_markers(tokenizer: Any, model_name: str) -> None:
    """Assistant-only loss needs `{% generation %}` markers, or a training template trl knows for this model."""
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers

    if has_generation_markers(tokenizer.chat_template):
        return
    try:
        get_training_chat_template(tokenizer)
    except ValueError:
        raise UserError(
            f"the chat template of {model_name} cannot mark assistant turns for "
            "assistant-only loss (no {% generation %} markers, and trl has no training template for it); "
            "set data.train_on: all to train on every token"
        ) from None
