"""Sequence classification (BERT family, or any model with a sequence-classification head): full or LoRA.

    $ tunekit classify recipes/tiny/classify.yaml
    $ tunekit classify recipes/classify-minilm.yaml adapter.type=lora

Reads top to bottom: the label set (preflight) and the model with one logit per label (load) ->
tokenised text/label rows -> transformers' Trainer -> eval / train / eval / save (tunekit.train.fit).
The label names are recorded in the model's config (`id2label`, so `final/config.json` of a full
fine-tune names them) and in summary.json (`labels`). summary.json adds `eval_accuracy_before/after`
and `eval_f1_before/after` (macro F1: the mean of per-label F1 over the labels seen or predicted).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tunekit.train.builders import trainer_inputs
from tunekit.train.fit import fit_trainer
from tunekit.train.pipeline import Echo, Run
from tunekit.train.summary import Trained

FIGURES = {"eval_loss": "eval_loss", "eval_accuracy": "eval_accuracy", "eval_f1": "eval_f1"}


HEAD = "classify"


def train(run: Run, echo: Echo) -> Trained:
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    recipe = run.recipe

    from tunekit.train.builders import trainer_kwargs

    # A plain Trainer takes no peft_config; peft's SEQ_CLS also trains the new head.
    inputs = trainer_inputs(
        run,
        task_type="SEQ_CLS",
        train=_encode(run, "train"),
        evaluation=_encode(run, "eval"),
        wrap_peft=True,
    )
    args = TrainingArguments(**trainer_kwargs(recipe, run.out, run.dtype, has_eval=bool(run.data.eval)))
    trainer = Trainer(
        args=args,
        data_collator=DataCollatorWithPadding(run.tokenizer),
        compute_metrics=lambda prediction: classification_metrics(prediction.predictions, prediction.label_ids),
        **inputs,
    )
    return fit_trainer(trainer, run, echo, FIGURES, extra_summary={"labels": run.data.labels})


def _encode(run: Run, split: str) -> Any:
    """Token ids (cut at data.max_length) and the class id of each text/label row (cached)."""
    from tunekit.data.tokenize import encoded

    rows = run.data.train if split == "train" else run.data.eval
    recipe, labels = run.recipe, run.data.labels
    kwargs = {
        "tokenizer": run.tokenizer,
        "label_ids": {name: i for i, name in enumerate(labels)},
        "max_length": recipe.data.max_length,
    }
    return encoded(
        rows,
        encode_batch,
        kwargs,
        "classify",
        run.data,
        split,
        run.tokenizer,
        recipe.data.cache,
        recipe.data.num_proc,
        {"labels": labels, "max_length": recipe.data.max_length},
    )


def encode_batch(batch: dict[str, list[Any]], tokenizer: Any, label_ids: dict[str, int], max_length: int) -> dict:
    done = dict(tokenizer(batch["text"], truncation=True, max_length=max_length))
    return {**done, "labels": [label_ids[label] for label in batch["label"]]}


def classification_metrics(logits: Any, labels: Any) -> dict[str, float]:
    """Accuracy and macro F1 (scikit-learn's definition: labels present in truth or predictions)."""
    if isinstance(logits, tuple):  # models that also return hidden states put the logits first
        logits = logits[0]
    predicted, labels = np.argmax(logits, axis=-1), np.asarray(labels)
    scores = []
    for label in np.union1d(labels, predicted):
        hits = np.sum((predicted == label) & (labels == label))
        false_pos = np.sum((predicted == label) & (labels != label))
        false_neg = np.sum((predicted != label) & (labels == label))
        scores.append(2 * hits / (2 * hits + false_pos + false_neg))
    return {"accuracy": float(np.mean(predicted == labels)), "f1": float(np.mean(scores))}
