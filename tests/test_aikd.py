import pytest
import torch

from icp import bench, checkpoint, cli, config, methods
from icp.methods import Batch, MethodContext
from icp.model_registry import build_model
from icp.schema import ConfigError
from tests.conftest import TINY, assert_resume_is_exact, same_state


def _ctx(n=32, k=10, model="resnet20"):
    labels = torch.arange(n) % k
    return MethodContext(k, n, 3, 1, torch.device("cpu"), labels, None, model_name=model, dataset="fashion-mnist")


@pytest.fixture
def teacher_ckpt(tmp_path):
    """A best.pt-format checkpoint of a (randomly initialised) resnet20 for 1-channel 10-class data."""
    torch.manual_seed(1)
    path = tmp_path / "teacher" / "best.pt"
    path.parent.mkdir()
    cfg = config.resolve({}, ["model.name=resnet20"])
    checkpoint.atomic_save({"model": build_model("resnet20", 10, 1).state_dict(), "config": cfg.to_dict()},
                           path)
    return path


def _aikd(teacher, **options):
    torch.manual_seed(0)
    return methods.build_method("aikd", build_model("resnet20", 10, 1), {"teacher": str(teacher), **options},
                                _ctx())


def test_teacher_is_frozen_in_eval_mode_and_gets_no_gradient(teacher_ckpt):
    m = _aikd(teacher_ckpt)
    teacher_params = {id(p) for p in m.teacher.parameters()}
    disc_params = {id(p) for p in m.disc.parameters()}
    assert not teacher_params & {id(p) for p in m.trainable_parameters()}
    assert not disc_params & {id(p) for p in m.trainable_parameters()}
    assert {id(p) for p in m.trainable_parameters()} == {id(p) for p in m.model.parameters()}
    assert not (teacher_params | disc_params) & {id(p) for p in m.eval_model().parameters()}
    assert same_state(m.teacher.state_dict(), checkpoint.load(teacher_ckpt)["model"])
    before = {k: v.clone() for k, v in m.teacher.state_dict().items()}  # BN running stats included
    disc_before = {k: v.clone() for k, v in m.disc.state_dict().items()}
    m.train()
    assert m.model.training and m.disc.training and not any(mod.training for mod in m.teacher.modules())
    opt = torch.optim.SGD(m.trainable_parameters(), lr=0.5)
    idx = torch.arange(8)
    batch = Batch(torch.randn(8, 1, 28, 28), m.ctx.train_labels[idx], idx)
    for epoch in (0, 1):
        out = m.forward_train(batch, epoch)
        # the discriminator's step left no gradient on the student (or anywhere)
        assert all(p.grad is None for p in m.parameters())
        sum(out.losses.values()).backward()
        # the student's adversarial term reached neither the teacher nor D
        assert all(p.grad is None for p in [*m.teacher.parameters(), *m.disc.parameters()])
        assert all(p.grad is not None for p in m.model.parameters())
        opt.step()
        opt.zero_grad(set_to_none=True)
        m.after_step(batch, out, epoch)
        m.train()
        assert not m.teacher.training
    assert same_state(m.teacher.state_dict(), before)  # bit-identical
    assert not same_state(m.disc.state_dict(), disc_before)  # D was trained by its own optimizer
    assert m.disc_opt.state_dict()["state"] and "disc_optimizer" in m.extra_state()


def test_adversarial_term_pulls_the_student_towards_real():
    """With D fixed, the student's adversarial gradient lowers BCE(D(p_s), real), i.e. raises D(p_s)."""
    torch.manual_seed(0)
    from icp.methods.aikd import Discriminator, _bce

    d = Discriminator(4)
    logits = torch.randn(16, 4, requires_grad=True)
    loss = _bce(d(logits.softmax(1), None), True)
    loss.backward()
    with torch.no_grad():
        assert _bce(d((logits - 0.5 * logits.grad).softmax(1), None), True) < loss


