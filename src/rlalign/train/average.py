"""The weight average of models fine-tuned from one start (a "model soup").

Several RL runs from the same SFT model, each with its own seed, agree on what the reward
teaches and disagree on the rest: each run's updates also move what no reward watches (how the
model copies a number from the question, say) a little, in a direction of its own. Averaging
their weights keeps the shared part and shrinks each run's own part, as WARP (Ramé et al.,
2024) averages RL policies and model soups (Wortsman et al., 2022) average fine-tuned models.
The average is meaningful only for models that share a start, so that their weights lie in one
basin; models trained from different initialisations must not be averaged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from rlalign.checkpoint import save_model_weights
from rlalign.errors import UserError
from rlalign.io import atomic_directory
from rlalign.lm.models import load_model
from rlalign.lm.tokenizer import load_tokenizer
from rlalign.train.model_card import write_model_card


def average_weights(state_dicts: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """theta_bar = (1/K) sum_k theta_k, tensor by tensor, over K models of one architecture.

    Floating-point tensors are summed in float64 and cast back to their own dtype, so the
    average of K copies of one model is that model, bit for bit; any other tensor (an integer
    buffer) must be equal in every model and is kept.

    Raises:
        ValueError: no models, or models whose tensor names, shapes or dtypes differ.
    """

    if not state_dicts:
        raise ValueError("nothing to average: no models")
    first = state_dicts[0]
    for k, other in enumerate(state_dicts[1:], start=2):
        if other.keys() != first.keys():
            missing = sorted(first.keys() ^ other.keys())[:3]
            raise ValueError(f"model {k} has other tensors than model 1 (e.g. {missing})")
    averaged: dict[str, torch.Tensor] = {}
    for name, tensor in first.items():
        members = [sd[name] for sd in state_dicts]
        for k, t in enumerate(members[1:], start=2):
            if t.shape != tensor.shape or t.dtype != tensor.dtype:
                raise ValueError(
                    f"{name}: model {k} holds {t.dtype} {tuple(t.shape)}, "
                    f"model 1 {tensor.dtype} {tuple(tensor.shape)}"
                )
        if tensor.is_floating_point():
            total = torch.stack([t.to(torch.float64) for t in members]).sum(dim=0)
            averaged[name] = (total / len(members)).to(tensor.dtype)
        else:
            if any(not torch.equal(t, tensor) for t in members[1:]):
                raise ValueError(f"{name}: a non-floating tensor differs between the models")
            averaged[name] = tensor.clone()
    return averaged


def average_models(model_dirs: Sequence[str | Path], output_dir: str | Path) -> Path:
    """Write the weight average of ``model_dirs`` (Hugging Face causal-LM directories, e.g.
    runs' ``final/``) to ``output_dir`` atomically: safetensors weights, config, tokenizer and
    a model card naming its members. Returns ``output_dir``.

    Raises:
        UserError: fewer than two directories, one that cannot be loaded, or members that
            differ in architecture or vocabulary.
    """

    dirs = [Path(d) for d in model_dirs]
    if len(dirs) < 2:
        raise UserError(f"averaging needs at least two models; got {len(dirs)}")
    output = Path(output_dir)
    if output.resolve() in {d.resolve() for d in dirs}:
        raise UserError(f"{output} is one of the models to average; write the average elsewhere")
    models = [load_model(d) for d in dirs]
    tokenizer = load_tokenizer(dirs[0])
    vocab = tokenizer.get_vocab()
    for d in dirs[1:]:
        if load_tokenizer(d).get_vocab() != vocab:
            raise UserError(f"{d} has another vocabulary than {dirs[0]}; only models fine-tuned "
                            "from one start can be averaged")  # fmt: skip
    shape = models[0].config.to_diff_dict()
    for d, model in zip(dirs[1:], models[1:], strict=True):
        if model.config.to_diff_dict() != shape:
            raise UserError(f"{d} has another architecture (config.json) than {dirs[0]}")
    try:
        weights = average_weights([m.state_dict() for m in models])
    except ValueError as exc:
        raise UserError(f"cannot average {', '.join(map(str, dirs))}: {exc}") from exc
    base = models[0]
    base.load_state_dict(weights)
    with atomic_directory(output) as tmp:
        save_model_weights(base, tmp)
        tokenizer.save_pretrained(tmp)
        write_model_card(tmp, _card(dirs))
    return output


def _card(dirs: Sequence[Path]) -> str:
    members = "\n".join(f"- `{d}`" for d in dirs)
    return (
        "# The weight average of fine-tuned models\n\n"
        f"Each weight is the mean of the {len(dirs)} models below (fine-tuned from one start; "
        "written by `rlalign average`):\n\n"
        f"{members}\n"
    )
