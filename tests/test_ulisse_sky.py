"""Tests of mlsky.ulisse.sky: augmentations, SimCLR training, the shipped encoder as a backbone."""

from __future__ import annotations

import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch
from scipy import ndimage

from mlsky.cli import main
from mlsky.data import DataCorruptError, sha256, weights
from mlsky.ulisse.backbone import load_backbone
from mlsky.ulisse.cutouts import read_image
from mlsky.ulisse.data import load_galaxyzoo1
from mlsky.ulisse.features import FeatureExtractor, Features
from mlsky.ulisse.sky import augment
from mlsky.ulisse.sky.augment import Augmentation, galaxy_views, gaussian_blur
from mlsky.ulisse.sky.ship import SKY_FILE, SKY_FOLDER, SKY_WEIGHTS
from mlsky.ulisse.sky.train import (FIELD, export_encoder, load_encoder, nt_xent, train_encoder, training_fields,
                                    training_plan)


@pytest.fixture(scope="module")
def gz_paths():
    from tests.conftest import _data_dir

    if _data_dir() is None:
        pytest.skip("MLSKY_DATA_DIR (offline copies of the real data) is not available")
    return list(load_galaxyzoo1(n=200, seed=5)["path"])


def test_views_keep_shape_and_range_and_follow_the_seed():
    fields = torch.randint(0, 256, (5, 3, 48, 48), dtype=torch.uint8)

    def views(seed):
        return galaxy_views(fields, Augmentation(), size=32, field=1.5, generator=torch.Generator().manual_seed(seed))

    a, b, c = views(0), views(0), views(1)
    assert a.shape == (5, 3, 32, 32) and a.dtype == torch.float32
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    assert torch.equal(a, b) and not torch.allclose(a, c)


def test_views_rotate_a_bar_and_keep_its_colour():
    # A horizontal red bar: views are rotated (some bars turn away from the horizontal) but stay red.
    fields = torch.zeros(64, 3, 48, 48)
    fields[:, 0, 22:26, 8:40] = 0.9
    plain = Augmentation(shift=0, scale=0, blur=0, dim=1, noise=0, redden=0)
    views = galaxy_views(fields, plain, size=32, field=1.5, generator=torch.Generator().manual_seed(0))
    assert float(views[:, 1:].max()) == 0.0  # no light moved into green or blue
    horizontal = views[:, 0, 14:18].sum(dim=(1, 2)) / views[:, 0].sum(dim=(1, 2))
    assert float(horizontal.min()) < 0.5 < float(horizontal.max())


def test_gaussian_blur_keeps_flux_and_sigma_zero_keeps_the_image():
    x = torch.zeros(2, 3, 21, 21)
    x[:, :, 10, 10] = 1.0
    out = gaussian_blur(x, torch.tensor([0.0, 2.0]))
    assert torch.allclose(out[0], x[0], atol=1e-6)
    assert torch.allclose(out[1].sum(dim=(1, 2)), torch.ones(3), atol=1e-4)
    reference = ndimage.gaussian_filter(x[1, 0].numpy(), 2.0, mode="mirror", truncate=3.0)
    assert np.allclose(out[1, 0].numpy(), reference, atol=2e-3)


def test_reddening_dims_blue_most():
    fields = torch.full((200, 3, 48, 48), 0.5)
    red = Augmentation(shift=0, scale=0, blur=0, dim=1, noise=0, redden=0.3)
    views = galaxy_views(fields, red, size=32, field=1.5, generator=torch.Generator().manual_seed(0))
    r, g, b = views.mean(dim=(0, 2, 3)).tolist()
    assert 0.5 > r > g > b
    assert augment.EXTINCTION[0] < augment.EXTINCTION[1] < augment.EXTINCTION[2]


