"""ORPO (SFT and preference in one step, no reference model) through trl's experimental ORPOTrainer.

    $ tunekit orpo recipes/tiny/orpo.yaml

Experimental upstream: trl keeps ORPO under `trl.experimental`. summary.json adds
`eval_reward_accuracy_*`, `eval_reward_margin_*` (ORPO's log-odds rewards) and the reference-free
`eval_preference_accuracy_*`.
"""

from __future__ import annotations

from typing import Any

from tunekit.config import Recipe
from tunekit.train.pipeline import PREFERENCE_FIGURES, Report, fit, preference_eval, prepare, trainer_inputs
from tunekit.train.rundir import RunOptions


def run(recipe: Recipe, options: RunOptions = RunOptions(), report: Report = print) -> dict[str, Any]:
    setup = prepare(recipe, options)
    data, settings = setup.data, recipe.orpo
    assert settings is not None

    from trl.experimental.orpo import ORPOConfig, ORPOTrainer

    from tunekit.train.builders import trainer_kwargs

    config = ORPOConfig(
        **trainer_kwargs(recipe, setup.out, setup.dtype, has_eval=bool(data.eval)),
        max_length=recipe.data.max_length,
        beta=settings.beta,
    )
    trainer = ORPOTrainer(args=config, **trainer_inputs(setup))
    return fit(trainer, setup, report, PREFERENCE_FIGURES, extra_eval=preference_eval(trainer, setup))
