"""DCGAN family: the pretrained face generator imports safely, samples deterministically, PNGs carry metadata."""

import pickle
from pathlib import Path

import pytest
import torch

from conftest import NO_GAN_FACES, assert_one_line_error
from genloom.data.images import read_png_parameters
from genloom.models.gan import DCGAN, DCGANConfig
from genloom.checkpoints import load_model

gan_face_generate = pytest.importorskip("gan_face_generate", reason=NO_GAN_FACES)
WEIGHTS = Path(gan_face_generate.__file__).parent / "weights.tar"


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    from genloom.importers import import_dcgan

    return Path(import_dcgan(str(WEIGHTS), str(tmp_path_factory.mktemp("f") / "faces")))


def test_import_matches_the_reference_generator(faces):
    """Our generator on the imported weights equals the classic nn.Sequential DCGAN on the original ones."""
    import torch.nn as nn

    ngf, nz = 64, 100
    ref = nn.Sequential(
        nn.ConvTranspose2d(nz, ngf * 8, 4, 1, 0, bias=False), nn.BatchNorm2d(ngf * 8), nn.ReLU(True),
        nn.ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 4), nn.ReLU(True),
        nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 2), nn.ReLU(True),
        nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf), nn.ReLU(True),
        nn.ConvTranspose2d(ngf, 3, 4, 2, 1, bias=False), nn.Tanh()).eval()
    state = torch.load(WEIGHTS, map_location="cpu", weights_only=True)["netG_state_dict"]
    ref.load_state_dict({k[len("main."):]: v for k, v in state.items()})
    lm = load_model(faces)
    assert lm.family == "dcgan" and lm.config.image_size == 64 and lm.config.nz == 100
    z = torch.randn(3, 100, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (lm.model.generator(z) - ref(z[:, :, None, None])).abs().max() < 1e-5


def test_sampling_is_seeded_per_image(faces):
    lm = load_model(faces)
    a, b = lm.model.sample(4, seed=3), lm.model.sample(2, seed=3)
    assert a.shape == (4, 3, 64, 64) and a.dtype == torch.uint8
    assert torch.equal(a[:2], b) and not torch.equal(a, lm.model.sample(4, seed=4))
    assert float(a.float().std()) > 20  # real pictures, not a flat colour


def test_cli_generate_writes_pngs_with_parameters(run_main, faces, tmp_path):
    code, out, err = run_main("generate", "-m", faces, "-n", "3", "--seed", "9", "--out", tmp_path / "o")
    assert code == 0, err
    params = read_png_parameters(str(tmp_path / "o" / "9-002.png"))
    assert params["seed"] == 9 and params["index"] == 2 and params["family"] == "dcgan"
    assert (tmp_path / "o" / "9-grid.png").exists()
    code, out, err = run_main("generate", "-m", faces, "-p", "a face")
    assert "takes no prompt" in assert_one_line_error(code, out, err)


def test_import_refuses_pickles_and_foreign_checkpoints(run_main, tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (tmp_path / "evil.pt").write_bytes(pickle.dumps({"netG_state_dict": Evil()}))
    code, out, err = run_main("import-gan", tmp_path / "evil.pt", "--out", tmp_path / "x")
    assert "refusing to load" in assert_one_line_error(code, out, err) and "pwned" not in out
    torch.save({"layer.weight": torch.zeros(2)}, tmp_path / "other.pt")
    code, out, err = run_main("import-gan", tmp_path / "other.pt", "--out", tmp_path / "y")
    assert "holds no DCGAN generator" in assert_one_line_error(code, out, err)


def test_image_size_must_be_a_power_of_two():
    from genloom.errors import GenloomError

    with pytest.raises(GenloomError, match="power of two"):
        DCGAN(DCGANConfig(image_size=48))
    assert DCGAN(DCGANConfig(image_size=32, channels=1, num_classes=10)).generator(
        torch.randn(2, 100), torch.tensor([1, 2])).shape == (2, 1, 32, 32)
