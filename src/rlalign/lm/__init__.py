"""The language model as a policy: tokenizer, models, the rollout sampler, log-probs, inspection.

- :mod:`rlalign.lm.tokenizer`: train a byte-level BPE (``train_tokenizer``), ``load_tokenizer``,
  ``ensure_pad_and_template`` for foreign tokenizers.
- :mod:`rlalign.lm.models`: size ``PRESETS``, ``create_model``, ``load_model``,
  ``resolve_model`` (a preset name or a local HF directory).
- :mod:`rlalign.lm.loading`: ``load_model_and_tokenizer`` (a model directory) and
  ``resolve_model_and_tokenizer`` (a directory, or a preset created from scratch).
- :mod:`rlalign.lm.chat`: chat-template rendering with assistant-only labels, ``pad_right``.
- :mod:`rlalign.lm.sampling`: ``sample`` (batched, KV cache, log-probs of the sampled tokens in
  the same pass), on the preallocated cache of :mod:`rlalign.lm.kv_cache`.
- :mod:`rlalign.lm.logprobs`: log-probs of given tokens with one forward pass
  (``sequence_logprobs``; ``completion_forward``, what the RL loss reads).
- :mod:`rlalign.lm.generate`: text in, text out (``generate_text``, ``encode_prompts``).
- :mod:`rlalign.lm.value_head`: ``PolicyWithValueHead`` (PPO's critic on the LM).
- :mod:`rlalign.lm.forward`: calling HF models alike across transformers versions and wrappers.
- :mod:`rlalign.lm.fast_decode`: ``LlamaDecoder`` (the sampler's hand-written prefill and decode
  step for Llama-family models on CPU) and ``unsupported_reason`` (why a model falls back).
- :mod:`rlalign.lm.fast_linear`: ``inference_linears`` (the rollout engine's packed oneDNN
  copy of the weights) and ``training_linears`` (fp32 linear layers on oneDNN, with backward).
- :mod:`rlalign.lm.inspect`: ``next_token_distribution`` (the policy P(t_i | t_<i) itself).

Submodules import ``transformers`` lazily, so importing this package stays cheap.
"""
