"""Classic RL on Gymnasium: the chapter's self-driving car and policy-gradient agents.

- :mod:`rlalign.control.driving_env` -- ``rlalign/Driving-v0`` / ``DrivingContinuous-v0``;
- :mod:`rlalign.control.baselines` -- random, constant-speed and rule-based drivers;
- :mod:`rlalign.control.ppo` / :mod:`rlalign.control.reinforce` -- agents for any Gymnasium env,
  computing every optimised number with :mod:`rlalign.rl`;
- :mod:`rlalign.control.policy_io` -- policies as safetensors + JSON;
- :mod:`rlalign.control.highway` -- highway-env's ``highway-fast-v0`` with the chapter's terms.

This package's ``__init__`` imports nothing heavy (torch is imported by the trainer modules).
"""

from rlalign.control.registration import ENV_IDS, register_envs

__all__ = ["ENV_IDS", "register_envs"]
