"""The moderation categories and the text features that need no model: hashed character n-grams and
curated term lists matched with Aho-Corasick (pyahocorasick), in English and Chinese.

The categories are OpenAI's omni-moderation's 13. A labelled example is {"text", "lang", "labels", "source",
"group"}; a child category implies its parents (`closure`). Character n-grams (1-3 for CJK, 2-5 for Latin,
plus words and word pairs) hashed into a fixed number of buckets with CRC32 carry Chinese and obfuscated
spellings ("k1ll", "s.u.i.c.i.d.e") that the English sentence embedding reads poorly.
"""

from __future__ import annotations

import json
import re
import unicodedata
import zlib
from functools import lru_cache
from pathlib import Path

import numpy as np

from genloom.errors import GenloomError

CATEGORIES = ("harassment", "harassment/threatening", "hate", "hate/threatening", "illicit", "illicit/violent",
              "self-harm", "self-harm/intent", "self-harm/instructions", "sexual", "sexual/minors", "violence",
              "violence/graphic")
PARENTS = {"harassment/threatening": ("harassment", "violence"), "hate/threatening": ("hate", "violence"),
           "illicit/violent": ("illicit",), "self-harm/intent": ("self-harm",),
           "self-harm/instructions": ("self-harm",), "sexual/minors": ("sexual",), "violence/graphic": ("violence",)}
SPLITS = ("train", "val", "test")
LANGS = ("en", "zh")

