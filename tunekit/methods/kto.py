"""KTO (unpaired desirable / undesirable completions) through trl's KTOTrainer.

    $ tunekit kto recipes/tiny/kto.yaml

Takes prompt/completion/label rows, or preference pairs (chosen -> desirable, rejected ->
undesirable). The reference is the starting model (the base with the adapter disabled under LoRA).
summary.json adds `eval_reward_margin_*` (desirable minus undesirable implicit reward) and, when the
eval data are pairs, the reference-free `eval_preference_accuracy_*`.
"""

from __future__ import annotations

from typing import Any

from tunekit.train.builders import trainer_inputs
from tunekit.train.fit import fit_trainer, preference_eval
from tunekit.train.pipeline import Echo, Run
from tunekit.train.summary import Trained


def train(run: Run, echo: Echo) -> Trained:
    recipe = run.recipe
    data, settings = run.data, recipe.kto
    paired = data.kind == "preference"
    from trl import KTOConfig, KTOTrainer

    from tunekit.train.builders import trainer_rows

    rows = trainer_rows(data.train)
    held_out = trainer_rows(data.eval) if data.eval is not None else None
    if paired:  # chosen -> desirable, rejected -> undesirable
        rows = unpaired(rows)
        held_out = unpaired(held_out) if held_out is not None else None

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


def unpaired(pairs: Any) -> Any:
    """Preference pairs as KTO rows, each pair's two rows side by side: chosen (desirable), then rejected.
    (trl's `unpair_preference_dataset` puts a thousand chosen rows before their rejected ones; KTOTrainer
    builds its KL pairs by rotating completions within batches of the dataset's order, and the tiny KTO
    recipe stopped learning on that order.)"""

    def split(batch: dict[str, list]) -> dict[str, list]:
        out: dict[str, list] = {"prompt": [], "completion": [], "label": []}
        for prompt, chosen, rejected in zip(batch["prompt"], batch["chosen"], batch["rejected"]):
            out["prompt"] += [prompt, prompt]
            out["completion"] += [chosen, rejected]
            out["label"] += [True, False]
        return out

    return pairs.map(split, batched=True, remove_columns=pairs.column_names)
