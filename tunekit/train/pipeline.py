"""A training run as stages you can see: preflight -> launch -> load -> train -> report.

    plan = preflight(recipe, options)     # every check that can fail on the user's input; nothing written
    if launch_requested(...):             # tunekit.cli.train: the same command under `accelerate launch`
        ...
    run = load(plan)                      # seed, model, the new adapter checked, run folder
    trained = train(run, echo)            # the method's own trainer (tunekit/methods/<method>.py)
    report(run, trained, echo)            # summary.json, the figures printed

A method module (tunekit/methods/*.py) provides `train(run, echo) -> Trained` and, when it needs
them, `HEAD` (the model class to load: causal-lm unless it says otherwise), `head(plan)` (a head that
depends on the recipe, e.g. pretrain's objective) and `check(plan)` (its own checks, run in preflight;
what it returns is kept as `plan.prepared`, e.g. pretrain's blocks). `module_for` picks the module:
`tunekit sft` of an encoder-decoder is methods.seq2seq.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from tunekit.config import Recipe
from tunekit.data import Data, recipe_data
from tunekit.errors import UserError
from tunekit.models.refs import ModelRef, resolve
from tunekit.train.rundir import RunOptions, check_run_dir, prepare_run_dir
from tunekit.train.summary import Trained, build_summary, print_result, write_summary

Echo = Callable[[str], None]


@dataclass
class Plan:
    """What preflight found: the run is possible, and nothing has been written yet."""

    recipe: Recipe
    options: RunOptions
    ref: ModelRef
    data: Data
    tokenizer: Any
    method: ModuleType  # tunekit.methods.<name>
    head: str  # the model class to load (tunekit.models.loading.HEADS)
    resume: Any = None  # tunekit.train.checkpoints.Found with --resume (its path None: nothing to resume)
    prepared: Any = None  # what the method's check() built for training (pretrain: its blocks)


@dataclass
class Run:
    """A loaded run: the plan, the model on top, the run folder written."""

    plan: Plan
    model: Any
    out: Path
    dtype: Any  # torch.dtype the run computes in

    # The plan's parts, read by every method.
    @property
    def recipe(self) -> Recipe:
        return self.plan.recipe

    @property
    def data(self) -> Data:
        return self.plan.data

    @property
    def tokenizer(self) -> Any:
        return self.plan.tokenizer

    @property
    def ref(self) -> ModelRef:
        return self.plan.ref

    @property
    def options(self) -> RunOptions:
        return self.plan.options

    @property
    def resume(self) -> Any:
        return self.plan.resume


def module_for(recipe: Recipe, ref: ModelRef) -> ModuleType:
    """The method module for a recipe; trl's SFTTrainer has no encoder-decoder path, methods.seq2seq has."""
    name = "seq2seq" if recipe.method == "sft" and ref.is_encoder_decoder else recipe.method
    return importlib.import_module(f"tunekit.methods.{name}")


def preflight(recipe: Recipe, options: RunOptions) -> Plan:
    """Every check that can fail on the user's input, before anything is written or a model loads.

    Only the tokenizer loads here (it takes moments, and the data checks need it). In processes started
    by a launcher every rank checks, and only rank 0 looks at the run folder.
    """
    from tunekit.models.loading import load_tokenizer
    from tunekit.train import launch
    from tunekit.train.checkpoints import find_resume
    from tunekit.train.preflight import check_environment, check_reward_source

    if launch.is_main_process():
        check_run_dir(recipe, options.overwrite, options.resume)
    ref = resolve(recipe.model.name_or_path, recipe.model.revision, build=True, download=True)
    method = module_for(recipe, ref)
    data = recipe_data(recipe)
    check_environment(recipe)
    check_reward_source(recipe)
    tokenizer = load_tokenizer(ref.tokenizer_path, recipe.model)
    if data.conversational and not tokenizer.chat_template:
        raise UserError(
            f"{recipe.model.name_or_path} has no chat template, and {recipe.data.train} holds chat messages "
            f"(format {data.format}); use a model with a chat template, or plain-text prompts"
        )
    out = Path(recipe.output_dir).expanduser()
    resume = find_resume(recipe, out, options.force) if options.resume else None
    plan = Plan(recipe, options, ref, data, tokenizer, method, getattr(method, "HEAD", "causal-lm"), resume)
    if hasattr(method, "head"):
        plan.head = method.head(plan)
    if hasattr(method, "check"):
        plan.prepared = method.check(plan)
    return plan


def load(plan: Plan) -> Run:
    """Seed, load the model (a new head and LoRA start from the recipe's seed), check the new adapter fits
    it, then write the run folder (rank 0; the other ranks wait for it)."""
    from transformers import set_seed

    from tunekit.models.loading import load_model, resolve_dtype
    from tunekit.train import launch
    from tunekit.train.checkpoints import clear_staging, trim_metrics
    from tunekit.train.preflight import check_adapter

    recipe = plan.recipe
    # The grad scaler cannot step fp16 weights: full fine-tuning in fp16 keeps fp32 weights under autocast.
    full_fp16 = recipe.model.dtype == "fp16" and recipe.adapter.type == "none"
    set_seed(recipe.training.seed)
    model = load_model(
        plan.ref,
        recipe.model,
        recipe.adapter,
        head=plan.head,
        dtype=resolve_dtype("fp32") if full_fp16 else None,
        gradient_checkpointing=recipe.training.gradient_checkpointing,
        labels=plan.data.labels or None,
        command=recipe.method,
        pad_token_id=plan.tokenizer.pad_token_id,
    )
    check_adapter(recipe.adapter, model)
    out = Path(recipe.output_dir).expanduser()
    if launch.is_main_process():
        prepare_run_dir(recipe, plan.options.overwrite, plan.options.resume)
        clear_staging(out)  # half-written checkpoints of an interrupted attempt
        if plan.resume is not None:
            trim_metrics(out, plan.resume.step)  # the resumed run logs these steps again
    launch.wait_for_everyone()
    return Run(plan, model, out, resolve_dtype(recipe.model.dtype))


def train(run: Run, echo: Echo) -> Trained:
    """The method's own part: its trainer, trained and evaluated before and after, `final/` saved."""
    return run.plan.method.train(run, echo)


def report(run: Run, trained: Trained, echo: Echo) -> dict[str, Any]:
    """summary.json (rank 0) and the closing lines; a DDP run whose copies drifted apart fails here."""
    from tunekit.train.launch import is_main_process

    summary = build_summary(run.recipe, run.data.format, trained)
    if is_main_process():
        write_summary(run.out, summary)
    print_result(summary, trained, echo)
    if summary.get("replicas_identical") is False:  # DDP failed to keep the copies in sync: not a result to trust
        raise RuntimeError(
            f"the {summary['world_size']} processes ended with different weights (checksums "
            f"{summary['replica_checksums']}); {run.out / 'summary.json'} records it and final/ holds rank 0's copy"
        )
    return summary


def run_recipe(recipe: Recipe, options: RunOptions = RunOptions(), echo: Echo = print) -> dict[str, Any]:
    """Every stage in one process (scripts, benchmarks, tests); the CLI runs them one by one to launch."""
    run = load(preflight(recipe, options))
    return report(run, train(run, echo), echo)
