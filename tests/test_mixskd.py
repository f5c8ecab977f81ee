import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from icp import engine, methods, model_registry
from icp.methods import Batch, MethodContext
from icp.methods.mixskd import discriminator, mixskd_losses
from icp.schema import ConfigError
from tests.conftest import assert_resume_is_exact


# ---------------------------------------------------- the official formulation, re-written (winycg/Self-KD-Lib)
def _official_distill_kl(y_s, y_t, T):
    """utils.py DistillKL."""
    return F.kl_div(F.log_softmax(y_s / T, dim=1), F.softmax(y_t / T, dim=1), reduction="batchmean") * (T ** 2)


def _official_discriminator_loss(classifiers, features1, features2):
    """methods/adversarial.py discriminatorLoss.forward (on the CPU)."""
    gan_loss = torch.tensor(0.)
    for i in range(len(classifiers)):
        inputs = torch.cat((features1[i], features2[i]), 0)
        if len(inputs.size()) > 2:
            inputs = nn.AdaptiveAvgPool2d((1, 1))(inputs).view(inputs.size(0), -1)
        batch_size = inputs.size(0)
        target = torch.FloatTensor([[1, 0] for _ in range(batch_size // 2)] + [[0, 1] for _ in range(batch_size // 2)])
        gan_loss += nn.BCEWithLogitsLoss()(classifiers[i](inputs), target)
    return gan_loss


def _official_train_losses(logits, features, ensemle_logits, ensemble_mixup_logits, targets, lam, index, T, disc):
    """main_mixskd_cifar.py train(), the loss terms after ``net(all_inputs, lam, index)``."""
    bs = targets.size(0)
    targets_a, targets_b = targets, targets[index]
    criterion_cls = nn.CrossEntropyLoss()

    def mixup_criterion(pred):
        return lam * criterion_cls(pred, targets_a) + (1 - lam) * criterion_cls(pred, targets_b)

    mix_logits = [lam * logit[:bs] + (1 - lam) * logit[index] for logit in logits]
    ensemble_features = [lam * (fea[:bs]) + (1 - lam) * (fea[index]) for fea in features]
    mixup_logits = [logit[bs:] for logit in logits]
    mixup_features = [fea[bs:] for fea in features]
    loss_cls = torch.tensor(0.)
    loss_mixcls = torch.tensor(0.)
    for logit in logits:
        loss_cls += criterion_cls(logit[:bs], targets)
    for mixup_logit in mixup_logits:
        loss_mixcls += mixup_criterion(mixup_logit)
    loss_mixcls += mixup_criterion(ensemle_logits)
    loss_mixcls += mixup_criterion(ensemble_mixup_logits)
    loss_div = torch.tensor(0.)
    loss_div += _official_distill_kl(mix_logits[-1], ensemble_mixup_logits.detach(), T)
    loss_div += _official_distill_kl(mixup_logits[-1], ensemle_logits.detach(), T)
    for i in range(len(mix_logits) - 1):
        loss_div += _official_distill_kl(mix_logits[i], mixup_logits[i].detach(), T)
        loss_div += _official_distill_kl(mixup_logits[i], mix_logits[i].detach(), T)
    loss_fea = torch.tensor(0.)
    for fi in range(len(features)):
        loss_fea += F.mse_loss(ensemble_features[fi], mixup_features[fi])
    loss_gan = _official_discriminator_loss(disc, ensemble_features, mixup_features)
    return {"ce": loss_cls, "mixup_ce": loss_mixcls, "kd": loss_div, "feat": loss_fea, "disc": loss_gan}


def _fixed_inputs():
    g = torch.Generator().manual_seed(0)
    b, k, c, s, t, lam = 4, 5, 6, 3, 3.0, 0.3
    logits = [(torch.randn(2 * b, k, generator=g) * 2).requires_grad_(True) for _ in range(s)]
    maps = [torch.randn(2 * b, c, 2, 2, generator=g).requires_grad_(True) for _ in range(s)]
    t_mix, t_mixed = (torch.randn(b, k, generator=g).requires_grad_(True) for _ in range(2))
    y, perm = torch.tensor([0, 3, 4, 3]), torch.tensor([2, 0, 3, 1])
    torch.manual_seed(1)
    disc = nn.ModuleList(discriminator(c) for _ in range(s))
    return logits, maps, t_mix, t_mixed, y, lam, perm, t, disc


# the official formulation's values on _fixed_inputs() (ours equal them to float32 tolerance)
OFFICIAL_VALUES = {"ce": 7.39538, "mixup_ce": 14.62611, "kd": 13.41721, "feat": 4.68326, "disc": 2.09121}


@pytest.mark.parametrize("mixup_ce", [True, False])
def test_losses_and_gradients_equal_the_official_formulation(mixup_ce):
    logits, maps, t_mix, t_mixed, y, lam, perm, t, disc = _fixed_inputs()
    s = len(logits)
    disc.requires_grad_(False)  # the official discriminators: a Python list, never optimised
    ours = mixskd_losses(logits, maps, t_mix, t_mixed, y, lam, perm, t, disc, mixup_ce)
    official = _official_train_losses(logits, maps, t_mix, t_mixed, y, lam, perm, t, disc)
    assert set(ours) == ({"ce", "mixup_ce", "kd", "feat", "disc"} if mixup_ce else {"ce", "kd", "feat", "disc"})
    for name in ours:
        torch.testing.assert_close(ours[name], official[name], rtol=1e-5, atol=1e-6)
        assert official[name].item() == pytest.approx(OFFICIAL_VALUES[name], abs=1e-4)
    # the same gradients for every input: the same detached teachers, the network minimising the fixed BCE
    # (official loss: cls + div + fea + gan, + mixcls as main_mixskd_imagenet.py back-propagates it)
    leaves = [*logits, *maps, t_mix, t_mixed]
    ours_g = torch.autograd.grad(sum(ours.values()), leaves, allow_unused=True)
    off_total = official["ce"] + official["kd"] + official["feat"] + official["disc"] + (
        official["mixup_ce"] if mixup_ce else 0)
    for a, e in zip(ours_g, torch.autograd.grad(off_total, leaves, allow_unused=True)):
        assert (a is None) == (e is None)
        if a is not None:
            torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-6)
    # without the mixup CE (the CIFAR script as it runs) nothing trains the self-teacher: its logits are only
    # ever detached KD targets
    assert (ours_g[2 * s] is None) == (not mixup_ce) and (ours_g[2 * s + 1] is None) == (not mixup_ce)


def test_the_adversarial_option_is_a_min_max_over_the_same_bce():
    logits, maps, t_mix, t_mixed, y, lam, perm, t, disc = _fixed_inputs()
    ours = mixskd_losses(logits, maps, t_mix, t_mixed, y, lam, perm, t, disc, True, adversarial=True)
    official = _official_train_losses(logits, maps, t_mix, t_mixed, y, lam, perm, t, disc)
    for name in ours:  # the same values
        torch.testing.assert_close(ours[name], official[name], rtol=1e-5, atol=1e-6)
    net, d_params = [*logits, *maps, t_mix, t_mixed], list(disc.parameters())
    total = sum(ours.values())
    g_net = torch.autograd.grad(total, net, retain_graph=True, allow_unused=True)
    g_d = torch.autograd.grad(total, d_params)
    rest = official["ce"] + official["mixup_ce"] + official["kd"] + official["feat"]
    # the network descends every other term and *ascends* the discriminators' BCE ...
    expected = torch.autograd.grad(rest - official["disc"], net, retain_graph=True, allow_unused=True)
    for a, e in zip(g_net, expected):
        assert (a is None) == (e is None)
        if a is not None:
            torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-6)
    # ... which the discriminators descend
    for a, e in zip(g_d, torch.autograd.grad(official["disc"], d_params)):
        torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-6)


