"""Small pure builders the training methods share: recipe -> peft config, TrainingArguments, trainer inputs.

    >>> from tunekit.config.sections import AdapterSection
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

from tunekit.config.schema import Recipe
from tunekit.config.sections import AdapterSection
from tunekit.models.loading import new_token_ids
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


# adapter.init -> peft's init_lora_weights. PiSSA takes the exact SVD: the randomised one would differ
# between the start of a run and its --resume, and the base keeps what the adapter took from it.
LORA_INIT = {"default": True, "gaussian": "gaussian", "pissa": "pissa", "olora": "olora", "loftq": "loftq"}
CONVERTED_INITS = ("pissa", "olora")  # the base keeps a residual: final/ is converted to a plain LoRA
INITIAL_ADAPTER = "adapter_init"  # run-folder subfolder: the adapter as initialised, for that conversion


def peft_config(
    adapter: AdapterSection,
    model: Any = None,
    task_type: str = "CAUSAL_LM",
    tokenizer_path: str | None = None,
    new_tokens: list[int] | None = None,
) -> PeftConfig | None:
    """A new adapter for the recipe (LoRA or a soft prompt); None for full fine-tuning or when `model`
    already carries the adapter to train. `tokenizer_path` tokenises a prompt_tuning init text;
    `new_tokens` (ids of `model.add_tokens`): the embedding and output head train in full next to LoRA."""
    if adapter.type == "none" or is_peft(model):
        return None
    if adapter.type in ("lora", "qlora"):
        from peft import LoftQConfig

        saved = list(adapter.modules_to_save)
        if new_tokens:
            saved += [name for name in embedding_modules(model) if name not in saved]
        # peft's SEQ_CLS trains a new head named `classifier` or `score`; T5 and BART name theirs so
        if task_type == "SEQ_CLS" and hasattr(model, "classification_head"):
            saved.append("classification_head")
        modules, parameters = lora_targets(model, adapter.target_modules, task_type)
        return LoraConfig(
            r=adapter.r,
            lora_alpha=adapter.alpha,
            lora_dropout=adapter.dropout,
            target_modules=modules,
            target_parameters=parameters,
            bias=adapter.bias,
            task_type=task_type,
            modules_to_save=saved or None,
            use_dora=adapter.use_dora,
            use_rslora=adapter.use_rslora,
            init_lora_weights=LORA_INIT[adapter.init],
            loftq_config=LoftQConfig(loftq_bits=4) if adapter.init == "loftq" else {},
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


def embedding_modules(model: Any) -> list[str]:
    """Names of the input embedding and the output head (tied or not): what `model.add_tokens` trains in full
    under LoRA (peft's modules_to_save). trl's SFT computes its loss from `lm_head.weight` itself (its fused
    LM head), which peft's trainable tokens leave unchanged, so the new rows would not learn to be predicted."""
    names = {id(module): name for name, module in model.named_modules()}
    found = [names[id(model.get_input_embeddings())]]
    output = model.get_output_embeddings()
    if output is not None:
        found.append(names[id(output)])
    return found


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
        # A NaN/inf step loss is logged as it is (transformers would log the mean of the others instead), so
        # StopOnNonFinite sees it.
        "logging_nan_inf_filter": False,
        "eval_strategy": "steps" if has_eval and t.eval_steps else "no",
        "eval_steps": t.eval_steps,
        "save_strategy": "steps" if t.save_steps else "no",
        "save_steps": t.save_steps or 500,
        "save_total_limit": None,  # tunekit.train.checkpoints rotates the complete ones; the Trainer sees one at a time
        "seed": t.seed,
        "data_seed": t.seed,
        "report_to": "none",  # every tracker goes through tunekit.train.trackers.RunLog, with the same figures
        "bf16": model_dtype == torch.bfloat16,
        "fp16": recipe.model.dtype == "fp16",
        "use_cpu": not torch.cuda.is_available(),  # bf16 autocast on a CPU needs it said
        "include_num_input_tokens_seen": "non_padding",
        # Every trainable weight takes part in each forward pass (full, LoRA, soft prompts): DDP need not search
        # the graph for weights without a gradient (transformers' default does, and warns on every rank).
        "ddp_find_unused_parameters": False,
        "dataloader_num_workers": 0,
        "neftune_noise_alpha": t.neftune_noise_alpha,
        "torch_compile": t.torch_compile,
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

    `train` / `evaluation` (datasets) replace the recipe's rows when a method reshapes them (KTO unpairs pairs,
    SFT tokenises them).
    `wrap_peft`, for trainers that take no `peft_config` (transformers' Trainer, Seq2SeqTrainer): the
    model comes back wrapped in the recipe's new adapter, as trl would wrap it, and no `peft_config`.
    """
    from tunekit.train.callbacks import callbacks

    train = run.data.train if train is None else train
    evaluation = run.data.eval if evaluation is None else evaluation
    recipe = run.recipe
    adapter = peft_config(
        recipe.adapter,
        run.model,
        task_type,
        run.ref.tokenizer_path,
        new_token_ids(run.tokenizer, recipe.model.add_tokens),
    )
    inputs: dict[str, Any] = {
        "model": run.model,
        "train_dataset": trainer_rows(train),
        "eval_dataset": trainer_rows(evaluation) if evaluation is not None and len(evaluation) else None,
        "processing_class": run.tokenizer,
        "peft_config": adapter,
        "callbacks": callbacks(recipe, run.out, run.log),
    }
    # LoRA+ builds its optimizer over the adapter's parameters, and PiSSA / OLoRA save the adapter as it
    # starts: both need the model wrapped before the trainer is made.
    if wrap_peft or (
        adapter is not None and (recipe.adapter.loraplus_lr_ratio or recipe.adapter.init in CONVERTED_INITS)
    ):
        del inputs["peft_config"]
        if adapter is not None:
            inputs["model"] = wrap(run, adapter)
        if recipe.adapter.loraplus_lr_ratio and is_peft(inputs["model"]):
            inputs["optimizers"] = (loraplus_optimizer(run, inputs["model"]), None)
    return inputs


def trainer_rows(dataset: Any) -> Any:
    """A dataset without tunekit's bookkeeping columns (`_source`: which source gave the row)."""
    names = dataset.column_names or []
    return dataset.remove_columns([name for name in names if name.startswith("_")])


def wrap(run: Run, adapter: PeftConfig) -> Any:
    """The model in its new adapter (peft's get_peft_model); PiSSA / OLoRA keep the adapter as initialised
    in the run folder, to convert final/ to a plain LoRA on the original base (`save_adapter`)."""
    from peft import get_peft_model

    from tunekit.train.launch import is_main_process

    model = get_peft_model(run.model, adapter)
    if run.recipe.adapter.init in CONVERTED_INITS and is_main_process():
        model.save_pretrained(str(run.out / INITIAL_ADAPTER))
    return model


def save_adapter(model: Any, run: Run) -> None:
    """PiSSA / OLoRA: rewrite final/ as peft converts it, a plain LoRA of rank 2r that applies to the original
    base (peft's path_initial_model_for_weight_conversion), so plain peft loads it on the base it names."""
    from tunekit.train.launch import is_main_process

    if run.recipe.adapter.init in CONVERTED_INITS and is_peft(model) and is_main_process():
        initial = run.out / INITIAL_ADAPTER
        model.save_pretrained(str(run.out / "final"), path_initial_model_for_weight_conversion=str(initial))


def loraplus_optimizer(run: Run, model: Any) -> Any:
    """LoRA+ (peft's create_loraplus_optimizer): the recipe's optimizer, B matrices at `loraplus_lr_ratio`
    times the learning rate. The optimizer class and its keywords are the Trainer's own for `training.optimizer`."""
    from peft.optimizers import create_loraplus_optimizer
    from transformers import Trainer, TrainingArguments

    args = TrainingArguments(**trainer_kwargs(run.recipe, run.out, run.dtype, has_eval=False))
    optimizer_cls, kwargs = Trainer.get_optimizer_cls_and_kwargs(args, model)
    kwargs = dict(kwargs)
    return create_loraplus_optimizer(
        model,
        optimizer_cls,
        lr=kwargs.pop("lr"),
        loraplus_lr_ratio=run.recipe.adapter.loraplus_lr_ratio,
        loraplus_weight_decay=run.recipe.training.weight_decay,
        **kwargs,
    )
