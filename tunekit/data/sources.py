"""Data sources: open one as an Arrow dataset for training, or read a small one as Python rows.

    >>> opened = open_source("builtin:reversal")
    >>> opened.dataset.num_rows, opened.dataset.column_names, opened.number(0)
    (320, ['messages'], 1)
    >>> rows = read_rows("builtin:reversal")   # the use commands' small inputs: (number, row) pairs
    >>> rows[0][0], sorted(rows[0][1])
    (1, ['messages'])

Sources: `.jsonl`, `.json` (a list, or `{"data": [...]}`), `.csv`, `.parquet`, `.txt` (one `text`
row per non-empty line), `.conll` (a token and its tag per line, a blank line between sentences), a
`save_to_disk` folder, `builtin:NAME` (shipped with tunekit), or a Hub
dataset id. `open_source` reads through `datasets` into memory-mapped Arrow files under the tunekit
cache (or streams with `streaming=True`); a row's number is the one a user would look for: the line of
a JSON-lines or text file, the spreadsheet row of a CSV (the header is row 1), else 1-based. A file
Arrow cannot read is read again line by line to name the line at fault. `read_rows` is torch- and
datasets-free for the file forms.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from tunekit.errors import DataError, read_utf8

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
    # split("\n"), not splitlines(): a JSON string may hold U+2028 and other characters splitlines() breaks at.
    for number, line in enumerate(read_utf8(path, DataError).split("\n"), start=1):
        if not line.strip():
            continue
        try:
            rows.append((number, json.loads(line)))
        except json.JSONDecodeError as err:
            raise DataError(f"{path}, line {number}: invalid JSON: {err.msg}") from None
    return rows


def _read_txt(path: Path) -> Rows:
    """Plain text, one document per line (blank lines skipped), for continued pretraining."""
    lines = read_utf8(path, DataError).split("\n")
    return [(number, {"text": line.rstrip("\r")}) for number, line in enumerate(lines, start=1) if line.strip()]


def _read_conll(path: Path) -> Rows:
    """CoNLL text: a token per line, its tag in the last whitespace-separated column (CoNLL-2003's four columns
    are token, POS, chunk, NER), a blank line between sentences, `-DOCSTART-` lines skipped. Each sentence is a
    tagging row numbered by the line of its first token."""
    rows: Rows = []
    tokens: list[str] = []
    tags: list[str] = []
    first = 0
    with path.open(encoding="utf-8-sig") as handle:
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
        data = json.loads(read_utf8(path, DataError))
    except json.JSONDecodeError as err:
        raise DataError(f"{path}, line {err.lineno}: invalid JSON: {err.msg}") from None
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise DataError(f'{path}: expected a JSON list of rows (or {{"data": [...]}}); use .jsonl for one row a line')
    return list(enumerate(data, start=1))


def _read_csv(path: Path) -> Rows:
    text = io.StringIO(read_utf8(path, DataError), newline="")
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
    return list(enumerate(_load_disk(path, split).to_list(), start=1))


def _read_hub(name: str, split: str) -> Rows:
    from tunekit.data.cache import data_root

    return list(enumerate(_load_hub(name, split, False, str(data_root() / "sources")).to_list(), start=1))


@dataclass(frozen=True)
class Opened:
    """One source opened for training."""

    name: str  # as the recipe names it
    dataset: Any  # datasets.Dataset, or datasets.IterableDataset when streaming
    fingerprint: str  # changes when the content does (tunekit.data.cache keys)
    first: int = 1  # the number of row 0: 2 for CSV, whose header is row 1
    lines: Path | None = None  # a JSON-lines file: rows are its non-blank lines
    numbers: tuple[int, ...] = ()  # a file read row by row into sentences (.conll): each row's first line

    def number(self, index: int) -> int:
        """The number a user would look for, of the row at 0-based `index`."""
        if self.numbers:
            return self.numbers[index]
        if self.lines is None:
            return index + self.first
        with self.lines.open(encoding="utf-8-sig", errors="replace") as handle:
            seen = -1
            for number, line in enumerate(handle, start=1):
                seen += bool(line.strip())
                if seen == index:
                    return number
        return index + 1


SUFFIXES = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet", ".txt": "text"}


def open_source(source: str, split: str = "train", streaming: bool = False, cache: bool = True) -> Opened:
    """`source` as a `datasets` dataset: memory-mapped Arrow, or an IterableDataset with `streaming`."""
    import datasets

    from tunekit.data.cache import data_root, file_fingerprint, folder_fingerprint

    where = resolve_source(source)
    cache_dir = str(data_root(cache) / "sources")
    if isinstance(where, str):
        dataset = _load_hub(where, split, streaming, cache_dir)
        files = [f["filename"] for f in getattr(dataset, "cache_files", [])]
        return Opened(source, dataset, f"hub:{where}:{split}:{':'.join(sorted(files))}")
    if where.is_dir():
        dataset = _load_disk(where, split)
        return Opened(source, dataset.to_iterable_dataset() if streaming else dataset, folder_fingerprint(where))
    suffix = where.suffix.lower()
    if suffix == ".conll":  # no Arrow reader: sentences gathered in Python (tagging sets are small)
        _check_utf8(where)
        rows = _read_conll(where)
        if not rows:
            raise DataError(f"{source}: no rows")
        dataset = datasets.Dataset.from_list([row for _, row in rows])
        return Opened(
            source,
            dataset.to_iterable_dataset() if streaming else dataset,
            file_fingerprint(where),
            numbers=tuple(number for number, _ in rows),
        )
    if suffix not in SUFFIXES:
        raise DataError(
            f"{source}: unsupported file type {suffix or '(none)'}; use .jsonl, .json, .csv, .parquet, .txt or .conll"
        )
    builder, options = SUFFIXES[suffix], _builder_options(where, suffix)
    if builder != "parquet":
        _check_utf8(where)  # Arrow's JSON reader keeps bad bytes, to fail rows later in training
    try:
        with _silent("datasets"):  # its reader logs its own failure; the fallback names the line instead
            dataset = datasets.load_dataset(
                builder, data_files=str(where), split="train", cache_dir=cache_dir, streaming=streaming, **options
            )
        if not streaming:
            dataset.num_rows  # noqa: B018 - materialise now, so a bad file fails inside this try
    except Exception:  # noqa: BLE001 - Arrow's readers raise many types: read it again to name the line at fault
        dataset = _load_row_by_row(where, cache_dir, streaming)
    if not streaming and dataset.num_rows == 0:
        raise DataError(f"{source}: no rows")
    if suffix == ".txt":  # one document per non-blank line
        dataset = dataset.filter(lambda text: bool(text.strip()), input_columns="text")
    lines = (
        where
        if suffix in (".jsonl", ".txt") or (suffix == ".json" and "field" not in options and _is_lines(where))
        else None
    )
    first = 2 if suffix == ".csv" else 1
    return Opened(source, dataset, file_fingerprint(where), first, lines)


@contextmanager
def _silent(name: str) -> Iterator[None]:
    """The logger `name` (and its children) says nothing inside the block."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        logger.setLevel(level)


