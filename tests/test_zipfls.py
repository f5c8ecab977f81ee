import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import rankdata

from icp import methods
from icp.config import ConfigError
from icp.methods import Batch, MethodContext
from icp.methods.zipfls import min_rank


class Fixed(torch.nn.Module):
    """A 'model' whose logits are the input itself."""

    def forward(self, x):
        return x


def _zipfls(k, **options):
    ctx = MethodContext(k, 4, 1, 1, torch.device("cpu"), torch.zeros(4, dtype=torch.long))
    return methods.build_method("zipfls", Fixed(), options, ctx)


def _official(logits, labels, lam, power, do_mask):
    """The official loss (megvii-research/zipfls, pytorch_zipfls: train.py ``train`` with --dense off, --deeplayer 1,
    losses.py ``zipf_loss`` -> ``gen_pdf`` (rank 'hard', distribution 'rank_zipf', with_target False) ->
    ``get_masked_distribution`` and ``kl_loss``), re-written."""
    n, c = logits.shape
    # gen_pdf: ranks of the detached logits on the CPU, scipy 'min' ties
    rank = rankdata(-logits.detach().cpu(), axis=1, method="min")
    mask = torch.ones_like(logits).scatter_(1, labels.unsqueeze(1), 0.)
    dist = (1 / rank) ** power
    dist = dist[mask.bool().numpy()].reshape((n, c - 1))
    dist = dist / dist.sum(axis=1, keepdims=True)
    pdf = torch.Tensor(dist)
    # kl_loss
    res = logits[mask.bool()].view((n, c - 1))
    res = F.log_softmax(res, dim=1)
    kl = F.kl_div(res, pdf, reduction="none").sum(axis=1)
    if do_mask:
        loss_mask = torch.argmax(logits, 1) == labels
        kl = (kl * loss_mask).sum() / loss_mask.sum() if loss_mask.any() else kl.mean() * 0
    else:
        kl = kl.mean()
    # total_loss = loss_lambda * kd_loss + 1 * xent_loss
    return lam * kl + F.cross_entropy(logits, labels)


# ties (rows 1 and 3), a misclassified target (rows 0, 2), a target tied with another class (row 3)
LOGITS = torch.tensor([[2.0, 0.5, -1.0, 3.0, 0.0],
                       [1.0, 1.0, 4.0, 1.0, -2.0],
                       [0.3, -0.7, 2.2, 1.9, 5.0],
                       [0.0, 2.0, 2.0, -1.0, 0.0]])
LABELS = torch.tensor([0, 2, 3, 1])


def test_ranks_equal_scipy_min_ranks():
    assert np.array_equal(min_rank(LOGITS).numpy(), rankdata(-LOGITS.numpy(), axis=1, method="min"))
    g = torch.Generator().manual_seed(0)
    x = torch.randint(-3, 4, (64, 100), generator=g).float()  # many ties
    assert np.array_equal(min_rank(x).numpy(), rankdata(-x.numpy(), axis=1, method="min"))


@pytest.mark.parametrize("lam,power,mask", [(0.1, 1.0, False), (1.0, 1.0, False), (0.5, 1.7, False),
                                            (1.0, 1.0, True)])
def test_loss_equals_the_official_formulation(lam, power, mask):
    out = _zipfls(5, lam=lam, power=power, mask=mask).forward_train(Batch(LOGITS, LABELS, torch.arange(4)), 0)
    total = sum(out.losses.values())
    expected = _official(LOGITS, LABELS, lam, power, mask)
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    assert out.losses["ce"].item() == pytest.approx(F.cross_entropy(LOGITS, LABELS).item(), rel=1e-6)


def test_target_by_hand():
    """Row 0 of LOGITS: ranks [2, 3, 5, 1, 4]; label 0 -> non-target ranks [3, 5, 1, 4], q ∝ 1/r."""
    out = _zipfls(5, lam=1.0).forward_train(Batch(LOGITS[:1], LABELS[:1], torch.arange(1)), 0)
    q = [1 / 3, 1 / 5, 1, 1 / 4]
    q = [v / sum(q) for v in q]
    z = [0.5, -1.0, 3.0, 0.0]
    logp = [v - math.log(sum(math.exp(u) for u in z)) for v in z]
    assert out.losses["zipf"].item() == pytest.approx(sum(a * (math.log(a) - b) for a, b in zip(q, logp)), rel=1e-6)


def test_the_target_is_constant():
    logits = LOGITS.clone().requires_grad_(True)
    out = _zipfls(5, lam=1.0).forward_train(Batch(logits, LABELS, torch.arange(4)), 0)
    out.losses["zipf"].backward()
    # the gradient of KL(q ‖ softmax(z_nt)) w.r.t. z_nt is (softmax(z_nt) − q)/B and 0 on the target column
    assert torch.all(logits.grad.gather(1, LABELS.view(-1, 1)) == 0)
    assert torch.allclose(logits.grad.sum(1), torch.zeros(4), atol=1e-7)


def test_options_are_checked():
    assert methods.validate_options("zipfls", {}) == {"lam": 0.1, "power": 1.0, "mask": False}
    with pytest.raises(ConfigError, match=r"^method.options.lam: expected a number >= 0, got -1.0$"):
        methods.validate_options("zipfls", {"lam": -1})
    with pytest.raises(ConfigError, match=r"^method.options.power: expected a number >= 0, got -0.5$") as e:
        methods.validate_options("zipfls", {"power": -0.5})
    assert "\n" not in str(e.value)
    assert methods.options_of("zipfls")().step_cost(0, 10) == 1.0


def test_short_real_run_is_finite(tiny_cfg, tmp_path):
    from icp import engine

    record = engine.Trainer(tiny_cfg("method.name=zipfls", "method.options.lam=1.0"), tmp_path / "run").run()
    assert record["status"] == "complete"
    for epoch in record["epochs"]:
        train = epoch["train"]
        assert set(train) >= {"ce", "zipf", "loss"}
        assert all(math.isfinite(train[k]) for k in ("ce", "zipf", "loss")) and train["zipf"] > 0
