"""The user's own image/question/answer data, and the synthetic scenes, as one kind of example.

Two formats are read:

- JSONL: a folder holding `data.jsonl` (or the .jsonl file itself), one object a line,
  `{"image": "photos/cat.jpg", "question": "...", "answer": "...", "type": "colour"}` ("type" is
  optional); blank lines are skipped.
- LLaVA's conversation JSON: a list of `{"id", "image", "conversations": [{"from": "human", "value":
  "<image>\\nWhat ...?"}, {"from": "gpt", "value": "..."}, ...]}`; every human turn and the gpt turn
  after it become one example (earlier turns are not kept as context). Records without "image" are
  text-only and skipped, as they give the projector nothing to learn from.

Image paths are relative to the data file's folder (an absolute path is taken as it is). Loading checks
that every image file exists but decodes none: `VQAExample.load_image` decodes one when it is used,
through `assistant.media`, so the size and pixel limits apply to data as to uploads. Every problem is a
`DatasetError` naming the file and the line or record.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import PIL.Image

from ..errors import AssistantError, MediaError
from ..media import ImageLimits, read_image_file
from .scenes import Scene

JSONL_NAME = "data.jsonl"  # what a dataset folder holds
IMAGE_TAG = "<image>"  # LLaVA's placeholder for the image in a human turn
DEFAULT_TYPE = "other"  # the question type of user data that gives none
JSONL_FIELDS = ("image", "question", "answer")  # required, all strings; "type" is optional


class DatasetError(AssistantError):
    """A training data file is missing, malformed or refers to a missing image (names file and line)."""


@dataclass(frozen=True, eq=False)
class VQAExample:
    image: Path | PIL.Image.Image  # an image file (decoded only by load_image) or an 8-bit RGB image
    question: str
    answer: str
    question_type: str = DEFAULT_TYPE  # a scenes.QUESTION_TYPES entry for synthetic data
    source: str = ""  # where it came from, for messages: "data.jsonl line 3", "scene 7 of seed 0"

    def load_image(self, limits: ImageLimits = ImageLimits()) -> PIL.Image.Image:
        """The image as 8-bit RGB, decoded now and checked against `limits` if it is a file."""
        if isinstance(self.image, PIL.Image.Image):
            return self.image
        try:
            return read_image_file(self.image, limits)
        except MediaError as error:
            raise DatasetError(f"{self.source or self.image}: {error}") from None


def load_dataset(path: str | os.PathLike) -> list[VQAExample]:
    """Examples from a folder holding data.jsonl, a .jsonl file or a LLaVA .json file."""
    path = Path(path)
    if path.is_dir():
        if not (path / JSONL_NAME).is_file():
            raise DatasetError(
                f"{path}: a dataset folder needs a {JSONL_NAME} file (or pass a .jsonl or LLaVA .json file)"
            )
        return load_jsonl(path)
    if not path.exists():
        raise DatasetError(f"{path}: no such file or folder")
    if path.suffix.lower() == ".jsonl":
        return load_jsonl(path)
    if path.suffix.lower() == ".json":
        return load_llava_json(path)
    raise DatasetError(
        f"{path}: unknown dataset format (expected a folder with {JSONL_NAME}, a .jsonl file or a LLaVA .json file)"
    )


def load_jsonl(path: str | os.PathLike) -> list[VQAExample]:
    """Examples from a JSONL file, or from the data.jsonl of a folder."""
    path = Path(path)
    if path.is_dir():
        path = path / JSONL_NAME
    examples = [_jsonl_example(path, number, line) for number, line in _lines(path) if line.strip()]
    return _non_empty(path, examples)


def load_llava_json(path: str | os.PathLike, image_folder: str | os.PathLike | None = None) -> list[VQAExample]:
    """Examples from a LLaVA conversation JSON file; images are relative to `image_folder` (LLaVA's
    --image_folder), by default the file's own folder."""
    path = Path(path)
    folder = Path(image_folder) if image_folder is not None else path.parent
    try:
        records = json.loads(_read_text(path))
    except json.JSONDecodeError as error:
        where = f"line {error.lineno}, column {error.colno}"
        raise DatasetError(f"{path}: not valid JSON at {where} ({error.msg})") from None
    if not isinstance(records, list):
        raise DatasetError(f"{path}: expected a JSON list of records, found {type(records).__name__}")
    examples = [
        example
        for number, record in enumerate(records, start=1)
        for example in _llava_examples(path, folder, number, record)
    ]
    return _non_empty(path, examples)


