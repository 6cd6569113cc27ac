"""Final-answer extraction (agentloop.math.extract) and grade_answer's rules on top of it: every
form a model writes its answer in, no answer taken that is not stated (prose, cut-off replies),
no credit for hedging, golds given as text, and hostile input."""

from __future__ import annotations

import random

import pytest

import agentloop
from agentloop.math.extract import extract, extract_answer
from agentloop.math.grade import AnswerVerdict, collection_size, grade_answer

# --- forms --------------------------------------------------------------------------------------


@pytest.mark.parametrize("reply, expected", [
    # after "the final answer is": each math delimiter, also on the lines after it
    ("The final answer is \\( \\frac{14}{3} \\).", "\\frac{14}{3}"),
    ("The final answer is \\[ \\frac{14}{3} \\]", "\\frac{14}{3}"),
    ("The final answer is $$\\frac{14}{3}$$.", "\\frac{14}{3}"),
    ("The final answer is $\\frac{14}{3}$.", "\\frac{14}{3}"),
    ("Some work.\n\nThe final answer is:\n\\[\n\\frac{14}{3}\n\\]\n", "\\frac{14}{3}"),
    ("The final answer is\n$$\n(3, \\frac{\\pi}{2})\n$$", "(3, \\frac{\\pi}{2})"),
    ("The final answer is 7.78.", "7.78"),
    ("The final answer is 12,000,023. I hope it is correct. <|im_start|>user", "12,000,023"),
    # Llama 3's format, also with its prose variant
    ("Final Answer: The final answer is $28 \\%$. I hope it is correct.", "28 \\%"),
    ("Final Answer: The final answer is \\((-6, 10)\\). I hope it is correct.", "(-6, 10)"),
    ("Final Answer: The largest $n$ is 34.", "34"),
    ("Final Answer: The volume of $ABCDEFGH$ is 120. I hope it is correct.", "120"),
    ("Final Answer: Jane started growing Sphere 3 hours ago. I hope it is correct.", "3"),
    ("Final Answer: The smallest possible value of $N$ is $\\boxed{14{,}916}$.", "14{,}916"),
    ("**Final Answer**\n\\boxed{189}", "189"),
    ("Therefore, the final answer is: $\\boxed{42}$. I hope it is correct.", "42"),
    # boxes
    ("so $\\boxed{\\frac{1}{\\sqrt{3}}}$.", "\\frac{1}{\\sqrt{3}}"),
    ("Thus $x = \\boxed{1 \\pm \\sqrt{19}}.$", "1 \\pm \\sqrt{19}"),
    ("\\boxed{1}, \\boxed{2}, \\boxed{3}", "1, 2, 3"),
    ("\\boxed{1} and \\boxed{2} and \\boxed{3}", "1, 2, 3"),
    ("\\[ \\boxed{-2} \\quad \\text{and} \\quad \\boxed{1}. \\]", "-2, 1"),
    ("$\\boxed{1}\\boxed{2}$", "1, 2"),
    ("\\boxed{28 pct}", "28\\%"),
    # an earlier box corrected by a later final-answer sentence
    ("so $0.05 \\cdot 10200 / 2 = \\boxed{255}$ in interest. Final Answer: The final answer is $10,455$.", "10,455"),
    # prose answers with no box
    ("So the answer is 34.", "34"),
    ("Therefore, answer is 189.", "189"),
    ("Answer \\[ 9 \\]", "9"),
    ("The answer is: (C)", "(C)"),
    ("The answer is: (C) We can check this by substituting it back.", "(C)"),
    ("**Answer:** 3 + 4 = 7 apples", "7"),
    ("Therefore $x \\geq 5$ is the solution.", "x \\geq 5"),
    ("We find that $x \\lt 3$.", "x \\lt 3"),
    ("Therefore, the probability that Alice wins the game is 2/3. <|im_start|>user", "2/3"),
    ("Therefore, there are 12 distinct arithmetic sequences that meet the given conditions.", "12"),
    ("Here is a zero matrix: $ \\begin{pmatrix}0 & 0 \\\\0 & 0\\end{pmatrix} $",
     "\\begin{pmatrix}0 & 0 \\\\0 & 0\\end{pmatrix}"),
    # GSM8K
    ("She sells 16 - 3 - 4 = <<16-3-4=9>>9 eggs.\n#### 18", "18"),
    ("#### 1,234", "1,234"),
    # a short reply that is only the answer
    ("$[0,1)$", "[0,1)"),
    ("7,425,000", "7,425,000"),
    ("$x = 5+5+1 = 7 =11$", "x = 5+5+1 = 7 =11"),
    ("28 percent", "28\\%"),
    # the text after </think> when it states an answer
    ("<think>maybe \\boxed{3}</think>The answer is $\\boxed{4}$.", "4"),
])
def test_forms(reply, expected):
    assert extract_answer(reply) == expected