def test_encoder_sees_only_its_central_crop():
    from mlsky.ulisse.sky.encoder import SkyEncoder

    encoder = SkyEncoder(widths=(4, 8, 8, 8), resolution=16, crop=0.5).eval()
    x = torch.rand(2, 3, 64, 64)
    y = x.clone()
    y[..., :16, :] = torch.rand(2, 3, 16, 64)  # outside the central half: ignored
    z = x.clone()
    z[..., 30:34, 30:34] = 1.0  # inside: seen
    with torch.inference_mode():
        assert torch.equal(encoder(x), encoder(y)) and not torch.allclose(encoder(x), encoder(z))
    with pytest.raises(ValueError, match="crop=0"):
        SkyEncoder(crop=0)


def test_nt_xent_prefers_matching_views():
    z = torch.randn(8, 16)
    assert float(nt_xent(z, z + 0.01 * torch.randn(8, 16), 0.2)) < float(nt_xent(z, torch.randn(8, 16), 0.2))


def test_a_short_training_learns_and_its_export_loads(gz_paths, tmp_path):
    plan = replace(training_plan("ci"), epochs=4)
    fields = training_fields(gz_paths[:plan.images], size=round(FIELD * plan.resolution), crop=plan.crop)
    assert fields.dtype == np.uint8 and fields.shape == (plan.images, 3, 48, 48)
    encoder, history = train_encoder(fields, plan, seed=0)
    again, _ = train_encoder(fields, plan, seed=0)
    assert len(history["loss"]) == plan.epochs and np.isfinite(history["loss"]).all()
    assert history["loss"][-1] < history["loss"][0]  # it learns
    x = torch.rand(3, 3, 224, 224)
    with torch.inference_mode():
        assert torch.equal(encoder(x), again(x))  # seeded
        loaded, hist = load_encoder(export_encoder(encoder, history, tmp_path / "enc.pt"))
        assert torch.allclose(loaded(x), encoder(x)) and hist["loss"] == history["loss"]
    with pytest.raises(ValueError, match="fewer than one batch"):
        train_encoder(fields[:3], plan)
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="bad.pt: not a readable sky encoder"):
        load_encoder(tmp_path / "bad.pt")


def test_shipped_encoder_is_checked_and_small():
    entry = weights.registry()[SKY_WEIGHTS]
    assert entry["made_by"] == "MLSKY_SCALE=laptop mlsky ulisse train-sky --ship --seed 0"
    path = weights.shipped_weights(SKY_WEIGHTS) / SKY_FILE
    assert path.stat().st_size <= 10e6
    backbone = load_backbone("sky")
    assert backbone.name == "sky" and backbone.weights.startswith(f"sha256:{entry['files'][SKY_FILE]} ")
    assert entry["files"][SKY_FILE] in backbone.tag  # the cache folder changes with the weights
    assert backbone.layers[-1] == "head" and backbone.num_features == 256


def test_shipping_registers_the_sha256_and_keeps_other_entries(tmp_path, monkeypatch):
    from mlsky.ulisse.sky.encoder import SkyEncoder
    from mlsky.ulisse.sky.ship import ship_encoder

    registry = tmp_path / "weights.toml"
    shutil.copy(weights.REGISTRY, registry)
    monkeypatch.setattr(weights, "REGISTRY", registry)
    monkeypatch.setattr(weights, "PACKAGE_ROOT", tmp_path / "mlsky")
    weights.registry.cache_clear()
    try:
        path = ship_encoder(SkyEncoder(widths=(4, 8, 8, 8)), {"loss": [1.0]}, title="a test")
        entry = weights.registry()[SKY_WEIGHTS]
        assert path == tmp_path / "mlsky" / SKY_FOLDER / SKY_FILE
        assert entry["title"] == "a test" and entry["files"][SKY_FILE] == sha256(path)
        assert "alma_finder" in weights.registry() and load_backbone("sky").model.widths == (4, 8, 8, 8)
    finally:
        weights.registry.cache_clear()


