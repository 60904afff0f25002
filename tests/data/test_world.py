"""The built-in world: determinism, disjoint splits, the seed's example, imperfect SFT data."""

from __future__ import annotations

import json

import pytest

from rlalign.cli import main
from rlalign.data.world import KINDS, World, WorldConfig
from rlalign.errors import UserError


def test_deterministic_per_seed_and_different_across_seeds():
    a, b, c = World(WorldConfig(seed=3)), World(WorldConfig(seed=3)), World(WorldConfig(seed=4))
    assert a.corpus() == b.corpus()
    assert a.sft_conversations() == b.sft_conversations()
    assert a.preference_pairs() == b.preference_pairs()
    assert a.preference_pairs("eval") == b.preference_pairs("eval")
    assert a.rl_prompts() == b.rl_prompts()
    assert a.corpus() != c.corpus()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_train_and_heldout_share_no_question(seed):
    w = World(WorldConfig(seed=seed))
    for name in KINDS:
        train = {r["prompt"] for r in w.questions["train"][name]}
        held = {r["prompt"] for r in w.questions["eval"][name]}
        assert train and held, name
        assert not train & held, name
    # facts are split by (country, attribute): a held-out fact is never asked in training
    train_pairs = {(r["subject"], r["attribute"]) for r in w.questions["train"]["facts"]}
    held_pairs = {(r["subject"], r["attribute"]) for r in w.questions["eval"]["facts"]}
    assert not train_pairs & held_pairs
    # unknown countries are split by name
    train_unknown = {r["subject"] for r in w.questions["train"]["unknown"]}
    assert not train_unknown & {r["subject"] for r in w.questions["eval"]["unknown"]}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_corpus_asks_no_heldout_question(seed):
    """Pre-training states what the held-out questions ask about (a held-out sum's restatement
    is a line of the corpus), but never asks one of them: held out means unseen as a question."""
    w = World(WorldConfig(seed=seed))
    lines = {line for doc in w.corpus() for line in doc.split("\n")}
    for row in w.questions["eval"]["arithmetic"]:
        assert row["response"] in lines, row["subject"]
    held = {r["prompt"] for name in KINDS for r in w.questions["eval"][name]}
    assert held and not held & lines


@pytest.mark.parametrize("seed", [0, 1])
def test_preference_pairs_follow_the_rules_and_keep_the_split(seed):
    """Every pair's chosen response earns more of the world's reward than its rejected one, by
    the verifiers; held-out pairs ask only held-out questions; and no held-out fact's answer
    appears in a training pair, not even as a wrong answer."""
    from rlalign.data.verifiers import world_reward

    w = World(WorldConfig(seed=seed))
    pairs = {split: w.preference_pairs(split) for split in ("train", "eval")}
    for split, rows in pairs.items():
        questions = {r["prompt"]: r for name in KINDS for r in w.questions[split][name]}
        assert {p["prompt"] for p in rows} == set(questions)
        fields = {
            k: [questions[p["prompt"]].get(k) for p in rows]
            for k in ("kind", "answer", "subject", "attribute")
        }
        prompts = [p["prompt"] for p in rows]
        chosen = world_reward(prompts, [p["chosen"] for p in rows], **fields)
        rejected = world_reward(prompts, [p["rejected"] for p in rows], **fields)
        assert all(c > r for c, r in zip(chosen, rejected, strict=True)), split
    assert not {p["prompt"] for p in pairs["train"]} & {p["prompt"] for p in pairs["eval"]}
    # capitals and presidents are unique to their country: a held-out one must not be named
    held = {
        r["answer"]
        for r in w.questions["eval"]["facts"]
        if r["attribute"] in ("capital", "president")
    }
    train_text = " ".join(p["chosen"] + " " + p["rejected"] for p in pairs["train"])
    assert held and not [v for v in held if v in train_text]
    kinds = {p["kind"] for p in pairs["eval"]}
    assert kinds == {"fact", "unknown", "arithmetic", "harmful", "benign", "helpfulness"}


def test_seed_example_and_known_facts_are_in_the_corpus():
    w = World()
    text = " ".join(w.corpus())
    assert "The president of Valdoria is Mira Tal." in text
    for row in w.questions["eval"]["facts"]:
        assert row["subject"] in text and str(row["answer"]) in text


def test_unknown_entities_never_appear_in_the_corpus():
    w = World()
    text = " ".join(w.corpus()).lower()
    for name in w.unknown_countries:
        assert name.lower() not in text


def test_sft_flaw_rates_follow_the_config():
    cfg = WorldConfig(
        num_unknown=60,
        sft_hallucination_rate=0.5,
        sft_harmful_compliance_rate=0.0,
        sft_overrefusal_rate=1.0,
    )
    rows = World(cfg).sft_conversations()
    by_kind: dict[str, list[bool]] = {}
    for r in rows:
        assert [m["role"] for m in r["messages"]] == ["user", "assistant"]
        by_kind.setdefault(r["kind"], []).append(r["flawed"])
    assert 0.35 < sum(by_kind["unknown"]) / len(by_kind["unknown"]) < 0.65
    assert not any(by_kind["harmful"])
    assert all(by_kind["benign"])
    assert not any(by_kind["fact"]) and not any(by_kind["arithmetic"])


