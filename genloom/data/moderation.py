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
                   "垃圾东西", "贱货", "人渣", "蠢货", "蠢蛋", "猪脑子", "贱种", "婊子", "杂种", "狗娘养的", "王八蛋", "混蛋", "智障", "弱智", "废柴", "死全家", "丑八怪", "没脸见人", "绿茶婊", "窝囊废", "死肥猪", "狗杂种", "臭婊子", "死变态", "贱骨头",
                   "脑瘫", "低能儿", "丑逼", "傻帽", "二百五", "死三八", "巨婴", "狗腿子", "舔狗", "蠢驴", "没家教", "赶紧滚", "智商欠费", "不得好死", "下地狱"],
    "harassment/threatening": ["i will kill you", "i'll kill you", "gonna kill you", "i will find you",
                               "you will regret", "watch your back", "i know where you live",
                               "弄死你", "杀了你", "宰了你", "砍死你", "打死你", "等着瞧", "让你好看", "废了你", "捅死你",
                               "你死定了", "kill you", "hurt you", "beat you", "shoot you", "stab you", "弄死", "杀了他", "让你见血", "打断你的腿", "找人收拾你", "活不过", "打残你", "打残", "找人收拾", "让你进医院", "你给我等着", "出门小心点", "迟早弄死", "要了你的命", "要你的命", "要你狗命", "欠揍", "找人教训", "找几个人去"],
    "hate": ["subhuman", "vermin", "go back to your country", "inferior race", "racial purity",
             "劣等民族", "低等人种", "滚回你们国家", "下等人", "劣等种族", "不配做人", "黑鬼", "支那", "蛮夷", "畜生不如", "滚出中国", "都是畜生", "低人一等", "天生低贱", "不配当人", "社会的垃圾", "一群畜生", "劣等人"],
    "hate/threatening": ["gas the", "exterminate them all", "ethnic cleansing", "wipe them out",
                         "种族清洗", "杀光他们", "统统消灭", "赶尽杀绝", "全部杀光", "灭了他们", "一个不留"],
    "illicit": ["launder money", "money laundering", "shoplift", "fake id", "forge a passport", "counterfeit money",
                "steal credit card", "phishing page", "tax evasion", "without getting caught",
                "洗钱", "伪造", "假证", "盗刷", "逃税", "偷税", "诈骗", "钓鱼网站", "不被发现", "走私", "贩卖个人信息",
                "假发票", "盗号", "套现", "盗取", "偷拍", "赌博网站", "假币", "刷单", "黑进", "破解别人", "骗保", "开赌场", "卖假货", "卖银行卡", "造假币", "办假证", "电信诈骗", "不留证据", "不会被查出来", "不被警察发现", "冒充公检法", "勒索", "敲诈", "迷幻蘑菇", "迷幻药", "致幻剂"],
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
               "色情", "黄片", "裸照", "约炮", "做爱", "性交", "一夜情", "av女优", "裸体", "口交", "成人视频", "性爱", "色图", "裸聊", "嫖", "援交", "鸡巴", "阴茎", "露骨", "上床", "强奸", "轮奸", "sex scene", "threesome", "explicit sex", "have sex with", "dirty story", "很黄", "色色", "黄色小说", "成人网站", "脱光衣服", "裸体"],
    "sexual/minors": ["child porn", "underage", "loli", "minor nude", "jailbait",
                      "儿童色情", "未成年", "幼女", "萝莉", "恋童", "小学生色情", "初中生色情", "童妓", "sex with a minor", "十二岁学生发生性", "和未成年人发生", "小学生的裸", "儿童裸照", "和小孩发生性", "大人和小孩发生"],
    "violence": ["murder", "stab", "behead", "massacre", "torture", "slaughter", "beat him to death", "shoot them",
                 "砍人", "捅人", "屠杀", "虐杀", "斩首", "杀害", "打死", "枪杀", "砍死", "杀了", "捅死", "掐死", "毒死", "爆头", "暴打", "虐待", "折磨", "kill someone", "killed a man", "murders", "murdered", "宰了", "做掉", "弄残", "揍死", "活活打死", "打成重伤", "砍得浑身是血"],
    "violence/graphic": ["guts spilled", "blood everywhere", "brains splattered", "severed head", "ripped apart",
                         "skull cracked", "dismembered", "disembowel",
                         "血肉模糊", "脑浆", "肠子流", "开膛破肚", "断肢", "血溅", "肢解", "碎尸", "血流成河", "内脏", "断头", "眼球被挖", "眼珠被挖", "剖开", "肠子", "血腥"],
}
# Concepts: word classes whose co-occurrence carries a request's meaning better than its exact words, above all in
# Chinese, which the English sentence embedding reads poorly: a group + a slur-like predicate (hate), a request + a
# fraud verb + an old relative (illicit), the first person + a way to die (self-harm/intent), news or help-seeking
# words (benign). Each text gets a dense feature per concept and per pair of concepts it holds (`concept_features`),
# so the classifier learns the pairs once for every wording. Matched like TERMS (Latin terms on word edges).
CONCEPTS = {
    "group": ["muslims", "jews", "jewish", "black people", "blacks", "immigrants", "gay people", "gays", "gay", "women", "mexicans",
              "asians", "christians", "disabled people", "trans people", "refugees", "arabs", "chinese people",
              "migrants", "indians",
              "穆斯林", "黑人", "犹太人", "同性恋", "外地人", "农村人", "乡下人", "女人", "残疾人", "河南人", "少数民族", "日本人",
              "东北人", "难民", "基督徒", "新疆人", "回族", "农民工", "外国人", "老外", "艾滋病人", "单亲妈妈",
              "基佬", "女司机", "上海人", "外地佬", "乡巴佬", "残废", "黑鬼", "同志", "印度人", "韩国人"],
    "derogate": ["vermin", "animals", "criminals", "dirty", "filthy", "stupid", "lazy", "disease",
                 "inferior", "subhuman", "savages", "rats", "cockroaches", "scum", "垃圾", "恶心", "又脏", "太脏", "蠢", "懒", "骗子", "小偷", "贼", "畜生", "劣等", "低等", "寄生虫", "不配", "该死", "毒瘤", "低人一等", "下等", "害虫", "素质低"],
    "kill": ["kill", "murder", "shoot", "burn", "exterminate", "wipe out", "blow up", "poison", "stab",
             "杀", "打死", "烧", "炸", "毒死", "砍", "捅", "枪毙", "吊死", "消灭", "弄死", "宰", "灭了"],
    "request": ["how do i", "how can i", "how to", "teach me", "show me how", "help me", "step by step", "tutorial",
                "what do i need", "where can i", "best way to", "easiest way to",
                "教我", "怎么", "如何", "怎样", "咋", "方法", "步骤", "教程", "帮我", "求", "有没有办法", "有什么办法", "需要准备",
                "哪里能", "哪里可以", "从哪", "怎么弄", "怎么做", "要多少"],
    "fraud": ["scam", "steal", "cheat", "trick", "fake", "forge", "counterfeit", "launder", "without them knowing",
              "without getting caught", "without him knowing", "without her knowing",
              "骗", "偷", "盗", "假", "冒充", "套现", "不被发现", "不被抓", "神不知鬼不觉"],
    "elder": ["grandma", "grandpa", "grandmother", "grandfather", "old people", "elderly", "old man", "old woman",
              "pension", "retirees", "widows", "奶奶", "爷爷", "外婆", "外公", "姥姥", "老人", "老太太", "老头", "养老金", "退休金", "养老钱", "存款", "存折"],
    "weapon": ["bomb", "explosive", "detonator", "gun", "rifle", "grenade", "poison", "gasoline", "acid", "knife",
               "炸弹", "炸药", "装置", "引爆", "爆炸", "枪", "弩", "毒药", "毒气", "汽油", "硫酸", "雷管", "刀"],
    "target": ["a car", "his car", "the car", "a building", "the building", "a crowd", "people", "someone",
               "汽车", "房子", "楼", "人群", "人多的地方", "别人", "仇人", "加油站"],
    "self": ["i want to", "i'm going to", "i am going to", "i will", "i'll", "i plan to", "i've decided", "tonight i",
             "我想", "我要", "我打算", "我准备", "我决定", "我已经", "今晚", "明天就", "我真的", "我好想", "我就"],
    "die": ["die", "dead", "end it", "end my life", "kill myself", "suicide", "jump", "overdose", "pills", "disappear", "goodbye", "not be here", "wrists",
            "死", "自杀", "跳下去", "跳楼", "跳河", "割腕", "安眠药", "吃药", "上吊", "结束", "消失", "不醒", "解脱",
            "遗书", "走了", "一了百了", "活着", "不想活", "轻生", "划手", "刀片"],
    "news": ["police said", "officials said", "according to", "reported", "breaking news", "the court", "sentenced",
             "arrested", "investigators", "authorities", "killed in",
             "据报道", "新闻", "警方", "通报", "记者", "抓获", "破获", "告破", "捣毁", "法院", "判处", "调查", "事件", "谴责",
             "身亡", "遇难", "死亡", "历史", "纪录片", "小说里", "电影里", "剧里"],
    "help": ["help a friend", "how can i help", "hotline", "crisis line", "prevent", "prevention", "report", "warning signs",
             "protect", "recognize", "support", "therapist", "counselor", "worried about", "be careful", "avoid",
             "帮助", "求助", "举报", "预防", "防范", "识别", "警惕", "小心", "热线", "劝", "支持", "心理医生", "担心",
             "该怎么办", "怎么办", "报警", "提醒", "保护", "防止", "防骗", "被骗", "受骗", "上当", "被盗", "医生说", "遵医嘱", "急救", "就医"],
    "food": ["fish", "chicken", "crab", "duck", "turkey", "pork", "beef", "lamb", "recipe", "fry", "fried",
             "鱼", "鸡", "鸭", "螃蟹", "虾", "猪", "牛肉", "羊", "排骨", "炸鸡", "油炸", "下锅", "菜谱", "好吃", "做菜"],
    "software": ["process", "processes", "thread", "container", "server", "daemon", "pid", "sigterm", "linux", "docker",
                 "进程", "线程", "容器", "服务器", "程序", "后台", "端口", "内存", "cpu", "病毒", "木马", "bug"],
    "game": ["game", "boss", "level", "player", "match", "游戏", "boss", "副本", "五杀", "爆头", "吃鸡", "王者", "英雄", "这把", "这局", "对面", "手游"],
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
    """Hashed features of one text: character n-grams (CJK 1-3, others 3-5 within words), CJK character pairs one or
    two characters apart (a verb and its object across a modifier: 炸掉汽车 -> 炸_汽, 炸_车), words and word pairs, on
    the normalised and the de-obfuscated spelling; ids in 1..buckets-1, at most max_len."""
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
            feats.update("y:" + run[i] + run[i + k] for k in (2, 3) for i in range(len(run) - k))  # 炸掉汽车: 炸_汽, 炸_车
    ids = sorted({_hash(f, buckets) for f in feats})
    return ids[:max_len]


def ngram_batch(texts: list[str], buckets: int, max_len: int = 512) -> np.ndarray:
    """(N, L) int64 hashed n-gram ids, right-padded with 0 to the longest row."""
    rows = [ngram_ids(t, buckets, max_len) for t in texts]
    out = np.zeros((len(rows), max(1, max(map(len, rows), default=1))), dtype=np.int64)
    for i, r in enumerate(rows):
        out[i, :len(r)] = r
    return out


@lru_cache(maxsize=2)
def _automaton(lists: str = "terms"):
    """One Aho-Corasick automaton over TERMS ("terms") or CONCEPTS ("concepts"): term -> (term, its names)."""
    try:
        import ahocorasick
    except ImportError:
        raise GenloomError("moderation term lists need pyahocorasick: pip install pyahocorasick") from None
    auto = ahocorasick.Automaton()
    for name, terms in (TERMS if lists == "terms" else CONCEPTS).items():
        for term in terms:
            term = normalize(term)
            names = auto.get(term, (term, set()))[1]
            names.add(name)
            auto.add_word(term, (term, names))
    auto.make_automaton()
    return auto


def _matches(text: str, lists: str) -> dict[str, set]:
    """name -> the terms of that list found in the text (normalised and de-obfuscated), Latin ones on word edges."""
    hits: dict[str, set] = {}
    for t in {normalize(text), deobfuscate(text)}:
        for end, (term, names) in _automaton(lists).iter(t):
            if _on_word_edges(t, end, term):
                for n in names:
                    hits.setdefault(n, set()).add(term)
    return hits


def concepts(text: str) -> list[str]:
    """The CONCEPTS the text holds, in CONCEPTS order."""
    hits = _matches(text, "concepts")
    return [c for c in CONCEPTS if c in hits]


def _on_word_edges(text: str, end: int, term: str) -> bool:
    """Latin terms match whole words only ("skill" is not "kill"); CJK terms match anywhere."""
    if _CJK.search(term):
        return True
    start = end - len(term) + 1
    before = text[start - 1] if start > 0 else " "
    after = text[end + 1] if end + 1 < len(text) else " "
    return not (before.isascii() and before.isalnum() or after.isascii() and after.isalnum())  # 那些gay都: a word


def term_hits(text: str) -> dict[str, list[str]]:
    """Curated terms found in the text (normalised and de-obfuscated), by category."""
    hits = _matches(text, "terms")
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


CONCEPT_PAIRS = [(a, b) for i, a in enumerate(CONCEPTS) for b in list(CONCEPTS)[i + 1:]]
CONCEPT_DIM = len(CONCEPTS) + len(CONCEPT_PAIRS)


def concept_features(texts: list[str]) -> np.ndarray:
    """(N, CONCEPT_DIM) float32: 1 for each concept the text holds, then 1 for each pair of them (CONCEPT_PAIRS)."""
    out = np.zeros((len(texts), CONCEPT_DIM), dtype=np.float32)
    for i, t in enumerate(texts):
        found = set(concepts(t))
        out[i, :len(CONCEPTS)] = [c in found for c in CONCEPTS]
        out[i, len(CONCEPTS):] = [a in found and b in found for a, b in CONCEPT_PAIRS]
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
