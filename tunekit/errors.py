"""Errors a user can fix. The CLI prints them as one line and exits 2; anything else exits 1.

raise UserError("data/train.jsonl, row 12: missing field 'completion'")
"""

from __future__ import annotations

from pathlib import Path


class UserError(Exception):
    """A mistake in the user's input: recipe, data, flag or path. Printed without a traceback."""


class RecipeError(UserError):
    """The recipe file or an override does not validate."""


class DataError(UserError):
    """A data file is missing, unreadable, or has a bad row."""


def read_utf8(path: Path, error: type[UserError]) -> str:
    """A file the user wrote, as UTF-8 (a byte-order mark, as Excel and Notepad write, dropped); a file that
    cannot be read, or is in another encoding, raises `error` naming the file (and the line of its first bad
    byte)."""
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise error(f"cannot read {path}: {err.strerror or type(err).__name__}") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise error(describe_decode_error(path, raw, err)) from None


def describe_decode_error(path: object, raw: bytes, err: UnicodeDecodeError) -> str:
    r"""A file that is not UTF-8 text: where its first bad byte is, and what to do.

    >>> raw = "a\nnaïve".encode("latin-1")
    >>> describe_decode_error("x.jsonl", raw, _first_error(raw))
    'x.jsonl, line 2 (byte 4, 0xef): not UTF-8 text; save it as UTF-8 (in Excel: CSV UTF-8; in an editor: UTF-8)'
    """
    line = raw.count(b"\n", 0, err.start) + 1
    bad = raw[err.start : err.start + 1].hex()
    utf16 = " (it is UTF-16, as some Windows tools save text)" if raw.startswith((b"\xff\xfe", b"\xfe\xff")) else ""
    return (
        f"{path}, line {line} (byte {err.start}, 0x{bad}): not UTF-8 text{utf16}; save it as UTF-8 "
        "(in Excel: CSV UTF-8; in an editor: UTF-8)"
    )


def _first_error(raw: bytes) -> UnicodeDecodeError:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as err:
        return err
    raise ValueError("valid UTF-8")