def _damaged_package(tmp_path, monkeypatch, damage):
    root = tmp_path / "mlsky"
    (root / SKY_FOLDER).mkdir(parents=True)
    target = root / SKY_FOLDER / SKY_FILE
    shutil.copy(weights.PACKAGE_ROOT / SKY_FOLDER / SKY_FILE, target)
    damage(target)
    monkeypatch.setattr(weights, "PACKAGE_ROOT", root)
    return target


@pytest.mark.parametrize("damage", [lambda p: p.write_bytes(p.read_bytes()[:-100]), lambda p: p.unlink()],
                         ids=["truncated", "missing"])
def test_damaged_or_missing_encoder_is_an_error_naming_it(tmp_path, monkeypatch, damage, capsys, gz_paths):
    target = _damaged_package(tmp_path, monkeypatch, damage)
    with pytest.raises(DataCorruptError, match=str(target)):
        load_backbone("sky")
    folder = tmp_path / "cutouts"
    folder.mkdir()
    shutil.copy(gz_paths[0], folder)
    assert main(["ulisse", "embed", str(folder), "-o", str(tmp_path / "f.npz"), "--backbone", "sky"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and SKY_FILE in err and not (tmp_path / "f.npz").exists()


def test_rotated_galaxy_is_closer_than_another_galaxy(gz_paths):
    extractor = FeatureExtractor(backbone="sky", cache=False).fit()
    images = [read_image(p) for p in gz_paths[:8]]
    rotated = [ndimage.rotate(im, 37, reshape=False, order=1, mode="reflect") for im in images]
    a, b = extractor.transform(images), extractor.transform(rotated)
    same = np.linalg.norm(a - b, axis=1)
    others = np.linalg.norm(a[:, None] - a[None], axis=2) + np.diag(np.full(len(a), np.inf))
    assert (same < others.min(axis=1)).mean() >= 7 / 8


def test_embed_with_the_sky_backbone(gz_paths, tmp_path, capsys):
    folder = tmp_path / "cutouts"
    folder.mkdir()
    for path in gz_paths[:5]:
        shutil.copy(path, folder)
    out = tmp_path / "sky.npz"
    assert main(["ulisse", "embed", str(folder), "-o", str(out), "--backbone", "sky"]) == 0
    feats = Features.load(out)
    assert feats.features.shape == (5, 256) and feats.backbone == "sky" and feats.weights.startswith("sha256:")
    direct = FeatureExtractor(backbone="sky", cache=False, precision="fp32").extract(sorted(folder.iterdir()))
    assert np.allclose(direct.features, feats.features, atol=1e-4)
    assert set(direct.layers) == {"stage2", "stage3", "head"}
    with pytest.raises(ValueError, match="sky has stage2, stage3, head"):
        FeatureExtractor(backbone="sky", layer="blocks.5").fit()


def test_train_sky_cli_refuses_bad_input(tmp_path, capsys):
    assert main(["ulisse", "train-sky"]) == 2
    assert "either --ship" in capsys.readouterr().err
    existing = tmp_path / "enc.pt"
    existing.write_bytes(b"x")
    assert main(["ulisse", "train-sky", "-o", str(existing)]) == 2
    assert "already exists" in capsys.readouterr().err and existing.read_bytes() == b"x"
    assert main(["ulisse", "train-sky", str(tmp_path / "nowhere"), "-o", str(tmp_path / "new.pt")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_train_sky_cli_writes_a_loadable_encoder(gz_paths, tmp_path, capsys):
    folder = tmp_path / "cutouts"
    folder.mkdir()
    for path in gz_paths[:64]:
        shutil.copy(path, folder)
    assert main(["ulisse", "train-sky", str(folder), "-o", str(tmp_path / "enc.pt")]) == 0
    assert "1 epochs on 64 images" in capsys.readouterr().out
    encoder, history = load_encoder(tmp_path / "enc.pt")
    assert history["images"] == 64 and encoder.resolution == training_plan("ci").resolution
