"""PPO (RLHF): sample responses, score them, and push the policy towards higher reward at a KL cost.

    $ tunekit ppo recipes/tiny/ppo.yaml ppo.kl_coef=0.1

Each step: sample `batch_size x gradient_accumulation_steps x ppo.num_mini_batches` responses; score
them (a reward model, a classifier label or a `module:function`); shape per-token rewards with a KL
penalty to the reference; estimate advantages with GAE on a value head that shares the policy's
trunk; then `ppo.ppo_epochs` passes of clipped policy and value losses over minibatches. With
LoRA/QLoRA the reference is the base with the adapter disabled (one copy of the base in memory);
full fine-tuning keeps a frozen copy. metrics.jsonl gets reward, KL, entropy, losses, clip fraction,
approx KL and response length per logged step; samples.jsonl a few generations every
`ppo.sample_every` steps. summary.json adds `reward_mean_first`, `reward_mean_last`, `kl_last` and,
with eval prompts, `eval_reward_before` / `eval_reward_after` (mean reward of sampled responses).
"""

from __future__ import annotations

import contextlib
import copy
import math
import random
import time
from collections.abc import Iterator
from typing import Any

from tunekit.config import Recipe
from tunekit.errors import UserError
from tunekit.train.pipeline import Report, prepare
from tunekit.train.rundir import RunOptions

EVAL_PROMPTS = 64  # held-out prompts scored before and after training
SAMPLES = 3  # generations written to samples.jsonl each time


def run(recipe: Recipe, options: RunOptions = RunOptions(), report: Report = print) -> dict[str, Any]:
    settings = recipe.ppo
    assert settings is not None  # the schema fills it for method ppo
    if recipe.training.optimizer not in ("adamw", "sgd"):
        raise UserError(f"training.optimizer: tunekit ppo supports adamw and sgd, not {recipe.training.optimizer}")
    _refuse_launch_and_resume(options)
    setup = prepare(recipe, options)

    import torch
    from peft import get_peft_model

    from tunekit.rl.rewards import reward_source
    from tunekit.data.formats import prompt_part
    from tunekit.rl.rollout import ValueHead
    from tunekit.train.rundir import write_summary
    from tunekit.train.builders import count_parameters, peft_config

    torch.manual_seed(recipe.training.seed)
    model = setup.model
    reference = None
    peft = peft_config(recipe.adapter, model)
    if peft is not None:
        model = get_peft_model(model, peft)
    elif not hasattr(model, "peft_config"):
        reference = copy.deepcopy(model).eval().requires_grad_(False)  # full fine-tuning: a frozen copy
    value_head = ValueHead(model.config.hidden_size).to(model.device)
    reward = reward_source(settings, str(model.device))
    prompts = [prompt_part(row) for row in setup.data.train]
    eval_prompts = [prompt_part(row) for row in setup.data.eval][:EVAL_PROMPTS]

    steps = _steps(recipe, len(prompts))
    total, trainable = count_parameters(model)
    trainable += sum(p.numel() for p in value_head.parameters())
    total += sum(p.numel() for p in value_head.parameters())
    report(
        f"tunekit ppo: {recipe.model.name_or_path} [{recipe.adapter.type}] {total:,} parameters, "
        f"{trainable:,} trainable (value head included)\n"
        f"  prompts: {recipe.data.train} {len(prompts)} train, {len(eval_prompts)} eval; "
        f"{_rollouts(recipe)} responses per step\n  {steps} steps -> {setup.out}"
    )
    trainer = Trainer(recipe, setup.tokenizer, model, reference, value_head, reward, steps)
    before = trainer.evaluate(eval_prompts) if eval_prompts else None
    if before is not None:
        report(f"before training: eval reward {before:.4f}")
    started = time.perf_counter()
    history = trainer.train(_batches(prompts, _rollouts(recipe), recipe.training.seed), setup.out, report)
    runtime = time.perf_counter() - started
    after = trainer.evaluate(eval_prompts) if eval_prompts else None

    final = setup.out / "final"
    model.save_pretrained(str(final))
    setup.tokenizer.padding_side = "right"  # what the other commands and trainers expect to load
    setup.tokenizer.save_pretrained(str(final))
    torch.save(value_head.state_dict(), setup.out / "value_head.pt")
    summary: dict[str, Any] = {
        "method": "ppo",
        "adapter": recipe.adapter.type,
        "model": recipe.model.name_or_path,
        "data_format": setup.data.format,
        "total_parameters": total,
        "trainable_parameters": trainable,
        "steps": steps,
        "runtime_seconds": round(runtime, 3),
        "train_loss": sum(h["loss"] for h in history) / len(history),
        "reward_mean_first": history[0]["reward_mean"],
        "reward_mean_last": _tail_mean(history, "reward_mean"),
        "kl_last": _tail_mean(history, "kl"),
        "kl_coef_last": history[-1]["kl_coef"],
    }
    if before is not None and after is not None:
        summary.update(eval_examples=len(eval_prompts), eval_reward_before=before, eval_reward_after=after)
    write_summary(setup.out, summary)
    report(
        f"done in {runtime:.1f}s: {steps} steps, reward {summary['reward_mean_first']:.4f} -> "
        f"{summary['reward_mean_last']:.4f}, KL {summary['kl_last']:.4f}"
    )
    if after is not None:
        report(f"after training: eval reward {after:.4f}")
    report(f"saved {final}")
    return summary


