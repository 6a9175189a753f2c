"""What a model reference names, resolved once per command into one typed object: torch-free.

    >>> ref = resolve("tiny:t5")
    >>> ref.kind, ref.family, ref.is_encoder_decoder
    ('tiny', 't5', True)

A reference is what `model.name_or_path` (or MODEL on the command line) holds:

- `tiny:ARCH`: a tiny random model, built into tunekit's cache on first use (`build=True`);
- `package:MODULE/FOLDER`: a model folder shipped inside an installed Python package;
- a local model folder (config.json);
- a run folder (recipe.yaml + final/): what it trained, its `final/`;
- an adapter folder (adapter_config.json, e.g. a LoRA run's `final/`): resolved with the base it records
  (`base_model_name_or_path`), or the base given with `adapter=`;
- a Hugging Face Hub id: its config.json from the local cache (fetched with `download=True`).

Training, `validate`, `estimate-memory` and the use commands all take a `ModelRef`, so they agree on
what a reference is (an adapter folder trains, validates and estimates alike).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tunekit.errors import UserError
from tunekit.models.packaged import is_package_ref, package_model_path
from tunekit.models.tiny import ensure_tiny, is_tiny_ref, tiny_arch, tiny_config, tiny_path

ADAPTER_CONFIG = "adapter_config.json"
# Encoder-decoder families, for configs that leave `is_encoder_decoder` at their class default
# (transformers' config classes set it; a config.json written by hand may omit it).
ENCODER_DECODER_TYPES = (
    "t5",
    "mt5",
    "umt5",
    "longt5",
    "bart",
    "mbart",
    "pegasus",
    "pegasus_x",
    "marian",
    "led",
    "plbart",
    "m2m_100",
    "blenderbot",
    "blenderbot-small",
    "switch_transformers",
    "fsmt",
)
SOFT_PROMPT_TYPES = ("PROMPT_TUNING", "PREFIX_TUNING", "P_TUNING")  # peft types with virtual tokens, no weights
Kind = Literal["tiny", "package", "folder", "adapter", "hub"]


@dataclass(frozen=True)
class AdapterRef:
    """A peft adapter folder and the base it goes on."""

    folder: Path
    peft_type: str | None  # LORA, PROMPT_TUNING, ... as adapter_config.json says
    base: ModelRef
    trained_as: dict[str, Any] | None = None  # the `model` section of the recipe that trained it, if a tunekit run

    @property
    def soft_prompt(self) -> bool:
        """Prompt / prefix / p-tuning: virtual tokens, nothing to merge or train further."""
        return self.peft_type in SOFT_PROMPT_TYPES


@dataclass(frozen=True)
class ModelRef:
    name: str  # as the user gave it, for messages
    kind: Kind
    path: str  # absolute folder, or the Hub id; for an adapter, the adapter's folder
    revision: str | None = None
    config: dict[str, Any] | None = None  # config.json (an adapter's: its base's); None: a Hub model not cached
    adapter: AdapterRef | None = None

    @property
    def base(self) -> ModelRef:
        """The model whose weights load: the adapter's base, or this one."""
        return self.adapter.base if self.adapter is not None else self

    @property
    def family(self) -> str | None:
        return (self.config or {}).get("model_type")

    @property
    def is_encoder_decoder(self) -> bool:
        """False when the config cannot be read (a Hub model not in the cache: loading it explains)."""
        config = self.config or {}
        return bool(config.get("is_encoder_decoder", config.get("model_type") in ENCODER_DECODER_TYPES))

    @property
    def tokenizer_path(self) -> str:
        """An adapter folder's own tokenizer when it has one (a run saves it there, with the chat template)."""
        if self.adapter is not None and (self.adapter.folder / "tokenizer_config.json").exists():
            return str(self.adapter.folder)
        return self.base.path

    @property
    def local(self) -> Path | None:
        """The folder holding the base's files, or None for a Hub id."""
        return None if self.base.kind == "hub" else Path(self.base.path)

    def describe(self) -> str:
        """Where the reference points, for `tunekit validate`."""
        if self.adapter is not None:
            return f"{self.adapter.peft_type or 'peft'} adapter {self.adapter.folder} on {self.adapter.base.describe()}"
        if self.kind == "tiny":
            arch = tiny_arch(self.name)
            built = Path(self.path).exists()
            return f"tiny random {arch} model ({'cached at ' + self.path if built else 'built on first use'})"
        if self.kind == "package":
            return f"model shipped in a Python package, at {self.path}"
        if self.kind == "folder":
            return f"local folder {self.path}"
        cached = "in the local cache" if self.config is not None else "not cached: downloaded when training starts"
        return f"Hub model {self.path} ({cached})"


