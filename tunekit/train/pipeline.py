"""A training run as stages you can see: preflight -> launch -> load -> train -> report.

    plan = preflight(recipe, options)     # every check that can fail on the user's input; output_dir locked
    with claimed(plan, echo):             # a failed attempt leaves output_dir as it was; the lock let go
        if launch_requested(...):         # tunekit.cli.train: the same command under `accelerate launch`
            ...
        run = load(plan)                  # seed, model, the new adapter checked, run folder
        trained = train(run, echo)        # the method's own trainer (tunekit/methods/<method>.py)
        report(run, trained, echo)        # summary.json, the figures printed; --overwrite swaps the run in

A method module (tunekit/methods/*.py) provides `train(run, echo) -> Trained` and, when it needs
them, `HEAD` (the model class to load: causal-lm unless it says otherwise), `head(plan)` (a head that
depends on the recipe, e.g. pretrain's objective) and `check(plan)` (its own checks, run in preflight;
what it returns is kept as `plan.prepared`, e.g. pretrain's blocks). `module_for` picks the module:
`tunekit sft` of an encoder-decoder is methods.seq2seq.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from tunekit.config import Recipe
from tunekit.data import Data, recipe_data
from tunekit.errors import UserError
from tunekit.folders import Claim, folder_path
from tunekit.models.refs import ModelRef, resolve
from tunekit.train.rundir import RunOptions, claim_run_dir, prepare_run_dir, run_target
from tunekit.train.summary import Trained, build_summary, print_result, write_summary
from tunekit.train.trackers import RunLog, check_installed

Echo = Callable[[str], None]


@dataclass
class Plan:
    """What preflight found: the run is possible, output_dir is locked, and nothing else has been written."""

    recipe: Recipe
    options: RunOptions
    ref: ModelRef
    data: Data
    tokenizer: Any
    method: ModuleType  # tunekit.methods.<name>
    head: str  # the model class to load (tunekit.models.loading.HEADS)
    resume: Any = None  # tunekit.train.checkpoints.Found with --resume (its path None: nothing to resume)
    prepared: Any = None  # what the method's check() built for training (pretrain: its blocks)
    folder: Claim | None = None  # output_dir, checked and locked (rank 0; None in the other ranks)

    @property
    def out(self) -> Path:
        """Where this attempt writes: output_dir, or with --overwrite `output_dir.next` (tunekit.folders)."""
        return self.folder.target if self.folder is not None else run_target(self.recipe, self.options)

    @property
    def dest(self) -> Path:
        """The run folder once the run has ended well."""
        return self.folder.path if self.folder is not None else folder_path(self.recipe.output_dir)


@dataclass
class Run:
    """A loaded run: the plan, the model on top, the run folder written."""

    plan: Plan
    model: Any
    out: Path  # where this attempt writes (plan.out): what every method and callback writes into
    dtype: Any  # torch.dtype the run computes in
    log: RunLog  # metrics.jsonl, samples.jsonl and the trackers: every figure goes through it

    @property
    def dest(self) -> Path:
        return self.plan.dest

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


def preflight(recipe: Recipe, options: RunOptions, run_folder: bool = True) -> Plan:
    """Every check that can fail on the user's input, before anything is written or a model loads.

    Only the tokenizer loads here (it takes moments, and the data checks need it). In processes started
    by a launcher every rank checks, and only rank 0 claims the run folder (tunekit.folders: its rules and
    its lock, the lock alone written); a failed check lets go of it. `run_folder=False`: `tunekit
    preprocess`, which builds the data cache and claims no folder. The data is read, checked and tokenised
    into the cache by rank 0 first; the other ranks then load it (a relaunch finds it built by the command
    that launched them).
    """
    from tunekit.train import launch

    check_installed(recipe.training.report_to)  # before the run folder's lock is written
    folder = claim_run_dir(recipe, options) if run_folder and launch.is_main_process() else None
    try:
        plan = _checked(recipe, options)
    except BaseException:
        if folder is not None:
            folder.release()
        raise
    plan.folder = folder
    return plan


def _checked(recipe: Recipe, options: RunOptions) -> Plan:
    from tunekit.models.loading import add_tokens, load_tokenizer
    from tunekit.train import launch
    from tunekit.train.checkpoints import find_resume
    from tunekit.train.preflight import check_environment, check_peft_options, check_reward_source
    from tunekit.train.samples import sample_prompts

    ref = resolve(recipe.model.name_or_path, recipe.model.revision, build=True, download=True)
    method = module_for(recipe, ref)
    with launch.main_process_first():
        data = recipe_data(recipe)
    check_environment(recipe)
    check_reward_source(recipe)
    check_peft_options(recipe, ref, options)
    tokenizer = add_tokens(load_tokenizer(ref.tokenizer_path, recipe.model), recipe.model.add_tokens)
    if data.conversational and not tokenizer.chat_template:
        raise UserError(
            f"{recipe.model.name_or_path} has no chat template, and {data.names} holds chat messages "
            f"(format {data.format}); use a model with a chat template, or plain-text prompts"
        )
    out = folder_path(recipe.output_dir)
    resume = find_resume(recipe, out, options.force) if options.resume else None
    plan = Plan(recipe, options, ref, data, tokenizer, method, getattr(method, "HEAD", "causal-lm"), resume)
    if hasattr(method, "head"):
        plan.head = method.head(plan)
    sample_prompts(plan)  # sample settings the model can take
    if hasattr(method, "check"):
        with launch.main_process_first():  # the method's check tokenises (sft, classify, pretrain)
            plan.prepared = method.check(plan)
    return plan


def load(plan: Plan) -> Run:
    """Seed, load the model (a new head and LoRA start from the recipe's seed), check the new adapter fits
    it, then write the run folder (rank 0; the other ranks wait for it)."""
    from transformers import set_seed

    from tunekit.models.loading import grow_embeddings, load_model, resolve_dtype
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
    if recipe.model.add_tokens:
        model = grow_embeddings(model, plan.tokenizer)
    check_adapter(recipe.adapter, model)
    out = plan.out
    if plan.folder is not None:
        prepare_run_dir(plan.folder.prepare(), recipe)
        clear_staging(out)  # half-written checkpoints of an interrupted attempt
        if plan.resume is not None:
            trim_metrics(out, plan.resume.step)  # the resumed run logs these steps again
    launch.wait_for_everyone()
    return Run(plan, model, out, resolve_dtype(recipe.model.dtype), RunLog.open(recipe, out))


def train(run: Run, echo: Echo) -> Trained:
    """The method's own part: its trainer, trained and evaluated before and after, `final/` saved.
    A run that fails or is stopped closes its trackers as failed."""
    try:
        return run.plan.method.train(run, echo)
    except BaseException:
        run.log.finish(failed=True)
        raise


def report(run: Run, trained: Trained, echo: Echo) -> dict[str, Any]:
    """summary.json (rank 0) and the closing lines; a DDP run whose copies drifted apart fails here. A run
    that ended well is swapped in for the one it replaces (--overwrite)."""
    summary = build_summary(run.recipe, run.data, trained)
    folder = run.plan.folder
    if folder is not None:
        write_summary(run.out, summary)
    run.log.summary(summary)
    run.log.finish(failed=summary.get("replicas_identical") is False)
    if summary.get("replicas_identical") is False:  # DDP failed to keep the copies in sync: not a result to trust
        print_result(summary, trained, echo)
        raise RuntimeError(
            f"the {summary['world_size']} processes ended with different weights (checksums "
            f"{summary['replica_checksums']}); {run.out / 'summary.json'} records it and final/ holds rank 0's copy"
        )
    if folder is not None:
        folder.commit()
    if trained.final is not None:  # say where it lies now
        trained = dataclasses.replace(trained, final=run.dest / trained.final.relative_to(run.out))
    print_result(summary, trained, echo)
    return summary


@contextmanager
def claimed(plan: Plan, echo: Callable[..., None]) -> Iterator[Plan]:
    """The stages after preflight: when they fail (an error, Ctrl-C, a non-finite loss) output_dir stays as
    it was and what the attempt kept is named; the lock is let go in every case."""
    folder = plan.folder
    try:
        yield plan
    except BaseException:
        note = folder.abandon() if folder is not None else None
        if note:
            echo(note, err=True)
        raise
    finally:
        if folder is not None:
            folder.release()


def run_recipe(recipe: Recipe, options: RunOptions = RunOptions(), echo: Echo = print) -> dict[str, Any]:
    """Every stage in one process (scripts, benchmarks, tests); the CLI runs them one by one to launch."""
    plan = preflight(recipe, options)
    with claimed(plan, lambda line, err=False: echo(line)):
        run = load(plan)
        return report(run, train(run, echo), echo)
