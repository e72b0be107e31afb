"""Copy-through: where a Doc line cut a passage inside the answer, the reply to learn ends at the cut, and a served
reply that stops there goes on with the rest of that answer from the passage (genloom.knowledge.grounding)."""

from __future__ import annotations

import random
import re

import pytest

from genloom.knowledge.grounding import (CUT, STOP, Grounding, copy_through, doc_line, fitting, shown_reply)
from genloom.sample import TextStream

G = Grounding()


def dialogue(rng: random.Random, words: int) -> tuple[str, str]:
    """A two-turn dialogue whose first answer has `words` words over several lines, and that answer."""
    vocab = ["alpha", "beta", "gamma()", "x = 1", "delta,", "(eps)", "zeta.", "eta:", "```", "theta"]
    lines = [" ".join(rng.choice(vocab) for _ in range(rng.randint(1, 6))) for _ in range(words // 3 + 1)]
    answer = "Here is the answer:\n" + "\n".join(lines)
    return f"User: how do I do it?\nBot: {answer}\nUser: thanks\nBot: you are welcome", answer


@pytest.mark.parametrize("chars", [60, 240, 500])
def test_a_reply_learnt_to_the_cut_copies_through_to_the_whole_answer(chars):
    g, branches = Grounding(passage_chars=chars), set()
    for seed in range(40):
        rng = random.Random(seed)
        passage, answer = dialogue(rng, rng.randint(5, 200))
        target = shown_reply(answer, passage, g)
        line = doc_line(passage, chars)
        branches.add(target.endswith(CUT))
        if target.endswith(CUT):  # the line cut the answer: the target is what the line shows of it, then the cut
            said = target[: -len(CUT)]
            assert line.rstrip("\n").endswith(" " + said + CUT)
            assert copy_through(" " + said, [passage], g) == " " + said + answer[_start_of_rest(answer, said):]
        else:  # the whole answer is on the line, as one line
            assert target == " ".join(answer.split()) and target in line
    assert branches == ({True} if chars == 60 else {True, False})


def _start_of_rest(answer: str, said: str) -> int:
    """Where in `answer` the text after `said` (its words, any whitespace between) begins."""
    return re.match(r"\s*".join(map(re.escape, said.split())), answer).end()


def test_the_rest_keeps_the_passages_line_breaks_and_stops_at_the_next_user_turn():
    passage = "User: show me\nBot: Here:\n```\nimport os\n" + "\n".join(f"v{i} = {i}" for i in range(40)) + \
              "\n```\nUser: thanks\nBot: welcome"
    said = shown_reply(passage.split("Bot: ")[1].split("\nUser:")[0], passage, G)[: -len(CUT)]
    out = copy_through(said, [passage], G)
    assert out.endswith("v39 = 39\n```") and "User:" not in out and "welcome" not in out
    assert "\nv30 = 30\n" in out  # after the cut, the passage's own lines


def test_a_reply_that_is_no_copy_of_a_cut_is_left_as_it_is():
    passage = "User: q\nBot: " + " ".join(f"word{i}" for i in range(80))
    body = doc_line(passage, G.passage_chars)[len("Doc: "):].rstrip("\n")[: -len(CUT)]
    assert copy_through("something else altogether", [passage], G) == "something else altogether"
    last = body.rsplit(" ", 1)[1]
    assert len(last) > 1 and copy_through(last[1:], [passage], G) == last[1:]  # not from the start of a word
    assert copy_through(last, [passage], G) != last  # from its start: a copy
    assert copy_through("word3", [passage], G) == "word3"  # inside the line, not at its cut
    short = "User: q\nBot: a short answer"
    assert copy_through("a short answer", [short], G) == "a short answer"  # the line was not cut
    asked = "User: " + " ".join(f"ask{i}" for i in range(80)) + "\nBot: fine"  # the cut is in the user's turn
    tail = doc_line(asked, G.passage_chars)[len("Doc: "):].rstrip("\n")[: -len(CUT)].rsplit(" ", 3)
    assert copy_through(" ".join(tail[1:]), [asked], G) == " ".join(tail[1:])
    assert shown_reply(" ".join(tail[1:]), asked, G) == " ".join(tail[1:])


def test_an_answer_after_the_cut_or_wholly_shown_is_learnt_on_one_line():
    long_q = "User: " + "why " * 80 + "\nBot: because\nof this"
    assert shown_reply("because\nof this", long_q, G) == "because of this"  # the line cut before the answer
    assert shown_reply("Yes,\n  we do.", "User: do you?\nBot: Yes,\n  we do.", G) == "Yes, we do."


def test_fitting_drops_the_worst_passages_first_and_keeps_at_least_one():
    ps = ["a" * 10, "b" * 20, "c" * 30]
    count = len
    assert fitting(ps, "".join, count, 60) == 3
    assert fitting(ps, "".join, count, 59) == 2
    assert fitting(ps, "".join, count, 29) == 1
    assert fitting(ps, "".join, count, 5) == 1
    assert fitting([], "".join, count, 5) == 0


def test_the_text_stream_says_which_stop_string_ended_it():
    class Chars:  # a tokenizer whose tokens are characters
        def decode(self, ids):
            return "".join(map(chr, ids))

    for text, reason, kept in [("copy it ...\nUser:", CUT, "copy it"), ("done\nDoc: x", STOP[1], "done"),
                               ("no stop here", None, "no stop here")]:
        s = TextStream(Chars(), [*STOP, "\nUser:"])
        out = "".join(s.push(ord(c)) for c in text) + s.finish()
        assert (out, s.stop_reason) == (kept, reason)


def test_training_examples_learn_the_answer_as_its_doc_line_shows_it():
    from genloom.knowledge.examples import example
    from genloom.knowledge.grounding import NOT_FOUND

    passage, answer = dialogue(random.Random(3), 120)
    other = "User: something else\nBot: another answer"
    e = example([], "how do I do it?", [other, passage], answer, G, 0, 1)
    assert e["reply"] == shown_reply(answer, passage, G) and e["reply"].endswith(CUT)
    assert e["text"].endswith(f"User: how do I do it?\nBot: {e['reply']}") and "\n" not in e["reply"]
    assert example([], "q", [other], NOT_FOUND, G, 0, None)["reply"] == NOT_FOUND
