"""tunekit's PPO loop: sample, score, shape rewards with a KL leash, GAE on a value head, clipped updates.

    >>> loop = PPOLoop(recipe, tokenizer, model, reference, value_head, reward, steps)  # doctest: +SKIP
    >>> history = loop.train(batches, run.log, print, sampler)                            # doctest: +SKIP

The maths (KL estimators, GAE, whitening, the clipped losses) is in tunekit.rl.ppo_math, the sampling
and the per-token log-probs in tunekit.rl.rollout; tunekit.methods.ppo builds the parts and reports.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from typing import Any

from tunekit.config import Recipe


class PPOLoop:
    """The PPO loop's state: policy (+ value head), reference, optimizer and KL controller."""

    def __init__(
        self, recipe: Recipe, tokenizer: Any, model: Any, reference: Any, value_head: Any, reward: Any, steps: int
    ) -> None:
        import torch
        from transformers import get_scheduler

        from tunekit.rl.ppo_math import AdaptiveKL

        self.recipe, self.settings, self.tokenizer = recipe, recipe.ppo, tokenizer
        self.model, self.reference, self.value_head, self.reward = model, reference, value_head, reward
        t = recipe.training
        params = [p for p in model.parameters() if p.requires_grad] + list(value_head.parameters())
        optimizer_cls = torch.optim.SGD if t.optimizer == "sgd" else torch.optim.AdamW
        if recipe.adapter.loraplus_lr_ratio:  # peft's LoRA+ groups for the adapter; the value head at the base rate
            from peft.optimizers import create_loraplus_optimizer

            self.optimizer: Any = create_loraplus_optimizer(
                model,
                optimizer_cls,
                lr=t.learning_rate,
                loraplus_lr_ratio=recipe.adapter.loraplus_lr_ratio,
                loraplus_weight_decay=t.weight_decay,
            )
            self.optimizer.add_param_group(
                {"params": list(value_head.parameters()), "lr": t.learning_rate, "weight_decay": t.weight_decay}
            )
        else:
            self.optimizer = optimizer_cls(params, lr=t.learning_rate, weight_decay=t.weight_decay)
        warmup = int(t.warmup_steps * steps) if t.warmup_steps < 1 else int(t.warmup_steps)
        self.scheduler = get_scheduler(
            t.lr_scheduler, self.optimizer, num_warmup_steps=warmup, num_training_steps=steps
        )
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
                batch = sample(
                    self.model,
                    self.tokenizer,
                    prompts[start : start + 16],
                    self.settings,
                    self.settings.max_prompt_length,
                )
                scores.extend(self._scores(batch).tolist())
        return round(sum(scores) / len(scores), 4)

    def _scores(self, batch: Any) -> Any:
        import torch

        scores = torch.tensor(self.reward(batch.prompts, batch.completions), dtype=torch.float32)
        if self.settings.missing_eos_penalty is not None:
            scores -= self.settings.missing_eos_penalty * (~batch.ended.cpu()).float()
        return scores.to(batch.mask.device)

    def train(
        self, batches: Iterator[list[Any]], log: Any, echo: Callable[[str], None], sampler: Any = None
    ) -> list[dict[str, float]]:
        """`steps` PPO steps; each logged step goes to `log` (tunekit.train.trackers.RunLog: metrics.jsonl and
        the trackers), and every `training.sample_every` steps `sampler` writes greedy samples."""
        from tqdm.auto import tqdm

        from tunekit.train.callbacks import weights_finite

        every = self.recipe.training.sample_every
        history = []
        bar = tqdm(total=self.steps, desc="ppo", unit="step", dynamic_ncols=True, disable=None)
        for step in range(1, self.steps + 1):
            rollout = self.rollout(next(batches))
            stats = {**rollout.stats, **self.optimise(rollout)}
            self.kl.update(stats["kl"], len(rollout.batch.prompts))
            self.scheduler.step()
            stats.update(step=step, kl_coef=self.kl.value, learning_rate=self.scheduler.get_last_lr()[0])
            if not math.isfinite(stats["loss"]) or not weights_finite(self.params):
                bar.close()
                log.metrics(stats)
                raise _diverged(step, stats, history)
            history.append(stats)
            bar.update(1)
            if step % self.recipe.training.logging_steps == 0 or step == self.steps:
                log.metrics(stats)
                bar.write(
                    f"step {step}/{self.steps}  reward {stats['reward_mean']:.4g}  kl {stats['kl']:.4g}  "
                    f"loss {stats['loss']:.4g}"
                )
            if sampler is not None and every and step % every == 0 and step != self.steps:
                sampler(self.model, step)
        bar.close()
        return history

    def rollout(self, prompts: list[Any]) -> Any:
        """Sample, score, and compute everything the PPO epochs hold fixed: old log-probs, values, advantages."""
        import torch

        from tunekit.rl import ppo_math
        from tunekit.rl.rollout import forward, sample

        s = self.settings
        self.model.eval()
        batch = sample(self.model, self.tokenizer, prompts, s, self.settings.max_prompt_length)
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
        totals: dict[str, list[float]] = {
            k: [] for k in ("policy_loss", "value_loss", "loss", "clip_fraction", "value_clip_fraction", "approx_kl")
        }
        for _ in range(s.ppo_epochs):
            order = torch.randperm(n, device=rollout.batch.mask.device)
            for start in range(0, n, micro * accumulation):
                self.optimizer.zero_grad(set_to_none=True)
                for chunk in order[start : start + micro * accumulation].split(micro):
                    logprobs, _, values = forward(self.model, rollout.batch, chunk, s.temperature, self.value_head)
                    assert values is not None
                    mask = rollout.batch.mask[chunk]
                    pg, clip, approx = ppo_math.policy_loss(
                        logprobs, rollout.logprobs[chunk], rollout.advantages[chunk], mask, s.cliprange
                    )
                    vf, vclip = ppo_math.value_loss(
                        values, rollout.values[chunk], rollout.returns[chunk], mask, s.cliprange_value
                    )
                    loss = pg + s.vf_coef * vf
                    (loss / accumulation).backward()
                    for key, value in (
                        ("policy_loss", pg),
                        ("value_loss", vf),
                        ("loss", loss),
                        ("clip_fraction", clip),
                        ("value_clip_fraction", vclip),
                        ("approx_kl", approx),
                    ):
                        totals[key].append(value.item())
                if t.max_grad_norm > 0:
                    torch.nn.utils.clip_grad_norm_(self.params, t.max_grad_norm)
                self.optimizer.step()
        return {key: sum(values) / len(values) for key, values in totals.items()}


class Rollout:
    def __init__(
        self,
        batch: Any,
        logprobs: Any,
        values: Any,
        advantages: Any,
        returns: Any,
        scores: Any,
        stats: dict[str, float],
    ) -> None:
        self.batch, self.logprobs, self.values = batch, logprobs, values
        self.advantages, self.returns, self.scores, self.stats = advantages, returns, scores, stats


def _diverged(step: int, stats: dict[str, float], history: list[dict[str, float]]) -> Exception:
    """The same stop as transformers-based runs (tunekit.train.callbacks.StopOnNonFinite): no final/ saved."""
    from tunekit.train.callbacks import NonFiniteLoss

    loss = stats["loss"]
    what = f"the loss is {loss}" if not math.isfinite(loss) else "its update made the weights NaN or infinite"
    finite = [*history, stats] if math.isfinite(loss) else history
    last = f"last finite loss {finite[-1]['loss']:.4g} at step {finite[-1]['step']:.0f}" if finite else "no finite loss"
    return NonFiniteLoss(
        f"training stopped at step {step}: {what} ({last}); no final/ was written (tunekit ppo saves no "
        "checkpoints); lower training.learning_rate, or check the reward source"
    )
