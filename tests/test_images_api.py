"""POST /v1/images/generations through the server: PNG metadata, url responses, bad input as 400s naming the
parameter, prompts an unconditional model does not use, and text routes refusing image models."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

# in the test extra: a missing one fails here, never skips (pip install -e ".[test]")
import openai
try:
    import httpx2 as httpx
except ImportError:  # pragma: no cover
    import httpx

from test_api_text import CHAT, Server  # noqa: E402

from genloom.data.images import read_png_parameters  # noqa: E402
from genloom.serve.app import create_app  # noqa: E402


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    from genloom.cli import main

    out = tmp_path_factory.mktemp("faces") / "dcgan-faces"
    with pytest.raises(SystemExit) as e:
        main(["import-gan", "--package", "gan-face-generate", "--out", str(out)])
    assert e.value.code == 0
    return out


@pytest.fixture(scope="module")
def image_server(faces, tmp_path_factory):
    s = Server(create_app([CHAT, str(faces)], max_batch=2, max_queue=4, max_n=8,
                          data_dir=str(tmp_path_factory.mktemp("imgdata")), jobs=False))
    yield s
    s.close()


def test_images_generations_with_metadata(image_server):
    c = openai.OpenAI(base_url=f"{image_server.url}/v1", api_key="x", max_retries=0)
    assert {m.id for m in c.models.list().data} == {"chat", "dcgan-faces"}
    a = c.images.generate(model="dcgan-faces", prompt="", n=2, response_format="b64_json", extra_body={"seed": 5})
    b = c.images.generate(model="dcgan-faces", prompt="", n=2, response_format="b64_json", extra_body={"seed": 5})
    pa = [base64.b64decode(d.b64_json) for d in a.data]
    pb = [base64.b64decode(d.b64_json) for d in b.data]
    pixels = lambda png: np.asarray(Image.open(io.BytesIO(png)))  # noqa: E731
    assert all(np.array_equal(pixels(x), pixels(y)) for x, y in zip(pa, pb))  # same seed, same pixels
    assert [read_png_parameters(x) for x in pa] == [read_png_parameters(y) for y in pb]  # and parameters
    ids = {d.model_extra["aigc"]["ProduceID"] for d in [*a.data, *b.data]}
    assert len(ids) == 4  # but each output its own ProduceID (GB 45438)
    img = Image.open(io.BytesIO(pa[1]))
    assert img.size == (64, 64) and img.mode == "RGB"
    params = read_png_parameters(pa[1])
    assert params["seed"] == 5 and params["index"] == 1 and params["model"] == "dcgan-faces"
    assert "AI-generated" in img.text["AIGC"]
    u = c.images.generate(model="dcgan-faces", prompt="", n=1, response_format="url", extra_body={"seed": 5})
    r = httpx.get(u.data[0].url)
    assert r.status_code == 200 and read_png_parameters(r.content)["n"] == 1
    assert np.array_equal(pixels(r.content), pixels(pa[0]))  # image 0 of seed 5 is the same at any n
    metrics = httpx.get(f"{image_server.url}/metrics").text
    assert "genloom:images_generated_total" in metrics


@pytest.mark.parametrize("body, status, param", [
    ({"model": "dcgan-faces", "guidance": 7.5}, 400, "guidance"),
    ({"model": "dcgan-faces", "size": "1024x1024"}, 400, "size"),
    ({"model": "dcgan-faces", "sampler": "ddim", "steps": 20}, 400, "sampler"),
    ({"model": "dcgan-faces", "n": 99}, 400, "n"),
    ({"model": "chat"}, 400, "model"),
    ({"model": "sdxl"}, 404, "model"),
])
def test_images_bad_input(image_server, body, status, param):
    r = httpx.post(f"{image_server.url}/v1/images/generations", json=body)
    assert r.status_code == status and r.json()["error"]["param"] == param, r.text


def test_unconditional_model_takes_any_prompt_and_says_it_was_not_used(image_server):
    """The openai client always sends a prompt; an unconditional model answers and says it did not use it."""
    r = httpx.post(f"{image_server.url}/v1/images/generations", json={"model": "dcgan-faces", "prompt": "a cat",
                                                                       "seed": 3})
    assert r.status_code == 200, r.text
    assert "not used" in r.json()["data"][0]["revised_prompt"]
    plain = httpx.post(f"{image_server.url}/v1/images/generations", json={"model": "dcgan-faces", "seed": 3})
    assert plain.json()["data"][0]["revised_prompt"] is None
    png = lambda resp: Image.open(io.BytesIO(base64.b64decode(resp.json()["data"][0]["b64_json"])))  # noqa: E731
    assert np.array_equal(np.asarray(png(plain)), np.asarray(png(r)))  # the prompt changed nothing


def test_models_say_their_kind_and_options(image_server):
    cards = {m["id"]: m["genloom"] for m in httpx.get(f"{image_server.url}/v1/models").json()["data"]}
    assert cards["chat"]["kind"] == "text" and {"temperature", "top_k", "min_p"} <= set(cards["chat"]["options"])
    assert cards["dcgan-faces"]["kind"] == "image" and "sampler" not in cards["dcgan-faces"]["options"]


def test_text_routes_refuse_image_models(image_server):
    r = httpx.post(f"{image_server.url}/v1/completions", json={"model": "dcgan-faces", "prompt": "hi"})
    assert r.status_code == 400 and "image model" in r.json()["error"]["message"]
