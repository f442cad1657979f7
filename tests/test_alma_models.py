"""The three networks of the ALMA pipeline: the paper's shapes, the registry, checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mlsky.alma.finder.models import BlobsFinder, create_model, list_models
from mlsky.alma.finder.models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from mlsky.alma.finder.train import fit_network, ssim
from mlsky.alma.sim.sky import canonical_shape


def test_registry_lists_and_creates_models():
    assert list_models() == ["blobs_finder", "blobs_finder_fcn", "deep_gru", "resnet18"]
    assert isinstance(create_model("blobs_finder", input_size=32), BlobsFinder)
    with pytest.raises(KeyError, match="unknown model 'unet'.*blobs_finder"):
        create_model("unet")


def test_blobs_finder_has_the_shapes_of_table_3():
    net = BlobsFinder(input_size=256).eval()
    x = torch.zeros(1, 1, 256, 256)
    shapes = []
    for block in net.encoder:
        x = block(x)
        shapes.append(tuple(x.shape[1:]))
    assert shapes == [(8, 128, 128), (16, 64, 64), (32, 32, 32), (64, 16, 16), (64, 16, 16)]
    assert net.fc1.in_features == 64 * 16 * 16 and net.fc1.out_features == 1024
    z = net.fc2(net.fc1(x.flatten(1))).view(1, 64, 16, 16)
    for block, expected in zip(net.decoder, [(32, 32, 32), (16, 64, 64), (8, 128, 128), (1, 256, 256)]):
        z = block(z)
        assert tuple(z.shape[1:]) == expected
    with torch.no_grad():
        out = net(torch.randn(2, 1, 256, 256))
    assert out.shape == (2, 1, 256, 256) and 0 <= float(out.min()) and float(out.max()) <= 1


def test_blobs_finder_rejects_wrong_sizes():
    with pytest.raises(ValueError, match="multiple of 16"):
        BlobsFinder(input_size=100)
    with pytest.raises(ValueError, match="expects 32x32"):
        BlobsFinder(input_size=32)(torch.zeros(1, 1, 64, 64))


def test_deep_gru_and_resnet_shapes():
    gru = create_model("deep_gru", hidden=8)
    with torch.no_grad():
        p = gru(torch.randn(3, 50))
    assert p.shape == (3, 50) and float(p.min()) >= 0 and float(p.max()) <= 1
    with pytest.raises(ValueError, match="batch, n_chan"):
        gru(torch.randn(3, 50, 1))
    resnet = create_model("resnet18", width=64, out_features=2)
    assert resnet.head[0].in_features == 512  # the paper's latent vector
    assert resnet(torch.randn(2, 1, 32, 32)).shape == (2, 2)


def test_checkpoint_round_trip_and_wrong_model(tmp_path):
    net = create_model("deep_gru", hidden=4)
    path = save_checkpoint(tmp_path / "gru.pt", net, epoch=3, history={"train": [1.0], "val": []}, extra={"a": 1})
    loaded, extra = load_checkpoint(path, "deep_gru")
    assert extra == {"a": 1}
    x = torch.randn(2, 20)
    assert torch.allclose(loaded(x), net.eval()(x))
    with pytest.raises(CheckpointError, match="holds model 'deep_gru', not 'blobs_finder'"):
        load_checkpoint(path, "blobs_finder")
    state = torch.load(path, weights_only=True)
    state["model_version"] = 99
    torch.save(state, tmp_path / "old.pt")
    with pytest.raises(CheckpointError, match="version 99.*retrain"):
        load_checkpoint(tmp_path / "old.pt", "deep_gru")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "junk.pt", "deep_gru")
    with pytest.raises(FileNotFoundError, match="mlsky alma train"):
        load_checkpoint(tmp_path / "missing.pt", "deep_gru")


def _toy_problem(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 16)).astype(np.float32)
    y = (x > 0.5).astype(np.float32)
    return x, y


def test_training_resumes_where_it_stopped(tmp_path):
    x, y = _toy_problem()
    ckpt = tmp_path / "gru.pt"
    torch.manual_seed(0)
    once = create_model("deep_gru", hidden=4)
    full = fit_network(once, x, y, F.binary_cross_entropy, epochs=4, batch_size=16, progress=False, seed=1)
    torch.manual_seed(0)
    twice = create_model("deep_gru", hidden=4)
    fit_network(twice, x, y, F.binary_cross_entropy, epochs=2, batch_size=16, checkpoint=ckpt, progress=False, seed=1)
    resumed = create_model("deep_gru", hidden=4)
    history = fit_network(resumed, x, y, F.binary_cross_entropy, epochs=4, batch_size=16, checkpoint=ckpt,
                          progress=False, seed=1)
    assert len(history["train"]) == 4
    np.testing.assert_allclose(history["train"], full["train"], rtol=1e-4)
    assert history["train"][-1] < history["train"][0]  # it learns
    with pytest.raises(CheckpointError, match="trained with"):
        fit_network(create_model("deep_gru", hidden=8), x, y, F.binary_cross_entropy, epochs=5, checkpoint=ckpt,
                    progress=False)


def test_ssim_is_one_for_identical_images_and_lower_otherwise():
    a = torch.rand(2, 1, 32, 32)
    assert float(ssim(a, a)) == pytest.approx(1.0, abs=1e-5)
    assert float(ssim(a, torch.rand(2, 1, 32, 32))) < 0.5


def test_canonical_shape_puts_the_major_axis_first():
    fx, fy, pa = canonical_shape([2.0, 5.0], [4.0, 3.0], [10.0, 170.0])
    np.testing.assert_allclose(fx, [4.0, 5.0])
    np.testing.assert_allclose(fy, [2.0, 3.0])
    np.testing.assert_allclose(pa, [100.0, 170.0])
