"""The checks a training run makes before it writes anything: on the recipe, the data, the machine, the model.

    >>> from tunekit.config.sections import AdapterSection
    >>> check_adapter(AdapterSection(type="none"), model=None)  # full fine-tuning fits any model

`tunekit validate` (tunekit.train.validate) and the preflight stage of a run (tunekit.train.pipeline) call
the same functions, so a recipe that validates does not fail the same check when it trains. Torch and
transformers are imported only by the checks that need a loaded model.
"""

from __future__ import annotations

import random
import re
import statistics
from typing import Any

from tunekit.config import Recipe
from tunekit.config.sections import SOFT_PROMPTS, AdapterSection
from tunekit.data import Data
from tunekit.data.preview import Preview, Rendered
from tunekit.errors import DataError, UserError

MAX_ROWS_MEASURED = 2_000  # rows rendered and measured at most (a seeded sample beyond)


def check_loss_survives(preview: Preview, data: Data, recipe: Recipe, train: list[Rendered] | None = None) -> list[str]:
    """SFT examples cut at data.max_length keep their start: one whose completion (or every assistant turn)
    lies past the cut carries no loss, and trl drops it. All of train or all of eval dropped stops the run
    (DataError naming the length to set); some dropped is a note. Measured on a seeded sample of each split
    (`train`: its sample, already rendered). Used by `validate` and `tunekit sft` alike."""
    limit, notes = recipe.sequence_length, []
    for part, rows, source in (("train", data.train, data.sources[0].name), ("eval", data.eval, data.eval_source)):
        if rows is None:
            continue
        if part == "train" and train is not None:
            shown = train
        else:
            shown = rendered_sample(preview, rows, data.kind, recipe.train_on)
        lost = [r for r in shown if r.loss_tokens and not any(r.mask[:limit])]
        if not lost:
            continue
        sampled = "" if len(shown) < MAX_ROWS_MEASURED else " sampled"
        if len(lost) == len(shown):
            first_loss = sorted(r.mask.index(1) + 1 for r in shown)
            raise DataError(
                f"{source}: data.max_length={limit} cuts away every loss-carrying token of all {len(shown):,}"
                f"{sampled} {part} examples (their completions start after token {first_loss[0]} to "
                f"{first_loss[-1]}); raise data.max_length to at least {statistics.median_high(first_loss) + 16} "
                "for half of them to train"
            )
        notes.append(
            f"{len(lost):,} of {len(shown):,}{sampled} {part} examples lose every loss-carrying token at "
            f"data.max_length={limit} and are skipped"
        )
    return notes


def rendered_sample(preview: Preview, rows: Any, kind: str, train_on: str) -> list[Rendered]:
    """The measured rows (`sample_rows`) rendered as the trainer sees them, in one batch."""
    from tunekit.data import is_stream

    sample = sample_rows(rows)
    return preview.render_many(list(sample) if is_stream(sample) else sample.to_list(), kind, train_on)


def check_reward_source(recipe: Recipe) -> None:
    """RL recipes: the reward function must import; a reward model folder is located, not loaded."""
    from tunekit.config.schema import GRPORecipe, PPORecipe

    if not isinstance(recipe, (PPORecipe, GRPORecipe)):
        return
    function = recipe.ppo.reward_function if isinstance(recipe, PPORecipe) else recipe.grpo.reward_function
    if function:
        from tunekit.rl.rewards import load_function

        load_function(function)  # raises UserError naming the module or the function


def sample_rows(rows: Any) -> Any:
    """The rows to render and measure: all of them, or a seeded sample of MAX_ROWS_MEASURED (a dataset; a
    stream's first MAX_ROWS_MEASURED)."""
    from tunekit.data import is_stream

    if is_stream(rows):
        return rows.take(MAX_ROWS_MEASURED)
    if len(rows) <= MAX_ROWS_MEASURED:
        return rows
    return rows.select(sorted(random.Random(0).sample(range(len(rows)), MAX_ROWS_MEASURED)))


def check_adapter(adapter: AdapterSection, model: Any) -> None:
    """The recipe's new adapter must fit the loaded model: LoRA targets it has, a soft prompt its family
    can take. Checked before the run folder is written (peft fails later, or skips a name silently)."""
    if adapter.type == "none" or is_peft(model):
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
    if adapter.type in ("lora", "qlora") and adapter.dropout:
        from tunekit.train.builders import lora_targets

        if lora_targets(model, adapter.target_modules)[1]:
            raise UserError(
                f"adapter.dropout: {adapter.dropout} cannot apply to the experts of this {family} model (peft's "
                "LoRA on 3-D expert weights takes no dropout); set adapter.dropout: 0"
            )
    if adapter.type == "prefix_tuning" and not _has_attention_cache(model):
        raise UserError(
            f"adapter.type: prefix_tuning puts learned keys and values into the attention cache of every layer; "
            f"{family} generates without one (use prompt_tuning or p_tuning)"
        )
    if adapter.type in SOFT_PROMPTS and model.get_input_embeddings() is None:
        raise UserError(f"adapter.type: {adapter.type} needs the model's input embeddings; {family} exposes none")
    names = [name for name, _ in model.named_modules() if name]
    for wanted in adapter.modules_to_save:
        if not any(name == wanted or name.endswith("." + wanted) for name in names):
            raise UserError(f"adapter.modules_to_save: {wanted} is not a module of this {family} model")


