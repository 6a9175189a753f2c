"""KTO (unpaired desirable / undesirable completions) through trl's KTOTrainer.

    $ tunekit kto recipes/tiny/kto.yaml

Takes prompt/completion/label rows, or preference pairs (chosen -> desirable, rejected ->
undesirable). The reference is the starting model (the base with the adapter disabled under LoRA).
summary.json adds `eval_reward_margin_*` (desirable minus undesirable implicit reward) and, when the
eval data are pairs, the reference-free `eval_preference_accuracy_*`.
"""

from __future__ import annotations

from tunekit.data.formats import unpair
from tunekit.train.builders import trainer_inputs
from tunekit.train.fit import fit_trainer, preference_eval
from tunekit.train.pipeline import Echo, Run
from tunekit.train.summary import Trained


def train(run: Run, echo: Echo) -> Trained:
    recipe = run.recipe
    data, settings = run.data, recipe.kto
    paired = data.kind == "preference"
    train = unpair(data.train) if paired else data.train
    evaluation = unpair(data.eval) if paired else data.eval

    from trl import KTOConfig, KTOTrainer

    from tunekit.train.builders import trainer_kwargs

    config = KTOConfig(
        **trainer_kwargs(recipe, run.out, run.dtype, has_eval=bool(evaluation)),
        max_length=recipe.data.max_length,
        beta=settings.beta,
        desirable_weight=settings.desirable_weight,
        undesirable_weight=settings.undesirable_weight,
    )
    trainer = KTOTrainer(args=config, **trainer_inputs(run, train=train, evaluation=evaluation))
    return fit_trainer(
        trainer,
        run,
        echo,
        {"eval_reward_margin": "eval_rewards/margins"},
        extra_eval=preference_eval(trainer, run) if paired else None,
    )
