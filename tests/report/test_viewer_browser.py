"""The trajectory viewer in a real headless browser (chromium ``--dump-dom``): its script colours
the tokens, filters the rollouts and fills the hover panel with the right numbers."""

from __future__ import annotations

import json
import math
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from rlalign.cli import main

PROMPT_TEXT = "<|user|>\nsay a word\n<|assistant|>\n"
HOSTILE = "<img src=x onerror=\"document.body.dataset.pwned='yes'\">"


def token(t, text, logp, ref_logp, reward, ret, value, advantage, token_id=7):
    return {"t": t, "id": token_id, "token": text, "logp": logp, "ref_logp": ref_logp,
            "kl": logp - ref_logp, "reward": reward, "return": ret, "value": value,
            "advantage": advantage}  # fmt: skip


# gamma = 0.5, the score 1.0 arrives after the last token: G_2 = 1, G_1 = 0.5, G_0 = 0.25
FACT = {
    "iteration": 2, "index": 0, "prompt": "say a word", "prompt_text": PROMPT_TEXT,
    "kind": "fact", "completion": " blue sky", "reward": 1.62012, "components": {"says_blue": 1.0},
    "algorithm": "ppo", "gamma": 0.5,
    "tokens": [
        token(0, " blue", -0.25, -1.5, 0.0, 0.25, 0.1, 0.4, token_id=15),
        token(1, " sky", -1.0, -0.5, 0.0, 0.5, 0.2, -0.8, token_id=16),
        token(2, "<|eos|>", -0.5, -0.75, 1.0, 1.0, 0.3, 0.2, token_id=1),
    ],
}  # fmt: skip
HARMFUL = {
    **FACT, "index": 1, "kind": "harmful", "reward": -0.87719, "components": {"says_blue": -1.0},
    "tokens": [token(0, HOSTILE, -2.0, -2.0, -1.0, -1.0, 0.0, -0.1, token_id=9)],
}  # fmt: skip


class Dom(HTMLParser):
    """The parts of the dumped DOM the tests read."""

    def __init__(self) -> None:
        super().__init__()
        self.tokens: list[dict[str, str]] = []  # attributes + "text" of every .tok span
        self.rollouts: list[dict[str, str]] = []
        self.text_by_id: dict[str, str] = {}
        self.details: list[str] = []  # cells of the hover panel's table
        self.body: dict[str, str] = {}
        self.images_in_details = 0
        self._stack: list[tuple[str, dict[str, str]]] = []

    def handle_starttag(self, tag, attrs):
        attrs = {k: v or "" for k, v in attrs}
        if tag == "body":
            self.body = attrs
        if tag == "div" and "rollout" in attrs.get("class", "").split():
            self.rollouts.append(attrs)
        if tag == "img" and self._inside("details"):
            self.images_in_details += 1
        if tag not in ("img", "input", "br", "meta"):
            self._stack.append((tag, {**attrs, "text": ""}))

    def _inside(self, element_id: str) -> bool:
        return any(a.get("id") == element_id for _, a in self._stack)

    def handle_data(self, data):
        for _, attrs in self._stack:
            attrs["text"] += data

    def handle_endtag(self, tag):
        while self._stack:
            name, attrs = self._stack.pop()
            if name == "span" and "tok" in attrs.get("class", "").split():
                self.tokens.append(attrs)
            if attrs.get("id"):
                self.text_by_id[attrs["id"]] = attrs["text"]
            if name == "td" and self._inside("details"):
                self.details.append(attrs["text"])
            if name == tag:
                break


def dom(html: str) -> Dom:
    parsed = Dom()
    parsed.feed(html)
    return parsed


def background(style: str) -> tuple[int, int, int, float]:
    match = re.search(r"rgba\((\d+),\s*(\d+),\s*(\d+),\s*([\d.]+)\)", style)
    assert match, style
    r, g, b, a = match.groups()
    return int(r), int(g), int(b), float(a)


def expected_colour(value: float, scale: float, quantity: str) -> tuple[int, int, int, float]:
    """The viewer's colour rule: red for low log-probs; green/red for the sign otherwise."""
    strength = min(1.0, abs(value) / scale)
    red, green = (215, 48, 39), (26, 152, 80)
    rgb = red if quantity == "logp" or value < 0 else green
    return (*rgb, 0.85 * strength)


@pytest.fixture
def viewer_page(tmp_path) -> Path:
    run = tmp_path / "run"
    (run / "rollouts").mkdir(parents=True)
    lines = "".join(json.dumps(r) + "\n" for r in (FACT, HARMFUL))
    (run / "rollouts" / "iter_2.jsonl").write_text(lines)
    assert main(["show", str(run)]) == 0
    return run / "viewer_iter_2.html"


