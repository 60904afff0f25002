"""``rlalign control``: train, evaluate and render agents on Gymnasium envs (and the car).

rlalign control train --env CartPole-v1 --out runs/cartpole
rlalign control train --env rlalign/Driving-v0 --algo ppo --seed 1 --out runs/car lr=...
rlalign control eval runs/car --episodes 100 --json
rlalign control render runs/car --out car.gif [--policy rule_based]
rlalign control transcripts --policy rule_based --episodes 200 --seed 100000 --out car.jsonl
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rlalign.commands import seed_type
from rlalign.commands.keys_help import CONTROL_GROUPS, KeySection, add_keys_help

CONFIGS = "rlalign.control.train_config:"
HELP = "train/evaluate/render policy-gradient agents on Gymnasium envs and the driving car"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="control_command", metavar="{train,eval,render,transcripts}")
    sub.required = True

    train = sub.add_parser(
        "train",
        help="train PPO or REINFORCE on a Gymnasium env",
        description="Train an agent; writes DIR/metrics.jsonl, DIR/policy.safetensors (+ .json), "
        "DIR/result.json. Extra key=value arguments override the config (e.g. learning_rate=1e-3 "
        "n_envs=16 env_kwargs.road_length=800). The defaults listed below are the agents' own; "
        "an env with tuned settings (CartPole, the car, continuous-action envs: "
        "rlalign.control.train_config.ENV_DEFAULTS) starts from those instead.",
    )
    train.add_argument("--env", required=True, help="Gymnasium env id, e.g. rlalign/Driving-v0")
    train.add_argument("--algo", choices=["ppo", "reinforce"], default="ppo")
    train.add_argument("--seed", type=seed_type, default=None)
    train.add_argument("--steps", type=int, default=None, help="environment steps to train for")
    train.add_argument("--out", required=True, type=Path, help="run directory")
    train.add_argument("--config", type=Path, default=None, help="YAML config file")
    train.add_argument("--no-baselines", action="store_true", help="skip baseline evaluation")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.add_argument(
        "--no-report", action="store_true", help="skip DIR/report.html (plots, episode viewer)"
    )
    train.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its newest checkpoint (same command line)",
    )
    train.add_argument(
        "--force",
        action="store_true",
        help="start over in an --out that holds an earlier run (its results are deleted)",
    )
    train.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    add_keys_help(
        train,
        KeySection(CONFIGS + "CommonConfig", "config keys of both agents", CONTROL_GROUPS),
        KeySection(CONFIGS + "PPOConfig", "--algo ppo adds", CONTROL_GROUPS, own_only=True),
        KeySection(
            CONFIGS + "ReinforceConfig", "--algo reinforce adds or changes", None, own_only=True
        ),
    )

    ev = sub.add_parser("eval", help="evaluate a saved policy (or a baseline)")
    ev.add_argument("dir", nargs="?", type=Path, help="run directory of 'control train'")
    ev.add_argument("--episodes", type=int, default=100)
    ev.add_argument("--seed", type=seed_type, default=0, help="episode k uses seed SEED+k")
    ev.add_argument("--env", default=None, help="env id (default: the policy's own)")
    ev.add_argument("--policy", default="learned", help="learned or a baseline (driving envs)")
    ev.add_argument("--json", action="store_true", help="print the result as JSON")

    rd = sub.add_parser(
        "render",
        help="render one episode as an animated GIF and/or a strip of frames",
        description="Play one seeded episode and draw it, each frame captioned with the step t, "
        "the action taken, the reward r_t and the return G_t (the run's gamma).",
    )
    rd.add_argument("dir", nargs="?", type=Path, help="run directory of 'control train'")
    rd.add_argument("--out", type=Path, default=None, help="output .gif (animated)")
    rd.add_argument(
        "--strip", type=Path, default=None, metavar="PNG", help="output .png: a strip of frames"
    )
    rd.add_argument("--frames", type=int, default=10, help="frames in the strip (evenly spaced)")
    rd.add_argument("--seed", type=seed_type, default=0)
    rd.add_argument("--env", default=None, help="env id (default: the policy's own)")
    rd.add_argument(
        "--policy", default="learned", help="learned, random, constant_speed, rule_based"
    )
    rd.add_argument(
        "--fps", type=float, default=8.0, help="frames per second (8 = 4x real time for the car)"
    )
    rd.add_argument(
        "--compare",
        default=None,
        metavar="POLICY",
        help="also play POLICY (e.g. rule_based) on the same seed: below in the GIF, beside in "
        "the strip",
    )

    tr = sub.add_parser(
        "transcripts",
        help="write a baseline driver's episodes in words, as SFT data for a language model",
        description="Play seeded episodes of rlalign/Driving-v0 as a text environment with a "
        'baseline driver and write them as SFT JSONL ({"messages": [user: the observation '
        "sentence, assistant: the action word]}). Episode k uses seed SEED+k.",
    )
    tr.add_argument(
        "--policy",
        default="rule_based",
        help="the baseline that drives: rule_based, constant_speed or random (default: rule_based)",
    )
    tr.add_argument("--episodes", type=int, required=True, help="how many episodes to play")
    tr.add_argument(
        "--seed", type=seed_type, default=0, help="episode k uses seed SEED+k (default: 0)"
    )
    tr.add_argument("--out", type=Path, required=True, help="output .jsonl file")
    tr.add_argument(
        "--history",
        choices=["last", "full"],
        default="last",
        help="last: one line per step (observation, action); full: one line per episode, its "
        "turns alternating (default: last)",
    )
    tr.add_argument(
        "--lapse",
        type=float,
        default=0.0,
        help="per-step chance that the driver starts a lapse of 1-8 steps in which the car "
        "keeps its speed while the transcript records the driver's own action: recovery states "
        "for the imitating model (default: 0, none)",
    )
    tr.add_argument(
        "--lane-change-repeats",
        type=int,
        default=1,
        metavar="K",
        help="write each step whose word is left or right K times: lane changes are about 1%% "
        "of the steps, too few for a small model to tell the sides apart (default: 1)",
    )
    tr.add_argument(
        "--driver",
        default=None,
        metavar="RUN_DIR",
        help="a language-model driver (a run or model directory) drives instead, and --policy "
        "labels every state it reaches with its own action (DAgger)",
    )


def run(args: argparse.Namespace) -> int:
    if args.control_command == "train":
        return _train(args)
    if args.control_command == "eval":
        return _eval(args)
    if args.control_command == "transcripts":
        return _transcripts(args)
    return _render(args)


def _train(args: argparse.Namespace) -> int:
    from rlalign.control.envs import check_env_id
    from rlalign.control.train_config import resolve_config
    from rlalign.rundir import lock_scope

    check_env_id(args.env)
    overrides = list(args.overrides)
    if args.seed is not None:
        overrides.append(f"seed={args.seed}")
    if args.steps is not None:
        if args.steps < 1:
            from rlalign.errors import UserError

            raise UserError(f"--steps must be >= 1, got {args.steps}")
        overrides.append(f"total_steps={args.steps}")
    cfg = resolve_config(args.env, args.algo, args.config, overrides)
    with lock_scope():  # the run directory stays locked until its report is written
        return _train_and_report(args, cfg)


def _train_and_report(args: argparse.Namespace, cfg) -> int:
    from rlalign.control.runs import train_run

    result = train_run(
        args.env,
        args.algo,
        cfg,
        args.out,
        progress=not args.no_progress,
        baselines=not args.no_baselines,
        resume=args.resume,
        force=args.force,
    )
    if "interrupted_by" in result:
        import signal
        import sys

        name = signal.Signals(result["interrupted_by"]).name
        print(
            f"rlalign control train: stopped by {name} after {result['env_steps']} environment "
            f"steps; checkpoint saved in {result['checkpoint']}; continue with the same command "
            "and --resume",
            file=sys.stderr,
        )
        return 128 + int(result["interrupted_by"])
    if not args.no_report:
        from rlalign.report.car import write_run_report

        write_run_report(args.out)
    _print_summary(result)
    print(f"saved {args.out}/policy.safetensors, {args.out}/result.json")
    return 0


def _print_summary(result: dict) -> None:
    solved = result.get("env_steps_to_solve")
    print(
        f"{result['env_id']} {result['algo']} seed={result['seed']}: "
        f"eval return {result['final_eval_return']:.2f} over {result['eval_episodes']} episodes; "
        f"{result['env_steps']} steps in {result['wall_seconds']:.1f}s; "
        f"solved at {solved if solved is not None else 'never'}"
    )
    if "collision_rate" in result:
        print(
            f"  collision rate {result['collision_rate']:.3f}, travel time "
            f"{result['mean_travel_time']}, abrupt brakes/episode "
            f"{result['abrupt_brakes_per_episode']:.2f}"
        )
    for name, b in (result.get("baselines") or {}).items():
        print(
            f"  baseline {name:15s} return {b['return']:7.2f}  collisions {b['collision_rate']:.3f}"
        )


def _eval(args: argparse.Namespace) -> int:
    from rlalign.control.runs import eval_policy
    from rlalign.errors import UserError

    if args.episodes < 1:
        raise UserError(f"--episodes must be >= 1, got {args.episodes}")
    policy = None if args.policy == "learned" else args.policy
    if policy is None and args.dir is None:
        raise UserError("give a run directory (or --policy BASELINE --env ENV)")
    res = eval_policy(args.dir, args.episodes, args.seed, env_id=args.env, baseline=policy)
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        print(
            " ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in res.items())
        )
    return 0


def _render(args: argparse.Namespace) -> int:
    from rlalign.control.episode import record_episode
    from rlalign.control.render import (
        evenly_spaced,
        save_gif,
        save_png,
        side_by_side,
        stack_frames,
        strip,
    )
    from rlalign.errors import UserError

    if args.out is None and args.strip is None:
        raise UserError("give --out EPISODE.gif and/or --strip FRAMES.png")
    if args.out is not None and args.out.suffix.lower() != ".gif":
        raise UserError(f"--out {args.out}: expected a .gif file name")
    if args.strip is not None and args.strip.suffix.lower() != ".png":
        raise UserError(f"--strip {args.strip}: expected a .png file name")
    policy = None if args.policy == "learned" else args.policy
    if policy is None and args.dir is None:
        raise UserError("give a run directory (or --policy BASELINE --env ENV)")
    if args.fps <= 0:
        raise UserError(f"--fps must be > 0, got {args.fps}")
    if args.frames < 1:
        raise UserError(f"--frames must be >= 1, got {args.frames}")
    episodes = [record_episode(args.dir, args.seed, env_id=args.env, baseline=policy)]
    if args.compare is not None:
        other = None if args.compare == "learned" else args.compare
        episodes.append(record_episode(args.dir, args.seed, env_id=args.env, baseline=other))
    columns = [ep.captioned() for ep in episodes]
    if args.out is not None:
        frames = columns[0] if len(columns) == 1 else stack_frames(columns[0], columns[1])
        save_gif(frames, args.out, fps=args.fps)
        print(f"wrote {args.out} ({len(frames)} frames)")
    if args.strip is not None:
        frames = columns[0] if len(columns) == 1 else side_by_side(columns[0], columns[1])
        save_png(strip(frames, evenly_spaced(len(frames), args.frames)), args.strip)
        print(f"wrote {args.strip}")
    for ep in episodes:
        print("  " + json.dumps(ep.summary))
    return 0


def _transcripts(args: argparse.Namespace) -> int:
    from rlalign.control.transcripts import write_transcripts

    driver = None
    if args.driver is not None:
        from rlalign.control.lm_driver import load_lm_driver

        driver = load_lm_driver(args.driver)
    res = write_transcripts(
        args.out,
        policy=args.policy,
        episodes=args.episodes,
        seed=args.seed,
        history=args.history,
        lapse=args.lapse,
        driver=driver,
        env_kwargs=driver.gym_kwargs if driver is not None else None,
        lane_change_repeats=args.lane_change_repeats,
    )
    who = f"{args.driver}, labelled by {res['policy']}" if driver else res["policy"]
    print(
        f"wrote {res['out']}: {res['lines']} lines, {res['episodes']} episodes, {res['steps']} "
        f"steps of {who}; mean return {res['mean_return']:.3f}, collisions "
        f"{res['collisions']}, arrived {res['arrived']}"
    )
    return 0
