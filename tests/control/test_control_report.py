"""The car's run report and its per-step credit viewer (action, r_t, G_t beneath each frame)."""

from __future__ import annotations

import base64
import json
import re

import pytest
from PIL import Image

from rlalign.cli import main
from rlalign.control.baselines import make_baseline
from rlalign.control.envs import env_factory
from rlalign.control.episode import Episode, record_episode
from rlalign.control.evaluate import evaluate
from rlalign.control.render import CAPTION_H, evenly_spaced


@pytest.fixture(scope="module")
def car_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("car")
    rc = main(
        ["control", "train", "--env", "rlalign/Driving-v0", "--steps", "2048", "--out", str(out),
         "--no-progress", "n_envs=4", "n_steps=64", "hidden_sizes=[8]", "eval_every=512",
         "eval_episodes=2", "final_eval_episodes=3"]
    )  # fmt: skip
    assert rc == 0
    return out


def test_report_is_self_contained_with_plots_baselines_and_the_episode(car_run) -> None:
    page = (car_run / "report.html").read_text(encoding="utf-8")
    # Nothing is fetched: every image is inline, no external URL is referenced.
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    srcs = re.findall(r'src="([^"]+)"', page)
    assert srcs and all(s.startswith("data:image/") for s in srcs)
    pngs = [s for s in srcs if s.startswith("data:image/png;base64,")]
    assert len(pngs) == 4  # return, episode length, collisions; the strip of frames
    for s in pngs:
        assert base64.b64decode(s.split(",", 1)[1]).startswith(b"\x89PNG")
    assert any(s.startswith("data:image/gif;base64,R0lG") for s in srcs)  # the animated episode
    for name in ("return", "episode_length", "collisions"):
        assert (car_run / "plots" / f"{name}.png").exists()
    # The table quotes result.json for the learned policy and every baseline.
    res = json.loads((car_run / "result.json").read_text())
    assert f"<td>ppo (learned)</td><td>{res['final_eval_return']:.2f}</td>" in page
    for name, stats in res["baselines"].items():
        assert f"<td>{name}</td><td>{stats['return']:.2f}</td>" in page


def test_metrics_hold_the_curves_the_report_plots(car_run) -> None:
    rows = [json.loads(x) for x in (car_run / "metrics.jsonl").read_text().splitlines()]
    assert all(0.0 <= r["collision_rate"] <= 1.0 for r in rows if "collision_rate" in r)
    evals = [r for r in rows if "eval_return" in r]
    assert len(evals) == 4 and all("eval_collision_rate" in r for r in evals)
    assert all(r["episode_length"] >= 1 for r in rows if "episode_length" in r)


def test_returns_g_t_by_hand() -> None:
    ep = Episode(label="x", seed=0, gamma=0.5, frames=[None] * 4)
    ep.actions, ep.rewards = ["keep", "brake", "stop"], [1.0, 2.0, 4.0]
    assert ep.returns == pytest.approx([1 + 0.5 * 2 + 0.25 * 4, 2 + 0.5 * 4, 4.0])
    lines = ep.captions()
    assert "action=brake" in lines[1] and "r_t= +2.000" in lines[1] and "G_t= +4.000" in lines[1]
    assert "episode over: return +7.000" in lines[3]


def test_recorded_episode_matches_the_evaluation_of_the_same_seed() -> None:
    make = env_factory("rlalign/Driving-v0")
    cfg = make().unwrapped.cfg
    ref = evaluate(make, make_baseline("rule_based", cfg), 1, seed=5)
    ep = record_episode(None, 5, env_id="rlalign/Driving-v0", baseline="rule_based", gamma=1.0)
    assert ep.summary["return"] == pytest.approx(ref.returns[0])
    assert len(ep.rewards) == ref.lengths[0] and len(ep.frames) == len(ep.rewards) + 1
    assert ep.returns[0] == pytest.approx(sum(ep.rewards))  # gamma = 1: G_0 is the return
    frames = ep.captioned()
    assert frames[0].shape[0] == ep.frames[0].shape[0] + CAPTION_H


def test_render_strip_puts_the_baseline_beside_the_learned_policy(car_run, tmp_path) -> None:
    strip, gif = tmp_path / "strip.png", tmp_path / "ep.gif"
    rc = main(["control", "render", str(car_run), "--seed", "3", "--compare", "rule_based",
               "--strip", str(strip), "--frames", "6", "--out", str(gif)])  # fmt: skip
    assert rc == 0
    learned = record_episode(car_run, 3)
    frame_h, frame_w = learned.frames[0].shape[:2]
    img = Image.open(strip)
    assert img.size == (2 * frame_w + 4, 6 * (frame_h + CAPTION_H) + 5 * 3)
    assert Image.open(gif).n_frames > 1
    assert evenly_spaced(100, 6) == [0, 20, 40, 59, 79, 99] and evenly_spaced(3, 6) == [0, 1, 2]


def test_render_needs_an_output(car_run, capsys) -> None:
    assert main(["control", "render", str(car_run)]) == 2
    assert "--strip" in capsys.readouterr().err
