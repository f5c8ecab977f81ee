import gzip
import shutil

import numpy as np
import pytest
import torch

from icp import config, data, loaders, schema
from icp.data import DataError


def test_fashion_mnist_is_the_real_dataset(fmnist_root):
    train, info = data.load_split("fashion-mnist", fmnist_root, True)
    test, _ = data.load_split("fashion-mnist", fmnist_root, False)
    assert train.images.shape == (60000, 28, 28, 1) and test.images.shape == (10000, 28, 28, 1)
    assert train.images.dtype == np.uint8 and train.labels.dtype == np.int64
    assert np.bincount(train.labels).tolist() == [6000] * 10 and np.bincount(test.labels).tolist() == [1000] * 10
    # the published per-pixel statistics of the training split
    assert train.images.mean() / 255 == pytest.approx(info.mean[0], abs=1e-3)
    assert train.images.std() / 255 == pytest.approx(info.std[0], abs=1e-3)


def test_missing_dataset_is_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", tmp_path / "absent")
    with pytest.raises(DataError) as exc:
        data.load_split("fashion-mnist", tmp_path, True)
    msg = str(exc.value)
    assert "\n" not in msg and "apt-get install dataset-fashion-mnist" in msg and "icp data prepare" in msg
    with pytest.raises(DataError, match="imagefolder: .* not found"):
        data.load_split("imagefolder", tmp_path, True)


def test_truncated_idx_is_rejected(tmp_path):
    f = tmp_path / "x-idx3-ubyte.gz"
    with gzip.open(f, "wb") as fh:
        fh.write(bytes([0, 0, 8, 3]) + (10).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2 + b"\0" * 100)
    with pytest.raises(DataError, match="truncated"):
        data._read_idx(f)


def test_prepare_copies_into_torchvision_layout(tmp_path):
    target = data.prepare("fashion-mnist", tmp_path)
    assert target == tmp_path / "FashionMNIST" / "raw"
    assert sorted(p.name for p in target.iterdir()) == sorted(
        f for names in data.FASHION_MNIST_FILES.values() for f in names)
    # the copy is what gets read now, and it is identical
    assert data._find_fashion_mnist(tmp_path) == target
    a, _ = data.load_split("fashion-mnist", tmp_path, False)
    assert np.bincount(a.labels).tolist() == [1000] * 10


def test_imagefolder_reads_class_folders(tmp_path):
    from PIL import Image

    for split in ("train", "test"):
        for c, colour in enumerate([(255, 0, 0), (0, 0, 255)]):
            d = tmp_path / split / f"class{c}"
            d.mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (20, 30), colour).save(d / f"{i}.png")
    arrays, info = data.load_split("imagefolder", tmp_path, True, image_size=16)
    assert arrays.images.shape == (6, 16, 16, 3) and arrays.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert info.classes == ("class0", "class1") and info.mean[0] == pytest.approx(0.5, abs=0.01)


def test_splits_val_holdout_and_scenario_on_train_only(fmnist_root):
    cfg = config.resolve({}, [f"data.root={fmnist_root}", "data.train_subset=2000", "data.val_fraction=0.2",
                              "scenario.kind=noisy", "scenario.noise_rate=0.4", "train.seed=3"])
    s = data.build_splits(cfg)
    assert len(s.train) == 1600 and len(s.val) == 400 and len(s.test) == 10000
    assert np.bincount(s.val_clean_labels).tolist() == [40] * 10  # stratified on the clean labels
    assert (s.val.labels != s.val_clean_labels).sum() == round(0.4 * 400)  # labelled like the training set
    assert (s.train.labels != s.train_clean_labels).sum() == round(0.4 * 1600)
    assert s.summary["noise_rate_measured"] == pytest.approx(0.4)
    again = data.build_splits(cfg)
    assert np.array_equal(again.train.images, s.train.images) and np.array_equal(again.train.labels, s.train.labels)
    other = data.build_splits(config.resolve({}, [f"data.root={fmnist_root}", "data.train_subset=2000",
                                                  "data.val_fraction=0.2", "train.seed=4"]))
    assert not np.array_equal(other.val.images, s.val.images)


