import pytest
import torch

from icp import methods, model_registry
from icp.methods import Batch, MethodContext
from icp.methods.byot import hint_loss


def _byot(name, k=10, in_channels=1):
    torch.manual_seed(0)
    ctx = MethodContext(k, 4, 1, 1, torch.device("cpu"), torch.arange(4) % k)
    return methods.build_method("byot", model_registry.build_model(name, k, in_channels), {}, ctx)


EXPECTED_STRIDES = {"resnet20": [4, 2], "resnet32": [4, 2], "resnet56": [4, 2], "preact_resnet18": [8, 4, 2],
                    "wrn16_4": [4, 2], "resnet50_cifar": [8, 4, 2]}  # its default 3x3 stride-1 stem: maps 32 to 4


@pytest.mark.parametrize("name", model_registry.list_models("classifier"))
def test_heads_for_every_model_train_and_stay_out_of_evaluation(name):
    m = _byot(name)
    model = m.model
    assert len(m.heads) == len(model.feature_names) - 1 == len(EXPECTED_STRIDES[name])
    final = model.feature_channels[model.feature_names[-1]]
    assert [h.bottleneck[3].stride[0] for h in m.heads] == EXPECTED_STRIDES[name]
    assert all(h.fc.in_features == final and h.fc.out_features == 10 for h in m.heads)
    head_params = {id(p) for p in m.heads.parameters()}
    assert head_params <= {id(p) for p in m.trainable_parameters()}  # trained by the engine's optimizer
    assert m.eval_model() is model and not head_params & {id(p) for p in m.eval_model().parameters()}
    # one training step: every head and every loss term is live
    m.train()
    x, y = torch.randn(4, 1, 16, 16), torch.tensor([0, 1, 2, 3])
    out = m.forward_train(Batch(x, y, torch.arange(4)), 0)
    assert set(out.losses) == {"ce", "ce_aux", "kd", "hint"} and all(v.isfinite() for v in out.losses.values())
    sum(out.losses.values()).backward()
    assert all(p.grad is not None for p in m.heads.parameters())
    # the evaluated network's output does not depend on the heads
    m.eval()
    with torch.no_grad():
        before = m.eval_model()(x)
        for p in m.heads.parameters():
            p.add_(1.0)
        assert torch.equal(m.eval_model()(x), before) and torch.equal(model(x), before)


def test_teacher_and_hint_targets_are_detached():
    m = _byot("resnet20")
    out = m.forward_train(Batch(torch.randn(4, 1, 16, 16), torch.tensor([0, 1, 2, 3]), torch.arange(4)), 0)
    (out.losses["kd"] + 1e6 * out.losses["hint"]).backward()
    # the final classifier and the last stage are reached only through the detached targets
    assert m.model.classifier.weight.grad is None
    assert all(p.grad is None for p in m.model.stages[-1].parameters())
    assert all(p.grad is not None for p in m.model.stages[0].parameters())  # the heads' own paths are live


def test_hint_is_the_official_masked_sum():
    feat = torch.tensor([[1.0, -1.0, 0.5]])
    target = torch.tensor([[0.0, -2.0, 2.0]])
    assert hint_loss(feat, target).item() == pytest.approx(1.0 + 0.0 + 2.25)  # both negative: masked


def test_one_epoch_learns(one_epoch_top1):
    assert one_epoch_top1("method.name=byot") > 0.5
