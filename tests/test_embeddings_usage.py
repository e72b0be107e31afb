"""/v1/embeddings reports usage.prompt_tokens as the embedding model's own token count, not a word count."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from test_api_text import CHAT

from genloom.embeddings import model_dir
from genloom.serve.app import create_app

transformers = pytest.importorskip("transformers")

TEXTS = ["Tokenization isn't whitespace-splitting!", "unbelievably", "a b c"]


def test_prompt_tokens_match_the_models_tokenizer():
    tok = transformers.AutoTokenizer.from_pretrained(str(model_dir()))
    expected = sum(len(ids) for ids in tok(TEXTS)["input_ids"])  # with [CLS] and [SEP], what the model reads
    assert expected != sum(len(t.split()) for t in TEXTS)  # the texts tell the two counts apart
    with TestClient(create_app([CHAT], max_batch=1, max_queue=1, jobs=False), base_url="http://127.0.0.1") as client:
        res = client.post("/v1/embeddings", json={"model": "all-MiniLM-L6-v2", "input": TEXTS})
        one = client.post("/v1/embeddings", json={"model": "all-MiniLM-L6-v2", "input": TEXTS[0]})
    assert res.status_code == 200, res.text
    assert res.json()["usage"] == {"prompt_tokens": expected, "total_tokens": expected}
    assert one.json()["usage"]["prompt_tokens"] == len(tok(TEXTS[0])["input_ids"])
