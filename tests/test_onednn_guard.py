"""oneDNN issue #6035: the AVX2 backward-weights kernel of a stride-2 1x1 convolution in NHWC with fewer than 8
input channels hangs, crashes or computes wrong gradients. No config the project accepts may reach it."""

import os
import subprocess
import sys

import pytest

from pipeline.config import MIN_WIDTH, REPO, PipelineError, make_config
from pipeline.models.resnet import make_resnet


def test_a_net_narrow_enough_to_reach_the_kernel_is_refused_in_words():
    exposed = make_resnet(width=MIN_WIDTH - 1).layer2[0].shortcut[0]  # the case: built, never trained
    assert exposed.kernel_size == (1, 1) and exposed.stride == (2, 2) and exposed.in_channels < 8
    with pytest.raises(PipelineError, match="#6035"):
        make_config("cls", "smoke", ["--width", str(MIN_WIDTH - 1)])
    assert make_resnet(width=MIN_WIDTH).layer2[0].shortcut[0].in_channels >= 8


def test_the_narrowest_accepted_net_trains_right_on_onednn_avx2_kernels():
    """In a subprocess (the unguarded case hangs or aborts), with oneDNN held to its AVX2 kernels as on a CPU
    without AVX-512: one channels_last forward/backward of the narrowest accepted net, every convolution's weight
    gradient against NCHW without oneDNN. With the guard lowered to 4 this aborted on a Zen 4 ("double free")."""
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2", "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, str(REPO / "tests" / "onednn_probe.py"), "--width", str(MIN_WIDTH),
                           "--identity_start", "false", "--channels_last", "true"],
                          capture_output=True, text=True, timeout=120, env=env, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    difference = float(done.stdout.split()[-1])
    assert difference < 1e-4
