"""What the distributed tests run under torchrun: the pipeline's command line, with a fault injected when
$PIPELINE_TEST_FAULT says so ("interrupt@EPOCH": Ctrl-C on every rank; "crash@EPOCH@RANK": one rank dies)."""

import os
import sys

from pipeline.__main__ import main
from pipeline.train.cls import ClsTask
from pipeline.train.mt import MtTask


def inject(fault: str) -> None:
    kind, epoch, *rank = fault.split("@")
    for task in (ClsTask, MtTask):
        original = task.train_one_epoch

        def faulty(self, e, _original=original):
            if e == int(epoch):
                if kind == "interrupt":
                    raise KeyboardInterrupt
                if int(os.environ["RANK"]) == int(rank[0]):
                    raise RuntimeError(f"injected failure on rank {rank[0]}")
            return _original(self, e)

        task.train_one_epoch = faulty


if __name__ == "__main__":
    if os.environ.get("PIPELINE_TEST_FAULT"):
        inject(os.environ["PIPELINE_TEST_FAULT"])
    sys.exit(main(sys.argv[1:]))