def test_a_split_seed_gives_every_seed_the_same_pool_validation_and_test_images(fmnist_root):
    """With data.split_seed (the recipes' 0) the training subset, the validation hold-out and the test subset are
    the same for every training seed, while each seed's label noise is its own."""
    def splits(seed):
        return data.build_splits(config.resolve({}, [
            f"data.root={fmnist_root}", "data.train_subset=1500", "data.val_fraction=0.1", "data.test_subset=500",
            "data.split_seed=0", "scenario.kind=noisy", "scenario.noise_rate=0.4", f"train.seed={seed}"]))

    a, b = splits(0), splits(1)
    assert len(a.val) == 150 and np.array_equal(a.val.images, b.val.images)
    assert np.array_equal(a.test.images, b.test.images) and np.array_equal(a.test.labels, b.test.labels)
    assert np.array_equal(np.sort(a.train_clean_labels), np.sort(b.train_clean_labels))
    assert not np.array_equal(a.train.labels, b.train.labels)  # the noise differs by seed


def _fingerprint(*arrays) -> str:
    import hashlib

    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


# sha256 (first 16 hex) of (train images, train labels, train clean labels), (val images, val labels) and (test
# images, test labels), computed with the code before validation matched the setting (commit 669d59c)
BEFORE = [
    (["data.val_fraction=0.1", "data.split_seed=0", "train.seed=3"], 54000, 6000,
     "d930328d27ac4ff5", "d023a6a185858c18", "9a494dc49efeb996"),
    (["data.train_subset=2000", "data.val_fraction=0.1", "data.split_seed=0", "data.test_subset=500", "train.seed=1"],
     1800, 200, "94f2b1953019e803", "7ca16a7bcf0bcee6", "7309c2531a4feb06"),
]


@pytest.mark.parametrize("overrides,n_train,n_val,train,val,test", BEFORE)
def test_a_clean_cell_splits_byte_for_byte_as_before(fmnist_root, overrides, n_train, n_val, train, val, test):
    s = data.build_splits(config.resolve({}, [f"data.root={fmnist_root}", *overrides]))
    assert (len(s.train), len(s.val)) == (n_train, n_val) and s.val_clean_labels is None
    assert _fingerprint(s.train.images, s.train.labels, s.train_clean_labels) == train
    assert _fingerprint(s.val.images, s.val.labels) == val
    assert _fingerprint(s.test.images, s.test.labels) == test
    assert not {"val_shots", "val_noise_rate_measured"} & set(s.summary)  # the record's scenario as before


def _noisy(fmnist_root, kind="symmetric", rate=0.4, seed=2, method="ce"):
    return data.build_splits(config.resolve({}, [
        f"data.root={fmnist_root}", "data.val_fraction=0.1", "data.split_seed=0", "scenario.kind=noisy",
        f"scenario.noise_type={kind}", f"scenario.noise_rate={rate}", f"train.seed={seed}", f"method.name={method}"]))


def test_noisy_validation_is_labelled_by_the_training_process_on_the_clean_cells_images(fmnist_root):
    """Fashion-MNIST sym0.4: the validation images are the clean cell's, their labels wrong at the noise rate (within
    a binomial tolerance), never the own class and spread over the other nine as the training noise is; the training
    split is the one of before, and the validation draw is the same for every method and seed of the cell."""
    s = _noisy(fmnist_root)
    assert _fingerprint(s.train.images, s.train.labels, s.train_clean_labels) == "e9a65f3b1947b18c"  # as before
    clean_val = BEFORE[0][4]
    assert _fingerprint(s.val.images, s.val_clean_labels) == clean_val  # the clean cell's images and labels
    wrong = s.val.labels != s.val_clean_labels
    n = len(wrong)
    assert n == 6000 and abs(wrong.mean() - 0.4) <= 3 * np.sqrt(0.4 * 0.6 / n)
    assert s.summary["val_noise_rate_measured"] == pytest.approx(wrong.mean())
    assert s.summary["val_noisy_count"] == int(wrong.sum())
    # the transition of the training labels: (noisy - clean) mod 10 uniform over 1..9, in both splits
    for labels, clean in ((s.val.labels, s.val_clean_labels), (s.train.labels, s.train_clean_labels)):
        flipped = labels != clean
        shift = np.bincount((labels[flipped] - clean[flipped]) % 10, minlength=10)
        assert shift[0] == 0
        expected = flipped.sum() / 9
        assert np.all(np.abs(shift[1:] - expected) <= 4 * np.sqrt(expected))
    # its own draw: not the training draw's pattern, and the same for every method and training seed
    other = _noisy(fmnist_root, seed=5, method="ls")
    assert np.array_equal(other.val.images, s.val.images) and np.array_equal(other.val.labels, s.val.labels)
    assert not np.array_equal(other.train.labels, s.train.labels)  # the training noise is each seed's own


