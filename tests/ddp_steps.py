"""What the exact-gradient test runs, alone or under torchrun: a few plain SGD steps of a model's real training
epoch with nothing random left (no dropout; batch norm normalising with fixed statistics, so an image's gradient
does not depend on the rest of its batch), then rank 0 saves the weights. $PIPELINE_TEST_SUM_GRADIENTS=1 makes
DDP sum the ranks' gradients instead of averaging them: the bug the test must catch."""

import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F

from pipeline.config import Paths, make_config
from pipeline.train import distributed, make_task


def fixed_batch_norm(self, x):
    return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, training=False)


def summed(state, bucket):
    future = dist.all_reduce(bucket.buffer(), async_op=True).get_future()
    return future.then(lambda f: f.value()[0])


def main(model: str, out: str, *options: str) -> None:
    torch.nn.BatchNorm2d.forward = fixed_batch_norm
    if os.environ.get("PIPELINE_TEST_SUM_GRADIENTS"):
        wrap = distributed.wrap

        def wrap_summing(module, world):
            ddp = wrap(module, world)
            if world.distributed:
                ddp.register_comm_hook(None, summed)
            return ddp

        distributed.wrap = wrap_summing
    task = make_task(model, make_config(model, "smoke", list(options)), Paths(Path(os.environ["PIPELINE_ROOT"])))
    task.optimizer = torch.optim.SGD(task.model.parameters(), lr=0.5)
    task.train_one_epoch(0)
    if task.world.main:
        torch.save({k: v.detach().cpu() for k, v in task.model.state_dict().items()}, out)
    distributed.close(task.world)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], *sys.argv[3:])
