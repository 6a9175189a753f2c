"""`tunekit validate`: a recipe checked without training, and what it will train on, shown.

    >>> from tunekit.config import load_recipe
    >>> report = check_recipe(load_recipe("recipes/quickstart.yaml"))
    >>> report.data.format, report.stats.max_length
    ('messages', 64)

Torch-free: the model is resolved (tunekit.models.refs), not loaded; data is read and every row checked
with the same checks a run makes (tunekit.train.preflight); examples are rendered with the model's
tokenizer when it is available offline.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunekit.config import Recipe
from tunekit.config.schema import ClassifyRecipe, GRPORecipe, PPORecipe, PretrainRecipe
from tunekit.data import Data, load_data, sources_of
from tunekit.data.preview import Preview, Rendered
from tunekit.data.sources import resolve_source
from tunekit.errors import DataError, UserError
from tunekit.models.refs import ModelRef, resolve
from tunekit.models.tiny import tiny_arch
from tunekit.train.preflight import (
    MAX_ROWS_MEASURED,
    check_loss_survives,
    check_reward_source,
    check_targets,
    sample_rows,
)


@dataclass
class LengthStats:
    measured: int  # sequences measured (a preference pair gives two)
    sampled_from: int | None  # rows in the data when the measured ones are a sample of them
    min: int
    median: float
    p95: int
    max: int
    truncated: int  # measured examples longer than the limit
    max_length: int  # the limit: data.max_length, ppo.max_prompt_length, or the longest (nothing cuts)
    limit_key: str  # the key the limit comes from; "" when nothing cuts the sequences
    no_loss: int  # measured examples whose loss-carrying tokens all fall past max_length
    kept_tokens: int  # tokens of the measured examples after truncation to max_length


@dataclass
class Report:
    recipe: Recipe
    model_location: str
    data: Data | None  # None when Hub data cannot be read offline
    examples: list[Rendered] = field(default_factory=list)
    example_labels: list[str] = field(default_factory=list)  # "" or chosen / rejected / desirable ...
    stats: LengthStats | None = None
    notes: list[str] = field(default_factory=list)
    per_source: list[LengthStats | None] = field(default_factory=list)  # several sources: each one's statistics


def check_recipe(recipe: Recipe, examples: int = 3) -> Report:
    from tunekit.train.rundir import check_output_dir
    from tunekit.train.trackers import check_installed

    check_output_dir(recipe)  # never the current or home directory, the model's or the data's folder
    check_installed(recipe.training.report_to)
    ref = resolve(recipe.model.name_or_path, recipe.model.revision)
    preview = _preview(ref)
    check_reward_source(recipe)
    try:
        data = load_data(recipe.data, recipe.training.seed, recipe.method, _label_order(recipe))
    except DataError as err:
        if not any(_is_hub_dataset(spec.path) for spec in sources_of(recipe.data.train, recipe.data)):
            raise
        # A Hub dataset that cannot be read here (offline, or not cached) is checked when training starts.
        report = Report(recipe, ref.describe(), None)
        report.notes.append(f"data rows not checked: {err}")
        return report
    report = Report(recipe, ref.describe(), data)
    if isinstance(recipe, PretrainRecipe):
        objective = {
            "clm": "next-token prediction",
            "mlm": f"the masked {recipe.pretrain.mlm_probability:.0%} of tokens",
            "auto": "next tokens (decoder-only) or masked tokens (encoder-only)",
        }[recipe.pretrain.objective]
        size = recipe.pretrain.block_size
        report.notes.append(
            f"pretrain: documents are concatenated and cut into blocks of {size} tokens; loss on {objective}"
        )
    if preview is None:
        report.notes.append(
            "tokenizer not available offline: examples and token statistics skipped (training will download it)"
        )
        return report
    if data.conversational and preview.template is None:
        raise UserError(f"{recipe.model.name_or_path} has no chat template, and {data.names} holds chat messages")
    seq2seq = recipe.method == "sft" and ref.is_encoder_decoder
    if seq2seq:
        check_targets(data, data.names)
        report.notes.append(
            "encoder-decoder model: each example shows the encoder's input, then the target "
            "(decoder, marked); each side is cut at data.max_length on its own"
        )
    rendered, labels = _rendered(preview, data.kind, sample_rows(data.train), recipe.train_on, seq2seq)
    if recipe.method == "sft" and not seq2seq:
        report.notes += check_loss_survives(preview, data, recipe, train=rendered)
    report.examples = rendered[:examples]
    report.example_labels = labels[:examples]
    rows = data.train_rows
    sampled = rows is None or rows > MAX_ROWS_MEASURED
    report.stats = _length_stats(rendered, None if not sampled else rows, _limit(recipe))
    if len(data.sources) > 1 and not data.streaming:
        report.per_source = _per_source_stats(data, preview, recipe, seq2seq)
    return report


def _per_source_stats(data: Data, preview: Preview, recipe: Recipe, seq2seq: bool) -> list[LengthStats | None]:
    """Token statistics of each source's rows in the mix (a seeded sample of each)."""
    import numpy as np

    column = data.train.select_columns(["_source"]).with_format("arrow")[0 : data.train.num_rows]["_source"]
    positions = column.to_numpy()
    found: list[LengthStats | None] = []
    for number in range(len(data.sources)):
        mine = np.flatnonzero(positions == number)
        if not len(mine):
            found.append(None)
            continue
        rendered, _ = _rendered(preview, data.kind, sample_rows(data.train.select(mine)), recipe.train_on, seq2seq)
        found.append(_length_stats(rendered, len(mine) if len(mine) > MAX_ROWS_MEASURED else None, _limit(recipe)))
    return found


