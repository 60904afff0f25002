"""Which collectives gloo runs on tensors of the device under test (run by torchrun, 2 ranks).

Prints ``ok <name>`` after each one that gave the right result; a crash (gloo has no CUDA
reduce-scatter in some builds) stops the list there. The two-rank checks read the list and skip
what the backend itself cannot do, instead of reporting a gloo limit as an rlalign failure.
"""

import os

import torch
import torch.distributed as dist

device = torch.device(os.environ.get("RLALIGN_TEST_DEVICE", "cuda"))
if device.type == "cuda":
    device = torch.device("cuda", 0)
dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()


def say(name: str) -> None:
    if rank == 0:
        print(f"ok {name}", flush=True)


x = torch.full((4,), float(rank + 1), device=device)

dist.broadcast(y := x.clone(), src=0)
assert torch.equal(y, torch.ones(4, device=device))
say("broadcast")

dist.all_reduce(y := x.clone())
assert torch.equal(y, torch.full((4,), float(sum(range(1, world + 1))), device=device))
say("all_reduce")

gathered = torch.empty(4 * world, device=device)
dist.all_gather_into_tensor(gathered, x)
assert torch.equal(gathered, torch.arange(1, world + 1, device=device).repeat_interleave(4).float())
say("all_gather_into_tensor")

out = torch.empty(4, device=device)
dist.reduce_scatter_tensor(out, torch.cat([x] * world))
assert torch.equal(out, torch.full((4,), float(sum(range(1, world + 1))), device=device))
say("reduce_scatter_tensor")
dist.destroy_process_group()
