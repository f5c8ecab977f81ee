"""Tests for icp.models: the registry finds every model file without torch; shapes, feature taps, parameter
counts, registry errors. The models under test are the registry's: a new model file is in every generic test."""
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn as nn

from icp.models import MODELS, SOURCES, build_model, list_models
from icp.models.base import ClassifierNet
from tests.conftest import REPO, assert_close_at_scale, installed_plugin, run_python

CLASSIFIERS = list_models("classifier")

# Facts of particular models: the channels of each stage tap, and the spatial size of each tap for a given input
# size (the stem keeps the resolution, then /2 per stage)
EXPECTED_CHANNELS = {
    "resnet20": (16, 32, 64), "resnet32": (16, 32, 64), "resnet56": (16, 32, 64),
    "preact_resnet18": (64, 128, 256, 512), "wrn16_4": (64, 128, 256), "resnet50_cifar": (256, 512, 1024, 2048),
}
EXPECTED_SPATIAL = {
    "resnet": {32: (32, 16, 8), 28: (28, 14, 7), 8: (8, 4, 2)},
    "wrn": {32: (32, 16, 8), 28: (28, 14, 7), 8: (8, 4, 2)},
    "preact": {32: (32, 16, 8, 4), 28: (28, 14, 7, 4), 8: (8, 4, 2, 1)},
    "resnet50": {32: (32, 16, 8, 4), 28: (28, 14, 7, 4), 8: (8, 4, 2, 1)},
}


def _family(name):
    return next(f for f in ("preact", "wrn", "resnet50", "resnet") if name.startswith(f))


def _n_params(model):
    return sum(p.numel() for p in model.parameters())


