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
# # 3. Next-token prediction
#
# The chapter rlalign grew from: *LLMs are essentially next-token predictors.* Given the
# tokens so far, a language model gives a probability to every token of its vocabulary,
#
# $$P(t_i \mid t_1, t_2, \ldots, t_{i-1}),$$
#
# and pre-training on a large corpus is what makes that distribution put its mass on the
# right continuation. Seen through RL, the same distribution is the **policy**: the state is
# the text so far, the action is the next token.
#
# The chapter's example is *"president of the USA is"*. rlalign's built-in world has an invented
# country for it, Valdoria, so that what the model knows can be checked exactly. This notebook
# pre-trains a tiny model (about a million parameters) on the world's corpus and looks at
# $P(t_i \mid \text{"The president of Valdoria is"})$ before and after training.
#
# At its normal settings it pre-trains for 500 steps: a few minutes on a laptop CPU.

# %% tags=["parameters"]
import os
from pathlib import Path

# The test suite sets RLALIGN_TUTORIAL_QUICK=1 to run every notebook on tiny settings.
QUICK = os.environ.get("RLALIGN_TUTORIAL_QUICK") == "1"
OUT = Path(os.environ.get("RLALIGN_TUTORIAL_OUT", "runs/tutorials")) / "03_next_token_prediction"
PRETRAIN_STEPS = 10 if QUICK else 500
VOCAB_SIZE = 512 if QUICK else 1024
PROMPT = "The president of Valdoria is"

# %%
import json
import shlex
import warnings

# Without ipywidgets, tqdm warns that it cannot draw notebook progress bars; we use none.
warnings.filterwarnings("ignore", message="IProgress not found")

import matplotlib.pyplot as plt
import torch

from rlalign.cli import main as rlalign_main
from rlalign.lm.inspect import format_table, next_token_distribution
from rlalign.lm.loading import load_model_and_tokenizer
from rlalign.lm.models import count_parameters, create_model
from rlalign.lm.tokenizer import train_tokenizer
from rlalign.metrics import read_metrics

torch.set_num_threads(1)  # a model this small trains fastest on one thread


def rlalign_cli(command: str) -> None:
    """Run an `rlalign` command line in this kernel, exactly as it would run in a shell."""
    status = rlalign_main(shlex.split(command))
    if status != 0:
        raise RuntimeError(f"`rlalign {command}` exited with status {status}")


# %% [markdown]
# ## 1. The corpus: a tiny world with facts that can be checked
#
# `rlalign world export` writes the built-in world as JSONL files (the seed 0 world here).
# The pre-training corpus states facts about invented countries in varied sentences, in
# documents of a few random facts each. `corpus_repeats=30` writes every fact 30 times over:
# a model this small, trained on few documents, otherwise memorises the documents rather
# than learning the facts in them (`rlalign demo` keeps the default 6, because its SFT data
# repeats the facts as questions and answers). `--force` lets a second run of this notebook
# write over the first one's files.

# %%
rlalign_cli(f"world export {OUT / 'world'} --force corpus_repeats=30")
corpus = [json.loads(line)["text"] for line in (OUT / "world" / "corpus.jsonl").open()]
sentences = [s for doc in corpus for s in doc.splitlines()]
print(f"{len(corpus)} documents, {len(sentences)} sentences, e.g.")
for s in sentences[:6]:
    print("   ", s)
print("\nwhat the corpus says about Valdoria's president:")
print("   ", sorted({s for s in sentences if "president of Valdoria" in s}))

# %% [markdown]
# ## 2. A tokenizer and an untrained model
#
# A byte-level BPE tokenizer is trained on the corpus (`rlalign.lm.tokenizer.train_tokenizer`,
# Hugging Face `tokenizers` underneath), and `rlalign.lm.models.create_model` builds the `tiny`
# preset: a Llama-style causal LM (RMSNorm, RoPE, SwiGLU) with random weights. Both are saved
# as an ordinary Hugging Face model directory.

# %%
tokenizer = train_tokenizer(corpus, vocab_size=VOCAB_SIZE)
model = create_model(
    "tiny",
    len(tokenizer),
    max_position_embeddings=256,
    seed=0,
    bos_token_id=tokenizer.bos_token_id,
    eos_token_id=tokenizer.eos_token_id,
    pad_token_id=tokenizer.pad_token_id,
)
model.save_pretrained(OUT / "untrained")
tokenizer.save_pretrained(OUT / "untrained")
print(f"{len(tokenizer)} tokens in the vocabulary, {count_parameters(model):,} parameters")
print("the prompt as tokens:", tokenizer.tokenize(PROMPT))

