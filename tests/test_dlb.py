import math

import pytest
import torch
import torch.nn.functional as F

from icp import checkpoint, engine, loaders, methods
from icp.config import ConfigError
from icp.methods import Batch, MethodContext
from tests.conftest import assert_resume_is_exact


class Identity(torch.nn.Module):
    def forward(self, x):
        return x


def _dlb(n=10, k=3, **options):
    labels = torch.arange(n) % k
    ctx = MethodContext(k, n, 1, 1, torch.device("cpu"), labels)
    return methods.build_method("dlb", Identity(), options, ctx)


def _official_dlb_loss(out, out_pre, pre_out, label, pre_label, T, alpha):
    """Meta-knowledge-Lab/DLB dlb.py, train_one_epoch (re-written): CE over both halves + α·T²·KL(batchmean)."""
    ce_loss = F.cross_entropy(torch.cat((out_pre, out), dim=0), torch.cat((pre_label, label), dim=0))
    dml_loss = F.kl_div(F.log_softmax(out_pre / T, dim=1), F.softmax(pre_out.detach() / T, dim=1),
                        reduction="batchmean") * T * T
    return ce_loss, alpha * dml_loss


@pytest.mark.parametrize("mode", ["paper", "doubled"])
def test_loss_equals_the_official_formulation_and_both_halves_learn(mode):
    t, alpha = 3.0, 0.7
    m = _dlb(temperature=t, alpha=alpha, batch_mode=mode)
    g = torch.Generator().manual_seed(0)
    # step 1: no last batch, plain CE on the new samples
    x1, y1, i1 = torch.randn(4, 3, generator=g) * 3, torch.tensor([0, 1, 2, 0]), torch.tensor([0, 1, 2, 3])
    out1 = m.forward_train(Batch(x1, y1, i1), 0)
    assert out1.losses["ce"].item() == pytest.approx(F.cross_entropy(x1, y1).item(), rel=1e-6)
    assert out1.losses["kd"].item() == 0 and torch.equal(out1.labels, y1)
    m.after_step(Batch(x1, y1, i1), out1, 0)
    # step 2: 3 new samples, then the 4 of step 1 in another view; targets = step 1's logits
    new, view = torch.randn(3, 3, generator=g) * 3, torch.randn(4, 3, generator=g) * 3
    y2, i2 = torch.tensor([1, 1, 2]), torch.tensor([4, 5, 6])
    x = torch.cat([new, view]).requires_grad_(True)
    out2 = m.forward_train(Batch(x, torch.cat([y2, y1]), torch.cat([i2, i1])), 0)
    ce, kd = _official_dlb_loss(new, view, x1, y2, y1, t, alpha)
    torch.testing.assert_close(out2.losses["ce"], ce, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(out2.losses["kd"], kd, rtol=1e-6, atol=1e-7)
    # the values compared (seeded tensors): ours and the official formulation's
    assert out2.losses["ce"].item() == pytest.approx(0.88911, abs=1e-4)
    assert out2.losses["kd"].item() == pytest.approx(2.00336, abs=1e-4)
    # a hand-written KL, to pin the reduction: mean over the last batch's samples, times T²
    q, log_p = (x1 / t).softmax(1), (view / t).log_softmax(1)
    assert kd.item() == pytest.approx(alpha * t * t * (q * (q.log() - log_p)).sum(1).mean().item(), rel=1e-5)
    if mode == "paper":  # the step trains on (and counts) the whole mini-batch
        assert out2.logits.shape == (7, 3) and torch.equal(out2.labels, torch.cat([y2, y1]))
    else:  # official dlb.py: the step counts its new samples
        assert out2.logits.shape == (3, 3) and torch.equal(out2.labels, y2)
    sum(out2.losses.values()).backward()
    assert x.grad[:3].abs().sum() > 0 and x.grad[3:].abs().sum() > 0
    m.after_step(Batch(x, torch.cat([y2, y1]), torch.cat([i2, i1])), out2, 0)
    assert torch.equal(m.last_index, i2) and torch.equal(m.last_logits, new)  # the new half only


def test_paper_batches_are_half_new_half_the_last_steps_from_a_stream_of_passes():
    n, b = 23, 6  # 4 steps an epoch (ce's ceil(23/6)), 3 new samples a step
    labels = torch.arange(n) % 3
    m = _dlb(n)
    gen = torch.Generator().manual_seed(1)
    pass1 = torch.randperm(n, generator=torch.Generator().manual_seed(1))  # ce's first-epoch order
    first = list(m.batch_sampler(labels, b, False, gen))
    assert len(first) == math.ceil(n / b)  # ce's steps: the iterations of a pass over new samples halved
    assert torch.equal(first[0], pass1[:3])  # the run's first step: new samples only
    for k in range(1, 4):  # B/2 new, then the B/2 new samples of the last step
        assert len(first[k]) == b and torch.equal(first[k], torch.cat([pass1[3 * k:3 * k + 3],
                                                                        pass1[3 * k - 3:3 * k]]))
    m.last_index = first[-1][:3]  # what after_step leaves at the end of the epoch
    # epoch 2: the rest of pass 1 (11 samples), then a fresh pass from this epoch's generator
    second = list(m.batch_sampler(labels, b, False, torch.Generator().manual_seed(2)))
    pass2 = torch.randperm(n, generator=torch.Generator().manual_seed(2))
    stream = torch.cat([pass1[12:], pass2])
    assert len(second) == 4 and torch.equal(second[0], torch.cat([stream[:3], pass1[9:12]]))
    assert torch.equal(torch.cat([s[:3] for s in second]), stream[:12])
    assert torch.equal(m.stream, pass2[1:])  # carried to the next epoch (and in the checkpoint)
    # every sample is new exactly once per pass
    assert sorted(torch.cat([*(s[:3] for s in first), *(s[:3] for s in second)])[:n].tolist()) == list(range(n))
    # drop_last changes the number of steps only
    assert len(list(_dlb(n).batch_sampler(labels, b, True, torch.Generator()))) == n // b
    assert m.stream.shape == (22,)


def test_doubled_batches_are_ce_order_followed_by_the_last_steps_samples_across_epochs():
    labels = torch.arange(23) % 3
    m = _dlb(23, batch_mode="doubled")
    ce = methods.build_method("ce", Identity(), {}, MethodContext(3, 23, 1, 1, torch.device("cpu"), labels))
    assert ce.batch_sampler(labels, 5, False, torch.Generator()) is None  # ce: the engine's default shuffle
    plain = loaders.default_index_batches(23, 5, False, torch.Generator().manual_seed(1))
    first = list(m.batch_sampler(labels, 5, False, torch.Generator().manual_seed(1)))
    assert torch.equal(first[0], plain[0])  # the run's first step: new samples only
    for k in range(1, len(plain)):
        assert torch.equal(first[k], torch.cat([plain[k], plain[k - 1]]))
    m.last_index = plain[-1]  # what after_step leaves at the end of the epoch (3 samples)
    second = list(m.batch_sampler(labels, 5, True, torch.Generator().manual_seed(2)))
    plain2 = loaders.default_index_batches(23, 5, True, torch.Generator().manual_seed(2))
    assert len(second) == 4 and torch.equal(second[0], torch.cat([plain2[0], plain[-1]]))
    assert sorted(torch.cat([b[:5] for b in second]).tolist()) == sorted(torch.cat(plain2).tolist())


def test_options_are_validated_in_one_line_and_the_cost_is_declared():
    assert methods.validate_options("dlb", {}) == {"temperature": 3.0, "alpha": 1.0, "batch_mode": "paper"}
    for bad in ({"temperature": 0}, {"alpha": -1}, {"batch_mode": "double"}):
        with pytest.raises(ConfigError) as exc:
            methods.validate_options("dlb", bad)
        assert "\n" not in str(exc.value) and str(exc.value).startswith(f"method.options.{next(iter(bad))}:")
    from icp.methods.options import training_cost

    assert training_cost("dlb", {}, 10) == 10  # the paper's mini-batch: a ce step
    assert training_cost("dlb", {"batch_mode": "doubled"}, 10) == 20


def test_real_training_in_the_papers_mode_is_ces_steps_and_images_and_resumes_exactly(tiny_cfg, tmp_path):
    # 300 images, B = 64: 5 steps an epoch of 32 new samples, so epoch 2 ends pass 1 and starts pass 2
    cfg = tiny_cfg("method.name=dlb", "train.epochs=2", "train.batch_size=64", "data.train_subset=300")
    assert_resume_is_exact(cfg, tmp_path)
    record = engine.Trainer(cfg, tmp_path / "full").run()  # finished: read back
    assert record["status"] == "complete"
    assert [e["images"] for e in record["epochs"]] == [32 + 4 * 64, 5 * 64]  # the run's first step: 32
    assert all(math.isfinite(e["train"]["loss"]) and e["train"]["kd"] > 0 for e in record["epochs"])
    extra = checkpoint.load(tmp_path / "full" / "last.pt")["method_extra"]
    assert extra["last_index"].shape == (32,) and extra["last_logits"].shape == (32, 10)
    assert extra["stream"].shape == (300 - 20,)


def test_real_training_in_the_doubled_mode_counts_new_samples_and_resumes_exactly(tiny_cfg, tmp_path):
    cfg = tiny_cfg("method.name=dlb", "method.options.batch_mode=doubled", "train.epochs=2", "data.train_subset=200")
    assert_resume_is_exact(cfg, tmp_path)
    record = engine.Trainer(cfg, tmp_path / "full").run()  # finished: read back
    assert record["status"] == "complete"
    for entry in record["epochs"]:
        assert entry["images"] == 200 and math.isfinite(entry["train"]["loss"]) and entry["train"]["kd"] > 0
    extra = checkpoint.load(tmp_path / "full" / "last.pt")["method_extra"]
    assert extra["last_index"].shape == (50,) and extra["last_logits"].shape == (50, 10)
