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

from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import torch

from rlalign.checkpoint import save_model_weights
from rlalign.errors import UserError
from rlalign.io import atomic_directory
from rlalign.lm.models import load_model
from rlalign.lm.tokenizer import load_tokenizer
from rlalign.train.model_card import write_model_card


def average_weights(state_dicts: Iterable[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """theta_bar = (1/K) sum_k theta_k, tensor by tensor, over K models of one architecture.

    The models are read one at a time into a float64 running sum (so a generator that loads
    each in turn holds one model and the sum in memory, not K models); each floating-point
    tensor is cast back to its own dtype at the end, so the average of K copies of one model is
    that model, bit for bit. Any other tensor (an integer buffer) must be equal in every model
    and is kept.

    Raises:
        ValueError: no models, or models whose tensor names, shapes or dtypes differ.
    """

    first: Mapping[str, torch.Tensor] | None = None
    total: dict[str, torch.Tensor] = {}
    count = 0
    for count, sd in enumerate(state_dicts, start=1):
        if first is None:
            first = dict(sd)
            # copy=True: a float64 tensor would otherwise be model 1's own, summed in place
            # (twice over for tied weights)
            total = {
                n: t.to(torch.float64, copy=True) for n, t in first.items() if t.is_floating_point()
            }
            continue
        if sd.keys() != first.keys():
            missing = sorted(first.keys() ^ sd.keys())[:3]
            raise ValueError(f"model {count} has other tensors than model 1 (e.g. {missing})")
        for name, tensor in first.items():
            t = sd[name]
            if t.shape != tensor.shape or t.dtype != tensor.dtype:
                raise ValueError(
                    f"{name}: model {count} holds {t.dtype} {tuple(t.shape)}, "
                    f"model 1 {tensor.dtype} {tuple(tensor.shape)}"
                )
            if name in total:
                total[name] += t.to(torch.float64)
            elif not torch.equal(t, tensor):
                raise ValueError(f"{name}: a non-floating tensor differs between the models")
    if first is None:
        raise ValueError("nothing to average: no models")
    return {
        name: (total[name] / count).to(t.dtype) if name in total else t for name, t in first.items()
    }


def average_models(model_dirs: Sequence[str | Path], output_dir: str | Path) -> Path:
    """Write the weight average of ``model_dirs`` (Hugging Face causal-LM directories, e.g.
    runs' ``final/`` or checkpoints) to ``output_dir`` atomically: safetensors weights, config,
    tokenizer and a model card naming its members. The models are loaded one at a time.
    Returns ``output_dir``.

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
    if output.is_dir() and any(output.iterdir()) and not _a_model_directory(output):
        # the directory is replaced whole: a run directory or a folder of runs would be lost
        raise UserError(
            f"{output} exists and is not a model directory (it holds folders, or no "
            "config.json); write the average to a new directory (or remove this one first)"
        )
    if output.exists() and not output.is_dir():
        raise UserError(f"{output} is a file; write the average to a new directory")
    base = load_model(dirs[0])
    tokenizer = load_tokenizer(dirs[0])
    vocab, shape = tokenizer.get_vocab(), base.config.to_diff_dict()

    def members() -> Iterator[Mapping[str, torch.Tensor]]:
        yield base.state_dict()
        for d in dirs[1:]:
            if load_tokenizer(d).get_vocab() != vocab:
                raise UserError(f"{d} has another vocabulary than {dirs[0]}; only models "
                                "fine-tuned from one start can be averaged")  # fmt: skip
            model = load_model(d)
            if model.config.to_diff_dict() != shape:
                raise UserError(f"{d} has another architecture (config.json) than {dirs[0]}")
            yield model.state_dict()

    try:
        weights = average_weights(members())
    except ValueError as exc:
        raise UserError(f"cannot average {', '.join(map(str, dirs))}: {exc}") from exc
    base.load_state_dict(weights)
    with atomic_directory(output) as tmp:
        save_model_weights(base, tmp)
        tokenizer.save_pretrained(tmp)
        write_model_card(tmp, _card(dirs))
    return output


def _a_model_directory(path: Path) -> bool:
    """Whether ``path`` is a model directory (files only, a ``config.json`` among them, e.g. a
    run's ``final/`` or an earlier average), which the average may replace as
    ``save_pretrained`` would; a run directory or a folder of runs holds folders."""
    entries = list(path.iterdir())
    return not any(p.is_dir() for p in entries) and (path / "config.json").is_file()


def _card(dirs: Sequence[Path]) -> str:
    members = "\n".join(f"- `{d}`" for d in dirs)
    return (
        "# The weight average of fine-tuned models\n\n"
        f"Each weight is the mean of the {len(dirs)} models below (fine-tuned from one start; "
        "written by `rlalign average`):\n\n"
        f"{members}\n"
    )
