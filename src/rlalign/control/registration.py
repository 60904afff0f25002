"""Register rlalign's environments with Gymnasium (cheap: entry points are strings).

Called when ``rlalign`` is imported, so ``gymnasium.make("rlalign/Driving-v0")`` works after
``import rlalign``.
"""

from __future__ import annotations

# The rule-based driver's mean return is about 6.2 on the default world (it arrives after ~48 s
# of simulated time and stops when it must); "solved" means driving better than it.
DRIVING_REWARD_THRESHOLD = 6.3

ENV_IDS = ("rlalign/Driving-v0", "rlalign/DrivingContinuous-v0", "rlalign/HighwayChapter-v0")


def register_envs() -> None:
    """Register the driving envs (idempotent) and the highway-env wrapper."""
    import gymnasium

    specs = {
        "rlalign/Driving-v0": dict(
            entry_point="rlalign.control.driving_env:DrivingEnv",
            reward_threshold=DRIVING_REWARD_THRESHOLD,
        ),
        "rlalign/DrivingContinuous-v0": dict(
            entry_point="rlalign.control.driving_env:make_driving_continuous",
            reward_threshold=DRIVING_REWARD_THRESHOLD,
        ),
        # Needs the optional extra: pip install rlalign[highway].
        "rlalign/HighwayChapter-v0": dict(
            entry_point="rlalign.control.highway:make_highway_chapter"
        ),
        # The old id, accepted (with a warning) until the next release.
        "rlalign/HighwaySeed-v0": dict(entry_point="rlalign.control.highway:make_highway_seed"),
    }
    for env_id, kwargs in specs.items():
        if env_id not in gymnasium.registry:
            gymnasium.register(id=env_id, **kwargs)
