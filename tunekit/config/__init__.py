"""Recipe schema and loading. Pure: no torch, no files written.

>>> from tunekit.config import load_recipe
>>> load_recipe("recipes/quickstart.yaml").training.max_steps  # doctest: +SKIP
"""

from tunekit.config.load import apply_override, dump_recipe, load_recipe, validate
from tunekit.config.schema import Recipe

__all__ = ["Recipe", "apply_override", "dump_recipe", "load_recipe", "validate"]
