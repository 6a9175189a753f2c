"""ORPO (SFT and preference in one step, no reference model) through trl's experimental ORPOTrainer.

    $ tunekit orpo recipes/tiny/orpo.yaml

Experimental upstream: trl keeps ORPO under `trl.experimental`. summary.json adds
`eval_reward_accuracy_*`, `eval_reward_margin_*` (ORPO's log-odds rewards) and the reference-free
`eval_preference_accuracy_*`.
"""

from __future__ import annotations

from tunekit.train.builders import trainer_inputs
from tunekit.train.fit import PREFERENCE_FIGURES, fit_trainer, preference_eval
from tunekit.train.pipeline import Echo, Run
from tunekit.train.summary import Trained


def train(run: Run, echo: Echo) -> Trained:
    recipe = run.recipe
    data, settings = run.data, recipe.orpo

    from trl.experimental.orpo import ORPOConfig, ORPOTrainer

    from tunekit.train.builders import trainer_kwargs

    config = ORPOConfig(
        **trainer_kwargs(recipe, run.out, run.dtype, has_eval=bool(data.eval)),
        max_length=recipe.data.max_length,
        beta=settings.beta,
    )
    trainer = ORPOTrainer(args=config, **trainer_inputs(run))
    return fit_trainer(trainer, run, echo, PREFERENCE_FIGURES, extra_eval=preference_eval(trainer, run))