def test_export_writes_every_file(tmp_path, capsys):
    assert main(["world", "export", str(tmp_path), "--seed", "5", "num_countries=6"]) == 0
    out = capsys.readouterr().out
    assert "rl_prompts.jsonl" in out
    for rel in ["corpus.jsonl", "sft.jsonl", "preferences.jsonl", "rl_prompts.jsonl"] + [
        f"eval/{k}.jsonl" for k in (*KINDS, "preferences")
    ]:
        lines = (tmp_path / rel).read_text().splitlines()
        assert lines, rel
        rows = [json.loads(line) for line in lines]
        if (rel.startswith("eval/") and "preferences" not in rel) or rel == "rl_prompts.jsonl":
            assert all("kind" in r and "prompt" in r and "answer" in r for r in rows)
    prefs = [json.loads(x) for x in (tmp_path / "preferences.jsonl").read_text().splitlines()]
    assert all(set(p) >= {"prompt", "chosen", "rejected"} for p in prefs)
    assert all(p["chosen"] != p["rejected"] for p in prefs)


def test_export_rejects_a_bad_setting(tmp_path, capsys):
    assert main(["world", "export", str(tmp_path), "num_contries=3"]) == 2
    assert "did you mean 'num_countries'" in capsys.readouterr().err


def test_rl_prompts_balance_the_kinds_by_default():
    from collections import Counter

    balanced = Counter(r["kind"] for r in World().rl_prompts())
    # By default (rl_kind_weights) facts weigh 3, sums and benign requests 2, the rest 1.
    assert set(balanced) == {"fact", "unknown", "arithmetic", "harmful", "benign"}
    one = balanced["unknown"]
    assert balanced["harmful"] == one and balanced["fact"] == 3 * one
    assert balanced["arithmetic"] == balanced["benign"] == 2 * one
    even = Counter(r["kind"] for r in World(WorldConfig(rl_kind_weights={})).rl_prompts())
    assert len(set(even.values())) == 1
    facts = sum(len(World().questions[split]["facts"]) for split in ("train", "rl"))
    assert set(even) == set(balanced) and even["fact"] == facts
    custom = Counter(
        r["kind"]
        for r in World(WorldConfig(rl_kind_weights={"harmful": 1.5, "fact": 1})).rl_prompts()
    )
    assert custom["harmful"] == round(1.5 * custom["benign"]) and custom["fact"] == custom["benign"]
    w = World(WorldConfig(rl_balance_kinds=False))
    plain = w.rl_prompts()
    assert len(plain) == sum(len(w.questions[split][k]) for split in ("train", "rl") for k in KINDS)
    assert len({r["prompt"] for r in plain}) == len(plain)


@pytest.mark.parametrize("seed", [0, 1])
def test_rl_only_questions_are_asked_by_rl_alone(seed):
    """``rl_only_fraction`` moves that share of the train facts (by country and attribute) and
    sums out of the SFT data and the preference pairs into RL's prompts; the held-out
    questions and the other kinds stay as they were."""
    plain = World(WorldConfig(seed=seed, rl_only_fraction=0))
    w = World(WorldConfig(seed=seed, rl_only_fraction=0.3))
    assert w.questions["eval"] == plain.questions["eval"]
    assert plain.questions["rl"] == {name: [] for name in KINDS}
    for name in KINDS:
        train = [r["prompt"] for r in w.questions["train"][name]]
        rl = [r["prompt"] for r in w.questions["rl"][name]]
        assert not set(train) & set(rl), name
        # together they are the train questions without the knob, in their order
        assert sorted(train + rl) == sorted(r["prompt"] for r in plain.questions["train"][name])
        assert train == [
            r["prompt"] for r in plain.questions["train"][name] if r["prompt"] not in set(rl)
        ]
    assert all(w.questions["rl"][name] == [] for name in ("unknown", "harmful", "benign"))
    pairs = {(r["subject"], r["attribute"]) for r in w.questions["rl"]["facts"]}
    all_pairs = {(r["subject"], r["attribute"]) for r in plain.questions["train"]["facts"]}
    assert round(0.3 * len(all_pairs)) == len(pairs)
    assert not pairs & {(r["subject"], r["attribute"]) for r in w.questions["train"]["facts"]}
    n_sums = len(plain.questions["train"]["arithmetic"])
    assert len(w.questions["rl"]["arithmetic"]) == round(0.3 * n_sums)

    rl_only = {r["prompt"] for name in KINDS for r in w.questions["rl"][name]}
    sft = {row["messages"][0]["content"] for row in w.sft_conversations()}
    assert sft and not sft & rl_only
    assert not {p["prompt"] for p in w.preference_pairs()} & rl_only
    unbalanced = World(WorldConfig(seed=seed, rl_only_fraction=0.3, rl_balance_kinds=False))
    prompts = [r["prompt"] for r in unbalanced.rl_prompts()]
    # RL asks what it asked without the knob: the same questions, the SFT ones included
    no_knob = World(WorldConfig(seed=seed, rl_only_fraction=0, rl_balance_kinds=False)).rl_prompts()
    assert rl_only <= set(prompts) and sorted(prompts) == sorted(r["prompt"] for r in no_knob)


