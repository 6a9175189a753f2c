"""The sections a recipe is made of (model, adapter, data, training, and each method's own), with their
checks and descriptions; tunekit.config.schema puts them together into one recipe per method.

    >>> AdapterSection(type="lora", r=8).alpha
    16

Every field carries its description here, and only here: the README's recipe reference is generated
from these models (tunekit.config.reference).
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

FLOAT32_MAX = 3.4028234663852886e38  # the largest float32: torch optimizers cast the learning rate to it
Dtype = Literal["auto", "fp32", "fp16", "bf16"]
Tracker = Literal["tensorboard", "wandb", "mlflow", "trackio"]


class Section(BaseModel):
    # allow_inf_nan=False: `.inf` / `.nan` (or `=inf` on the command line) in any float is an error, not a run
    # that trains to NaN weights.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


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
    add_tokens: list[str] = Field(
        [],
        description="New tokens for the tokenizer (e.g. `<tool_call>`): the embeddings grow and the new rows train "
        "(with LoRA the embedding and output head train in full, as modules_to_save); final/ holds the tokenizer and "
        "the rows.",
    )

    @field_validator("add_tokens")
    @classmethod
    def _tokens_once(cls, value: list[str]) -> list[str]:
        if any(not token.strip() for token in value) or len(set(value)) != len(value):
            raise ValueError("give each new token once, as non-empty text")
        return value


LORA_INITS = ("default", "gaussian", "pissa", "olora", "loftq")
SOFT_PROMPTS = ("prompt_tuning", "prefix_tuning", "p_tuning")  # only `tunekit sft` trains them: the RL and
# preference trainers index real token positions


class AdapterSection(Section):
    type: Literal["none", "lora", "qlora", "prompt_tuning", "prefix_tuning", "p_tuning"] = Field(
        "none",
        description="none: full fine-tuning; lora; qlora: LoRA on a 4-bit base; soft prompts (only the "
        "prompt trains): prompt_tuning (virtual input tokens), prefix_tuning (key/value prefixes in every "
        "layer), p_tuning (virtual tokens from a small prompt encoder).",
    )
    r: int = Field(8, ge=1, description="LoRA rank.")
    alpha: float = Field(16, gt=0, description="LoRA scaling numerator (scale = alpha / r).")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA input.")
    target_modules: str | list[str] = Field(
        "all-linear",
        description="A list of module names to adapt (`[q_proj, v_proj]`: every module whose name ends with one), "
        "`all-linear`, or one string that is a regular expression over full module names (peft's rule).",
    )
    bias: Literal["none", "all", "lora_only"] = Field("none", description="Which biases train.")
    existing: Literal["merge", "continue"] = Field(
        "merge",
        description="When `model.name_or_path` is an adapter (e.g. an SFT run's final/): merge it into its base "
        "and start anew, or continue training it (LoRA/QLoRA only).",
    )
    num_virtual_tokens: int = Field(20, ge=1, description="Soft prompts: virtual tokens (prompt length).")
    prompt_init: Literal["random", "text"] = Field(
        "random", description="prompt_tuning: start from random vectors, or from the embeddings of `prompt_init_text`."
    )
    prompt_init_text: str | None = Field(
        None, description="prompt_tuning with prompt_init text: e.g. `Reverse the words:` (repeated or cut to fit)."
    )
    encoder_hidden_size: int | None = Field(
        None,
        ge=1,
        description="p_tuning (and prefix_tuning with prefix_projection): hidden size of the prompt "
        "encoder; null: the model's hidden size.",
    )
    encoder_type: Literal["mlp", "lstm"] = Field("mlp", description="p_tuning: the prompt encoder.")
    prefix_projection: bool = Field(
        False,
        description="prefix_tuning: produce the prefixes through a two-layer MLP (more parameters, often steadier).",
    )
    use_dora: bool = Field(
        False, description="LoRA: DoRA, a learned magnitude per output feature on top of LoRA's direction (peft)."
    )
    use_rslora: bool = Field(False, description="LoRA: rank-stabilised scaling, alpha / sqrt(r) instead of alpha / r.")
    init: Literal["default", "gaussian", "pissa", "olora", "loftq"] = Field(
        "default",
        description="LoRA: how A and B start. default: B = 0; gaussian; pissa / olora: from the base weight's SVD / "
        "QR (the base keeps the residual; final/ is converted to a plain LoRA of rank 2r on the original base); "
        "loftq: an unquantised base whose LoRA absorbs the NF4 quantisation error (needs a CUDA GPU).",
    )
    modules_to_save: list[str] = Field(
        [],
        description="LoRA: modules trained in full next to the adapter and saved with it (e.g. `lm_head`).",
    )
    loraplus_lr_ratio: float | None = Field(
        None,
        gt=0,
        description="LoRA+: B matrices learn at this multiple of `training.learning_rate` (paper: 16); null: off.",
    )

    @property
    def lora_settings(self) -> list[str]:
        """The LoRA-only keys this section sets away from their defaults."""
        defaults = {
            "use_dora": False,
            "use_rslora": False,
            "init": "default",
            "modules_to_save": [],
            "loraplus_lr_ratio": None,
        }
        return [key for key, default in defaults.items() if getattr(self, key) != default]

    @field_validator("target_modules")
    @classmethod
    def _one_string_is_a_regex(cls, value: str | list[str]) -> str | list[str]:
        """peft reads a single string as a regular expression that must match a module's full name
        (`model.layers.0.self_attn.q_proj`), so `q_proj` or `q_proj,v_proj` as one string adapts nothing
        (or only a top-level module): refused, with the list to write instead."""
        if not isinstance(value, str) or value == "all-linear":
            return value
        names = [name.strip() for name in value.split(",") if name.strip()]
        if names and all(re.fullmatch(r"[\w-]+", name) for name in names):
            listed = ", ".join(names)
            raise ValueError(
                f"{value!r} is one string, which peft reads as a regular expression over full module names "
                f"(model.layers.0.self_attn.{names[0]}), so it adapts nothing; write a list, [{listed}] (on the "
                f"command line adapter.target_modules=[{listed}]), or a regular expression such as .*\\.{names[0]}"
            )
        try:
            re.compile(value)
        except re.error as err:
            raise ValueError(f"{value!r} is not a regular expression ({err}); write a list of module names") from None
        return value

    @model_validator(mode="after")
    def _soft_prompt_settings(self) -> AdapterSection:
        if self.prompt_init == "text":
            if self.type != "prompt_tuning":
                raise ValueError(f"adapter.prompt_init: text initialises prompt_tuning, not {self.type}")
            if not (self.prompt_init_text or "").strip():
                raise ValueError("adapter.prompt_init_text: prompt_init text needs the text to start from")
        elif self.prompt_init_text is not None:
            raise ValueError("adapter.prompt_init_text is set but adapter.prompt_init is random; set prompt_init: text")
        if self.type not in ("lora", "qlora") and self.lora_settings:
            raise ValueError(
                f"{', '.join(self.lora_settings)}: LoRA settings (adapter.type lora or qlora), not for {self.type}"
            )
        return self


FORMATS = (
    "text",
    "prompt_completion",
    "messages",
    "alpaca",
    "sharegpt",
    "preference",
    "unpaired",
    "prompt",
    "classification",
    "tagging",
    "pair",
    "triplet",
    "scored_pair",
)  # every data.format but auto (`tunekit eval --format` takes them too)
DataFormat = Literal[("auto", *FORMATS)]


class Source(Section):
    """One data source of a split, with its own format and field names (`data.train: [{path: ...}, ...]`)."""

    path: str = Field(description="A file, folder, Hub dataset id or `builtin:NAME`, as `data.train` takes.")
    split: str | None = Field(None, description="Split of a Hub dataset or DatasetDict folder; null: `data.split`.")
    format: DataFormat | None = Field(None, description="This source's row format; null: `data.format`.")
    weight: float = Field(1.0, gt=0, description="Share of the mix with `data.mix: interleave` (weights are relative).")
    columns: dict[str, str] = Field(
        default_factory=dict,
        description="Fields tunekit expects -> this source's own names, e.g. {prompt: question, completion: "
        "answer} or {messages: dialog}; for turns, also {role: from, content: value}.",
    )
    roles: dict[str, str] = Field(
        default_factory=dict, description="This source's role names -> system/user/assistant/tool, e.g. {human: user}."
    )


Sources = str | list[Source]


class DataSection(Section):
    """The data keys every method takes; a method adds the ones it uses (SFTData, TruncatedData, RewardData, ...)."""

    train: Sources = Field(
        description="A .jsonl/.json/.csv/.parquet/.txt file, a `save_to_disk` folder, a Hub dataset id, "
        "`builtin:NAME` (data shipped with tunekit), or a list of sources (see data.train[])."
    )
    eval: Sources | None = Field(None, description="Evaluation data, same forms as `train`.")
    eval_fraction: float = Field(
        0.1, ge=0, lt=1, description="Without `eval`, hold out this seeded fraction of train (0: no eval)."
    )
    format: DataFormat = Field("auto", description="Row format; auto detects it from the first row's fields.")
    split: str = Field("train", description="Split to read from a Hub dataset or a DatasetDict folder.")
    eval_split: str | None = Field(None, description="Split of `train` to evaluate on, for Hub datasets.")
    mix: Literal["concat", "interleave"] = Field(
        "concat",
        description="Several sources: concat (every row of each, in order, shuffled by the trainer) or "
        "interleave (drawn in proportion to their `weight`, seeded by training.seed).",
    )
    mix_stop: Literal["first_exhausted", "all_exhausted"] = Field(
        "first_exhausted",
        description="interleave: stop when the first source runs out (the proportions hold exactly), or when "
        "every source has run out (smaller sources are repeated to keep their share).",
    )
    num_proc: int | None = Field(
        None,
        ge=1,
        description="Processes that check and tokenise rows; null: the usable CPU cores (one for "
        "small data, where starting processes costs more than it saves).",
    )
    cache: bool = Field(
        True,
        description="Keep the checked and tokenised data under TUNEKIT_CACHE (default ~/.cache/tunekit) and reuse "
        "it while nothing it depends on changes; false: build it in a temporary folder each run.",
    )


class TruncatedData(DataSection):
    max_length: int = Field(
        1024,
        ge=8,
        description="dpo, orpo, simpo, kto: tokens of prompt + completion, longer ones cut (dpo: at the end "
        "`dpo.truncation` says; the others keep the start); classify: tokens of the text, longer ones cut.",
    )


class StreamData(DataSection):
    streaming: bool = Field(
        False,
        description="Read the data as it trains, for corpora larger than memory (needs training.max_steps; a "
        "single source, or interleaved ones); rows are checked as they come.",
    )
    shuffle_buffer: int = Field(10_000, ge=1, description="streaming: rows shuffled together (a seeded buffer).")
    eval_rows: int | None = Field(
        None, ge=1, description="streaming without data.eval: hold out the first N rows of the stream for eval."
    )

    @model_validator(mode="after")
    def _stream_settings(self) -> StreamData:
        if not self.streaming:
            if self.eval_rows is not None:
                raise ValueError(
                    "data.eval_rows holds out rows of a stream; set data.streaming: true, or use eval_fraction"
                )
            return self
        if "eval_fraction" in self.model_fields_set:
            raise ValueError(
                "data.eval_fraction needs the row count, which a stream does not have: use data.eval_rows or data.eval"
            )
        if self.eval_rows is not None and self.eval is not None:
            raise ValueError("data.eval_rows and data.eval both choose the eval rows: keep one")
        return self


class SFTData(StreamData):
    max_length: int = Field(
        1024,
        ge=8,
        description="Tokens per example. An example whose completion lies wholly past it carries no loss and is "
        "skipped (a note counts them; all of them is an error). Encoder-decoders cut the prompt and the target "
        "each at this.",
    )
    too_long: Literal["truncate", "drop"] = Field(
        "truncate", description="Examples longer than max_length: truncate (keep the start) or drop them."
    )
    train_on: Literal["completion", "all"] = Field(
        "completion", description="completion: loss on completions / assistant turns only; all: every token."
    )
    packing: bool = Field(
        False,
        description="Decoder-only models: pack examples into rows of `max_length` tokens, padding-free; "
        "positions restart per example, so no attention or loss crosses example boundaries.",
    )


class PretrainData(StreamData):
    """Continued pretraining reads text; documents are cut into `pretrain.block_size` blocks."""


class TagData(DataSection):
    max_length: int = Field(
        512,
        ge=8,
        description="tag: sub-word tokens per sentence, special tokens included; words past the cut carry no tag "
        "and are not scored (validate counts them).",
    )


class EmbedData(DataSection):
    max_length: int = Field(
        256, ge=8, description="embed: tokens per text, longer ones cut (sentence-transformers' max_seq_length)."
    )


class RewardData(DataSection):
    max_length: int = Field(
        1024, ge=8, description="Tokens per chosen or rejected sequence; a pair with a longer one is dropped (trl)."
    )


class TrainingSection(Section):
    learning_rate: float = Field(gt=0, description="Peak learning rate.")
    max_steps: int = Field(-1, ge=-1, description="Optimizer steps; -1 trains for `epochs` instead.")

    @field_validator("learning_rate")
    @classmethod
    def _fits_float32(cls, value: float) -> float:
        if value > FLOAT32_MAX:  # torch's optimizers compute in float32 and fail on the first step
            raise ValueError(f"{value:g} is beyond float32's range (3.4e38), which the optimizers compute in")
        return value

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
    seed: int = Field(
        42, ge=0, le=2**32 - 1, description="Seed for data order, eval split and initialisation (0 to 2^32 - 1)."
    )
    neftune_noise_alpha: float | None = Field(
        None, gt=0, description="NEFTune: noise on the input embeddings while training (paper: 5); null: off."
    )
    torch_compile: bool = Field(False, description="Compile the model with torch.compile (transformers' Trainer).")
    report_to: list[Tracker] = Field(
        [], description="Experiment trackers: tensorboard (in output_dir/tensorboard), wandb, mlflow, trackio."
    )
    run_name: str | None = Field(None, description="The run's name in the trackers; null: output_dir's folder name.")
    project: str = Field("tunekit", description="W&B / trackio project and MLflow experiment the run goes to.")
    sample_every: int | None = Field(
        None,
        ge=1,
        description="Generate greedy answers to the sample prompts every N steps (samples.jsonl); null: off.",
    )
    sample_prompts: list[str] | Literal["eval"] = Field(
        "eval", description="Prompts for the samples, or `eval`: the first `sample_count` held-out prompts."
    )
    sample_count: int = Field(3, ge=1, description="Held-out prompts `sample_prompts: eval` takes.")
    sample_max_new_tokens: int = Field(32, ge=1, description="Tokens generated per sample.")

    @field_validator("report_to", mode="before")
    @classmethod
    def _one_tracker_is_a_list(cls, value: object) -> object:
        if value is None or value == "none":
            return []
        return [value] if isinstance(value, str) else value

    @field_validator("report_to")
    @classmethod
    def _each_tracker_once(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("name each tracker once")
        return value

    @field_validator("sample_prompts")
    @classmethod
    def _some_prompts(cls, value: list[str] | str) -> list[str] | str:
        if isinstance(value, list) and (not value or any(not p.strip() for p in value)):
            raise ValueError("give at least one non-empty prompt, or `eval`")
        return value


DPO_LOSSES = Literal[
    "sigmoid",
    "hinge",
    "ipo",
    "exo_pair",
    "nca_pair",
    "robust",
    "bco_pair",
    "sppo_hard",
    "aot",
    "aot_unpaired",
    "apo_zero",
    "apo_down",
    "discopop",
    "sft",
    "sigmoid_norm",
]


class DPOSection(Section):
    beta: float = Field(0.1, gt=0, description="Strength of the pull towards the reference (KL weight).")
    loss_type: list[DPO_LOSSES] = Field(
        ["sigmoid"], description="trl's DPO loss, or a list of them combined (e.g. MPO); a single name is fine."
    )
    loss_weights: list[float] | None = Field(None, description="Weights of a list of losses.")
    label_smoothing: float = Field(0.0, ge=0, lt=0.5, description="Assumed label noise (robust/cDPO).")
    reference: str | None = Field(
        None, description="Reference model folder or Hub id; default: the starting model (adapter disabled with LoRA)."
    )
    truncation: Literal["keep_start", "keep_end"] = Field(
        "keep_start", description="Which end of prompt+completion to keep past data.max_length."
    )

    @field_validator("loss_type", mode="before")
    @classmethod
    def _one_name_is_a_list(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value


class RewardSection(Section):
    center_rewards_coefficient: float | None = Field(
        None, ge=0, description="Pull mean reward towards 0 (e.g. 0.01); null: off."
    )


class ORPOSection(Section):
    beta: float = Field(0.1, gt=0, description="Weight of the odds-ratio term (lambda in the paper).")


class KTOSection(Section):
    beta: float = Field(0.1, gt=0, description="Strength of the pull towards the reference.")
    desirable_weight: float = Field(1.0, gt=0, description="Loss weight of desirable examples.")
    undesirable_weight: float = Field(1.0, gt=0, description="Loss weight of undesirable examples.")


class SimPOSection(Section):
    beta: float = Field(2.0, gt=0, description="Reward scale (SimPO paper: 2.0-2.5).")
    gamma: float = Field(0.5, ge=0, description="Target reward margin, as a fraction of beta (trl's simpo_gamma).")


class RewardSourceSection(Section):
    """Where rewards come from (PPO and GRPO): exactly one of `reward_model` and `reward_function`."""

    reward_model: str | None = Field(
        None,
        description="A reward-model folder made by `tunekit reward`, or with `reward_label` any "
        "sequence-classification model (folder or Hub id).",
    )
    reward_label: int | str | None = Field(
        None, description="Classifier label whose logit is the reward (index or name, e.g. `nothate`)."
    )
    reward_function: str | None = Field(
        None, description="`module:function` taking (prompts, completions) and returning one float per completion."
    )
    reward_input: Literal["prompt_completion", "completion"] = Field(
        "prompt_completion", description="What a reward model or classifier reads (detoxification: completion)."
    )
    max_new_tokens: int = Field(32, ge=1, description="Response length: tokens generated per prompt.")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature of rollouts.")
    top_k: int | None = Field(None, ge=1, description="Sample from the k most likely tokens; null: all.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling mass.")

    @model_validator(mode="after")
    def _one_reward_source(self) -> RewardSourceSection:
        if (self.reward_model is None) == (self.reward_function is None):
            raise ValueError("set exactly one of reward_model and reward_function")
        if self.reward_label is not None and self.reward_model is None:
            raise ValueError("reward_label picks a classifier label: it needs reward_model")
        return self


class PPOSection(RewardSourceSection):
    max_prompt_length: int = Field(
        1024, ge=8, description="Tokens of a prompt the policy reads; longer prompts keep their end (the question)."
    )
    missing_eos_penalty: float | None = Field(
        None, ge=0, description="Subtracted from the reward of responses that end without EOS; null: off."
    )
    kl_coef: float = Field(0.05, ge=0, description="Initial weight of the per-token KL penalty to the reference.")
    kl_estimator: Literal["k1", "k3"] = Field("k1", description="Per-token KL estimator (Schulman's k1 or k3).")
    target_kl: float | None = Field(
        None, gt=0, description="Adapt kl_coef to hold the sequence KL near this (nats); null: fixed kl_coef."
    )
    kl_horizon: int = Field(10000, ge=1, description="Adaptive KL horizon, in responses.")
    gamma: float = Field(1.0, ge=0, le=1, description="GAE discount.")
    lam: float = Field(0.95, ge=0, le=1, description="GAE lambda.")
    whiten_rewards: bool = Field(False, description="Whiten per-token rewards before GAE.")
    whiten_advantages: bool = Field(True, description="Whiten advantages over the rollout batch.")
    cliprange: float = Field(0.2, gt=0, description="Policy ratio clip range.")
    cliprange_value: float = Field(0.2, gt=0, description="Value clip range around the rollout values.")
    vf_coef: float = Field(0.1, ge=0, description="Weight of the value loss.")
    ppo_epochs: int = Field(4, ge=1, description="Passes over each rollout batch.")
    num_mini_batches: int = Field(
        1, ge=1, description="Minibatches per rollout batch; rollouts per step = batch_size x accumulation x this."
    )


class GRPOSection(RewardSourceSection):
    num_generations: int = Field(4, ge=2, description="Completions sampled per prompt (the group).")
    beta: float = Field(0.04, ge=0, description="KL coefficient to the reference (0: no reference model).")
    epsilon: float = Field(0.2, gt=0, description="Policy ratio clip range.")
    loss_type: Literal["grpo", "dapo", "dr_grpo", "bnpo"] = Field("dapo", description="trl's GRPO loss normalisation.")


class ClassifySection(Section):
    labels: list[str] | None = Field(
        None,
        description="Label names in class-id order (label 0 first); null: the labels found in data.train, "
        "sorted (numerically when they are all integers).",
    )

    @field_validator("labels", mode="before")
    @classmethod
    def _labels_as_strings(cls, value: object) -> object:
        return [str(v) for v in value] if isinstance(value, list) else value

    @field_validator("labels")
    @classmethod
    def _two_distinct_labels(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and (len(value) < 2 or len(set(value)) != len(value)):
            raise ValueError("give at least two labels, each once")
        return value


class TagSection(Section):
    labels: list[str] | None = Field(
        None,
        description="Tag names in id order (id 0 first); needed when the tags are integers (conll2003's ner_tags: "
        "[O, B-PER, I-PER, B-ORG, I-ORG, B-LOC, I-LOC, B-MISC, I-MISC]); null: the tags of data.train, O first, "
        "then B- and I- per entity type.",
    )
    scheme: Literal["auto", "iob2", "iob1", "plain"] = Field(
        "auto",
        description="iob2 (BIO): B-X opens an entity, I-X continues one, an I-X with no X entity open is an error; "
        "iob1: I-X may open an entity (the original CoNLL-2003 files); plain: tags without entities (POS), scored "
        "per token; auto: iob2 when every tag is O, B-X or I-X, plain when none has a B-/I- prefix.",
    )

    @field_validator("labels")
    @classmethod
    def _two_distinct_tags(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and (len(value) < 2 or len(set(value)) != len(value)):
            raise ValueError("give at least two tags, each once")
        return value


class EmbedSection(Section):
    loss: Literal["auto", "multiple_negatives_ranking", "cosent", "cosine_similarity"] = Field(
        "auto",
        description="sentence-transformers loss. auto: multiple_negatives_ranking for pairs and triplets (the other "
        "positives of the batch, and a triplet's negative, are the negatives), cosent for scored pairs; "
        "cosine_similarity: squared error between the cosine and the score (scores in [-1, 1]).",
    )
    scale: float = Field(
        20.0, gt=0, description="multiple_negatives_ranking and cosent: similarities are multiplied by this."
    )
    corpus: Literal["all", "eval"] = Field(
        "all",
        description="Pairs and triplets: the documents held-out queries are searched among; all: every positive "
        "and negative of train and eval (the whole collection); eval: those of the eval rows only.",
    )

    def loss_for(self, kind: str) -> str:
        """The loss that trains rows of `kind` (pair, triplet, scored_pair): `loss`, or auto's choice."""
        if self.loss != "auto":
            return self.loss
        return "cosent" if kind == "scored_pair" else "multiple_negatives_ranking"


class PretrainSection(Section):
    objective: Literal["auto", "clm", "mlm", "span_corruption"] = Field(
        "auto",
        description="clm: next-token prediction (decoder-only models); mlm: masked-token prediction "
        "(encoder-only models, BERT family); span_corruption: T5's, spans replaced by sentinel tokens in the input "
        "and spelled out in the target (encoder-decoders with sentinels, T5 family); auto picks from the model's "
        "family.",
    )
    block_size: int = Field(
        1024,
        ge=8,
        description="Tokens per training block (documents are concatenated, then cut); span_corruption: before "
        "corruption (the input keeps about 1 - noise_density of them, plus a sentinel per span).",
    )
    mlm_probability: float = Field(0.15, gt=0, lt=1, description="mlm: share of tokens masked for prediction.")
    noise_density: float = Field(0.15, gt=0, lt=1, description="span_corruption: share of tokens hidden in spans.")
    mean_span_length: float = Field(3.0, ge=1, description="span_corruption: mean length of a hidden span, in tokens.")
