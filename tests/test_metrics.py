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