def _check_utf8(path: Path, chunk: int = 1 << 24) -> None:
    """A text file must be UTF-8 throughout: checked in chunks (a fraction of a second per 100 MB); the first
    bad byte is named with its line."""
    import codecs

    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        with path.open("rb") as handle:
            while block := handle.read(chunk):
                decoder.decode(block)
            decoder.decode(b"", final=True)
    except OSError as err:
        raise DataError(f"cannot read {path}: {err.strerror or type(err).__name__}") from None
    except UnicodeDecodeError:
        read_utf8(path, DataError)  # reads it whole, to name the line and byte
        raise


def _builder_options(path: Path, suffix: str) -> dict[str, Any]:
    if suffix == ".csv":
        # A byte-order mark (Excel's UTF-8 CSV) is not part of the first name; an empty cell is "", not missing.
        return {"encoding": "utf-8-sig", "na_filter": False}
    if suffix == ".txt":
        return {"keep_linebreaks": False}
    if suffix == ".json" and not _is_lines(path) and _first_char(path) == "{":
        return {"field": "data"}  # {"data": [...]}
    return {}


def _first_char(path: Path) -> str:
    with path.open(encoding="utf-8-sig", errors="replace") as handle:
        return handle.read(4096).lstrip()[:1]


def _is_lines(path: Path) -> bool:
    """A .json file that holds one object per line (JSON lines) rather than one JSON document."""
    with path.open(encoding="utf-8-sig", errors="replace") as handle:
        first = handle.readline().strip()
    if not first.startswith("{"):
        return False
    try:
        json.loads(first)
    except json.JSONDecodeError:
        return False  # a document spread over lines
    return True


def _load_row_by_row(path: Path, cache_dir: str, streaming: bool) -> Any:
    """The rows read in Python (naming the line of invalid JSON or bad bytes), then written to Arrow; a column
    whose type changes between rows is named."""
    import datasets

    from tunekit.data.formats import not_an_object

    rows = read_rows(str(path))  # raises DataError naming the line when the file itself is bad
    for number, row in rows:
        if not isinstance(row, dict):
            raise DataError(f"{path}, row {number}: {not_an_object(row)}")

    def generate() -> Iterator[dict[str, Any]]:
        for _, row in read_rows(str(path)):
            yield row

    if streaming:
        return datasets.IterableDataset.from_generator(generate)
    try:
        return datasets.Dataset.from_generator(generate, cache_dir=cache_dir)
    except Exception as err:  # noqa: BLE001 - pyarrow's type errors: a field holds different types in different rows
        first = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        raise DataError(
            f"{path}: its {len(rows)} rows do not share one structure ({first}); every row must use the same "
            "type for each field (e.g. a prompt that is always a string, or always a list of messages)"
        ) from None


def _load_disk(path: Path, split: str) -> Any:
    from datasets import DatasetDict, load_from_disk

    try:
        data = load_from_disk(str(path))
    except FileNotFoundError:
        raise DataError(f"{path}: a folder, but not one written by datasets' save_to_disk") from None
    if isinstance(data, DatasetDict):
        if split not in data:
            raise DataError(f"{path}: no split {split!r}; splits: {', '.join(data)} (set data.split)")
        data = data[split]
    return data


def _load_hub(name: str, split: str, streaming: bool, cache_dir: str) -> Any:
    import datasets

    try:
        return datasets.load_dataset(name, split=split, streaming=streaming, cache_dir=cache_dir)
    except datasets.exceptions.DatasetNotFoundError:
        raise DataError(f"dataset {name!r} not found locally, in the cache or on the Hub") from None
    except (ConnectionError, OSError, ValueError) as err:
        raise DataError(
            f"cannot load dataset {name!r} (split {split!r}): not a local file or folder, and the Hub "
            f"said: {str(err).splitlines()[0] if str(err) else type(err).__name__}"
        ) from None
