import math

import pytest
import torch

from icp.metrics import EvalMetrics


def test_metrics_match_hand_computation():
    # 3 classes, 4 samples; predictions (argmax) = [0, 1, 1, 2], targets = [0, 1, 2, 2]
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.6, 0.1], [0.1, 0.1, 0.8]])
    target = torch.tensor([0, 1, 2, 2])
    m = EvalMetrics(3)
    m.update(probs.log(), target)  # log-probs are valid logits: softmax(log p) = p
    out = m.compute()
    assert out["top1"] == pytest.approx(3 / 4)
    # per class: precision 1, 1/2, 1 ; recall 1, 1, 1/2 ; F1 1, 2/3, 2/3
    assert out["precision"] == pytest.approx((1 + 0.5 + 1) / 3, abs=1e-6)
    assert out["recall"] == pytest.approx((1 + 1 + 0.5) / 3, abs=1e-6)
    assert out["macro_f1"] == pytest.approx((1 + 2 / 3 + 2 / 3) / 3, abs=1e-6)
    assert out["nll"] == pytest.approx(-(math.log(0.7) + math.log(0.8) + math.log(0.1) + math.log(0.8)) / 4, abs=1e-6)
    # ECE, 10 bins: confidences 0.7 (correct, bin 7), 0.8 (correct), 0.6 (wrong, bin 6), 0.8 (correct)
    # bin 0.7-0.8 holds 0.7 -> |1-0.7|; bin 0.8-0.9 holds 0.8,0.8 -> |1-0.8|*2 ; bin 0.6-0.7: |0-0.6|
    ece = (abs(1 - 0.7) + 2 * abs(1 - 0.8) + abs(0 - 0.6)) / 4
    assert out["ece"] == pytest.approx(ece, abs=1e-6)


def test_metrics_reset_between_evaluations():
    m = EvalMetrics(2)
    m.update(torch.tensor([[5.0, 0.0]]), torch.tensor([1]))
    assert m.compute()["top1"] == 0.0
    m.update(torch.tensor([[5.0, 0.0]]), torch.tensor([0]))
    assert m.compute()["top1"] == 1.0  # not 0.5: nothing left over from the first pass


def _torchmetrics(k: int, batches) -> dict[str, float]:
    """The same evaluation through torchmetrics' own classes, as icp.metrics used them before."""
    from torchmetrics import MeanMetric, MetricCollection
    from torchmetrics.classification import (MulticlassAccuracy, MulticlassCalibrationError, MulticlassF1Score,
                                             MulticlassPrecision, MulticlassRecall)
    col = MetricCollection({"top1": MulticlassAccuracy(k, average="micro"),
                            "macro_f1": MulticlassF1Score(k, average="macro"),
                            "precision": MulticlassPrecision(k, average="macro"),
                            "recall": MulticlassRecall(k, average="macro"),
                            "ece": MulticlassCalibrationError(k, n_bins=10, norm="l1")})
    nll = MeanMetric()
    for logits, target in batches:
        col.update(logits.float().softmax(dim=1), target)
        nll.update(torch.nn.functional.cross_entropy(logits.float(), target, reduction="none"))
    return {**{name: float(v) for name, v in col.compute().items()}, "nll": float(nll.compute())}


@pytest.mark.parametrize("case", ["random", "classes never seen", "one class", "ties and confident"])
def test_the_classifier_metrics_equal_torchmetrics(case):
    """icp.metrics computes torchmetrics' classification metrics without importing it (3.8 s a run): equal to
    float32 rounding on batches with every class, with classes that are neither labels nor predictions (left out
    of the macro averages), with one class only, and with tied logits and confidences on the bin edges."""
    g = torch.Generator().manual_seed(0)
    k = 10
    batches = []
    for i in range(4):
        n = 37 + i
        logits = torch.randn(n, k, generator=g) * 3
        target = torch.randint(0, k, (n,), generator=g)
        if case == "classes never seen":
            target = target % 4
            logits[:, 6:] -= 100  # never predicted
        elif case == "one class":
            target = torch.zeros(n, dtype=torch.long)
        elif case == "ties and confident":
            logits = torch.zeros(n, k)
            logits[::3, 0] = 50.0  # confidence 1.0, the last bin's edge
        batches.append((logits, target))
    m = EvalMetrics(k)
    for logits, target in batches:
        m.update(logits, target)
    ours, theirs = m.compute(), _torchmetrics(k, batches)
    assert ours.keys() == theirs.keys()
    for name in ours:
        assert ours[name] == pytest.approx(theirs[name], rel=1e-6, abs=1e-7), name
