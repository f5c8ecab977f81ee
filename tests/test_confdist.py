import math

import pytest
import torch

from icp import methods
from icp.config import ConfigError
from icp.methods import Batch, MethodContext
from icp.methods.confdist import phase_ends
from tests.conftest import assert_resume_is_exact


class Fixed(torch.nn.Module):
    """A 'model' whose logits are the input itself."""

    def forward(self, x):
        return x


def _confdist(k, epochs, labels=None, **options):
    labels = torch.zeros(4, dtype=torch.long) if labels is None else labels
    ctx = MethodContext(k, len(labels), epochs, 1, torch.device("cpu"), labels)
    return methods.build_method("confdist", Fixed(), options, ctx)


# --- the official code (KangWooya/What_Do_Students_Learn, training/train_cd.py), re-written ---------------------------
def official_init_smoothing_matrix(K, smoothing):
    p_true = 1.0 - smoothing + (smoothing / K)
    p_false = smoothing / K
    m = torch.full((K, K), p_false, dtype=torch.float32)
    m.fill_diagonal_(p_true)
    return m


def official_confkd_mode(epoch, segments):
    """epoch 1-based; even-indexed segments are hard (base), odd-indexed ones confusion distillation."""
    total = 0
    for i, length in enumerate(segments):
        total += length
        if epoch <= total:
            return i % 2 == 1
    return len(segments) % 2 == 1


def official_confusion_prob(labels, preds, K):
    """``_compute_confusion_prob`` given the (label, prediction) pairs its loop counts."""
    conf_mat = torch.zeros((K, K), dtype=torch.float32)
    for t, p in zip(labels, preds):
        conf_mat[t, p] += 1
    conf_mat = conf_mat + 1e-8
    return conf_mat / conf_mat.sum(axis=1, keepdims=True)


def official_loss(outputs, labels, use_confusion, prev_conf_prob, T, soft_w, ce_w):
    ce = torch.nn.CrossEntropyLoss()(outputs, labels)
    if not use_confusion:
        return ce
    soft_targets = prev_conf_prob[labels]
    log_q = torch.log_softmax(outputs / T, dim=-1)
    kl = torch.sum(soft_targets * (torch.log(soft_targets + 1e-8) - log_q), dim=1).mean()
    return soft_w * (T ** 2) * kl + ce_w * ce


@pytest.mark.parametrize("ratios,epochs,absolute", [([3, 3, 6, 3, 15], 300, [30, 30, 60, 30, 150]),
                                                    ([3, 3, 3, 3, 8], 200, [30, 30, 30, 30, 80]),
                                                    ([3, 3, 3, 3, 2, 2, 2, 2], 200, [30] * 4 + [20] * 4),
                                                    ([3, 17], 200, [30, 170])])
def test_phase_schedule_equals_the_official_one(ratios, epochs, absolute):
    m = _confdist(10, epochs, phases=ratios)
    assert [m.soft(e - 1) for e in range(1, epochs + 1)] == [official_confkd_mode(e, absolute)
                                                            for e in range(1, epochs + 1)]
    assert phase_ends(ratios, epochs)[0] == absolute[0]  # official start_update = transition_epoch[0]


