"""Load a reward model made by `tunekit reward` (full, or a LoRA adapter) and score completions.

    >>> model, tokenizer = load_reward_model("runs/tiny-reward/final")  # doctest: +SKIP
    >>> score(model, tokenizer, ["Reverse the words: a b"], ["b a"])  # doctest: +SKIP
    [1.73]

Sequences are built as trl's RewardTrainer builds them (tunekit.data.chat.render_sequence).
"""

from __future__ import annotations

from typing import Any

import torch

from tunekit.data.chat import render_sequence
from tunekit.errors import UserError
from tunekit.models.refs import resolve


def load_classifier(name: str) -> tuple[Any, Any]:
    """A sequence-classification model (full, or a LoRA adapter on its recorded base) and its tokenizer."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    ref = resolve(name, build=True, download=True)
    tokenizer = AutoTokenizer.from_pretrained(ref.tokenizer_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if ref.adapter is None:
        model = AutoModelForSequenceClassification.from_pretrained(ref.path)
    else:
        from peft import PeftModel

        model = AutoModelForSequenceClassification.from_pretrained(
            ref.base.path, num_labels=1, pad_token_id=tokenizer.pad_token_id
        )
        model = PeftModel.from_pretrained(model, str(ref.adapter.folder)).merge_and_unload()
    return model.eval(), tokenizer


def load_reward_model(name: str) -> tuple[Any, Any]:
    model, tokenizer = load_classifier(name)
    if model.config.num_labels != 1:
        raise UserError(
            f"{name} has {model.config.num_labels} output labels; a reward model has one score "
            "(train it with tunekit reward, or pick a classifier label where the command allows)"
        )
    return model, tokenizer


def score(model: Any, tokenizer: Any, prompts: list[Any], completions: list[Any], batch_size: int = 16) -> list[float]:
    rendered = [render_sequence(tokenizer, p, c) for p, c in zip(prompts, completions)]
    special = rendered[0].special_tokens if rendered else True
    return score_texts(model, tokenizer, [r.text for r in rendered], special=special, batch_size=batch_size)


@torch.no_grad()
def score_texts(
    model: Any, tokenizer: Any, texts: list[str], label: int = 0, special: bool = True, batch_size: int = 16
) -> list[float]:
    """The logit of output `label` for each text, in batches (truncated to the model's maximum length)."""
    scores: list[float] = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(
            texts[start : start + batch_size],
            return_tensors="pt",
            padding=True,
            truncation=True,
            add_special_tokens=special,
        ).to(model.device)
        scores.extend(model(**batch).logits[:, label].float().tolist())
    return scores
