"""Training data as Arrow datasets: sources read, formats detected, every row checked and normalised, sources
mixed, eval held out. No torch; every row goes through `datasets`, never a Python list of rows.

    >>> from tunekit.config.sections import DataSection
    >>> data = load_data(DataSection(train="builtin:reversal"), seed=0, method="sft")
    >>> data.format, data.kind, data.train.num_rows, data.eval.num_rows
    ('messages', 'messages', 288, 32)
    >>> data.sources[0].rows
    288

A split (`data.train`, `data.eval`) is one source or several (`[{path, split, format, weight, columns,
roles}]`). Each source is opened (tunekit.data.sources), its field names mapped (`columns`, `roles`), its
format detected from its first row (or taken from the recipe), and every row checked and normalised to the
form trl takes (tunekit.data.formats) in a batched, parallel, cached `datasets.map`
(tunekit.data.cache): a bad row anywhere stops the run, naming the file, the row and the field. Several
sources are concatenated or interleaved in proportion to their weights (`data.mix`); they must all
normalise to the same kind of row. With `streaming`, sources are read as they train.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from tunekit.config.schema import Recipe
from tunekit.config.sections import DataSection, Source
from tunekit.data.formats import (
    KIND_COLUMNS,
    class_labels,
    describe_formats,
    is_conversational,
    kind_features,
    normalise_batch,
    normalised_kind,
    renamed,
    resolve_format,
)
from tunekit.data.sources import Opened, open_source
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
PREVIEW_ROWS = 200  # rows of a stream checked before training starts (the rest as they come)


@dataclass
class SourceRows:
    """One source of a split, and what it gave."""

    name: str
    format: str
    rows: int | None  # rows it gave to training (after the eval hold-out); None: a stream, not counted ahead
    weight: float = 1.0


@dataclass
class Data:
    train: Any  # datasets.Dataset (or IterableDataset when streaming) of normalised rows
    eval: Any  # datasets.Dataset, or None without eval data
    format: str  # as declared or detected: text, prompt_completion, messages, alpaca, sharegpt, ...
    kind: str  # the form rows were normalised to: text, prompt_completion, messages, preference, unpaired,
    # prompt or classification (tunekit.data.formats.KIND_COLUMNS)
    eval_source: str  # where eval rows came from, for messages
    labels: list[str] = field(default_factory=list)  # classification, tagging: train's label set, in id order
    sources: list[SourceRows] = field(default_factory=list)
    conversational: bool = False  # rows hold chat messages, so the model needs a chat template
    streaming: bool = False
    fingerprints: dict[str, str] = field(default_factory=dict)  # split -> what its rows depend on (cache keys)
    scheme: str = ""  # tagging: iob2, iob1 or plain (tunekit.data.tagging)

    @property
    def names(self) -> str:
        """The train sources, for messages."""
        return " + ".join(source.name for source in self.sources)

    @property
    def train_rows(self) -> int | None:
        """Rows in train, or None for a stream."""
        return None if self.streaming else self.train.num_rows

    @property
    def eval_rows(self) -> int:
        return 0 if self.eval is None else self.eval.num_rows


def load_data(
    section: DataSection,
    seed: int,
    method: str,
    label_order: list[str] | None = None,
    cache: bool | None = None,
    tag_scheme: str = "auto",
) -> Data:
    """`label_order`: classification labels or tags in id order (`classify.labels`, `tag.labels`); default:
    train's, sorted. `tag_scheme`: `tag.scheme` (tunekit.data.tagging)."""
    cache = section.cache if cache is None else cache
    streaming = bool(getattr(section, "streaming", False))
    specs = sources_of(section.train, section)
    train, parts = _split_of(specs, section, method, cache, streaming, seed)
    fmt = _format_name(parts)
    kind = parts[0][2]
    conversational = parts[0][3]
    evaluation, eval_source, eval_parts = None, "none", parts
    if section.eval is not None:
        evaluation, eval_parts = _split_of(
            sources_of(section.eval, section, eval_split=True), section, method, cache, False, seed
        )
        _same_kind(parts + eval_parts, "data.eval")
        eval_source = _names(section.eval)
    elif section.eval_split:
        eval_specs = [spec.model_copy(update={"split": section.eval_split}) for spec in specs]
        evaluation, eval_parts = _split_of(eval_specs, section, method, cache, False, seed)
        eval_source = f"{_names(section.train)} [{section.eval_split}]"
    elif streaming and getattr(section, "eval_rows", None):
        rows = section.eval_rows  # type: ignore[attr-defined]
        evaluation, train = _held_out_stream(train, rows), train.skip(rows)
        eval_source = f"the first {rows} rows of {_names(section.train)}"
    elif not streaming and section.eval_fraction > 0:
        train, evaluation = _hold_out(train, section.eval_fraction, seed, _names(section.train))
        eval_source = f"{section.eval_fraction:.0%} of {_names(section.train)} (seed {seed})"
    if streaming:  # a stream is shuffled as it is read, within a seeded buffer (the trainer cannot shuffle it)
        train = train.shuffle(seed=seed, buffer_size=section.shuffle_buffer)  # type: ignore[attr-defined]
    labels, scheme = [], ""
    if kind == "classification":
        labels = _labels(train, evaluation, parts, eval_parts, label_order)
    if kind == "tagging":
        train, evaluation, labels, scheme = _tags(train, evaluation, parts, eval_parts, label_order, tag_scheme)
    counted = None if streaming else _per_source(train, len(parts))
    sources = [
        SourceRows(opened.name, f, None if counted is None else counted[i], spec.weight)
        for i, (opened, spec, f) in enumerate((p[0], p[1], p[4]) for p in parts)
    ]
    fingerprints = _fingerprints(parts, eval_parts, section, seed)
    return Data(
        _plain(train),
        None if evaluation is None else _plain(evaluation),
        fmt,
        kind,
        eval_source,
        labels,
        sources,
        conversational,
        streaming,
        fingerprints,
        scheme,
    )