# %% [markdown]
# Before training, the policy knows nothing: its next-token distribution is close to uniform
# over the whole vocabulary. `rlalign.lm.inspect.next_token_distribution` returns the top
# tokens with their probabilities: the softmax of the model's last logits, which is what
# `rlalign next-token` prints.

# %%
before = next_token_distribution(model, tokenizer, PROMPT, top_k=10)
print(format_table(PROMPT, before))

# %% [markdown]
# ## 3. Pre-training: learn to predict the next token
#
# `rlalign pretrain` minimises the cross-entropy of every next token of the corpus,
# $-\log P(t_i \mid t_{<i})$, on packed blocks of 128 tokens, with the shared training loop
# (AdamW, warmup and cosine decay, checkpoints). `model=DIR` continues from our untrained
# model and its tokenizer.

# %%
rlalign_cli(
    f"pretrain model={OUT / 'untrained'} data={OUT / 'world' / 'corpus.jsonl'} "
    f"output_dir={OUT / 'pretrain'} max_steps={PRETRAIN_STEPS} block_size=128 "
    f"per_device_train_batch_size=16 learning_rate=1e-3 warmup_steps={min(30, PRETRAIN_STEPS // 5)} "
    f"eval_steps={max(PRETRAIN_STEPS // 10, 1)} logging_steps={max(PRETRAIN_STEPS // 50, 1)} "
    f"save_steps={PRETRAIN_STEPS} seed=0 overwrite_output_dir=true disable_tqdm=true"
)

# %%
rows = read_metrics(OUT / "pretrain")
plt.figure(figsize=(6, 3.5))
plt.plot(
    [r["step"] for r in rows if "loss" in r],
    [r["loss"] for r in rows if "loss" in r],
    label="training loss",
)
held_out = [(r["step"], r["eval_loss"]) for r in rows if "eval_loss" in r]
plt.plot(*zip(*held_out, strict=True), "o-", label="held-out loss")
plt.xlabel("optimizer step")
plt.ylabel("cross-entropy (nats per token)")
plt.title("Pre-training the tiny model on the world's corpus")
plt.legend()
plt.show()

# %% [markdown]
# ## 4. The policy after pre-training
#
# The same question to the trained model, first from Python, then with the command line:

# %%
trained, tokenizer = load_model_and_tokenizer(OUT / "pretrain" / "final")
after = next_token_distribution(trained, tokenizer, PROMPT, top_k=10)
print(format_table(PROMPT, after))

# %%
rlalign_cli(f'next-token {OUT / "pretrain" / "final"} "The capital of Valdoria is" --top-k 5')

# %% [markdown]
# The probabilities the untrained and the trained model give to the trained model's ten most
# likely next tokens:

# %%
ids = [t.id for t in after]
labels = [repr(t.token) for t in after]
p_after = [t.prob for t in after]
p_before = next_token_distribution(model, tokenizer, PROMPT, top_k=len(tokenizer))
p_before = {t.id: t.prob for t in p_before}
fig, ax = plt.subplots(figsize=(8, 3.8))
x = range(len(ids))
ax.bar(
    [i - 0.2 for i in x], [p_before[i] for i in ids], width=0.4, label="untrained (random weights)"
)
ax.bar([i + 0.2 for i in x], p_after, width=0.4, label=f"after {PRETRAIN_STEPS} pre-training steps")
ax.set_xticks(list(x), labels, rotation=30, fontsize=9)
ax.axhline(1 / len(tokenizer), color="gray", ls=":", label="uniform over the vocabulary")
ax.set_yscale("log")
ax.set_ylabel(r"$P(t_i \mid t_{<i})$ (log scale)")
ax.set_title(f"Next token after {PROMPT!r}")
ax.legend()
fig.tight_layout()
fig.savefig(OUT / "next_token.png", dpi=100)
plt.show()

# %% [markdown]
# Pre-training put the probability mass on the president the corpus names. The model has
# learned *facts*; it has not learned to *answer questions*, to say "I don't know" about a
# country it never saw, or to refuse a harmful request. That is what supervised fine-tuning
# and RL alignment add, in [the next notebook](04_training_flow.py).
