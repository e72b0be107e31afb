import errno
import json
import os
import pickle
import random
import stat

import pytest
import torch
from safetensors import safe_open

from genloom.data.tokenizers import CharTokenizer
from genloom.checkpoints import export_model, load_checkpoint, load_model, load_resumable, save_checkpoint
from genloom.errors import GenloomError
from genloom.files import (atomic_torch_save, atomic_write, atomic_write_bytes, atomic_write_text, previous_checkpoint,
                           safe_torch_load)

from conftest import random_gpt

TOK = CharTokenizer([chr(ord("a") + i) for i in range(26)] + [chr(0x4E00 + i) for i in range(24)])  # 50 ids


class Payload:
    """A class only this test module defines: loading it back would import and run test code."""

    def __init__(self):
        self.secret = "pickled object"


def export(tmp_path, model, name="m", **kw):
    return export_model(tmp_path / name, family="gpt", model=model, model_config=model.config, tokenizer=TOK, **kw)


def logits(model, idx):
    with torch.no_grad():
        return model(idx)[0]


@pytest.mark.parametrize("kw", [dict(arch="gpt2"), dict(arch="gpt2", tie_weights=False),
                                dict(arch="llama", n_kv_head=2, bias=False)])
def test_export_load_roundtrip_identical_logits(tmp_path, kw):
    model = random_gpt(**kw)
    folder = export(tmp_path, model, card={"note": "hi"})
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors", "tokenizer.json"]
    lm = load_model(folder)
    assert lm.family == "gpt" and lm.config == model.config and lm.meta["card"] == {"note": "hi"}
    assert lm.tokenizer.encode("abc一") == TOK.encode("abc一")
    idx = torch.randint(0, 50, (2, 20))
    assert torch.equal(logits(lm.model, idx), logits(model, idx))
    with safe_open(folder / "model.safetensors", "pt") as f:
        keys = set(f.keys())
        assert f.metadata()["format"] == "genloom-model"
    assert ("lm_head.weight" in keys) == (not model.config.tie_weights)  # a tied matrix is stored once
    if model.config.tie_weights:
        assert lm.model.lm_head.weight is lm.model.transformer.wte.weight
    # the .safetensors file itself loads too
    assert torch.equal(logits(load_model(folder / "model.safetensors").model, idx), logits(model, idx))


def test_float16_export_loads(tmp_path):
    model = random_gpt()
    f32 = export(tmp_path, model, "f32")
    f16 = export(tmp_path, model, "f16", dtype="float16")
    assert (f16 / "model.safetensors").stat().st_size < 0.6 * (f32 / "model.safetensors").stat().st_size
    with safe_open(f16 / "model.safetensors", "pt") as f:
        assert f.get_tensor("transformer.wte.weight").dtype == torch.float16
    lm = load_model(f16)
    assert json.loads((f16 / "config.json").read_text())["dtype"] == "float16"
    assert lm.model.transformer.wte.weight.dtype == torch.float32  # computed in float32 after loading
    idx = torch.randint(0, 50, (1, 16))
    ref, got = logits(model, idx), logits(lm.model, idx)
    assert (ref - got).abs().max().item() < 1e-2
    assert not torch.equal(ref, got)  # it really went through float16
    lm_bf16 = load_model(export(tmp_path, model, "bf16", dtype="bfloat16"))
    assert (logits(lm_bf16.model, idx) - ref).abs().max().item() < 5e-2


def test_checkpoint_roundtrip(tmp_path):
    model = random_gpt("llama", n_kv_head=1, bias=False)
    opt = model.configure_optimizer(0.1, 1e-3, (0.9, 0.95))
    save_checkpoint(tmp_path / "c.pt", family="gpt", model=model, model_config=model.config, tokenizer=TOK,
                    optimizer=opt, step=12, extra={"best_val": 1.5})
    state = torch.load(tmp_path / "c.pt", weights_only=True)
    assert state["format"] == "genloom-checkpoint" and state["step"] == 12 and state["best_val"] == 1.5
    lm = load_model(tmp_path / "c.pt")
    idx = torch.randint(0, 50, (2, 9))
    assert torch.equal(logits(lm.model, idx), logits(model, idx)) and lm.meta["step"] == 12


