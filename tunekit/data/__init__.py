"""Training data: read, detect the format, check every row, split off eval. Pure Python (no torch).

    >>> from tunekit.config.schema import DataSection
    >>> data = load_data(DataSection(train="builtin:reversal"), seed=0, method="sft")
    >>> data.format, data.kind, len(data.train) > len(data.eval)
    ('messages', 'messages', True)
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from tunekit.config.schema import DataSection
from tunekit.data.formats import check_rows, normalised_kind, resolve_format
from tunekit.data.sources import read_rows
from tunekit.errors import DataError

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
}
KIND_FIELDS = {
    "text": "text",
    "prompt_completion": "prompt/completion, messages, alpaca or sharegpt",
    "messages": "messages",
    "preference": "prompt/chosen/rejected, or chosen/rejected conversations",
    "unpaired": "prompt/completion/label",
    "prompt": "prompt (a string or messages)",
}


@dataclass
class Data:
    train: list[dict[str, Any]]
    eval: list[dict[str, Any]]  # empty when there is no eval data
    format: str  # as declared or detected: text, prompt_completion, messages, alpaca, sharegpt
    kind: str  # the trl form rows were normalised to: text, prompt_completion, messages
    eval_source: str  # where eval rows came from, for messages

    @property
    def conversational(self) -> bool:
        """Rows hold chat messages, so the model needs a chat template."""
        first = self.train[0]
        return "messages" in first or isinstance(first.get("prompt"), list)


def load_data(section: DataSection, seed: int, method: str) -> Data:
    raw = read_rows(section.train, section.split)
    fmt = resolve_format(section.format, raw[0][1], section.train)
    accepted = METHOD_KINDS[method]
    if normalised_kind(fmt) not in accepted:
        wanted = "; or ".join(KIND_FIELDS[kind] for kind in accepted)
        raise DataError(f"{section.train}: format {fmt} does not fit `tunekit {method}`, which needs {wanted}")
    train = check_rows(raw, fmt, section.train)
    if section.eval:
        eval_rows = check_rows(read_rows(section.eval, section.eval_split or section.split), fmt, section.eval)
        eval_source = section.eval
    elif section.eval_split:
        eval_rows = check_rows(read_rows(section.train, section.eval_split), fmt, section.train)
        eval_source = f"{section.train} [{section.eval_split}]"
    elif section.eval_fraction > 0:
        train, eval_rows = _split(train, section.eval_fraction, seed, section.train)
        eval_source = f"{section.eval_fraction:.0%} of {section.train} (seed {seed})"
    else:
        eval_rows, eval_source = [], "none"
    return Data(train, eval_rows, fmt, normalised_kind(fmt), eval_source)


def _split(rows: list[dict[str, Any]], fraction: float, seed: int, source: str) -> tuple[list, list]:
    n_eval = max(1, round(len(rows) * fraction))
    if len(rows) - n_eval < 1:
        raise DataError(f"{source}: {len(rows)} rows are too few to hold out data.eval_fraction={fraction}")
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    held = set(order[:n_eval])
    return [r for i, r in enumerate(rows) if i not in held], [r for i, r in enumerate(rows) if i in held]
