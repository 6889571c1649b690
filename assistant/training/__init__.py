"""The seed's pipeline behind the model: training data (a synthetic scene generator with known
answers, and loaders for the user's own image/question/answer data, JSONL or LLaVA's conversation
JSON, all as `VQAExample`s), projector training, and evaluation with accuracy and F1. The command
line's `train` and `eval` use this public face.
"""

from ..vision.colour import COLOUR_LAYOUTS
from .datasets import DatasetError, VQAExample, load_dataset, load_jsonl, load_llava_json, scenes_to_examples
from .evaluate import EvalReport, evaluate
from .scenes import QA, QUESTION_TYPES, SPLITS, Scene, generate_scene, generate_scenes, make_split, split_seed
from .train import TrainConfig, train

__all__ = [
    "COLOUR_LAYOUTS",
    "QA",
    "QUESTION_TYPES",
    "SPLITS",
    "DatasetError",
    "EvalReport",
    "Scene",
    "TrainConfig",
    "VQAExample",
    "evaluate",
    "generate_scene",
    "generate_scenes",
    "load_dataset",
    "load_jsonl",
    "load_llava_json",
    "make_split",
    "scenes_to_examples",
    "split_seed",
    "train",
]
