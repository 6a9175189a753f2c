"""Training data: read, detect the format, check every row, split off eval. Pure Python (no torch).

>>> from tunekit.config.schema import DataSection
>>> data = load_data(DataSection(train="builtin:reversal"), seed=0, method="sft")
>>> data.format, data.kind, len(data.train) > len(data.eval)
('messages', 'messages', True)
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from tunekit.config.schema import DataSection, Recipe
from tunekit.data.formats import check_rows, class_labels, normalised_kind, resolve_format
from tunekit.data.sources import read_rows
from tunekit.data.tagging import resolve_tags
from tunekit.errors import DataError, UserError

# The row kinds each method trains on (after normalisation); KTO also takes pairs, unpaired on the fly.
METHOD_KINDS: dict[str, tuple[str, ...]] = {
    "sft": ("text", "prompt_completion", "messages"),
    "dpo": ("preference",),
    "reward": ("preference",),
    "orpo": ("preference",),
    "simpo": ("preference",),
    "kto": ("unpaired", "preference"),
    # The policy writes completions: only prompts are read (a chat's turns before its last assistant one).
    "ppo": ("prompt", "prompt_completion", "messages", "preference"),
    "grpo": ("prompt", "prompt_completion", "messages", "preference"),
    "classify": ("classification",),
    "pretrain": ("text",),
    "tag": ("tagging",),
    "embed": ("pair", "triplet", "scored_pair"),
}
KIND_FIELDS = {
    "text": "text",
    "prompt_completion": "prompt/completion, messages, alpaca or sharegpt",
    "messages": "messages",
    "preference": "prompt/chosen/rejected, or chosen/rejected conversations",
    "unpaired": "prompt/completion/label",
    "prompt": "prompt (a string or messages)",
    "classification": "text/label",
    "tagging": "tokens/tags (or a .conll file)",
    "pair": "anchor/positive",
    "triplet": "anchor/positive/negative",
    "scored_pair": "sentence1/sentence2/score",
}


@dataclass
class Data:
    train: list[dict[str, Any]]
    eval: list[dict[str, Any]]  # empty when there is no eval data
    format: str  # as declared or detected: text, prompt_completion, messages, alpaca, sharegpt
    kind: str  # the trl form rows were normalised to: text, prompt_completion, messages
    eval_source: str  # where eval rows came from, for messages
    labels: list[str] = field(default_factory=list)  # classification, tagging: train's label set, in id order
    scheme: str = ""  # tagging: iob2, iob1 or plain (tunekit.data.tagging)

    @property
    def conversational(self) -> bool:
        """Rows hold chat messages, so the model needs a chat template."""
        first = self.train[0]
        return "messages" in first or isinstance(first.get("prompt"), list)


def load_data(
    section: DataSection, seed: int, method: str, label_order: list[str] | None = None, tag_scheme: str = "auto"
) -> Data:
    """`label_order`: classification labels or tags in id order (`classify.labels`, `tag.labels`); default:
    train's, sorted. `tag_scheme`: `tag.scheme` (tunekit.data.tagging)."""
    raw = read_rows(section.train, section.split)
    fmt = resolve_format(section.format, raw[0][1], section.train)
    accepted = METHOD_KINDS[method]
    if normalised_kind(fmt) not in accepted:
        wanted = "; or ".join(KIND_FIELDS[kind] for kind in accepted)
        raise DataError(f"{section.train}: format {fmt} does not fit `tunekit {method}`, which needs {wanted}")
    train = check_rows(raw, fmt, section.train)
    train_numbers = [n for n, _ in raw]
    eval_file = section.train  # the file eval rows come from, and their row numbers, for messages
    if section.eval:
        raw_eval = read_rows(section.eval, section.eval_split or section.split)
        eval_rows, eval_numbers = check_rows(raw_eval, fmt, section.eval), [n for n, _ in raw_eval]
        eval_source = eval_file = section.eval
    elif section.eval_split:
        raw_eval = read_rows(section.train, section.eval_split)
        eval_rows, eval_numbers = check_rows(raw_eval, fmt, section.train), [n for n, _ in raw_eval]
        eval_source = f"{section.train} [{section.eval_split}]"
    elif section.eval_fraction > 0:
        numbered = _split(list(zip((n for n, _ in raw), train)), section.eval_fraction, seed, section.train)
        train, eval_rows = ([row for _, row in part] for part in numbered)
        eval_numbers = [n for n, _ in numbered[1]]
        train_numbers = [n for n, _ in numbered[0]]
        eval_source = f"{section.eval_fraction:.0%} of {section.train} (seed {seed})"
    else:
        eval_rows, eval_numbers, eval_source = [], [], "none"
    labels, scheme = [], ""
    if fmt == "classification":
        labels = _labels(train, eval_rows, eval_numbers, eval_file, section.train, label_order)
    if fmt == "tagging":
        labels, scheme = resolve_tags(
            train, train_numbers, section.train, eval_rows, eval_numbers, eval_file, label_order, tag_scheme
        )
    return Data(train, eval_rows, fmt, normalised_kind(fmt), eval_source, labels, scheme)


def recipe_data(recipe: Recipe) -> Data:
    """The data of a recipe, as a run and `tunekit validate` read it: `load_data` with the label order
    (`classify.labels`, `tag.labels`) and the tag scheme (`tag.scheme`) the recipe sets."""
    from tunekit.config.schema import ClassifyRecipe, TagRecipe

    order = recipe.classify.labels if isinstance(recipe, ClassifyRecipe) else None
    scheme = "auto"
    if isinstance(recipe, TagRecipe):
        order, scheme = recipe.tag.labels, recipe.tag.scheme
    return load_data(recipe.data, recipe.training.seed, recipe.method, order, scheme)


def _labels(
    train: list[dict],
    eval_rows: list[dict],
    eval_numbers: list[int],
    eval_file: str,
    train_file: str,
    order: list[str] | None,
) -> list[str]:
    """Train's label set; an eval label train never shows cannot be predicted, so it stops the run."""
    labels = class_labels(train)
    if len(labels) < 2:
        raise DataError(f"{train_file}: classification needs at least two labels; every train row has {labels[0]!r}")
    known = set(labels)
    if order is not None:
        missing = [name for name in labels if name not in order]
        if missing:
            raise UserError(f"classify.labels: {', '.join(map(repr, missing))} from {train_file} missing from the list")
        labels = list(order)
    for number, row in zip(eval_numbers, eval_rows):
        if row["label"] not in known:
            held = "" if eval_file != train_file else " (held out by data.eval_fraction or data.eval_split)"
            raise DataError(
                f"{eval_file}, row {number}: field 'label': {row['label']!r} never appears in the training rows"
                f"{held}; train has {', '.join(labels)}"
            )
    return labels


def _split(rows: list[Any], fraction: float, seed: int, source: str) -> tuple[list, list]:
    n_eval = max(1, round(len(rows) * fraction))
    if len(rows) - n_eval < 1:
        raise DataError(f"{source}: {len(rows)} rows are too few to hold out data.eval_fraction={fraction}")
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    held = set(order[:n_eval])
    return [r for i, r in enumerate(rows) if i not in held], [r for i, r in enumerate(rows) if i in held]
