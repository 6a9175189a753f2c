"""Read rows, each with the number a user would look for (1-based line or row), from any data source.

    >>> rows = read_rows("builtin:reversal")
    >>> rows[0][0], sorted(rows[0][1])
    (1, ['messages'])

Sources: `.jsonl`, `.json` (a list, or `{"data": [...]}`), `.csv`, `.parquet`, `.txt` (one `text`
row per non-empty line), a `save_to_disk`
folder, `builtin:NAME` (shipped with tunekit), or a Hub dataset id. Only the folder and Hub paths
import `datasets`.
"""

from __future__ import annotations

import csv
import io
import json
from importlib import resources
from pathlib import Path
from typing import Any

from tunekit.errors import DataError, describe_decode_error

BUILTIN_PREFIX = "builtin:"
Rows = list[tuple[int, dict[str, Any]]]


def builtin_names() -> list[str]:
    folder = resources.files("tunekit.datasets")
    return sorted(p.name.removesuffix(".jsonl") for p in folder.iterdir() if p.name.endswith(".jsonl"))


def resolve_source(source: str) -> Path | str:
    """A local path for files and folders, or the id string for a Hub dataset."""
    if source.startswith(BUILTIN_PREFIX):
        name = source.removeprefix(BUILTIN_PREFIX)
        path = Path(str(resources.files("tunekit.datasets").joinpath(f"{name}.jsonl")))
        if not path.exists():
            raise DataError(f"unknown builtin dataset {name!r}; available: {', '.join(builtin_names())}")
        return path
    path = Path(source).expanduser()
    if path.exists():
        return path
    if path.suffix.lower() in {".jsonl", ".json", ".csv", ".parquet", ".txt"} or source.startswith((".", "/", "~")):
        raise DataError(f"data file not found: {source} (relative paths start at {Path.cwd()})")
    return source


def local_source(source: str) -> Path | None:
    """The file or folder on disk a data source names, or None (a Hub id, builtin data, a missing file)."""
    if source.startswith(BUILTIN_PREFIX):
        return None
    path = Path(source).expanduser()
    return path if path.exists() else None


def read_rows(source: str, split: str = "train") -> Rows:
    where = resolve_source(source)
    if isinstance(where, str):
        return _read_hub(where, split)
    if where.is_dir():
        return _read_disk(where, split)
    suffix = where.suffix.lower()
    readers = {
        ".jsonl": _read_jsonl,
        ".json": _read_json,
        ".csv": _read_csv,
        ".parquet": _read_parquet,
        ".txt": _read_txt,
    }
    if suffix not in readers:
        raise DataError(
            f"{source}: unsupported file type {suffix or '(none)'}; use .jsonl, .json, .csv, .parquet or .txt"
        )
    rows = readers[suffix](where)
    if not rows:
        raise DataError(f"{source}: no rows")
    return rows


def _read_text(path: Path) -> str:
    """A data file as text: UTF-8, a byte-order mark (Excel's "CSV UTF-8", Notepad) dropped; a file in
    another encoding, or one that cannot be read, is named with the line of its first bad byte."""
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise DataError(f"cannot read {path}: {err.strerror or type(err).__name__}") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise DataError(describe_decode_error(path, raw, err)) from None


def _read_jsonl(path: Path) -> Rows:
    rows = []
    # split("\n"), not splitlines(): a JSON string may hold U+2028 and other characters splitlines() breaks at.
    for number, line in enumerate(_read_text(path).split("\n"), start=1):
        if not line.strip():
            continue
        try:
            rows.append((number, json.loads(line)))
        except json.JSONDecodeError as err:
            raise DataError(f"{path}, line {number}: invalid JSON: {err.msg}") from None
    return rows


def _read_txt(path: Path) -> Rows:
    """Plain text, one document per line (blank lines skipped), for continued pretraining."""
    lines = _read_text(path).split("\n")
    return [(number, {"text": line.rstrip("\r")}) for number, line in enumerate(lines, start=1) if line.strip()]


def _read_json(path: Path) -> Rows:
    try:
        data = json.loads(_read_text(path))
    except json.JSONDecodeError as err:
        raise DataError(f"{path}, line {err.lineno}: invalid JSON: {err.msg}") from None
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise DataError(f'{path}: expected a JSON list of rows (or {{"data": [...]}}); use .jsonl for one row a line')
    return list(enumerate(data, start=1))


def _read_csv(path: Path) -> Rows:
    text = io.StringIO(_read_text(path), newline="")
    try:
        # Row numbers count the header as row 1, as a spreadsheet shows them.
        return [(number, dict(row)) for number, row in enumerate(csv.DictReader(text), start=2)]
    except csv.Error as err:
        raise DataError(f"{path}: not a CSV file this reader understands ({err})") from None


def _read_parquet(path: Path) -> Rows:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as err:  # pyarrow raises several types for a corrupt file
        raise DataError(f"{path}: cannot read parquet: {err}") from None
    return list(enumerate(table.to_pylist(), start=1))


def _read_disk(path: Path, split: str) -> Rows:
    from datasets import Dataset, DatasetDict, load_from_disk

    try:
        data = load_from_disk(str(path))
    except FileNotFoundError:
        raise DataError(f"{path}: a folder, but not one written by datasets' save_to_disk") from None
    if isinstance(data, DatasetDict):
        if split not in data:
            raise DataError(f"{path}: no split {split!r}; splits: {', '.join(data)} (set data.split)")
        data = data[split]
    assert isinstance(data, Dataset)
    return list(enumerate(data.to_list(), start=1))


def _read_hub(name: str, split: str) -> Rows:
    import datasets

    try:
        data = datasets.load_dataset(name, split=split)
    except (ConnectionError, OSError, ValueError) as err:
        raise DataError(
            f"cannot load dataset {name!r} (split {split!r}): not a local file or folder, and the Hub "
            f"said: {str(err).splitlines()[0] if str(err) else type(err).__name__}"
        ) from None
    except datasets.exceptions.DatasetNotFoundError:
        raise DataError(f"dataset {name!r} not found locally, in the cache or on the Hub") from None
    return list(enumerate(data.to_list(), start=1))
