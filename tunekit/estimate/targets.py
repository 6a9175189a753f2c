"""Turn what the user named into a model config: a recipe, a folder, a config.json, a preset, a Hub id.

    >>> target = resolve_target("llama-3-8b")
    >>> target.source, target.config["num_key_value_heads"]
    ('preset', 8)
    >>> resolve_target("tiny:gpt2").config["n_layer"]
    2

Offline and torch-free. A preset is a small config.json shipped in `presets/`, with the Hub id it
came from and the parameter count published for it; a Hub id that matches a preset's resolves to
the preset without a network call. Any other Hub id is fetched (config.json only) through
huggingface_hub, from its cache when offline. Unknown names exit 2 with the closest presets.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field, replace
from functools import cache, lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from tunekit.errors import UserError
from tunekit.estimate.arch import text_config
from tunekit.estimate.setup import STAGES

WEIGHT_SUFFIXES = (".safetensors", ".bin")
VARIANT_SUFFIXES = ("-hf", "-instruct", "-chat", "-it")  # fine-tuned releases of a base architecture


@dataclass(frozen=True)
class Target:
    label: str  # what the user typed
    source: str  # preset | recipe | folder | config | tiny | hub
    config: dict[str, Any]
    recipe: Any = None  # tunekit.config.Recipe, when the target was a recipe
    weights: str | None = None  # a local folder holding weights (for --measure)
    hub_id: str | None = None
    published_parameters: int | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def name(self) -> str:
        return self.hub_id or self.label


def resolve_target(target: str, overrides: list[str] | None = None) -> Target:
    path = Path(target).expanduser()
    if path.suffix in (".yaml", ".yml") or (path.exists() and path.is_file() and path.suffix != ".json"):
        return _from_recipe(path, overrides or [])
    if overrides:
        raise UserError(f"key=value overrides apply to a recipe; {target} is not a recipe")
    return resolve_model(target)


def resolve_model(name: str) -> Target:
    """A model reference as a recipe's `model.name_or_path` holds it (tunekit.models.refs: a folder, an
    adapter folder (its base's architecture), a run, `tiny:`, `package:`, a Hub id), a config.json or
    preset file, or a preset name."""
    from tunekit.models.refs import resolve

    path = Path(name).expanduser()
    if path.is_file():
        return _from_json(name, path)
    preset = None if path.exists() else find_preset(name)
    if preset is not None:
        return preset
    if not path.exists() and name.endswith(".json"):
        raise UserError(f"not found: {name}")
    if not path.exists() and "/" not in name and ":" not in name:
        raise UserError(f"unknown model or preset {name!r}{_closest(name)}")
    ref = resolve(name)
    if ref.base.kind == "tiny":
        return Target(label=name, source="tiny", config=ref.config or {})
    if ref.base.kind == "hub":
        return _from_hub(ref.base.path)
    return _from_folder(name, Path(ref.base.path), adapter=ref.adapter is not None)


def _from_recipe(path: Path, overrides: list[str]) -> Target:
    from tunekit.config import load_recipe

    recipe = load_recipe(path, overrides)
    model = resolve_model(recipe.model.name_or_path)
    return Target(
        label=str(path),
        source="recipe",
        config=model.config,
        recipe=recipe,
        weights=model.weights,
        hub_id=model.hub_id or recipe.model.name_or_path,
        published_parameters=model.published_parameters,
    )


def _from_folder(name: str, path: Path, adapter: bool = False) -> Target:
    config_file = path / "config.json"
    if not config_file.exists():
        raise UserError(f"model folder {name} has no config.json")
    has_weights = any(p.suffix in WEIGHT_SUFFIXES for p in path.iterdir())
    notes = (f"{name} is an adapter: the estimate is for its base, {path}",) if adapter else ()
    return Target(
        label=name,
        source="folder",
        config=_read_config(config_file),
        weights=str(path) if has_weights else None,
        notes=notes,
    )


def _from_json(name: str, path: Path) -> Target:
    raw = _read_json(path)
    if "config" in raw and "hub_id" in raw:  # a preset file
        return Target(
            label=name,
            source="preset",
            config=raw["config"],
            hub_id=raw["hub_id"],
            published_parameters=raw.get("published_parameters"),
        )
    return Target(label=name, source="config", config=text_config(raw))


def _read_config(path: Path) -> dict[str, Any]:
    return text_config(_read_json(path))


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"cannot read {path}: {err}") from None
    except json.JSONDecodeError as err:
        raise UserError(f"{path}, line {err.lineno}: not valid JSON ({err.msg})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: a model config must be a JSON object")
    if not data.get("model_type") and not (isinstance(data.get("config"), dict) or data.get("text_config")):
        raise UserError(f"{path} lacks model_type, which the estimate needs")
    return data


# -- presets ------------------------------------------------------------------------------------
def preset_dir() -> Any:
    return resources.files("tunekit.estimate") / "presets"


@lru_cache(maxsize=1)
def preset_names() -> tuple[str, ...]:
    return tuple(sorted(p.name.removesuffix(".json") for p in preset_dir().iterdir() if p.name.endswith(".json")))


def _normalise(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def find_preset(name: str) -> Target | None:
    """The preset called `name`, or whose Hub id is `name` or its instruct/chat variant (case-insensitive)."""
    wanted = _normalise(name)
    names = preset_names()
    if wanted in names:
        return load_preset(wanted)
    if "/" not in wanted:
        return None
    presets = [load_preset(preset) for preset in names]
    for target in presets:
        if target.hub_id and _normalise(target.hub_id) == wanted:
            return target
    for target in presets:  # fine-tuned variants keep the base model's architecture
        if target.hub_id and _base_id(target.hub_id) == _base_id(wanted):
            note = f"{name}: the architecture of preset {target.label} ({target.hub_id}), which it shares"
            return replace(target, label=name, hub_id=name, notes=(note,))
    return None


def _base_id(hub_id: str) -> str:
    base = _normalise(hub_id)
    changed = True
    while changed:
        changed = False
        for suffix in VARIANT_SUFFIXES:
            if base.endswith(suffix):
                base, changed = base.removesuffix(suffix), True
    return base


@cache
def load_preset(name: str) -> Target:
    raw = json.loads((preset_dir() / f"{name}.json").read_text(encoding="utf-8"))
    return Target(
        label=name,
        source="preset",
        config=raw["config"],
        hub_id=raw.get("hub_id"),
        published_parameters=raw.get("published_parameters"),
    )


def _closest(name: str) -> str:
    close = difflib.get_close_matches(_normalise(name), preset_names(), n=4, cutoff=0.5)
    if not close:
        return f"; presets are: {', '.join(preset_names())}"
    return f"; closest presets: {', '.join(close)}"


# -- the Hub ------------------------------------------------------------------------------------
def _from_hub(repo_id: str) -> Target:
    """config.json from the Hugging Face Hub cache, else from the Hub when it answers."""
    path = _hub_config(repo_id, local_only=True)
    if path is None and not _offline() and _hub_reachable():
        path = _hub_config(repo_id, local_only=False)
    if path is None:
        raise UserError(
            f"cannot get config.json of {repo_id!r} from the Hugging Face Hub or its cache (offline, gated "
            f"or misspelled?); pass a local folder or config.json, or a preset{_closest(repo_id.split('/')[-1])}"
        )
    return Target(label=repo_id, source="hub", config=_read_config(Path(path)), hub_id=repo_id)


def _hub_config(repo_id: str, local_only: bool) -> str | None:
    import logging

    from huggingface_hub import hf_hub_download

    hub_logger = logging.getLogger("huggingface_hub")
    level = hub_logger.level
    hub_logger.setLevel(logging.ERROR)  # its retry warnings would interleave with our one-line error
    try:
        return str(hf_hub_download(repo_id, "config.json", local_files_only=local_only))
    except Exception:  # noqa: BLE001 - offline, gated, missing: all mean "not available here"
        return None
    finally:
        hub_logger.setLevel(level)


def _hub_reachable(timeout: float = 3.0) -> bool:
    """A quick TCP check: huggingface_hub retries an unreachable host for ~20 s before giving up."""
    import os
    import socket
    from urllib.parse import urlparse

    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _offline() -> bool:
    import os

    return os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")


# -- recipes ------------------------------------------------------------------------------------
_ADAPTER_METHODS = {
    "none": "full",
    "lora": "lora",
    "qlora": "qlora",
    "prompt_tuning": "prompt-tuning",
    "prefix_tuning": "prefix-tuning",
    "p_tuning": "p-tuning",
}


def setup_from_recipe(recipe: Any) -> dict[str, Any]:
    """Setup fields a recipe decides (flags given on the command line override them)."""
    model, adapter, training = recipe.model, recipe.adapter, recipe.training
    dtype = {"4bit": "int4", "8bit": "int8"}.get(model.quantization) or _gpu_dtype(model.dtype)
    compute = model.compute_dtype if model.compute_dtype != "auto" else _gpu_dtype(model.dtype)
    fields: dict[str, Any] = {
        "method": _ADAPTER_METHODS.get(adapter.type, adapter.type),
        "dtype": dtype,
        "compute_dtype": compute,
        "quant_type": model.quant_type,
        "double_quant": model.double_quant,
        "batch_size": training.batch_size,
        "grad_accum": training.gradient_accumulation_steps,
        "lora_r": adapter.r,
        "lora_targets": adapter.target_modules
        if isinstance(adapter.target_modules, str)
        else tuple(adapter.target_modules),
        "lora_dropout": adapter.dropout,
        "lora_bias": adapter.bias,
        "optimizer": training.optimizer,
        "gradient_checkpointing": training.gradient_checkpointing,
        "attention": model.attn_implementation,
        "stage": recipe.method if recipe.method in STAGES else "sft",
    }
    if recipe.sequence_length:  # GRPO reads whole prompts: the estimate's own default then
        fields["seq_len"] = recipe.sequence_length
    fields["virtual_tokens"] = adapter.num_virtual_tokens
    fields["use_dora"] = adapter.use_dora
    fields["modules_to_save"] = tuple(adapter.modules_to_save)
    if model.add_tokens:
        fields["added_tokens"] = len(model.add_tokens)
        fields["vocab_growth"] = _vocab_growth(model.name_or_path, len(model.add_tokens))
    return fields


def _vocab_growth(name: str, added: int) -> int:
    """Rows the embeddings grow by: tunekit resizes them to the tokenizer's length only when the tokenizer
    outgrows them (many configs pad the vocabulary). Read from tokenizer.json and config.json where they are
    on disk (tokenizers, no torch); otherwise every new token is taken to add a row."""
    from tunekit.models.refs import resolve

    ref = resolve(name)
    folder = Path(ref.tokenizer_path)
    tokenizer_file, config_file = folder / "tokenizer.json", Path(ref.base.path) / "config.json"
    if not (tokenizer_file.exists() and config_file.exists()):
        return added
    from tokenizers import Tokenizer

    size = Tokenizer.from_file(str(tokenizer_file)).get_vocab_size(with_added_tokens=True)
    rows = json.loads(config_file.read_text()).get("vocab_size") or size
    return max(0, size + added - int(rows))


def _gpu_dtype(dtype: str) -> str:
    """`auto` is bf16 on the GPUs the estimate is for (tunekit picks fp32 only on a CPU)."""
    return "bf16" if dtype == "auto" else dtype
