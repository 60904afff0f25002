"""Tokenizers: train a byte-level BPE, load one, and make foreign ones usable for chat and batching.

A tokenizer trained here is a ``tokenizers`` byte-level BPE (every byte string is encodable, so
there is no unknown token) wrapped as a :class:`transformers.PreTrainedTokenizerFast`:

- special tokens ``<|bos|>``, ``<|eos|>``, ``<|pad|>`` and the chat role markers ``<|system|>``,
  ``<|user|>``, ``<|assistant|>`` (atomic, never split by BPE);
- ``tokenizer(text)`` prepends ``<|bos|>`` (Llama convention); a pretraining corpus appends
  ``<|eos|>`` at document ends itself;
- a Jinja chat template (:data:`CHAT_TEMPLATE`)::

      <|bos|><|user|>
      What is 2+2?
      <|assistant|>
      4<|eos|>

  ``add_generation_prompt=True`` ends the text with ``<|assistant|>\\n`` so that the model writes
  the answer, and the answer ends with ``<|eos|>``: sampling stops there.

It saves with ``save_pretrained`` and loads back with ``AutoTokenizer.from_pretrained``.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from rlalign.errors import UserError

if TYPE_CHECKING:  # heavy imports stay lazy: ``rlalign --help`` must not import transformers
    from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

BOS = "<|bos|>"
EOS = "<|eos|>"
PAD = "<|pad|>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>")
SPECIAL_TOKENS = (BOS, EOS, PAD, *ROLE_TOKENS)

# One turn per message: a role marker, a newline, the content. Assistant turns end with the eos
# token, which is what the model learns to emit (SFT) and where the sampler stops. Whitespace
# control (`-`) keeps the rendered text exactly as documented above.
CHAT_TEMPLATE = (
    "{{- bos_token -}}"
    "{%- for message in messages -%}"
    "{%- if message['role'] not in ['system', 'user', 'assistant'] -%}"
    "{{- raise_exception('unknown chat role: ' + message['role']) -}}"
    "{%- endif -%}"
    "{{- '<|' + message['role'] + '|>\n' + message['content'] -}}"
    "{%- if message['role'] == 'assistant' -%}{{- eos_token -}}{%- endif -%}"
    "{{- '\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|assistant|>\n' -}}{%- endif -%}"
)

# For foreign tokenizers without a template: the same layout with plain-text role markers (their
# vocabulary has no <|user|> tokens; BPE spells the markers out, which still works).
DEFAULT_FOREIGN_CHAT_TEMPLATE = (
    "{%- if bos_token -%}{{- bos_token -}}{%- endif -%}"
    "{%- for message in messages -%}"
    "{{- '<|' + message['role'] + '|>\n' + message['content'] -}}"
    "{%- if message['role'] == 'assistant' and eos_token -%}{{- eos_token -}}{%- endif -%}"
    "{{- '\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|assistant|>\n' -}}{%- endif -%}"
)


def _batches(texts: Iterable[str], size: int = 1000) -> Iterator[list[str]]:
    """Yield lists of texts, so the Rust trainer gets work in chunks (fast, bounded memory)."""
    batch: list[str] = []
    for text in texts:
        if not isinstance(text, str):
            raise UserError(f"tokenizer training expects strings, got {type(text).__name__}")
        batch.append(text)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def train_tokenizer(
    texts: Iterable[str], vocab_size: int = 4096, *, min_frequency: int = 2
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on ``texts`` and wrap it for ``transformers``.

    Args:
        texts: the corpus, one document per item (any iterable; it is consumed once).
        vocab_size: the target vocabulary size, special tokens and the 256 byte symbols
            included. The result can be smaller when the corpus has too few distinct merges.
        min_frequency: a pair must occur this often to be merged.

    Returns:
        A ``PreTrainedTokenizerFast`` with bos/eos/pad tokens and :data:`CHAT_TEMPLATE`.

    Raises:
        UserError: a vocabulary too small for the byte alphabet, or an empty corpus.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    min_vocab = 256 + len(SPECIAL_TOKENS)
    if vocab_size < min_vocab:
        raise UserError(
            f"vocab_size={vocab_size} is too small: a byte-level BPE needs at least {min_vocab} "
            "(256 bytes + special tokens)"
        )
    if min_frequency < 1:
        raise UserError(f"min_frequency must be >= 1, got {min_frequency}")

    tok = Tokenizer(models.BPE())
    # add_prefix_space=False: "The" at the start of a text and " The" mid-text stay different
    # tokens, as in GPT-2; use_regex splits words/numbers/punctuation before BPE.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),  # ids 0..5, in this order: bos=0, eos=1, pad=2
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes: no unknowns
        show_progress=False,
    )
    seen = 0

    def counted() -> Iterator[list[str]]:
        nonlocal seen
        for batch in _batches(texts):
            seen += sum(1 for t in batch if t)
            yield batch

    tok.train_from_iterator(counted(), trainer=trainer)
    if seen == 0:
        raise UserError("cannot train a tokenizer on an empty corpus (no non-empty texts)")

    bos_id = tok.token_to_id(BOS)
    # Prepend bos to every encoded text (add_special_tokens=True, the default). Chat templates
    # write bos themselves and are encoded with add_special_tokens=False, so it is never doubled.
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
    )
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        additional_special_tokens=list(ROLE_TOKENS),
        padding_side="left",  # generation pads on the left; training code may switch per call
        clean_up_tokenization_spaces=False,  # byte-level decoding is exact; never "fix" spaces
        model_max_length=1_000_000_000,  # the model's context, not the tokenizer's, is the limit
    )
    wrapped.chat_template = CHAT_TEMPLATE
    return wrapped


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    """Load a tokenizer saved with ``save_pretrained`` from a local directory (never the hub).

    Foreign tokenizers without a pad token or chat template get defaults (see
    :func:`ensure_pad_and_template`).

    Raises:
        UserError: the directory does not exist or holds no tokenizer.
    """
    from transformers import AutoTokenizer

    path = Path(path)
    if not path.is_dir():
        raise UserError(f"tokenizer directory not found: {path}")
    if not any((path / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json")):
        raise UserError(
            f"no tokenizer in {path} (expected tokenizer.json / tokenizer_config.json, as "
            "written by save_pretrained)"
        )
    try:
        if _is_generic_fast_tokenizer(path):
            # Ours (and any plain tokenizers-backed one): AutoTokenizer would pick the class of
            # the model config beside it (e.g. Qwen2Tokenizer), which adds its own special
            # tokens and so no longer matches the model's embedding.
            from transformers import PreTrainedTokenizerFast

            tokenizer = PreTrainedTokenizerFast.from_pretrained(str(path), local_files_only=True)
        else:
            tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot load the tokenizer in {path}: {exc}".splitlines()[0]) from exc
    return ensure_pad_and_template(tokenizer)


def _is_generic_fast_tokenizer(path: Path) -> bool:
    """Whether ``path`` holds a plain ``tokenizer.json`` saved as a generic fast tokenizer."""
    import json

    config = path / "tokenizer_config.json"
    if not (path / "tokenizer.json").is_file() or not config.is_file():
        return False
    try:
        name = json.loads(config.read_text(encoding="utf-8")).get("tokenizer_class")
    except (OSError, ValueError):
        return False
    return name in ("PreTrainedTokenizerFast", "TokenizersBackend")


def ensure_pad_and_template(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Give a foreign tokenizer what batching and chat need, without changing its vocabulary.

    - No pad token: reuse eos (the usual choice for decoder-only models; padded positions are
      masked anyway), else unk. Only when neither exists is a new ``<|pad|>`` token added, which
      grows the vocabulary: the model's embeddings must then be resized by the caller.
    - No chat template: :data:`DEFAULT_FOREIGN_CHAT_TEMPLATE`.

    Each default is announced with ``warnings.warn``; the tokenizer is modified in place and
    returned. Padding is set to the left, as generation needs.
    """
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token
            warnings.warn(
                f"tokenizer has no pad token; using eos {tokenizer.eos_token!r} for padding",
                stacklevel=2,
            )
        elif tokenizer.unk_token is not None:
            tokenizer.pad_token = tokenizer.unk_token
            warnings.warn(
                f"tokenizer has no pad or eos token; using unk {tokenizer.unk_token!r} for padding",
                stacklevel=2,
            )
        else:
            tokenizer.add_special_tokens({"pad_token": PAD})
            warnings.warn(
                f"tokenizer has no pad, eos or unk token; added {PAD!r} (resize the model's "
                "embeddings to len(tokenizer))",
                stacklevel=2,
            )
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = DEFAULT_FOREIGN_CHAT_TEMPLATE
        warnings.warn(
            "tokenizer has no chat template; using rlalign's default '<|role|>\\ncontent' layout",
            stacklevel=2,
        )
    tokenizer.padding_side = "left"
    return tokenizer