def scenes_to_examples(scenes: Iterable[Scene]) -> list[VQAExample]:
    """Every question of every scene as an example sharing the scene's in-memory image."""
    return [
        VQAExample(scene.image, qa.question, qa.answer, qa.question_type, f"scene {scene.index} of seed {scene.seed}")
        for scene in scenes
        for qa in scene.qas
    ]


# --- JSONL ------------------------------------------------------------------------------------------


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    return enumerate(_read_text(path).splitlines(), start=1)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such file") from None
    except UnicodeDecodeError as error:
        raise DatasetError(f"{path}: not UTF-8 text (byte {error.start})") from None
    except OSError as error:
        raise DatasetError(f"{path}: cannot read the file ({error.strerror or error})") from None


def _jsonl_example(path: Path, number: int, line: str) -> VQAExample:
    where = f"{path} line {number}"
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise DatasetError(f"{where}: not valid JSON at column {error.colno} ({error.msg})") from None
    if not isinstance(record, dict):
        raise DatasetError(f"{where}: expected a JSON object, found {type(record).__name__}")
    image, question, answer = (_text_field(where, record, name) for name in JSONL_FIELDS)
    question_type = _text_field(where, record, "type") if "type" in record else DEFAULT_TYPE
    source = f"{path.name} line {number}"
    return VQAExample(_image_path(where, path.parent, image), question, answer, question_type, source)


def _text_field(where: str, record: dict, name: str) -> str:
    """`record[name]` as a non-empty string, with surrounding whitespace removed."""
    if name not in record:
        raise DatasetError(f"{where}: the field {name!r} is missing")
    value = record[name]
    if not isinstance(value, str):
        raise DatasetError(f"{where}: the field {name!r} must be a string, not {type(value).__name__}")
    if not value.strip():
        raise DatasetError(f"{where}: the field {name!r} is empty")
    return value.strip()


def _image_path(where: str, folder: Path, name: str) -> Path:
    image = folder / name
    if not image.is_file():
        raise DatasetError(f"{where}: the image {name!r} is not a file (looked for {image})")
    return image


def _non_empty(path: Path, examples: list[VQAExample]) -> list[VQAExample]:
    if not examples:
        raise DatasetError(f"{path}: the dataset has no examples")
    return examples


# --- LLaVA ------------------------------------------------------------------------------------------


def _llava_examples(path: Path, folder: Path, number: int, record: object) -> list[VQAExample]:
    """The examples of record `number` (1-based); none for a text-only record."""
    where = f"{path} record {number}"
    if not isinstance(record, dict):
        raise DatasetError(f"{where}: expected a JSON object, found {type(record).__name__}")
    if "id" in record:
        where += f" (id {record['id']!r})"
    if "image" not in record:
        return []
    image = _image_path(where, folder, _text_field(where, record, "image"))
    turns = record.get("conversations")
    if not isinstance(turns, list) or not turns:
        raise DatasetError(f"{where}: the field 'conversations' must be a non-empty list of turns")
    if len(turns) % 2:
        raise DatasetError(f"{where}: {len(turns)} turns; each human turn needs the gpt turn that answers it")
    examples = []
    for index in range(0, len(turns), 2):
        question = _turn(where, turns, index, "human").replace(IMAGE_TAG, "").strip()
        answer = _turn(where, turns, index + 1, "gpt")
        if not question:
            raise DatasetError(f"{where}, turn {index + 1}: the human turn has no text besides {IMAGE_TAG}")
        source = f"{path.name} record {number}, turn {index + 1}"
        examples.append(VQAExample(image, question, answer, DEFAULT_TYPE, source))
    return examples


def _turn(where: str, turns: list, index: int, speaker: str) -> str:
    """The text of turn `index` (0-based), which must be `speaker`'s."""
    where = f"{where}, turn {index + 1}"
    turn = turns[index]
    if not isinstance(turn, dict):
        raise DatasetError(f"{where}: expected a JSON object with 'from' and 'value', found {type(turn).__name__}")
    if turn.get("from") != speaker:
        found = turn.get("from")
        raise DatasetError(f"{where}: expected a turn from {speaker!r}, found {found!r} (turns alternate human, gpt)")
    return _text_field(where, turn, "value")
