"""SimPO (length-normalised, reference-free preference loss) through trl's experimental CPOTrainer.

    $ tunekit simpo recipes/tiny/simpo.yaml simpo.beta=2.5

trl implements SimPO as CPO with `loss_type="simpo"` and no behaviour-cloning term (`cpo_alpha=0`);
both live under `trl.experimental`. summary.json adds `eval_reward_accuracy_*`,
`eval_reward_margin_*` and the reference-free `eval_preference_accuracy_*`.
"""

from __future__ import annotations

from tunekit.train.builders import trainer_inputs
from tunekit.train.fit import PREFERENCE_FIGURES, fit_trainer, preference_eval
from tunekit.train.pipeline import Echo, Run
from tunekit.train.summary import Trained


def train(run: Run, echo: Echo) -> Trained:
    recipe = run.recipe
    data, settings = run.data, recipe.simpo

    from trl.experimental.cpo import CPOConfig, CPOTrainer

    from tunekit.train.builders import trainer_kwargs

    config = CPOConfig(
        **trainer_kwargs(recipe, run.out, run.dtype, has_eval=bool(data.eval)),
        max_length=recipe.data.max_length,
        loss_type="simpo",
        cpo_alpha=0.0,
        beta=settings.beta,
        simpo_gamma=settings.gamma,
    )
    trainer = CPOTrainer(args=config, **trainer_inputs(run))
    return fit_trainer(trainer, run, echo, PREFERENCE_FIGURES, extra_eval=preference_eval(trainer, run))