def recipe_data(recipe: Recipe) -> Data:
    """The data of a recipe, as a run and `tunekit validate` read it: `load_data` with the label order
    (`classify.labels`, `tag.labels`) and the tag scheme (`tag.scheme`) the recipe sets."""
    from tunekit.config.schema import ClassifyRecipe, TagRecipe

    order = recipe.classify.labels if isinstance(recipe, ClassifyRecipe) else None
    scheme = "auto"
    if isinstance(recipe, TagRecipe):
        order, scheme = recipe.tag.labels, recipe.tag.scheme
    return load_data(recipe.data, recipe.training.seed, recipe.method, order, tag_scheme=scheme)


def _fingerprints(parts: list[Part], eval_parts: list[Part], section: DataSection, seed: int) -> dict[str, str]:
    """What each split's rows depend on: the sources' content, formats and field maps, the mix and the hold-out."""
    from tunekit.data.cache import cache_key

    def described(chosen: list[Part]) -> list[dict[str, Any]]:
        return [
            {"content": o.fingerprint, "format": f, **spec.model_dump(exclude={"path"})} for o, spec, _, _, f in chosen
        ]

    split = {
        "mix": section.mix,
        "mix_stop": section.mix_stop,
        "seed": seed,
        "eval_fraction": section.eval_fraction,
        "eval_split": section.eval_split,
        "eval_rows": getattr(section, "eval_rows", None),
        "has_eval": section.eval is not None,
    }
    return {
        "train": cache_key({"split": "train", "sources": described(parts), **split}),
        "eval": cache_key({"split": "eval", "sources": described(eval_parts), **split}),
    }


def sources_of(value: str | list[Source], section: DataSection, eval_split: bool = False) -> list[Source]:
    """A split's sources, each with the section's split and format filled in where it names none."""
    listed = [Source(path=value)] if isinstance(value, str) else list(value)
    split = (section.eval_split or section.split) if eval_split else section.split
    return [
        spec.model_copy(update={"split": spec.split or split, "format": spec.format or section.format})
        for spec in listed
    ]


