"""The trajectory viewer renders each token of a known rollout with its values."""

from __future__ import annotations

import json
from html.parser import HTMLParser

import pytest

from rlalign.cli import main
from rlalign.report.viewer import load_rollouts

ROLLOUT = {
    "iteration": 3,
    "index": 0,
    "prompt": "say a word",
    "prompt_text": "<|user|>\nsay a word\n<|assistant|>\n",
    "kind": "fact",
    "completion": " blue <x>",
    "reward": 1.0,
    "components": {"says_blue": 1.0},
    "algorithm": "ppo",
    "gamma": 0.5,
    "tokens": [
        {
            "t": 0,
            "id": 15,
            "token": " blue",
            "logp": -0.25,
            "ref_logp": -1.5,
            "kl": 1.25,
            "reward": 0.0,
            "return": 0.5,
            "value": 0.1,
            "advantage": 0.4,
        },
        {
            "t": 1,
            "id": 1,
            "token": " <x>",
            "logp": -0.75,
            "ref_logp": -0.5,
            "kl": -0.25,
            "reward": 1.0,
            "return": 1.0,
            "value": 0.2,
            "advantage": -0.8,
        },
    ],
}


class Spans(HTMLParser):
    def __init__(self):
        super().__init__()
        self.spans, self._open = [], None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "span" and "tok" in attrs.get("class", ""):
            self._open = attrs
            self._open["text"] = ""

    def handle_data(self, data):
        if self._open is not None:
            self._open["text"] += data

    def handle_endtag(self, tag):
        if tag == "span" and self._open is not None:
            self.spans.append(self._open)
            self._open = None


@pytest.fixture
def run_dir(tmp_path):
    (tmp_path / "rollouts").mkdir()
    other = {**ROLLOUT, "index": 1, "kind": "harmful", "reward": -1.0}
    (tmp_path / "rollouts" / "iter_3.jsonl").write_text(
        json.dumps(ROLLOUT) + "\n" + json.dumps(other) + "\n"
    )
    (tmp_path / "rollouts" / "iter_1.jsonl").write_text(
        json.dumps({**ROLLOUT, "iteration": 1}) + "\n"
    )
    return tmp_path


def test_tokens_carry_their_values(run_dir, capsys):
    assert main(["show", str(run_dir)]) == 0
    page = (run_dir / "viewer_iter_3.html").read_text()
    parser = Spans()
    parser.feed(page)
    first = parser.spans[0]
    assert first["text"] == " blue"
    assert first["data-t"] == "0" and first["data-id"] == "15"
    assert float(first["data-logp"]) == -0.25 and float(first["data-ref_logp"]) == -1.5
    assert float(first["data-kl"]) == 1.25 and float(first["data-ret"]) == 0.5
    assert float(first["data-value"]) == 0.1 and float(first["data-advantage"]) == 0.4
    assert parser.spans[1]["text"] == " <x>"  # token text is escaped, not markup
    assert len(parser.spans) == 4
    # positive advantage green, negative red; filters for both kinds; gamma shown
    assert "rgba(26,152,80" in first["style"] and "rgba(215,48,39" in parser.spans[1]["style"]
    assert 'value="fact"' in page and 'value="harmful"' in page and "const gamma = 0.5" in page


def test_iteration_choice_and_errors(run_dir, tmp_path, capsys):
    assert load_rollouts(run_dir, 1)[0] == 1
    assert main(["show", str(run_dir), "--iteration", "2"]) == 2
    assert "no rollouts for iteration 2 (saved: 1, 3)" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["show", str(empty)]) == 2
    assert "no rollouts/iter_K.jsonl files" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        ('{"reward": NaN, "tokens": []}', "'reward' must be a finite number, got nan"),
        ('{"reward": Infinity, "tokens": []}', "'reward' must be a finite number, got inf"),
        ("[1, 2]", "a rollout is a JSON object, got list"),
        ('{"reward": 1, "counters": {"speed": "fast"}}', "'counters' must map names to numbers"),
        ('{"reward": 1, "prompt": ["a"]}', "'prompt' must be text"),
        ('{"reward": 1, "turns": [{"observation": null}]}', "a turn's 'observation' must be text"),
    ],
)
def test_a_file_the_viewer_cannot_show_is_one_line(tmp_path, capsys, line, fragment):
    """A hand-edited or foreign rollouts file: where and what, exit 2, no traceback."""
    (tmp_path / "rollouts").mkdir()
    path = tmp_path / "rollouts" / "iter_1.jsonl"
    path.write_text('{"reward": 0.5, "tokens": []}\n' + line + "\n")
    assert main(["show", str(tmp_path), "--out", str(tmp_path / "v.html")]) == 2
    err = capsys.readouterr().err
    assert f"{path}:2: {fragment}" in err and "Traceback" not in err


def test_value_is_left_blank_without_a_value_head(tmp_path):
    (tmp_path / "rollouts").mkdir()
    grpo = {**ROLLOUT, "algorithm": "grpo"}
    (tmp_path / "rollouts" / "iter_1.jsonl").write_text(json.dumps(grpo) + "\n")
    assert main(["show", str(tmp_path)]) == 0
    parser = Spans()
    parser.feed((tmp_path / "viewer_iter_1.html").read_text())
    assert [s["data-value"] for s in parser.spans] == ["", ""]
    assert float(parser.spans[0]["data-advantage"]) == 0.4


class Blocks(Spans):
    """Spans plus the observations (``div.prompt``) in document order."""

    def __init__(self):
        super().__init__()
        self.order, self._in_prompt = [], False

    def handle_starttag(self, tag, attrs):
        super().handle_starttag(tag, attrs)
        if tag == "div" and dict(attrs).get("class") == "prompt":
            self._in_prompt = True
            self.order.append(["obs", ""])

    def handle_data(self, data):
        super().handle_data(data)
        if self._in_prompt:
            self.order[-1][1] += data

    def handle_endtag(self, tag):
        if tag == "span" and self._open is not None:
            self.order.append(["tok", self._open["text"], self._open.get("data-turn")])
        super().handle_endtag(tag)
        if tag == "div":
            self._in_prompt = False


def test_a_multi_turn_episode_is_shown_turn_by_turn(tmp_path):
    tokens = ROLLOUT["tokens"]
    episode = {
        "iteration": 2, "index": 0, "kind": "episode", "prompt": "say a word", "reward": 1.3,
        "end": "terminated", "counters": {"reached_moon": 1.0}, "algorithm": "grpo",
        "gamma": 0.9,
        "turns": [
            {"observation": "say a word", "action": "sun", "reward": 0.0, "invalid": False,
             "tokens": [tokens[0]]},
            {"observation": "moon", "action": "blue", "reward": 1.0, "invalid": True,
             "tokens": [tokens[0], tokens[1]]},
        ],
    }  # fmt: skip
    (tmp_path / "rollouts").mkdir()
    (tmp_path / "rollouts" / "iter_2.jsonl").write_text(json.dumps(episode) + "\n")
    assert main(["show", str(tmp_path)]) == 0
    page = (tmp_path / "viewer_iter_2.html").read_text()
    parser = Blocks()
    parser.feed(page)
    # each observation, then the tokens that answered it, tagged with their turn
    assert parser.order == [
        ["obs", "say a word"], ["tok", " blue", "0"],
        ["obs", "moon"], ["tok", " blue", "1"], ["tok", " <x>", "1"],
    ]  # fmt: skip
    assert [float(s["data-advantage"]) for s in parser.spans] == [0.4, 0.4, -0.8]
    assert "2 turns, ended: terminated" in page and "not an action" in page