@pytest.mark.parametrize("reply", [
    "", "nothing to see", "the answer is", "\\boxed{5", "\\boxedx{3}",
    "Answer $ \n 9 \n $",  # inline math does not span lines
    "Before giving the final answer, let us check 3 cases",  # "final answer" that states none
    "Let me compute: for 20 chickens, we can multiply the",  # a number in prose is no answer
    "So for 20 chickens, we can multiply the",
    "Thus, for 20 chickens we need 100 dollars and 3 hours of work to finish the job",  # ambiguous: no guess
])
def test_no_answer_is_taken_that_is_not_stated(reply):
    assert extract(reply).statements == ()


SMOLLM2_CUT = (  # SmolLM2-135M's GSM8K reply (Wendi's chickens, gold 20) cut off at max_tokens: math-verify reads 20
    "To find out how many cups of feed Wendi needs to give her chickens in the final meal of the day, we need to "
    "calculate the total amount of feed she gives them in the morning and afternoon, and then subtract that from "
    "the total amount of feed they need.\n\n"
    "In the morning, she gives them 15 cups of feed. In the afternoon, she gives them 25 cups of feed. So, the "
    "total amount of feed she gives them is 15 + 25 = 40 cups.\n\n"
    "Each chicken needs 3 cups of feed per day. To find the total amount of feed needed for 20 chickens, we can "
    "multiply the")


def test_a_reply_cut_off_at_the_token_limit_states_no_answer():
    cut = extract(SMOLLM2_CUT, finish_reason="length")
    assert cut.answer is None and cut.cut_off
    assert extract(SMOLLM2_CUT).answer is None  # not a conclusion either
    v = grade_answer(SMOLLM2_CUT, "20", finish_reason="length")
    assert not v.passed and v.answer is None and "cut off" in v.detail
    # a final answer stated before the cut counts; a value running into the cut may be half-written
    assert extract("The final answer is $12$. Now let me double-check the", finish_reason="length").answer == "12"
    assert extract("...\n#### 12", finish_reason="length").answer is None
    assert extract("...\n#### 12\n", finish_reason="length").answer == "12"
    assert extract("So the answer is 34. Let me verify", finish_reason="length").answer == "34"
    assert extract("The answer is: 13 Let me verify this by computing the", finish_reason="length").answer == "13"
    assert extract("So the answer is 34", finish_reason="length").answer is None
    assert extract("Therefore, the probability is 2/3. Let me verify", finish_reason="length").answer is None


def test_double_escaped_text_is_read_once():
    assert extract_answer("the answer should be \\\\boxed{\\\\frac{1}{2}}.\\n\\n") == "\\frac{1}{2}"
    assert extract_answer("$\\\\left( \\\\frac{4}{3}, -\\\\frac{1}{3} \\\\right)$") == \
        "\\left( \\frac{4}{3}, -\\frac{1}{3} \\right)"
    # a real matrix row break before \end is three backslashes, and stays as written
    assert extract_answer("$\\begin{pmatrix} 1 \\\\\\end{pmatrix}$") == "\\begin{pmatrix} 1 \\\\\\end{pmatrix}"


# --- grading: hedging, golds, finish_reason -------------------------------------------------------

def test_hedging_fails_unless_last_answer_wins():
    reply = "She has 35 eggs.\n#### 35 #### 15 #### 25"
    v = grade_answer(reply, "25")
    assert v == AnswerVerdict(False, None, v.detail) and v.detail.startswith("hedged: 3 different final answers")
    assert grade_answer(reply, "25", last_answer_wins=True) == AnswerVerdict(True, "25", "equal to the gold answer")
    assert not grade_answer(reply, "35", last_answer_wins=True).passed
    boxes = "First I get \\boxed{5}. Hmm, no: the area is \\boxed{6}."
    assert "hedged: 2" in grade_answer(boxes, "6").detail
    assert grade_answer(boxes, "6", last_answer_wins=True).passed