def _names(value: str | list[Source]) -> str:
    return value if isinstance(value, str) else " + ".join(spec.path for spec in value)


Part = tuple[Opened, Source, str, bool, str]  # opened source, its spec, kind, conversational, format


def _split_of(
    specs: list[Source], section: DataSection, method: str, cache: bool, streaming: bool, seed: int
) -> tuple[Any, list[Part]]:
    """The sources of one split, each checked and normalised, then mixed into one dataset."""
    parts, datasets_ = [], []
    for number, spec in enumerate(specs):
        opened = open_source(spec.path, spec.split or "train", streaming, cache)
        first = _first_row(opened)
        fmt = resolve_format(spec.format or "auto", renamed(first, spec.columns, spec.roles), spec.path)
        _fits_method(fmt, method, spec.path)
        conversational = _first_conversational(first, fmt, spec)
        normalised = _normalised(opened, spec, fmt, conversational, number, section, cache)
        parts.append((opened, spec, normalised_kind(fmt), conversational, fmt))
        datasets_.append(normalised)
    _same_kind(parts, "data.train")
    return _mix(datasets_, specs, section, seed, streaming), parts


def _first_row(opened: Opened) -> dict[str, Any]:
    for row in opened.dataset.take(1) if is_stream(opened.dataset) else [opened.dataset[0]]:
        if not isinstance(row, dict):
            raise DataError(f"{opened.name}, row {opened.number(0)}: expected an object, got {type(row).__name__}")
        return row
    raise DataError(f"{opened.name}: no rows")


def first_rows(dataset: Any, count: int) -> list[dict[str, Any]]:
    """The first `count` rows as Python dicts (of a dataset or a stream; none of None), without tunekit's
    bookkeeping columns."""
    if dataset is None:
        return []
    rows = (
        list(dataset.take(count)) if is_stream(dataset) else dataset.select(range(min(count, len(dataset)))).to_list()
    )
    return [{k: v for k, v in row.items() if not k.startswith("_")} for row in rows]


def is_stream(dataset: Any) -> bool:
    import datasets

    return isinstance(dataset, datasets.IterableDataset)


def _fits_method(fmt: str, method: str, source: str) -> None:
    accepted = METHOD_KINDS[method]
    if normalised_kind(fmt) not in accepted:
        wanted = "; or ".join(KIND_FIELDS[kind] for kind in accepted)
        raise DataError(f"{source}: format {fmt} does not fit `tunekit {method}`, which needs {wanted}")


def _first_conversational(first: dict[str, Any], fmt: str, spec: Source) -> bool:
    from tunekit.data.formats import RowError, normalise

    try:
        return is_conversational(normalise(renamed(first, spec.columns, spec.roles), fmt))
    except RowError:
        return "messages" in first or "conversations" in first or isinstance(first.get("prompt"), list)


def _normalised(
    opened: Opened, spec: Source, fmt: str, conversational: bool, number: int, section: DataSection, cache: bool
) -> Any:
    """Every row of a source checked and in trl's form; the first bad row raises DataError naming it."""
    from tunekit.data.cache import cache_key, cached_map, data_root, processes_for

    kwargs = {
        "fmt": fmt,
        "columns": spec.columns,
        "roles": spec.roles,
        "conversational": conversational,
        "source": number,
    }
    names = opened.dataset.column_names
    features = kind_features(normalised_kind(fmt), conversational)
    if is_stream(opened.dataset):
        stream = opened.dataset.map(
            normalise_batch, batched=True, with_indices=True, fn_kwargs=kwargs, remove_columns=names, features=features
        )
        _check_preview(opened, stream.take(PREVIEW_ROWS), fmt)
        return stream.map(
            _raise_on_problem, batched=True, fn_kwargs={"name": opened.name, "fmt": fmt}, features=stream.features
        )
    key = cache_key({"step": "normalise", **kwargs, "content": opened.fingerprint})
    procs = processes_for(opened.dataset.num_rows, section.num_proc)
    dataset, _ = cached_map(
        opened.dataset,
        normalise_batch,
        key,
        f"checking {opened.name}",
        data_root(cache),
        procs,
        kwargs,
        names,
        with_indices=True,
        features=features,
    )
    _check_problems(dataset, opened, fmt)
    return dataset


