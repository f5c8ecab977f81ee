import math

import pytest
import torch

from icp import methods
from icp.methods import Batch, MethodContext
from icp.methods.tfkd import manual_teacher


class Fixed(torch.nn.Module):
    def forward(self, x):
        return x


def _tfkd(k, **options):
    ctx = MethodContext(k, 2, 1, 1, torch.device("cpu"), torch.zeros(2, dtype=torch.long))
    return methods.build_method("tfkd", Fixed(), options, ctx)


def test_loss_equals_hand_computation():
    logits = [[2.0, 0.5, -1.0], [0.0, 1.0, 3.0]]
    y = [0, 1]
    alpha, t, mult, a, k = 0.3, 5.0, 10.0, 0.9, 3
    out = _tfkd(k, alpha=alpha, temperature=t, multiplier=mult, correct_prob=a).forward_train(
        Batch(torch.tensor(logits), torch.tensor(y), torch.arange(2)), 0)
    ce = kl_sum = 0.0
    for row, label in zip(logits, y):
        logp = [v - math.log(sum(math.exp(u) for u in row)) for v in row]
        ce += -logp[label] / 2
        pd = [a if c == label else (1 - a) / (k - 1) for c in range(k)]
        q = [math.exp(v / t) / sum(math.exp(u / t) for u in pd) for v in pd]
        kl_sum += sum(qc * (math.log(qc) - lp) for qc, lp in zip(q, logp))
    assert out.losses["ce"].item() == pytest.approx((1 - alpha) * ce, rel=1e-6)
    # official nn.KLDivLoss() 'mean': divided by all B·K elements, no T² factor
    assert out.losses["reg"].item() == pytest.approx(alpha * mult * kl_sum / (2 * k), rel=1e-6)


def test_official_teacher_is_nearly_uniform():
    q = manual_teacher(torch.tensor([3]), 10, 0.99, 20.0)[0]
    assert q.sum().item() == pytest.approx(1.0)
    assert q[3].item() == pytest.approx(0.1045, abs=1e-4) and (q[torch.arange(10) != 3] - 0.0995).abs().max() < 1e-4


def test_options_are_checked():
    from icp.config import ConfigError

    assert methods.validate_options("tfkd", {}) == {"alpha": 0.1, "temperature": 20.0, "multiplier": 100.0,
                                                   "correct_prob": 0.99}
    with pytest.raises(ConfigError, match=r"^method.options.correct_prob: expected a number in \(0, 1\), got 1.0$"):
        methods.validate_options("tfkd", {"correct_prob": 1.0})


def test_one_epoch_learns(one_epoch_top1):
    assert one_epoch_top1("method.name=tfkd") > 0.5
