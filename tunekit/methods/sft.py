"""Instruction SFT of decoder-only models (full, LoRA, QLoRA, soft prompts) through trl's SFTTrainer;
encoder-decoder models (T5, BART) go to tunekit.methods.seq2seq (tunekit.train.pipeline.module_for).

    $ tunekit sft recipes/quickstart.yaml training.max_steps=50

Reads top to bottom: `check` (in the preflight stage) -> SFTTrainer -> eval / train / eval / save
(tunekit.train.fit). summary.json adds `eval_loss_before` / `eval_loss_after`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tunekit.errors import UserError
from tunekit.train.builders import trainer_inputs
from tunekit.train.fit import fit_trainer
from tunekit.train.pipeline import Echo, Plan, Run
from tunekit.train.summary import Trained

if TYPE_CHECKING:
    from tunekit.data.tokenize import Tokenized


def check(plan: Plan) -> Tokenized:
    """Assistant-only loss needs a template that marks assistant turns; then every example tokenised (or
    taken from the cache), and a split that keeps no example carrying loss stops the run."""
    from tunekit.data.tokenize import sft_examples
    from tunekit.train.launch import on_main

    recipe, data = plan.recipe, plan.data
    template = None
    if data.kind == "messages" and recipe.data.train_on == "completion":
        template = _training_template(plan.tokenizer, recipe.model.name_or_path)
    tokenized = sft_examples(data, plan.tokenizer, recipe, template, recipe.data.num_proc)
    for source, rows in zip(data.sources, tokenized.rows.get("train", [])):
        source.rows = rows  # what each source gives training after the cuts
    for note in tokenized.notes:
        on_main(print)(f"note: {note}")
    return tokenized


def train(run: Run, echo: Echo) -> Trained:
    trained = fit_trainer(build_trainer(run), run, echo, {"eval_loss": "eval_loss"})
    return trained


def build_trainer(run: Run) -> Any:
    """trl's SFTTrainer on the examples `check` tokenised (its own preparation skipped): LoRA, packing."""
    recipe, tokenized = run.recipe, run.plan.prepared

    from trl import SFTConfig, SFTTrainer

    from tunekit.train.builders import trainer_kwargs

    config = SFTConfig(
        **trainer_kwargs(recipe, run.out, run.dtype, has_eval=tokenized.eval is not None),
        max_length=recipe.data.max_length,
        # Best-fit-decreasing packing is padding-free: one flat sequence per batch whose position ids restart at
        # each example, from which transformers builds a block-diagonal mask (or flash attention's varlen
        # boundaries). Eval stays unpacked so eval_loss means the same with and without packing.
        packing=recipe.data.packing,
        packing_strategy="bfd",
        eval_packing=False,
        dataset_kwargs={"skip_prepare_dataset": True},  # tunekit.data.tokenize made the examples, cached
    )
    return SFTTrainer(args=config, **trainer_inputs(run, train=tokenized.train, evaluation=tokenized.eval))


def _training_template(tokenizer: Any, model_name: str) -> str | None:
    """Assistant-only loss needs `{% generation %}` markers: the model's own template (None), or the training
    template trl knows for this model."""
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers

    if has_generation_markers(tokenizer.chat_template):
        return None
    try:
        return get_training_chat_template(tokenizer)
    except ValueError:
        raise UserError(
            f"the chat template of {model_name} cannot mark assistant turns for "
            "assistant-only loss (no {% generation %} markers, and trl has no training template for it); "
            "set data.train_on: all to train on every token"
        ) from None
