import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from icp import engine, methods
from icp.config import ConfigError
from icp.methods import Batch, MethodContext
from icp.methods.mixup import draw, mixup_loss
from tests.conftest import assert_resume_is_exact


# ------------------------------------- the official formulation, re-written (facebookresearch/mixup-cifar10)
def _official_mixup_data(x, y, lam, index):
    """train.py mixup_data, with its λ and permutation given."""
    mixed_x = lam * x + (1 - lam) * x[index, :]
    return mixed_x, y, y[index]


def _official_mixup_criterion(criterion, pred, y_a, y_b, lam):
    """train.py mixup_criterion."""
    return lam * criterion(pred, y_a) + (1 - lam) * criterion(pred, y_b)


class Linear(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.fc = nn.Linear(6, 4)

    def forward(self, x):
        return self.fc(x.flatten(1))


def _ctx(n=5, k=4):
    return MethodContext(k, n, 1, 1, torch.device("cpu"), torch.zeros(n, dtype=torch.long))


def test_loss_equals_the_official_formulation_with_a_seeded_lambda():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(5, 1, 2, 3, generator=g) * 2, torch.tensor([0, 3, 1, 1, 2])
    m = methods.build_method("mixup", Linear(), {"alpha": 0.4}, _ctx())
    torch.manual_seed(7)  # the engine seeds torch's generator every epoch
    out = m.forward_train(Batch(x, y, torch.arange(5)), 0)
    torch.manual_seed(7)  # the same draw: one λ ~ Beta(0.4, 0.4), one permutation
    lam, perm = draw(0.4, 5)
    assert 0 < lam < 1 and sorted(perm.tolist()) == list(range(5))
    mixed, y_a, y_b = _official_mixup_data(x, y, lam, perm)
    official = _official_mixup_criterion(nn.CrossEntropyLoss(), m.model(mixed), y_a, y_b, lam)
    torch.testing.assert_close(out.losses["mixup"], official, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(out.logits, m.model(mixed))  # trained on the mixed images alone
    assert set(out.losses) == {"mixup"} and out.labels is None
    # the mixed one-hot target of Eq. 1 gives the same loss
    target = lam * nn.functional.one_hot(y, 4) + (1 - lam) * nn.functional.one_hot(y[perm], 4)
    assert out.losses["mixup"].item() == pytest.approx(
        -(target * out.logits.log_softmax(1)).sum(1).mean().item(), rel=1e-5)
    # a seeded λ is the Beta(α, α) draw: its distribution (mean 1/2, variance 1/(4(2α + 1)))
    torch.manual_seed(0)
    lams = np.array([draw(0.4, 2)[0] for _ in range(4000)])
    assert lams.mean() == pytest.approx(0.5, abs=0.02) and lams.var() == pytest.approx(1 / 7.2, rel=0.08)


def test_mixup_loss_is_the_official_criterion_on_fixed_tensors():
    g = torch.Generator().manual_seed(1)
    z, y, perm, lam = torch.randn(6, 5, generator=g) * 3, torch.tensor([0, 4, 2, 2, 1, 3]), \
        torch.tensor([3, 0, 5, 1, 4, 2]), 0.27
    ours = mixup_loss(z, y, lam, perm)
    official = _official_mixup_criterion(nn.CrossEntropyLoss(), z, y, y[perm], lam)
    torch.testing.assert_close(ours, official)


def test_options_are_validated_in_one_line_and_it_costs_a_ce_step():
    from icp.methods import mixskd
    from icp.methods.options import training_cost

    assert methods.validate_options("mixup", {}) == {"alpha": mixskd.MixSKDOptions().mixup_alpha}  # MixSKD's α
    for bad in ({"alpha": 0}, {"alpha": -1}):
        with pytest.raises(ConfigError) as exc:
            methods.validate_options("mixup", bad)
        assert "\n" not in str(exc.value) and str(exc.value).startswith("method.options.alpha:")
    assert training_cost("mixup", {}, 10) == 10


def test_real_training_is_finite_and_resumes_exactly(tiny_cfg, tmp_path):
    cfg = tiny_cfg("method.name=mixup", "train.epochs=2", "data.train_subset=200")
    assert_resume_is_exact(cfg, tmp_path)  # the same λ and π after a resume
    record = engine.Trainer(cfg, tmp_path / "full").run()
    for entry in record["epochs"]:
        assert entry["images"] == 200 and math.isfinite(entry["train"]["loss"])
