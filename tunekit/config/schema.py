"""The recipe schema: one typed model, defaults in one place, unknown keys rejected.

    >>> from tunekit.config.schema import Recipe
    >>> Recipe.model_validate({"method": "sft", "model": {"name_or_path": "tiny:llama"},
    ...     "data": {"train": "builtin:reversal"}, "training": {"learning_rate": 3e-3},
    ...     "output_dir": "runs/x"}).adapter.type
    'none'

Every field carries its description here, and only here: the README's recipe reference is checked
against these models by a test.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Dtype = Literal["auto", "fp32", "fp16", "bf16"]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelSection(Section):
    name_or_path: str = Field(
        description="Local folder, Hugging Face Hub id, or `tiny:ARCH` (a tiny random model built offline)."
    )
    dtype: Dtype = Field(
        "auto", description="Precision of the weights: auto is bf16 on a GPU that supports it, else fp32."
    )
    quantization: Literal["none", "8bit", "4bit"] = Field(
        "none", description="Load the base in 8-bit or 4-bit with bitsandbytes (`adapter.type: qlora` implies 4bit)."
    )
    quant_type: Literal["nf4", "fp4"] = Field("nf4", description="4-bit data type.")
    double_quant: bool = Field(True, description="Quantise the 4-bit block scales too (saves ~0.4 bit/param).")
    compute_dtype: Dtype = Field("auto", description="Dtype of 4-bit matmuls: auto follows `model.dtype`.")
    trust_remote_code: bool = Field(False, description="Run modelling code shipped with the model.")
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit).")
    attn_implementation: Literal["eager", "sdpa", "flash_attention_2"] | None = Field(
        None, description="Attention kernel; default lets transformers choose."
    )


class AdapterSection(Section):
    type: Literal["none", "lora", "qlora"] = Field(
        "none", description="none: full fine-tuning; lora; qlora: LoRA on a 4-bit base."
    )
    r: int = Field(8, ge=1, description="LoRA rank.")
    alpha: float = Field(16, gt=0, description="LoRA scaling numerator (scale = alpha / r).")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA input.")
    target_modules: str | list[str] = Field(
        "all-linear", description="Module names to adapt, or `all-linear`."
    )
    bias: Literal["none", "all", "lora_only"] = Field("none", description="Which biases train.")


DataFormat = Literal["auto", "text", "prompt_completion", "messages", "alpaca", "sharegpt"]


class DataSection(Section):
    train: str = Field(
        description="A .jsonl/.json/.csv/.parquet file, a `save_to_disk` folder, a Hub dataset id, "
        "or `builtin:NAME` (data shipped with tunekit)."
    )
    eval: str | None = Field(None, description="Evaluation data, same forms as `train`.")
    eval_fraction: float = Field(
        0.1, ge=0, lt=1, description="Without `eval`, hold out this seeded fraction of train (0: no eval)."
    )
    format: DataFormat = Field("auto", description="Row format; auto detects it from the first row's fields.")
    train_on: Literal["completion", "all"] = Field(
        "completion", description="completion: loss on completions / assistant turns only; all: every token."
    )
    max_length: int = Field(1024, ge=8, description="Tokens per example; longer ones are truncated.")
    split: str = Field("train", description="Split to read from a Hub dataset or a DatasetDict folder.")
    eval_split: str | None = Field(None, description="Split of `train` to evaluate on, for Hub datasets.")


class TrainingSection(Section):
    learning_rate: float = Field(gt=0, description="Peak learning rate.")
    max_steps: int = Field(-1, ge=-1, description="Optimizer steps; -1 trains for `epochs` instead.")

    @field_validator("max_steps")
    @classmethod
    def _steps_train_something(cls, value: int) -> int:
        if value == 0:
            raise ValueError("0 steps train nothing; use -1 to train for `epochs`")
        return value

    epochs: float = Field(1.0, gt=0, description="Passes over the data when `max_steps` is -1.")
    batch_size: int = Field(8, ge=1, description="Examples per device per micro-batch.")
    gradient_accumulation_steps: int = Field(1, ge=1, description="Micro-batches per optimizer step.")
    warmup_steps: float = Field(0, ge=0, description="Warmup steps, or a fraction of all steps if < 1.")
    lr_scheduler: Literal[
        "linear", "cosine", "constant", "constant_with_warmup", "cosine_with_restarts", "polynomial"
    ] = Field("linear", description="Learning-rate schedule after warmup.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    max_grad_norm: float = Field(1.0, ge=0, description="Gradient clipping norm (0: off).")
    optimizer: Literal["adamw", "adamw-8bit", "paged-adamw-8bit", "sgd", "adafactor"] = Field(
        "adamw", description="Optimizer."
    )
    gradient_checkpointing: bool = Field(False, description="Recompute activations to save memory.")
    logging_steps: int = Field(10, ge=1, description="Write metrics every N steps.")
    eval_steps: int | None = Field(None, ge=1, description="Also evaluate every N steps (before/after always).")
    save_steps: int | None = Field(None, ge=1, description="Checkpoint every N steps into `checkpoints/`.")
    save_total_limit: int = Field(2, ge=1, description="Checkpoints kept.")
    seed: int = Field(42, description="Seed for data order, eval split and initialisation.")
    report_to: Literal["none", "tensorboard"] = Field("none", description="Also log to TensorBoard.")


Method = Literal["sft"]


class Recipe(Section):
    method: Method = Field(description="The command this recipe is for (`tunekit <method> RECIPE`).")
    model: ModelSection
    adapter: AdapterSection = Field(default_factory=AdapterSection)
    data: DataSection
    training: TrainingSection
    output_dir: str = Field(description="Run folder: recipe.yaml, metrics.jsonl, summary.json, final/.")

    @model_validator(mode="after")
    def _quantization_needs_an_adapter(self) -> Recipe:
        if self.adapter.type == "qlora" and self.model.quantization == "none":
            self.model.quantization = "4bit"
        if self.adapter.type == "none" and self.model.quantization != "none":
            raise ValueError(
                f"model.quantization: {self.model.quantization} weights cannot be fully fine-tuned; "
                "set adapter.type to lora or qlora"
            )
        return self


SECTIONS: dict[str, type[Section]] = {
    "model": ModelSection,
    "adapter": AdapterSection,
    "data": DataSection,
    "training": TrainingSection,
}
