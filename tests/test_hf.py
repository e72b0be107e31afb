import json

import pytest
import torch

from genloom.data.tokenizers import CharTokenizer, GPT2Tokenizer
from genloom.errors import GenloomError
from genloom.hf import export_gpt2, import_gpt2, load_hf_gpt2
from genloom.checkpoints import export_model, load_model

from conftest import random_gpt

# in the test extra: a missing one fails here, never skips (pip install -e ".[test]")
import transformers


def genloom_folder(path, model, tok):
    return export_model(path, family="gpt", model=model, model_config=model.config, tokenizer=tok)


def max_diff(a, b):
    return (a - b).abs().max().item()


@pytest.mark.parametrize("tie", [True, False])
def test_export_loads_in_transformers(tmp_path, tie):
    model = random_gpt("gpt2", vocab_size=60, n_head=4, tie_weights=tie, seed=5)
    tok = CharTokenizer([chr(0x4E00 + i) for i in range(60)])
    hf_dir = export_gpt2(genloom_folder(tmp_path / "g", model, tok), tmp_path / "hf")
    config = json.loads((hf_dir / "config.json").read_text())
    assert config["model_type"] == "gpt2" and config["tie_word_embeddings"] is tie
    hf = transformers.GPT2LMHeadModel.from_pretrained(hf_dir).eval()
    idx = torch.randint(0, 60, (2, 32))
    with torch.no_grad():
        ours, _ = model(idx)
        theirs = hf(idx).logits
    assert theirs.shape == ours.shape
    assert max_diff(ours, theirs) < 1e-4
    assert (hf_dir / "genloom_tokenizer.json").is_file()
    # and back: the exported folder imports as the same model
    back, back_tok = load_hf_gpt2(hf_dir)
    assert back_tok.encode("丁七") == tok.encode("丁七")
    with torch.no_grad():
        assert max_diff(back(idx)[0], ours) < 1e-6


def small_hf_gpt2(seed=0):
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(vocab_size=50257, n_positions=64, n_embd=32, n_layer=2, n_head=2)
    return transformers.GPT2LMHeadModel(cfg).eval()


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_import_from_transformers(tmp_path, fmt):
    hf = small_hf_gpt2(seed=1)
    src = tmp_path / "hf"
    if fmt == "safetensors":
        hf.save_pretrained(src)
        assert (src / "model.safetensors").is_file()
    else:
        src.mkdir()
        hf.config.to_json_file(src / "config.json")
        torch.save(hf.state_dict(), src / "pytorch_model.bin")
    out = import_gpt2(src, tmp_path / "genloom")
    lm = load_model(out)
    assert isinstance(lm.tokenizer, GPT2Tokenizer)
    assert lm.config.block_size == 64 and lm.config.n_layer == 2 and lm.config.arch == "gpt2"
    idx = torch.randint(0, 50257, (2, 40))
    with torch.no_grad():
        assert max_diff(lm.model(idx)[0], hf(idx).logits) < 1e-4
    card = json.loads((out / "config.json").read_text())["card"]
    assert card["imported_from"] == str(src)


class Evil:
    pass


def test_import_refuses_pickled_code(tmp_path):
    src = tmp_path / "hf"
    src.mkdir()
    small_hf_gpt2().config.to_json_file(src / "config.json")
    torch.save({"transformer.wte.weight": Evil()}, src / "pytorch_model.bin")
    with pytest.raises(GenloomError, match="refusing"):
        import_gpt2(src, tmp_path / "out")


def test_llama_refuses_gpt2_export(tmp_path):
    model = random_gpt("llama", vocab_size=26, n_kv_head=2, bias=False)
    folder = genloom_folder(tmp_path / "llama", model, CharTokenizer([chr(97 + i) for i in range(26)]))
    with pytest.raises(GenloomError, match="llama"):
        export_gpt2(folder, tmp_path / "hf")
    assert not (tmp_path / "hf" / "model.safetensors").exists()


def test_import_rejects_other_folders(tmp_path):
    with pytest.raises(GenloomError, match="no config.json"):
        import_gpt2(tmp_path, tmp_path / "out")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(GenloomError, match="only GPT-2"):
        import_gpt2(tmp_path, tmp_path / "out")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", "activation_function": "relu",
                                                      "vocab_size": 10, "n_layer": 1, "n_head": 1, "n_embd": 4}))
    with pytest.raises(GenloomError, match="activation_function"):
        import_gpt2(tmp_path, tmp_path / "out")
