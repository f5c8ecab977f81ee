import pytest
import torch

from icp import engine, methods
from icp.methods import Batch, MethodContext


class Identity(torch.nn.Module):
    def forward(self, x):
        return x


def _cskd(labels, **options):
    ctx = MethodContext(int(labels.max()) + 1, len(labels), 1, 1, torch.device("cpu"), labels)
    return methods.build_method("cskd", Identity(), options, ctx)


# 5 classes of 1, 2, 7, 30 and 60 samples, shuffled
LABELS = torch.cat([torch.full((c,), k) for k, c in enumerate([1, 2, 7, 30, 60])])[torch.randperm(100, generator=torch.Generator().manual_seed(0))]


@pytest.mark.parametrize("drop_last", [False, True])
def test_batches_pair_every_anchor_with_another_sample_of_its_class(drop_last):
    m = _cskd(LABELS)
    batches = list(m.batch_sampler(LABELS, 16, drop_last, torch.Generator().manual_seed(3)))
    assert len(batches) == (6 if drop_last else 7) and all(len(b) == 32 for b in batches[:6])
    anchors = torch.cat([b[:len(b) // 2] for b in batches])
    pairs = torch.cat([b[len(b) // 2:] for b in batches])
    if drop_last:
        assert len(anchors) == 96 and len(set(anchors.tolist())) == 96
    else:
        assert sorted(anchors.tolist()) == list(range(100))  # one shuffled pass over the split
    assert torch.equal(LABELS[pairs], LABELS[anchors])  # every pair is of the anchor's class
    single = LABELS[anchors] == 0  # the only class-0 sample can only pair with itself
    assert (pairs[~single] != anchors[~single]).all() and (pairs[single] == anchors[single]).all()
    first, second = (LABELS == 1).nonzero().flatten().tolist()  # a class of two: each pairs with the other
    two = LABELS[anchors] == 1
    assert two.any() and all({a, p} == {first, second} for a, p in zip(anchors[two].tolist(), pairs[two].tolist()))


def test_pairs_are_random_and_seeded():
    m = _cskd(LABELS)
    draw = lambda seed: torch.cat(list(m.batch_sampler(LABELS, 16, False, torch.Generator().manual_seed(seed))))
    assert torch.equal(draw(1), draw(1)) and not torch.equal(draw(1), draw(2))
    # partners of one anchor over many epochs cover its class (uniform over the others, never itself)
    anchor = int((LABELS == 2).nonzero()[0])
    seen = set()
    for seed in range(60):
        b = torch.cat([x.view(2, -1) for x in m.batch_sampler(LABELS, 20, False, torch.Generator().manual_seed(seed))],
                      1)
        seen.add(int(b[1][b[0] == anchor]))
    assert seen == set((LABELS == 2).nonzero().flatten().tolist()) - {anchor}


def test_loss_equals_hand_computation_and_pairs_get_no_gradient():
    t, lam = 4.0, 2.0
    m = _cskd(torch.tensor([0, 1, 2]), temperature=t, lam=lam)
    x = torch.tensor([[2.0, 0.5, -1.0], [0.0, 1.0, 3.0], [1.0, 3.0, 0.0], [0.5, 0.0, 2.0]], requires_grad=True)
    y = torch.tensor([0, 2, 0, 2])
    out = m.forward_train(Batch(x, y, torch.arange(4)), 0)
    z, zp = x[:2].detach(), x[2:].detach()
    ce = -z.log_softmax(1)[[0, 1], [0, 2]].mean()
    q, log_p = (zp / t).softmax(1), (z / t).log_softmax(1)
    kl = (q * (q.log() - log_p)).sum(1).mean() * t * t
    assert out.losses["ce"].item() == pytest.approx(ce.item(), rel=1e-6)
    assert out.losses["cls"].item() == pytest.approx(lam * kl.item(), rel=1e-6)
    assert out.logits.shape == (2, 3) and torch.equal(out.labels, y[:2])
    sum(out.losses.values()).backward()
    assert x.grad[2:].abs().sum() == 0 and x.grad[:2].abs().sum() > 0


def test_engine_counts_anchors(tiny_cfg, tmp_path):
    cfg = tiny_cfg("method.name=cskd", "train.epochs=1")
    trainer = engine.Trainer(cfg, tmp_path / "run")
    trainer.setup()
    batches = trainer.index_batches(torch.Generator().manual_seed(0))
    assert len(batches) == trainer.steps_per_epoch == 12 and all(len(b) == 100 for b in batches)
    sums, correct = {}, torch.zeros((), dtype=torch.long)
    batch = next(trainer.train_loader.epoch(batches[:1], torch.Generator().manual_seed(0)))
    assert torch.equal(batch.y[:50], batch.y[50:])  # the loader serves the pairs with the anchors' labels
    assert trainer.train_step(batch, 0, sums, correct) == 50 and 0 <= int(correct) <= 50


def test_one_epoch_learns(one_epoch_top1):
    assert one_epoch_top1("method.name=cskd") > 0.5
