"""The vision towers of the candidate hub VLMs at full size (random weights), one view each: seconds
a view in each form the app runs them in, and how far each form's features move from float32's
(cosine similarity and relative error of the last hidden state, the same pixels).

    python -m bench.vision [--runs 4] [--out bench/results/vision-tower.md]

Forms: float32 (the model card's), bfloat16 eager (one-shot commands), int8 weights and activations
with a compiled forward (serve; models/fast_vision.py).
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import torch
import transformers

from assistant.models.configs import SIGLIP_BASE_512, SIGLIP_SO400M_384
from assistant.models.fast_vision import compiling_here, quicken
from assistant.threads import model_threads, reserve_for_model, run_in_model_thread

from .common import command_line, load_average, machine_section, markdown_table, publish, repeat

TOWERS = {
    "SigLIP base/16 at 512 px (SmolVLM-256M/500M)": (transformers.SmolVLMVisionConfig, SIGLIP_BASE_512),
    "SigLIP so400m/14 at 384 px (LLaVA-OneVision, a tile)": (transformers.SiglipVisionConfig, SIGLIP_SO400M_384),
}
FORMS = ("float32", "bfloat16", "int8, compiled")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    load_before = load_average()
    reserve_for_model()
    rows = []
    for name, (config_class, sizes) in TOWERS.items():
        rows += run_in_model_thread(measure, name, config_class(**sizes), args.runs)
    lines = ["# Vision towers: a view, by form", "", command_line("bench.vision", argv), ""]
    header = ["tower", "form", "seconds a view", "vs float32", "cosine to float32", "relative error"]
    lines += markdown_table(header, rows, "llrrrr") + [""]
    lines += machine_section(f"{model_threads()} (the model's thread)", load_before)
    publish("\n".join(lines), args.out)


def measure(name: str, config, runs: int) -> list[list]:
    torch.manual_seed(0)
    reference_tower = transformers.AutoModel.from_config(config).eval()
    pixels = torch.randn(1, 3, config.image_size, config.image_size)
    rows, reference, reference_s = [], None, None
    for form in FORMS:
        tower, dtype = _in_form(copy.deepcopy(reference_tower), form)
        with torch.inference_mode(), compiling_here():
            features = tower(pixel_values=pixels.to(dtype)).last_hidden_state.float()  # the warm-up (and compile)
            seconds = min(repeat(lambda: tower(pixel_values=pixels.to(dtype)), runs))
        reference = features if reference is None else reference
        reference_s = reference_s or seconds
        cosine = torch.nn.functional.cosine_similarity(features.flatten(), reference.flatten(), dim=0).item()
        error = ((features - reference).norm() / reference.norm()).item()
        rows.append([name, form, f"{seconds:.3f}", f"{reference_s / seconds:.2f}x", f"{cosine:.5f}", f"{error:.4f}"])
    return rows


def _in_form(tower: torch.nn.Module, form: str) -> tuple[torch.nn.Module, torch.dtype]:
    if form == "float32":
        return tower, torch.float32
    tower = tower.to(torch.bfloat16)
    if form == "bfloat16":
        return tower, torch.bfloat16
    quicken(tower)  # as serve runs it
    return tower, torch.bfloat16


if __name__ == "__main__":
    main()
