import pytest

from assistant.training.evaluate import EvalReport
from assistant.training.metrics import exact_match, normalize_answer, token_f1


@pytest.mark.parametrize(
    "text, normal",
    [
        ("The Red!", "red"),
        ("three", "3"),
        ("  a  Circle. ", "circle"),
        ("Color", "colour"),
        ("in the centre", "in center"),
    ],
)
def test_normalisation(text, normal):
    assert normalize_answer(text) == normal


def test_exact_match_and_f1_on_known_cases():
    assert exact_match("Red.", "red") and not exact_match("dark red", "red")
    assert token_f1("dark red", "red") == pytest.approx(2 / 3)  # precision 1/2, recall 1
    assert token_f1("a red circle on blue", "red circle") == pytest.approx(2 * (2 / 4) * 1 / (2 / 4 + 1))
    assert token_f1("blue", "red") == 0.0 and token_f1("", "") == 1.0 and token_f1("red", "") == 0.0


def test_report_counts_per_type_and_overall():
    report = EvalReport("hand-built")
    for question_type, answer, prediction in [
        ("colour", "red", "Red"),
        ("colour", "blue", "green"),
        ("shape", "circle", "a circle"),
        ("shape", "star", "red star"),
    ]:
        report.add(question_type, "q", answer, prediction)
    assert report.by_type["colour"].accuracy == 0.5 and report.by_type["shape"].accuracy == 0.5
    assert report.by_type["shape"].f1 == pytest.approx((1.0 + 2 / 3) / 2)
    assert report.overall.count == 4 and report.overall.accuracy == 0.5
    table = report.markdown()
    assert "| colour | 2 | 50.0% | 0.500 |" in table and "| **all** | 4 | 50.0% |" in table
    assert len(report.mistakes) == 2


def test_the_most_frequent_mistakes_come_first():
    report = EvalReport("hand-built")
    for answer, prediction in [("red", "orange"), ("red", "orange "), ("blue", ""), ("red", "red"), ("pink", "purple")]:
        report.add("colour", "q", answer, prediction)
    rows = report.common_mistakes(2).splitlines()
    assert rows[2] == "| red | orange | 2 |", "the same wrong answer is counted together"
    assert len(rows) == 4, "at most the 2 asked for, under the header"
    assert "| blue | (nothing) | 1 |" in report.common_mistakes(5).splitlines(), "an empty answer is shown as such"
