"""Errors a user can fix. The CLI prints them as one line and exits 2; anything else exits 1.

raise UserError("data/train.jsonl, row 12: missing field 'completion'")
"""


class UserError(Exception):
    """A mistake in the user's input: recipe, data, flag or path. Printed without a traceback."""


class RecipeError(UserError):
    """The recipe file or an override does not validate."""


class DataError(UserError):
    """A data file is missing, unreadable, or has a bad row."""
