"""`tunekit score MODEL --data FILE [--json]`: reward-model scores for completions or preference pairs.

$ tunekit score runs/tiny-reward/final --data pairs.jsonl --json
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from tunekit.errors import DataError


def register(app: typer.Typer) -> None:
    @app.command()
    def score(
        model: str = typer.Argument(
            ..., help="Reward model folder from `tunekit reward` (full or adapter).", show_default=False
        ),
        data: Path = typer.Option(
            ..., "--data", help="Pairs (prompt/chosen/rejected) or prompt/completion rows.", show_default=False
        ),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
        batch_size: int = typer.Option(16, "--batch-size", min=1, help="Sequences scored at once."),
    ) -> None:
        """Score completions with a reward model; on pairs also report accuracy and mean margin."""
        from tunekit.data.formats import check_rows, resolve_format
        from tunekit.data.sources import read_rows

        raw = read_rows(str(data))
        fmt = resolve_format("auto", raw[0][1], str(data))
        if fmt not in ("preference", "prompt_completion", "unpaired"):
            raise DataError(
                f"{data}: format {fmt}; tunekit score needs prompt/chosen/rejected or prompt/completion rows"
            )
        rows = check_rows(raw, fmt, str(data))

        from tunekit.rl.scoring import load_reward_model
        from tunekit.rl.scoring import score as score_rows

        reward_model, tokenizer = load_reward_model(model)
        prompts = [row["prompt"] for row in rows]
        result: dict[str, object] = {"num_examples": len(rows)}
        if fmt == "preference":
            chosen = score_rows(reward_model, tokenizer, prompts, [r["chosen"] for r in rows], batch_size)
            rejected = score_rows(reward_model, tokenizer, prompts, [r["rejected"] for r in rows], batch_size)
            margins = [c - r for c, r in zip(chosen, rejected)]
            result.update(
                accuracy=sum(m > 0 for m in margins) / len(rows),
                margin=sum(margins) / len(rows),
                chosen=chosen,
                rejected=rejected,
            )
        else:
            scores = score_rows(reward_model, tokenizer, prompts, [r["completion"] for r in rows], batch_size)
            result.update(mean=sum(scores) / len(scores), scores=scores)
        if as_json:
            typer.echo(json.dumps(result))
            return
        if fmt == "preference":
            for i, (c, r) in enumerate(zip(result["chosen"], result["rejected"]), start=1):  # type: ignore[arg-type]
                typer.echo(f"{i:>5}  chosen {c:+.4f}  rejected {r:+.4f}  margin {c - r:+.4f}")
            typer.echo(f"{len(rows)} pairs: accuracy {result['accuracy']:.4f}, mean margin {result['margin']:+.4f}")
        else:
            for i, s in enumerate(result["scores"], start=1):  # type: ignore[arg-type]
                typer.echo(f"{i:>5}  {s:+.4f}")
            typer.echo(f"{len(rows)} completions: mean score {result['mean']:+.4f}")
