"""`tunekit tiny-model DIR --arch llama|gpt2|t5|bert|bloom|mixtral|bart [--seed N]`: a tiny random model for CI.

$ tunekit tiny-model /tmp/tiny-llama --arch llama
$ tunekit tiny-model /tmp/tiny-moe --arch mixtral
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

from tunekit.errors import UserError


class Arch(str, Enum):
    llama = "llama"
    gpt2 = "gpt2"
    t5 = "t5"
    bert = "bert"
    bloom = "bloom"
    mixtral = "mixtral"
    bart = "bart"


def register(app: typer.Typer) -> None:
    @app.command("tiny-model")
    def tiny_model(
        output: Path = typer.Argument(..., help="Folder to write (must not exist or be empty).", show_default=False),
        arch: Arch = typer.Option(
            Arch.llama,
            "--arch",
            help="Architecture: bloom has ALiBi positions, mixtral is a mixture of experts, t5 and bart are "
            "encoder-decoders.",
        ),
        seed: int = typer.Option(0, "--seed", help="Seed for the random weights; same seed, same files."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing, non-empty folder."),
    ) -> None:
        """Write a ~100k-parameter random model and an offline-trained tokenizer, loadable with from_pretrained."""
        if output.exists() and (not output.is_dir() or any(output.iterdir())) and not overwrite:
            raise UserError(f"{output} already exists and is not empty; pass --overwrite to replace it")
        from tunekit.models.tiny import build_tiny_model

        path = build_tiny_model(output, arch.value, seed)
        typer.echo(f"wrote tiny {arch.value} model (seed {seed}) to {path}")
