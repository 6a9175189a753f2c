"""Reward sources for `tunekit ppo` and `tunekit grpo`: a reward model, a classifier label, or a function.

    >>> from tunekit.config.sections import PPOSection
    >>> reward = reward_source(PPOSection(reward_function="tunekit.rl.rewards:s_words"))
    >>> reward(["Say something"], [" sun sea tree"])
    [0.6667]

A source is a callable `(prompts, completions) -> list[float]`: prompts as in the data (strings or
message lists), completions as decoded strings. Functions named `module:function` are imported as
they are, so a recipe can point at any module on the Python path. `load_function` is torch-free, so
`tunekit validate` can check the import.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from typing import Any

from tunekit.config.sections import RewardSourceSection
from tunekit.errors import UserError

Reward = Callable[[list[Any], list[str]], list[float]]


def load_function(spec: str) -> Callable[..., Any]:
    """Import `module:function`; a UserError names what is missing."""
    module_name, sep, name = spec.partition(":")
    if not sep or not module_name or not name:
        raise UserError(f"reward_function {spec!r}: expected module:function, e.g. tunekit.rl.rewards:s_words")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise UserError(f"reward_function {spec!r}: cannot import {module_name} ({err})") from None
    function = getattr(module, name, None)
    if not callable(function):
        raise UserError(f"reward_function {spec!r}: {module_name} has no function {name}")
    return function


def reward_source(section: RewardSourceSection, device: str = "cpu") -> Reward:
    if section.reward_function is not None:
        return _checked(load_function(section.reward_function), section.reward_function)
    assert section.reward_model is not None  # the schema asks for exactly one source
    if section.reward_label is None:
        from tunekit.rl.scoring import load_reward_model, score

        model, tokenizer = load_reward_model(section.reward_model)
        model.to(device)
        only_completion = section.reward_input == "completion"
        return lambda prompts, completions: score(
            model, tokenizer, [""] * len(prompts) if only_completion else prompts, completions
        )
    return _classifier(section, device)


def _checked(function: Callable[..., Any], spec: str) -> Reward:
    def call(prompts: list[Any], completions: list[str]) -> list[float]:
        values = list(function(prompts, completions))
        if len(values) != len(completions):
            raise UserError(f"reward_function {spec} returned {len(values)} values for {len(completions)} completions")
        try:
            return [float(v) for v in values]
        except (TypeError, ValueError):
            raise UserError(f"reward_function {spec} must return numbers, got {values[:3]!r}") from None

    return call


def _classifier(section: RewardSourceSection, device: str) -> Reward:
    """The logit of one label of a sequence classifier (e.g. a toxicity model's non-toxic class)."""
    from tunekit.data.chat import render_sequence
    from tunekit.rl.scoring import load_classifier, score_texts

    name = section.reward_model or ""
    model, tokenizer = load_classifier(name)
    model.to(device)
    index = _label_index(section.reward_label, model.config, name)
    only_completion = section.reward_input == "completion"

    def call(prompts: list[Any], completions: list[str]) -> list[float]:
        texts = (
            completions
            if only_completion
            else [render_sequence(tokenizer, p, c).text for p, c in zip(prompts, completions)]
        )
        return score_texts(model, tokenizer, texts, label=index)

    return call


def _label_index(label: int | str | None, config: Any, name: str) -> int:
    labels = {str(k): int(v) for k, v in (config.label2id or {}).items()}
    if isinstance(label, int) and 0 <= label < config.num_labels:
        return label
    if isinstance(label, str) and label in labels:
        return labels[label]
    raise UserError(
        f"reward_label {label!r} is not a label of {name}: use an index below {config.num_labels} or one of "
        f"{', '.join(sorted(labels)) or 'no names'}"
    )


WORD = re.compile(r"[A-Za-z]+")


def s_words(prompts: list[Any], completions: list[str]) -> list[float]:
    """Toy style reward for smoke tests: the fraction of a completion's words that start with "s" (0 if none)."""
    scores = []
    for completion in completions:
        words = WORD.findall(completion)
        share = sum(word.lower().startswith("s") for word in words) / len(words) if words else 0.0
        scores.append(round(share, 4))
    return scores


def brevity(prompts: list[Any], completions: list[str]) -> list[float]:
    """Toy reward: 1 for an empty completion, falling as 1 / (1 + words / 4)."""
    return [round(1 / (1 + len(WORD.findall(c)) / 4), 4) for c in completions]