# Curated terms: specific enough that a match is strong evidence (ambiguous words such as "kill" or 杀 are
# left to the classifier, which sees the context). Matched on the normalised text; Latin terms on word edges.
TERMS = {
    "harassment": ["idiot", "moron", "retard", "loser", "bitch", "asshole", "fuck you", "piece of shit",
                   "shut up", "ugly pig", "worthless", "pathetic",
                   "傻逼", "傻b", "煞笔", "sb", "废物", "脑残", "蠢猪", "贱人", "白痴", "狗东西", "去死", "滚蛋",
                   "垃圾东西", "贱货", "人渣", "蠢货", "蠢蛋", "猪脑子", "贱种", "婊子", "杂种", "狗娘养的", "王八蛋", "混蛋", "智障", "弱智", "废柴", "死全家", "丑八怪", "没脸见人", "绿茶婊", "窝囊废", "死肥猪", "狗杂种", "臭婊子", "死变态", "贱骨头"],
    "harassment/threatening": ["i will kill you", "i'll kill you", "gonna kill you", "i will find you",
                               "you will regret", "watch your back", "i know where you live",
                               "弄死你", "杀了你", "宰了你", "砍死你", "打死你", "等着瞧", "让你好看", "废了你", "捅死你",
                               "你死定了", "kill you", "hurt you", "beat you", "shoot you", "stab you", "弄死", "杀了他", "让你见血", "打断你的腿", "找人收拾你", "活不过", "打残你", "打残", "找人收拾", "让你进医院", "你给我等着", "出门小心点", "迟早弄死"],
    "hate": ["subhuman", "vermin", "go back to your country", "inferior race", "racial purity",
             "劣等民族", "低等人种", "滚回你们国家", "下等人", "劣等种族", "不配做人", "黑鬼", "支那", "蛮夷", "畜生不如", "滚出中国", "都是畜生", "低人一等", "天生低贱", "不配当人", "社会的垃圾", "一群畜生", "劣等人"],
    "hate/threatening": ["gas the", "exterminate them all", "ethnic cleansing", "wipe them out",
                         "种族清洗", "杀光他们", "统统消灭", "赶尽杀绝", "全部杀光", "灭了他们", "一个不留"],
    "illicit": ["launder money", "money laundering", "shoplift", "fake id", "forge a passport", "counterfeit money",
                "steal credit card", "phishing page", "tax evasion", "without getting caught",
                "洗钱", "伪造", "假证", "盗刷", "逃税", "偷税", "诈骗", "钓鱼网站", "不被发现", "走私", "贩卖个人信息",
                "假发票", "盗号", "套现", "盗取", "偷拍", "赌博网站", "假币", "刷单", "黑进", "破解别人", "骗保", "开赌场", "卖假货", "卖银行卡", "造假币", "办假证", "电信诈骗", "不留证据", "不会被查出来", "不被警察发现", "冒充公检法"],
    "illicit/violent": ["pipe bomb", "make a bomb", "build a bomb", "molotov", "explosive device", "nerve gas",
                        "ghost gun", "untraceable gun", "meth lab", "cook meth", "ricin",
                        "炸弹", "炸药", "雷管", "燃烧瓶", "制毒", "冰毒", "土枪", "自制枪", "毒药", "投毒", "海洛因", "make a bomb", "bomb making", "make explosives", "buy a gun illegally", "土制炸弹", "汽油弹", "枪支", "弹药", "爆炸物", "毒品", "大麻", "摇头丸", "芬太尼", "k粉", "买枪", "手榴弹", "下毒", "没登记的枪", "定时炸弹", "燃烧弹", "炸得最", "伤人不会被", "提炼毒品", "可卡因", "麻古"],
    "self-harm": ["suicide", "suicidal", "self-harm", "self harm", "cutting myself", "kill myself", "end my life",
                  "自杀", "自残", "割腕", "寻死", "不想活", "结束生命", "跳楼", "烧炭", "割手腕", "安眠药", "跳河", "卧轨", "服毒", "上吊", "喝农药", "吞安眠药", "划自己", "伤害自己", "从楼顶跳下", "割伤自己", "划伤自己"],
    "self-harm/intent": ["i want to die", "i want to kill myself", "i'm going to kill myself", "want to hurt myself",
                         "end it all", "no reason to live",
                         "我想死", "我想自杀", "我不想活了", "活着没意思", "想结束自己", "我要自杀", "想伤害自己", "hurt myself", "better off dead", "don't want to live", "kill myself", "想死", "活不下去", "不想活", "结束这一切", "轻生的念头", "结束自己的生命", "割自己", "想去死", "好想死", "撑不下去", "不想再活", "永远睡过去", "再也不醒来", "活着太累", "准备去死"],
    "self-harm/instructions": ["how to kill myself", "painless way to die", "how many pills", "best way to cut",
                               "怎么自杀", "如何自杀", "无痛自杀", "吃多少片", "怎样割腕", "自杀方法", "怎么死", "死得快", "致死剂量", "lethal dose", "最不痛苦", "die in my sleep", "更快死", "才会死", "才能死", "一次成功", "最快的方法", "哪种自杀", "死得最快"],
    "sexual": ["porn", "porno", "nude", "nudes", "xxx", "blowjob", "orgasm", "erotic", "sex video",
               "色情", "黄片", "裸照", "约炮", "做爱", "性交", "一夜情", "av女优", "裸体", "口交", "成人视频", "性爱", "色图", "裸聊", "嫖", "援交", "鸡巴", "阴茎", "露骨", "上床", "sex scene", "threesome", "explicit sex", "have sex with", "dirty story", "很黄", "色色", "黄色小说", "成人网站", "脱光衣服", "裸体"],
    "sexual/minors": ["child porn", "underage", "loli", "minor nude", "jailbait",
                      "儿童色情", "未成年", "幼女", "萝莉", "恋童", "小学生色情", "初中生色情", "童妓", "sex with a minor", "十二岁学生发生性", "和未成年人发生", "小学生的裸", "儿童裸照", "和小孩发生性", "大人和小孩发生"],
    "violence": ["murder", "stab", "behead", "massacre", "torture", "slaughter", "beat him to death", "shoot them",
                 "砍人", "捅人", "屠杀", "虐杀", "斩首", "杀害", "打死", "枪杀", "砍死", "杀了", "捅死", "掐死", "毒死", "爆头", "暴打", "虐待", "折磨", "kill someone", "killed a man", "murders", "murdered", "宰了", "做掉", "弄残", "揍死", "活活打死", "打成重伤", "砍得浑身是血"],
    "violence/graphic": ["guts spilled", "blood everywhere", "brains splattered", "severed head", "ripped apart",
                         "skull cracked", "dismembered", "disembowel",
                         "血肉模糊", "脑浆", "肠子流", "开膛破肚", "断肢", "血溅", "肢解", "碎尸", "血流成河", "内脏", "断头", "眼球被挖", "眼珠被挖", "剖开", "肠子", "血腥"],
}
LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s", "!": "i"})
_SPACED = re.compile(r"\b(?:[a-z][\s.\-_*]){2,}[a-z]\b")  # "k i l l", "s.u.i.c.i.d.e"
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_WORD = re.compile(r"[a-z0-9']+|[\u3400-\u9fff]")


def normalize(text: str) -> str:
    """NFKC, lower case, one space; full-width forms folded (Ｋｉｌｌ -> kill)."""
    return re.sub(r"\s+", " ", unicodedata.normalize("NFKC", text).lower()).strip()


def deobfuscate(text: str) -> str:
    """The normalised text with leetspeak digits read as letters and spaced-out letters joined."""
    t = normalize(text).translate(LEET)
    return _SPACED.sub(lambda m: re.sub(r"[\s.\-_*]", "", m.group(0)), t)


def language(text: str) -> str:
    """'zh' when a fifth or more of the letters are CJK ideographs, else 'en'."""
    letters = [c for c in text if c.isalpha()]
    return "zh" if letters and sum(bool(_CJK.match(c)) for c in letters) * 5 >= len(letters) else "en"