def test_losses_and_ema_equal_the_official_loop():
    """Six epochs of phases 2:2:2 (official --transition_epoch 2 2 2) on fixed logits: every step's loss and the
    EMA of the confusion ratio equal the official loop's, the confusion being counted from the same
    (label, prediction) pairs (the official code counts test-set predictions; we count the training steps')."""
    K, T, soft_w, ce_w, ema, eps = 4, 2.0, 0.7, 0.3, 0.9, 0.1
    epochs, segments = 6, [2, 2, 2]
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, K, (12,), generator=g)
    m = _confdist(K, epochs, labels, soft_weight=soft_w, ce_weight=ce_w, temperature=T, ema=ema,
                  smoothing=eps, phases=[1, 1, 1])
    prev_conf_prob = official_init_smoothing_matrix(K, eps)
    assert torch.equal(m.confusion, prev_conf_prob)
    soft_epochs = 0
    for epoch in range(1, epochs + 1):  # the official loop's 1-based epoch
        m.on_epoch_start(epoch - 1)
        torch.testing.assert_close(m.confusion, prev_conf_prob, rtol=1e-6, atol=1e-7)
        use_confusion = official_confkd_mode(epoch, segments)
        soft_epochs += use_confusion
        seen_y, seen_pred = [], []
        for idx in torch.arange(12).view(3, 4):  # three batches of four
            logits = 3 * torch.randn(4, K, generator=g)
            out = m.forward_train(Batch(logits, labels[idx], idx), epoch - 1)
            expected = official_loss(logits, labels[idx], use_confusion, prev_conf_prob, T, soft_w, ce_w)
            assert sum(out.losses.values()).item() == pytest.approx(expected.item(), rel=1e-5)
            m.after_step(Batch(logits, labels[idx], idx), out, epoch - 1)
            seen_y += labels[idx].tolist()
            seen_pred += logits.argmax(1).tolist()
        if epoch < epochs and epoch >= segments[0]:
            conf_prob = official_confusion_prob(seen_y, seen_pred, K)
            prev_conf_prob = ema * prev_conf_prob + (1.0 - ema) * conf_prob
    assert soft_epochs == 2
    assert not torch.allclose(prev_conf_prob, official_init_smoothing_matrix(K, eps))  # the EMA moved


def test_hard_phase_is_plain_ce_and_soft_target_is_the_label_row():
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.0, 1.0, 3.0]])
    y = torch.tensor([0, 2])
    m = _confdist(3, 2, phases=[1, 1])
    hard = m.forward_train(Batch(logits, y, torch.arange(2)), 0)
    assert hard.losses["ce"].item() == pytest.approx(torch.nn.functional.cross_entropy(logits, y).item())
    assert hard.losses["soft"].item() == 0
    m.confusion.copy_(torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.8, 0.1], [0.25, 0.25, 0.5]]))
    soft = m.forward_train(Batch(logits, y, torch.arange(2)), 1)
    kl = 0.0
    for row, label in zip(logits.tolist(), y.tolist()):
        lse = math.log(sum(math.exp(v / 2) for v in row))
        p = m.confusion[label].tolist()
        kl += sum(pk * (math.log(pk + 1e-8) - (v / 2 - lse)) for pk, v in zip(p, row)) / 2
    assert soft.losses["soft"].item() == pytest.approx(0.7 * 4 * kl, rel=1e-6)


def test_options_are_checked():
    assert methods.validate_options("confdist", {}) == {"soft_weight": 0.7, "ce_weight": 0.3, "temperature": 2.0,
                                                       "ema": 0.9, "smoothing": 0.1, "phases": [3, 3, 6, 3, 15]}
    with pytest.raises(ConfigError, match=r"^method.options.ema: expected a number in \[0, 1\], got 1.5$"):
        methods.validate_options("confdist", {"ema": 1.5})
    with pytest.raises(ConfigError, match=r"^method.options.phases: expected a non-empty list of numbers > 0 "
                                          r"\(hard, soft, hard, ... phase lengths\), got \[3, 0\]$") as e:
        methods.validate_options("confdist", {"phases": [3, 0]})
    assert "\n" not in str(e.value)
    assert methods.options_of("confdist")().step_cost(0, 10) == 1.0


def test_state_survives_checkpoint_and_resume_and_the_run_is_finite(tiny_cfg, tmp_path):
    """2 epochs, phases 1:1: epoch 1 hard, epoch 2 soft from the EMA of epoch 1's training confusion."""
    import json

    from icp.methods.confdist import smoothing_matrix

    state = assert_resume_is_exact(tiny_cfg("method.name=confdist", "method.options.phases=[1, 1]"), tmp_path)
    confusion = state["confusion"]
    assert confusion.shape == (10, 10) and torch.allclose(confusion.sum(1), torch.ones(10))
    assert not torch.allclose(confusion, smoothing_matrix(10, 0.1))  # folded in epoch 1's confusion
    assert state["counts"].sum() == 600  # the last epoch's training samples, counted
    epochs = json.loads((tmp_path / "full" / "record.json").read_text())["epochs"]
    assert epochs[0]["train"]["soft"] == 0 and epochs[1]["train"]["soft"] > 0
    assert all(math.isfinite(e["train"][k]) for e in epochs for k in ("ce", "soft", "loss"))
