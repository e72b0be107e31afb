"""`genloom eval` end to end: text files, image folders, classifiers, reports, and its bad-input errors."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import assert_one_line_error
from genloom.data.images import load_images
from genloom.models.classifier import Classifier, ClassifierConfig
from genloom.checkpoints import export_model

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def feature_net(tmp_path_factory) -> Path:
    """A small random-init classifier as the feature network: metrics must behave on any features."""
    torch.manual_seed(0)
    model = Classifier(ClassifierConfig(image_size=8, channels=1, num_classes=10, width=8, feature_dim=16)).eval()
    out = tmp_path_factory.mktemp("feat") / "net"
    export_model(out, family="classifier", model=model, model_config=model.config, tokenizer=None,
                 card={"family": "classifier", "data": {"source": "digits"}})
    return out


def _save_pngs(images: torch.Tensor, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images):
        Image.fromarray(img[0].numpy()).save(folder / f"{i:04d}.png")
    return folder


@pytest.fixture(scope="module")
def image_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("imgs")
    train = load_images("digits", "train").images  # 8x8: the reference (digits test) is small, the tests fast
    real = _save_pngs(train[-300:], root / "real")  # train images: close to the test split
    noise = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (300, 1, 8, 8), dtype=np.uint8))
    fake = _save_pngs(noise, root / "noise")
    return real, fake


def test_text_files_match_sacrebleu(run_main, tmp_path):
    import sacrebleu

    hyps = ["the cat sat on the mat", "a dog barks loudly", "hello there world"]
    refs = ["the cat sat on a mat", "the dog barks loudly", "hello world"]
    (tmp_path / "h.txt").write_text("\n".join(hyps) + "\n")
    (tmp_path / "r.txt").write_text("\n".join(refs) + "\n")
    code, out, err = run_main("eval", "--hyps", tmp_path / "h.txt", "--refs", tmp_path / "r.txt")
    assert code == 0, err
    res = json.loads(out)
    assert res["bleu"]["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score)
    assert res["chrf"]["chrf"] == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs]).score)
    assert "nrefs:1" in res["bleu"]["signature"]
    assert 0.5 < res["similarity"]["similarity"] <= 1.0


def test_report_states_each_signature_once(run_main, tmp_path):
    (tmp_path / "h.txt").write_text("the cat sat on the mat\na dog barks\n")
    (tmp_path / "r.txt").write_text("the cat sat on a mat\nthe dog barks\n")
    code, out, err = run_main("eval", "--hyps", tmp_path / "h.txt", "--refs", tmp_path / "r.txt",
                              "--report", tmp_path / "rep")
    assert code == 0, err
    res = json.loads(out)
    protocols = json.loads((tmp_path / "rep" / "report.json").read_text())["sections"][0]["protocols"]
    page = (tmp_path / "rep" / "report.html").read_text()
    for group, key in (("BLEU", "bleu"), ("chrF", "chrf")):
        sig = res[key]["signature"]
        assert protocols[group].count(sig) == 1 and page.count(sig) == 1, protocols[group]


def test_fid_warning_is_one_clean_line(tmp_path):
    # warnings.warn printed "path:line: GenloomWarning: ..." and the caller's source line under it
    script = tmp_path / "few.py"
    script.write_text("import numpy as np\nfrom genloom.metrics.image import fid\n"
                      "out = fid(np.random.randn(10, 16), np.random.randn(12, 16))\nprint(out['fid'] > 0)\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0 and proc.stdout == "True\n", proc.stderr
    assert proc.stderr.splitlines() == [
        "FID on 10 real and 12 fake samples of 16-d features: fewer samples than dimensions leaves the covariances "
        "singular and the figure unreliable; use at least 16 per set (10,000+ is the usual protocol)"]


@pytest.mark.parametrize("case, expect", [
    ("mismatch", "has 3 lines but .* has 2"),
    ("empty", "is empty"),
    ("refs only", "--refs needs --hyps"),
    ("nothing", "nothing to evaluate"),
])
def test_text_bad_input(run_main, tmp_path, case, expect):
    (tmp_path / "h.txt").write_text("a b\nc d\ne f\n")
    (tmp_path / "r2.txt").write_text("a b\nc d\n")
    (tmp_path / "empty.txt").write_text("\n\n")
    argv = {"mismatch": ["--hyps", tmp_path / "h.txt", "--refs", tmp_path / "r2.txt"],
            "empty": ["--hyps", tmp_path / "h.txt", "--refs", tmp_path / "empty.txt"],
            "refs only": ["--refs", tmp_path / "r2.txt"],
            "nothing": []}[case]
    code, out, err = run_main("eval", *argv)
    assert re.search(expect, assert_one_line_error(code, out, err))


def test_image_folder_metrics_floor_and_report(run_main, tmp_path, feature_net, image_dirs):
    real, noise = image_dirs
    report = tmp_path / "report"
    code, out, err = run_main("eval", "--samples", real, "--samples", noise, "--reference", "digits",
                              "--features", feature_net, "--report", report)
    assert code == 0, err
    good, bad = json.loads(out)
    assert good["fid"]["fid"] < bad["fid"]["fid"]  # real clothes are closer to the test split than noise
    assert good["precision_recall"]["precision"] > bad["precision_recall"]["precision"]
    assert good["fid_floor"]["fid"] >= 0 and good["fid_floor"]["n_fake"] == 300  # as many train images as samples
    assert "300 fake" in good["fid"]["protocol"] and "genloom classifier" in good["fid"]["protocol"]
    page = (report / "report.html").read_text()
    assert "Comparison" in page and "fid_floor_train_vs_test" in page
    assert page.count("data:image/png;base64,") == 4  # a sample grid and a reference grid per folder
    data = json.loads((report / "report.json").read_text())
    assert [s["kind"] for s in data["sections"]] == ["images", "images"]
    assert (report / data["sections"][0]["figures"][0]["file"]).exists()


def test_small_sample_warning_reaches_the_report(run_main, tmp_path, feature_net, image_dirs):
    real, _ = image_dirs
    code, out, err = run_main("eval", "--samples", real, "--reference", "digits", "--features", feature_net,
                              "--limit", "10", "--report", tmp_path / "r")
    assert code == 0, err
    assert json.loads(out)["fid"]["warning"].startswith("FID on 179 real and 10 fake samples of 16-d")
    assert "fewer samples than dimensions" in (tmp_path / "r" / "report.html").read_text()


def test_image_bad_input(run_main, tmp_path, feature_net):
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    Image.new("L", (28, 28)).save(mixed / "a.png")
    Image.new("L", (32, 32)).save(mixed / "b.png")
    code, out, err = run_main("eval", "--samples", mixed, "--reference", "digits", "--features", feature_net)
    assert "b.png is 32x32 but a.png is 28x28" in assert_one_line_error(code, out, err)
    code, out, err = run_main("eval", "--samples", mixed, "--reference", "cifar10", "--features", feature_net)
    assert "unknown reference 'cifar10'" in assert_one_line_error(code, out, err)
    code, out, err = run_main("eval", "--samples", mixed)
    assert "--samples needs --reference" in assert_one_line_error(code, out, err)
    code, out, err = run_main("eval", "--samples", mixed, "--reference", "digits", "--features", ROOT / "models" / "kjv")
    assert "is a 'gpt' model" in assert_one_line_error(code, out, err)


@pytest.fixture(scope="module")
def digits_classifier(tmp_path_factory):
    """The feature network's architecture trained for 150 Adam steps on digits train (about 1 s; measured 96.6%
    on digits test), exported, and its test-split predictions made here, outside genloom's evaluation code."""
    torch.manual_seed(0)
    model = Classifier(ClassifierConfig(image_size=8, channels=1, num_classes=10, width=8, feature_dim=16))
    train, test = load_images("digits", "train"), load_images("digits", "test")
    x, y = train.images.float() / 255.0, train.labels
    opt, g = torch.optim.Adam(model.parameters(), 1e-2), torch.Generator().manual_seed(0)
    for _ in range(150):
        idx = torch.randint(0, len(x), (128,), generator=g)
        _, loss = model(x[idx], y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        pred = model(test.images.float() / 255.0)[0].argmax(-1).numpy()
    out = tmp_path_factory.mktemp("clf") / "net"
    export_model(out, family="classifier", model=model, model_config=model.config, tokenizer=None,
                 card={"family": "classifier", "data": {"source": "digits"}})
    return out, pred, test.labels.numpy()


def test_classifier_accuracy_section(run_main, tmp_path, digits_classifier):
    from sklearn.metrics import accuracy_score, recall_score

    net, pred, labels = digits_classifier
    code, out, err = run_main("eval", "-m", net, "--report", tmp_path / "r")
    assert code == 0, err
    res = json.loads(out)
    assert res["n"] == 179 == len(labels) and len(res["per_class"]) == 10
    # the figures equal scikit-learn's on predictions made outside genloom (per-class accuracy = recall)
    assert res["accuracy"] == pytest.approx(accuracy_score(labels, pred))
    assert res["per_class"] == pytest.approx(list(recall_score(labels, pred, average=None)))
    assert res["accuracy"] >= 0.9  # a trained network, far from chance (0.1): a broken input scaling shows
    assert "top-1 accuracy on 179 digits test images" in res["protocol"]


def test_untrained_classifier_scores_the_share_of_the_class_it_predicts(run_main, tmp_path, feature_net):
    code, out, err = run_main("eval", "-m", feature_net)
    assert code == 0, err
    res = json.loads(out)
    labels = load_images("digits", "test").labels
    shares = torch.bincount(labels, minlength=10).float() / len(labels)
    # measured: the random network predicts class 2 for every image, so its accuracy is class 2's share
    assert res["accuracy"] == pytest.approx(float(shares[2])) and res["per_class"][2] == 1.0
    assert sum(res["per_class"]) == 1.0


def test_perplexity_report_has_loss_curve(run_main, tmp_path, trained_run, english_dir):
    trained_run, _ = trained_run
    code, out, err = run_main("eval", "-m", trained_run, "-d", english_dir, "--report", tmp_path / "r")
    assert code == 0, err
    assert json.loads(out)["perplexity"] > 1
    page = (tmp_path / "r" / "report.html").read_text()
    assert "loss curve" in page and "sliding window" in page


def test_gpt_without_data_says_what_to_pass(run_main, trained_run):
    trained_run, _ = trained_run
    code, out, err = run_main("eval", "-m", trained_run)
    assert "pass --data DIR (perplexity) or --evalset" in assert_one_line_error(code, out, err)


def test_training_evaluates_on_a_schedule(tmp_path, english_dir):
    from conftest import make_cfg
    from genloom.callbacks import default_callbacks
    from genloom.train import Trainer

    cfg = make_cfg(english_dir, tmp_path / "run", max_steps=20, eval_interval=10, metrics=["perplexity", "distinct",
                                                                                           "repetition"])
    Trainer(cfg, callbacks=default_callbacks(progress=False, cfg=cfg)).fit()
    rows = [json.loads(ln) for ln in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    scheduled = [r for r in rows if "val_perplexity" in r]
    assert [r["step"] for r in scheduled] == [10, 20]
    assert scheduled[-1]["val_perplexity"] < scheduled[0]["val_perplexity"]  # it is learning
    assert all(0 < r["distinct_1"] <= 1 and 0 <= r["repetition_4"] <= 1 for r in scheduled)


def test_reconstructions_psnr_ssim_match_torchmetrics(run_main, tmp_path):
    from torchmetrics.functional.image import peak_signal_noise_ratio

    orig = load_images("fashion-mnist", "test").images[:12]
    noisy = (orig.float() + 12 * torch.randn(orig.shape, generator=torch.Generator().manual_seed(0)))
    noisy = noisy.round().clamp(0, 255).to(torch.uint8)
    _save_pngs(orig, tmp_path / "orig")
    _save_pngs(noisy, tmp_path / "recon")
    code, out, err = run_main("eval", "--recon", tmp_path / "recon", "--originals", tmp_path / "orig",
                              "--report", tmp_path / "r")
    assert code == 0, err
    res = json.loads(out)
    per_image = peak_signal_noise_ratio(noisy.float() / 255, orig.float() / 255, data_range=1.0, reduction="none",
                                        dim=(1, 2, 3))
    assert res["psnr"]["psnr"] == pytest.approx(float(per_image.mean()), rel=1e-5)
    assert 0.3 < res["ssim"]["ssim"] < 0.95 and res["pairs"] == 12
    (tmp_path / "recon" / "0003.png").unlink()
    (tmp_path / "orig" / "0005.png").unlink()
    code, out, err = run_main("eval", "--recon", tmp_path / "recon", "--originals", tmp_path / "orig")
    assert "has no original for 0005.png" in assert_one_line_error(code, out, err)
    code, out, err = run_main("eval", "--recon", tmp_path / "recon")
    assert "--recon and --originals go together" in assert_one_line_error(code, out, err)


def test_audio_folder_wer_and_loudness(run_main, tmp_path):
    import shutil
    import subprocess

    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is missing: apt-get install espeak-ng")
    (tmp_path / "wav").mkdir()
    line = "I would like to go to the store tomorrow morning."
    subprocess.run(["espeak-ng", "-v", "en-us+f2", "-w", str(tmp_path / "wav" / "a.wav"), line], check=True)
    (tmp_path / "texts.txt").write_text(line + "\n")
    code, out, err = run_main("eval", "--audio", tmp_path / "wav", "--texts", tmp_path / "texts.txt")
    assert code == 0, err
    res = json.loads(out)
    assert res["total"]["wer"] <= 0.3 and res["files"][0]["seconds"] > 1.0
    assert -40 < res["files"][0]["lufs"] < -5
    (tmp_path / "texts.txt").write_text(line + "\nanother line\n")
    code, out, err = run_main("eval", "--audio", tmp_path / "wav", "--texts", tmp_path / "texts.txt")
    assert "has 1 audio files but" in assert_one_line_error(code, out, err)