def with_actions(page: Path, actions: str) -> Path:
    """A copy of the page that performs ``actions`` once the viewer's own script has run."""
    out = page.with_name("acted.html")
    script = f'<script>document.addEventListener("DOMContentLoaded", () => {{ {actions} }});'
    out.write_text(page.read_text().replace("</body>", script + "</script></body>"))
    return out


def test_the_page_shows_every_token_with_its_values(viewer_page, browse):
    page = dom(browse(viewer_page, "--dump-dom"))
    assert len(page.tokens) == 4
    for span, want in zip(page.tokens, FACT["tokens"] + HARMFUL["tokens"], strict=True):
        assert span["text"] == want["token"]  # model text is text, never markup
        assert int(span["data-t"]) == want["t"] and int(span["data-id"]) == want["id"]
        for key in ("logp", "ref_logp", "kl", "reward", "value", "advantage"):
            assert float(span[f"data-{key}"]) == pytest.approx(want[key]), key
        assert float(span["data-ret"]) == pytest.approx(want["return"])
    # the script ran: colours by advantage on the scale of the largest |A_t| (0.8), and the
    # default reward filter shows every rollout, the best (1.62012) and the worst included
    assert page.text_by_id["scale"] == "|advantage| up to 0.800"
    assert page.text_by_id["count"] == "2 shown"
    for span, want in zip(page.tokens, FACT["tokens"] + HARMFUL["tokens"], strict=True):
        *rgb, alpha = background(span["style"])
        *want_rgb, want_alpha = expected_colour(want["advantage"], 0.8, "advantage")
        assert rgb == want_rgb and alpha == pytest.approx(want_alpha, abs=1 / 255)


def test_hovering_filtering_and_recolouring_work_in_the_browser(viewer_page, browse):
    acted = with_actions(
        viewer_page,
        'const q = document.getElementById("quantity"); q.value = "logp";'
        'q.dispatchEvent(new Event("change"));'
        'const lo = document.getElementById("rmin"); lo.value = "0";'
        'lo.dispatchEvent(new Event("input"));'
        'document.querySelectorAll(".tok")[1].dispatchEvent(new Event("mouseenter"));',
    )
    page = dom(browse(acted, "--dump-dom"))
    # the reward filter (>= 0) hides the harmful rollout
    assert [("hidden" in r["class"].split()) for r in page.rollouts] == [False, True]
    assert page.text_by_id["count"] == "1 shown"
    # log-prob colouring: scale = the largest |log pi| = 2.0
    assert page.text_by_id["scale"] == "|logp| up to 2.000"
    *_, alpha = background(page.tokens[0]["style"])
    assert alpha == pytest.approx(expected_colour(-0.25, 2.0, "logp")[3], abs=1 / 255)
    # the hover panel of token 1 (" sky"), against values computed here from the rollout
    t = FACT["tokens"][1]
    cells = dict(zip(page.details[0::2], page.details[1::2], strict=True))
    assert cells["step t"] == "1"
    assert cells["action a_t"] == '" sky" (id 16)'
    assert float(cells["pi(a|s)"]) == pytest.approx(math.exp(t["logp"]), abs=1e-4)
    assert float(cells["log pi(a|s)"]) == pytest.approx(t["logp"], abs=1e-4)
    assert float(cells["pi_ref(a|s)"]) == pytest.approx(math.exp(t["ref_logp"]), abs=1e-4)
    assert float(cells["KL_t (k1)"]) == pytest.approx(t["logp"] - t["ref_logp"], abs=1e-4)
    assert float(cells["reward r_t"]) == 0.0
    # G_1 = r_1 + gamma * r_2 = 0 + 0.5 * 1
    assert float(cells["return G_t (gamma=0.5)"]) == pytest.approx(0.0 + 0.5 * 1.0, abs=1e-4)
    assert float(cells["value V(s_t)"]) == pytest.approx(0.2, abs=1e-4)
    assert float(cells["advantage A_t"]) == pytest.approx(-0.8, abs=1e-4)
    # the state s_1: the prompt and the tokens before t = 1
    state = page.text_by_id["details"].split("state s_t (prompt + tokens so far):")[1]
    assert state == PROMPT_TEXT + " blue"


def test_token_text_that_looks_like_html_is_never_run(viewer_page, browse):
    acted = with_actions(
        viewer_page,
        'document.querySelectorAll(".tok")[3].click();',
    )
    page = dom(browse(acted, "--dump-dom", "--virtual-time-budget=2000"))
    cells = dict(zip(page.details[0::2], page.details[1::2], strict=True))
    assert cells["action a_t"] == json.dumps(HOSTILE) + " (id 9)"
    assert page.images_in_details == 0 and "data-pwned" not in page.body