@pytest.mark.parametrize(
    ("weights", "message"),
    [({"facts": 2}, "unknown kind 'facts'"), ({"harmful": 0}, "must be > 0")],
)
def test_rl_kind_weights_reject_unknown_kinds_and_non_positive_weights(weights, message):
    with pytest.raises(ValueError, match=message):
        WorldConfig(rl_kind_weights=weights)


# --- RL's world: an exported directory -----------------------------------------------------


def _export(directory, *settings: str) -> None:
    assert main(["world", "export", str(directory), *settings]) == 0


@pytest.mark.parametrize("seed", [0, 3])
def test_rl_draws_the_same_questions_from_an_exported_world_as_from_its_seed(tmp_path, seed):
    """world=DIR rebuilds the world that wrote DIR: the same RL prompts and held-out rows, in
    the same order, as world_seed=N (so the demo's runs do not change by reading the directory),
    and the held-out rows are the directory's own files."""
    from rlalign.io import read_jsonl
    from rlalign.train.rl import load_rl_prompts, world_eval_rows
    from rlalign.train.rl_config import RLConfig

    _export(tmp_path, f"seed={seed}")
    by_dir, by_seed = RLConfig(world=str(tmp_path)), RLConfig(world_seed=seed)
    assert load_rl_prompts(by_dir) == load_rl_prompts(by_seed)
    assert world_eval_rows(by_dir) == world_eval_rows(by_seed)
    for row in world_eval_rows(by_dir):
        written = read_jsonl(tmp_path / "eval" / f"{KIND_SETS[row['kind']]}.jsonl")
        assert row in [r for _, r in written]


KIND_SETS = {"fact": "facts", "unknown": "unknown", "arithmetic": "arithmetic",
             "harmful": "harmful", "benign": "benign"}  # fmt: skip


def test_rl_takes_the_sizes_of_an_exported_world(tmp_path):
    from rlalign.train.rl import load_rl_prompts, world_eval_rows
    from rlalign.train.rl_config import RLConfig

    _export(tmp_path, "seed=2", "num_countries=3", "num_unknown=4", "max_operand=2")
    small = World(WorldConfig(seed=2, num_countries=3, num_unknown=4, max_operand=2))
    prompts = load_rl_prompts(RLConfig(world=str(tmp_path)))
    assert prompts == small.rl_prompts()
    countries = {c.name for c in small.countries}
    assert {p["subject"] for p in prompts if p["kind"] == "fact"} <= countries
    sums = {p["subject"] for p in prompts if p["kind"] == "arithmetic"}
    assert sums and all(int(a) <= 2 and int(b) <= 2 for a, _, b in map(str.split, sums))
    held = world_eval_rows(RLConfig(world=str(tmp_path), eval_prompts=1000))
    assert len(held) == sum(len(rows) for rows in small.eval_sets().values())


def test_an_rl_world_that_is_not_an_exported_world_is_a_clear_error(tmp_path, capsys):
    from rlalign.train.rl import load_rl_prompts
    from rlalign.train.rl_config import RLConfig

    with pytest.raises(UserError, match=r"world=.*: no world\.yaml there; write a world with"):
        load_rl_prompts(RLConfig(world=str(tmp_path / "nowhere")))
    _export(tmp_path)
    (tmp_path / "world.yaml").write_text("seed: 0\nnum_countries: 1\n")
    with pytest.raises(UserError, match=r"world\.yaml:2.*num_countries"):
        load_rl_prompts(RLConfig(world=str(tmp_path)))
    (tmp_path / "world.yaml").write_text("seed: 4\n")
    with pytest.raises(UserError, match=r"world_seed=5, but the world in .* has seed 4: give"):
        load_rl_prompts(RLConfig(world=str(tmp_path), world_seed=5))
    assert load_rl_prompts(RLConfig(world=str(tmp_path), world_seed=4))  # agreeing is fine
    # on the command line: one line, exit 2, before anything is written
    out = tmp_path / "run"
    argv = ["rl", "model=gpt2", f"world={tmp_path / 'nowhere'}", f"output_dir={out}"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "no world.yaml there" in err and "Traceback" not in err
    assert not out.exists()