def _rollouts(recipe: Recipe) -> int:
    assert recipe.ppo is not None
    return recipe.training.batch_size * recipe.training.gradient_accumulation_steps * recipe.ppo.num_mini_batches


def _refuse_launch_and_resume(options: RunOptions) -> None:
    """PPO's loop is tunekit's own, outside transformers' Trainer: one process, no checkpoints to resume."""
    from tunekit.train.launch import world_size

    if (options.num_processes or 1) > 1 or options.accelerate_config or world_size() > 1:
        raise UserError(
            "tunekit ppo runs in one process (its loop is tunekit's own, not transformers' Trainer); "
            "leave out --num-processes / --accelerate-config, or use tunekit grpo, which scales out"
        )
    if options.resume:
        raise UserError("tunekit ppo cannot --resume: its loop writes no checkpoints; start again with --overwrite")

def _steps(recipe: Recipe, n_prompts: int) -> int:
    if recipe.training.max_steps > 0:
        return recipe.training.max_steps
    return max(1, math.ceil(recipe.training.epochs * n_prompts / _rollouts(recipe)))


def _batches(prompts: list[Any], size: int, seed: int) -> Iterator[list[Any]]:
    """Endless shuffled passes over the prompts, `size` at a time."""
    rng = random.Random(seed)
    while True:
        order = list(range(len(prompts)))
        rng.shuffle(order)
        for start in range(0, len(order) - size + 1 if len(order) >= size else 1, size):
            chosen = order[start : start + size]
            yield [prompts[i] for i in (chosen * size)[:size]]  # fewer prompts than a batch: repeat them


