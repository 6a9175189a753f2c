"""The recipe schema: one typed model, defaults in one place, unknown keys rejected.

    >>> recipe = parse_recipe({"method": "dpo", "model": {"name_or_path": "tiny:llama"},
    ...     "data": {"train": "builtin:reversal-preference"}, "training": {"learning_rate": 3e-3},
    ...     "output_dir": "runs/x"})
    >>> type(recipe).__name__, recipe.dpo.beta, recipe.adapter.type
    ('DPORecipe', 0.1, 'none')

A recipe is one of the per-method models (SFTRecipe, DPORecipe, ...), chosen by `method`, so each
method's section is typed and present (defaults filled in), and a key the method ignores is refused.

Every field carries its description here, and only here: the README's recipe reference is checked
against these models by a test.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, TypeAdapter, model_validator

from tunekit.config.sections import (
    SOFT_PROMPTS,
    AdapterSection,
    ClassifySection,
    DataSection,
    DPOSection,
    EmbedData,
    EmbedSection,
    GRPOSection,
    KTOSection,
    ModelSection,
    ORPOSection,
    PPOSection,
    PretrainData,
    PretrainSection,
    RewardData,
    RewardSection,
    Section,
    SFTData,
    SimPOSection,
    TagData,
    TagSection,
    TrainingSection,
    TruncatedData,
)


class RecipeBase(Section):
    """The sections every recipe has; each method's recipe adds its own (a discriminated union on `method`)."""

    method: str = Field(
        description="The command this recipe is for (`tunekit <method> RECIPE`): sft, dpo, reward, orpo, kto, "
        "simpo, ppo, grpo, classify, tag, embed or pretrain; it decides which other keys the recipe takes."
    )
    model: ModelSection
    adapter: AdapterSection = Field(default_factory=AdapterSection)
    data: DataSection
    training: TrainingSection
    output_dir: str = Field(description="Run folder: recipe.yaml, metrics.jsonl, summary.json, final/.")

    @property
    def train_on(self) -> str:
        """What carries loss: completions (or assistant turns), or every token (SFT's `data.train_on`)."""
        return "completion"

    @property
    def sequence_length(self) -> int | None:
        """Tokens per training sequence, when the recipe fixes it (validate's statistics, estimate-memory)."""
        return None

    @model_validator(mode="after")
    def _soft_prompts_for_sft(self) -> RecipeBase:
        if self.adapter.type in SOFT_PROMPTS and self.method != "sft":
            raise ValueError(
                f"adapter.type: {self.adapter.type} (a soft prompt) trains with tunekit sft, not "
                f"tunekit {self.method}; use lora or qlora"
            )
        if self.adapter.type == "prefix_tuning" and self.training.gradient_checkpointing:
            # peft keeps the prefixes in the attention cache, which activation recomputation cannot replay.
            raise ValueError(
                "adapter.type: prefix_tuning does not work with training.gradient_checkpointing; turn one off"
            )
        return self

    @model_validator(mode="after")
    def _quantization_needs_an_adapter(self) -> RecipeBase:
        if self.adapter.type == "qlora" and self.model.quantization == "none":
            self.model.quantization = "4bit"
        if self.adapter.type == "qlora" and self.model.quantization != "4bit":
            raise ValueError(
                f"adapter.type: qlora is LoRA on a 4-bit base, and model.quantization is {self.model.quantization}: "
                "leave model.quantization out (or set 4bit) for QLoRA, or set adapter.type: lora for LoRA on an "
                f"{self.model.quantization} base"
            )
        if self.adapter.type == "none" and self.model.quantization != "none":
            raise ValueError(
                f"model.quantization: {self.model.quantization} weights cannot be fully fine-tuned; "
                "set adapter.type to lora or qlora"
            )
        return self

    @model_validator(mode="after")
    def _what_peft_refuses(self) -> RecipeBase:
        adapter, quantization = self.adapter, self.model.quantization
        if self.model.add_tokens and adapter.type in SOFT_PROMPTS:
            raise ValueError(
                f"model.add_tokens: a soft prompt ({adapter.type}) keeps every embedding frozen, so new tokens "
                "would never train; use lora, qlora or full fine-tuning"
            )
        if adapter.init == "pissa" and quantization != "none":
            # peft's pissa_init takes the SVD of a float weight and raises on a bitsandbytes one
            raise ValueError(
                f"adapter.init: pissa needs the base in full precision (peft cannot take the SVD of "
                f"{quantization} weights); use model.quantization: none, or init olora"
            )
        if adapter.init == "loftq" and quantization != "none":
            raise ValueError(
                "adapter.init: loftq quantises the base itself and fits LoRA to the error: load the base "
                "unquantised (adapter.type: lora, model.quantization: none)"
            )
        return self

    @model_validator(mode="after")
    def _samples_need_a_generating_model(self) -> RecipeBase:
        t = self.training
        if self.method in NOT_GENERATING and (t.sample_every is not None or t.sample_prompts != "eval"):
            raise ValueError(
                f"training.sample_every / sample_prompts: `tunekit {self.method}` trains a model that scores "
                "text rather than writes it, so there is nothing to sample"
            )
        return self


