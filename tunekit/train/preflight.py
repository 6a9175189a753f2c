"""Pre-flight checks of a recipe without training: what `tunekit validate` reports.

    >>> from tunekit.config import load_recipe
    >>> report = check_recipe(load_recipe("recipes/quickstart.yaml"))  # doctest: +SKIP
    >>> report.examples[0].text  # doctest: +SKIP

Torch-free: the model is located, not loaded; data is read and every row checked; examples are
rendered with the model's tokenizer when it is available offline.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path

from tunekit.config import Recipe
from tunekit.data import Data, load_data
from tunekit.data.preview import Preview, Rendered
from tunekit.data.sources import resolve_source
from tunekit.errors import DataError, UserError
from tunekit.models.refs import is_encoder_decoder
from tunekit.models.packaged import is_package_ref, package_model_path
from tunekit.models.tiny import is_tiny_ref, tiny_arch, tiny_path

MAX_ROWS_MEASURED = 20_000  # token statistics over at most this many rows (a seeded sample beyond)


@dataclass
class LengthStats:
    measured: int  # sequences measured (a preference pair gives two)
    sampled_from: int | None  # rows in the data when the measured ones are a sample of them
    min: int
    median: float
    p95: int
    max: int
    truncated: int  # measured examples longer than data.max_length
    max_length: int
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


def check_recipe(recipe: Recipe, examples: int = 3) -> Report:
    location, preview = _locate_model(recipe.model.name_or_path)
    _check_reward_source(recipe)
    try:
        data = load_data(recipe.data, recipe.training.seed, recipe.method, getattr(recipe.classify, "labels", None))
    except DataError as err:
        if not _is_hub_dataset(recipe.data.train):
            raise
        # A Hub dataset that cannot be read here (offline, or not cached) is checked when training starts.
        report = Report(recipe, location, None)
        report.notes.append(f"data rows not checked: {err}")
        return report
    report = Report(recipe, location, data)
    if recipe.pretrain is not None:
        objective = {"clm": "next-token prediction", "mlm": f"the masked {recipe.pretrain.mlm_probability:.0%} of tokens",
                     "auto": "next tokens (decoder-only) or masked tokens (encoder-only)"}[recipe.pretrain.objective]
        size = recipe.pretrain.block_size or recipe.data.max_length
        report.notes.append(f"pretrain: documents are concatenated and cut into blocks of {size} tokens; loss on {objective}")
    if preview is None:
        report.notes.append(
            "tokenizer not available offline: examples and token statistics skipped (training will download it)"
        )
        return report
    if data.conversational and preview.template is None:
        raise UserError(
            f"{recipe.model.name_or_path} has no chat template, and {recipe.data.train} holds chat messages"
        )
    seq2seq = recipe.method == "sft" and is_encoder_decoder(recipe.model.name_or_path, recipe.model.revision)
    if seq2seq:
        from tunekit.methods.seq2seq import check_targets  # torch-free: the same check `tunekit sft` makes

        check_targets(data, recipe.data.train)
        report.notes.append("encoder-decoder model: each example shows the encoder's input, then the target "
                            "(decoder, marked); each side is cut at data.max_length on its own")
    if recipe.method == "sft" and not seq2seq:
        report.notes += check_loss_survives(preview, data, recipe)
    rendered, labels = [], []
    for row in _sample(data.train):
        for label, kind, part in _trained_sequences(row, data.kind):
            if seq2seq:
                rendered.append(preview.render_seq2seq(part, kind))
            else:
                rendered.append(preview.render(part, kind, recipe.data.train_on))
            labels.append(label)
    report.examples = rendered[:examples]
    report.example_labels = labels[:examples]
    sampled = len(data.train) > MAX_ROWS_MEASURED
    report.stats = _length_stats(rendered, None if not sampled else len(data.train), recipe.data.max_length)
    return report


def check_loss_survives(preview: Preview, data: Data, recipe: Recipe) -> list[str]:
    """SFT examples cut at data.max_length keep their start: one whose completion (or every assistant turn)
    lies past the cut carries no loss, and trl drops it. All of train or all of eval dropped stops the run
    (DataError naming the length to set); some dropped is a note. Used by `validate` and `tunekit sft` alike."""
    limit, notes = recipe.data.max_length, []
    for part, rows, source in (("train", data.train, recipe.data.train), ("eval", data.eval, data.eval_source)):
        if not rows:
            continue
        shown = [preview.render(row, data.kind, recipe.data.train_on) for row in _sample(rows)]
        lost = [r for r in shown if r.loss_tokens and not any(r.mask[:limit])]
        if not lost:
            continue
        if len(lost) == len(shown):
            first_loss = sorted(r.mask.index(1) + 1 for r in shown)
            raise DataError(
                f"{source}: data.max_length={limit} cuts away every loss-carrying token of all {len(shown):,} {part} "
                f"examples (their completions start after token {first_loss[0]} to {first_loss[-1]}); raise "
                f"data.max_length to at least {statistics.median_high(first_loss) + 16} for half of them to train"
            )
        notes.append(f"{len(lost):,} of {len(shown):,} {part} examples lose every loss-carrying token at "
                     f"data.max_length={limit} and are skipped")
    return notes


def _check_reward_source(recipe: Recipe) -> None:
    """RL recipes: the reward function must import; a reward model folder is located, not loaded."""
    section = getattr(recipe, recipe.method, None)
    function = getattr(section, "reward_function", None)
    if function:
        from tunekit.rl.rewards import load_function

        load_function(function)  # raises UserError naming the module or the function


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


def _locate_model(name: str) -> tuple[str, Preview | None]:
    if is_tiny_ref(name):
        arch = tiny_arch(name)
        built = tiny_path(arch)
        where = f"tiny random {arch} model ({'cached at ' + str(built) if built.exists() else 'built on first use'})"
        return where, Preview.from_tiny(arch)
    if is_package_ref(name):
        folder = package_model_path(name)
        return f"model shipped in a Python package, at {folder}", _folder_preview(folder)
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise UserError(f"model folder {name} has no config.json")
        return f"local folder {path.resolve()}", _folder_preview(path)
    if name.startswith((".", "/", "~")):
        raise UserError(f"model folder not found: {name}")
    return _hub_model(name)


def _is_hub_dataset(source: str) -> bool:
    try:
        return isinstance(resolve_source(source), str)
    except DataError:
        return False


def _folder_preview(folder: Path) -> Preview | None:
    return Preview.from_folder(folder) if (folder / "tokenizer.json").exists() else None


def _hub_model(name: str) -> tuple[str, Preview | None]:
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(name, "tokenizer.json")
    if isinstance(cached, str):
        return f"Hub model {name} (in the local cache)", Preview.from_folder(Path(cached).parent)
    return f"Hub model {name} (not cached: downloaded when training starts)", None


def _sample(rows: list[dict]) -> list[dict]:
    if len(rows) <= MAX_ROWS_MEASURED:
        return rows
    import random

    return random.Random(0).sample(rows, MAX_ROWS_MEASURED)


def _length_stats(rendered: list[Rendered], sampled_from: int | None, max_length: int) -> LengthStats:
    """Statistics over the rendered sequences; `sampled_from` is the row count when they are a sample."""
    lengths = sorted(len(r.ids) for r in rendered)
    no_loss = sum(1 for r in rendered if r.loss_tokens and not any(r.mask[:max_length]))
    return LengthStats(
        measured=len(lengths),
        sampled_from=sampled_from,
        min=lengths[0],
        median=statistics.median(lengths),
        p95=lengths[min(len(lengths) - 1, int(0.95 * len(lengths)))],
        max=lengths[-1],
        truncated=sum(1 for n in lengths if n > max_length),
        max_length=max_length,
        no_loss=no_loss,
        kept_tokens=sum(min(n, max_length) for n in lengths),
    )
