"""`tunekit validate RECIPE [key.sub=value ...]`: check a recipe and its data without training.

$ tunekit validate recipes/quickstart.yaml
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from tunekit.cli.train import OVERRIDES, RECIPE

LOSS_OPEN, LOSS_CLOSE = "[[", "]]"


def register(app: typer.Typer) -> None:
    @app.command()
    def validate(
        recipe: Path = RECIPE,
        overrides: list[str] | None = OVERRIDES,
        examples: int = typer.Option(3, "--examples", min=0, help="How many rendered examples to show."),
    ) -> None:
        """Check a recipe without training: schema, model, data rows, rendered examples, token lengths."""
        from tunekit.config import load_recipe
        from tunekit.config.schema import SFTRecipe
        from tunekit.train.preflight import MAX_ROWS_MEASURED
        from tunekit.train.validate import check_recipe

        report = check_recipe(load_recipe(recipe, overrides), examples=examples)
        r, data = report.recipe, report.data
        typer.echo(f"recipe {recipe}: valid for `tunekit {r.method}` (adapter {r.adapter.type})")
        typer.echo(f"model: {report.model_location}")
        if data is not None:
            _data_lines(report, r)
        for note in report.notes:
            typer.echo(f"note: {note}")
        for i, (shown, label) in enumerate(zip(report.examples, report.example_labels), start=1):
            if data is not None and data.kind in ("pair", "triplet", "scored_pair"):
                typer.echo(f"\nexample {i}, {label} ({len(shown.ids)} tokens): {shown.text}")
                continue
            if data is not None and data.kind == "classification":
                typer.echo(f"\nexample {i} ({len(shown.ids)} tokens): {shown.text} -> {label}")
                continue
            if data is not None and data.kind == "tagging":
                typer.echo(f"\nexample {i} ({len(shown.ids)} tokens, {shown.loss_tokens} words tagged): {shown.text}")
                continue
            kind = f", {label}" if label else ""
            typer.echo(
                f"\nexample {i}{kind} ({len(shown.ids)} tokens, {shown.loss_tokens} carry loss, "
                f"inside {LOSS_OPEN} {LOSS_CLOSE}):"
            )
            typer.echo(_marked(shown.text, shown.spans).rstrip("\n"))
        if report.stats:
            s = report.stats
            sampled = ""
            if s.sampled_from is not None:
                sampled = f" (a seeded sample of {MAX_ROWS_MEASURED:,} of {s.sampled_from:,} rows)"
            typer.echo(f"\ntokens per example{sampled}: min {s.min}, median {s.median:g}, p95 {s.p95}, max {s.max}")
            if s.limit_key:
                typer.echo(
                    f"truncation: {s.truncated:,} of {s.measured:,} sequences exceed {s.limit_key}={s.max_length}"
                    + (f"; {s.no_loss:,} would lose every loss-carrying token" if s.no_loss else "")
                )
            if isinstance(r, SFTRecipe) and r.data.packing:
                # Best-fit-decreasing fills rows almost completely: the token total sets the row count.
                rows = -(-s.kept_tokens // s.max_length)
                typer.echo(
                    f"packing: {s.measured:,} examples ({s.kept_tokens:,} tokens) fill about {rows:,} rows "
                    f"of {s.max_length} tokens"
                )
        typer.echo("\nok")


def _data_lines(report: Any, recipe: Any) -> None:
    """What trains: one line for one source; a line per source (rows, share, format, tokens) for a mix."""
    data = report.data
    detected = " (detected)" if recipe.data.format == "auto" else ""
    rows = "streamed" if data.streaming else f"{data.train_rows:,}"
    loss = f"loss on {_loss_on(recipe.train_on, data.kind)}"
    if len(data.sources) == 1:
        typer.echo(f"data: {data.names}: {rows} train rows, format {data.format}{detected}, {loss}")
    else:
        typer.echo(f"data: {len(data.sources)} sources, {rows} train rows ({recipe.data.mix}), {loss}")
        total_weight = sum(s.weight for s in data.sources)
        for source, stats in zip(data.sources, report.per_source or [None] * len(data.sources)):
            share = (
                source.weight / total_weight
                if recipe.data.mix == "interleave"
                else ((source.rows or 0) / max(data.train_rows or 1, 1))
            )
            given = "streamed" if source.rows is None else f"{source.rows:,} rows"
            tokens = "" if stats is None else f"; tokens median {stats.median:g}, p95 {stats.p95}, max {stats.max}"
            typer.echo(f"  {source.name}: {given} ({share:.0%} of the mix), format {source.format}{tokens}")
    if data.eval is not None:
        typer.echo(f"eval: {data.eval_rows:,} rows from {data.eval_source}")
    else:
        typer.echo("eval: none")


def _loss_on(train_on: str, kind: str) -> str:
    if kind == "classification":
        return "the label (one class per text)"
    if kind == "tagging":
        return "each word's tag (on its first sub-word token)"
    if kind in ("pair", "triplet", "scored_pair"):
        return "the similarities of the texts' embeddings"
    if train_on == "all":
        return "every token"
    return {"messages": "assistant turns", "text": "every token"}.get(kind, "completions")


def _marked(text: str, spans: list[tuple[int, int]]) -> str:
    out, cursor = [], 0
    for start, end in spans:
        out += [text[cursor:start], LOSS_OPEN, text[start:end], LOSS_CLOSE]
        cursor = end
    out.append(text[cursor:])
    return "".join(out)
