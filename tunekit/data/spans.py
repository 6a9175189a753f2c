"""T5's span corruption: random spans of a block become sentinel tokens in the input, and the target spells them out.

    >>> import random
    >>> inputs, target = corrupt(list(range(10, 30)), [99, 98, 97], eos=1, density=0.15, mean_span=3,
    ...                          rng=random.Random(0))
    >>> inputs  # 20 tokens at 15% noise: 3 hidden, in one span of 3
    [10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 99, 1]
    >>> target
    [99, 27, 28, 29, 1]

As in T5 (Raffel et al. 2020, and `random_spans_noise_mask` of transformers' T5 pretraining example):
round(density x length) tokens are noise, in round(noise / mean_span) spans; span and gap lengths are random
segmentations, the block opens with kept tokens, each noise span is replaced by the next sentinel
(`<extra_id_0>`, `<extra_id_1>`, ...) in the input, and the target is each sentinel followed by the tokens it
hid; both end with EOS. Pure Python (no numpy, no torch): `tunekit validate` shows a corrupted example too.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from tunekit.errors import UserError

SENTINEL = "<extra_id_{}>"


def span_counts(length: int, density: float, mean_span: float) -> tuple[int, int]:
    """(noise tokens, noise spans) for a block of `length` tokens: at least one of each, at least one kept token."""
    noise = min(max(round(length * density), 1), length - 1)
    return noise, max(round(noise / mean_span), 1)


def _segments(items: int, count: int, rng: random.Random) -> list[int]:
    """`items` split into `count` non-empty runs at random cut points."""
    cuts = sorted(rng.sample(range(1, items), count - 1)) if count > 1 else []
    edges = [0, *cuts, items]
    return [b - a for a, b in zip(edges, edges[1:])]


def noise_mask(length: int, density: float, mean_span: float, rng: random.Random) -> list[bool]:
    """True where a token is hidden: spans of noise between runs of kept tokens, starting with kept ones."""
    noise, spans = span_counts(length, density, mean_span)
    spans = min(spans, length - noise)  # every span needs a kept run before it
    mask: list[bool] = []
    for kept, hidden in zip(_segments(length - noise, spans, rng), _segments(noise, spans, rng)):
        mask += [False] * kept + [True] * hidden
    return mask


def corrupt(
    ids: list[int], sentinels: list[int], eos: int, density: float, mean_span: float, rng: random.Random
) -> tuple[list[int], list[int]]:
    """(encoder input, decoder target) of one block; `sentinels[i]` stands for the i-th hidden span."""
    inputs: list[int] = []
    target: list[int] = []
    span, previous = -1, False
    for token, hidden in zip(ids, noise_mask(len(ids), density, mean_span, rng)):
        if hidden and not previous:  # a new span: its sentinel in both
            span += 1
            inputs.append(sentinels[span])
            target.append(sentinels[span])
        (target if hidden else inputs).append(token)
        previous = hidden
    return inputs + [eos], target + [eos]


def sentinel_ids(
    token_to_id: Callable[[str], int | None], block: int, density: float, mean_span: float, model: str
) -> list[int]:
    """The ids of `<extra_id_0>`, `<extra_id_1>`, ... a block of `block` tokens needs; UserError when the tokenizer
    lacks them (BART has none) or has fewer than the block's spans."""
    _, spans = span_counts(block, density, mean_span)
    found: list[int] = []
    while (token := token_to_id(SENTINEL.format(len(found)))) is not None:
        found.append(token)
    if not found:
        raise UserError(
            f"pretrain.objective: span_corruption replaces spans with T5's sentinel tokens (<extra_id_0>, ...); the "
            f"tokenizer of {model} has none"
        )
    if spans > len(found):
        raise UserError(
            f"pretrain.block_size: a block of {block} tokens has {spans} noise spans at pretrain.noise_density "
            f"{density:g} and mean_span_length {mean_span:g}, more than the {len(found)} sentinel tokens of {model}; "
            f"lower pretrain.block_size or raise pretrain.mean_span_length"
        )
    return found[:spans]
