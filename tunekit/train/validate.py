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
from tunekit.config.schema import EmbedRecipe, GRPORecipe, PPORecipe, PretrainRecipe
from tunekit.data import Data, recipe_data, rows_of, sources_of
from tunekit.data.preview import Preview, Rendered
from tunekit.data.sources import resolve_source
from tunekit.data.spans import corrupt, sentinel_ids
from tunekit.data.tagging import add_prefix_space, entity_counts
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

EMBEDDED = {  # `tunekit embed`: the texts of a row
    "pair": ("anchor", "positive"),
    "triplet": ("anchor", "positive", "negative"),
    "scored_pair": ("sentence1", "sentence2"),
}


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
        data = recipe_data(recipe)
    except DataError as err:
        if not any(_is_hub_dataset(spec.path) for spec in sources_of(recipe.data.train, recipe.data)):
            raise
        # A Hub dataset that cannot be read here (offline, or not cached) is checked when training starts.
        report = Report(recipe, ref.describe(), None)
        report.notes.append(f"data rows not checked: {err}")
        return report
    report = Report(recipe, ref.describe(), data)
    spans = isinstance(recipe, PretrainRecipe) and _span_corruption(recipe, ref)
    if isinstance(recipe, PretrainRecipe):
        report.notes.append(_pretrain_note(recipe, spans))
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
    if data.kind in EMBEDDED:
        report.notes.append(_embedding_note(recipe, data))
    if data.kind == "tagging":
        add_prefix_space(preview.tokenizer)  # as `tunekit tag` tokenises the words
        counted = ", ".join(f"{name} {n:,}" for name, n in entity_counts(rows_of(data.train), data.scheme).items())
        what = "tags" if data.scheme == "plain" else "entities"
        report.notes.append(
            f"tags ({data.scheme}): {', '.join(data.labels)}; train {what}: {counted}; each word's tag is on its "
            "first sub-word token"
        )
    rendered, labels = _rendered(preview, data.kind, sample_rows(data.train), recipe.train_on, seq2seq)
    if recipe.method == "sft" and not seq2seq:
        report.notes += check_loss_survives(preview, data, recipe, train=rendered)
    report.examples = rendered[:examples]
    report.example_labels = labels[:examples]
    if spans and examples:  # the first block as the model sees it, in place of the first document
        assert isinstance(recipe, PretrainRecipe)
        report.examples = [_corrupted_block(preview, data, recipe), *report.examples[: examples - 1]]
        report.example_labels = ["span corruption: input, then the target", *report.example_labels[: examples - 1]]
    rows = data.train_rows
    sampled = rows is None or rows > MAX_ROWS_MEASURED
    report.stats = _length_stats(rendered, None if not sampled else rows, _limit(recipe))
    if len(data.sources) > 1 and not data.streaming:
        report.per_source = _per_source_stats(data, preview, recipe, seq2seq)
    return report


def _pretrain_note(recipe: PretrainRecipe, spans: bool) -> str:
    section = recipe.pretrain
    objective = {
        "clm": "next-token prediction",
        "mlm": f"the masked {section.mlm_probability:.0%} of tokens",
        "auto": "next tokens (decoder-only) or masked tokens (encoder-only)",
        "span_corruption": f"the target: {section.noise_density:.0%} of the tokens hidden in spans of "
        f"{section.mean_span_length:g} on average, each span a sentinel in the input",
    }["span_corruption" if spans else section.objective]
    return (
        f"pretrain: documents are concatenated and cut into blocks of {section.block_size} tokens; loss on {objective}"
    )


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
    if kind == "tagging":
        return [("", "tagging", row)]
    if kind in EMBEDDED:  # each text is encoded on its own; the loss compares their embeddings
        return [(name, "classification", {"text": row[name]}) for name in EMBEDDED[kind]]
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


def _embedding_note(recipe: Recipe, data: Data) -> str:
    """What `tunekit embed` will optimise and measure (the same choice as methods.embed.check)."""
    from tunekit.methods.embed import retrieval_task

    assert isinstance(recipe, EmbedRecipe)
    loss = recipe.embed.loss_for(data.kind)
    if data.kind == "scored_pair":
        scores = data.train["score"]
        return f"embed: {loss} loss; train scores {min(scores):g} to {max(scores):g}; held out: Spearman, Pearson"
    task = retrieval_task(rows_of(data.train), rows_of(data.eval), recipe.embed.corpus)
    return (
        f"embed: {loss} loss (the batch's other positives are negatives); held out: {len(task.queries)} queries "
        f"searched among {len(task.corpus)} documents (embed.corpus: {recipe.embed.corpus}): recall@1, recall@10, "
        "MRR@10"
    )


def _span_corruption(recipe: PretrainRecipe, ref: ModelRef) -> bool:
    """The objective the run takes: span corruption for an encoder-decoder unless the recipe names another
    (which the run then refuses, naming the model)."""
    objective = recipe.pretrain.objective
    return objective == "span_corruption" or (objective == "auto" and ref.is_encoder_decoder)


def _corrupted_block(preview: Preview, data: Data, recipe: PretrainRecipe) -> Rendered:
    """The first block of train's documents, corrupted as the run corrupts a held-out block (the run's seed):
    the encoder's input with its sentinels, a newline, then the target (marked, it carries the loss)."""
    import random

    section, tokenizer = recipe.pretrain, preview.tokenizer
    size = section.block_size
    sentinels = sentinel_ids(
        tokenizer.token_to_id, size, section.noise_density, section.mean_span_length, recipe.model.name_or_path
    )
    stream: list[int] = []
    for row in data.train:
        stream += tokenizer.encode(row["text"]).ids
        if len(stream) >= size:
            break
    if len(stream) < size:
        raise DataError(f"{recipe.data.train}: {len(stream)} tokens of text, less than one block of {size}")
    eos = tokenizer.token_to_id(preview.special.get("eos_token", ""))
    assert eos is not None, "a tokenizer with sentinels has an EOS token"
    inputs, target = corrupt(
        stream[:size],
        sentinels,
        eos,
        section.noise_density,
        section.mean_span_length,
        random.Random(recipe.training.seed),
    )
    source, shown = (tokenizer.decode(ids, skip_special_tokens=False) for ids in (inputs, target))
    text = f"{source}\n{shown}"
    return Rendered(text, [(len(source) + 1, len(text))], inputs + target, [0] * len(inputs) + [1] * len(target))


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
