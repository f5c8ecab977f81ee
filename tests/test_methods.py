import math

import pytest
import torch

from icp import methods
from icp.methods import Batch, MethodContext


def _ctx(n=4, k=3):
    return MethodContext(k, n, 1, 1, torch.device("cpu"), torch.zeros(n, dtype=torch.long))


class Fixed(torch.nn.Module):
    def __init__(self, logits):
        super().__init__()
        self.logits = torch.nn.Parameter(logits.clone())

    def forward(self, x):
        return self.logits


def test_registry_lists_builtins():
    assert {"ce", "ls", "pskd", "aikd", "cskd", "tfkd", "byot"} <= set(methods.list_methods())
    with pytest.raises(Exception, match="did you mean 'ce'"):
        methods.get("cee")


def test_the_torch_free_registry_names_every_method_with_its_options():
    """icp.methods.options (read by the grid and the config without torch) and the methods agree."""
    for name in methods.list_methods():
        assert methods.get(name).Options is methods.options_of(name), name
    assert sorted(methods.METHODS) == methods.list_methods()
    with pytest.raises(TypeError, match="must be declared first"):
        methods.register(type("Unlisted", (methods.Method,), {"name": "unlisted"}))


def test_label_smoothing_equals_hand_computation():
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.0, 1.0, 3.0]])
    y = torch.tensor([0, 1])
    eps, k = 0.1, 3
    m = methods.build_method("ls", Fixed(logits), {"epsilon": eps}, _ctx(2, k))
    out = m.forward_train(Batch(torch.zeros(2, 1), y, torch.arange(2)), 0)
    expected = 0.0
    for row, t in zip(logits.tolist(), y.tolist()):
        lse = math.log(sum(math.exp(v) for v in row))
        logp = [v - lse for v in row]
        q = [(1 - eps) * (c == t) + eps / k for c in range(k)]
        expected += -sum(qc * lp for qc, lp in zip(q, logp))
    assert out.losses["ls"].item() == pytest.approx(expected / 2, rel=1e-6)
    ce = methods.build_method("ce", Fixed(logits), {}, _ctx(2, k)).forward_train(
        Batch(torch.zeros(2, 1), y, torch.arange(2)), 0)
    assert out.losses["ls"].item() != pytest.approx(ce.losses["ce"].item())


def test_options_are_validated_and_filled():
    assert methods.validate_options("ls", {}) == {"epsilon": 0.1}
