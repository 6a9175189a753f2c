"""Training commands: `tunekit sft|dpo|reward|orpo|kto|simpo|ppo|grpo|classify|tag|embed|pretrain RECIPE ...`.

    $ tunekit sft recipes/tiny/sft-lora.yaml training.max_steps=20 output_dir=runs/try --overwrite
    $ tunekit dpo recipes/tiny/dpo.yaml
    $ tunekit sft recipes/tiny/sft-full.yaml --num-processes 2       # two processes, accelerate launch
    $ tunekit sft recipes/tiny/sft-full.yaml --resume                # from the newest complete checkpoint
    $ tunekit accelerate-config multi-node > multi-node.yaml         # a packaged config, to edit

Each command loads and validates the recipe, checks it is meant for this command, then runs the stages
of tunekit.train.pipeline in order: preflight (every check; nothing written) -> launch (with
--num-processes / --accelerate-config, the same command again under `accelerate launch`, and this
process waits) -> load -> train (tunekit.methods.<name>) -> report. In launched processes only rank 0
prints.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import typer

from tunekit.errors import UserError

RECIPE = typer.Argument(..., help="Recipe YAML file (see `tunekit recipes list`).", show_default=False)
OVERRIDES = typer.Argument(None, help="Overrides such as training.max_steps=50 adapter.type=lora.", show_default=False)
OVERWRITE = typer.Option(
    False,
    "--overwrite",
    help="Replace the run in output_dir: the new run is written to output_dir.next and swapped in when it "
    "ends well; until then, and after a failed attempt, the old run stays as it was.",
)
OVERWRITE_ANY = typer.Option(
    False, "--overwrite-any", help="--overwrite even an output_dir that holds files tunekit did not write."
)
RESUME = typer.Option(
    False,
    "--resume",
    help="Continue output_dir from its newest complete checkpoint (model, optimizer, "
    "scheduler, RNG, data position); start from step 0 when there is none.",
)
FORCE = typer.Option(False, "--force", help="With --resume: accept a checkpoint made by a different recipe.")
NUM_PROCESSES = typer.Option(
    None,
    "--num-processes",
    min=1,
    show_default=False,
    help="Run under `accelerate launch` with N processes (all machines together); default config: ddp.",
)
ACCELERATE_CONFIG = typer.Option(
    None,
    "--accelerate-config",
    show_default=False,
    help="Run under `accelerate launch` with this config: ddp, fsdp, deepspeed-zero2, deepspeed-zero3, "
    "multi-node, or a path to your own accelerate config file.",
)

METHODS = {
    "sft": "Supervised fine-tuning (decoder-only or encoder-decoder): full, LoRA, QLoRA or soft prompts.",
    "dpo": "Direct Preference Optimisation on prompt/chosen/rejected pairs.",
    "reward": "Train a reward model (one score per sequence) on preference pairs.",
    "orpo": "ORPO: SFT and preference alignment in one step, no reference model (experimental in trl).",
    "kto": "KTO on unpaired desirable/undesirable completions (or pairs, unpaired on the fly).",
    "simpo": "SimPO: length-normalised, reference-free preference optimisation (trl's CPO, experimental).",
    "ppo": "PPO (RLHF): sample, score with a reward model or function, optimise with a KL penalty.",
    "grpo": "GRPO (trl): critic-free RL, rewards compared within groups of completions per prompt.",
    "classify": "Sequence classification (BERT family and others) on text/label rows: full or LoRA.",
    "tag": "Token classification (named entities, POS tags) on tokens/tags rows or CoNLL files: full or LoRA.",
    "embed": "Embedding models (sentence-transformers): pairs, triplets or scored pairs; full or LoRA.",
    "pretrain": "Continued pretraining on raw text: causal LM, masked LM (encoder-only) or span corruption (T5).",
}


def _command(method: str) -> Callable[..., None]:
    def train(
        recipe: Path = RECIPE,
        overrides: list[str] | None = OVERRIDES,
        overwrite: bool = OVERWRITE,
        overwrite_any: bool = OVERWRITE_ANY,
        resume: bool = RESUME,
        force: bool = FORCE,
        num_processes: int | None = NUM_PROCESSES,
        accelerate_config: str | None = ACCELERATE_CONFIG,
    ) -> None:
        from tunekit.config import load_recipe
        from tunekit.train import launch

        loaded = load_recipe(recipe, overrides)
        if loaded.method != method:
            raise UserError(f"{recipe} is a recipe for `tunekit {loaded.method}`, not `tunekit {method}`")
        if force and not resume:
            raise UserError("--force only applies with --resume")
        if accelerate_config is not None:
            launch.resolve_config(accelerate_config)  # an unknown name fails here, before any slow work
        from tunekit.train import pipeline
        from tunekit.train.callbacks import NonFiniteLoss
        from tunekit.train.checkpoints import Stopped
        from tunekit.train.rundir import RunOptions

        named = {"--overwrite": overwrite, "--overwrite-any": overwrite_any, "--resume": resume, "--force": force}
        flags = [flag for flag, on in named.items() if on]
        options = RunOptions(overwrite, resume, force, num_processes, accelerate_config, overwrite_any)
        echo = launch.on_main(typer.echo)

        plan = pipeline.preflight(loaded, options)  # every check on the input; output_dir locked, nothing written
        with pipeline.claimed(plan, echo):  # a failed attempt leaves output_dir as it was
            if launch.launch_requested(num_processes, accelerate_config):  # the same command in N processes
                launched = (method, str(recipe), *(overrides or []), *flags)  # without the launch flags
                code = launch.relaunch(launched, num_processes, accelerate_config)
                if code:
                    raise typer.Exit(code)
                return
            run = pipeline.load(plan)  # seed, model, run folder
            try:
                trained = pipeline.train(run, echo)
            except Stopped as stopped:  # SIGINT / SIGTERM: a checkpoint was saved, the run can --resume
                echo(stopped.describe(in_place=not options.replaces), err=True)
                raise typer.Exit(stopped.code) from None
            except NonFiniteLoss as diverged:  # the run's own failure, not tunekit's: exit 1 without a traceback
                echo(f"error: {diverged}", err=True)
                raise typer.Exit(1) from None
            pipeline.report(run, trained, echo)

    return train


def accelerate_config(
    name: str | None = typer.Argument(None, help="A packaged config; without it, list them.", show_default=False),
) -> None:
    """Print a packaged accelerate config (to copy and edit), or list them with their paths."""
    from tunekit.train import launch

    if name is None:
        for known in launch.config_names():
            path = launch.resolve_config(known)
            typer.echo(f"{known:<16} {launch.config_describes(path)}\n{'':<16} {path}")
        return
    typer.echo(launch.resolve_config(name).read_text(encoding="utf-8"), nl=False)


def register(app: typer.Typer) -> None:
    for method, summary in METHODS.items():
        app.command(name=method, help=summary)(_command(method))
    app.command(name="accelerate-config")(accelerate_config)
