"""Builders and callbacks shared by the training methods: recipe -> peft / transformers settings.

    >>> from tunekit.config.schema import AdapterSection
    >>> peft_config(AdapterSection(type="lora", r=4)).r
    4
    >>> peft_config(AdapterSection(type="prompt_tuning", num_virtual_tokens=8)).num_virtual_tokens
    8

Each method module (tunekit/methods/*.py) reads top to bottom and calls these.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from peft import (
    LoraConfig,
    PeftConfig,
    PrefixTuningConfig,
    PromptEncoderConfig,
    PromptTuningConfig,
)
from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState

from tunekit.config.schema import SOFT_PROMPTS, AdapterSection, Recipe
from tunekit.errors import UserError
from tunekit.train.launch import is_main_process
from tunekit.train.rundir import append_metrics

OPTIMIZERS = {
    "adamw": "adamw_torch_fused",  # transformers' default: fused kernels on CPU and GPU
    "adamw-8bit": "adamw_bnb_8bit",
    "paged-adamw-8bit": "paged_adamw_8bit",
    "sgd": "sgd",
    "adafactor": "adafactor",
}


def peft_config(
    adapter: AdapterSection, model: Any = None, task_type: str = "CAUSAL_LM", tokenizer_path: str | None = None
) -> PeftConfig | None:
    """A new adapter for the recipe (LoRA or a soft prompt); None for full fine-tuning or when `model`
    already carries the adapter to train. `tokenizer_path` tokenises a prompt_tuning init text."""
    if adapter.type == "none" or _is_peft(model):
        return None
    if adapter.type in ("lora", "qlora"):
        return LoraConfig(
            r=adapter.r,
            lora_alpha=adapter.alpha,
            lora_dropout=adapter.dropout,
            target_modules=adapter.target_modules,
            bias=adapter.bias,
            task_type=task_type,
            # peft's SEQ_CLS trains a new head named `classifier` or `score`; T5 and BART name theirs so
            modules_to_save=["classification_head"] if task_type == "SEQ_CLS" and hasattr(model, "classification_head") else None,
        )
    common: dict[str, Any] = {"task_type": task_type, "num_virtual_tokens": adapter.num_virtual_tokens}
    if adapter.type == "prompt_tuning":
        if adapter.prompt_init == "random":
            return PromptTuningConfig(**common)
        return PromptTuningConfig(
            **common, prompt_tuning_init="TEXT", prompt_tuning_init_text=adapter.prompt_init_text,
            tokenizer_name_or_path=tokenizer_path,
        )
    if adapter.type == "prefix_tuning":
        return PrefixTuningConfig(
            **common, prefix_projection=adapter.prefix_projection, encoder_hidden_size=adapter.encoder_hidden_size
        )
    return PromptEncoderConfig(
        **common, encoder_hidden_size=adapter.encoder_hidden_size,
        encoder_reparameterization_type=adapter.encoder_type.upper(),
    )


def _is_peft(model: Any) -> bool:
    return model is not None and hasattr(model, "peft_config")


def check_adapter(adapter: AdapterSection, model: Any) -> None:
    """The recipe's new adapter must fit the loaded model: LoRA targets it has, a soft prompt its family
    can take. Checked before the run folder is written (peft fails later, or skips a name silently)."""
    if adapter.type == "none" or _is_peft(model):
        return
    family = getattr(model.config, "model_type", type(model).__name__)
    if adapter.type in ("lora", "qlora") and adapter.target_modules != "all-linear":
        names = [name for name, _ in model.named_modules() if name]
        targets = adapter.target_modules
        if isinstance(targets, str):  # peft reads one string as a regex over full module names
            missing = [] if any(re.fullmatch(targets, name) for name in names) else [targets]
        else:
            missing = [t for t in targets if not any(name == t or name.endswith("." + t) for name in names)]
        if missing:
            linear = sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules() if _is_linear(module)})
            raise UserError(
                f"adapter.target_modules: {', '.join(missing)} not found in this {family} model; "
                f"its linear layers are named {', '.join(n for n in linear if n != 'lm_head')} (or use all-linear)"
            )
    if adapter.type == "prefix_tuning" and not _has_attention_cache(model):
        raise UserError(
            f"adapter.type: prefix_tuning puts learned keys and values into the attention cache of every layer; "
            f"{family} generates without one (use prompt_tuning or p_tuning)"
        )
    if adapter.type in SOFT_PROMPTS and model.get_input_embeddings() is None:
        raise UserError(f"adapter.type: {adapter.type} needs the model's input embeddings; {family} exposes none")


def _has_attention_cache(model: Any) -> bool:
    """A model that generates (transformers' public `can_generate`) through attention heads keeps a key/value
    cache per layer, which is where peft's prefix tuning puts its prefixes (state-space models have none)."""
    text = model.config.get_text_config()
    heads = getattr(text, "num_attention_heads", None) or getattr(text, "n_head", None)
    return bool(model.can_generate() and heads)


def _is_linear(module: Any) -> bool:
    # Conv1D: GPT-2's linear layers; bitsandbytes' Linear4bit / Linear8bitLt subclass nn.Linear.
    return isinstance(module, torch.nn.Linear) or type(module).__name__ == "Conv1D"


def check_environment(recipe: Recipe) -> None:
    """Settings that are valid in a recipe but not on this machine; checked before the run folder is made."""
    if recipe.model.dtype == "fp16" and not torch.cuda.is_available():
        raise UserError("model.dtype: fp16 mixed precision needs a GPU; use bf16 or fp32 (auto) on a CPU")


def trainer_kwargs(recipe: Recipe, out: Path, model_dtype: torch.dtype, has_eval: bool) -> dict[str, Any]:
    """Keyword arguments for transformers' TrainingArguments (and trl configs that extend it)."""
    t = recipe.training
    return {
        # Checkpoints are written under a temporary name and renamed when complete (tunekit.train.checkpoints).
        "output_dir": str(out / "checkpoints" / ".partial"),
        "learning_rate": t.learning_rate,
        "max_steps": t.max_steps,
        "num_train_epochs": t.epochs,
        "per_device_train_batch_size": t.batch_size,
        "per_device_eval_batch_size": t.batch_size,
        "gradient_accumulation_steps": t.gradient_accumulation_steps,
        "warmup_steps": t.warmup_steps,
        "lr_scheduler_type": t.lr_scheduler,
        "weight_decay": t.weight_decay,
        "max_grad_norm": t.max_grad_norm,
        "optim": OPTIMIZERS[t.optimizer],
        "activation_checkpointing": t.gradient_checkpointing,  # transformers 5 name of gradient checkpointing
        "logging_steps": t.logging_steps,
        "eval_strategy": "steps" if has_eval and t.eval_steps else "no",
        "eval_steps": t.eval_steps,
        "save_strategy": "steps" if t.save_steps else "no",
        "save_steps": t.save_steps or 500,
        "save_total_limit": None,  # tunekit.train.checkpoints rotates the complete ones; the Trainer sees one at a time
        "seed": t.seed,
        "data_seed": t.seed,
        "report_to": "none",  # TensorBoard goes through `callbacks()`, into the run folder
        "bf16": model_dtype == torch.bfloat16,
        "fp16": recipe.model.dtype == "fp16",
        "use_cpu": not torch.cuda.is_available(),  # bf16 autocast on a CPU needs it said
        "include_num_input_tokens_seen": "non_padding",
        # Every trainable weight takes part in each forward pass (full, LoRA, soft prompts): DDP need not search
        # the graph for weights without a gradient (transformers' default does, and warns on every rank).
        "ddp_find_unused_parameters": False,
        "dataloader_num_workers": 0,
    }


def count_parameters(model: Any) -> tuple[int, int]:
    """(total, trainable). 4-bit weights are packed two per byte: count the values they hold."""
    total = trainable = 0
    for param in model.parameters():
        n = param.numel()
        if param.__class__.__name__ == "Params4bit":
            n = int(getattr(param, "quant_state").shape.numel()) if getattr(param, "quant_state", None) else n * 2
        total += n
        if param.requires_grad:
            trainable += n
    return total, trainable


def callbacks(recipe: Recipe, out: Path) -> list[TrainerCallback]:
    """metrics.jsonl always; TensorBoard event files in `output_dir/tensorboard` when asked for.

    Also what makes runs resumable: atomic checkpoints, a checkpoint on SIGINT/SIGTERM, per-process seeds.
    """
    from tunekit.train.checkpoints import CheckpointWriter, ProcessSeed, StopOnSignal

    chosen: list[TrainerCallback] = [
        MetricsLogger(out),
        ProgressReporter(),
        CheckpointWriter(recipe, out),
        StopOnSignal(),
        ProcessSeed(recipe.training.seed),
    ]
    # Rank 0 only: a SummaryWriter opens its event file when made, so each rank would add one.
    if recipe.training.report_to == "tensorboard" and is_main_process():
        from torch.utils.tensorboard import SummaryWriter
        from transformers.integrations import TensorBoardCallback

        chosen.append(TensorBoardCallback(tb_writer=SummaryWriter(log_dir=str(out / "tensorboard"))))
    return chosen


class MetricsLogger(TrainerCallback):
    """Append each log record to metrics.jsonl (main process only)."""

    def __init__(self, out: Path) -> None:
        self.out = out

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
        if state.is_world_process_zero and logs:
            append_metrics(self.out, {"step": state.global_step, **logs})


class ProgressReporter(TrainerCallback):
    """A progress bar and one short line per log step, in place of transformers' printed dicts."""

    SHOWN = (("loss", "loss"), ("eval_loss", "eval loss"), ("grad_norm", "grad norm"), ("learning_rate", "lr"))

    def __init__(self) -> None:
        self.bar: Any = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.is_world_process_zero:
            from tqdm.auto import tqdm

            # disable=None: a bar on a terminal, only the log lines in CI logs and pipes.
            self.bar = tqdm(total=state.max_steps, desc="training", unit="step", dynamic_ncols=True, disable=None)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
        if self.bar is None or not logs:
            return
        parts = [f"{label} {logs[key]:.4g}" for key, label in self.SHOWN if key in logs]
        if parts:
            self.bar.write(f"step {state.global_step}/{state.max_steps}  " + "  ".join(parts))

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def replace_printers(trainer: Any) -> None:
    """Drop transformers' own progress/printer callbacks: ProgressReporter takes their place."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)


class FirstEvaluation(TrainerCallback, ExportableState):
    """Keep the figures of the first evaluation of `train()` (eval_on_start) and add the method's own to them.

    The figures travel in every checkpoint (trainer_state.json, as transformers saves an ExportableState),
    so a resumed run reports the "before" figures of the run's start, not of the checkpoint.
    """

    def __init__(
        self, trainer: Any, figures: dict[str, str], extra_eval: Callable[[], dict[str, float]] | None,
        report: Callable[[str], None], found: dict[str, float] | None = None,
    ) -> None:
        self.trainer, self.figures, self.extra_eval, self.report = trainer, figures, extra_eval, report
        self.found = found
        self.seconds = 0.0  # spent evaluating inside train()

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict | None = None, **kwargs: Any) -> None:
        if self.found is not None:
            return
        metrics = metrics or {}
        found = named_figures(metrics, self.figures)
        started = time.perf_counter()
        if self.extra_eval is not None:
            extra = self.extra_eval()
            self.trainer.log(extra)  # into metrics.jsonl with the trainer's own figures
            found.update(extra)
        self.seconds = float(metrics.get("eval_runtime", 0.0)) + time.perf_counter() - started
        self.found = found
        from tqdm.auto import tqdm

        with tqdm.external_write_mode():  # the progress bar has started: print around it
            self.report("before training: " + figures_line(found))

    def state(self) -> dict[str, Any]:
        return {"args": {}, "attributes": {"found": self.found}}


def named_figures(metrics: dict[str, Any], figures: dict[str, str]) -> dict[str, float]:
    """The summary's names for the trainer's metrics; a metric the method expects but the trainer did not
    report is a bug of ours (the checks before a run keep data that gives nothing to evaluate out)."""
    missing = [key for key in figures.values() if key not in metrics]
    if missing:
        raise AssertionError(f"the trainer reported no {missing}; it reported {sorted(metrics)}")
    return {name: float(metrics[key]) for name, key in figures.items()}


def figures_line(figures: dict[str, float]) -> str:
    return ", ".join(f"{name.removeprefix('eval_').replace('_', ' ')} {value:.4f}" for name, value in figures.items())


class RequireDDP(TrainerCallback):
    """Fail at the start of training, not after it, when several DDP processes would train unsynchronised
    copies (the model reached `train()` without its DistributedDataParallel wrapper)."""

    def __init__(self, trainer: Any) -> None:
        self.trainer = trainer

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        from torch.nn.parallel import DistributedDataParallel

        wrapped = self.trainer.model_wrapped  # set by train() before this event
        # modules(): torch.compile's wrapper holds the DDP module as a submodule
        if any(isinstance(module, DistributedDataParallel) for module in wrapped.modules()):
            return
        from importlib.metadata import version

        raise RuntimeError(
            f"Trainer.train() left the model without DDP ({type(wrapped).__name__}) under transformers "
            f"{version('transformers')} and accelerate {version('accelerate')}, so each of the {args.world_size} "
            "processes would train its own copy; run in one process, and please report it"
        )