@pytest.mark.parametrize("how", ["torch.save", "pickle.dump"])
def test_pickle_with_custom_class_is_refused(tmp_path, how):
    path = tmp_path / "evil.pt"
    obj = {"format": "genloom-checkpoint", "model": {}, "payload": Payload()}
    if how == "torch.save":
        torch.save(obj, path)
    else:
        path.write_bytes(pickle.dumps(obj, protocol=4))
    for load in (safe_torch_load, load_checkpoint, load_model):
        with pytest.raises(GenloomError, match="refusing to load"):
            load(path)


def test_legacy_torch_pickle_with_custom_class_is_refused(tmp_path):
    path = tmp_path / "old.pt"
    torch.save({"payload": Payload()}, path, _use_new_zipfile_serialization=False)
    with pytest.raises(GenloomError, match="refusing to load"):
        safe_torch_load(path)
    path.write_bytes(path.read_bytes()[:40])  # the same file cut short: corrupt, not "pickled objects"
    with pytest.raises(GenloomError, match="corrupt or not a checkpoint"):
        safe_torch_load(path)


def test_pickle_named_model_safetensors(tmp_path):
    folder = export(tmp_path, random_gpt())
    torch.save({"x": Payload()}, folder / "model.safetensors")
    with pytest.raises(GenloomError, match="not a valid safetensors file"):
        load_model(folder)


def test_random_bytes(tmp_path):
    folder = export(tmp_path, random_gpt())
    (folder / "model.safetensors").write_bytes(os.urandom(4096))
    with pytest.raises(GenloomError, match="not a valid safetensors file"):
        load_model(folder)
    (tmp_path / "junk.pt").write_bytes(os.urandom(4096))
    with pytest.raises(GenloomError, match=r"junk\.pt"):  # torch reads random bytes as a foreign pickle
        load_model(tmp_path / "junk.pt")
    for seed in range(20):  # garbage is corrupt, not "pickled objects" (that is for well-formed pickles only)
        blob = random.Random(seed).randbytes(random.Random(seed).choice([1, 7, 100, 4096]))
        (tmp_path / "junk.pt").write_bytes(blob)
        with pytest.raises(GenloomError) as e:
            load_checkpoint(tmp_path / "junk.pt")
        assert "corrupt or not a checkpoint" in str(e.value) and "pickled objects" not in str(e.value), blob[:20]
    good = tmp_path / "good.pt"
    atomic_torch_save(good, {"format": "genloom-checkpoint"})
    good.write_bytes(good.read_bytes()[:-100])  # truncated
    with pytest.raises(GenloomError):
        load_model(good)


def test_foreign_checkpoints(tmp_path):
    torch.save({"state_dict": {"w": torch.zeros(2)}}, tmp_path / "foreign.pt")
    with pytest.raises(GenloomError, match="not a genloom checkpoint"):
        load_model(tmp_path / "foreign.pt")
    torch.save([torch.zeros(2)], tmp_path / "list.pt")
    with pytest.raises(GenloomError, match="not a genloom checkpoint"):
        load_checkpoint(tmp_path / "list.pt")


def test_mismatched_weights(tmp_path):
    folder = export(tmp_path, random_gpt())
    config = json.loads((folder / "config.json").read_text())
    config["model"]["n_layer"] = 3
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(GenloomError, match="weights do not match"):
        load_model(folder)


def test_not_a_model(tmp_path):
    with pytest.raises(GenloomError, match="model not found"):
        load_model(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(GenloomError, match="holds no genloom model"):
        load_model(tmp_path / "empty")
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(GenloomError, match="import-hf"):
        load_model(hf)


def test_atomic_write_leaves_no_partial_file(tmp_path):
    target = tmp_path / "out.bin"

    def failing(f):
        f.write(b"half of the data")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, failing)
    assert list(tmp_path.iterdir()) == []  # neither the target nor a temporary file

    atomic_write_text(target, "old content")
    with pytest.raises(OSError):
        atomic_write(target, failing)
    assert target.read_text() == "old content"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, lambda f: (f.write(b"x"), (_ for _ in ()).throw(KeyboardInterrupt())))
    assert target.read_text() == "old content" and len(list(tmp_path.iterdir())) == 1
    atomic_write_text(target, "new")
    assert target.read_text() == "new"