def _check_problems(dataset: Any, opened: Opened, fmt: str) -> None:
    import pyarrow.compute as pc

    problems = dataset.data.column("_problem")
    if problems.null_count == len(problems):
        return
    first = pc.index(pc.is_valid(problems), True).as_py()
    index = dataset[first]["_index"]
    raise DataError(f"{opened.name}, row {opened.number(index)}: {problems[first].as_py()} (format {fmt})")


def _check_preview(opened: Opened, rows: Any, fmt: str) -> None:
    for row in rows:
        if row["_problem"] is not None:
            raise DataError(f"{opened.name}, row {opened.number(row['_index'])}: {row['_problem']} (format {fmt})")


def _raise_on_problem(batch: dict[str, list[Any]], name: str, fmt: str) -> dict[str, list[Any]]:
    """Streams are checked as they come: a bad row stops training where it is met."""
    for index, problem in zip(batch["_index"], batch["_problem"]):
        if problem is not None:
            raise DataError(f"{name}, row {index + 1}: {problem} (format {fmt})")
    return batch


def _same_kind(parts: list[Part], key: str) -> None:
    first_opened, _, kind, conversational, fmt = parts[0]
    for opened, _, other_kind, other_conv, other_fmt in parts[1:]:
        if (other_kind, other_conv) != (kind, conversational):
            shown = lambda k, c: f"{k}{' (messages)' if c else ''}"  # noqa: E731
            raise DataError(
                f"{key}: {opened.name} ({other_fmt}) normalises to {shown(other_kind, other_conv)} rows, "
                f"{first_opened.name} ({fmt}) to {shown(kind, conversational)}; sources trained together need "
                "one kind of row: map their fields with `columns` or train them apart"
            )


def _mix(datasets_: list[Any], specs: list[Source], section: DataSection, seed: int, streaming: bool) -> Any:
    import datasets

    if len(datasets_) == 1:
        return datasets_[0]
    if section.mix == "concat":
        return datasets.concatenate_datasets(datasets_)
    total = sum(spec.weight for spec in specs)
    return datasets.interleave_datasets(
        datasets_,
        probabilities=[spec.weight / total for spec in specs],
        seed=seed,
        stopping_strategy=section.mix_stop,
    )


def _hold_out(train: Any, fraction: float, seed: int, source: str) -> tuple[Any, Any]:
    """A seeded share of the rows for eval (the same rows for the same seed and row count)."""
    rows = train.num_rows
    n_eval = max(1, round(rows * fraction))
    if rows - n_eval < 1:
        raise DataError(f"{source}: {rows} rows are too few to hold out data.eval_fraction={fraction}")
    order = list(range(rows))
    random.Random(seed).shuffle(order)
    held = sorted(order[:n_eval])
    chosen = set(held)
    kept = [i for i in range(rows) if i not in chosen]
    return train.select(kept), train.select(held)


def _held_out_stream(stream: Any, rows: int) -> Any:
    import datasets

    taken = list(stream.take(rows))  # the held-out rows themselves (data.eval_rows: a few hundred)
    return datasets.Dataset.from_list(taken)