def _tail_mean(history: list[dict[str, float]], key: str) -> float:
    """Mean over the last tenth of the steps (at least one): one step's figure is noisy."""
    tail = history[-max(1, len(history) // 10) :]
    return sum(h[key] for h in tail) / len(tail)


class Trainer:
    """The PPO loop's state: policy (+ value head), reference, optimizer and KL controller."""

    def __init__(self, recipe: Recipe, tokenizer: Any, model: Any, reference: Any, value_head: Any,
                 reward: Any, steps: int) -> None:
        import torch
        from transformers import get_scheduler

        from tunekit.rl.ppo_math import AdaptiveKL

        assert recipe.ppo is not None
        self.recipe, self.settings, self.tokenizer = recipe, recipe.ppo, tokenizer
        self.model, self.reference, self.value_head, self.reward = model, reference, value_head, reward
        t = recipe.training
        params = [p for p in model.parameters() if p.requires_grad] + list(value_head.parameters())
        if t.optimizer == "sgd":
            self.optimizer: Any = torch.optim.SGD(params, lr=t.learning_rate, weight_decay=t.weight_decay)
        else:
            self.optimizer = torch.optim.AdamW(params, lr=t.learning_rate, weight_decay=t.weight_decay)
        warmup = int(t.warmup_steps * steps) if t.warmup_steps < 1 else int(t.warmup_steps)
        self.scheduler = get_scheduler(t.lr_scheduler, self.optimizer, num_warmup_steps=warmup, num_training_steps=steps)
        self.params, self.steps = params, steps
        self.kl = AdaptiveKL(self.settings.kl_coef, self.settings.target_kl, self.settings.kl_horizon)

    def evaluate(self, prompts: list[Any]) -> float:
        """Mean reward of sampled responses to held-out prompts (seeded, so before/after compare)."""
        import torch

        from tunekit.rl.rollout import sample

        scores: list[float] = []
        self.model.eval()
        with torch.random.fork_rng():
            torch.manual_seed(self.recipe.training.seed)
            for start in range(0, len(prompts), 16):
                batch = sample(self.model, self.tokenizer, prompts[start : start + 16], self.settings,
                               self.recipe.data.max_length)
                scores.extend(self._scores(batch).tolist())
        return round(sum(scores) / len(scores), 4)

    def _scores(self, batch: Any) -> Any:
        import torch

        scores = torch.tensor(self.reward(batch.prompts, batch.completions), dtype=torch.float32)
        if self.settings.missing_eos_penalty is not None:
            scores -= self.settings.missing_eos_penalty * (~batch.ended.cpu()).float()
        return scores.to(batch.mask.device)

    def train(self, batches: Iterator[list[Any]], out: Any, report: Report) -> list[dict[str, float]]:
        from tqdm.auto import tqdm

        from tunekit.train.rundir import append_metrics

        history = []
        bar = tqdm(total=self.steps, desc="ppo", unit="step", dynamic_ncols=True, disable=None)
        for step in range(1, self.steps + 1):
            rollout = self.rollout(next(batches))
            stats = {**rollout.stats, **self.optimise(rollout)}
            self.kl.update(stats["kl"], len(rollout.batch.prompts))
            self.scheduler.step()
            stats.update(step=step, kl_coef=self.kl.value, learning_rate=self.scheduler.get_last_lr()[0])
            history.append(stats)
            bar.update(1)
            if step % self.recipe.training.logging_steps == 0 or step == self.steps:
                append_metrics(out, stats)
                bar.write(f"step {step}/{self.steps}  reward {stats['reward_mean']:.4g}  kl {stats['kl']:.4g}  "
                          f"loss {stats['loss']:.4g}")
            if step % self.settings.sample_every == 0 or step == 1:
                _write_samples(out, step, rollout)
        bar.close()
        return history

    def rollout(self, prompts: list[Any]) -> Any:
        """Sample, score, and compute everything the PPO epochs hold fixed: old log-probs, values, advantages."""
        import torch

        from tunekit.rl import ppo_math
        from tunekit.rl.rollout import forward, sample

        s = self.settings
        self.model.eval()
        batch = sample(self.model, self.tokenizer, prompts, s, self.recipe.data.max_length)
        scores = self._scores(batch)
        with torch.no_grad():
            logprobs, entropy, values = forward(self.model, batch, slice(None), s.temperature, self.value_head)
            with self._reference() as reference:
                ref_logprobs, _, _ = forward(reference, batch, slice(None), s.temperature)
        assert values is not None
        mask = batch.mask
        kl = ppo_math.kl_per_token(logprobs, ref_logprobs, s.kl_estimator) * mask
        rewards = ppo_math.shaped_rewards(scores, kl, mask, self.kl.value)
        if s.whiten_rewards:
            rewards = ppo_math.whiten(rewards, mask, shift_mean=False)
        advantages, returns = ppo_math.gae(rewards, values, mask, s.gamma, s.lam)
        if s.whiten_advantages:
            advantages = ppo_math.whiten(advantages, mask)
        stats = {
            "reward_mean": scores.mean().item(),
            "reward_std": scores.std().item() if len(scores) > 1 else 0.0,
            "kl": kl.sum(1).mean().item(),  # per response, nats
            "entropy": ppo_math.masked_mean(entropy, mask).item(),  # per token, nats
            "response_length": mask.sum(1).mean().item(),  # tokens
            "ended_fraction": batch.ended.float().mean().item(),
        }
        return Rollout(batch, logprobs, values, advantages, returns, scores, stats)

    @contextlib.contextmanager
    def _reference(self) -> Iterator[Any]:
        if self.reference is not None:
            yield self.reference
        else:
            with self.model.disable_adapter():  # LoRA: the base itself is the reference
                yield self.model

    def optimise(self, rollout: Any) -> dict[str, float]:
        """`ppo_epochs` passes over shuffled minibatches; each minibatch is micro-batches with accumulation."""
        import torch

        from tunekit.rl import ppo_math
        from tunekit.rl.rollout import forward

        s, t = self.settings, self.recipe.training
        self.model.train()
        n = len(rollout.batch.prompts)
        micro, accumulation = t.batch_size, t.gradient_accumulation_steps
        totals: dict[str, list[float]] = {k: [] for k in ("policy_loss", "value_loss", "loss", "clip_fraction",
                                                            "value_clip_fraction", "approx_kl")}
        for _ in range(s.ppo_epochs):
            order = torch.randperm(n, device=rollout.batch.mask.device)
            for start in range(0, n, micro * accumulation):
                self.optimizer.zero_grad(set_to_none=True)
                for chunk in order[start : start + micro * accumulation].split(micro):
                    logprobs, _, values = forward(self.model, rollout.batch, chunk, s.temperature, self.value_head)
                    assert values is not None
                    mask = rollout.batch.mask[chunk]
                    pg, clip, approx = ppo_math.policy_loss(
                        logprobs, rollout.logprobs[chunk], rollout.advantages[chunk], mask, s.cliprange)
                    vf, vclip = ppo_math.value_loss(
                        values, rollout.values[chunk], rollout.returns[chunk], mask, s.cliprange_value)
                    loss = pg + s.vf_coef * vf
                    (loss / accumulation).backward()
                    for key, value in (("policy_loss", pg), ("value_loss", vf), ("loss", loss), ("clip_fraction", clip),
                                       ("value_clip_fraction", vclip), ("approx_kl", approx)):
                        totals[key].append(value.item())
                if t.max_grad_norm > 0:
                    torch.nn.utils.clip_grad_norm_(self.params, t.max_grad_norm)
                self.optimizer.step()
        return {key: sum(values) / len(values) for key, values in totals.items()}


class Rollout:
    def __init__(self, batch: Any, logprobs: Any, values: Any, advantages: Any, returns: Any, scores: Any,
                 stats: dict[str, float]) -> None:
        self.batch, self.logprobs, self.values = batch, logprobs, values
        self.advantages, self.returns, self.scores, self.stats = advantages, returns, scores, stats


def _write_samples(out: Any, step: int, rollout: Rollout) -> None:
    import json

    with (out / "samples.jsonl").open("a", encoding="utf-8") as handle:
        for i in range(min(SAMPLES, len(rollout.batch.prompts))):
            row = {"step": step, "prompt": rollout.batch.prompts[i], "completion": rollout.batch.completions[i],
                   "reward": round(float(rollout.scores[i]), 4)}
            handle.write(json.dumps(row) + "\n")
