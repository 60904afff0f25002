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
# # 5. Bring your own model, reward and data
#
# The built-in world is a teaching device. Your own work brings three things of its own:
#
# 1. **a model**: any local Hugging Face causal LM directory (GPT-2, Llama, Qwen2, Mistral,
#    ...) with its tokenizer;
# 2. **data**: rows in the ecosystem's formats (`prompt`/`completion` or `messages` for SFT;
#    `prompt` plus any extra fields for RL), in memory (a list of dicts, a `datasets.Dataset`)
#    or in a file (JSONL, JSON, Parquet, CSV, a `save_to_disk` directory);
# 3. **a reward**: a Python function `fn(prompts, completions, **fields) -> list[float]`.
#
# This notebook builds all three from nothing: a tiny random **Qwen2** model made from a
# `transformers` config (nothing is downloaded), a small task ("what comes after 41?") whose
# SFT data is deliberately noisy, and a reward function that checks the answer. It then trains
# them with rlalign's Python API (`rlalign.sft`, `rlalign.align`), as you would a real model,
# and shows the same run as a command line. It ends with the two ways to scale the same run
# up: **LoRA** adapters and **torchrun**.
#
# At its normal settings it takes about a minute on a laptop CPU.

# %% tags=["parameters"]
import os
from pathlib import Path

# The test suite sets RLALIGN_TUTORIAL_QUICK=1 to run every notebook on tiny settings.
QUICK = os.environ.get("RLALIGN_TUTORIAL_QUICK") == "1"
OUT = Path(os.environ.get("RLALIGN_TUTORIAL_OUT", "runs/tutorials")) / "05_bring_your_own"
SFT_STEPS = 5 if QUICK else 500
RL_STEPS = 2 if QUICK else 60
NUMBERS = range(30) if QUICK else range(100)  # the task's questions: "What comes after N?"

# %%
import json
import random
import shlex
import warnings

# Without ipywidgets, tqdm warns that it cannot draw notebook progress bars; we use none.
warnings.filterwarnings("ignore", message="IProgress not found")

import matplotlib.pyplot as plt
import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

import rlalign
from rlalign.cli import main as rlalign_main
from rlalign.lm.generate import generate_text
from rlalign.lm.loading import load_model_and_tokenizer
from rlalign.metrics import read_metrics

transformers.utils.logging.disable_progress_bar()  # no bars for saving and loading tiny models
torch.set_num_threads(1)  # models this small train fastest on one thread


def rlalign_cli(command: str) -> None:
    """Run an `rlalign` command line in this kernel, exactly as it would run in a shell."""
    status = rlalign_main(shlex.split(command))
    if status != 0:
        raise RuntimeError(f"`rlalign {command}` exited with status {status}")


OUT.mkdir(parents=True, exist_ok=True)

# %% [markdown]
# ## 1. Your data
#
# The task: answer "What comes after N?" with N + 1. The SFT rows use the
# `prompt`/`completion` format; like most real SFT data they are imperfect: 30% of their
# answers are off by one. The RL prompts carry an extra field, `answer`, which reaches the
# reward function as a keyword argument. The rows stay in memory; we also write them as JSONL
# files, the form the command line reads.

# %%
rng = random.Random(0)


def question(n: int) -> str:
    return f"What comes after {n}?"


sft_rows = []
for _ in range(8 * len(NUMBERS)):
    n = rng.choice(NUMBERS)
    answer = n + 1 if rng.random() < 0.7 else n + rng.choice([0, 2])  # 30% wrong
    sft_rows.append({"prompt": question(n), "completion": str(answer)})
prompt_rows = [{"prompt": question(n), "answer": str(n + 1)} for n in NUMBERS]
for name, rows in (("my_sft.jsonl", sft_rows), ("my_prompts.jsonl", prompt_rows)):
    (OUT / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
print(sft_rows[:3])
print(prompt_rows[:3])

# %% [markdown]
# ## 2. Your reward function
#
# A reward function receives the prompts, the sampled completions and every extra field of
# the prompt rows (as lists), and returns one float per completion. A Python callable scores
# in this process; rlalign stops the run with a clear message if it raises or returns NaN or
# the wrong number of scores. (From the command line, the same function lives in a file,
# `reward_funcs=my_reward.py:correct`, and runs in a worker process with a time limit,
# `reward_timeout`.)


# %%
def correct(prompts, completions, answer, **fields):
    """1 for the right number, 0 for anything else."""
    return [1.0 if c.strip() == a else 0.0 for c, a in zip(completions, answer, strict=True)]


print(correct(["What comes after 4?"] * 2, ["5", "6"], answer=["5", "5"]))

# %% [markdown]
# ## 3. Your model
#
# Any local directory that `AutoModelForCausalLM` and `AutoTokenizer` load will do. Here we
# make one: a byte-level BPE tokenizer trained with Hugging Face `tokenizers` on our data, with
# a single GPT-2-style special token and no chat template, and a Qwen2 model with random
# weights built from a `transformers` config, both saved with `save_pretrained`.

# %%
bpe = Tokenizer(models.BPE())
bpe.pre_tokenizer = pre_tokenizers.Sequence(  # digits one by one, as Llama and Qwen tokenizers do
    [
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False),
    ]
)
bpe.decoder = decoders.ByteLevel()
texts = [json.loads(line)["prompt"] for line in (OUT / "my_prompts.jsonl").open()]
texts += [str(n) for n in range(NUMBERS.stop + 2)] + ["<|user|>\n", "<|assistant|>\n"]
bpe.train_from_iterator(
    texts,
    trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    ),
)
tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>")