def _labels(
    train: Any, evaluation: Any, parts: list[Part], eval_parts: list[Part], order: list[str] | None
) -> list[str]:
    """Train's label set; an eval label train never shows cannot be predicted, so it stops the run."""
    train_name = parts[0][0].name
    labels = class_labels(train.unique("label"))
    if len(labels) < 2:
        raise DataError(f"{train_name}: classification needs at least two labels; every train row has {labels[0]!r}")
    known = set(labels)
    if order is not None:
        missing = [name for name in labels if name not in order]
        if missing:
            raise UserError(f"classify.labels: {', '.join(map(repr, missing))} from {train_name} missing from the list")
        labels = list(order)
    unseen = [label for label in (evaluation.unique("label") if evaluation is not None else []) if label not in known]
    if unseen:
        row = evaluation.filter(lambda label: label == unseen[0], input_columns="label")[0]
        opened = eval_parts[row["_source"]][0]
        held = " (held out by data.eval_fraction or data.eval_split)" if eval_parts is parts else ""
        raise DataError(
            f"{opened.name}, row {opened.number(row['_index'])}: field 'label': {unseen[0]!r} never appears in the "
            f"training rows{held}; train has {', '.join(labels)}"
        )
    return labels


def _tags(
    train: Any, evaluation: Any, parts: list[Part], eval_parts: list[Part], order: list[str] | None, scheme: str
) -> tuple[Any, Any, list[str], str]:
    """Tag names in id order and the scheme (tunekit.data.tagging's checks, each naming file and row); tags
    stored as integer ids (their decimal strings in Arrow) are named from `tag.labels` and written back."""
    sides = []
    for rows, chosen in ((train, parts), (evaluation, eval_parts)):
        tags = [] if rows is None else rows["tags"]
        integers = bool(tags) and bool(tags[0]) and all(tag.isdigit() for tag in tags[0])
        listed = [{"tags": [int(t) for t in row] if integers and all(map(str.isdigit, row)) else row} for row in tags]
        sides.append((listed, _RowNumbers(rows, chosen), integers))
    (train_rows, train_numbers, _), (eval_rows, eval_numbers, _) = sides
    eval_name = eval_parts[0][0].name if evaluation is not None else ""
    labels, chosen_scheme = resolve_tags(
        train_rows, train_numbers, parts[0][0].name, eval_rows, eval_numbers, eval_name, order, scheme
    )
    named = []
    for rows, (listed, _, integers) in zip((train, evaluation), sides):
        if rows is not None and integers:  # resolve_tags named them in place
            rows = rows.map(_named_tags, with_indices=True, input_columns=["tags"], fn_kwargs={"listed": listed})
        named.append(rows)
    return named[0], named[1], labels, chosen_scheme


def _named_tags(_: list[str], index: int, listed: list[dict[str, Any]]) -> dict[str, list[str]]:
    return {"tags": listed[index]["tags"]}


class _RowNumbers:
    """The number a user would look for of each row of a mixed split, worked out only when a message needs it."""

    def __init__(self, rows: Any, parts: list[Part]) -> None:
        self.rows, self.parts = rows, parts

    def __getitem__(self, position: int) -> int:
        row = self.rows[position]
        return self.parts[row["_source"]][0].number(row["_index"])

    def __len__(self) -> int:
        return 0 if self.rows is None else len(self.rows)


def rows_of(dataset: Any) -> list[dict[str, Any]]:
    """Every row as a Python dict, for the methods whose data is small by nature (tags, embedding pairs)."""
    return [] if dataset is None else first_rows(dataset, len(dataset))


def _per_source(train: Any, sources: int) -> list[int]:
    """Rows each source gave to `train` (through any select: `.data` would be the table before it)."""
    import numpy as np

    if not train.num_rows:
        return [0] * sources
    column = train.select_columns(["_source"]).with_format("arrow")[0 : train.num_rows]["_source"]
    return [int(c) for c in np.bincount(column.to_numpy(), minlength=sources)]


def _format_name(parts: list[Part]) -> str:
    formats = list(dict.fromkeys(p[4] for p in parts))
    return formats[0] if len(formats) == 1 else "+".join(formats)


def _plain(dataset: Any) -> Any:
    """The normalised columns and `_source` (which source gave the row, until training counts them)."""
    return dataset.remove_columns([c for c in ("_problem", "_index") if c in (dataset.column_names or [])])


__all__ = ["KIND_COLUMNS", "Data", "SourceRows", "describe_formats", "load_data", "sources_of"]
