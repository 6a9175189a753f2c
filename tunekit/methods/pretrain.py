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
    train: Any  # datasets.Dataset (IterableDataset when streaming) of input_ids (and labels for clm)
    eval: Any  # datasets.Dataset, or None


def head(plan: Plan) -> str:
    objective, _ = check_model(plan.recipe, plan.ref)
    return "masked-lm" if objective == "mlm" else "causal-lm"


def check(plan: Plan) -> Blocks:
    """A mask token for masked LM, and a block of text each side (train, eval), cut before anything is written."""
    recipe, tokenizer = plan.recipe, plan.tokenizer
    objective, size = check_model(recipe, plan.ref)
    if objective == "mlm" and tokenizer.mask_token is None:
        raise UserError(f"{recipe.model.name_or_path}'s tokenizer has no mask token, which masked LM needs")
    cut = {split: _blocks(plan, split, size, objective) for split in ("train", "eval")}
    return Blocks(objective, size, cut["train"], cut["eval"])


def _blocks(plan: Plan, split: str, size: int, objective: str) -> Any:
    """A split cut into blocks (cached; a stream is cut as it is read); a split too short for one block stops."""
    from tunekit.data import is_stream
    from tunekit.data.tokenize import encoded

    recipe, data = plan.recipe, plan.data
    rows = data.train if split == "train" else data.eval
    kwargs = {"tokenizer": plan.tokenizer, "size": size, "objective": objective}
    cut = encoded(
        rows,
        blocks,
        kwargs,
        "pretrain-blocks",
        data,
        split,
        plan.tokenizer,
        recipe.data.cache,
        recipe.data.num_proc,
        {"size": size, "objective": objective},
        one_to_one=False,
    )
    if cut is not None and not is_stream(cut) and cut.num_rows == 0:
        source = data.names if split == "train" else data.eval_source
        raise UserError(
            f"{source}: less than one block of {size} tokens of text; add text or lower pretrain.block_size"
        )
    return cut


def train(run: Run, echo: Echo) -> Trained:
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments

    from tunekit.train.builders import trainer_kwargs

    recipe, tokenizer, seed = run.recipe, run.tokenizer, run.recipe.training.seed
    section, made = recipe.pretrain, run.plan.prepared
    evaluation, masker = made.eval, None
    if made.objective == "mlm":
        masker = DataCollatorForLanguageModeling(tokenizer, mlm_probability=section.mlm_probability, seed=seed)
        if evaluation is not None:
            held_out = DataCollatorForLanguageModeling(tokenizer, mlm_probability=section.mlm_probability, seed=seed)
            evaluation = _masked_once(evaluation, held_out)

    # No task type for masked LM in peft: LoRA then wraps the model as a plain PeftModel. A plain Trainer
    # takes no peft_config: the model comes wrapped.
    task = "CAUSAL_LM" if made.objective == "clm" else None
    inputs = trainer_inputs(run, task, train=made.train, evaluation=evaluation, wrap_peft=True)
    args = TrainingArguments(**trainer_kwargs(recipe, run.out, run.dtype, has_eval=evaluation is not None))
    trainer = Trainer(args=args, data_collator=_collator(masker), **inputs)
    from tunekit.data import is_stream

    shown = "streamed" if is_stream(made.train) else f"{made.train.num_rows}"
    echo(
        f"pretrain: {made.objective}, {shown} train and {0 if evaluation is None else evaluation.num_rows} eval "
        f"blocks of {made.size} tokens"
    )
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


def blocks(batch: dict[str, list[Any]], tokenizer: Any, size: int, objective: str) -> dict[str, list[Any]]:
    """A batch of documents tokenised (with the model's own special tokens, e.g. [CLS] ... [SEP]), an EOS
    after each for causal LM so the model learns where documents end, concatenated and cut into blocks of
    `size` tokens; the last partial block of the batch is dropped. Causal-LM blocks carry their labels."""
    eos = tokenizer.eos_token_id if objective == "clm" else None
    stream: list[int] = []
    for ids in tokenizer(batch["text"])["input_ids"]:
        stream += ids + [eos] if eos is not None and ids[-1:] != [eos] else ids
    cut = [stream[i * size : (i + 1) * size] for i in range(len(stream) // size)]
    return {"input_ids": cut, "labels": [list(ids) for ids in cut]} if objective == "clm" else {"input_ids": cut}


def _masked_once(rows: Any, masker: Any) -> Any:
    """The held-out blocks masked once, from the run's seed, so before and after score the same masks."""
    import datasets

    batch = masker([{"input_ids": ids} for ids in rows["input_ids"]])
    return datasets.Dataset.from_dict({"input_ids": batch["input_ids"].tolist(), "labels": batch["labels"].tolist()})


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