config = Qwen2Config(
    vocab_size=len(tokenizer),
    hidden_size=128,
    intermediate_size=256,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=128,
    tie_word_embeddings=True,
    eos_token_id=tokenizer.eos_token_id,
)
torch.manual_seed(0)
model = Qwen2ForCausalLM(config)
model.save_pretrained(OUT / "my_model")
tokenizer.save_pretrained(OUT / "my_model")
print(
    f"Qwen2 with {sum(p.numel() for p in model.parameters()):,} parameters, vocabulary {len(tokenizer)}"
)

# %% [markdown]
# This tokenizer has no pad token and no chat template. rlalign fills both in when it loads
# it (pad = eos; a plain `<|role|>` chat layout whose assistant turns end with eos) and says
# so with a warning, rather than failing:

# %%
_, tok = load_model_and_tokenizer(OUT / "my_model")
print(
    repr(
        tok.apply_chat_template(
            [{"role": "user", "content": question(4)}, {"role": "assistant", "content": "5"}],
            tokenize=False,
        )
    )
)

# %% [markdown]
# ## 4. Supervised fine-tuning, from Python
#
# `rlalign.sft` takes the model and tokenizer objects, the rows, and the config's keys (the
# names Hugging Face users know; `rlalign sft --help` lists them all). An unknown key fails at
# once with a did-you-mean. It returns where the run is and what it logged; the run directory
# keeps the model and rows it was given (`inputs/`), so it can be resumed and repeated.

# %%
sft_keys = dict(
    max_steps=SFT_STEPS,
    learning_rate=3e-3,
    warmup_steps=10,
    per_device_train_batch_size=32,
    max_length=32,
    eval_steps=SFT_STEPS,
    save_steps=SFT_STEPS,
    logging_steps=10,
    seed=0,
)
sft = rlalign.sft(
    model=model,
    tokenizer=tokenizer,
    train_dataset=sft_rows,
    output_dir=str(OUT / "sft"),
    overwrite_output_dir=True,
    disable_tqdm=True,
    **sft_keys,
)
print(sft.final_dir, f"{sft.step} steps, held-out loss {sft.eval_metrics['eval_loss']:.3f}")

# %% [markdown]
# The same run from the command line reads a YAML file (or `key=value` arguments, which win
# over it) and the JSONL file; section 6 runs it so.

# %%
(OUT / "sft.yaml").write_text(
    "".join(
        f"{k}: {v}\n"
        for k, v in {"model": OUT / "my_model", "data": OUT / "my_sft.jsonl", **sft_keys}.items()
    )
)
print((OUT / "sft.yaml").read_text())


# %% [markdown]
# How often is a sampled answer right? We sample four answers per question at temperature 1
# and score them with our own reward function.


# %%
def sampled_accuracy(model_dir: Path) -> float:
    model, tok = load_model_and_tokenizer(model_dir)
    prompts = [question(n) for n in NUMBERS]
    samples = generate_text(
        model,
        tok,
        prompts,
        chat=True,
        temperature=1.0,
        max_new_tokens=6,
        num_samples=4,
        generator=torch.Generator().manual_seed(0),
    )
    answers = [str(n + 1) for n in NUMBERS for _ in range(4)]
    return sum(correct(prompts, [s.completion for s in samples], answer=answers)) / len(samples)


accuracy = {
    "untrained": sampled_accuracy(OUT / "my_model"),
    "SFT": sampled_accuracy(OUT / "sft" / "final"),
}
print(accuracy)

# %% [markdown]
# SFT imitates its data, errors included: since 30% of the SFT answers are wrong, no more than
# about 70% of its sampled answers can be right.
#
# ## 5. RL with your reward
#
# `rlalign.align` (the command line's `rlalign rl`) takes the reward function itself. GRPO
# samples 8 answers per question, and each answer's advantage is its reward minus its group's
# mean. That pushes up the right answers and down the wrong ones.