def _rendered(preview: Preview, kind: str, rows: Any, train_on: str, seq2seq: bool) -> tuple[list[Rendered], list[str]]:
    """The sequences the rows train as, rendered (in batches of one kind), and each one's label."""
    from tunekit.data import is_stream

    listed = list(rows) if is_stream(rows) else rows.to_list()
    sequences = [sequence for row in listed for sequence in _trained_sequences(row, kind)]
    if seq2seq:
        return [preview.render_seq2seq(part, each) for _, each, part in sequences], [s[0] for s in sequences]
    rendered: list[Rendered | None] = [None] * len(sequences)
    for each in {kind for _, kind, _ in sequences}:
        chosen = [i for i, sequence in enumerate(sequences) if sequence[1] == each]
        for i, shown in zip(chosen, preview.render_many([sequences[i][2] for i in chosen], each, train_on)):
            rendered[i] = shown
    return rendered, [label for label, _, _ in sequences]  # type: ignore[return-value]


def _trained_sequences(row: dict, kind: str) -> list[tuple[str, str, dict]]:
    """The sequences a row becomes in training: one, or a chosen and a rejected one for a pair."""
    if kind == "preference":
        return [
            (side, "prompt_completion", {"prompt": row["prompt"], "completion": row[side]})
            for side in ("chosen", "rejected")
        ]
    if kind == "prompt":  # RL prompts: only the prompt is rendered, nothing carries loss
        empty: list | str = [] if isinstance(row["prompt"], list) else ""
        return [("prompt", "prompt_completion", {"prompt": row["prompt"], "completion": empty})]
    if kind == "classification":  # the loss is on the label: no token carries it
        return [(row["label"], "classification", row)]
    if kind == "unpaired":
        label = "desirable" if row["label"] else "undesirable"
        return [(label, "prompt_completion", {"prompt": row["prompt"], "completion": row["completion"]})]
    return [("", kind, row)]


def _preview(ref: ModelRef) -> Preview | None:
    """The tokenizer and chat template to render examples with, when they are on this machine."""
    if ref.kind == "tiny":
        return Preview.from_tiny(tiny_arch(ref.name))
    if ref.kind == "hub" and ref.adapter is None:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(ref.path, "tokenizer.json", revision=ref.revision)
        return Preview.from_folder(Path(cached).parent) if isinstance(cached, str) else None
    folder = Path(ref.tokenizer_path)
    if ref.adapter is not None and ref.base.kind == "tiny" and not (folder / "tokenizer.json").exists():
        return Preview.from_tiny(tiny_arch(ref.base.name))
    return Preview.from_folder(folder) if (folder / "tokenizer.json").exists() else None


def _label_order(recipe: Recipe) -> list[str] | None:
    return recipe.classify.labels if isinstance(recipe, ClassifyRecipe) else None


def _is_hub_dataset(source: str) -> bool:
    try:
        return isinstance(resolve_source(source), str)
    except DataError:
        return False


def _limit(recipe: Recipe) -> tuple[str, int] | None:
    """The key that cuts the sequences validate renders, and its value; None where nothing cuts them
    (GRPO reads whole prompts; pretrain concatenates documents before cutting blocks)."""
    if isinstance(recipe, PPORecipe):
        return "ppo.max_prompt_length", recipe.ppo.max_prompt_length
    if isinstance(recipe, (GRPORecipe, PretrainRecipe)):
        return None
    return "data.max_length", recipe.data.max_length  # type: ignore[attr-defined]


def _length_stats(rendered: list[Rendered], sampled_from: int | None, limit: tuple[str, int] | None) -> LengthStats:
    """Statistics over the rendered sequences; `sampled_from` is the row count when they are a sample."""
    lengths = sorted(len(r.ids) for r in rendered)
    key, most = limit or ("", max(lengths))
    no_loss = sum(1 for r in rendered if r.loss_tokens and not any(r.mask[:most]))
    return LengthStats(
        measured=len(lengths),
        sampled_from=sampled_from,
        min=lengths[0],
        median=statistics.median(lengths),
        p95=lengths[min(len(lengths) - 1, int(0.95 * len(lengths)))],
        max=lengths[-1],
        truncated=sum(1 for n in lengths if n > most),
        max_length=most,
        limit_key=key,
        no_loss=no_loss,
        kept_tokens=sum(min(n, most) for n in lengths),
    )