def test_atomic_write_fsyncs_the_file_before_the_rename_and_then_its_folder(tmp_path, monkeypatch):
    """Without the fsync a crash soon after the rename can leave an empty or partial file under the final name."""
    events, real_fsync, real_replace = [], os.fsync, os.replace

    def fsync(fd):
        st = os.fstat(fd)
        events.append(("fsync", st.st_ino, stat.S_ISDIR(st.st_mode)))
        real_fsync(fd)

    def replace(src, dst, **kw):
        events.append(("replace", os.stat(src).st_ino, str(dst)))
        real_replace(src, dst, **kw)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    target = tmp_path / "out.bin"
    atomic_write_bytes(target, b"payload")
    assert target.read_bytes() == b"payload"
    kinds = [e[0] for e in events]
    assert "replace" in kinds, events
    i = kinds.index("replace")
    _, tmp_inode, dst = events[i]
    assert dst == str(target)
    # the temporary file (the inode that becomes `target`) is fsynced before it is renamed ...
    assert ("fsync", tmp_inode, False) in events[:i], events
    # ... and the folder after it, so the rename itself survives a power cut
    assert ("fsync", os.stat(tmp_path).st_ino, True) in events[i + 1:], events


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EFBIG])
def test_atomic_write_on_a_full_disk_names_the_file_and_keeps_the_old_one(tmp_path, code):
    target = tmp_path / "last.pt"
    atomic_write_text(target, "old content")

    def full(f):
        f.write(b"some")
        raise OSError(code, os.strerror(code))

    with pytest.raises(OSError) as e:
        atomic_write(target, full)
    assert e.value.errno == code and e.value.filename == str(target)
    assert target.read_text() == "old content" and [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_checkpoint_keeps_the_previous_one(tmp_path):
    model = random_gpt()
    kw = {"family": "gpt", "model": model, "model_config": model.config, "tokenizer": TOK, "optimizer": None,
          "extra": {}}
    save_checkpoint(tmp_path / "last.pt", step=1, **kw)
    assert not previous_checkpoint(tmp_path / "last.pt").exists()
    save_checkpoint(tmp_path / "last.pt", step=2, **kw)
    save_checkpoint(tmp_path / "last.pt", step=3, **kw)
    assert previous_checkpoint(tmp_path / "last.pt") == tmp_path / "last.prev.pt"
    assert load_checkpoint(tmp_path / "last.pt")["step"] == 3
    assert load_checkpoint(tmp_path / "last.prev.pt")["step"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.prev.pt", "last.pt"]


@pytest.mark.parametrize("damage", ["random", "truncated", "empty", "missing"])
def test_resumable_checkpoint_falls_back_to_the_previous_one(tmp_path, caplog, damage):
    model = random_gpt()
    kw = {"family": "gpt", "model": model, "model_config": model.config, "tokenizer": TOK, "optimizer": None,
          "extra": {}}
    last = tmp_path / "last.pt"
    save_checkpoint(last, step=4, **kw)
    save_checkpoint(last, step=8, **kw)
    state, path = load_resumable(last)
    assert state["step"] == 8 and path == last and not caplog.records  # a sound last.pt: no warning
    if damage == "random":
        last.write_bytes(os.urandom(5000))
    elif damage == "truncated":
        last.write_bytes(last.read_bytes()[:-3000])
    elif damage == "empty":
        last.write_bytes(b"")
    else:
        last.unlink()
    with caplog.at_level("WARNING"):
        state, path = load_resumable(last)
    assert state["step"] == 4 and path == tmp_path / "last.prev.pt"
    assert any("last.pt" in r.getMessage() and "last.prev.pt" in r.getMessage() for r in caplog.records)
    (tmp_path / "last.prev.pt").write_bytes(os.urandom(100))  # both gone: the error names the last one
    if damage != "missing":
        with pytest.raises(GenloomError, match=r"last\.pt"):
            load_resumable(last)
