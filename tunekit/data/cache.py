"""The data cache: checked and tokenised datasets kept as Arrow files, reused while nothing they depend on changed.

    >>> key = cache_key({"source": "data/train.jsonl", "max_length": 512})
    >>> len(key), key == cache_key({"max_length": 512, "source": "data/train.jsonl"})
    (16, True)

Every expensive step of data preparation (reading a source into Arrow, checking and normalising its rows,
tokenising them for a method) is a `datasets.Dataset.map` whose result goes to `<root>/data/<key>/`, where
the key hashes every input the step depends on: the source's content fingerprint, the format and column
mapping, the tokenizer and chat template, `data.max_length`, `data.train_on`, packing, the seed of the mix.
Nothing else is in a key, so changing `training.learning_rate` reuses the cache and changing
`data.max_length` rebuilds it. A step is complete when its `meta.json` exists (written last), so an
interrupted build is never reused. `builds.jsonl` in the root records every build (key, step, rows, seconds,
process), which is how a launch of several processes can be seen to tokenise once.

The root is `$TUNEKIT_CACHE` (default `~/.cache/tunekit`); `data.cache: false` builds in a temporary
folder removed when the process ends.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from tunekit.models.tiny import cache_dir

CACHE_VERSION = 1  # bump when a step's output changes for the same inputs
_TEMPORARY: dict[str, Path] = {}


def data_root(enabled: bool = True) -> Path:
    """Where cached data lives: `$TUNEKIT_CACHE/data`, or a temporary folder with `data.cache: false`."""
    if enabled:
        return cache_dir() / "data"
    if "root" not in _TEMPORARY:
        folder = Path(tempfile.mkdtemp(prefix="tunekit-data-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        _TEMPORARY["root"] = folder
    return _TEMPORARY["root"]


def cache_key(parts: Mapping[str, Any]) -> str:
    """A short stable hash of a step's inputs (JSON-able values, key order irrelevant)."""
    text = json.dumps({"version": CACHE_VERSION, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def file_fingerprint(path: Path) -> str:
    """Size, modification time and the first and last MiB of a file: any edit changes it, without reading
    a multi-GB corpus whole."""
    stat = path.stat()
    digest = hashlib.sha256(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    with path.open("rb") as handle:
        digest.update(handle.read(1 << 20))
        if stat.st_size > 2 << 20:
            handle.seek(-(1 << 20), os.SEEK_END)
            digest.update(handle.read(1 << 20))
    return digest.hexdigest()[:16]


def folder_fingerprint(path: Path) -> str:
    """Every file's name, size and modification time (a `save_to_disk` folder)."""
    digest = hashlib.sha256(str(path.resolve()).encode())
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        stat = file.stat()
        digest.update(f"{file.relative_to(path)}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def cached_map(
    dataset: Any,
    function: Callable[..., dict[str, list[Any]]],
    key: str,
    step: str,
    root: Path,
    num_proc: int = 1,
    fn_kwargs: dict[str, Any] | None = None,
    remove_columns: list[str] | None = None,
    with_indices: bool = False,
    features: Any = None,
) -> tuple[Any, bool]:
    """`dataset.map(function, batched=True)` whose result lives in `root/<key>/`; (dataset, built) where
    `built` is False when a complete earlier result was loaded instead."""
    procs = max(1, min(num_proc, len(dataset)))

    def build(files: dict[str, Any]) -> Any:
        return dataset.map(
            function,
            batched=True,
            with_indices=with_indices,
            fn_kwargs=fn_kwargs or {},
            remove_columns=remove_columns,
            num_proc=procs if procs > 1 else None,
            features=features,
            desc=step,
            **files,
        )

    return cached(build, key, step, root, procs)


def cached(build: Callable[[dict[str, Any]], Any], key: str, step: str, root: Path, procs: int = 1) -> tuple[Any, bool]:
    """A dataset made by `build(map_files)` (which hands `map_files` to its `datasets.map`, so the Arrow files
    land in `root/<key>/`), or the complete earlier one; (dataset, built)."""
    import datasets

    folder = root / key
    if (folder / "meta.json").exists():
        shards = sorted(folder.glob("part*.arrow"))
        return datasets.concatenate_datasets([datasets.Dataset.from_file(str(s)) for s in shards]), False
    shutil.rmtree(folder, ignore_errors=True)  # an interrupted build
    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    files = {
        "cache_file_name": str(folder / "part.arrow"),
        "suffix_template": "_{rank:05d}_of_{num_proc:05d}",
        "new_fingerprint": key,
    }
    made = build(files)
    seconds = time.perf_counter() - started
    (folder / "meta.json").write_text(json.dumps({"step": step, "rows": len(made)}), encoding="utf-8")
    with (root / "builds.jsonl").open("a", encoding="utf-8") as log:
        entry = {
            "key": key,
            "step": step,
            "rows": len(made),
            "seconds": round(seconds, 3),
            "pid": os.getpid(),
            "num_proc": procs,
        }
        log.write(json.dumps(entry) + "\n")
    return made, True


def usable_cores() -> int:
    """CPU cores this process may run on (a container's or a scheduler's limit, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def processes_for(rows: int, asked: int | None) -> int:
    """`data.num_proc`, or the usable cores for data large enough to pay for starting them (~5,000 rows each)."""
    if asked is not None:
        return asked
    return max(1, min(usable_cores(), rows // 5000))
