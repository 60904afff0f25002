"""Training: the one shared loop and the stages that plug into it.

- :mod:`rlalign.train.loop` -- :class:`Trainer` (AdamW, warmup + cosine, accumulation,
  clipping, bf16 autocast, evaluation, metrics, atomic checkpoints, exact resume);
- :mod:`rlalign.train.pretrain` -- the pretraining stage (``rlalign pretrain``).

Heavy modules (torch) are imported by the submodules, not here.
"""
