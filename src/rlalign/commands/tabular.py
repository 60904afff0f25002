"""``rlalign tabular``: the RL core on problems whose J(theta) is known exactly.

The return G_t on a short reward sequence, then the policy-gradient theorem in action on a
three-step table of the chapter's car (accelerate or brake, with progress, abrupt braking and
collisions), where REINFORCE and PPO climb to the optimum J*.
"""

from __future__ import annotations

import argparse

from rlalign.commands import seed_type

HELP = "policy gradient on a tiny car MDP whose J(theta) is computed exactly (seconds)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=seed_type, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--quick", action="store_true", help="a smaller, faster version (for tests)"
    )


def run(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from rlalign.rl import discounted_returns
    from rlalign.tabular import junction_mdp, train_policy_gradient

    print("1. The return G_t = sum_k gamma^k r_{t+k+1}  (rlalign.rl.discounted_returns)")
    rewards = torch.tensor([1.0, 0.0, 2.0])
    for gamma in (0.0, 0.5, 1.0):
        g = discounted_returns(rewards, gamma)
        print(f"   rewards {rewards.tolist()}  gamma={gamma:<4} ->  G = {g.tolist()}")

    mdp = junction_mdp(gamma=0.9)
    j_star = mdp.optimal_objective()
    j_uniform = mdp.exact_objective(mdp.init_logits()).item()
    print("\n2. The car at a junction, 3 steps: J(theta) = E[sum_t gamma^t r_{t+1}], gamma=0.9")
    print(f"   uniform random policy  J = {j_uniform:+.3f}    best possible  J* = {j_star:+.3f}")
    steps = 60 if args.quick else 300
    results = {}
    for kind in ("reinforce", "ppo"):
        bar = tqdm(total=steps, desc=f"   {kind:<9}", leave=False, ncols=80)

        def show(step: int, logits: torch.Tensor, bar=bar) -> None:
            bar.update(1)
            if step % 20 == 0:
                bar.set_postfix(J=f"{mdp.exact_objective(logits).item():+.3f}")

        theta = train_policy_gradient(mdp, kind=kind, steps=steps, seed=args.seed, callback=show)
        bar.close()
        results[kind] = theta
        j = mdp.exact_objective(theta).item()
        gap = (j_star - j) / (j_star - j_uniform)
        print(
            f"   {kind:<9} after {steps} steps: J = {j:+.3f}  ({100 * (1 - gap):.1f}% of the way)"
        )

    print("\n3. What the trained policy (PPO) does, pi(action | state) at t=0:")
    probs = torch.softmax(results["ppo"][0], dim=-1)
    header = "".join(f"{a:>12}" for a in mdp.action_names)
    print(f"   {'state':<12}{header}")
    for s, name in enumerate(mdp.state_names[:2]):
        row = "".join(f"{p:>12.2f}" for p in probs[s].tolist())
        print(f"   {name:<12}{row}")
    print(
        "\n   (accelerate on a clear road, brake when a car is ahead: progress without collisions)"
    )
    return 0
