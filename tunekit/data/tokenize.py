"""SFT examples tokenised once, with their loss masks, cut or dropped at `data.max_length`, and cached.

    >>> from tunekit.config import load_recipe                                     # doctest: +SKIP
    >>> tokenized = sft_examples(plan.data, plan.tokenizer, recipe, chat_template)  # doctest: +SKIP
    >>> tokenized.train.column_names, tokenized.notes                              # doctest: +SKIP
    (['input_ids', 'labels'], ['3 of 288 train examples are longer than data.max_length=64 and were cut'])

The tokens are exactly those trl's SFTTrainer makes (its own preparation is skipped, so nothing is done
twice): text and prompt + completion through the tokenizer with EOS appended, chat messages through the
chat template, the loss on completions (where the prompt alone and prompt + completion stop agreeing) or on
assistant turns (the template's `{% generation %}` marks, or trl's training template for the model), or on
every token with `data.train_on: all`. An example longer than `data.max_length` keeps its start
(`data.too_long: truncate`) or is left out (`drop`); one whose loss-carrying tokens all fall past the cut
is left out either way, and counted. With `data.packing`, trl's best-fit-decreasing packing fills rows of
`max_length` tokens. The result is cached (tunekit.data.cache) under a key of everything above.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from tunekit.data import Data, _per_source, is_stream
from tunekit.data.cache import cache_key, cached, cached_map, data_root, processes_for
from tunekit.errors import DataError

IGNORE = -100  # the label of a token that carries no loss


@dataclass
class Tokenized:
    train: Any  # datasets.Dataset (or IterableDataset) of input_ids / labels (+ seq_lengths when packed)
    eval: Any  # datasets.Dataset, or None
    notes: list[str] = field(default_factory=list)  # what was cut or left out, for the run's first lines
    built: bool = False  # tokenised now (False: loaded from the cache)
    rows: dict[str, list[int]] = field(default_factory=dict)  # split -> rows each source gave after the cuts


def tokenizer_fingerprint(tokenizer: Any, chat_template: str | None) -> str:
    """The vocabulary and merges, the special tokens and the chat template: what tokenising depends on."""
    digest = hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode())
    digest.update(repr(sorted(tokenizer.special_tokens_map.items())).encode())
    digest.update((chat_template or tokenizer.chat_template or "").encode())
    return digest.hexdigest()[:16]


def sft_examples(data: Data, tokenizer: Any, recipe: Any, chat_template: str | None, num_proc: int | None) -> Tokenized:
    """Train and eval of an SFT recipe as trainer-ready tokens (cached), or a DataError when a split keeps no
    example that carries loss."""
    settings = {
        "kind": data.kind,
        "completion_only": recipe.data.train_on == "completion",
        "assistant_only": data.kind == "messages" and recipe.data.train_on == "completion",
        "chat_template": chat_template,
        "max_length": recipe.data.max_length,
        "too_long": recipe.data.too_long,
    }
    identity = {
        "step": "sft-tokens",
        "tokenizer": tokenizer_fingerprint(tokenizer, chat_template),
        **{k: v for k, v in settings.items() if k != "chat_template"},
    }
    root = data_root(recipe.data.cache)
    out = Tokenized(None, None)
    for split, rows in (("train", data.train), ("eval", data.eval)):
        if rows is None:
            continue
        tokens = _tokens(rows, tokenizer, settings, identity, split, data, root, num_proc, out)
        kept, note = _kept(tokens, split, recipe, data)
        if note:
            out.notes.append(note)
        if not is_stream(kept):
            out.rows[split] = _per_source(kept, len(data.sources))
        if recipe.data.packing and split == "train":
            kept = _packed(
                kept,
                recipe.data.max_length,
                cache_key({**identity, "data": data.fingerprints[split], "packed": True}),
                root,
            )
        setattr(out, split, kept.remove_columns([c for c in kept.column_names or [] if c.startswith("_")]))
    return out


def _tokens(
    rows: Any,
    tokenizer: Any,
    settings: dict[str, Any],
    identity: dict[str, Any],
    split: str,
    data: Data,
    root: Any,
    num_proc: int | None,
    out: Tokenized,
) -> Any:
    kwargs = {"tokenizer": tokenizer, **settings}
    columns = [c for c in rows.column_names if c != "_source"]
    if is_stream(rows):
        return rows.map(tokenize_sft, batched=True, fn_kwargs=kwargs, remove_columns=columns)
    key = cache_key({**identity, "data": data.fingerprints[split]})
    procs = processes_for(rows.num_rows, num_proc)
    tokens, built = cached_map(rows, tokenize_sft, key, f"tokenising {split}", root, procs, kwargs, columns)
    out.built = out.built or built
    return tokens


def encoded(
    rows: Any,
    function: Any,
    kwargs: dict[str, Any],
    step: str,
    data: Data,
    split: str,
    tokenizer: Any,
    cache: bool,
    num_proc: int | None,
    extra: dict[str, Any] | None = None,
    one_to_one: bool = True,
) -> Any:
    """`rows` through a batched encoding `function` (the method's own: classify, seq2seq, pretrain blocks),
    cached under a key of the data, the tokenizer, `step` and `extra` (the settings the function reads);
    a stream is encoded as it is read. None stays None. A function that makes as many rows as it reads keeps
    `_source` (`one_to_one`); one that regroups them (pretrain's blocks) drops it."""
    if rows is None:
        return None
    columns = [c for c in rows.column_names or [] if c != "_source" or not one_to_one]
    if is_stream(rows):
        return rows.map(function, batched=True, fn_kwargs=kwargs, remove_columns=columns)
    key = cache_key(
        {
            "step": step,
            "data": data.fingerprints[split],
            "tokenizer": tokenizer_fingerprint(tokenizer, None),
            **(extra or {}),
        }
    )
    procs = processes_for(rows.num_rows, num_proc)
    done, _ = cached_map(rows, function, key, f"{step}: {split}", data_root(cache), procs, kwargs, columns)
    return done


def tokenize_sft(
    batch: dict[str, list[Any]],
    tokenizer: Any,
    kind: str,
    completion_only: bool,
    assistant_only: bool,
    chat_template: str | None,
    max_length: int,
    too_long: str,
) -> dict[str, list[Any]]:
    """A batch of normalised rows -> input_ids, labels (cut at max_length when truncating), `_length` (tokens
    before the cut) and `_keep` (the example carries loss, and is not too long to keep)."""
    ids, masks = _ids_and_masks(batch, tokenizer, kind, completion_only, assistant_only, chat_template)
    out: dict[str, list[Any]] = {"input_ids": [], "labels": [], "_length": [], "_keep": []}
    for tokens, mask in zip(ids, masks):
        labels = [t if m else IGNORE for t, m in zip(tokens, mask)]
        length = len(tokens)
        if too_long == "truncate":
            tokens, labels = tokens[:max_length], labels[:max_length]
        keep = any(label != IGNORE for label in labels[:max_length]) and (
            too_long == "truncate" or length <= max_length
        )
        for name, value in (("input_ids", tokens), ("labels", labels), ("_length", length), ("_keep", keep)):
            out[name].append(value)
    return out


def _ids_and_masks(
    batch: dict[str, list[Any]],
    tokenizer: Any,
    kind: str,
    completion_only: bool,
    assistant_only: bool,
    chat_template: str | None,
) -> tuple[list[list[int]], list[list[int]]]:
    """Token ids and loss masks (1: carries loss), as trl's SFTTrainer tokenises each kind of row."""
    eos = tokenizer.eos_token or ""
    template = {"chat_template": chat_template} if chat_template else {}
    if kind == "messages":
        done = tokenizer.apply_chat_template(
            batch["messages"], tokenize=True, return_dict=True, return_assistant_tokens_mask=assistant_only, **template
        )
        ids = [list(x) for x in done["input_ids"]]
        masks = [list(m) for m in done["assistant_masks"]] if assistant_only else [[1] * len(x) for x in ids]
        return ids, masks
    if kind == "text":
        ids = tokenizer([t if t.endswith(eos) else t + eos for t in batch["text"]])["input_ids"]
        return ids, [[1] * len(x) for x in ids]
    prompts, completions = batch["prompt"], batch["completion"]
    if prompts and isinstance(prompts[0], list):  # chat prompt and completion
        head = tokenizer.apply_chat_template(
            prompts, tokenize=True, return_dict=True, add_generation_prompt=True, **template
        )["input_ids"]
        full = tokenizer.apply_chat_template(
            [p + c for p, c in zip(prompts, completions)], tokenize=True, return_dict=True, **template
        )["input_ids"]
    else:
        head = tokenizer(prompts)["input_ids"]
        full = tokenizer([p + (c if c.endswith(eos) else c + eos) for p, c in zip(prompts, completions)])["input_ids"]
    masks = []
    for prompt_ids, ids in zip(head, full):
        shared = _common_prefix(prompt_ids, ids)
        masks.append([0] * shared + [1] * (len(ids) - shared) if completion_only else [1] * len(ids))
    return [list(x) for x in full], masks


def _packed(tokens: Any, length: int, key: str, root: Any) -> Any:
    """trl's best-fit-decreasing packing into rows of `length` tokens (cached like the tokens)."""
    from trl import pack_dataset

    columns = tokens.select_columns(["input_ids", "labels"])
    packed, _ = cached(lambda files: pack_dataset(columns, length, "bfd", map_kwargs=files), key, "packing train", root)
    return packed


def _common_prefix(a: list[int], b: list[int]) -> int:
    """Where the prompt alone and prompt + completion stop agreeing: the completion starts there (trl's rule)."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _kept(tokens: Any, split: str, recipe: Any, data: Data) -> tuple[Any, str]:
    """The examples that carry loss (and fit, with `drop`); a split that keeps none is a DataError."""
    limit = recipe.data.max_length
    if is_stream(tokens):
        return tokens.filter(lambda keep: keep, input_columns="_keep"), ""
    import numpy as np

    table = tokens.select_columns(["_length", "_keep"]).with_format("arrow")[0 : tokens.num_rows]
    lengths, keep = table["_length"].to_numpy(), table["_keep"].to_numpy(zero_copy_only=False)
    total, long, kept = len(keep), int((lengths > limit).sum()), int(keep.sum())
    source = data.sources[0].name if split == "train" else data.eval_source
    if kept == 0:
        what = (
            "every loss-carrying token of"
            if recipe.data.too_long == "truncate"
            else "the cut, or is longer than it, in"
        )
        raise DataError(
            f"{source}: data.max_length={limit} cuts away {what} all {total:,} {split} examples (they are "
            f"{int(lengths.min())} to {int(lengths.max())} tokens); raise data.max_length to at least "
            f"{int(np.median(lengths)) + 16} for half of them to train"
        )
    notes = []
    if long:
        action = "cut" if recipe.data.too_long == "truncate" else "left out (data.too_long: drop)"
        notes.append(
            f"{long:,} of {total:,} {split} examples are longer than data.max_length={limit} and were {action}"
        )
    lost = total - kept - (long if recipe.data.too_long == "drop" else 0)
    if lost > 0:
        notes.append(
            f"{lost:,} of {total:,} {split} examples keep no loss-carrying token within "
            f"data.max_length={limit} and are left out"
        )
    selected = tokens if kept == total else tokens.select(np.flatnonzero(keep))
    return selected, "; ".join(notes)
