"""report_to=wandb and report_to=mlflow: what the trackers stored, read back from their offline
stores (W&B's offline run file, MLflow's local file store), equals metrics.jsonl; each has the
resolved config and the model card; a resumed run continues the same tracker run."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import yaml

from rlalign.train.sft import SFTConfig, run_sft

pytest.importorskip("wandb")  # the dev extra installs both; a user's install may not
pytest.importorskip("mlflow")


def wandb_records(run_dir: Path) -> list:
    """Every record of the run's offline ``run-*.wandb`` file: W&B's LevelDB-style log of
    protobuf records (32 KiB blocks of chunks, each with a 7-byte header), read by hand."""
    from wandb.proto import wandb_internal_pb2 as pb

    records = []
    for path in sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb")):
        data = path.read_bytes()
        assert data[:4] == b":W&B"
        pos, block, pending = 7, 32768, b""
        while pos + 7 <= len(data):
            left = block - pos % block
            if left < 7:  # the rest of a block is padding
                pos += left
                continue
            _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
            chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
            if kind in (0,) and length == 0:
                pos += block - pos % block if pos % block else 0
                continue
            pending = chunk if kind in (1, 2) else pending + chunk
            if kind in (1, 4):  # a full record, or the last chunk of one
                record = pb.Record()
                record.ParseFromString(pending)
                records.append(record)
    return records


def key_of(item) -> str:
    """An item's key: ``key``, or ``nested_key`` joined (newer W&B writes that)."""
    return item.key or "/".join(item.nested_key)


def numeric_rows(run_dir: Path) -> dict[int, dict[str, float]]:
    rows: dict[int, dict[str, float]] = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        step = row.pop("step")
        numbers = {k: v for k, v in row.items() if isinstance(v, int | float)}
        rows.setdefault(step, {}).update(numbers)
    return rows


def test_wandb_and_mlflow_hold_what_metrics_jsonl_holds(
    base_model_dir, world_dir, tmp_path, monkeypatch
):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / "sft"
    keys = dict(model=str(base_model_dir), data=str(world_dir / "sft.jsonl"), output_dir=str(out),
                per_device_train_batch_size=4, max_length=48, logging_steps=1, eval_steps=2,
                save_steps=2, learning_rate=2e-3, disable_tqdm=True,
                report_to=["tensorboard", "wandb", "mlflow"])  # fmt: skip
    run_sft(SFTConfig(max_steps=2, **keys))
    run_sft(SFTConfig(max_steps=4, **keys), resume=True)  # the same tracker runs go on
    want = numeric_rows(out)
    assert sorted(want) == [1, 2, 3, 4]
    card = (out / "final" / "README.md").read_text()

    # --- W&B: one run id, its history rows, its config, the card in its summary
    records = wandb_records(out)
    assert len({r.run.run_id for r in records if r.WhichOneof("record_type") == "run"}) == 1
    got: dict[int, dict[str, float]] = {}
    for r in records:
        if r.WhichOneof("record_type") == "history":
            items = {key_of(i): json.loads(i.value_json) for i in r.history.item}
            got.setdefault(items.pop("_step"), {}).update(
                {k: v for k, v in items.items() if not k.startswith("_")}
            )
    assert got == want
    config = {}
    for r in records:
        if r.WhichOneof("record_type") == "run":
            config.update({key_of(u): json.loads(u.value_json) for u in r.run.config.update})
        if r.WhichOneof("record_type") == "config":
            config.update({key_of(u): json.loads(u.value_json) for u in r.config.update})
    assert config["learning_rate"] == 2e-3 and config["model"] == str(base_model_dir)
    summary = {}
    for r in records:
        if r.WhichOneof("record_type") == "summary":
            summary.update({key_of(u): json.loads(u.value_json) for u in r.summary.update})
    assert summary["model_card"] == card

    # --- MLflow: the metric histories, the parameters, the card as an artifact
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=(out / "mlruns").resolve().as_uri())
    run_id = (out / ".mlflow_run_id").read_text().strip()
    assert len(client.search_runs([client.get_experiment_by_name("rlalign").experiment_id])) == 1
    got = {}
    for key in {k for row in want.values() for k in row}:
        for m in client.get_metric_history(run_id, key):
            got.setdefault(m.step, {})[key] = m.value
    assert got == want
    params = client.get_run(run_id).data.params
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert params["learning_rate"] == str(saved["learning_rate"])
    assert params["report_to"] == str(saved["report_to"])
    local = client.download_artifacts(run_id, "README.md", str(tmp_path))
    assert Path(local).read_text() == card


def test_an_unknown_tracker_or_a_missing_package_is_one_line(tmp_path, monkeypatch):
    from rlalign.errors import UserError
    from rlalign.trackers import make_trackers

    with pytest.raises(Exception, match="report_to"):
        SFTConfig(data="x", report_to=["comet"])
    with pytest.raises(UserError, match="report_to: unknown tracker 'comet'"):
        make_trackers(["comet"], tmp_path)
    import builtins

    real_import = builtins.__import__

    def no_wandb(name, *args, **kwargs):
        if name == "wandb":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_wandb)
    with pytest.raises(UserError, match=r"report_to=wandb needs the wandb package: pip install "):
        make_trackers(["wandb"], tmp_path)
