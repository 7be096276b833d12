"""Gymnasium environments holding a pretrained throttleable network; importing registers the ids.

``gymnasium.make("tnn/Throttle-v0")`` (continuous action: the utilization) and
``gymnasium.make("tnn/ThrottleDiscrete-v0")`` (one action per level). The vectorized SB3 env
lives in :mod:`envs.vec` (it imports stable-baselines3, so it is not imported here).
"""

from gymnasium.envs.registration import register, registry

from envs.load import MarkovLoad
from envs.rewards import REWARDS, Deadline, HardBudget, LinearTradeoff, PaperReward, RewardError, make_reward

__all__ = [
    "ENV_IDS",
    "REWARDS",
    "Deadline",
    "HardBudget",
    "LinearTradeoff",
    "MarkovLoad",
    "PaperReward",
    "RewardError",
    "make_reward",
]

ENV_IDS = {
    "tnn/Throttle-v0": "envs.throttle:ThrottleEnv",
    "tnn/ThrottleDiscrete-v0": "envs.throttle:ThrottleDiscreteEnv",
}

# No max_episode_steps: the episode length is an argument (episode_length, or the whole split when
# sequential) and the env truncates itself; a registered TimeLimit would cut longer episodes short.
for _id, _entry in ENV_IDS.items():
    if _id not in registry:  # importing twice (e.g. reloads) must not warn
        register(id=_id, entry_point=_entry)
