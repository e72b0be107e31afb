import json
import os
import pickle
import shutil
import subprocess

import pytest
import torch

from genloom.checkpoints import load_model

from conftest import TINY_TOML, assert_one_line_error, overrides, run_cli


class NotWeights:
    def __init__(self):
        self.data = [1, 2, 3]


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory, trained_run):
    d = tmp_path_factory.mktemp("bad")
    (d / "corrupt.pt").write_bytes(os.urandom(2048))
    torch.save({"format": "genloom-checkpoint", "obj": NotWeights()}, d / "pickle.pt")
    fake = d / "fake-export"
    shutil.copytree(trained_run[0] / "best", fake)
    (fake / "model.safetensors").write_bytes(pickle.dumps({"w": NotWeights()}))  # a pickle where safetensors belongs
    return d


def sets(*items):
    return [a for s in items for a in ("--set", s)]


BAD_INPUTS = {
    "unknown tokenizer": lambda tmp, bad, run: ["data", "tang", "--out", tmp / "d", "--tokenizer", "wordpiece"],
    "missing corpus": lambda tmp, bad, run: ["data", "no-such-corpus", "--out", tmp / "d"],
    "unknown config key": lambda tmp, bad, run: ["train", "-c", TINY_TOML, *sets("train.max_stepz=3")],
    "wrong type": lambda tmp, bad, run: ["train", "-c", TINY_TOML, *sets("train.max_steps=lots")],
    "unknown family": lambda tmp, bad, run: ["train", "-c", TINY_TOML, *sets("family=rnn")],
    "missing data": lambda tmp, bad, run: ["train", "-c", TINY_TOML, *sets(f"data.dir={tmp / 'nodata'}")],
    "prompt too long": lambda tmp, bad, run: ["generate", "-m", run, "-p", "the cat " * 10, "--seed", "1"],
    "char outside vocab": lambda tmp, bad, run: ["generate", "-m", run, "-p", "QQQ"],
    "corrupt checkpoint": lambda tmp, bad, run: ["generate", "-m", bad / "corrupt.pt", "-p", "the"],
    "pickle checkpoint": lambda tmp, bad, run: ["generate", "-m", bad / "pickle.pt", "-p", "the"],
    "pickle as safetensors": lambda tmp, bad, run: ["generate", "-m", bad / "fake-export", "-p", "the"],
    "missing model": lambda tmp, bad, run: ["generate", "-m", tmp / "no-model", "-p", "the"],
    "bad sampling": lambda tmp, bad, run: ["generate", "-m", run, "-p", "the", "--top-p", "0"],
    "no prompt": lambda tmp, bad, run: ["generate", "-m", run],
    "stream a batch": lambda tmp, bad, run: ["generate", "-m", run, "-p", "the", "-n", "2", "--stream"],
    "stream json": lambda tmp, bad, run: ["generate", "-m", run, "-p", "the", "--stream", "--json"],
    "image option on text": lambda tmp, bad, run: ["generate", "-m", run, "-p", "the", "--steps", "3"],
    "from-png of a non-png": lambda tmp, bad, run: ["generate", "--from-png", TINY_TOML],
    "eval missing model": lambda tmp, bad, run: ["eval", "-m", tmp / "no-model", "-d", tmp],
    "export missing model": lambda tmp, bad, run: ["export", tmp / "no-model", "--out", tmp / "e"],
    "unknown option": lambda tmp, bad, run: ["generate", "--modle", run],
    "unknown command": lambda tmp, bad, run: ["trian"],
}