def test_asymmetric_noisy_validation_follows_the_class_map(fmnist_root):
    from icp.scenarios import ASYMMETRIC_MAPS

    s = _noisy(fmnist_root, kind="asymmetric", rate=0.2)
    mapping = ASYMMETRIC_MAPS["fashion-mnist"]
    wrong = np.flatnonzero(s.val.labels != s.val_clean_labels)
    assert abs(len(wrong) / len(s.val) - 0.2) <= 3 * np.sqrt(0.2 * 0.8 / len(s.val))
    assert all(s.val.labels[i] == mapping[int(s.val_clean_labels[i])] for i in wrong)
    per_class = np.bincount(s.val_clean_labels[wrong], minlength=10) / np.bincount(s.val_clean_labels, minlength=10)
    assert np.all(np.abs(per_class - 0.2) <= 0.01)  # every mapped class loses its share, as in training


def _fewshot(fmnist_root, shots=5, seed=0, method="ce", *extra):
    return data.build_splits(config.resolve({}, [
        f"data.root={fmnist_root}", "data.val_fraction=0.1", "data.split_seed=0", "scenario.kind=fewshot",
        f"scenario.shots={shots}", f"train.seed={seed}", f"method.name={method}", *extra]))


def _image_keys(arrays) -> set:
    return {img.tobytes() for img in arrays.images}  # Fashion-MNIST's 60,000 training images are all distinct


@pytest.mark.parametrize("shots", [5, 25])
def test_a_k_shot_cell_validates_on_k_images_per_class_apart_from_its_shots(fmnist_root, shots):
    """As many validation images per class as training shots, clean, none of them a training shot, and the same
    images for every method and seed of the cell (data.split_seed), while each seed draws its own shots."""
    a = _fewshot(fmnist_root, shots)
    assert np.bincount(a.train.labels, minlength=10).tolist() == [shots] * 10
    assert np.bincount(a.val.labels, minlength=10).tolist() == [shots] * 10
    assert a.val_clean_labels is None and a.summary["val_size"] == 10 * shots and a.summary["val_shots"] == shots
    seeds = [a, _fewshot(fmnist_root, shots, 1, "ls"), _fewshot(fmnist_root, shots, 2, "icp-adam")]
    for s in seeds:
        assert not _image_keys(s.val) & _image_keys(s.train)
        assert np.array_equal(s.val.images, a.val.images) and np.array_equal(s.val.labels, a.val.labels)
    assert not np.array_equal(seeds[1].train.images, a.train.images)  # each seed its own shots
    # the same method and seed twice: the same split
    again = _fewshot(fmnist_root, shots)
    assert np.array_equal(again.train.images, a.train.images) and np.array_equal(again.val.images, a.val.images)


def test_without_a_split_seed_the_few_shot_validation_is_the_same_for_every_method_of_a_seed(fmnist_root):
    def split(seed, method):
        return data.build_splits(config.resolve({}, [
            f"data.root={fmnist_root}", "data.val_fraction=0.1", "scenario.kind=fewshot", "scenario.shots=5",
            f"train.seed={seed}", f"method.name={method}"]))

    a, b = split(0, "ce"), split(0, "ls")
    assert np.array_equal(a.val.images, b.val.images) and np.array_equal(a.train.images, b.train.images)
    assert not _image_keys(a.val) & _image_keys(a.train)