def closure(labels) -> list[str]:
    """The labels with every parent a child category implies, in CATEGORIES order; unknown names are errors."""
    out = set()
    for name in labels:
        if name not in CATEGORIES:
            raise GenloomError(f"unknown moderation category '{name}'; choose one of {', '.join(CATEGORIES)}")
        out |= {name, *PARENTS.get(name, ())}
    return [c for c in CATEGORIES if c in out]


def _hash(s: str, buckets: int) -> int:
    return 1 + zlib.crc32(s.encode("utf-8")) % (buckets - 1)  # 0 is the padding id


def ngram_ids(text: str, buckets: int, max_len: int = 512) -> list[int]:
    """Hashed features of one text: character n-grams (CJK 1-3, others 3-5 within words), words and word pairs,
    on the normalised and the de-obfuscated spelling; ids in 1..buckets-1, at most max_len."""
    feats = set()
    for t in {normalize(text), deobfuscate(text)}:
        words = _WORD.findall(t)
        feats.update("w:" + w for w in words)
        feats.update("b:" + a + " " + b for a, b in zip(words, words[1:]))
        for w in re.findall(r"[a-z0-9']+", t):
            w = f"<{w}>"
            feats.update("c:" + w[i:i + n] for n in (3, 4, 5) for i in range(len(w) - n + 1))
        for run in re.findall(r"[\u3400-\u9fff]+", t):
            feats.update("z:" + run[i:i + n] for n in (1, 2, 3) for i in range(len(run) - n + 1))
    ids = sorted({_hash(f, buckets) for f in feats})
    return ids[:max_len]


def ngram_batch(texts: list[str], buckets: int, max_len: int = 512) -> np.ndarray:
    """(N, L) int64 hashed n-gram ids, right-padded with 0 to the longest row."""
    rows = [ngram_ids(t, buckets, max_len) for t in texts]
    out = np.zeros((len(rows), max(1, max(map(len, rows), default=1))), dtype=np.int64)
    for i, r in enumerate(rows):
        out[i, :len(r)] = r
    return out


@lru_cache(maxsize=1)
def _automaton():
    try:
        import ahocorasick
    except ImportError:
        raise GenloomError("moderation term lists need pyahocorasick: pip install pyahocorasick") from None
    auto = ahocorasick.Automaton()
    for cat, terms in TERMS.items():
        for term in terms:
            term = normalize(term)
            cats = auto.get(term, (term, set()))[1]
            cats.add(cat)
            auto.add_word(term, (term, cats))
    auto.make_automaton()
    return auto


def _on_word_edges(text: str, end: int, term: str) -> bool:
    """Latin terms match whole words only ("skill" is not "kill"); CJK terms match anywhere."""
    if _CJK.search(term):
        return True
    start = end - len(term) + 1
    before = text[start - 1] if start > 0 else " "
    after = text[end + 1] if end + 1 < len(text) else " "
    return not (before.isalnum() or after.isalnum())


def term_hits(text: str) -> dict[str, list[str]]:
    """Curated terms found in the text (normalised and de-obfuscated), by category."""
    hits: dict[str, set] = {}
    for t in {normalize(text), deobfuscate(text)}:
        for end, (term, cats) in _automaton().iter(t):
            if _on_word_edges(t, end, term):
                for c in cats:
                    hits.setdefault(c, set()).add(term)
    return {c: sorted(hits[c]) for c in CATEGORIES if c in hits}


def term_matrix(texts: list[str]) -> np.ndarray:
    """(N, 13) float32: 1 where the text holds a curated term of the category or of one of its children."""
    out = np.zeros((len(texts), len(CATEGORIES)), dtype=np.float32)
    for i, t in enumerate(texts):
        for c in closure(term_hits(t)):
            out[i, CATEGORIES.index(c)] = 1.0
    return out


def term_features(texts: list[str]) -> np.ndarray:
    """(N, 13) float32: log(1 + number of distinct curated terms) per category."""
    out = np.zeros((len(texts), len(CATEGORIES)), dtype=np.float32)
    for i, t in enumerate(texts):
        for c, terms in term_hits(t).items():
            out[i, CATEGORIES.index(c)] = np.log1p(len(terms))
    return out


def read_split(folder: str | Path, split: str) -> list[dict]:
    """The examples of one split of a labelled moderation set (folder/{split}.jsonl)."""
    path = Path(folder) / f"{split}.jsonl"
    if not path.is_file():
        raise GenloomError(f"{path} is missing: build the set with `python3 -m genloom.safety.moderation_data --out {folder}`")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    for r in rows:
        r["labels"] = closure(r["labels"])
    return rows


def label_matrix(rows: list[dict]) -> np.ndarray:
    """(N, 13) float32 multi-hot labels."""
    y = np.zeros((len(rows), len(CATEGORIES)), dtype=np.float32)
    for i, r in enumerate(rows):
        for c in r["labels"]:
            y[i, CATEGORIES.index(c)] = 1.0
    return y
