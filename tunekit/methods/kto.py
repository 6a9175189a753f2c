"""KTO (unpaired desirable / undesirable completions) through trl's KTOTrainer.

    $ tunekit kto recipes/tiny/kto.yaml

Takes prompt/completion/label rows, or preference pairs (chosen -> desirable, rejected ->
undesirable). The reference is the starting model (the base with the adapter disabled under LoRA).
summary.json adds `eval_reward_margin_*` (desirable minus undesirable implicit reward) and, when the
eval data are pairs, the reference-free `eval_preference_accuracy_*`.
"""

from __future__ import annotations

from tunekit.train.builders import trainer_inputs
from tunekit.train.fit import fit_trainer, preference_eval
from tunekit.train.pipeline import Echo, Run
from tunekit.train.summary import Trained


def train(run: Run, echo: Echo) -> Trained:
    recipe = run.recipe
    data, settings = run.data, recipe.kto
    paired = data.kind == "preference"
    from trl import KTOConfig, KTOTrainer, unpair_preference_dataset

    from tunekit.train.builders import trainer_rows

    rows = trainer_rows(data.train)
    held_out = trainer_rows(data.eval) if data.eval is not None else None
    if paired:  # chosen -> desirable, rejected -> undesirable
        rows = unpair_preference_dataset(rows)
        held_out = unpair_preference_dataset(held_out) if held_out is not None else None

    from tunekit.train.builders import trainer_kwargs

    config = KTOConfig(
        **trainer_kwargs(recipe, run.out, run.dtype, has_eval=bool(held_out)),
        max_length=recipe.data.max_length,
        beta=settings.beta,
        desirable_weight=settings.desirable_weight,
        undesirable_weight=settings.undesirable_weight,
    )
    trainer = KTOTrainer(args=config, **trainer_inputs(run, train=rows, evaluation=held_out))
    return fit_trainer(
        trainer,
        run,
        echo,
        {"eval_reward_margin": "eval_rewards/margins"},
        extra_eval=preference_eval(trainer, run) if paired else None,
    )
