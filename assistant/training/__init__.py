"""Training data for the projector: a built-in synthetic scene generator with known answers, and
loaders for the user's own image/question/answer data (JSONL or LLaVA's conversation JSON), both as
`VQAExample`s."""

from .datasets import DatasetError, VQAExample, load_dataset, load_jsonl, load_llava_json, scenes_to_examples
from .scenes import QA, QUESTION_TYPES, SPLITS, Scene, generate_scene, generate_scenes, make_split, split_seed

__all__ = [
    "QA",
    "QUESTION_TYPES",
    "SPLITS",
    "DatasetError",
    "Scene",
    "VQAExample",
    "generate_scene",
    "generate_scenes",
    "load_dataset",
    "load_jsonl",
    "load_llava_json",
    "make_split",
    "scenes_to_examples",
    "split_seed",
]
