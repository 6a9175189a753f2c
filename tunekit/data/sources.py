"""Read rows, each with the number a user would look for (1-based line or row), from any data source.

    >>> rows = read_rows("builtin:reversal")
    >>> rows[0][0], sorted(rows[0][1])
    (1, ['messages'])

Sources: `.jsonl`, `.json` (a list, or `{"data": [...]}`), `.csv`, `.parquet`, `.txt` (one `text`
row per non-empty line), `.conll` (one token and its tag per line, a blank line between sentences), a `save_to_disk`
folder, `builtin:NAME` (shipped with tunekit), or a Hub dataset id. Only the folder and Hub paths
import `datasets`.
"""

from __future__ import annotations

import csv
import json
from importlib import resources
from pathlib import Path
from typing import Any

from tunekit.errors import DataError

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
    if path.suffix.lower() in {".jsonl", ".json", ".csv", ".parquet", ".txt", ".conll"} or source.startswith(
        (".", "/", "~")
    ):
        raise DataError(f"data file not found: {source} (relative paths start at {Path.cwd()})")
    return source


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
        ".conll": _read_conll,
    }
    if suffix not in readers:
        raise DataError(
            f"{source}: unsupported file type {suffix or '(none)'}; use .jsonl, .json, .csv, .parquet, .txt or .conll"
        )
    rows = readers[suffix](where)
    if not rows:
        raise DataError(f"{source}: no rows")
    return rows


def _read_jsonl(path: Path) -> Rows:
    rows = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                rows.append((number, json.loads(line)))
            except json.JSONDecodeError as err:
                raise DataError(f"{path}, line {number}: invalid JSON: {err.msg}") from None
    return rows


def _read_txt(path: Path) -> Rows:
    """Plain text, one document per line (blank lines skipped), for continued pretraining."""
    with path.open(encoding="utf-8") as handle:
        return [(number, {"text": line.rstrip("\n")}) for number, line in enumerate(handle, start=1) if line.strip()]


def _read_conll(path: Path) -> Rows:
    """CoNLL text: a token per line, its tag in the last whitespace-separated column (CoNLL-2003's four columns
    are token, POS, chunk, NER), a blank line between sentences, `-DOCSTART-` lines skipped. Each sentence is a
    tagging row numbered by the line of its first token."""
    rows: Rows = []
    tokens: list[str] = []
    tags: list[str] = []
    first = 0
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            columns = line.split()
            if columns and columns[0] == "-DOCSTART-":
                continue
            if not columns:
                if tokens:
                    rows.append((first, {"tokens": tokens, "tags": tags}))
                tokens, tags = [], []
                continue
            if len(columns) < 2:
                raise DataError(f"{path}, line {number}: expected a token and its tag separated by whitespace")
            if not tokens:
                first = number
            tokens.append(columns[0])
            tags.append(columns[-1])
    if tokens:
        rows.append((first, {"tokens": tokens, "tags": tags}))
    return rows


def _read_json(path: Path) -> Rows:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(f"{path}, line {err.lineno}: invalid JSON: {err.msg}") from None
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise DataError(f'{path}: expected a JSON list of rows (or {{"data": [...]}}); use .jsonl for one row a line')
    return list(enumerate(data, start=1))


def _read_csv(path: Path) -> Rows:
    with path.open(encoding="utf-8", newline="") as handle:
        # Row numbers count the header as row 1, as a spreadsheet shows them.
        return [(number, dict(row)) for number, row in enumerate(csv.DictReader(handle), start=2)]


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
