"""Continued pretraining on raw text: causal LM for decoder-only models, masked LM for encoder-only ones, T5's
span corruption for encoder-decoders.

    $ tunekit pretrain recipes/tiny/pretrain-clm.yaml
    $ tunekit pretrain recipes/tiny/pretrain-mlm.yaml pretrain.mlm_probability=0.3
    $ tunekit pretrain recipes/tiny/pretrain-span-t5.yaml pretrain.mean_span_length=5

Reads top to bottom: `head` (the objective: `pretrain.objective`, or from the model's family) ->
`check` (in the preflight stage: documents tokenised with the model's special tokens, concatenated
(an EOS after each for causal LM) and cut into blocks of `pretrain.block_size` tokens, train and eval
apart, before anything is written) -> transformers' Trainer -> eval / train / eval / save
(tunekit.train.fit). summary.json adds
`eval_perplexity_before/after` = exp(eval_loss): per predicted token for causal LM, per masked token
for masked LM, per target token (sentinels and EOS included) for span corruption. Held-out blocks are
masked (or corrupted) once, with the run's seed, so before and after score the same masks; training
blocks get fresh masks each time they are drawn.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tunekit.config import Recipe
from tunekit.data.spans import corrupt, sentinel_ids
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

    objective: str  # clm, mlm or span_corruption
    size: int  # tokens per block
    train: Any  # datasets.Dataset (IterableDataset when streaming) of input_ids (and labels for clm)
    eval: Any  # datasets.Dataset, or None
    sentinels: list[int] = field(default_factory=list)  # span_corruption: <extra_id_0>, <extra_id_1>, ...


HEADS = {"clm": "causal-lm", "mlm": "masked-lm", "span_corruption": "seq2seq-lm"}


def head(plan: Plan) -> str:
    objective, _ = check_model(plan.recipe, plan.ref)
    return HEADS[objective]


def check(plan: Plan) -> Blocks:
    """A mask token for masked LM, sentinels for span corruption, and a block of text each side (train, eval),
    cut before anything is written."""
    recipe, tokenizer = plan.recipe, plan.tokenizer
    objective, size = check_model(recipe, plan.ref)
    if objective == "mlm" and tokenizer.mask_token is None:
        raise UserError(f"{recipe.model.name_or_path}'s tokenizer has no mask token, which masked LM needs")
    sentinels = []
    if objective == "span_corruption":
        section = recipe.pretrain
        sentinels = sentinel_ids(
            tokenizer.backend_tokenizer.token_to_id,
            size,
            section.noise_density,
            section.mean_span_length,
            recipe.model.name_or_path,
        )
    cut = {split: _blocks(plan, split, size, objective) for split in ("train", "eval")}
    return Blocks(objective, size, cut["train"], cut["eval"], sentinels)


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
    evaluation, masker, seq2seq = made.eval, None, made.objective == "span_corruption"
    if made.objective == "mlm":
        masker = DataCollatorForLanguageModeling(tokenizer, mlm_probability=section.mlm_probability, seed=seed)
        if evaluation is not None:
            held_out = DataCollatorForLanguageModeling(tokenizer, mlm_probability=section.mlm_probability, seed=seed)
            evaluation = _masked_once(evaluation, held_out)
    if seq2seq:
        masker = SpanCorruption(tokenizer, made.sentinels, section.noise_density, section.mean_span_length, seed)
        if evaluation is not None:  # corrupted once, from a generator of its own: the same spans before and after
            import datasets

            once = SpanCorruption(tokenizer, made.sentinels, section.noise_density, section.mean_span_length, seed)
            evaluation = datasets.Dataset.from_list(once.corrupt_all(evaluation.to_list()))

    # No task type for masked LM in peft: LoRA then wraps the model as a plain PeftModel. A plain Trainer
    # takes no peft_config: the model comes wrapped.
    task = {"clm": "CAUSAL_LM", "span_corruption": "SEQ_2_SEQ_LM"}.get(made.objective)
    inputs = trainer_inputs(run, task, train=made.train, evaluation=evaluation, wrap_peft=True)
    extra: dict[str, Any] = {}
    if seq2seq:  # a PeftModel's forward hides `labels` from the signature check; the collator builds the inputs
        extra = {"label_names": ["labels"], "remove_unused_columns": False}
    args = TrainingArguments(**trainer_kwargs(recipe, run.out, run.dtype, has_eval=evaluation is not None), **extra)
    trainer = Trainer(args=args, data_collator=masker if seq2seq else _collator(masker), **inputs)
    from tunekit.data import is_stream

    shown = "streamed" if is_stream(made.train) else f"{made.train.num_rows}"
    echo(
        f"pretrain: {made.objective}, {shown} train and {0 if evaluation is None else evaluation.num_rows} eval "
        f"blocks of {made.size} tokens"
    )
    return fit_trainer(trainer, run, echo, FIGURES, extra_eval=lambda: {"eval_perplexity": _perplexity(trainer)})


def check_model(recipe: Recipe, ref: ModelRef) -> tuple[str, int]:
    """The objective, clm, mlm or span_corruption (`pretrain.objective`, or from the family: an
    encoder-decoder means span corruption, a masked-LM head mlm), and the block size, checked against the
    model's positions before anything is written."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    name, config, family = recipe.model.name_or_path, ref.config or {}, ref.family
    section = recipe.pretrain
    if ref.is_encoder_decoder:
        if section.objective not in ("auto", "span_corruption"):
            raise UserError(
                f"pretrain.objective: {section.objective} is not for encoder-decoder models; {name} is a {family} "
                "model (use span_corruption)"
            )
        return "span_corruption", _fits_positions(section.block_size, config, name)
    if section.objective == "span_corruption":
        raise UserError(
            f"pretrain.objective: span_corruption needs an encoder-decoder model (T5 family); {name} is a "
            f"{family} model"
        )
    encoder_only = family in MODEL_FOR_MASKED_LM_MAPPING_NAMES
    objective = section.objective if section.objective != "auto" else ("mlm" if encoder_only else "clm")
    if objective == "mlm" and not encoder_only:
        raise UserError(
            f"pretrain.objective: mlm needs an encoder-only model (BERT family); {name} is a {family} model"
        )
    if objective == "clm" and encoder_only:
        raise UserError(
            f"pretrain.objective: clm is for decoder-only models; {name} is an encoder-only {family} model (use mlm)"
        )
    return objective, _fits_positions(section.block_size, config, name)