# Methods whose model scores or labels text: no samples, no before/after answers.
NOT_GENERATING = ("reward", "classify")


class TruncatingRecipe(RecipeBase):
    data: TruncatedData

    @property
    def sequence_length(self) -> int | None:
        return self.data.max_length


class SFTRecipe(TruncatingRecipe):
    method: Literal["sft"]
    data: SFTData

    @property
    def train_on(self) -> str:
        return self.data.train_on

    @model_validator(mode="after")
    def _streams_count_steps(self) -> SFTRecipe:
        check_stream(self)
        if self.data.streaming and self.data.packing:
            raise ValueError(
                "data.packing sorts the whole dataset into rows; with data.streaming, turn packing off "
                "(tunekit pretrain packs a stream into blocks)"
            )
        return self

    @model_validator(mode="after")
    def _soft_prompts_do_not_pack(self) -> SFTRecipe:
        if self.adapter.type in SOFT_PROMPTS and self.data.packing:
            raise ValueError(
                f"data.packing: a soft prompt ({self.adapter.type}) goes before each sequence, and a packed row "
                "holds several; turn packing off"
            )
        return self


class DPORecipe(TruncatingRecipe):
    method: Literal["dpo"]
    dpo: DPOSection = Field(default_factory=DPOSection, description="Settings of `tunekit dpo`.")


class ORPORecipe(TruncatingRecipe):
    method: Literal["orpo"]
    orpo: ORPOSection = Field(default_factory=ORPOSection, description="Settings of `tunekit orpo`.")


class KTORecipe(TruncatingRecipe):
    method: Literal["kto"]
    kto: KTOSection = Field(default_factory=KTOSection, description="Settings of `tunekit kto`.")


class SimPORecipe(TruncatingRecipe):
    method: Literal["simpo"]
    simpo: SimPOSection = Field(default_factory=SimPOSection, description="Settings of `tunekit simpo`.")


class ClassifyRecipe(TruncatingRecipe):
    method: Literal["classify"]
    classify: ClassifySection = Field(default_factory=ClassifySection, description="Settings of `tunekit classify`.")


class TagRecipe(RecipeBase):
    method: Literal["tag"]
    data: TagData
    tag: TagSection = Field(default_factory=TagSection, description="Settings of `tunekit tag`.")

    @property
    def sequence_length(self) -> int | None:
        return self.data.max_length


class EmbedRecipe(RecipeBase):
    method: Literal["embed"]
    data: EmbedData
    embed: EmbedSection = Field(default_factory=EmbedSection, description="Settings of `tunekit embed`.")

    @property
    def sequence_length(self) -> int | None:
        return self.data.max_length


class RewardRecipe(RecipeBase):
    method: Literal["reward"]
    data: RewardData
    reward: RewardSection = Field(default_factory=RewardSection, description="Settings of `tunekit reward`.")

    @property
    def sequence_length(self) -> int | None:
        return self.data.max_length


class PPORecipe(RecipeBase):
    method: Literal["ppo"]
    ppo: PPOSection = Field(description="Settings of `tunekit ppo` (a reward source is required).")

    @model_validator(mode="after")
    def _trainer_settings(self) -> PPORecipe:
        for key in ("neftune_noise_alpha", "torch_compile"):
            if getattr(self.training, key) not in (None, False):
                raise ValueError(
                    f"training.{key}: a transformers Trainer setting; tunekit ppo runs its own loop without it"
                )
        return self

    @property
    def sequence_length(self) -> int | None:
        return self.ppo.max_prompt_length + self.ppo.max_new_tokens