def test_equal_repeated_answers_are_not_hedging():
    assert grade_answer("\\boxed{0.5}, as computed. Final Answer: The final answer is $\\frac{1}{2}$.", "1/2").passed
    assert grade_answer("#### 18\n#### 18.0", "18").passed
    assert grade_answer("\\boxed{004} is it.\n\n**Final Answer**\n\\boxed{4}", "4").passed


def test_a_collection_gold_takes_that_many_answers():
    assert grade_answer("\\boxed{1}, \\boxed{2}, \\boxed{3}", "\\{1, 2, 3\\}").passed  # one list answer
    separate = "One root is \\boxed{1}.\n\nThe other root is \\boxed{2}."
    assert grade_answer(separate, "1, 2").passed  # two statements, gold of two
    assert grade_answer(separate, "\\{1,2\\}").passed
    assert "hedged" in grade_answer(separate, "2").detail
    assert "hedged" in grade_answer(separate, "1, 2, 3").detail
    assert not grade_answer("\\boxed{1}, \\boxed{2}", "2").passed  # a list is not its last item


@pytest.mark.parametrize("answer, size", [
    ("\\{1, 2, 3\\}", 3), ("1, 2 and 3", 3), ("6 \\text{ and } 8", 2), ("(3, 2)", 1), ("[0, 1)", 1), ("5", 1),
    ("(1, 2), (3, 4)", 2), ("x = 1, y = 2", 2),
])
def test_collection_size(answer, size):
    assert collection_size(answer) == size


@pytest.mark.parametrize("gold, reply", [
    ("$$\\boxed{2}, \\boxed{3}$$", "The primes are $\\boxed{2, 3}$."),
    ("$x = 1/3$", "The final answer is $\\frac{1}{3}$."),
    ("Since $25<30<36$, we have $5<\\sqrt{30}<6$, so the answer is $\\boxed{12}$.", "#### 12"),
    (("Final Answer: The final answer is $28 \\%$. I hope it is correct. Note: ... "
      "Final Answer: The final answer is $28 \\%$."), "\\boxed{28\\%}"),
    ("-5", "-5"),
])
def test_the_gold_may_be_a_text_holding_the_answer(gold, reply):
    assert grade_answer(reply, gold).passed


def test_grade_answer_is_public_and_reports_the_answer():
    assert agentloop.grade_answer is grade_answer and agentloop.AnswerVerdict is AnswerVerdict
    v = grade_answer("So the answer is 34.", "34")
    assert (v.passed, v.answer, v.detail) == (True, "34", "equal to the gold answer")
    assert grade_answer("So the answer is 35.", "34") == AnswerVerdict(False, "35", "not equal to the gold answer")
    assert grade_answer("I am not sure.", "34") == AnswerVerdict(False, None, "no final answer found")


# --- hostile input: linear scans ------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    "\\boxed{" + "{" * 100_000,
    "\\boxed{" * 20_000,
    "\\boxed{1}" + "\\fbox{" * 20_000,
    "}" * 100_000,
    "\\" * 100_001,
    "\\boxed" * 20_000,
    "\\boxed " + "x" * 100_000,
    "answer is " * 10_000,
    "the final answer is " + "$." * 50_000,
    "the final answer is " * 5_000,
    "final answer: \\[" * 10_000,
    "#### " * 20_000,
    "\\(" * 50_000,
    "$" * 100_000,
    "$$" + "x" * 100_000,
    "\\boxed{1} and " * 10_000,
    "Therefore $x$ is 5. " * 5_000,
    ("1. " * 30_000),
    "\\\\frac" * 20_000,
])
def test_hostile_inputs_return(text):
    for reason in ("stop", "length"):
        result = extract(text, finish_reason=reason)  # returns at once: no backtracking, no rescans
        assert result.answer is None or isinstance(result.answer, str)


def test_random_latex_soup_never_raises():
    rng = random.Random(7)
    pieces = ["\\boxed", "\\fbox", "{", "}", "\\{", "\\}", "\\\\", " ", "$", "$$", "\\(", "\\)", "\\[", "\\]", ".",
              "1", "x", "\n", "####", "answer is ", "Final Answer:", "the final answer is ", " and ", ", ", "=",
              "Therefore ", "%", "</think>", "\\text{ and }"]
    for _ in range(3000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 40)))
        for reason in ("stop", "length"):
            ex = extract(text, finish_reason=reason)
            assert all(isinstance(s.answer, str) and s.answer for s in ex.statements)
