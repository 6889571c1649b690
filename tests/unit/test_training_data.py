"""Training data: synthetic scenes are deterministic, their answers match what is drawn, the splits are
disjoint; user data loads from JSONL and LLaVA JSON, and every bad input gets a one-line reason that
names the file and the line or record."""

import hashlib
import json
import time
from collections import defaultdict

import numpy as np
import pytest
from PIL import Image

from assistant.media import ImageLimits
from assistant.training import (
    QUESTION_TYPES,
    SPLITS,
    DatasetError,
    generate_scene,
    generate_scenes,
    load_dataset,
    load_jsonl,
    load_llava_json,
    make_split,
    scenes_to_examples,
    split_seed,
)
from assistant.training.scenes import COLOURS, MIN_CONTRAST, RADIUS_RANGES, REGIONS

SCENE_COUNT = 300  # enough for every kind, type and several phrasings of each


@pytest.fixture(scope="module")
def scenes():
    started = time.perf_counter()
    made = generate_scenes(SCENE_COUNT, seed=11)
    per_scene = (time.perf_counter() - started) / SCENE_COUNT
    print(f"\nscene generation: {per_scene * 1e3:.2f} ms per 224-px scene, ~{per_scene * 2000:.1f} s for 2,000")
    return made


def pixels(image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def distance(a, b) -> np.ndarray:
    return np.linalg.norm(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64), axis=-1)


def nearest_colour(rgb) -> str:
    return min(COLOURS, key=lambda name: distance(rgb, COLOURS[name]))


def fingerprint(scene) -> str:
    return hashlib.sha256(scene.image.tobytes()).hexdigest()


def count_components(mask: np.ndarray, min_area: int = 20) -> int:
    """Connected regions (4-neighbour) of a boolean mask, by spreading the largest label until stable."""
    labels = np.where(mask, np.arange(1, mask.size + 1).reshape(mask.shape), 0)
    while True:
        padded = np.pad(labels, 1)
        around = np.stack([labels, padded[:-2, 1:-1], padded[2:, 1:-1], padded[1:-1, :-2], padded[1:-1, 2:]])
        spread = np.where(mask, around.max(axis=0), 0)
        if np.array_equal(spread, labels):
            break
        labels = spread
    _, areas = np.unique(labels[mask], return_counts=True)
    return int((areas >= min_area).sum())


# --- synthetic scenes -------------------------------------------------------------------------------


def test_same_seed_gives_identical_scenes_and_other_seeds_differ():
    first, again, other = generate_scenes(12, seed=3), generate_scenes(12, seed=3), generate_scenes(12, seed=4)
    for a, b in zip(first, again):
        assert np.array_equal(pixels(a.image), pixels(b.image))
        truth = (a.qas, a.caption, a.objects, a.count, a.text, a.background)
        assert truth == (b.qas, b.caption, b.objects, b.count, b.text, b.background)
    assert {fingerprint(s) for s in first}.isdisjoint(fingerprint(s) for s in other)
    assert [s.caption for s in first] != [s.caption for s in other]
    # A scene depends only on (seed, index): made alone it is the same as in a batch.
    assert np.array_equal(pixels(generate_scene(3, 7).image), pixels(first[7].image))


def test_splits_never_share_a_scene():
    seeds = {name: split_seed(name, 0) for name in SPLITS}
    assert len(set(seeds.values())) == len(SPLITS) and 0 not in seeds.values()
    splits = {name: make_split(name, 40, seed=0) for name in SPLITS}
    prints = {name: {fingerprint(s) for s in scenes} for name, scenes in splits.items()}
    assert all(len(found) == 40 for found in prints.values())  # no repeats inside a split either
    assert prints["train"].isdisjoint(prints["val"]) and prints["train"].isdisjoint(prints["test"])
    assert prints["val"].isdisjoint(prints["test"])
    assert [fingerprint(s) for s in make_split("val", 5, seed=0)] == [fingerprint(s) for s in splits["val"][:5]]
    assert split_seed("train", 1) != seeds["train"]
    with pytest.raises(ValueError, match="unknown split"):
        make_split("dev", 1)


def test_images_are_rgb_at_the_asked_size(scenes):
    assert all(s.image.mode == "RGB" and s.image.size == (224, 224) for s in scenes)
    small = generate_scene(5, 0, image_size=96)
    assert small.image.size == (96, 96)
    with pytest.raises(ValueError, match="at least"):
        generate_scene(5, 0, image_size=8)


