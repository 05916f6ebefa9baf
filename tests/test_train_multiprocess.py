"""Two processes that share each batch train the same model as one process with the same global batch."""

import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from nextgpt.nano import world

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stage3(tmp_path, name: str, launcher: list[str], data: Path, **env) -> Path:
    run = tmp_path / name
    args = ["-m", "nextgpt.train", "--stage", "3", "--model", "tiny", "--recipe", "official", "--data", str(data),
            "--steps", "3", "--batch-size", "4", "--lr", "1e-4", "--warmup", "1", "--log-every", "1", "--seed", "5",
            "--run", str(run), "--out", str(run / "model"), "--features", str(tmp_path / "features")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), **env}
    done = subprocess.run(launcher + args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return run


def test_two_processes_train_the_same_model_as_one(tmp_path):
    data = tmp_path / "world"
    world.generate(data, seed=0, n_images=8, n_videos=4, n_audios=4, n_dialogues=8)
    one = stage3(tmp_path, "one", [sys.executable], data)
    two = stage3(tmp_path, "two", [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
                                   "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
                                   "--dynamo_backend", "no", "--main_process_port", str(free_port())], data,
                 ACCELERATE_USE_CPU="1")
    logs = [[json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()] for run in (one, two)]
    assert [r["step"] for r in logs[1]] == [1, 2, 3]  # one log, from the main process of the two
    for a, b in zip(*logs):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-4) and a["l2"] == pytest.approx(b["l2"], abs=1e-4)

    start = stage3_start()
    w1, w2 = (load_file(str(run / "model" / "nextgpt.safetensors")) for run in (one, two))
    moved = max((w1[k].float() - start[k].float()).abs().max().item() for k in w1)
    apart = max((w1[k].float() - w2[k].float()).abs().max().item() for k in w1)
    # Adam magnifies rounding where a gradient is nearly zero: single weights differ a little more than the whole
    relative = (sum(((w1[k] - w2[k]).float() ** 2).sum() for k in w1) /
                sum(((w1[k] - start[k]).float() ** 2).sum() for k in w1)) ** 0.5
    assert moved > 1e-5 and apart < moved / 20 and relative < 1e-2, (moved, apart, relative)


def stage3_start() -> dict[str, torch.Tensor]:
    """The trained parts as the stage starts: the tiny model built after seeding, as `train` builds it."""
    from nextgpt.model import NextGPT
    from nextgpt.train.common import seed_everything

    seed_everything(5)
    return NextGPT.from_pretrained("tiny").trained_state_dict()


def zero2_config():
    from accelerate.commands.config.config_args import load_config_from_file

    return load_config_from_file(str(ROOT / "configs" / "accelerate_zero2.yaml"))


def test_the_zero2_config_is_a_valid_accelerate_config():
    config = zero2_config()
    assert config.distributed_type == "DEEPSPEED" and config.deepspeed_config["zero_stage"] == 2
    assert config.deepspeed_config["offload_optimizer_device"] == "cpu"


@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None,
                    reason="deepspeed is not in requirements.txt (the CPU machines here need none)")
def test_the_zero2_config_makes_a_deepspeed_plugin():
    from accelerate.utils import DeepSpeedPlugin

    settings = {k: v for k, v in zero2_config().deepspeed_config.items() if k != "deepspeed_multinode_launcher"}
    ds = DeepSpeedPlugin(**settings).deepspeed_config
    assert ds["zero_optimization"]["stage"] == 2
    assert ds["zero_optimization"]["offload_optimizer"]["device"] == "cpu"
    assert ds["gradient_clipping"] == 1.0
    from deepspeed.runtime.config import DeepSpeedConfig  # DeepSpeed's own checks, with accelerate's "auto" filled in

    filled = {**ds, "train_batch_size": 4, "train_micro_batch_size_per_gpu": 4, "bf16": {"enabled": True}}
    parsed = DeepSpeedConfig(filled)
    assert parsed.zero_optimization_stage == 2 and str(parsed.zero_config.offload_optimizer.device).endswith("cpu")
