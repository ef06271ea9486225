"""One rank of tests/test_distributed.py: trains the converted model under DistributedDataParallel
(gloo) on its share of each batch and saves its parameters after every step.

    python ddp_worker.py RANK WORLD_SIZE STORE_FILE OUT_FILE

The model, the data and the training step are defined here once, for the ranks and for the
single-process reference of the test."""
import datetime
import sys

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

import convpool

STEPS = 3
BATCH = 8  # the combined batch, split evenly across the ranks
LEARNING_RATE = 0.1


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return convpool.convert(nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2, 1),
        nn.Conv2d(8, 8, 3, stride=2, groups=2), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True),
        nn.Flatten(), nn.Linear(8 * 2 * 2, 4))).double()


def combined_batches():
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(BATCH, 3, 16, 16, generator=g, dtype=torch.float64),
             torch.randint(0, 4, (BATCH,), generator=g)) for _ in range(STEPS)]


def make_optimizer(model):
    return torch.optim.SGD(model.parameters(), lr=LEARNING_RATE, momentum=0.9)


def train_step(model, optimizer, x, target):
    optimizer.zero_grad()
    F.cross_entropy(model(x), target).backward()  # mean over the (local) batch
    optimizer.step()


def parameters_of(model):
    return [p.detach().clone() for p in model.parameters()]


def main(rank, world_size, store_file, out_file):
    # A file store: no port to find free, and a timeout so that a lost peer cannot hang the test.
    dist.init_process_group("gloo", init_method=f"file://{store_file}", rank=rank,
                            world_size=world_size, timeout=datetime.timedelta(seconds=30))
    try:
        model = nn.parallel.DistributedDataParallel(make_model())
        optimizer = make_optimizer(model)
        share = BATCH // world_size
        history = []
        for x, target in combined_batches():
            local = slice(rank * share, (rank + 1) * share)
            train_step(model, optimizer, x[local], target[local])
            history.append(parameters_of(model.module))
        torch.save(history, out_file)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4])
