import json

import pytest

from genloom.config import RunConfig, TrainConfig, apply_overrides, parse_value
from genloom.families import load_run_config
from genloom.errors import GenloomError

from conftest import TINY_TOML


def test_toml_load():
    cfg = load_run_config(TINY_TOML)
    assert isinstance(cfg, RunConfig) and isinstance(cfg.train, TrainConfig)
    assert cfg.family == "gpt"
    assert cfg.data.dir == "data/tang-char"
    assert cfg.model == {"block_size": 64, "n_layer": 2, "n_head": 2, "n_embd": 64, "dropout": 0.1}
    assert cfg.train.max_steps == 60 and cfg.train.batch_size == 16
    assert cfg.train.lr == pytest.approx(3e-3)
    assert cfg.train.out_dir == "runs/tiny"
    # keys the file leaves out keep their defaults
    assert cfg.train.grad_accum == 1 and cfg.train.lr_schedule == "cosine"


def test_no_file_gives_defaults():
    cfg = load_run_config(None, ["train.max_steps=3"])
    assert cfg.train.max_steps == 3 and cfg.train.batch_size == TrainConfig().batch_size


def test_overrides_with_type_coercion():
    cfg = load_run_config(TINY_TOML, [
        "train.lr=1",  # an int where a float is declared becomes a float
        "train.max_steps=7",
        "train.max_minutes=2",
        "train.out_dir=runs/other",  # not TOML: kept as a plain string
        "train.dtype=bfloat16",
        "model.dropout=0.25",
        "model.arch=\"llama\"",
        "model.n_kv_head=1",
    ])
    assert cfg.train.lr == 1.0 and type(cfg.train.lr) is float
    assert cfg.train.max_steps == 7 and type(cfg.train.max_steps) is int
    assert cfg.train.max_minutes == 2.0 and type(cfg.train.max_minutes) is float
    assert cfg.train.out_dir == "runs/other"
    assert cfg.train.dtype == "bfloat16"
    assert cfg.model["dropout"] == 0.25 and cfg.model["arch"] == "llama" and cfg.model["n_kv_head"] == 1
    assert cfg.train.batch_size == 16  # untouched keys keep the file's values


def test_parse_value():
    assert parse_value("3") == 3
    assert parse_value("3e-4") == pytest.approx(3e-4)
    assert parse_value("true") is True
    assert parse_value("[1, 2]") == [1, 2]
    assert parse_value("runs/x") == "runs/x"
    assert apply_overrides({"a": {"b": 1}}, ["a.c=2", "d.e.f=x"]) == {"a": {"b": 1, "c": 2}, "d": {"e": {"f": "x"}}}


@pytest.mark.parametrize("key, section_keys", [
    ("train.max_stepz", ["max_steps", "batch_size", "lr", "out_dir"]),
    ("data.folder", ["dir"]),
    ("model.n_layers", ["n_layer", "n_head", "n_embd", "block_size"]),
    ("famly", ["family", "model", "train", "data"]),
])
def test_unknown_key_names_valid_keys(key, section_keys):
    with pytest.raises(GenloomError) as e:
        load_run_config(TINY_TOML, [f"{key}=1"])
    msg = str(e.value)
    assert f"unknown config key '{key}'" in msg
    for k in section_keys:
        assert k in msg


@pytest.mark.parametrize("item, key, typename", [
    ("train.max_steps=abc", "train.max_steps", "int"),
    ("train.max_steps=1.5", "train.max_steps", "int"),
    ("train.lr=true", "train.lr", "float"),
    ("train.out_dir=12", "train.out_dir", "str"),
    ("model.n_layer=2.5", "model.n_layer", "int"),
    ("model.bias=1", "model.bias", "bool"),
])
def test_wrong_type(item, key, typename):
    with pytest.raises(GenloomError) as e:
        load_run_config(TINY_TOML, [item])
    assert f"config key '{key}' must be {typename}" in str(e.value)


def test_wrong_type_in_file(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[train]\nmax_steps = "ten"\n')
    with pytest.raises(GenloomError, match="train.max_steps' must be int"):
        load_run_config(path)


def test_unknown_family():
    with pytest.raises(GenloomError) as e:
        load_run_config(TINY_TOML, ["family=rnn"])
    assert "unknown model family 'rnn'" in str(e.value) and "gpt" in str(e.value)


@pytest.mark.parametrize("item, match", [
    ("train.lr", "key=value"),
    ("train.dtype=float64", "train.dtype"),
    ("train.lr_schedule=linear", "lr_schedule"),
    ("model.arch=\"mamba\"", "arch"),
    ("train=3", "must be a table"),
])
def test_other_bad_values(item, match):
    with pytest.raises(GenloomError, match=match):
        load_run_config(TINY_TOML, [item])


def test_yaml_and_json_files(tmp_path):
    (tmp_path / "a.yaml").write_text("family: gpt\ntrain:\n  max_steps: 5\nmodel:\n  n_layer: 1\n")
    (tmp_path / "b.json").write_text(json.dumps({"train": {"lr": 0.5}}))
    assert load_run_config(tmp_path / "a.yaml").train.max_steps == 5
    assert load_run_config(tmp_path / "b.json").train.lr == 0.5
    (tmp_path / "c.ini").write_text("")
    with pytest.raises(GenloomError, match="unknown config format"):
        load_run_config(tmp_path / "c.ini")
    with pytest.raises(GenloomError, match="not found"):
        load_run_config(tmp_path / "missing.toml")
    (tmp_path / "d.toml").write_text("[train\n")
    with pytest.raises(GenloomError, match="cannot parse"):
        load_run_config(tmp_path / "d.toml")