def test_a_few_shot_validation_that_leaves_no_shot_is_one_line(fmnist_root):
    with pytest.raises(DataError, match="few-shot validation of scenario.shots=150"):
        _fewshot(fmnist_root, 150, 0, "ce", "data.train_subset=2000")


def test_fewshot_split(fmnist_root):
    s = data.build_splits(config.resolve({}, [f"data.root={fmnist_root}", "scenario.kind=fewshot",
                                              "scenario.shots=5"]))
    assert np.bincount(s.train.labels).tolist() == [5] * 10 and len(s.test) == 10000


def _one_pixel_images(n=64, size=28):
    images = np.zeros((n, size, size, 1), dtype=np.uint8)
    images[:, size // 2, size // 2, 0] = 255
    return data.ImageArrays(images, np.arange(n, dtype=np.int64) % 10)


def test_resident_loader_crops_within_pad_and_flips():
    arrays = _one_pixel_images()
    info = data.DatasetInfo("t", 10, 1, (0.0,), (1.0,))
    loader = loaders.ResidentLoader(arrays, info, torch.device("cpu"), "standard")
    gen = torch.Generator().manual_seed(0)
    batches = loaders.default_index_batches(64, 16, False, gen)
    offsets = []
    for b in loader.epoch(batches, gen):
        assert b.x.shape == (16, 1, 28, 28) and b.x.dtype == torch.float32
        assert torch.equal(b.y, torch.from_numpy(arrays.labels)[b.index])
        for img in b.x[:, 0]:
            pos = (img == 1.0).nonzero()
            if len(pos):  # the pixel can be cropped away only if it moved by more than the pad: never here
                offsets.append((pos[0, 0].item() - 14, pos[0, 1].item() - 14))
    assert len(offsets) == 64
    pad = loaders.crop_pad(28)
    assert all(abs(dy) <= pad and abs(dx) <= pad + 1 for dy, dx in offsets)  # +1: a flip mirrors column 14 to 13
    assert len(set(offsets)) > 10  # the crops really vary


def test_resident_loader_without_augment_is_normalised_identity():
    arrays = _one_pixel_images(8)
    info = data.DatasetInfo("t", 10, 1, (0.5,), (0.25,))
    loader = loaders.ResidentLoader(arrays, info, torch.device("cpu"), "none")
    gen = torch.Generator().manual_seed(0)
    (b,) = list(loader.epoch([torch.arange(8)], gen))
    expected = (torch.from_numpy(arrays.images).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.25
    assert torch.allclose(b.x, expected)


@pytest.mark.parametrize("augment", ["standard", "randaugment", "none"])
def test_torch_loader_serves_every_index_once(augment):
    arrays = _one_pixel_images(40)
    info = data.DatasetInfo("t", 10, 1, (0.0,), (1.0,))
    loader = loaders.TorchLoader(arrays, info, torch.device("cpu"), augment)
    gen = torch.Generator().manual_seed(1)
    batches = loaders.default_index_batches(40, 16, False, gen)
    seen = torch.cat([b.index for b in loader.epoch(batches, gen)])
    assert sorted(seen.tolist()) == list(range(40))


def test_loaders_are_deterministic_given_the_generator():
    arrays = _one_pixel_images(32)
    info = data.DatasetInfo("t", 10, 1, (0.0,), (1.0,))
    for loader in (loaders.ResidentLoader(arrays, info, torch.device("cpu"), "standard"),
                   loaders.TorchLoader(arrays, info, torch.device("cpu"), "standard")):
        runs = []
        for _ in range(2):
            torch.manual_seed(5)
            gen = torch.Generator().manual_seed(7)
            runs.append(torch.cat([b.x for b in loader.epoch(loaders.default_index_batches(32, 8, False, gen), gen)]))
        assert torch.equal(runs[0], runs[1])


def _fake_cub(root, classes=("001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross"),
              per_class=4):
    """A tiny archive with the official CUB-200-2011 layout (images.txt, train_test_split.txt, images/<class>/)."""
    import tarfile

    from PIL import Image

    base = root / "src" / "CUB_200_2011"
    lines, split, image_id = [], [], 0
    for c, name in enumerate(classes):
        (base / "images" / name).mkdir(parents=True)
        for i in range(per_class):
            image_id += 1
            rel = f"{name}/{name.split('.')[1]}_{i:04d}.jpg"
            Image.fromarray(np.full((50, 70, 3), 40 * c + 10 * i, dtype=np.uint8)).save(base / "images" / rel)
            lines.append(f"{image_id} {rel}")
            split.append(f"{image_id} {1 if i < per_class - 1 else 0}")
    (base / "images.txt").write_text("\n".join(lines) + "\n")
    (base / "train_test_split.txt").write_text("\n".join(split) + "\n")
    (base / "classes.txt").write_text("\n".join(f"{c + 1} {n}" for c, n in enumerate(classes)) + "\n")
    with tarfile.open(root / "CUB_200_2011.tgz", "w:gz") as tar:
        tar.add(base, arcname="CUB_200_2011")
    shutil.rmtree(root / "src")


def test_cub_is_prepared_from_the_official_archive_layout(tmp_path, capsys):
    from icp import cli

    assert cli.main(["data", "prepare", "--dataset", "cub", "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "CUB_200_2011.tgz" in err and "data.caltech.edu" in err
    _fake_cub(tmp_path)
    assert cli.main(["data", "prepare", "--dataset", "cub", "--root", str(tmp_path)]) == 0
    split = tmp_path / "CUB_200_2011" / "split"
    assert len(list(split.glob("train/*/*.jpg"))) == 9 and len(list(split.glob("test/*/*.jpg"))) == 3
    cfg = config.resolve({}, ["data.dataset=cub", f"data.root={tmp_path}", "data.image_size=32"])
    splits = data.build_splits(cfg)
    assert splits.info.num_classes == 3 and splits.train.images.shape == (9, 32, 32, 3)
    assert sorted(splits.test.labels.tolist()) == [0, 1, 2]


def test_the_cub_recipes_train_the_generative_study_at_64x64(tmp_path):
    """The CUB recipes as the paper grid uses them (the ce ResNet-20 that FID's features come from, then the VAE
    and ICP on it at 3×64×64) run end to end on the tiny archive: recipe keys, shapes and the FID hand-over."""
    from icp import engine

    _fake_cub(tmp_path, per_class=16)  # 15 training images a class: the recipe's 10 % validation split holds 2
    from icp import cli

    assert cli.main(["data", "prepare", "--dataset", "cub", "--root", str(tmp_path)]) == 0
    common = ["data.dataset=cub", f"data.root={tmp_path}", "train.epochs=1", "train.batch_size=4",
              "train.device=cpu", "train.progress=false"]
    read = lambda name: schema.read_yaml(f"config/recipes/{name}.yaml")  # noqa: E731
    ce = engine.Trainer(config.resolve(read("cub-resnet20"), [*common, "method.name=ce"]), tmp_path / "ce").run()
    assert ce["status"] == "complete"
    for method in ("vae", "icp-adam"):
        cfg = config.resolve(read("vae-cub"), [*common, f"method.name={method}", "method.options.warmup=0"
                             if method != "vae" else "train.seed=0", f"train.fid_features={tmp_path / 'ce'}"])
        rec = engine.Trainer(cfg, tmp_path / method).run()
        assert rec["status"] == "complete" and rec["config"]["data"]["image_size"] == 64, rec.get("error")
        test = rec["last"]["test"]
        assert 0 < test["ssim"] < 1 and test["fid_recon"] > 0 and test["fid_prior"] > 0


def test_a_missing_cifar_is_one_line_naming_the_file_and_our_command_not_torchvisions(tmp_path):
    with pytest.raises(data.DataError) as exc:
        data.load_split("cifar100", tmp_path, train=True)
    line = str(exc.value)
    assert line == data.missing("cifar100", tmp_path) and "\n" not in line
    assert "icp data prepare --dataset cifar100" in line and "download=True" not in line