# %%
rl_keys = dict(
    algorithm="grpo",
    num_generations=8,
    prompts_per_iteration=16,
    per_device_train_batch_size=128,
    max_completion_length=6,
    learning_rate=1e-3,
    beta=0.01,
    max_steps=RL_STEPS,
    save_steps=RL_STEPS,
    seed=0,
    overwrite_output_dir=True,
    disable_tqdm=True,
)
rl = rlalign.align(
    model=sft.final_dir,
    train_dataset=prompt_rows,
    reward_funcs=[correct],
    output_dir=str(OUT / "rl"),
    **rl_keys,
)
print(f"last mean reward {rl.metrics['reward_mean']:.2f}")
accuracy["SFT + RL"] = sampled_accuracy(rl.final_dir)
print(accuracy)

# %%
rows = [r for r in read_metrics(OUT / "rl") if "reward_mean" in r]
fig, axes = plt.subplots(1, 2, figsize=(11, 3.5))
axes[0].plot([r["step"] for r in rows], [r["reward_mean"] for r in rows])
axes[0].set_xlabel("RL step")
axes[0].set_ylabel("mean reward of the sampled answers")
axes[0].set_title("GRPO with correct()")
bars = axes[1].bar(list(accuracy), list(accuracy.values()), color=["#bbbbbb", "#8da0cb", "#fc8d62"])
axes[1].bar_label(bars, [f"{v:.0%}" for v in accuracy.values()])
axes[1].set_ylim(0, 1.1)
axes[1].set_title("share of right answers (4 samples per question, T = 1)")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 6. Scaling the same run: LoRA and torchrun
#
# **LoRA.** A `lora` section (`lora.*` on the command line) trains low-rank adapters of the
# named linear layers through `peft` instead of every weight. In RL the reference model is the
# policy with its adapters switched off, so no second copy of the weights is held. The stage
# prints the trainable count as peft reports it: `r * (in + out)` per adapted layer.

# %%
lora = {
    "r": 8,
    "alpha": 16,
    "target_modules": ["q_proj", "v_proj", "o_proj", "down_proj", "lm_head"],
}
rl_lora = rlalign.align(
    model=sft.final_dir,
    train_dataset=prompt_rows,
    reward_funcs=[correct],
    output_dir=str(OUT / "rl_lora"),
    **{**rl_keys, "learning_rate": 3e-3},
    lora=lora,
)
accuracy["SFT + RL (LoRA)"] = sampled_accuracy(rl_lora.final_dir)
print(accuracy)

# %% [markdown]
# **Several processes.** `torchrun` starts one process per device (here: two CPU processes,
# gloo); `distributed: ddp` replicates the model and `distributed: fsdp` shards parameters,
# gradients and optimizer state (FSDP2). `global_batch_size` is the batch of one optimizer
# step over all processes, so the run gives the same weights at any scale. We check it: a few
# SFT steps in one process and in two, then the largest difference between the two models.

# %%
import subprocess
import sys

from safetensors.torch import load_file

steps = 2 if QUICK else 20
scale = f"max_steps={steps} save_steps={steps} eval_steps={steps} global_batch_size=32 disable_tqdm=true overwrite_output_dir=true"
rlalign_cli(f"sft --config {OUT / 'sft.yaml'} output_dir={OUT / 'sft_1proc'} {scale}")
launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
command = f"-m rlalign sft --config {OUT / 'sft.yaml'} output_dir={OUT / 'sft_2proc'} {scale} per_device_train_batch_size=16 distributed=ddp"
print("torchrun --nproc_per_node=2", command)
for _attempt in range(2):  # (a gloo rank rarely aborts on a heavily loaded machine: one retry)
    done = subprocess.run(
        launch + shlex.split(command + " overwrite_output_dir=true"),
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
    )
    if done.returncode == 0 or "terminate called without an active exception" not in done.stderr:
        break
assert done.returncode == 0, done.stderr[:3000]
one = load_file(str(OUT / "sft_1proc" / "final" / "model.safetensors"))
two = load_file(str(OUT / "sft_2proc" / "final" / "model.safetensors"))
print(
    f"largest weight difference, 1 vs 2 processes: {max(float((one[k] - two[k]).abs().max()) for k in one):.1e}"
)

# %% [markdown]
# Several machines, and a Slurm batch script, are in the documentation's multi-node guide.

# %%
fig, ax = plt.subplots(figsize=(7, 3.5))
bars = ax.bar(
    list(accuracy), list(accuracy.values()), color=["#bbbbbb", "#8da0cb", "#fc8d62", "#66c2a5"]
)
ax.bar_label(bars, [f"{v:.0%}" for v in accuracy.values()])
ax.set_ylim(0, 1.1)
ax.set_title("share of right answers: full RL and RL with LoRA adapters")
fig.tight_layout()
plt.show()
