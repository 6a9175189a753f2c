"""Reward models: a one-score sequence-classification head trained on preference pairs (trl's RewardTrainer).

    $ tunekit reward recipes/tiny/reward.yaml
    $ tunekit score runs/tiny-reward/final --data pairs.jsonl

Full, LoRA or QLoRA. summary.json adds `eval_accuracy_*` (held-out pairs where chosen outscores
rejected) and `eval_margin_*` (mean chosen - rejected score). `final/` is what `tunekit ppo` and
`tunekit score` load. Pairs longer than data.max_length are dropped by trl, not truncated.
"""

from __future__ import annotations

from tunekit.train.builders import trainer_inputs
from tunekit.train.fit import fit_trainer
from tunekit.train.pipeline import Echo, Run
from tunekit.train.summary import Trained

HEAD = "score"


def train(run: Run, echo: Echo) -> Trained:
    recipe = run.recipe
    data, settings = run.data, recipe.reward

    from trl import RewardConfig, RewardTrainer

    from tunekit.train.builders import trainer_kwargs

    config = RewardConfig(
        **trainer_kwargs(recipe, run.out, run.dtype, has_eval=bool(data.eval)),
        max_length=recipe.data.max_length,
        center_rewards_coefficient=settings.center_rewards_coefficient,
    )
    trainer = RewardTrainer(args=config, **trainer_inputs(run, task_type="SEQ_CLS"))
    return fit_trainer(trainer, run, echo, {"eval_accuracy": "eval_accuracy", "eval_margin": "eval_margin"})
