"""What a model is, from its config.json alone: torch- and transformers-free, so `tunekit validate`
and the training commands decide alike (before any model loads).

    >>> is_encoder_decoder("tiny:t5")
    True
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tunekit.models.packaged import is_package_ref, package_model_path
from tunekit.models.tiny import is_tiny_ref, tiny_arch, tiny_config

# Encoder-decoder families, for configs that leave `is_encoder_decoder` at their class default
# (transformers' config classes set it; a config.json written by hand may omit it).
ENCODER_DECODER_TYPES = ("t5", "mt5", "umt5", "longt5", "bart", "mbart", "pegasus", "pegasus_x", "marian", "led",
                         "plbart", "m2m_100", "blenderbot", "blenderbot-small", "switch_transformers", "fsmt")


def read_config(name: str, revision: str | None = None, download: bool = False) -> dict[str, Any] | None:
    """config.json of a tiny, packaged or local model, an adapter folder's base, or a Hub model (from
    the cache; fetched only with `download`). None when it cannot be read: loading the model explains."""
    if is_tiny_ref(name):
        return tiny_config(tiny_arch(name))
    folder = package_model_path(name) if is_package_ref(name) else Path(name).expanduser()
    if (folder / "config.json").exists():
        return _json(folder / "config.json")
    if (folder / "adapter_config.json").exists():
        base = (_json(folder / "adapter_config.json") or {}).get("base_model_name_or_path")
        return read_config(base) if base else None
    if folder.exists() or name.startswith((".", "/", "~")):
        return None
    from huggingface_hub import hf_hub_download, try_to_load_from_cache
    from huggingface_hub.errors import EntryNotFoundError

    try:
        cached = try_to_load_from_cache(name, "config.json", revision=revision)
        if isinstance(cached, str):
            return _json(Path(cached))
        return _json(Path(hf_hub_download(name, "config.json", revision=revision))) if download else None
    except (OSError, ValueError, EntryNotFoundError):  # offline, unknown or gated id: loading the model says which
        return None


def is_encoder_decoder(name: str, revision: str | None = None, download: bool = False) -> bool:
    """Whether `name` (an adapter's base, for an adapter folder) is an encoder-decoder; False when
    its config cannot be read."""
    config = read_config(name, revision, download) or {}
    return bool(config.get("is_encoder_decoder", config.get("model_type") in ENCODER_DECODER_TYPES))


def _json(path: Path) -> dict[str, Any] | None:
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return found if isinstance(found, dict) else None