class GRPORecipe(RecipeBase):
    method: Literal["grpo"]
    grpo: GRPOSection = Field(description="Settings of `tunekit grpo` (a reward source is required).")


class PretrainRecipe(RecipeBase):
    method: Literal["pretrain"]
    data: PretrainData
    pretrain: PretrainSection = Field(default_factory=PretrainSection, description="Settings of `tunekit pretrain`.")

    @property
    def sequence_length(self) -> int | None:
        return self.pretrain.block_size

    @model_validator(mode="after")
    def _streams_count_steps(self) -> PretrainRecipe:
        check_stream(self)
        return self


def check_stream(recipe: RecipeBase) -> None:
    """A stream has no length: the run's length must be counted in steps."""
    if recipe.data.streaming and recipe.training.max_steps <= 0:  # type: ignore[attr-defined]
        raise ValueError("data.streaming: a stream has no length to count epochs over; set training.max_steps")


RECIPES: dict[str, type[RecipeBase]] = {
    "sft": SFTRecipe,
    "dpo": DPORecipe,
    "reward": RewardRecipe,
    "orpo": ORPORecipe,
    "kto": KTORecipe,
    "simpo": SimPORecipe,
    "ppo": PPORecipe,
    "grpo": GRPORecipe,
    "classify": ClassifyRecipe,
    "tag": TagRecipe,
    "embed": EmbedRecipe,
    "pretrain": PretrainRecipe,
}
Recipe = Annotated[
    SFTRecipe
    | DPORecipe
    | RewardRecipe
    | ORPORecipe
    | KTORecipe
    | SimPORecipe
    | PPORecipe
    | GRPORecipe
    | ClassifyRecipe
    | TagRecipe
    | EmbedRecipe
    | PretrainRecipe,
    Field(discriminator="method"),
]
RECIPE: TypeAdapter[Recipe] = TypeAdapter(Recipe)
METHODS = tuple(RECIPES)
# Each method's own section: `dpo:` belongs to `method: dpo`, and so on.
METHOD_SECTIONS: dict[str, type[Section]] = {
    name: cls.model_fields[name].annotation
    for name, cls in RECIPES.items()
    if name in cls.model_fields  # type: ignore[misc]
}
# Keys a method does not take, and what takes their place: named when a recipe sets them anyway.
NOT_FOR: dict[tuple[str, str], dict[str, str]] = {
    ("data", "max_length"): {
        "ppo": "prompts are cut at ppo.max_prompt_length",
        "grpo": "trl's GRPO reads whole prompts; completions stop at grpo.max_new_tokens",
        "pretrain": "documents are cut into blocks of pretrain.block_size tokens",
    },
    ("data", "packing"): {method: "only `tunekit sft` packs examples" for method in METHODS if method != "sft"},
    ("ppo", "sample_every"): {"ppo": "samples are training.sample_every now: greedy answers to held-out prompts"},
    ("data", "train_on"): {
        method: "only `tunekit sft` chooses where the loss goes" for method in METHODS if method != "sft"
    },
    ("data", "too_long"): {
        **{method: "trl cuts these to data.max_length" for method in ("dpo", "orpo", "simpo", "kto")},
        "reward": "trl drops pairs longer than data.max_length",
        "classify": "texts are cut to data.max_length",
    },
    **{
        ("data", key): {
            method: "only `tunekit sft` and `tunekit pretrain` stream"
            for method in METHODS
            if method not in ("sft", "pretrain")
        }
        for key in ("streaming", "shuffle_buffer", "eval_rows")
    },
}
SECTIONS: dict[str, type[Section]] = {
    "model": ModelSection,
    "adapter": AdapterSection,
    "data": DataSection,
    "training": TrainingSection,
    **METHOD_SECTIONS,
}


def parse_recipe(raw: object) -> Recipe:
    """The typed recipe for `raw` (a mapping as read from YAML); raises pydantic's ValidationError."""
    return RECIPE.validate_python(raw)
