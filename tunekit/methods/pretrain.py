"""Continued pretraining on raw text: causal LM for decoder-only models, masked LM for encoder-only ones.

    $ tunekit pretrain recipes/tiny/pretrain-clm.yaml
    $ tunekit pretrain recipes/tiny/pretrain-mlm.yaml pretrain.mlm_probability=0.3

Reads top to bottom: `head` (the objective: `pretrain.objective`, or from the model's family) ->
`check` (in the preflight stage: documents tokenised with the model's special tokens, concatenated
(an EOS after each for causal LM) and cut into blocks of `pretrain.block_size` tokens, train and eval
apart, before anything is written) -> transformers' Trainer -> eval / train / eval / save
(tunekit.train.fit). summary.json adds
`eval_perplexity_before/after` = exp(eval_loss): per predicted token for causal LM, per masked token
for masked LM. Held-out blocks are masked once, with the run's seed, so before and after score the
same masks; training blocks get fresh masks each time they are drawn.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tunekit.config import Recipe
from tunekit.errors import UserError
from tunekit.models.refs import ModelRef
from tunekit.train.builders import trainer_inputs
from tunekit.train.fit import fit_trainer
from tunekit.train.pipeline import Echo, Plan, Run
from tunekit.train.summary import Trained

FIGURES = {"eval_loss": "eval_loss"}


@dataclass
class Blocks:
    """What `check` cut, once, for training: the objective and the train / eval blocks."""

    objective: str  # clm or mlm
    size: int  # tokens per block
    train: list[dict[str, Any]]
    eval: list[dict[str, Any]]


def head(plan: Plan) -> str:
    objective, _ = check_model(plan.recipe, plan.ref)
    return "masked-lm" if objective == "mlm" else "causal-lm"


def check(plan: Plan) -> Blocks:
    """A mask token for masked LM, and a block of text each side (train, eval), cut before anything is written."""
    recipe, data, tokenizer = plan.recipe, plan.data, plan.tokenizer
    objective, size = check_model(recipe, plan.ref)
    if objective == "mlm" and tokenizer.mask_token is None:
        raise UserError(f"{recipe.model.name_or_path}'s tokenizer has no mask token, which masked LM needs")
    return Blocks(
        objective,
        size,
        blocks(tokenizer, data.train, size, objective, recipe.data.train),
        blocks(tokenizer, data.eval, size, objective, data.eval_source),
    )


def train(run: Run, echo: Echo) -> Trained:
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments

    from tunekit.train.builders import trainer_kwargs

    recipe, tokenizer, seed = run.recipe, run.tokenizer, run.recipe.training.seed
    section, made = recipe.pretrain, run.plan.prepared
    evaluation, masker = made.eval, None
    if made.objective == "mlm":
        masker = DataCollatorForLanguageModeling(tokenizer, mlm_probability=section.mlm_probability, seed=seed)
        if evaluation:
            held_out = DataCollatorForLanguageModeling(tokenizer, mlm_probability=section.mlm_probability, seed=seed)
            evaluation = _masked_once(evaluation, held_out)

    # No task type for masked LM in peft: LoRA then wraps the model as a plain PeftModel. A plain Trainer
    # takes no peft_config: the model comes wrapped.
    task = "CAUSAL_LM" if made.objective == "clm" else None
    inputs = trainer_inputs(run, task, train=made.train, evaluation=evaluation, wrap_peft=True)
    args = TrainingArguments(**trainer_kwargs(recipe, run.out, run.dtype, has_eval=bool(evaluation)))
    trainer = Trainer(args=args, data_collator=_collator(masker), **inputs)
    echo(f"pretrain: {made.objective}, {len(made.train)} train and {len(evaluation)} eval blocks of {made.size} tokens")
    return fit_trainer(trainer, run, echo, FIGURES, extra_eval=lambda: {"eval_perplexity": _perplexity(trainer)})


def check_model(recipe: Recipe, ref: ModelRef) -> tuple[str, int]:
    """The objective, clm or mlm (`pretrain.objective`, or from the family: a masked-LM head means
    mlm), and the block size, checked against the model's positions before anything is written."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    name, config, family = recipe.model.name_or_path, ref.config or {}, ref.family
    if ref.is_encoder_decoder:
        raise UserError(
            f"{name} is an encoder-decoder model ({family}); tunekit pretrain trains decoder-only models (causal LM) "
            "and encoder-only models (masked LM)"
        )
    encoder_only = family in MODEL_FOR_MASKED_LM_MAPPING_NAMES
    section = recipe.pretrain
    objective = section.objective if section.objective != "auto" else ("mlm" if encoder_only else "clm")
    if objective == "mlm" and not encoder_only:
        raise UserError(
            f"pretrain.objective: mlm needs an encoder-only model (BERT family); {name} is a {family} model"
        )
    if objective == "clm" and encoder_only:
        raise UserError(
            f"pretrain.objective: clm is for decoder-only models; {name} is an encoder-only {family} model (use mlm)"
        )
    size = section.block_size
    limit = config.get("max_position_embeddings") or config.get("n_positions")
    if limit is not None and size > limit:
        raise UserError(
            f"pretrain.block_size: {size} tokens exceed the {limit} positions "
            f"{name} has; set pretrain.block_size to {limit} or less"
        )
    return objective, size


def blocks(tokenizer: Any, rows: list[dict[str, Any]], size: int, objective: str, source: str) -> list[dict[str, Any]]:
    """Documents tokenised (with the model's own special tokens, e.g. [CLS] ... [SEP]), an EOS after
    each for causal LM so the model learns where documents end, concatenated and cut into blocks of
    `size` tokens; the last partial block is dropped. Causal-LM blocks carry their labels."""
    if not rows:
        return []
    eos = tokenizer.eos_token_id if objective == "clm" else None
    stream: list[int] = []
    for ids in tokenizer([row["text"] for row in rows])["input_ids"]:
        stream += ids + [eos] if eos is not None and ids[-1:] != [eos] else ids
    count = len(stream) // size
    if count == 0:
        raise UserError(
            f"{source}: {len(stream)} tokens of text, less than one block of {size}; "
            "add text or lower pretrain.block_size"
        )
    cut = [stream[i * size : (i + 1) * size] for i in range(count)]
    return [{"input_ids": ids, "labels": list(ids)} if objective == "clm" else {"input_ids": ids} for ids in cut]


def _masked_once(rows: list[dict[str, Any]], masker: Any) -> list[dict[str, Any]]:
    batch = masker(rows)
    return [
        {"input_ids": ids, "labels": labels}
        for ids, labels in zip(batch["input_ids"].tolist(), batch["labels"].tolist())
    ]


def _collator(masker: Any) -> Callable[[list[dict[str, Any]]], dict[str, Any]]:
    """Blocks that carry labels (causal LM; held-out masked LM) are stacked as they are; the rest masked."""
    from transformers import default_data_collator

    def collate(features: list[dict[str, Any]]) -> dict[str, Any]:
        return default_data_collator(features) if masker is None or "labels" in features[0] else masker(features)

    return collate


def _perplexity(trainer: Any) -> float:
    """exp of the eval loss the evaluation just logged (math.inf past float range)."""
    loss = next(entry["eval_loss"] for entry in reversed(trainer.state.log_history) if "eval_loss" in entry)
    return math.exp(loss) if loss < 700 else math.inf
