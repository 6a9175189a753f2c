"""Small pure builders the training methods share: recipe -> peft config, TrainingArguments, trainer inputs.

    >>> from tunekit.config.schema import AdapterSection
    >>> peft_config(AdapterSection(type="lora", r=4)).r
    4
    >>> peft_config(AdapterSection(type="prompt_tuning", num_virtual_tokens=8)).num_virtual_tokens
    8

Each method module (tunekit/methods/*.py) reads top to bottom and calls these.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from peft import (
    LoraConfig,
    PeftConfig,
    PrefixTuningConfig,
    PromptEncoderConfig,
    PromptTuningConfig,
)

from tunekit.config.schema import AdapterSection, Recipe
from tunekit.train.preflight import is_peft

if TYPE_CHECKING:
    from tunekit.train.pipeline import Run

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
    if adapter.type == "none" or is_peft(model):
        return None
    if adapter.type in ("lora", "qlora"):
        modules, parameters = lora_targets(model, adapter.target_modules, task_type)
        return LoraConfig(
            r=adapter.r,
            lora_alpha=adapter.alpha,
            lora_dropout=adapter.dropout,
            target_modules=modules,
            target_parameters=parameters,
            bias=adapter.bias,
            task_type=task_type,
            # peft's SEQ_CLS trains a new head named `classifier` or `score`; T5 and BART name theirs so
            modules_to_save=["classification_head"]
            if task_type == "SEQ_CLS" and hasattr(model, "classification_head")
            else None,
        )
    common: dict[str, Any] = {"task_type": task_type, "num_virtual_tokens": adapter.num_virtual_tokens}
    if adapter.type == "prompt_tuning":
        if adapter.prompt_init == "random":
            return PromptTuningConfig(**common)
        return PromptTuningConfig(
            **common,
            prompt_tuning_init="TEXT",
            prompt_tuning_init_text=adapter.prompt_init_text,
            tokenizer_name_or_path=tokenizer_path,
        )
    if adapter.type == "prefix_tuning":
        return PrefixTuningConfig(
            **common, prefix_projection=adapter.prefix_projection, encoder_hidden_size=adapter.encoder_hidden_size
        )
    return PromptEncoderConfig(
        **common,
        encoder_hidden_size=adapter.encoder_hidden_size,
        encoder_reparameterization_type=adapter.encoder_type.upper(),
    )


def lora_targets(
    model: Any, targets: str | list[str], task_type: str | None = None
) -> tuple[str | list[str], list[str] | None]:
    """peft's `target_modules` and `target_parameters` for `adapter.target_modules`.

    Token classification: peft's `all-linear` leaves out the head only for sequence classification, and a token
    classifier's head (`classifier`, `score`) is both a linear layer and, for peft's TOKEN_CLS, a module it trains
    whole, which peft refuses; `all-linear` then means every nn.Linear but the head.

    transformers 5 stores a mixture-of-experts layer's experts as 3-D parameters (experts x out x in), not as
    nn.Linear modules, and its router as a custom module. On such a model `all-linear` means every nn.Linear
    (attention; not the output layer or a classifier head) plus LoRA on each expert's matrices through peft's
    `target_parameters`; the router stays frozen with no adapter, so tokens keep the routing (and the load
    balance) the model was trained with. (peft 0.21's own `all-linear` on Mixtral also puts LoRA on the router.)
    """
    import torch
    from transformers.pytorch_utils import Conv1D

    if targets != "all-linear" or model is None:
        return targets, None
    experts = sorted(name for name, param in model.named_parameters() if param.ndim == 3)
    if not experts and task_type != "TOKEN_CLS":
        return targets, None
    heads = {model.get_output_embeddings(), *(getattr(model, name, None) for name in ("score", "classifier"))}
    linear = sorted(
        name
        for name, module in model.named_modules()
        if isinstance(module, (torch.nn.Linear, Conv1D)) and module not in heads
    )
    return linear, experts or None


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
    from bitsandbytes.nn import Params4bit

    total = trainable = 0
    for param in model.parameters():
        n = param.numel()
        if isinstance(param, Params4bit):
            n = int(param.quant_state.shape.numel()) if param.quant_state is not None else n * 2
        total += n
        if param.requires_grad:
            trainable += n
    return total, trainable


def trainer_inputs(
    run: Run,
    task_type: str = "CAUSAL_LM",
    train: list[dict[str, Any]] | None = None,
    evaluation: list[dict[str, Any]] | None = None,
    wrap_peft: bool = False,
) -> dict[str, Any]:
    """The keyword arguments every trl trainer takes alike: model, datasets, tokenizer, LoRA, callbacks.

    `train` / `evaluation` replace the recipe's rows when a method reshapes them (KTO unpairs pairs).
    `wrap_peft`, for trainers that take no `peft_config` (transformers' Trainer, Seq2SeqTrainer): the
    model comes back wrapped in the recipe's new adapter, as trl would wrap it, and no `peft_config`.
    """
    from datasets import Dataset

    from tunekit.train.callbacks import callbacks

    train = run.data.train if train is None else train
    evaluation = run.data.eval if evaluation is None else evaluation
    adapter = peft_config(run.recipe.adapter, run.model, task_type, tokenizer_path=run.ref.tokenizer_path)
    inputs: dict[str, Any] = {
        "model": run.model,
        "train_dataset": Dataset.from_list(train),
        "eval_dataset": Dataset.from_list(evaluation) if evaluation else None,
        "processing_class": run.tokenizer,
        "peft_config": adapter,
        "callbacks": callbacks(run.recipe, run.out),
    }
    if wrap_peft:
        del inputs["peft_config"]
        if adapter is not None:
            from peft import get_peft_model

            inputs["model"] = get_peft_model(run.model, adapter)
    return inputs
