"""The generative path: the VAE model and objective, ICP with the VAE loss, SSIM/FID, and short real runs."""
import dataclasses
import math

import pytest
import torch

from icp import bench, config, data, engine
from icp.methods.icp import ICPOptions, refine
from icp.models import build_model
from icp.models.vae import ConvVAE, VAEOutput
from icp.schema import ConfigError
from icp import metrics
from icp.metrics import ClassifierFeatures, GenerativeMetrics, InceptionFeatures

VAE_RUN = ["model.name=vae", "method.name=vae", "optim.name=adamw", "optim.lr=0.001", "optim.weight_decay=0",
           "data.augment=none", "train.epochs=2", "data.train_subset=1000", "data.test_subset=200",
           "train.batch_size=50"]


@pytest.mark.parametrize("channels, size", [(1, 28), (3, 64)])
def test_vae_shapes_and_taps(channels, size):
    model = build_model("vae", 10, channels, size)
    out, feats = model(torch.randn(3, channels, size, size), features=True)
    assert out.recon.shape == (3, channels, size, size) and out.mu.shape == out.logvar.shape == (3, 32)
    assert tuple(feats) == model.feature_names + ("pool",)
    assert [feats[n].shape[-1] for n in model.feature_names] == [size // 2, size // 4, size // 4]
    assert model.sample(5).shape == (5, channels, size, size)


def test_vae_objective_matches_a_hand_computation():
    torch.manual_seed(0)
    model = build_model("vae", 10, 1, 28, beta=0.5)
    x = torch.randn(4, 1, 28, 28)
    out = model.eval()(x)
    recon = 0.5 * ((out.recon - x) ** 2).sum(dim=(1, 2, 3))
    q = torch.distributions.Normal(out.mu, (0.5 * out.logvar).exp())
    kl = torch.distributions.kl_divergence(q, torch.distributions.Normal(0.0, 1.0)).sum(1)
    assert model.objective(out, x).item() == pytest.approx((recon + 0.5 * kl).mean().item(), rel=1e-5)
    assert model.objective(out, x, "sum").item() == pytest.approx((recon + 0.5 * kl).sum().item(), rel=1e-5)


def test_icp_refinement_lowers_the_vae_loss_and_changes_no_weight_or_bn_statistic(test_images):
    images, info = test_images
    x = (images - info.mean[0]) / info.std[0]
    torch.manual_seed(0)
    model = build_model("vae", 10, 1, 28)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    for i in range(40):  # a briefly trained VAE: at initialisation the decoder ignores its input
        batch = x[(i % 4) * 50:(i % 4 + 1) * 50]
        opt.zero_grad()
        model.objective(model.train()(batch), batch).backward()
        opt.step()
    model.eval()
    opt.zero_grad(set_to_none=True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    task = lambda out, y, red: model.objective(out, y, red)  # noqa: E731
    for optimizer, step in (("sgd", 1e-3), ("adam", 2e-3)):
        o = dataclasses.replace(ICPOptions(), optimizer=optimizer, steps=1, step_size=step, reduction="sum")
        xk = refine(model, x, x, o, task=task)
        assert not torch.equal(xk, x)
        assert model.objective(model(xk), x).item() < model.objective(model(x), x).item(), optimizer
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


def test_a_classifier_method_on_the_vae_is_refused_in_one_line(tiny_cfg, tmp_path):
    with pytest.raises(ConfigError, match="'ce' trains classifier models.*vae.*methods for it: .*icp.*vae"):
        engine.Trainer(tiny_cfg("model.name=vae", "method.name=ce"), tmp_path / "r").run()


@pytest.fixture(scope="module")
def test_images():
    cfg = config.resolve({}, ["data.test_subset=200"])
    splits = data.build_splits(cfg)
    x = torch.from_numpy(splits.test.images).permute(0, 3, 1, 2).float() / 255
    return x, splits.info


@pytest.fixture(scope="module")
def inception_file(tmp_path_factory):
    """An Inception-v3 weights file in torch-fidelity's format. The real weights cannot be downloaded here, so
    this one holds the same network with seeded He-normal weights: it tests every step from the file to an FID
    (loading, grey to RGB, uint8, resizing to 299), not the published numbers."""
    from torch_fidelity import feature_extractor_inceptionv3 as tfi

    mp = pytest.MonkeyPatch()
    mp.setattr(tfi, "load_state_dict_from_url", lambda *a, **k: {})
    mp.setattr(tfi.FeatureExtractorInceptionV3, "load_state_dict", lambda self, state, strict=True: None)
    torch.manual_seed(0)
    try:
        net = tfi.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    finally:
        mp.undo()
    for m in net.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    path = tmp_path_factory.mktemp("torch_home") / "hub" / "checkpoints" / metrics.INCEPTION_FILE
    path.parent.mkdir(parents=True)
    torch.save(net.state_dict(), path)
    return path


@pytest.mark.parametrize("network", ["classifier", "inception"])
def test_ssim_and_fid_of_a_set_with_itself_and_with_noise(test_images, network, request):
    x, info = test_images
    if network == "inception":  # 299×299 forward passes on the CPU: fewer images
        x, features = x[:16], InceptionFeatures(request.getfixturevalue("inception_file"))
    else:
        features = ClassifierFeatures(build_model("resnet20", 10, 1), info.mean, info.std, "random resnet20")
    norm = lambda img: (img - info.mean[0]) / info.std[0]  # noqa: E731

    class Echo(torch.nn.Module):  # a "VAE" that reconstructs its input plus fixed noise
        def __init__(self, sigma):
            super().__init__()
            self.sigma, self.vae = sigma, build_model("vae", 10, 1, 28)

        def forward(self, inp):
            noise = torch.randn(inp.shape, generator=torch.Generator().manual_seed(0)) * self.sigma / info.std[0]
            return VAEOutput(inp + noise, torch.zeros(len(inp), 32), torch.zeros(len(inp), 32))

        terms, sample = staticmethod(ConvVAE.terms), lambda self, n, g=None: self.vae.sample(n, g)

    scores = {}
    for sigma in (0.0, 0.1, 0.3):
        metrics = GenerativeMetrics(info.mean, info.std, "cpu", features)
        metrics.update(Echo(sigma), norm(x))
        scores[sigma] = metrics.compute()
    assert scores[0.0]["ssim"] == pytest.approx(1.0, abs=1e-6)
    assert abs(scores[0.0]["fid_recon"]) < 1e-3 * scores[0.1]["fid_recon"]
    assert scores[0.0]["ssim"] > scores[0.1]["ssim"] > scores[0.3]["ssim"]
    assert scores[0.0]["fid_recon"] < scores[0.1]["fid_recon"] < scores[0.3]["fid_recon"]
    assert scores[0.0]["recon"] == 0 and scores[0.0]["elbo"] == pytest.approx(0.0)
    assert scores[0.0]["fid_prior"] > scores[0.3]["fid_recon"]  # an untrained decoder's samples are far off


def test_a_short_real_vae_run_learns_and_reports_fid_from_a_trained_classifier(tiny_cfg, tmp_path):
    ce = engine.Trainer(tiny_cfg("train.epochs=1", "data.augment=none"), tmp_path / "ce").run()
    assert ce["status"] == "complete"
    for method in ("vae", "icp-adam"):
        rec = engine.Trainer(tiny_cfg(*VAE_RUN, f"method.name={method}", "method.options.warmup=0"
                                      if method != "vae" else "train.fid_every=2", f"train.fid_features={tmp_path / 'ce'}"),
                             tmp_path / method).run()
        first, last = (e["test"] for e in rec["epochs"])
        assert rec["status"] == "complete" and last["elbo"] > first["elbo"], (method, first, last)
        assert (first["fid_recon"] is None) == (method == "vae")  # fid_every=2: no FID at epoch 1
        assert last["ssim"] > 0.15 and last["fid_recon"] > 0 and last["fid_prior"] > 0
        assert rec["epochs"][-1]["train"]["acc"] is None
        assert rec["fid_features"] == f"resnet20 penultimate layer of {tmp_path / 'ce'}"
    assert math.isfinite(rec["epochs"][-1]["diagnostics"]["input_shift"])


def test_inception_weights_come_from_the_path_given_or_torch_hubs_cache(inception_file, monkeypatch, tmp_path):
    assert metrics.inception_weights(f"inception:{inception_file}") == inception_file
    monkeypatch.setenv("TORCH_HOME", str(inception_file.parents[2]))  # $TORCH_HOME/hub/checkpoints/<file>
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda *a, **k: pytest.fail("downloaded"))
    assert metrics.inception_weights("inception") == inception_file
    with pytest.raises(ConfigError, match=r"^train.fid_features: Inception weights \S+/none.pth not found \(get "
                                          r"them from https://\S+\)$"):
        metrics.inception_weights(f"inception:{tmp_path / 'none.pth'}")


def test_a_vae_run_with_inception_fid_names_its_feature_network(tiny_cfg, inception_file, tmp_path):
    rec = engine.Trainer(tiny_cfg(*VAE_RUN, "train.epochs=1", "data.train_subset=200", "data.test_subset=24",
                                  f"train.fid_features=inception:{inception_file}"), tmp_path / "vae").run()
    assert rec["status"] == "complete" and rec["fid_features"].startswith("inception-v3 pool3 2048")
    test = rec["epochs"][-1]["test"]
    assert test["fid_recon"] > 0 and test["fid_prior"] > 0


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_bench_times_the_vae_against_its_own_baseline(shape):
    table = bench.run(["vae"], ["ls", "icp-adam"], "cpu", 8, 1, 1, "synthetic", shape, rounds=1)
    assert list(table.method) == ["vae", "icp-adam"] and set(table.baseline) == {"vae"}  # ls: a classifier method
    assert table.speed_vs_baseline.iloc[0] == 1.0 and table.speed_vs_baseline.iloc[1] > 0



def test_the_vae_is_sized_to_its_data_and_a_wrong_size_is_one_line():
    resolve = lambda *o: config.resolve({}, ["model.name=vae", "method.name=vae", *o])  # noqa: E731
    assert resolve().model.options["image_size"] == 28  # Fashion-MNIST
    assert resolve("data.dataset=cub").model.options["image_size"] == 64
    assert resolve("data.dataset=cub", "data.image_size=32").model.options["image_size"] == 32
    with pytest.raises(ConfigError, match=r"^model.options.image_size: 28 != the 64x64 images of data.dataset 'cub'"):
        resolve("data.dataset=cub", "model.options.image_size=28")