def test_every_question_type_appears_in_several_phrasings(scenes):
    questions = defaultdict(set)
    for scene in scenes:
        for qa in scene.qas:
            questions[qa.question_type].add(qa.question)
    assert set(questions) == set(QUESTION_TYPES)
    for question_type, found in questions.items():
        assert len(found) >= 3, f"{question_type}: only {sorted(found)}"
    colour_questions = " ".join(questions["colour"])
    assert "colour" in colour_questions and "color" in colour_questions  # both spellings people use
    assert {s.kind for s in scenes} == {"single", "count", "digit", "word"}


def test_answers_are_short_and_normalised(scenes):
    for qa in (qa for s in scenes for qa in s.qas if qa.question_type != "caption"):
        assert qa.answer == qa.answer.strip().lower() and " " not in qa.answer and not qa.answer.endswith("."), qa
    captions = [qa.answer for s in scenes for qa in s.qas if qa.question_type == "caption"]
    assert all(c[0].isupper() and c.endswith(".") for c in captions)


def test_answers_match_the_ground_truth(scenes):
    for scene in scenes:
        answers = {qa.question_type: qa.answer for qa in scene.qas}
        assert answers["caption"] == scene.caption
        if scene.objects:
            target = scene.objects[0]
            same_kind = [o for o in scene.objects if (o.shape, o.colour) == (target.shape, target.colour)]
            assert answers["colour"] == target.colour and answers["shape"] == target.shape
            assert len(same_kind) == scene.count
            assert all(o.shape != target.shape and o.colour != target.colour for o in scene.objects[scene.count :])
        if scene.kind == "count":
            assert answers["count"] == str(scene.count) and 1 <= scene.count <= 4
        if scene.kind == "single":
            obj = scene.objects[0]
            assert answers["size"] == obj.size and answers["position"] == obj.region
            nearest = min(REGIONS, key=lambda r: distance(obj.centre, np.multiply(REGIONS[r], 224)))
            assert nearest == obj.region
            low, high = RADIUS_RANGES[obj.size]
            assert low * 224 - 1 <= obj.radius <= high * 224 + 1
        if scene.text is not None:
            assert answers[scene.kind] == scene.text.text.lower() and answers["colour"] == scene.text.colour
            if scene.kind == "digit":
                assert scene.text.text.isdigit() and len(scene.text.text) == 1


def test_the_pixel_at_each_shapes_centre_has_the_named_colour(scenes):
    for scene in scenes:
        image = pixels(scene.image)
        for obj in scene.objects:
            x, y = obj.centre
            assert nearest_colour(image[y, x]) == obj.colour, (scene.index, obj)
            assert distance(image[y, x], COLOURS[obj.colour]) < 30


def test_printed_text_is_drawn_in_its_colour(scenes):
    for scene in (s for s in scenes if s.text is not None):
        left, top, right, bottom = scene.text.box
        ink = pixels(scene.image)[top:bottom, left:right]
        inked = distance(ink, scene.text.rgb) < 30
        assert inked.mean() > 0.08, (scene.index, scene.text)  # strokes cover a good part of the box
        assert nearest_colour(ink[inked].mean(axis=0)) == scene.text.colour


def test_the_background_contrasts_with_everything_drawn(scenes):
    for scene in scenes:
        image = pixels(scene.image)
        border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])  # never drawn on
        for rgb in [o.rgb for o in scene.objects] + ([scene.text.rgb] if scene.text else []):
            assert distance(border, rgb).min() > MIN_CONTRAST - 40


def test_connected_components_count_the_drawn_shapes(scenes):
    checked = [s for s in scenes if s.kind == "count"][:8]
    assert {len(s.objects) for s in checked} - {1}  # some with several shapes
    for scene in checked:
        image = pixels(scene.image)
        drawn = np.zeros(image.shape[:2], dtype=bool)
        for rgb in {o.rgb for o in scene.objects}:
            drawn |= distance(image, rgb) < 45
        assert count_components(drawn) == len(scene.objects), scene.caption
        target = distance(image, scene.objects[0].rgb) < 45
        assert count_components(target) == scene.count, scene.caption


def test_scenes_become_examples(scenes):
    examples = scenes_to_examples(scenes[:5])
    assert len(examples) == sum(len(s.qas) for s in scenes[:5])
    first = examples[0]
    assert first.load_image() is scenes[0].image
    assert (first.question, first.answer, first.question_type) == (
        scenes[0].qas[0].question,
        scenes[0].qas[0].answer,
        scenes[0].qas[0].question_type,
    )
    assert first.source == "scene 0 of seed 11"


