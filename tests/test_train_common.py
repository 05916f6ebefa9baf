"""The training toolkit the nano part scripts share: the command line, the loop, the schedule, EMA, InfoNCE."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F

from nextgpt.train.common import (Run, RunConfig, ema_update, load_state, optimizer_step, parse_config, soft_infonce,
                                  warmup_cosine)


@dataclass
class _Config(RunConfig):
    channels: tuple = (8, 16)
    guidance_scale: float = 5.0
    zero_snr: bool = True
    no_ship: bool = False

    OLD_NAMES = {"guidance": "guidance_scale"}


def test_every_field_is_a_flag_in_either_spelling_and_old_names_still_parse():
    cfg, extra = parse_config(_Config, ["--guidance", "2", "--channels", "4,4,8", "--log_every", "3", "--no-ship",
                                        "--zero-snr", "false", "--max-minutes", "1.5", "--n", "7"],
                              extra=lambda p: p.add_argument("--n", type=int))
    assert (cfg.guidance_scale, cfg.channels, cfg.log_every, cfg.max_minutes) == (2.0, (4, 4, 8), 3, 1.5)
    assert cfg.no_ship is True and cfg.zero_snr is False and extra == {"n": 7}
    assert parse_config(_Config, [])[0] == _Config()
    with pytest.raises(SystemExit):
        parse_config(_Config, ["--not-a-field", "1"])


def test_warmup_cosine_shapes():
    assert warmup_cosine(0, 100, 10) == pytest.approx(0.1) and warmup_cosine(9, 100, 10) == 1.0
    assert warmup_cosine(100, 100, 10, floor=0.1) == pytest.approx(0.1)
    assert warmup_cosine(55, 100, 10) == pytest.approx(0.5)  # half way through the cosine
    # decay_from_start: the cosine spans every step, the warmup scales it
    assert warmup_cosine(0, 100, 10, decay_from_start=True) == pytest.approx(0.1)
    assert warmup_cosine(50, 100, 10, decay_from_start=True) == pytest.approx(0.5)
    assert warmup_cosine(50, 100, 10, floor=0.1, decay_from_start=True) == pytest.approx(0.55)


def test_soft_infonce_is_infonce_when_every_label_differs_and_soft_otherwise():
    torch.manual_seed(0)
    a, b = torch.randn(6, 4), torch.randn(6, 4)
    logits = 3.0 * F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T
    plain = 0.5 * (F.cross_entropy(logits, torch.arange(6)) + F.cross_entropy(logits.T, torch.arange(6)))
    assert soft_infonce(a, b, torch.arange(6), torch.tensor(3.0)) == pytest.approx(plain.item(), rel=1e-5)
    same = torch.tensor([0, 0, 1, 1, 2, 2])  # pairs of positives: each row's target is uniform over its pair
    target = (same[:, None] == same[None, :]).float() / 2
    soft = 0.5 * (-(target * logits.log_softmax(1)).sum(1).mean() - (target * logits.log_softmax(0)).sum(0).mean())
    assert soft_infonce(a, b, same, torch.tensor(3.0)) == pytest.approx(soft.item(), rel=1e-5)

def test_run_steps_resumes_saves_and_stops_at_its_budget(tmp_path):
    model = torch.nn.Linear(2, 1)
    ema = torch.nn.Linear(2, 1).requires_grad_(False)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    seen = []
    run = Run(tmp_path, save_every_s=1e9)
    for step in run.steps(3, {"model": model, "ema": ema}, {"opt": opt}):
        seen.append(step)
        optimizer_step(opt, model(torch.ones(1, 2)).sum(), model.parameters())
        ema_update(ema, model, 0.999, step + 1)
    assert seen == [0, 1, 2] and run.step == 3 and load_state(tmp_path / "state.pt")["step"] == 3
    again = Run(tmp_path, save_every_s=1e9)
    assert list(again.steps(5, {"model": model, "ema": ema}, {"opt": opt})) == [3, 4]  # goes on, not over
    assert list(Run(tmp_path).steps(9, {"model": model, "ema": ema}, {"opt": opt}, max_minutes=1e-9)) == []
    assert load_state(tmp_path / "state.pt")["step"] == 5  # stopped by its budget, resumable where it was
    assert not math.isnan(ema.weight.sum().item())