def resolve(
    name: str,
    revision: str | None = None,
    *,
    adapter: str | Path | None = None,
    build: bool = False,
    download: bool = False,
) -> ModelRef:
    """The one resolver. `adapter` puts an adapter folder on `name` (then the base); `build` makes a
    tiny model on first use; `download` fetches a Hub model's config.json when it is not cached.
    Raises UserError naming what is missing."""
    if adapter is not None:
        base = resolve(name, revision, build=build, download=download)
        if base.adapter is not None:
            raise UserError(
                f"{name} is an adapter folder, and --adapter {adapter} names another; give a base model "
                "as MODEL with --adapter, or the adapter folder alone"
            )
        return _adapter(Path(adapter).expanduser(), name, base)
    if is_tiny_ref(name):
        arch = tiny_arch(name)
        path = ensure_tiny(name) if build else tiny_path(arch)
        return ModelRef(name, "tiny", str(path.resolve()), config=tiny_config(arch))
    if is_package_ref(name):
        folder = package_model_path(name)
        return ModelRef(name, "package", str(folder), config=_json(folder / "config.json"))
    path = Path(name).expanduser()
    if path.exists():
        return _local(name, path, build, download)
    if name.startswith((".", "/", "~")):
        raise UserError(f"model folder not found: {name}")
    return ModelRef(name, "hub", name, revision, _hub_config(name, revision, download))


def _local(name: str, path: Path, build: bool, download: bool) -> ModelRef:
    if not path.is_dir():
        raise UserError(f"{name} is a file; a model is a folder, a Hub id, tiny:ARCH or package:MODULE/FOLDER")
    if (path / "recipe.yaml").exists() and (path / "final").is_dir():
        path = path / "final"  # a run folder stands for what it trained
    if (path / "config.json").exists():
        return ModelRef(name, "folder", str(path.resolve()), config=_json(path / "config.json"))
    if (path / ADAPTER_CONFIG).exists():
        recorded = _adapter_config(path).get("base_model_name_or_path")
        hint = f"name the base explicitly (tunekit COMMAND BASE --adapter {path})"
        if not recorded:
            raise UserError(f"adapter {path} does not record its base model (base_model_name_or_path); {hint}")
        try:
            base = resolve(recorded, build=build, download=download)
        except UserError as err:
            raise UserError(f"the base of adapter {path}, {recorded}, cannot be found ({err}); {hint}") from None
        return _adapter(path, name, base)
    raise UserError(f"model folder {name} has neither config.json nor adapter_config.json")


def _adapter(folder: Path, name: str, base: ModelRef) -> ModelRef:
    if not folder.is_dir():
        raise UserError(f"adapter folder not found: {folder}")
    if not (folder / ADAPTER_CONFIG).exists():
        raise UserError(f"{folder} is not an adapter folder: it has no {ADAPTER_CONFIG}")
    peft_type = _adapter_config(folder).get("peft_type")
    found = AdapterRef(folder.resolve(), peft_type, base, _trained_as(folder))
    return ModelRef(name, "adapter", str(folder.resolve()), base.revision, base.config, found)


def _adapter_config(folder: Path) -> dict[str, Any]:
    config = folder / ADAPTER_CONFIG
    try:
        found = json.loads(config.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise UserError(f"{config}: invalid JSON: {err.msg}") from None
    if not isinstance(found, dict):
        raise UserError(f"{config}: expected a JSON object")
    return found


def _trained_as(adapter: Path) -> dict[str, Any] | None:
    """The `model` section of the recipe that trained `adapter` (a run's final/ or checkpoints/checkpoint-N/)."""
    import yaml

    for folder in (adapter.parent, adapter.parent.parent):
        recipe = folder / "recipe.yaml"
        if recipe.exists():
            try:
                section = (yaml.safe_load(recipe.read_text(encoding="utf-8")) or {}).get("model")
            except (OSError, yaml.YAMLError):
                return None
            return section if isinstance(section, dict) else None
    return None


def _hub_config(name: str, revision: str | None, download: bool) -> dict[str, Any] | None:
    """config.json of a Hub model from the cache; fetched only with `download`. None when it cannot be
    had (offline, unknown or gated id): loading the model says which."""
    from huggingface_hub import hf_hub_download, try_to_load_from_cache
    from huggingface_hub.errors import EntryNotFoundError

    try:
        cached = try_to_load_from_cache(name, "config.json", revision=revision)
        if isinstance(cached, str):
            return _json(Path(cached))
        return _json(Path(hf_hub_download(name, "config.json", revision=revision))) if download else None
    except (OSError, ValueError, EntryNotFoundError):
        return None


def _json(path: Path) -> dict[str, Any] | None:
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return found if isinstance(found, dict) else None
