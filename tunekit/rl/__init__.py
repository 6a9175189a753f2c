"""Reinforcement learning from rewards: PPO's math, rollouts and the policy + value head.

    >>> from tunekit.rl.ppo_math import gae
    >>> import torch
    >>> gae(torch.tensor([[0.0, 1.0]]), torch.zeros(1, 2), torch.ones(1, 2), gamma=1.0, lam=1.0)[0].tolist()
    [[1.0, 1.0]]

`tunekit.methods.ppo` runs the loop; these modules hold its parts, each testable on its own.
"""
