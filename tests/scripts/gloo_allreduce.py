"""A real torch.distributed job: gloo all_reduce of each rank's (rank + 1), rendezvous from the environment."""

import json
import os

import torch
import torch.distributed as dist

dist.init_process_group("gloo")  # reads MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE set by ds-helper
value = torch.tensor([float(dist.get_rank() + 1)])
dist.all_reduce(value)
print(
    json.dumps(
        {
            "rank": dist.get_rank(),
            "world": dist.get_world_size(),
            "sum": value.item(),
            "local_rank": int(os.environ["LOCAL_RANK"]),
        }
    ),
    flush=True,
)
dist.destroy_process_group()
