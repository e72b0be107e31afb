"""Image data sets, folders, conversions and grids."""

import numpy as np
import pytest
import torch
from PIL import Image

from genloom.data.images import (FASHION_CLASSES, convert, grid_png, holdout, image_folder, load_images, make_grid)
from genloom.errors import GenloomError


def test_fashion_mnist_official_split():
    train, test = load_images("fashion-mnist", "train"), load_images("fashion-mnist", "test")
    assert train.images.shape == (60000, 1, 28, 28) and test.images.shape == (10000, 1, 28, 28)
    assert train.images.dtype == torch.uint8 and train.classes == FASHION_CLASSES
    assert test.labels.bincount().tolist() == [1000] * 10
    assert test.labels[:3].tolist() == [9, 2, 1]  # the first three test labels of the IDX file


def test_fashion_mnist_from_a_folder_with_the_same_files(tmp_path):
    import shutil

    for f in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shutil.copy(f"/usr/share/datasets/fashion-mnist/{f}", tmp_path / f)
    ds = load_images("fashion-mnist", "test", root=str(tmp_path))
    assert torch.equal(ds.images, load_images("fashion-mnist", "test").images)
    with pytest.raises(GenloomError, match="train-images-idx3-ubyte"):
        load_images("fashion-mnist", "train", root=str(tmp_path))


def test_digits_split_is_seeded_and_disjoint():
    a, b = load_images("digits", "train"), load_images("digits", "test")
    assert len(a) + len(b) == 1797 and len(b) == 179
    assert torch.equal(load_images("digits", "test").images, b.images)  # same seed, same split
    other = load_images("digits", "test", seed=7)
    assert not torch.equal(other.images, b.images)
    assert int(a.images.max()) == 255


def test_unknown_source_lists_choices():
    with pytest.raises(GenloomError, match="choose one of digits, fashion-mnist, mnist5k"):
        load_images("cifar")


def _png(path, size, color, mode="RGB"):
    Image.new(mode, size, color).save(path)


def test_folder_with_class_subfolders_resized_and_cropped(tmp_path):
    for cls, color in (("cat", (255, 0, 0)), ("dog", (0, 0, 255))):
        (tmp_path / cls).mkdir()
        for i in range(3):
            _png(tmp_path / cls / f"{i}.png", (40 + i * 10, 30), color)
    ds = image_folder(tmp_path, size=16, channels=3)
    assert ds.images.shape == (6, 3, 16, 16) and ds.classes == ["cat", "dog"]
    assert ds.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert ds.images[0, 0].float().mean() > 250 and ds.images[3, 2].float().mean() > 250
    grey = image_folder(tmp_path, size=8, channels=1)
    assert grey.images.shape == (6, 1, 8, 8)
    assert abs(float(grey.images[0].float().mean()) - 0.299 * 255) < 2  # ITU-R 601 luma of pure red


def test_folder_labels_csv(tmp_path):
    for i in range(4):
        _png(tmp_path / f"{i}.png", (8, 8), (i * 60,) * 3)
    (tmp_path / "labels.csv").write_text("filename,label\n0.png,a\n1.png,b\n2.png,a\n3.png,b\n")
    ds = image_folder(tmp_path, size=8)
    assert ds.classes == ["a", "b"] and ds.labels.tolist() == [0, 1, 0, 1]
    (tmp_path / "labels.csv").write_text("0.png,a\n1.png,b\n")
    with pytest.raises(GenloomError, match="no label for 2.png"):
        image_folder(tmp_path, size=8)


def test_folder_errors_name_the_bad_file(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(GenloomError, match="no readable images; the first bad file is .*broken.png"):
        image_folder(tmp_path, size=8)
    _png(tmp_path / "a.png", (8, 8), (0, 0, 0))
    _png(tmp_path / "b.png", (9, 8), (0, 0, 0))
    (tmp_path / "broken.png").unlink()
    with pytest.raises(GenloomError, match="b.png is 9x8 but a.png is 8x8"):
        image_folder(tmp_path)  # no size given: sizes must agree
    with pytest.raises(GenloomError, match="holds no images"):
        image_folder(_empty(tmp_path))


def _empty(tmp_path):
    d = tmp_path / "empty"
    d.mkdir()
    return d


def test_convert_and_holdout():
    ds = load_images("digits", "test")
    big = convert(ds, size=16, channels=3)
    assert big.images.shape == (179, 3, 16, 16) and torch.equal(big.images[:, 0], big.images[:, 1])
    tr, te = holdout(ds, 0.2, seed=1)
    assert len(tr) + len(te) == len(ds) and len(te) == 35
    tr2, te2 = holdout(ds, 0.2, seed=1)
    assert torch.equal(te.images, te2.images)


def test_grid_layout_and_png():
    imgs = torch.zeros(10, 1, 4, 4, dtype=torch.uint8)
    imgs[3] = 255
    g = make_grid(imgs, nrow=4, pad=1)
    assert g.shape == (3 * 5 + 1, 4 * 5 + 1, 1)
    assert g[1:5, 16:20].min() == 255 and g[1:5, 1:5].max() == 0  # image 3 is the 4th of the first row
    png = grid_png(imgs, nrow=4, scale=3)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert Image.open(__import__("io").BytesIO(png)).size == ((4 * 6 + 2) * 3, (3 * 6 + 2) * 3)  # default padding 2
    assert np.asarray(Image.open(__import__("io").BytesIO(png))).max() == 255
