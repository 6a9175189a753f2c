"""What is being estimated: the training (or inference) setup, checked for impossible combinations.

    >>> setup = Setup(method="qlora", dtype="int4", batch_size=4, seq_len=1024).checked()
    >>> setup.adapter_bytes, setup.regime_stream
    (2, 4)

Defaults follow what `tunekit sft` runs (transformers' Trainer through trl): bf16 weights train in
pure bf16 under autocast; fp16 full fine-tuning keeps fp32 weights under fp16 autocast (AMP);
LoRA adapters are fp32 over a half-precision base (peft's default) and bf16 over a quantised one
(trl's QLoRA cast); a quantised base goes through peft's `prepare_model_for_kbit_training`, which
upcasts every non-quantised parameter to fp32.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from tunekit.errors import UserError

Method = Literal["full", "lora", "qlora", "prompt-tuning", "prefix-tuning", "p-tuning", "freeze", "inference"]
Stage = Literal["sft", "dpo", "kto", "orpo", "simpo", "reward", "ppo"]
WeightDtype = Literal["fp32", "fp16", "bf16", "int8", "int4"]
# adamw: torch's fused AdamW (transformers' default, what tunekit runs); adamw-foreach: torch's
# multi-tensor AdamW, which needs scratch the size of one state at the step.
Optimizer = Literal["adamw", "adamw-foreach", "adamw-8bit", "paged-adamw-8bit", "sgd", "adafactor"]
Sharding = Literal["none", "ddp", "zero1", "zero2", "zero3", "fsdp"]
Attention = Literal["sdpa", "eager", "flash_attention_2"]

METHODS: tuple[str, ...] = Method.__args__  # type: ignore[attr-defined]
STAGES: tuple[str, ...] = Stage.__args__  # type: ignore[attr-defined]
DTYPES: tuple[str, ...] = WeightDtype.__args__  # type: ignore[attr-defined]
OPTIMIZERS: tuple[str, ...] = Optimizer.__args__  # type: ignore[attr-defined]
SHARDINGS: tuple[str, ...] = Sharding.__args__  # type: ignore[attr-defined]
ATTENTIONS: tuple[str, ...] = Attention.__args__  # type: ignore[attr-defined]

BYTES = {"fp32": 4, "fp16": 2, "bf16": 2}
ADAPTER_METHODS = ("lora", "qlora")
PROMPT_METHODS = ("prompt-tuning", "prefix-tuning", "p-tuning")
GIB = 1024**3
CUDA_CONTEXT = 512 * 1024**2  # CUDA context and kernel images: outside the caching allocator


@dataclass(frozen=True)
class Setup:
    method: Method = "full"
    stage: Stage = "sft"
    dtype: WeightDtype = "bf16"  # precision the base weights are held in
    compute_dtype: Literal["fp32", "fp16", "bf16"] = "bf16"  # matmuls over a quantised base
    batch_size: int = 1  # sequences per GPU per micro-batch
    seq_len: int = 512  # tokens per sequence
    grad_accum: int = 1  # micro-batches per optimizer step
    lora_r: int = 8
    lora_targets: str | tuple[str, ...] = "all-linear"
    lora_dropout: float = 0.05
    lora_bias: Literal["none", "all", "lora_only"] = "none"
    use_dora: bool = False  # DoRA: a magnitude vector (out_features) per adapted layer
    modules_to_save: tuple[str, ...] = ()  # modules trained in full next to LoRA: peft keeps a trainable copy
    added_tokens: int = 0  # new tokens; under LoRA peft's trainable tokens hold their rows
    vocab_growth: int = 0  # rows the embeddings grow by (fewer than added_tokens when the vocab is padded)
    virtual_tokens: int = 20  # soft-prompt length (prompt / prefix / p-tuning)
    trainable_layers: int = 2  # `freeze`: the top layers that train
    optimizer: Optimizer = "adamw"
    master_weights: bool | None = None  # fp32 master copy in the optimizer; None: DeepSpeed ZeRO only
    gradient_checkpointing: bool = False
    attention: Attention | None = None  # None: transformers' choice (SDPA, eager where it must)
    padded: bool = True  # batches are padded (an attention mask exists); False for packed/equal lengths
    num_gpus: int = 1
    sharding: Sharding = "none"
    offload: bool = False  # ZeRO / FSDP CPU offload of optimizer states (and of weights under zero3 / fsdp)
    kbit_upcast: bool = True  # peft's prepare_model_for_kbit_training casts non-quantised weights to fp32
    quant_type: Literal["nf4", "fp4"] = "nf4"
    double_quant: bool = True
    new_tokens: int = 256  # inference: tokens generated after the prompt
    beams: int = 1  # inference: beam search width
    cuda_context: int = CUDA_CONTEXT  # bytes per GPU outside PyTorch's allocator
    device: Literal["cuda", "cpu"] = "cuda"  # "cpu": what `--measure` compares against on a CPU

    def checked(self) -> Setup:
        """This setup, or a `UserError` naming the first impossible setting."""
        for name, allowed in (
            ("method", METHODS),
            ("stage", STAGES),
            ("dtype", DTYPES),
            ("optimizer", OPTIMIZERS),
            ("sharding", SHARDINGS),
            ("attention", (*ATTENTIONS, None)),
        ):
            if getattr(self, name) not in allowed:
                raise UserError(f"{name} {getattr(self, name)!r} is not one of: {', '.join(map(str, allowed))}")
        for name in ("batch_size", "seq_len", "grad_accum", "num_gpus", "beams"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.lora_r < 1:
            raise UserError(f"--lora-r must be at least 1, got {self.lora_r}")
        if self.added_tokens < 0 or self.vocab_growth < 0:
            raise UserError(f"--add-tokens must be 0 or more, got {self.added_tokens}")
        if (self.use_dora or self.modules_to_save) and self.method not in ADAPTER_METHODS:
            raise UserError(f"--dora / --modules-to-save are LoRA settings; --method is {self.method}")
        if self.virtual_tokens < 1 and self.method in PROMPT_METHODS:
            raise UserError(f"--virtual-tokens must be at least 1, got {self.virtual_tokens}")
        if self.trainable_layers < 1 and self.method == "freeze":
            raise UserError(f"--trainable-layers must be at least 1, got {self.trainable_layers}")
        if self.new_tokens < 0:
            raise UserError(f"--new-tokens must be 0 or more, got {self.new_tokens}")
        if self.sharding == "none" and self.num_gpus > 1:
            raise UserError(
                f"--num-gpus {self.num_gpus} is more GPUs than --sharding none allows (one); "
                "pick ddp, zero1, zero2, zero3 or fsdp"
            )
        if self.offload and self.sharding not in ("zero1", "zero2", "zero3", "fsdp"):
            raise UserError("--offload needs --sharding zero1, zero2, zero3 or fsdp")
        if self.method == "qlora" and self.dtype != "int4":
            raise UserError(f"--method qlora trains LoRA over a 4-bit base; --dtype {self.dtype} contradicts it")
        if self.quantized and self.method in ("full", "freeze"):
            raise UserError(
                f"--method {self.method} cannot train {self.dtype} weights; use lora, qlora or a soft prompt"
            )
        if self.method == "inference" and self.stage != "sft":
            raise UserError(f"--stage {self.stage} trains; --method inference only generates")
        return self

    # -- derived settings ---------------------------------------------------------------------
    @property
    def quantized(self) -> bool:
        return self.dtype in ("int8", "int4")

    @property
    def training(self) -> bool:
        return self.method != "inference"

    @property
    def compute_bytes(self) -> int:
        """Bytes per element of activations."""
        if self.quantized:
            return BYTES[self.compute_dtype]
        return BYTES[self.dtype]

    @property
    def amp_over_fp32(self) -> bool:
        """fp16 full fine-tuning: fp32 weights, fp16 autocast (the grad scaler cannot unscale fp16 weights)."""
        return self.method in ("full", "freeze") and self.dtype == "fp16" and not self.uses_master_weights

    @property
    def uses_master_weights(self) -> bool:
        if self.method not in ("full", "freeze") or self.dtype not in ("fp16", "bf16"):
            return False
        if self.master_weights is None:
            return self.sharding in ("zero1", "zero2", "zero3")  # DeepSpeed always keeps fp32 masters
        return self.master_weights

    @property
    def base_bytes(self) -> int:
        """Bytes per element of non-quantised base weights as held in GPU memory."""
        if self.amp_over_fp32:
            return 4
        if self.quantized:
            return 4 if self.kbit_upcast and self.training else BYTES[self.compute_dtype]
        return BYTES[self.dtype]

    @property
    def adapter_bytes(self) -> int:
        """LoRA / soft-prompt weights: fp32 (peft), compute dtype over a quantised base (trl)."""
        if self.method in PROMPT_METHODS:
            return 4
        if self.quantized:
            return BYTES[self.compute_dtype]
        if self.sharding == "zero3" and self.dtype != "fp32":
            return BYTES[self.dtype]  # trl turns peft's fp32 autocast off under ZeRO-3
        return 4

    @property
    def autocast(self) -> bool:
        return self.training and (self.dtype != "fp32" or self.quantized)

    @property
    def regime_stream(self) -> int:
        """Bytes per element of the residual stream: the dtype of the embedding weights."""
        return self.base_bytes

    @property
    def attention_for(self) -> Attention:
        return self.attention or "sdpa"

    def with_(self, **changes: object) -> Setup:
        return replace(self, **changes)  # type: ignore[arg-type]
