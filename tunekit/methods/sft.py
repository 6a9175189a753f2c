"""Instruction SFT of decoder-only models (full, LoRA, QLoRA, soft prompts) through trl's SFTTrainer;
encoder-decoder models (T5, BART) go to tunekit.methods.seq2seq.

    $ tunekit sft recipes/quickstart.yaml training.max_steps=50

Reads top to bottom: checks and model (common.prepare) -> SFTTrainer -> eval / train / eval / save
(common.fit). summary.json adds `eval_loss_before` / `eval_loss_after`.
"""

from __future__ import annotations

from typing import Any

from tunekit.config import Recipe
from tunekit.data import Data
from tunekit.errors import UserError
from tunekit.train.pipeline import Report, Setup, fit, prepare, trainer_inputs
from tunekit.train.rundir import RunOptions


def run(recipe: Recipe, options: RunOptions = RunOptions(), report: Report = print) -> dict[str, Any]:
    from tunekit.models.refs import is_encoder_decoder

    # trl's SFTTrainer has no encoder-decoder path; `tunekit validate` decides with the same function
    if is_encoder_decoder(recipe.model.name_or_path, recipe.model.revision, download=True):
        from tunekit.methods import seq2seq

        return seq2seq.run(recipe, options, report)
    setup = prepare(recipe, options, check=check)
    return fit(build_trainer(setup), setup, report, {"eval_loss": "eval_loss"})


def check(recipe: Recipe, data: Data, tokenizer: Any) -> None:
    """Run by common.prepare before the run folder is written: assistant-only loss needs a template
    that marks assistant turns."""
    if data.kind == "messages" and recipe.data.train_on == "completion":
        _check_generation_markers(tokenizer, recipe)
    from tunekit.train.preflight import check_loss_survives
    from tunekit.data.preview import Preview
    from tunekit.train.launch import on_main

    for note in check_loss_survives(Preview.from_tokenizer(tokenizer), data, recipe):
        on_main(print)(f"note: {note}")


def build_trainer(setup: Setup) -> Any:
    """trl's SFTTrainer for the recipe: loss on completions / assistant turns, LoRA, packing."""
    recipe, data = setup.recipe, setup.data
    assistant_only = data.kind == "messages" and recipe.data.train_on == "completion"  # `check` vouched for it

    from trl import SFTConfig, SFTTrainer

    from tunekit.train.builders import trainer_kwargs

    config = SFTConfig(
        **trainer_kwargs(recipe, setup.out, setup.dtype, has_eval=bool(data.eval)),
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
    return SFTTrainer(args=config, **trainer_inputs(setup))


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
