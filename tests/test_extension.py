"""The extension point: a family defined only in the tests goes train -> export -> load -> generate, from the
CLI (registered through GENLOOM_PLUGINS in a fresh process) and the API (registered in this process)."""

import base64
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from genloom import families

ROOT = Path(__file__).resolve().parents[1]
PLUGINS = ROOT / "tests" / "plugins"


def cli(*args, timeout=300):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GENLOOM_PLUGINS": "blob_family",
           "PYTHONPATH": os.pathsep.join([str(PLUGINS), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "genloom", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=env)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("blob")
    res = cli("train", "--set", "family='blob'", "--set", "data.source='digits'", "--set", f"train.out_dir='{tmp / 'run'}'",
              "--set", "train.max_steps=30", "--set", "train.batch_size=64", "--set", "train.lr=0.05",
              "--set", "train.warmup_steps=0", "--set", "train.eval_interval=10", "--set", "train.eval_batches=2",
              "--set", "train.log_interval=10")
    assert res.returncode == 0, res.stderr[-2000:]
    res = cli("export", tmp / "run", "--out", tmp / "blob")
    assert res.returncode == 0, res.stderr[-2000:]
    return tmp / "blob"


def test_the_family_is_unknown_without_its_plugin():
    env = {k: v for k, v in os.environ.items() if k != "GENLOOM_PLUGINS"}
    res = subprocess.run([sys.executable, "-m", "genloom", "train", "--set", "family='blob'"], capture_output=True,
                         text=True, timeout=120, cwd=ROOT, env=env)
    assert res.returncode == 2 and "unknown model family 'blob'" in res.stderr


def test_train_export_load_generate_from_the_cli(exported, tmp_path):
    assert (exported / "README.md").read_text().startswith("# blob")
    out = tmp_path / "imgs"
    res = cli("generate", "-m", exported, "-n", "3", "--seed", "7", "--out", out)
    assert res.returncode == 0, res.stderr[-2000:]
    pngs = sorted(p for p in out.glob("*.png") if "grid" not in p.name)
    assert len(pngs) == 3
    meta = Image.open(pngs[0]).text
    assert "blob" in str(meta)
    # the trained mean looks like a digit's mean image: brighter in the middle than at the border
    px = Image.open(pngs[0]).convert("L")
    w, h = px.size
    centre, corner = px.getpixel((w // 2, h // 2)), px.getpixel((0, 0))
    assert centre > corner + 20


def test_generate_from_the_api(exported):
    sys.path.insert(0, str(PLUGINS))
    try:
        import blob_family  # noqa: F401  (registers "blob" in this process)
        from test_api_text import Server, httpx

        from genloom.serve.app import create_app

        server = Server(create_app([str(exported)], jobs=False))
        try:
            models = httpx.get(f"{server.url}/v1/models").json()["data"]
            assert [m["id"] for m in models] == ["blob"]
            r = httpx.post(f"{server.url}/v1/images/generations", json={"model": "blob", "prompt": "x", "n": 2,
                                                                         "seed": 7}, timeout=60)
            assert r.status_code == 200, r.text
            data = r.json()["data"]
            assert len(data) == 2
            img = Image.open(io.BytesIO(base64.b64decode(data[0]["b64_json"])))
            assert img.size == (8, 8)
        finally:
            server.close()
    finally:
        sys.path.remove(str(PLUGINS))
        families.unregister("blob")