def _has_attention_cache(model: Any) -> bool:
    """A model that generates (transformers' public `can_generate`) through attention heads keeps a key/value
    cache per layer, which is where peft's prefix tuning puts its prefixes (state-space models have none)."""
    text = model.config.get_text_config()
    heads = getattr(text, "num_attention_heads", None) or getattr(text, "n_head", None)
    return bool(model.can_generate() and heads)


def _is_linear(module: Any) -> bool:
    import torch
    from transformers.pytorch_utils import Conv1D

    # Conv1D: GPT-2's linear layers; bitsandbytes' Linear4bit / Linear8bitLt subclass nn.Linear.
    return isinstance(module, (torch.nn.Linear, Conv1D))


def check_peft_options(recipe: Recipe, ref: Any, options: Any) -> None:
    """Adapter and training options the libraries refuse in combination, checked before anything is written."""
    import importlib.util

    adapter = recipe.adapter
    continued = ref.adapter is not None and adapter.existing == "continue" and adapter.type != "none"
    if continued and (adapter.lora_settings or recipe.model.add_tokens):
        keys = [f"adapter.{key}" for key in adapter.lora_settings] + (
            ["model.add_tokens"] if recipe.model.add_tokens else []
        )
        raise UserError(
            f"{', '.join(keys)}: settings of a new adapter; with adapter.existing: continue the adapter in "
            f"{recipe.model.name_or_path} keeps its own (set adapter.existing: merge to start a new one)"
        )
    if adapter.init in ("pissa", "olora") and adapter.use_dora:
        # peft converts the trained adapter to a plain LoRA of the original base from A and B alone
        raise UserError(
            f"adapter.init: {adapter.init} with adapter.use_dora: peft's conversion of the result to a LoRA of the "
            "original base covers A and B, not DoRA's magnitude; use init default or gaussian with DoRA"
        )
    if adapter.init == "loftq":
        import torch

        if not (torch.cuda.is_available() or torch.xpu.is_available()):
            raise UserError(
                "adapter.init: loftq needs a CUDA or XPU GPU (peft 0.21 computes the LoftQ decomposition there); "
                "use init pissa or olora on a CPU"
            )
        if importlib.util.find_spec("scipy") is None:
            raise UserError('adapter.init: loftq needs scipy (peft uses it): pip install "scipy"')
    if adapter.loraplus_lr_ratio and options.accelerate_config:
        from tunekit.train.launch import read_config, resolve_config

        if read_config(resolve_config(options.accelerate_config)).get("distributed_type") == "FSDP":
            raise UserError(
                "adapter.loraplus_lr_ratio: transformers' Trainer takes no optimizer of its own under FSDP; "
                "use DDP or DeepSpeed, or leave LoRA+ off"
            )


def check_environment(recipe: Recipe) -> None:
    """Settings that are valid in a recipe but not on this machine; checked before the run folder is made."""
    import torch

    if recipe.model.dtype == "fp16" and not torch.cuda.is_available():
        raise UserError("model.dtype: fp16 mixed precision needs a GPU; use bf16 or fp32 (auto) on a CPU")


def is_peft(model: Any) -> bool:
    """The model already carries a peft adapter (an adapter folder continued with `adapter.existing: continue`)."""
    from peft import PeftModel

    return isinstance(model, PeftModel)


def check_targets(data: Data, source: str) -> None:
    """Every example needs a target for the decoder: text data has none, and a chat must end with the
    assistant turn to learn. Run in the preflight stage, and by `tunekit validate` (torch-free)."""
    if data.kind == "text":
        raise DataError(
            f"{source}: format text has no targets; an encoder-decoder model learns prompt -> completion: "
            "use prompt/completion, alpaca or chat data"
        )
    if data.kind != "messages":
        return  # prompt/completion rows were checked when read: a missing or empty completion stops there
    for part, rows in (("train", data.train), ("eval", data.eval)):
        if rows is None:
            continue
        for number, messages in enumerate(_column(rows, "messages"), start=1):
            role = messages[-1]["role"]
            if role != "assistant":
                raise DataError(
                    f"{source} ({part} example {number}): field 'messages': ends with a {role} turn; an "
                    "encoder-decoder model learns the final assistant turn as its target"
                )


def _column(rows: Any, name: str) -> Any:
    """One column of a dataset, read batch by batch (a stream: its first rows, the rest are checked as they come)."""
    from tunekit.data import is_stream

    batches = rows.take(MAX_ROWS_MEASURED).iter(1000) if is_stream(rows) else rows.iter(1000)
    for batch in batches:
        yield from batch[name]