def _mixskd(**options):
    model = model_registry.build_model("resnet20", 10, 1, 28)
    ctx = MethodContext(10, 8, 1, 1, torch.device("cpu"), torch.zeros(8, dtype=torch.long))
    return methods.build_method("mixskd", model, options, ctx)


def test_the_network_has_branches_a_self_teacher_and_discriminators_dropped_at_evaluation():
    m = _mixskd()
    assert len(m.branches) == 2 and len(m.discriminators) == 3
    assert m.teacher.conv.in_channels == 3 * 64 and m.eval_model() is m.model
    trainable = {id(p) for p in m.trainable_parameters()}  # default: the official code's frozen discriminators
    assert not any(id(p) in trainable for p in m.discriminators.parameters())
    assert all(id(p) in trainable for p in [*m.branches.parameters(), *m.teacher.parameters()])
    adversarial = _mixskd(discriminators="adversarial")
    assert all(id(p) in {id(q) for q in adversarial.trainable_parameters()}
               for p in adversarial.discriminators.parameters())
    # the branches are fresh copies of the later stages, not the backbone's own modules
    assert m.branches[0].body[0][0].conv1.weight.shape == m.model.stages[1][0].conv1.weight.shape
    assert not torch.equal(m.branches[0].body[0][0].conv1.weight, m.model.stages[1][0].conv1.weight)
    torch.manual_seed(0)
    x, y = torch.randn(8, 1, 28, 28), torch.arange(8) % 10
    out = m.forward_train(Batch(x, y, torch.arange(8)), 0)
    assert out.logits.shape == (8, 10) and out.labels is None  # the backbone on the B originals
    assert set(out.losses) == {"ce", "mixup_ce", "kd", "feat", "disc"}
    assert all(math.isfinite(v.item()) for v in out.losses.values())
    sum(out.losses.values()).backward()
    for part in (m.model, m.branches, m.teacher):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters())
    assert all(p.grad is None for p in m.discriminators.parameters())
    torch.manual_seed(0)
    sum(adversarial.forward_train(Batch(x, y, torch.arange(8)), 0).losses.values()).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in adversarial.discriminators[0].parameters())


def test_options_are_validated_in_one_line():
    assert methods.validate_options("mixskd", {}) == {"mixup_alpha": 0.4, "temperature": 3.0, "mixup_ce": True,
                                                      "discriminators": "frozen"}
    for bad in ({"mixup_alpha": 0}, {"temperature": -1}, {"mixup_ce": "yes"}, {"discriminators": "joint"}):
        with pytest.raises(ConfigError) as exc:
            methods.validate_options("mixskd", bad)
        assert "\n" not in str(exc.value) and str(exc.value).startswith(f"method.options.{next(iter(bad))}:")
    from icp.methods.options import training_cost

    assert training_cost("mixskd", {}, 10) == 40


def test_real_training_is_finite_and_resumes_exactly(tiny_cfg, tmp_path):
    cfg = tiny_cfg("method.name=mixskd", "train.epochs=2", "data.train_subset=100", "data.test_subset=100")
    state = assert_resume_is_exact(cfg, tmp_path)
    assert {"branches.0.fc.weight", "teacher.conv.weight", "discriminators.0.0.weight"} <= set(state)
    record = engine.Trainer(cfg, tmp_path / "full").run()
    for entry in record["epochs"]:
        assert entry["images"] == 100 and math.isfinite(entry["train"]["loss"])