def _fits_positions(size: int, config: dict[str, Any], name: str) -> int:
    limit = config.get("max_position_embeddings") or config.get("n_positions")
    if limit is not None and size > limit:
        raise UserError(
            f"pretrain.block_size: {size} tokens exceed the {limit} positions "
            f"{name} has; set pretrain.block_size to {limit} or less"
        )
    return size


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


class SpanCorruption:
    """Collator: T5's span corruption of each block (tunekit.data.spans), fresh spans each draw from a generator
    seeded with the run's seed, padded as DataCollatorForSeq2Seq pads (labels with -100). Blocks that already carry
    labels (the held-out ones, corrupted once) are only padded."""

    def __init__(self, tokenizer: Any, sentinels: list[int], density: float, mean_span: float, seed: int) -> None:
        from transformers import DataCollatorForSeq2Seq

        self.sentinels, self.density, self.mean_span = sentinels, density, mean_span
        self.eos = tokenizer.eos_token_id
        self.rng = random.Random(seed)
        self.pad = DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100)

    def corrupt_all(self, blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for block in blocks:
            inputs, target = corrupt(
                block["input_ids"], self.sentinels, self.eos, self.density, self.mean_span, self.rng
            )
            out.append({"input_ids": inputs, "labels": target})
        return out

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        return self.pad(features if "labels" in features[0] else self.corrupt_all(features))


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
