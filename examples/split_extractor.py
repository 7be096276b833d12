"""A controller features extractor of your own: one small MLP per observation key, then concatenated.

SB3's default for the env's dict observation (``CombinedExtractor``) flattens and concatenates the
keys, so the policy's first layer mixes the preview's pooled features (up to hundreds of values) and
the few resource-context numbers from the start. This one encodes each key on its own first, so the
context is not drowned by the features. Name it by import spec in the hyperparameters:

    PYTHONPATH=examples tnn train-controller --hyperparams \\
        '{"policy_kwargs": {"features_extractor_class": "split_extractor:SplitMLP",
                            "features_extractor_kwargs": {"hidden": 32}}}' --out runs/split

The run's ``config.yml`` records the spec; ``tnn evaluate-controller runs/split`` imports it again (so
keep the module on the Python path) and lets the run's ``model.zip`` name that class and no other.
"""

from __future__ import annotations

import gymnasium as gym
import torch
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn


class SplitMLP(BaseFeaturesExtractor):
    """``Linear(key's size, hidden) → ReLU`` for every key of the dict observation, concatenated."""

    def __init__(self, observation_space: gym.spaces.Dict, hidden: int = 32) -> None:
        keys = sorted(observation_space.spaces)
        super().__init__(observation_space, features_dim=hidden * len(keys))
        self.encoders = nn.ModuleDict(
            {
                key: nn.Sequential(
                    nn.Flatten(), nn.Linear(gym.spaces.flatdim(observation_space[key]), hidden), nn.ReLU()
                )
                for key in keys
            }
        )

    def forward(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([encoder(observations[key]) for key, encoder in self.encoders.items()], dim=1)