# --- user data --------------------------------------------------------------------------------------


def write_png(path, colour="red"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 6), colour).save(path)
    return path


def write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [row if isinstance(row, str) else json.dumps(row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def assert_one_line(error, *names):
    message = str(error)
    assert message and "\n" not in message and "Traceback" not in message, message
    for name in names:
        assert name in message, f"{name!r} not in {message!r}"


GOOD_ROW = {"image": "img/a.png", "question": "What colour is it?", "answer": "red"}


def test_jsonl_folder_loads_with_paths_relative_to_it(tmp_path):
    write_png(tmp_path / "img" / "a.png")
    write_png(tmp_path / "img" / "b.png", "blue")
    rows = [GOOD_ROW, "", {"image": "img/b.png", "question": " Which colour? ", "answer": "blue", "type": "colour"}]
    write_jsonl(tmp_path / "data.jsonl", rows)
    examples = load_jsonl(tmp_path)
    assert [(e.question, e.answer, e.question_type) for e in examples] == [
        ("What colour is it?", "red", "other"),
        ("Which colour?", "blue", "colour"),
    ]
    assert examples[1].image == tmp_path / "img" / "b.png" and examples[1].source == "data.jsonl line 3"
    assert examples[1].load_image().getpixel((0, 0)) == (0, 0, 255)
    assert [e.answer for e in load_jsonl(tmp_path / "data.jsonl")] == ["red", "blue"]


def test_images_are_decoded_only_when_used_and_with_the_media_limits(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.png").write_bytes(b"not an image")
    (example,) = load_jsonl(write_jsonl(tmp_path / "data.jsonl", [GOOD_ROW]))  # loads: nothing decoded yet
    with pytest.raises(DatasetError, match="not a supported image") as caught:
        example.load_image()
    assert_one_line(caught.value, "data.jsonl line 1", "a.png")
    write_png(tmp_path / "img" / "a.png")
    with pytest.raises(DatasetError, match="over the limit"):
        example.load_image(ImageLimits(max_pixels=10))


@pytest.mark.parametrize(
    "rows, reason, where",
    [
        ([GOOD_ROW, '{"image": "img/a.png", "question": "Hi?"'], "not valid JSON", "line 2"),
        (["[1, 2]"], "expected a JSON object", "line 1"),
        ([{"image": "img/a.png", "question": "What?"}], "'answer' is missing", "line 1"),
        ([{**GOOD_ROW, "question": 3}], "'question' must be a string", "line 1"),
        ([{**GOOD_ROW, "answer": "  "}], "'answer' is empty", "line 1"),
        ([{**GOOD_ROW, "type": None}], "'type' must be a string", "line 1"),
        ([GOOD_ROW, {**GOOD_ROW, "image": "img/missing.png"}], "'img/missing.png' is not a file", "line 2"),
        (["", "   "], "no examples", "data.jsonl"),
    ],
    ids=["malformed", "not-object", "missing-field", "not-string", "empty-field", "bad-type", "missing-image", "empty"],
)
def test_bad_jsonl_is_refused_naming_file_and_line(tmp_path, rows, reason, where):
    write_png(tmp_path / "img" / "a.png")
    path = write_jsonl(tmp_path / "data.jsonl", rows)
    with pytest.raises(DatasetError, match=reason) as caught:
        load_jsonl(path)
    assert_one_line(caught.value, str(path), where)


def test_unreadable_jsonl_files_are_refused(tmp_path):
    with pytest.raises(DatasetError, match="no such file") as caught:
        load_jsonl(tmp_path / "nothing.jsonl")
    assert_one_line(caught.value, "nothing.jsonl")
    (tmp_path / "latin1.jsonl").write_bytes(b'{"question": "caf\xe9"}\n')
    with pytest.raises(DatasetError, match="not UTF-8") as caught:
        load_jsonl(tmp_path / "latin1.jsonl")
    assert_one_line(caught.value, "latin1.jsonl")


def llava_record(image="img/a.png", **changes):
    record = {
        "id": "r1",
        "image": image,
        "conversations": [
            {"from": "human", "value": "<image>\nWhat colour is the car?"},
            {"from": "gpt", "value": "Red."},
            {"from": "human", "value": "And the sky? <image> "},
            {"from": "gpt", "value": "Blue."},
        ],
    }
    return {**record, **changes}


def write_llava(path, records):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(records if isinstance(records, str) else json.dumps(records, indent=1), encoding="utf-8")
    return path


def test_llava_json_gives_one_example_per_exchange(tmp_path):
    write_png(tmp_path / "img" / "a.png")
    text_only = {"id": "t", "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]}
    path = write_llava(tmp_path / "llava.json", [llava_record(), text_only])
    examples = load_llava_json(path)
    assert [(e.question, e.answer, e.question_type) for e in examples] == [
        ("What colour is the car?", "Red.", "other"),
        ("And the sky?", "Blue.", "other"),
    ]
    assert all(e.image == tmp_path / "img" / "a.png" for e in examples)
    assert examples[1].source == "llava.json record 1, turn 3"
    # LLaVA keeps images apart from the JSON (--image_folder).
    write_png(tmp_path / "images" / "img" / "a.png")
    moved = write_llava(tmp_path / "json" / "llava.json", [llava_record()])
    assert load_llava_json(moved, image_folder=tmp_path / "images")[0].image == tmp_path / "images" / "img" / "a.png"


def odd_turns():
    return llava_record(conversations=[{"from": "human", "value": "<image>\nWhat?"}])


def swapped_turns():
    return llava_record(conversations=[{"from": "gpt", "value": "Hi"}, {"from": "human", "value": "<image>\nWhat?"}])


@pytest.mark.parametrize(
    "records, reason, where",
    [
        ('[{"id": "r1",\n "image": "img/a.png",\n "conversations": [}]', "not valid JSON at line 3", "llava.json"),
        ({"image": "img/a.png"}, "expected a JSON list", "llava.json"),
        ([llava_record(), "text"], "expected a JSON object", "record 2"),
        ([llava_record(conversations=None)], "'conversations' must be a non-empty list", "record 1 (id 'r1')"),
        ([llava_record(conversations=[])], "'conversations' must be a non-empty list", "record 1"),
        ([odd_turns()], "each human turn needs the gpt turn", "record 1"),
        ([swapped_turns()], "expected a turn from 'human', found 'gpt'", "turn 1"),
        (
            [llava_record(conversations=[{"from": "human", "value": "<image>\n"}, {"from": "gpt", "value": "A cat."}])],
            "no text besides <image>",
            "turn 1",
        ),
        (
            [llava_record(conversations=[{"from": "human", "value": "What?"}, {"from": "gpt"}])],
            "'value' is missing",
            "turn 2",
        ),
        ([llava_record(conversations=["What?", "That."])], "expected a JSON object with 'from'", "turn 1"),
        ([llava_record(), llava_record(image="img/gone.jpg", id=7)], "'img/gone.jpg' is not a file", "record 2 (id 7)"),
        ([llava_record(image=5)], "'image' must be a string", "record 1"),
        ([], "no examples", "llava.json"),
        ([{"id": "t", "conversations": []}], "no examples", "llava.json"),
    ],
    ids=[
        "malformed",
        "not-list",
        "record-not-object",
        "no-conversations",
        "empty-conversations",
        "odd-turns",
        "wrong-order",
        "only-image-tag",
        "missing-value",
        "turn-not-object",
        "missing-image",
        "image-not-string",
        "empty-list",
        "text-only",
    ],
)
def test_bad_llava_json_is_refused_naming_file_and_record(tmp_path, records, reason, where):
    write_png(tmp_path / "img" / "a.png")
    path = write_llava(tmp_path / "llava.json", records)
    with pytest.raises(DatasetError, match=reason) as caught:
        load_llava_json(path)
    assert_one_line(caught.value, str(path), where)


def test_load_dataset_dispatches_on_what_it_finds(tmp_path):
    write_png(tmp_path / "img" / "a.png")
    write_jsonl(tmp_path / "data.jsonl", [GOOD_ROW])
    write_jsonl(tmp_path / "extra.jsonl", [GOOD_ROW, GOOD_ROW])
    write_llava(tmp_path / "llava.json", [llava_record()])
    assert len(load_dataset(tmp_path)) == 1
    assert len(load_dataset(tmp_path / "extra.jsonl")) == 2
    assert len(load_dataset(tmp_path / "llava.json")) == 2
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("hello")
    for path, reason in [
        (tmp_path / "empty", "needs a data.jsonl"),
        (tmp_path / "notes.txt", "unknown dataset format"),
        (tmp_path / "absent", "no such file or folder"),
    ]:
        with pytest.raises(DatasetError, match=reason) as caught:
            load_dataset(path)
        assert_one_line(caught.value, path.name)
