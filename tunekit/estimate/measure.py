"""Run a few real training steps and measure the memory the estimate predicts.

    >>> from tunekit.estimate.setup import Setup
    >>> from tunekit.models.tiny import tiny_config
    >>> setup = Setup(method="lora", dtype="fp32", batch_size=2, seq_len=32)
    >>> m = measure(tiny_config("llama"), setup)  # doctest: +SKIP
    >>> m.peak_label  # doctest: +SKIP
    'CPU allocator peak (torch.profiler memory timeline)'

Imports torch, transformers and peft: only `tunekit estimate-memory --measure` and the tests use it.

The model is built from its config with random weights (or loaded from a folder with weights), set
up the way `tunekit sft` sets it up (dtype, autocast, bitsandbytes, peft, trl's adapter cast), and
trained on random tokens. On a GPU the peak is `torch.cuda.max_memory_allocated()` over the last
step. On a CPU there is no such counter: the peak comes from the memory timeline of
`torch.profiler` over the last step, and each term is also counted exactly from the live tensors
(parameters, gradients, optimizer states, and the tensors autograd saved in the forward pass).
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunekit.errors import UserError
from tunekit.estimate.setup import ADAPTER_METHODS, PROMPT_METHODS, Setup

MAX_CPU_PARAMETERS = 500_000_000  # beyond this, building a random model on a CPU is not a measurement


@dataclass(frozen=True)
class Measured:
    device: str
    weights: int  # bytes of all parameters (with bitsandbytes' quantisation state)
    gradients: int
    optimizer: int
    activations: int  # tensors autograd saved in the forward pass (not parameters)
    peak: int  # peak allocated bytes over the last step
    peak_label: str
    trainable: int


def measure(
    config: dict[str, Any], setup: Setup, steps: int = 3, weights_from: str | None = None, peak: bool = True
) -> Measured:
    """Train `steps` steps of `setup` on a model of `config` and measure the last one.

    `peak=False` skips the peak (on a CPU, the profiler's timeline costs seconds) and reports 0.
    """
    import torch

    setup = setup.checked()
    _check_measurable(config, setup)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    model = build_model(config, setup, device, weights_from)
    optimizer = build_optimizer(model, setup)
    batch = random_batch(config, setup, device)
    for _ in range(max(steps - 1, 1)):
        train_step(model, optimizer, batch, setup)
    saved = saved_tensor_bytes(model, batch, setup)
    if peak:
        peak_bytes, label, grads = _peak_of_last_step(model, optimizer, batch, setup, device)
    else:
        peak_bytes, label, grads = 0, "not measured", train_step(model, optimizer, batch, setup)
    return Measured(
        device=device,
        weights=parameter_bytes(model),
        gradients=grads,
        optimizer=optimizer_state_bytes(optimizer),
        activations=saved,
        peak=peak_bytes,
        peak_label=label,
        trainable=sum(p.numel() for p in model.parameters() if p.requires_grad),
    )


def _check_measurable(config: dict[str, Any], setup: Setup) -> None:
    if setup.stage != "sft" or not setup.training:
        raise UserError("--measure runs sft training steps; it does not measure dpo, reward, ppo or inference")
    if setup.sharding != "none" or setup.uses_master_weights:
        raise UserError("--measure runs on one device; drop --sharding / --master-weights to measure")
    import torch

    if not torch.cuda.is_available():
        from tunekit.estimate.params import inventory

        if inventory(config).parameters > MAX_CPU_PARAMETERS:
            raise UserError(
                f"--measure on a CPU builds the model with random weights; {config.get('model_type')} is too "
                f"large for that (over {MAX_CPU_PARAMETERS:,} parameters). Measure on a GPU, or a tiny model"
            )


# -- building -----------------------------------------------------------------------------------
def build_model(config: dict[str, Any], setup: Setup, device: str, weights_from: str | None = None) -> Any:
    """The model as `tunekit sft` would hold it: dtype, quantisation, k-bit preparation, adapter."""
    import torch

    model = _load_base(config, setup, device, weights_from)
    if setup.quantized and setup.kbit_upcast:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=setup.gradient_checkpointing)
    if setup.vocab_growth:  # model.add_tokens: tunekit resizes after loading, before the adapter
        model.resize_token_embeddings(model.get_input_embeddings().weight.shape[0] + setup.vocab_growth)
    if setup.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if setup.method != "full":
            model.enable_input_require_grads()
    model = _apply_method(model, config, setup)
    if setup.quantized and setup.method in ADAPTER_METHODS:
        compute = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[setup.compute_dtype]
        for name, param in model.named_parameters():
            if param.requires_grad and "lora_magnitude_vector" not in name:
                param.data = param.data.to(compute)  # trl's QLoRA cast of the adapter weights (DoRA's magnitude kept)
    model.train()
    return model


def _load_base(config: dict[str, Any], setup: Setup, device: str, weights_from: str | None) -> Any:
    import torch
    from transformers import AutoConfig

    cls = _model_class(config)
    attn = {"attn_implementation": setup.attention} if setup.attention else {}
    if setup.quantized:  # bitsandbytes quantises while loading: random weights go through a folder
        kwargs = {
            "quantization_config": _bnb_config(setup),
            "device_map": {"": device},
            "dtype": _torch_dtype(setup.compute_dtype),
            **attn,
        }
        if weights_from:
            return cls.from_pretrained(weights_from, **kwargs)
        with tempfile.TemporaryDirectory(prefix="tunekit-measure-") as folder:
            cls.from_config(AutoConfig.for_model(**config)).save_pretrained(folder)
            return cls.from_pretrained(folder, **kwargs)
    dtype = torch.float32 if setup.amp_over_fp32 else _torch_dtype(setup.dtype)
    if weights_from:
        return cls.from_pretrained(weights_from, dtype=dtype, **attn).to(device)
    hf_config = AutoConfig.for_model(**config)
    return cls.from_config(hf_config, dtype=dtype, **attn).to(device)


def _model_class(config: dict[str, Any]) -> Any:
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForMaskedLM,
        AutoModelForSeq2SeqLM,
    )

    model_type = config.get("model_type")
    if model_type in ("t5", "mt5", "bart"):
        return AutoModelForSeq2SeqLM
    if model_type == "bert":
        return AutoModelForMaskedLM
    return AutoModelForCausalLM


def _torch_dtype(name: str) -> Any:
    import torch

    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[name]


def _bnb_config(setup: Setup) -> Any:
    import torch
    from transformers import BitsAndBytesConfig

    if setup.dtype == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=setup.quant_type,
        bnb_4bit_use_double_quant=setup.double_quant,
        bnb_4bit_compute_dtype=_torch_dtype(setup.compute_dtype),
        bnb_4bit_quant_storage=torch.uint8,
    )


def _apply_method(model: Any, config: dict[str, Any], setup: Setup) -> Any:
    if setup.method == "full":
        return model
    if setup.method == "freeze":
        return _freeze_below(model, config, setup.trainable_layers)
    from peft import get_peft_model

    return get_peft_model(model, peft_config(config, setup, model))


def peft_config(config: dict[str, Any], setup: Setup, model: Any = None) -> Any:
    from peft import (
        LoraConfig,
        PrefixTuningConfig,
        PromptEncoderConfig,
        PromptTuningConfig,
    )

    model_type = str(config.get("model_type"))
    tasks = {"t5": "SEQ_2_SEQ_LM", "mt5": "SEQ_2_SEQ_LM", "bart": "SEQ_2_SEQ_LM", "bert": None}
    task = tasks.get(model_type, "CAUSAL_LM")
    if task is None and setup.method in PROMPT_METHODS:
        raise UserError(f"--measure: peft's {setup.method} needs a causal or sequence-to-sequence LM, not {model_type}")
    from tunekit.train.builders import lora_targets

    targets = setup.lora_targets if isinstance(setup.lora_targets, str) else list(setup.lora_targets)
    if setup.method in ADAPTER_METHODS:
        modules, parameters = lora_targets(model, targets)  # as training resolves them (mixture-of-experts)
        if parameters and setup.lora_dropout:
            raise UserError(
                "--lora-dropout: peft's LoRA on the 3-D expert weights of a mixture of experts takes none; use 0"
            )
        return LoraConfig(
            r=setup.lora_r,
            lora_alpha=2 * setup.lora_r,
            lora_dropout=setup.lora_dropout,
            target_modules=modules,
            target_parameters=parameters,
            bias=setup.lora_bias,
            task_type=task,
            use_dora=setup.use_dora,
            modules_to_save=list(setup.modules_to_save)
            + (_EMBEDDINGS.get(model_type, []) if setup.added_tokens else [])
            or None,
        )
    if setup.method == "prompt-tuning":
        return PromptTuningConfig(num_virtual_tokens=setup.virtual_tokens, task_type=task)
    if setup.method == "prefix-tuning":
        return PrefixTuningConfig(num_virtual_tokens=setup.virtual_tokens, task_type=task)
    if setup.method == "p-tuning":
        return PromptEncoderConfig(num_virtual_tokens=setup.virtual_tokens, task_type=task)
    raise UserError(f"--method {setup.method} has no peft config")


# New tokens under LoRA train the token embedding and the output head in full (tunekit.train.builders)
_EMBEDDINGS = {"llama": ["embed_tokens", "lm_head"], "gpt2": ["wte", "lm_head"]}


def _freeze_below(model: Any, config: dict[str, Any], top: int) -> Any:
    from tunekit.estimate.params import inventory

    inv = inventory(config)
    layers = inv.dims.layers
    trainable = {
        n
        for t in inv.tensors
        if t.stack == "decoder"
        for n in t.names()
        if int(n.split(".")[_layer_index(t.name)]) >= layers - top
    }
    for name, param in model.named_parameters():
        param.requires_grad = name in trainable
    return model


def _layer_index(pattern: str) -> int:
    return pattern.split(".").index("{i}")


def build_optimizer(model: Any, setup: Setup) -> Any:
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    if setup.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=1e-4, fused=True)  # transformers' default, what tunekit runs
    if setup.optimizer == "adamw-foreach":
        return torch.optim.AdamW(params, lr=1e-4, foreach=True)
    if setup.optimizer in ("adamw-8bit", "paged-adamw-8bit"):
        import bitsandbytes as bnb

        cls = bnb.optim.PagedAdamW8bit if setup.optimizer.startswith("paged") else bnb.optim.AdamW8bit
        optimizer = cls(params, lr=1e-4)
        manager = bnb.optim.GlobalOptimManager.get_instance()
        manager.initialize()  # a process-wide singleton: forget overrides of earlier models
        for module in model.modules():  # as transformers' Trainer does: embeddings keep 32-bit states
            if isinstance(module, torch.nn.Embedding):
                manager.register_module_override(module, "weight", {"optim_bits": 32})
        return optimizer
    if setup.optimizer == "sgd":
        return torch.optim.SGD(params, lr=1e-4)
    from transformers.optimization import Adafactor

    return Adafactor(params, lr=1e-4, scale_parameter=False, relative_step=False)


def random_batch(config: dict[str, Any], setup: Setup, device: str) -> dict[str, Any]:
    import torch

    from tunekit.estimate.arch import read_dims

    vocab = read_dims(config).vocab
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(3, vocab, (setup.batch_size, setup.seq_len), generator=generator)
    mask = torch.ones_like(ids)
    if setup.padded and setup.seq_len > 2:
        mask[0, -2:] = 0  # one padded row, so an attention mask exists as in padded batches
    labels = ids.masked_fill(mask == 0, -100)
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device), "labels": labels.to(device)}


# -- stepping and counting ----------------------------------------------------------------------
def _autocast(setup: Setup, device: str) -> contextlib.AbstractContextManager[Any]:
    import torch

    if not setup.autocast or setup.compute_bytes == 4:
        return contextlib.nullcontext()
    dtype = _torch_dtype(setup.compute_dtype if setup.quantized else setup.dtype)
    return torch.autocast(device, dtype=dtype)


def _device_of(model: Any) -> str:
    return next(model.parameters()).device.type


def train_step(model: Any, optimizer: Any, batch: dict[str, Any], setup: Setup) -> int:
    """One optimizer step over `grad_accum` micro-batches; returns the gradient bytes before zeroing."""
    for _ in range(setup.grad_accum):
        with _autocast(setup, _device_of(model)):
            loss = model(**batch).loss
        (loss / setup.grad_accum).backward()
    grads = sum(p.grad.numel() * p.grad.element_size() for p in model.parameters() if p.grad is not None)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return grads


def saved_tensor_bytes(model: Any, batch: dict[str, Any], setup: Setup) -> int:
    """Bytes of the distinct storages autograd saves in one forward pass, parameters excluded."""
    import torch

    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages: dict[int, int] = {}

    def pack(tensor: Any) -> Any:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in params:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor), _autocast(setup, _device_of(model)):
        loss = model(**batch).loss
    del loss
    return sum(storages.values())


def _peak_of_last_step(
    model: Any, optimizer: Any, batch: dict[str, Any], setup: Setup, device: str
) -> tuple[int, str, int]:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        grads = train_step(model, optimizer, batch, setup)
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated(), "GPU peak (torch.cuda.max_memory_allocated)", grads
    with _cpu_timeline() as timeline:
        grads = train_step(model, optimizer, batch, setup)
    return timeline.peak, "CPU allocator peak (torch.profiler memory timeline)", grads


@dataclass
class _Timeline:
    peak: int = 0


@contextlib.contextmanager
def _cpu_timeline() -> Iterator[_Timeline]:
    """The peak of live CPU tensor memory over the block, from the profiler's memory timeline.

    Uses `torch.profiler`'s memory profile, a private API: there is no public allocator counter on
    the CPU. If it is unavailable the peak reads 0 and the caller reports the exact terms only.
    """
    from torch.profiler import ProfilerActivity, profile

    result = _Timeline()
    with (
        _quiet_stderr(),
        profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True) as prof,
    ):
        yield result
    try:
        from torch.profiler._memory_profiler import Action

        live = peak = 0
        for _, action, _, size in sorted(prof._memory_profile().timeline, key=lambda event: event[0]):
            if action in (Action.PREEXISTING, Action.CREATE):
                live += size
            elif action == Action.DESTROY:
                live -= size
            peak = max(peak, live)
        result.peak = peak
    except (ImportError, AttributeError, RuntimeError):  # the private API moved: report terms only
        result.peak = 0


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence the profiler's C++ start/stop banner, written straight to file descriptor 2."""
    import os
    import sys

    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def parameter_bytes(model: Any) -> int:
    """All parameters, with bitsandbytes' quantisation state (block scales, code books, row scales)."""
    import torch

    tensors = [tensor for param in model.parameters() for tensor in _with_quant_state(param)]
    for module in model.modules():  # LLM.int8() moves its row scales into the module's state on first use
        scb = getattr(getattr(module, "state", None), "SCB", None)
        if isinstance(scb, torch.Tensor):
            tensors.append(scb)
    seen: set[int] = set()
    total = 0
    for tensor in tensors:
        key = tensor.untyped_storage().data_ptr()
        if key not in seen:
            seen.add(key)
            total += tensor.untyped_storage().nbytes()
    return total


def _with_quant_state(param: Any) -> list[Any]:
    import torch

    tensors = [param]
    state = getattr(param, "quant_state", None)
    if state is not None:
        tensors += [state.absmax, state.code]
        if getattr(state, "nested", False):
            tensors += [state.state2.absmax, state.state2.code, state.offset]
    scb = getattr(param, "SCB", None)
    if isinstance(scb, torch.Tensor):
        tensors.append(scb)
    return tensors


def optimizer_state_bytes(optimizer: Any) -> int:
    import torch

    seen: set[int] = set()
    total = 0
    for state in optimizer.state.values():
        for value in state.values():
            if isinstance(value, torch.Tensor) and value.untyped_storage().data_ptr() not in seen:
                seen.add(value.untyped_storage().data_ptr())
                total += value.untyped_storage().nbytes()
    return total


def describe_weights_source(path: str | None) -> str:
    return f"weights from {path}" if path and Path(path).exists() else "random weights built from the config"
