# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 6. The language model takes the wheel
#
# The chapter began with a self-driving car and ended with a language model. This last page
# puts them together: the same car, the same RL core, and now a language model as its onboard
# computer.
#
# | | the MLP car (notebook 2) | the language-model car |
# |---|---|---|
# | **state** $s$ | 46 sensor floats | one sentence built from them: `speed 50, lane 1 of 3, careful accel -0.9. car 46 m ahead, closing 26, impact 6 s. ...` |
# | **action** $a$ | an index of `Discrete(6)` | a word: keep, accelerate, brake, left, right, stop |
# | **policy** $\pi$ | an MLP | a causal LM writing a reply |
# | **learning** | PPO from scratch | imitation of the rule-based driver (SFT), then RL (GRPO) in the same env |
#
# `rlalign demo drive` runs the whole flow -- expert transcripts, a tokenizer, supervised
# fine-tuning, RL in the car's text environment -- and evaluates every driver on the same 200
# seeded episodes. Here we run it on small settings and look at the table and one episode.

# %% tags=["parameters"]
import os
from pathlib import Path

# The test suite sets RLALIGN_TUTORIAL_QUICK=1 to run every notebook on tiny settings.
QUICK = os.environ.get("RLALIGN_TUTORIAL_QUICK") == "1"
OUT = Path(os.environ.get("RLALIGN_TUTORIAL_OUT", "runs/tutorials")) / "06_lm_drives_the_car"
# (the quick run on one thread: the test suite runs it beside other tests)
SIZES = "--quick rl_steps=1 num_threads=1" if QUICK else "sft_steps=800 rl_steps=16"

# %%
import base64
import shlex
import warnings

warnings.filterwarnings("ignore", message="IProgress not found")

import gymnasium as gym
from IPython.display import HTML, Markdown

import rlalign  # registers rlalign/Driving-v0  # noqa: F401
from rlalign.cli import main as rlalign_main
from rlalign.control.driving_text import describe_driving
from rlalign.demo_drive import format_table


def rlalign_cli(command: str) -> None:
    """Run an `rlalign` command line in this kernel, exactly as it would run in a shell."""
    status = rlalign_main(shlex.split(command))
    if status != 0:
        raise RuntimeError(f"`rlalign {command}` exited with status {status}")


OUT.mkdir(parents=True, exist_ok=True)

# %% [markdown]
# ## 1. What the model reads
#
# Each step the observation array becomes one sentence, with the numbers the rule-based
# driver decides on; the model answers with one word.

# %%
env = gym.make("rlalign/Driving-v0")
obs, _ = env.reset(seed=1)
for _ in range(3):
    print(describe_driving(obs, env.unwrapped.cfg))
    obs, *_ = env.step(1)  # accelerate

# %% [markdown]
# ## 2. The whole flow in one command
#
# Transcripts of the rule-based driver (seeds from 100000, never evaluated on) -> a BPE
# tokenizer -> SFT of a `tiny` model from scratch (behaviour cloning) -> DAgger rounds (the
# model drives, the rule-based driver labels every state it reaches, SFT goes on over all the
# transcripts) -> GRPO in the text env, whole episodes, each turn's prompt the current
# observation (`history=last`) -> every driver on seeds 0..199.

# %%
rlalign_cli(f"demo drive {SIZES} --out {OUT / 'drive'}")

# %%
import json

report = json.loads((OUT / "drive" / "report.json").read_text())
Markdown(format_table(report["drivers"]))

# %% [markdown]
# The language models are scored by `rlalign control eval`, the command that scores the MLP
# and the baselines: the same seeded episodes, the same columns, plus the replies that named
# no action (the car then keeps its speed).

# %%
rlalign_cli(f"control eval {OUT / 'drive' / 'rl'} --episodes 4")

# %% [markdown]
# ## 3. One episode, with the words
#
# `rlalign control render` writes the model's reply under each frame, beside the action it
# became; `--compare rule_based` plays the teacher beneath it on the same seed.

# %%
gif = OUT / "lm_vs_rule_based.gif"
rlalign_cli(f"control render {OUT / 'drive' / 'rl'} --seed 1 --compare rule_based --out {gif}")
HTML(
    f'<img src="data:image/gif;base64,{base64.b64encode(gif.read_bytes()).decode()}" width="100%">'
)

# %% [markdown]
# **The end of the chapter:** the same car, the same RL core (`rlalign.rl` computes the
# returns, the advantages and the clipped loss for the MLP and for the language model), and a
# language model as its onboard computer.
