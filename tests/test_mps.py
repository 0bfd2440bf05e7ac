"""Apple's MPS treated like CUDA, checked with a stand-in device (no Mac here): auto picks it, the precision probe
times fp32 against bf16 on it and records its answer apart from the CPU's, autocast and the clock reach it, fp16
is refused in words, and the command line lets ops MPS lacks fall back to the CPU."""

import os
import subprocess
import sys

import pytest
import torch

from pipeline import runtime
from pipeline.config import REPO, PipelineError

MPS = torch.device("mps")


@pytest.fixture
def a_mac_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)


def test_auto_picks_mps_where_there_is_no_cuda(a_mac_without_cuda):
    assert runtime.pick_device("auto") == MPS and runtime.pick_device("mps") == MPS


def test_the_probe_times_fp32_against_bf16_on_mps_and_keeps_its_answer_apart(tmp_path):
    timed = []

    def rate(precision):
        timed.append(precision)
        return {"fp32": 100.0, "bf16": 150.0}[precision]

    cache = tmp_path / "precision.json"
    assert runtime.resolve_precision("auto", MPS, rate, cache)[0] == "bf16" and timed == ["fp32", "bf16"]
    assert runtime.machine_key("cls", MPS) != runtime.machine_key("cls", torch.device("cpu"))
    assert runtime.resolve_precision("auto", torch.device("cpu"), lambda p: {"fp32": 100.0, "bf16": 50.0}[p],
                                     cache)[0] == "fp32"
    assert runtime.resolve_precision("auto", MPS, rate, cache)[0] == "bf16" and len(timed) == 2  # reused


def test_autocast_and_the_clock_reach_mps(monkeypatch):
    context = runtime.autocast(MPS, "bf16")
    assert isinstance(context, torch.autocast) and context.device == "mps" and context.fast_dtype == torch.bfloat16
    waited = []
    monkeypatch.setattr(torch.mps, "synchronize", lambda: waited.append(True))
    runtime.synchronize(MPS)
    assert waited == [True]
    assert not runtime.loss_scaler(MPS, "bf16").is_enabled()


def test_fp16_on_mps_is_refused_in_words():
    with pytest.raises(PipelineError, match="bf16 or fp32"):
        runtime.resolve_precision("fp16", MPS)


def test_on_a_mac_the_command_line_lets_missing_mps_ops_fall_back_to_the_cpu():
    code = ("import os, sys; sys.platform = 'darwin'; import pipeline.__main__; "
            "print(os.environ.get('PYTORCH_ENABLE_MPS_FALLBACK'), 'torch' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if k != "PYTORCH_ENABLE_MPS_FALLBACK"}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["1", "False"], out.stderr[-2000:]  # set before torch is imported
