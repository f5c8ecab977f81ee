import math

import pytest
import torch
import torch.nn.functional as F

from icp import methods
from icp.config import ConfigError
from icp.methods import Batch, MethodContext


class Fixed(torch.nn.Module):
    """A 'model' whose logits are the input itself."""

    def forward(self, x):
        return x


def _maxsup(k, epochs, **options):
    ctx = MethodContext(k, 4, epochs, 1, torch.device("cpu"), torch.zeros(4, dtype=torch.long))
    return methods.build_method("maxsup", Fixed(), options, ctx)


def _official(output, target, epoch, epochs):
    """The official loss (ZhouYuxuanYX/Maximum-Suppression-Regularization, Conv/common_resnet/train.py
    ``train_one_epoch``; the same in LT/loss/MAXsupLoss.py and OOD/src/model.py), re-written."""
    lam = 0.1 + 0.1 * epoch / (epochs - 1)
    loss_criterion = torch.nn.CrossEntropyLoss(label_smoothing=0.0)
    z_top1 = output.topk(1, -1)[0]
    reg = z_top1 - output.mean(-1, keepdim=True)
    return loss_criterion(output, target) + lam * reg.mean()


LOGITS = torch.tensor([[2.0, 0.5, -1.0, 3.0, 0.0],
                       [1.0, 1.5, 4.0, 1.0, -2.0],
                       [0.3, -0.7, 2.2, 1.9, 5.0],
                       [0.1, 2.0, 2.5, -1.0, 0.0]])
LABELS = torch.tensor([0, 2, 3, 1])


@pytest.mark.parametrize("epoch,epochs", [(0, 200), (57, 200), (199, 200), (3, 10)])
def test_loss_and_gradient_equal_the_official_formulation(epoch, epochs):
    mine = LOGITS.clone().requires_grad_(True)
    out = _maxsup(5, epochs).forward_train(Batch(mine, LABELS, torch.arange(4)), epoch)
    total = sum(out.losses.values())
    official = LOGITS.clone().requires_grad_(True)
    expected = _official(official, LABELS, epoch, epochs)
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    total.backward()
    expected.backward()
    torch.testing.assert_close(mine.grad, official.grad, rtol=1e-6, atol=1e-7)


def test_schedule_and_term_by_hand():
    m = _maxsup(5, 11, alpha_start=0.05, alpha_end=0.25)
    assert [m.alpha(e) for e in (0, 5, 10)] == pytest.approx([0.05, 0.15, 0.25])
    assert _maxsup(5, 1).alpha(0) == pytest.approx(0.1)  # one epoch: α_0 (official max(1, T − 1))
    out = m.forward_train(Batch(LOGITS, LABELS, torch.arange(4)), 5)
    reg = sum(max(r) - sum(r) / len(r) for r in LOGITS.tolist()) / 4
    assert out.losses["maxsup"].item() == pytest.approx(0.15 * reg, rel=1e-6)
    assert out.losses["ce"].item() == pytest.approx(F.cross_entropy(LOGITS, LABELS).item(), rel=1e-6)


def test_options_are_checked():
    assert methods.validate_options("maxsup", {}) == {"alpha_start": 0.1, "alpha_end": 0.2}
    with pytest.raises(ConfigError, match=r"^method.options.alpha_end: expected a number >= 0, got -0.2$") as e:
        methods.validate_options("maxsup", {"alpha_end": -0.2})
    assert "\n" not in str(e.value)
    assert methods.options_of("maxsup")().step_cost(0, 10) == 1.0


def test_short_real_run_is_finite(tiny_cfg, tmp_path):
    from icp import engine

    record = engine.Trainer(tiny_cfg("method.name=maxsup"), tmp_path / "run").run()
    assert record["status"] == "complete"
    for epoch in record["epochs"]:
        train = epoch["train"]
        assert all(math.isfinite(train[k]) for k in ("ce", "maxsup", "loss")) and train["maxsup"] > 0