EXPECT = {
    "unknown tokenizer": "wordpiece",
    "missing corpus": "corpus not found",
    "unknown config key": "train.max_stepz",
    "wrong type": "must be int",
    "unknown family": "unknown model family 'rnn'",
    "missing data": "not a prepared data folder",
    "prompt too long": "exceeds the model's context",
    "char outside vocab": "outside this char vocabulary",
    "corrupt checkpoint": "corrupt.pt",
    "pickle checkpoint": "refusing to load",
    "pickle as safetensors": "not a valid safetensors file",
    "missing model": "model not found",
    "bad sampling": "top_p",
    "no prompt": "give a prompt",
    "stream a batch": "--stream prints one sample as it comes and this asks for 2 (prompts x -n): drop --stream",
    "stream json": "--json prints whole completions",
    "image option on text": "image options do not apply to a text model; drop --steps",
    "from-png of a non-png": "not a readable PNG",
    "eval missing model": "model not found",
    "export missing model": "model not found",
    "unknown option": "--modle",
    "unknown command": "trian",
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_gives_one_error_line(case, run_main, tmp_path, bad_files, trained_run):
    code, out, err = run_main(*BAD_INPUTS[case](tmp_path, bad_files, trained_run[0]))
    line = assert_one_line_error(code, out, err)
    assert EXPECT[case] in line
    assert out == ""  # nothing half-done on stdout


@pytest.mark.parametrize("case", ["missing corpus", "unknown config key", "corrupt checkpoint", "pickle checkpoint"])
def test_bad_input_in_a_real_process(case, tmp_path, bad_files, trained_run):
    res = run_cli(*BAD_INPUTS[case](tmp_path, bad_files, trained_run[0]))
    line = assert_one_line_error(res.returncode, res.stdout, res.stderr)
    assert EXPECT[case] in line


def test_console_script():
    exe = shutil.which("genloom")
    if exe is None:
        pytest.skip("the genloom console script is not installed (pip install -e .)")
    res = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and "generate" in res.stdout and "train" in res.stdout


@pytest.mark.slow
def test_data_train_generate_eval_export(tmp_path, english_file, run_main):
    data, run = tmp_path / "data", tmp_path / "run"
    code, out, err = run_main("data", english_file, "--out", data, "--val-fraction", "0.1", "--seed", "3")
    assert code == 0, err
    assert "char tokenizer" in out and (data / "meta.json").is_file()

    args = ["train", "-c", TINY_TOML, *sets(*overrides(data, run, max_steps=12, lr=1e-2, eval_interval=6))]
    code, out, err = run_main(*args)
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["step"] == 12 and summary["stopped"] == "max_steps" and "samples" not in summary
    assert (run / "best" / "model.safetensors").is_file()
    code, out, err = run_main(*args)  # the same run again without --resume
    assert_one_line_error(code, out, err)
    assert "--resume" in err

    gen = ["generate", "-m", run, "-p", "the cat", "-N", "20", "-T", "1.0", "--seed", "1"]
    first, second = run_cli(*gen), run_cli(*gen)
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout
    assert first.stdout.startswith("the cat") and len(first.stdout.rstrip("\n")) == len("the cat") + 20
    other = run_cli(*gen[:-1], "2")
    assert other.returncode == 0 and other.stdout != first.stdout

    code, out, err = run_main("generate", "-m", run, "-p", "a dog", "-p", "the", "-n", "2", "-N", "8", "--json",
                              "--seed", "5", "--stop", "zzz")
    assert code == 0, err
    rows = json.loads(out)
    assert [r["prompt"] for r in rows] == ["a dog", "a dog", "the", "the"]
    assert all(r["completion_tokens"] == 8 and r["finish_reason"] == "length" for r in rows)

    code, out, err = run_main("eval", "-m", run, "-d", data)
    assert code == 0, err
    res = json.loads(out)
    assert res["perplexity"] > 1 and res["split"] == "val"
    assert res["tokens_scored"] == json.loads((data / "meta.json").read_text())["tokens"]["val"] - 1
    assert "context 32" in res["protocol"] and "stride 16" in res["protocol"]

    code, out, err = run_main("export", run, "--out", tmp_path / "exp", "--dtype", "float16")
    assert code == 0, err
    lm = load_model(tmp_path / "exp")
    assert json.loads((tmp_path / "exp" / "config.json").read_text())["dtype"] == "float16"
    best = load_model(run)
    idx = torch.tensor([best.tokenizer.encode("the cat sees")])
    with torch.no_grad():
        assert (lm.model(idx)[0] - best.model(idx)[0]).abs().max().item() < 2e-2
    code, out, err = run_main("generate", "-m", tmp_path / "exp", "-p", "the", "-N", "5", "-T", "0")
    assert code == 0 and out.startswith("the") and len(out.rstrip("\n")) == 8

    code, out, err = run_main("export-hf", run, "--out", tmp_path / "hf")
    assert code == 0, err
    code, out, err = run_main("import-hf", tmp_path / "hf", "--out", tmp_path / "back")
    assert code == 0, err
    back = load_model(tmp_path / "back")
    assert back.tokenizer.encode("the cat") == best.tokenizer.encode("the cat")
    with torch.no_grad():
        assert (back.model(idx)[0] - best.model(idx)[0]).abs().max().item() < 1e-5


def test_every_command_is_in_the_lazy_map():
    """genloom.cli.base.COMMANDS names the module of every command (they are imported only when used)."""
    import importlib

    from genloom.cli.base import COMMANDS, cli

    for module in set(COMMANDS.values()):
        importlib.import_module(f"genloom.cli.{module}")
    assert set(cli.commands) == set(COMMANDS)
    for name, module in COMMANDS.items():
        assert cli.commands[name].callback.__module__ == f"genloom.cli.{module}"