@pytest.mark.parametrize("conditional", [False, True])
def test_discriminator_loss_falls_on_separable_inputs(teacher_ckpt, conditional):
    m = _aikd(teacher_ckpt, disc_conditional=conditional)
    torch.manual_seed(0)
    y = torch.randint(0, 10, (64,))
    real = (6 * torch.nn.functional.one_hot(y, 10) + torch.randn(64, 10)).softmax(1)  # confident
    fake = (0.3 * torch.randn(64, 10)).softmax(1)  # nearly uniform
    losses = [m.discriminator_step(real, fake, y).item() for _ in range(250)]
    assert losses[0] == pytest.approx(2 * 0.693, abs=0.1)  # chance: 2·ln 2
    assert losses[-1] < 0.2 * losses[0] and losses[-1] < min(losses[:200])
    assert all(p.grad is None for p in m.parameters())


@pytest.mark.parametrize("teacher, message", [
    ("", "method.options.teacher: required"),
    ("{tmp}/nope", "method.options.teacher: {tmp}/nope not found"),
    ("{tmp}/empty", "method.options.teacher: {tmp}/empty holds no best.pt or last.pt"),
    ("{tmp}/junk.pt", "method.options.teacher: cannot read {tmp}/junk.pt as a checkpoint"),
    ("{tmp}/other.pt", "method.options.teacher: {tmp}/other.pt holds a model 'resnet32' run, this run trains"),
    ("{tmp}/running/last.pt", "from an unfinished run (status 'running')"),
])
def test_bad_teacher_is_a_one_line_config_error(tmp_path, teacher, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    cfg32 = config.resolve({}, ["model.name=resnet32"])
    checkpoint.atomic_save({"model": {}, "config": cfg32.to_dict()}, tmp_path / "other.pt")
    (tmp_path / "running").mkdir()
    checkpoint.atomic_save({"method": {}, "config": cfg32.to_dict(), "record": {"status": "running"}},
                           tmp_path / "running" / "last.pt")
    with pytest.raises(ConfigError) as exc:
        _aikd(teacher.format(tmp=tmp_path))
    assert message.format(tmp=tmp_path) in str(exc.value) and "\n" not in str(exc.value)


def test_teacher_of_another_shape_is_a_config_error(tmp_path):
    path = tmp_path / "best.pt"
    cfg = config.resolve({}, ["model.name=resnet20"])
    checkpoint.atomic_save({"model": build_model("resnet20", 100, 3).state_dict(), "config": cfg.to_dict()},
                           path)
    with pytest.raises(ConfigError, match="its weights do not fit this run's model") as exc:
        _aikd(path)
    assert "\n" not in str(exc.value)


def test_missing_teacher_writes_nothing(fmnist_root, tmp_path, capsys):
    out = tmp_path / "run"
    sets = [a for s in [f"data.root={fmnist_root}", *TINY, "method.name=aikd",
                        f"method.options.teacher={tmp_path}/none"] for a in ("--set", s)]
    assert cli.main(["train", *sets, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("icp: error: method.options.teacher:") and err.count("\n") == 1
    assert not out.exists()


def test_resume_is_exact_with_discriminator_and_teacher(tiny_cfg, teacher_ckpt, tmp_path):
    cfg = tiny_cfg("method.name=aikd", f"method.options.teacher={teacher_ckpt}", "train.epochs=2")
    state = assert_resume_is_exact(cfg, tmp_path / "runs")
    assert {"teacher.stem.0.weight", "disc.net.0.weight", "progress.memory"} <= set(state)
    extra = checkpoint.load(tmp_path / "runs" / "part" / "last.pt")["method_extra"]
    assert extra["disc_optimizer"]["state"]  # D's Adam moments are checkpointed


def test_one_epoch_learns_from_a_trained_ce_teacher(one_epoch_top1, tmp_path):
    assert one_epoch_top1("method.name=ce", out="ce") > 0.5
    assert not (tmp_path / "ce" / "best.pt").exists()  # no val split: the teacher comes from last.pt
    assert one_epoch_top1("method.name=aikd", f"method.options.teacher={tmp_path / 'ce'}") > 0.5


def test_bench_times_aikd_with_a_same_architecture_teacher():
    table = bench.run(["resnet20"], ["aikd", "cskd"], "cpu", 8, 1, 1, "synthetic", (1, 16, 16), rounds=1)
    assert list(table.method) == ["ce", "aikd", "cskd"]
    assert (table.speed_vs_baseline > 0).all() and table.speed_vs_baseline.iloc[0] == 1.0 and set(table.baseline) == {"ce"}
