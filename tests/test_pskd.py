import pytest
import torch

from icp import methods
from icp.config import ConfigError
from icp.methods import Batch, MethodContext
from tests.conftest import assert_resume_is_exact


class Fixed(torch.nn.Module):
    """A 'model' whose logits are the input itself."""

    def forward(self, x):
        return x


def _pskd(labels, epochs=4, alpha_T=0.8):
    k = int(labels.max()) + 1
    ctx = MethodContext(k, len(labels), epochs, 1, torch.device("cpu"), labels)
    return methods.build_method("pskd", Fixed(), {"alpha_T": alpha_T}, ctx)


def _hand_loss(logits, target):
    return -(target * logits.log_softmax(1)).sum(1).mean()


def test_target_is_one_hot_at_epoch_0_then_mixes_the_stored_row():
    labels = torch.tensor([0, 1, 2, 1, 0, 2])
    m = _pskd(labels)
    idx = torch.tensor([4, 1, 2])
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.0, 1.0, 3.0], [1.0, 1.0, 1.5]])
    batch = Batch(logits, labels[idx], idx)
    onehot = torch.nn.functional.one_hot(labels[idx], 3).float()
    # epoch 0: one-hot targets, whatever α_0 is
    assert torch.equal(m.progress.target(batch.y, m.progress.previous(idx), 0), onehot)
    out = m.forward_train(batch, 0)
    assert out.losses["pskd"].item() == pytest.approx(_hand_loss(logits, onehot).item(), rel=1e-6)
    # after the step the memory holds the softmax of the logits the loss was computed from
    m.after_step(batch, out, 0)
    assert torch.allclose(m.progress.memory[idx], logits.softmax(1))
    untouched = torch.tensor([0, 3, 5])
    assert torch.equal(m.progress.memory[untouched], torch.nn.functional.one_hot(labels[untouched], 3).float())
    # epoch t = 2 of T = 4: α_t = 0.8 · 3/4 = 0.6, mixed with the stored row
    new_logits = torch.tensor([[0.0, 0.0, 4.0], [3.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    expected_target = 0.4 * onehot + 0.6 * logits.softmax(1)
    assert m.progress.alpha(2) == pytest.approx(0.6)
    out = m.forward_train(Batch(new_logits, labels[idx], idx), 2)
    assert out.losses["pskd"].item() == pytest.approx(_hand_loss(new_logits, expected_target).item(), rel=1e-6)
    assert out.losses["pskd"].item() != pytest.approx(_hand_loss(new_logits, onehot).item(), rel=1e-3)


def test_memory_is_method_state():
    m = _pskd(torch.tensor([0, 1, 1]))
    assert "progress.memory" in m.state_dict() and m.state_dict()["progress.memory"].shape == (3, 2)
    assert [n for n, _ in m.named_parameters()] == []  # nothing trainable besides the (here empty) model


def test_options_are_checked():
    assert methods.validate_options("pskd", {}) == {"alpha_T": 0.8}
    with pytest.raises(ConfigError, match=r"^method.options.alpha_T: expected a number in \[0, 1\], got 1.5$"):
        methods.validate_options("pskd", {"alpha_T": 1.5})


def test_memory_survives_checkpoint_and_resume(tiny_cfg, tmp_path):
    cfg = tiny_cfg("method.name=pskd", "train.epochs=2")
    state = assert_resume_is_exact(cfg, tmp_path)
    memory = state["progress.memory"]
    assert memory.shape == (600, 10)
    assert torch.allclose(memory.sum(1), torch.ones(600))
    assert (memory.max(1).values < 1).all()  # every row was overwritten by a softmax, none is one-hot


def test_one_epoch_learns(one_epoch_top1):
    assert one_epoch_top1("method.name=pskd") > 0.5
