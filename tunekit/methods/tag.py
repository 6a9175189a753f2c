"""Token classification (named entities, part-of-speech tags): full fine-tuning or LoRA, any model transformers
has a token-classification head for (the BERT family, decoder-only models, T5's encoder).

    $ tunekit tag recipes/tiny/tag.yaml
    $ tunekit tag recipes/tag-minilm.yaml adapter.type=lora

Reads top to bottom: the tag set (data loading: tunekit.data.tagging) -> `check` (in the preflight stage: the
words tokenised with the model's tokenizer, one label per sub-word token, before anything is written) -> the
model with one logit per tag (load) -> transformers' Trainer -> eval / train / eval / save (tunekit.train.fit).

Sub-word alignment, through the tokenizer's `word_ids()`: the first sub-word token of each word carries the
word's tag, the word's other sub-word tokens and the special tokens carry -100 (no loss, not scored), so each
word is learned and judged once. Words past `data.max_length` are cut and not scored.

summary.json adds, before and after: for entity tags (iob2 / iob1) `eval_precision`, `eval_recall` and
`eval_f1` over entities (seqeval's definition, conlleval's rules: an entity is right only when its type and
both ends are) and `eval_accuracy` (tags right per word); for plain tags (POS) `eval_accuracy` and
`eval_tag_f1` (the mean over tags of per-tag F1). `labels` (the tags in id order) and `tag_scheme` too. The tag
names travel in the model's config (`id2label`), so `pipeline("token-classification", model="final")` of a full
fine-tune names them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from tunekit.errors import DataError, UserError
from tunekit.train.builders import trainer_inputs
from tunekit.train.fit import fit_trainer
from tunekit.train.pipeline import Echo, Plan, Run
from tunekit.train.summary import Trained

HEAD = "tag"
ENTITY_FIGURES = {
    "eval_loss": "eval_loss",
    "eval_precision": "eval_precision",
    "eval_recall": "eval_recall",
    "eval_f1": "eval_f1",
    "eval_accuracy": "eval_accuracy",
}
PLAIN_FIGURES = {"eval_loss": "eval_loss", "eval_accuracy": "eval_accuracy", "eval_tag_f1": "eval_tag_f1"}


@dataclass
class Encoded:
    """What `check` tokenised, once, for training."""

    train: Any  # datasets.Dataset of input_ids, attention_mask, labels
    eval: Any  # the same, or None
    cut: int  # sentences with words past data.max_length (train and eval)


def check(plan: Plan) -> Encoded:
    """A fast tokenizer (word_ids), a max_length the model's positions allow, and every sentence tokenised;
    a note when some lose words to the cut, an error when the cut leaves a side nothing to learn or score."""
    from tunekit.data import rows_of
    from tunekit.data.tagging import add_prefix_space
    from tunekit.train.launch import on_main

    recipe, tokenizer, data = plan.recipe, plan.tokenizer, plan.data
    name, limit = recipe.model.name_or_path, recipe.data.max_length
    if not tokenizer.is_fast:
        raise UserError(f"{name}: tunekit tag aligns tags through a fast tokenizer's word_ids(), and this one is slow")
    config = plan.ref.config or {}
    positions = config.get("max_position_embeddings") or config.get("n_positions")
    if positions is not None and limit > positions:
        raise UserError(f"data.max_length: {limit} tokens exceed the {positions} positions {name} has; set it lower")
    add_prefix_space(tokenizer.backend_tokenizer)  # byte-level BPE: words read alike split or in running text
    ids = {tag: i for i, tag in enumerate(data.labels)}
    train, train_cut = encode(tokenizer, rows_of(data.train), ids, limit)
    held_out, eval_cut = encode(tokenizer, rows_of(data.eval), ids, limit)
    for part, rows, source in (("train", train, recipe.data.train), ("eval", held_out, data.eval_source)):
        if rows and not any(label != -100 for row in rows for label in row["labels"]):
            raise DataError(f"{source}: data.max_length={limit} leaves no {part} word to tag")
    if train_cut or eval_cut:
        on_main(print)(
            f"note: {train_cut + eval_cut:,} sentences are longer than data.max_length={limit} tokens; "
            "their words past the cut are not trained or scored"
        )
    from datasets import Dataset

    evaluation = Dataset.from_list(held_out) if held_out else None
    return Encoded(Dataset.from_list(train), evaluation, train_cut + eval_cut)


def encode(tokenizer: Any, rows: list[dict[str, Any]], ids: dict[str, int], limit: int) -> tuple[list[dict], int]:
    """Token ids and one label per token: the tag id on each word's first sub-word token, -100 elsewhere;
    and how many rows lost words to the cut."""
    if not rows:
        return [], 0
    batch = tokenizer([row["tokens"] for row in rows], is_split_into_words=True, truncation=True, max_length=limit)
    encoded, cut = [], 0
    for i, row in enumerate(rows):
        words = batch.word_ids(i)
        labels, previous = [], None
        for word in words:
            labels.append(-100 if word is None or word == previous else ids[row["tags"][word]])
            previous = word
        cut += max((w for w in words if w is not None), default=-1) < len(row["tokens"]) - 1
        encoded.append({**{key: values[i] for key, values in batch.items()}, "labels": labels})
    return encoded, cut


def train(run: Run, echo: Echo) -> Trained:
    from transformers import DataCollatorForTokenClassification, Trainer, TrainingArguments

    from tunekit.train.builders import trainer_kwargs

    recipe, made, labels, scheme = run.recipe, run.plan.prepared, run.data.labels, run.data.scheme
    # A plain Trainer takes no peft_config; peft's TOKEN_CLS also trains the new head whole.
    inputs = trainer_inputs(run, task_type="TOKEN_CLS", train=made.train, evaluation=made.eval, wrap_peft=True)
    args = TrainingArguments(**trainer_kwargs(recipe, run.out, run.dtype, has_eval=made.eval is not None))
    trainer = Trainer(
        args=args,
        data_collator=DataCollatorForTokenClassification(run.tokenizer),  # pads labels with -100
        compute_metrics=lambda p: tagging_metrics(p.predictions, p.label_ids, labels, scheme),
        **inputs,
    )
    figures = PLAIN_FIGURES if scheme == "plain" else ENTITY_FIGURES
    return fit_trainer(trainer, run, echo, figures, extra_summary={"labels": labels, "tag_scheme": scheme})


def tagging_metrics(logits: Any, label_ids: Any, labels: list[str], scheme: str) -> dict[str, float]:
    """Per word (the positions whose label is not -100): entity precision / recall / F1 (seqeval, micro over
    entities) and accuracy; for plain tags accuracy and macro F1 over tags (as tunekit classify's)."""
    if isinstance(logits, tuple):
        logits = logits[0]
    predicted, label_ids = np.argmax(logits, axis=-1), np.asarray(label_ids)
    truth, guess = [], []
    for row_pred, row_true in zip(predicted, label_ids):
        scored = row_true != -100
        truth.append([labels[i] for i in row_true[scored]])
        guess.append([labels[i] for i in row_pred[scored]])
    flat_true, flat_guess = label_ids[label_ids != -100], predicted[label_ids != -100]
    accuracy = float(np.mean(flat_true == flat_guess))
    if scheme == "plain":
        from tunekit.methods.classify import classification_metrics

        macro = classification_metrics(np.eye(len(labels))[flat_guess], flat_true)["f1"]
        return {"accuracy": accuracy, "tag_f1": macro}
    from seqeval.metrics import f1_score, precision_score, recall_score

    return {
        "precision": float(precision_score(truth, guess, zero_division=0)),
        "recall": float(recall_score(truth, guess, zero_division=0)),
        "f1": float(f1_score(truth, guess, zero_division=0)),
        "accuracy": accuracy,
    }
