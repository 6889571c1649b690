"""`assistant eval`: accuracy and F1 of any model on held-out questions, per question type.

Questions go through the engine exactly as a user's would (chat template, image tokens, greedy
decoding), with LLaVA's short-answer instruction, so a pretrained VLM and a composed model are
measured the same way.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ..conversation import Conversation, Message
from ..engine import Engine
from ..sampling import GenerationOptions
from .datasets import VQAExample
from .metrics import exact_match, token_f1

SHORT_ANSWER = "Answer the question using a single word or phrase."  # LLaVA-1.5's VQA prompt
ANSWER_TOKENS = 10  # short answers; a caption is cut here, which F1 then reflects


@dataclass
class TypeScore:
    count: int = 0
    correct: int = 0
    f1_sum: float = 0.0

    @property
    def accuracy(self) -> float:
        return self.correct / self.count if self.count else 0.0

    @property
    def f1(self) -> float:
        return self.f1_sum / self.count if self.count else 0.0


@dataclass
class EvalReport:
    model: str
    by_type: dict[str, TypeScore] = field(default_factory=lambda: defaultdict(TypeScore))
    mistakes: list[tuple[str, str, str]] = field(default_factory=list)  # (question, expected, predicted)

    def add(self, question_type: str, question: str, answer: str, prediction: str) -> None:
        score = self.by_type[question_type]
        score.count += 1
        score.correct += exact_match(prediction, answer)
        score.f1_sum += token_f1(prediction, answer)
        if not exact_match(prediction, answer):
            self.mistakes.append((question, answer, prediction))

    @property
    def overall(self) -> TypeScore:
        total = TypeScore()
        for score in self.by_type.values():
            total.count += score.count
            total.correct += score.correct
            total.f1_sum += score.f1_sum
        return total

    def markdown(self) -> str:
        lines = [f"Model: `{self.model}`", "", "| question type | n | accuracy | F1 |", "|---|---:|---:|---:|"]
        rows = sorted(self.by_type.items()) + [("**all**", self.overall)]
        lines += [f"| {name} | {s.count} | {s.accuracy:.1%} | {s.f1:.3f} |" for name, s in rows]
        return "\n".join(lines)

    def common_mistakes(self, limit: int) -> str:
        """The `limit` most frequent (expected -> predicted) pairs as a Markdown table: where a
        model's errors concentrate (red read as orange, or one answer given to everything)."""
        pairs = Counter((expected, predicted.strip()) for _, expected, predicted in self.mistakes)
        lines = ["| expected | answered | times |", "|---|---|---:|"]
        lines += [
            f"| {expected} | {predicted or '(nothing)'} | {times} |"
            for (expected, predicted), times in pairs.most_common(limit)
        ]
        return "\n".join(lines)


def evaluate(
    engine: Engine,
    examples: Iterable[VQAExample],
    system_prompt: str = "",
    progress: Callable[[int], None] | None = None,
) -> EvalReport:
    """Ask every question greedily through `engine` and score the answers."""
    report = EvalReport(engine.model.name)
    options = GenerationOptions(temperature=0.0, max_new_tokens=ANSWER_TOKENS)
    for done, example in enumerate(examples, start=1):
        question = f"{example.question}\n{SHORT_ANSWER}"
        conversation = Conversation(system_prompt).add(Message.user(question, [example.load_image()]))
        prediction = engine.reply(conversation, options).text()
        report.add(example.question_type, example.question, example.answer, prediction)
        if progress:
            progress(done)
    return report
