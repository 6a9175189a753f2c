"""`tunekit tiny-model DIR --arch llama|gpt2|t5|bert|bloom|mixtral|bart [--seed N]`: a tiny random model for CI.

$ tunekit tiny-model /tmp/tiny-llama --arch llama
$ tunekit tiny-model /tmp/tiny-moe --arch mixtral
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer


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
        seed: int = typer.Option(
            0, "--seed", min=0, max=2**32 - 1, help="Seed for the random weights; same seed, same files."
        ),
        overwrite: bool = typer.Option(
            False, "--overwrite", help="Replace a tiny model in DIR (swapped in once the new one is written)."
        ),
        overwrite_any: bool = typer.Option(
            False, "--overwrite-any", help="--overwrite even a DIR that holds files tunekit did not write."
        ),
    ) -> None:
        """Write a ~100k-parameter random model and an offline-trained tokenizer, loadable with from_pretrained."""
        from tunekit.folders import TINY, claim, writing
        from tunekit.models.tiny import write_tiny_model

        folder = claim(str(output), "DIR", TINY, overwrite=overwrite, overwrite_any=overwrite_any, always_staged=True)
        with writing(folder) as staging:
            write_tiny_model(staging, arch.value, seed)
        typer.echo(f"wrote tiny {arch.value} model (seed {seed}) to {output}")
