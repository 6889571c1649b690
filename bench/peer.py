"""The peer: llama.cpp (through llama-cpp-python) on the same SmolLM2-135M GGUF the starter converts,
text only, greedy, the same number of new tokens, as many threads as cores.

llama-cpp-python is not a dependency: it compiles llama.cpp from source (~10 minutes). Install it
for this benchmark with the flags this CPU needs (the native build crashed on "Illegal
instruction"; see the README):

    CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=ON" \\
        pip install --no-cache-dir llama-cpp-python
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

INSTALL = (
    'CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON '
    '-DGGML_AVX512=ON" pip install --no-cache-dir llama-cpp-python'
)


@dataclass
class PeerResult:
    name: str
    prompt_tokens: int
    new_tokens: int
    time_to_first_token_s: float
    tokens_per_s: float
    file_bytes: int


def smollm2_gguf() -> Path:
    import importlib.util

    from assistant.models.causal_lm import PACKAGED_LMS

    packaged = PACKAGED_LMS["smollm2-135m"]
    spec = importlib.util.find_spec(packaged.package)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"SmolLM2's GGUF is not installed: {packaged.install}")
    return Path(next(iter(spec.submodule_search_locations))) / packaged.file


def llama_cpp(prompt: list[int], new_tokens: int, threads: int | None = None) -> PeerResult:
    """`prompt`: token ids from the starter's tokenizer (the GGUF's vocabulary), so both run the
    same prompt. Raises ImportError when llama-cpp-python is not installed."""
    import llama_cpp

    path = smollm2_gguf()
    threads = threads or os.cpu_count()
    model = llama_cpp.Llama(str(path), n_ctx=1024, n_threads=threads, n_threads_batch=threads, verbose=False)

    def run(count: int) -> tuple[float, float]:
        model.reset()
        started = time.perf_counter()
        first = None
        produced = 0
        for _token in model.generate(prompt, temp=0.0, top_k=1, reset=True):  # greedy; end-of-turn ignored
            produced += 1
            first = first or time.perf_counter()
            if produced == count:
                break
        return first - started, time.perf_counter() - first

    run(8)  # warm-up
    first_s, rest_s = run(new_tokens)
    return PeerResult(
        f"llama.cpp {llama_cpp.__version__} (llama-cpp-python), {threads} threads",
        len(prompt),
        new_tokens,
        first_s,
        (new_tokens - 1) / rest_s,
        path.stat().st_size,
    )