def _python(code: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


def test_the_registry_reads_every_model_file_without_torch():
    """Every module of icp/models but base declares a model; listing them and checking their options imports no
    torch (the grid's expansion and the Snakefile do both)."""
    files = sorted(p.stem for p in (REPO / "icp" / "models").glob("*.py") if p.stem not in ("__init__", "base"))
    proc = _python("""
        import sys
        from icp.models import MODELS, SOURCES, check_options
        for name in MODELS:
            check_options(name, {})
        assert "torch" not in sys.modules, "the registry imported torch"
        print(" ".join(sorted({SOURCES[n].rsplit(".", 1)[1] for n in MODELS})))
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == files
    assert list_models("generative") == ["vae"] and sorted(CLASSIFIERS + ["vae"]) == sorted(MODELS)
    assert set(SOURCES) >= set(MODELS)


MODEL = '''
"""A test model: a one-stage classifier."""
from __future__ import annotations

from icp.models import declare, register


def options(width: int = 8) -> None:
    if width < 1:
        raise ValueError(f"width must be >= 1, got {width}")


declare({"zz-tiny": options})

import torch.nn as nn  # noqa: E402

from icp.models.base import ClassifierNet, conv3x3  # noqa: E402


@register("zz-tiny")
def tiny(num_classes: int, in_channels: int = 3, width: int = 8) -> ClassifierNet:
    options(width)
    stage = nn.Sequential(conv3x3(width, width), nn.ReLU())
    return ClassifierNet(conv3x3(in_channels, width), [stage], [width], num_classes)
'''


def test_a_model_file_beside_the_others_is_found_read_without_torch_and_built(tmp_path):
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "zz_tiny.py").write_text(MODEL)
    proc = _python(f"""
        import sys
        import icp.models as m
        m.__path__.append({str(folder)!r})  # as if the file were in icp/models/
        assert "zz-tiny" in m.list_models("classifier"), m.list_models()
        assert m.check_options("zz-tiny", {{}}) == {{"width": 8}}
        try:
            m.check_options("zz-tiny", {{"width": 0}})
            raise AssertionError("width 0 passed")
        except ValueError as exc:
            assert "width must be >= 1" in str(exc)
        assert "torch" not in sys.modules  # read without running the model's torch half
        net = m.build_model("zz-tiny", 10, 1, width=4)
        print(type(net).__name__, net.feature_channels)
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["ClassifierNet", "{'stage1':", "4}"]


def test_a_model_of_another_installed_package_is_found_by_its_entry_point(tmp_path):
    """A model in another package, named under the ``icp.models`` entry point group: listed, its options checked
    without torch, built; the package's own models are still there (ahead of it)."""
    env = installed_plugin(tmp_path / "site", "tinyplug", MODEL.replace("zz-tiny", "plug-tiny"), "icp.models")
    proc = run_python("""
        import sys
        import icp.models as m
        names = m.list_models()
        assert "plug-tiny" in names and "resnet20" in names, names
        assert m.SOURCES["plug-tiny"] == "tinyplug"
        assert m.check_options("plug-tiny", {}) == {"width": 8}
        assert "torch" not in sys.modules
        print(m.build_model("plug-tiny", 10, 1, width=4).feature_channels)
    """, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["{'stage1':", "4}"]


def test_a_constructor_whose_options_differ_from_its_declaration_is_one_line(tmp_path):
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "zz_tiny.py").write_text(MODEL.replace("in_channels: int = 3, width: int = 8)",
                                                     "in_channels: int = 3, width: int = 16)"))
    proc = _python(f"""
        import icp.models as m
        m.__path__.append({str(folder)!r})
        m.build_model("zz-tiny", 10)
    """)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1].endswith(
        "model 'zz-tiny': tiny takes the options [('width', 16)], its declaration [('width', 8)]")


@pytest.mark.parametrize("name", CLASSIFIERS)
@pytest.mark.parametrize("in_channels,size", [(1, 28), (3, 32)])
@pytest.mark.parametrize("num_classes", [10, 100])
def test_forward_shapes_and_features(name, in_channels, size, num_classes):
    torch.manual_seed(0)
    model = build_model(name, num_classes=num_classes, in_channels=in_channels).eval()
    assert isinstance(model, ClassifierNet)
    assert model.num_classes == num_classes
    assert isinstance(model.classifier, nn.Linear)
    assert list(model.feature_channels) == list(model.feature_names)
    if name in EXPECTED_CHANNELS:
        assert tuple(model.feature_channels.values()) == EXPECTED_CHANNELS[name]
    x = torch.randn(2, in_channels, size, size)
    with torch.no_grad():
        plain = model(x)
        logits, feats = model(x, features=True)
    assert plain.shape == (2, num_classes)
    assert logits.shape == (2, num_classes)
    assert tuple(feats) == model.feature_names + ("pool",)
    sizes = [feats[fname].shape[-1] for fname in model.feature_names]
    for fname, s in zip(model.feature_names, sizes):
        assert feats[fname].shape == (2, model.feature_channels[fname], s, s), fname
    assert all(b in (a, (a + 1) // 2) for a, b in zip([size, *sizes], sizes))  # each stage keeps or halves
    if name in EXPECTED_CHANNELS:
        assert tuple(sizes) == EXPECTED_SPATIAL[_family(name)][size]
    assert feats["pool"].shape == (2, model.classifier.in_features)
    # pool is the global average of the last tap (post final activation where there is one)
    last = feats[model.feature_names[-1]]
    assert_close_at_scale(feats["pool"], last.mean(dim=(2, 3)))
    with torch.no_grad():
        assert_close_at_scale(logits, model.classifier(feats["pool"]))
    assert_close_at_scale(logits, plain)


@pytest.mark.parametrize("name", ["resnet20", "wrn16_4"])
def test_post_activation_taps_are_nonnegative(name):
    model = build_model(name, 10).eval()
    with torch.no_grad():
        _, feats = model(torch.randn(2, 3, 32, 32), features=True)
    taps = model.feature_names if name.startswith("resnet") else model.feature_names[-1:]
    for t in taps:
        assert feats[t].min() >= 0, t


@pytest.mark.parametrize("name,exact,rounded", [
    ("resnet20", 269_722, 0.27), ("resnet32", 464_154, 0.46), ("resnet56", 853_018, 0.85),
])
def test_cifar_resnet_param_counts(name, exact, rounded):
    a = _n_params(build_model(name, 10, shortcut="A"))
    assert a == exact
    assert round(a / 1e6, 2) == rounded
    b = _n_params(build_model(name, 10, shortcut="B"))
    assert b > a


def test_other_param_counts():
    assert _n_params(build_model("preact_resnet18", 10)) == 11_172_170
    n100 = _n_params(build_model("preact_resnet18", 100))
    assert n100 == 11_218_340 and round(n100 / 1e6, 1) == 11.2
    n_wrn = _n_params(build_model("wrn16_4", 10))
    assert n_wrn == 2_748_890 and round(n_wrn / 1e6, 2) == 2.75
    # dropout adds no parameters
    assert _n_params(build_model("wrn16_4", 10, dropout=0.3)) == n_wrn


def test_shortcut_a_is_parameter_free():
    model = build_model("resnet20", 10, shortcut="A")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert all(m.kernel_size == (3, 3) for m in convs)
    assert len(convs) == 19  # stem + 2 per block * 9 blocks
    model_b = build_model("resnet20", 10, shortcut="B")
    assert sum(isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) for m in model_b.modules()) == 2


def test_unknown_model_suggests_close_match():
    with pytest.raises(ValueError, match="unknown model 'resnet-20'.*did you mean 'resnet20'"):
        build_model("resnet-20", 10)
    with pytest.raises(ValueError, match="did you mean 'wrn16_4'"):
        build_model("WRN16-4", 10)
    with pytest.raises(ValueError, match="known: preact_resnet18, resnet20"):
        build_model("vgg", 10)


def test_unknown_option_is_named():
    with pytest.raises(ValueError) as err:
        build_model("resnet20", 10, dropuot=0.1)
    assert "dropuot" in str(err.value) and "shortcut" in str(err.value)
    with pytest.raises(ValueError, match="widen"):
        build_model("wrn16_4", 10, widen=8)


def test_invalid_option_values():
    with pytest.raises(ValueError, match="shortcut"):
        build_model("resnet20", 10, shortcut="C")
    with pytest.raises(ValueError, match="dropout"):
        build_model("wrn16_4", 10, dropout=1.5)


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_gradient_reaches_stem_and_eval_is_deterministic(name):
    torch.manual_seed(0)
    model = build_model(name, 10, in_channels=1).train()
    x = torch.randn(2, 1, 28, 28)
    model(x).logsumexp(dim=1).sum().backward()
    stem_conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert stem_conv.in_channels == 1
    assert stem_conv.weight.grad is not None and stem_conv.weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        y1, y2 = model(x), model(x)
    assert torch.equal(y1, y2)


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_smallest_supported_input(name):
    model = build_model(name, 10, in_channels=3).eval()
    with torch.no_grad():
        logits, feats = model(torch.randn(2, 3, 8, 8), features=True)
    assert logits.shape == (2, 10)
    assert feats[model.feature_names[-1]].shape[-1] >= 1
    if name in EXPECTED_CHANNELS:
        assert feats[model.feature_names[-1]].shape[-1] == EXPECTED_SPATIAL[_family(name)][8][-1]


# ---------------------------------------------------------------- the ICP authors' ResNet-50 (resnet50_cifar)
def _authors_resnet50(num_classes):
    """What the authors' code trains: torchvision's resnet50 after their ``modify_resnet50`` (Image
    Classification/utils.py: conv1.kernel_size = 3, conv1.padding = 1, maxpool = Identity), as a fact to check."""
    import torchvision

    tv = torchvision.models.resnet50(num_classes=num_classes)
    tv.conv1.kernel_size, tv.conv1.padding, tv.maxpool = 3, 1, nn.Identity()
    return tv


@pytest.mark.parametrize("stem,sizes", [("3x3", (32, 16, 8, 4)), ("authors", (14, 7, 4, 2))])
def test_resnet50_cifar_shapes_and_taps(stem, sizes):
    torch.manual_seed(0)
    model = build_model("resnet50_cifar", 100, stem=stem).eval()
    assert isinstance(model, ClassifierNet)
    assert model.feature_names == ("stage1", "stage2", "stage3", "stage4")
    assert model.feature_channels == {"stage1": 256, "stage2": 512, "stage3": 1024, "stage4": 2048}
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        plain = model(x)
        logits, feats = model(x, features=True)
    assert plain.shape == logits.shape == (2, 100)
    assert tuple(feats) == model.feature_names + ("pool",)
    for name, s in zip(model.feature_names, sizes):
        assert feats[name].shape == (2, model.feature_channels[name], s, s), name
        assert feats[name].min() >= 0, name  # post-ReLU Bottleneck outputs
    assert_close_at_scale(feats["pool"], feats["stage4"].mean(dim=(2, 3)))
    assert_close_at_scale(logits, plain)


def test_resnet50_cifar_parameters_are_torchvisions_resnet50_but_the_stem():
    import torchvision

    tv = torchvision.models.resnet50(num_classes=100)
    stem_7x7, stem_3x3 = tv.conv1.weight.numel(), 64 * 3 * 3 * 3
    assert _n_params(build_model("resnet50_cifar", 100, stem="3x3")) == _n_params(tv) - stem_7x7 + stem_3x3
    assert _n_params(build_model("resnet50_cifar", 100, stem="authors")) == _n_params(tv)
    assert _n_params(build_model("resnet50_cifar", 10)) == _n_params(tv) - stem_7x7 + stem_3x3 - 90 * (2048 + 1)


def test_resnet50_cifar_authors_stem_is_the_function_their_code_trains():
    """Loaded with the weights of torchvision's resnet50 as the authors' ``modify_resnet50`` leaves it, the
    ``authors`` stem gives the same logits and the same stage maps (their 7x7 weight is kept, stride 2)."""
    torch.manual_seed(0)
    theirs = _authors_resnet50(100).eval()
    ours = build_model("resnet50_cifar", 100, stem="authors").eval()
    mapping = {"conv1.": "stem.0.", "bn1.": "stem.1.", "fc.": "classifier.",
               **{f"layer{i}.": f"stages.{i - 1}." for i in range(1, 5)}}
    state = {}
    for key, value in theirs.state_dict().items():
        prefix = next(p for p in mapping if key.startswith(p))
        state[mapping[prefix] + key[len(prefix):]] = value
    ours.load_state_dict(state)  # strict: every tensor has its counterpart, shapes included
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        logits, feats = ours(x, features=True)
        expected = theirs(x)
        h = theirs.relu(theirs.bn1(theirs.conv1(x)))
        maps = []
        for layer in (theirs.layer1, theirs.layer2, theirs.layer3, theirs.layer4):
            h = layer(h)
            maps.append(h)
    assert_close_at_scale(logits, expected)
    for name, m in zip(ours.feature_names, maps):
        assert_close_at_scale(feats[name], m)


def test_resnet50_cifar_bad_stem_is_named():
    with pytest.raises(ValueError, match="stem must be '3x3' or 'authors'"):
        build_model("resnet50_cifar", 10, stem="7x7")


@pytest.mark.parametrize("method,options", [("byot", {}), ("icp-adam", {"steps": 1, "warmup": 0.0})])
def test_icp_and_byot_train_a_step_on_resnet50_cifar(method, options):
    """ICP distils every stage tap and BYOT builds its heads from ``feature_channels``: both take one step."""
    from icp import methods
    from icp.methods.base import Batch, MethodContext

    torch.manual_seed(0)
    model = build_model("resnet50_cifar", 10, stem="authors").train()
    ctx = MethodContext(10, 4, 2, 1, torch.device("cpu"), torch.arange(4) % 10, input_shape=(3, 32, 32))
    m = methods.build_method(method, model, options, ctx)
    out = m.forward_train(Batch(torch.randn(4, 3, 32, 32), torch.arange(4) % 10, torch.arange(4)), epoch=1)
    sum(out.losses.values()).backward()
    assert model.stem[0].weight.grad is not None and model.stem[0].weight.grad.abs().sum() > 0
    if method != "byot":
        assert {k for k in out.stats if k.startswith("feature_mse.")} == {f"feature_mse.stage{i}" for i in range(1, 5)}
