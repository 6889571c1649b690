"""A faster decode loop for a composed model's language model: static KV cache, one compiled
one-token step, lower-precision weights.

    decoder = FastDecoder(language_model, DecodeSpeed(weights="int8", compile=True))
    decoder.warm_up()                      # compiles the step (minutes the first time, less once cached)
    decoder.generate(inputs_embeds, max_new_tokens, logits_processor, stopping_criteria, streamer, eos_ids)

Why: on a CPU, transformers' `generate` spends most of each step in matrix-vector products that
stream the weights from memory, and the rest in Python around them. Halving the bytes (bfloat16) or
quartering them (int8 weights with bfloat16 activations, torchao's weight-only scheme: one scale per
output channel) cuts the first; compiling the one-token step with a static cache (torch.compile,
Inductor, weights frozen into the graph for Inductor's own GEMM kernels, attention over the filled
positions only) cuts the second. What that gives, against `generate` and the memory bandwidth, is in
bench/results/bench-decode.md (`python -m bench.suite --skip speech,memory,images`).

Everything here is the libraries' own machinery: transformers' StaticCache and model forward,
torchao's quantization, torch.compile (and a registered attention function, decode_attention). The
prompt is run eagerly (it has a different length every time); only the one-token step is compiled,
once for every filled length. The cache grows in power-of-two buckets, so a longer conversation costs
one more compile (Dynamo then marks the cache's size dynamic), not one per size.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import logging
import os
import shutil
import sys
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from transformers import LogitsProcessorList, StaticCache, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from ..threads import use_model_threads
from . import decode_attention
from .base import GenerationRequest
from .int8_rows import few_rows_int8
from .memory import give_back_freed_memory
from .packaged_step import STEP_MODEL_NAME, StepPackages, export_step

log = logging.getLogger(__name__)
# torchao's Int8Tensor lacks a hash for one of torch.compile's caches; the other caches keep a restart
# short, so the warning tells the user nothing they can act on.
warnings.filterwarnings("ignore", message=".*_stable_hash_for_caching.*")

DecodeWeights = Literal["float32", "bfloat16", "int8"]
SMALLEST_CACHE = 1024  # tokens; a short chat and its reply fit in the first bucket
# Python's thread switch interval while the warm-up compiles (default 5 ms); a reply beside it decoded
# at 0.24 tokens/s with the default, 0.7 with 5e-5, 1.0 with 1e-5, 1.2 with 1e-6 (SmolVLM-500M's size).
WARM_UP_SWITCH_INTERVAL_S = 1e-5
# The warm-up's niceness (Linux: per thread, and inherited by the compiler processes it starts): the
# cores go to a reply first. A photo question asked as the compile began (SmolVLM-256M's size) got its
# first token after 4.7 s at the replies' priority, 2.7 s with this (test_warm_start.py checks it is set).
WARM_UP_NICENESS = 15
# The code a packaged step is built from: a change to it builds the package afresh.
PACKAGED_CODE = (
    Path(__file__),
    Path(decode_attention.__file__),
    Path(__file__).with_name("packaged_step.py"),
    Path(__file__).with_name("quantized_weights.py"),
)

# How the one-token step is compiled: frozen weights let Inductor pack them for its own C++ GEMM
# kernels, chosen against ATen's by timing each shape once (max_autotune), which beat ATen's int8
# kernel alone (bench/results/bench-decode.md). Frozen graphs are cached on disk like others: minutes
# the first time, much less after. (Passed as torch.compile's options, these settings do not reach the
# GEMM lowering; hence a config patch around each call, which is where a compile happens.)
INDUCTOR_SETTINGS = {
    "freezing": True,
    "max_autotune": True,
    "max_autotune_gemm_backends": "CPP,ATEN",
    # The timings of each choice would otherwise be written to the console, a table per matrix shape.
    "autotune_num_choices_displayed": 0,
    "max_autotune_report_choices_stats": False,
}


@dataclass(frozen=True)
class DecodeSpeed:
    weights: DecodeWeights = "int8"  # the language model's weights while answering
    compile: bool = True  # compile the one-token step (needs a C++ compiler on CPU)
    batch: int = 4  # replies decoded together at most (1: one at a time); an eager int8 LM keeps a bf16 copy for it


def can_compile() -> bool:
    """Inductor writes C++ on CPU: without a compiler, compiling fails at the first token."""
    return any(shutil.which(name) for name in ("g++", "c++", "clang++"))


def keep_compiled_steps_in(cache_dir: Path) -> None:
    """Inductor's on-disk cache (the compiled steps: minutes to build, ~1 minute to load) in the
    assistant's cache instead of /tmp, which a restart of the machine may empty. Inductor reads the
    variable at each use, and importing it already wrote its default there, so only that default is
    replaced: a TORCHINDUCTOR_CACHE_DIR of the user's own wins."""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    if os.environ.get("TORCHINDUCTOR_CACHE_DIR") in (None, default_cache_dir()):
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache_dir / "inductor")


def fast_decoder(
    language_model: torch.nn.Module | None, speed: DecodeSpeed | None, cache_dir: Path | None = None
) -> FastDecoder | None:
    """A FastDecoder over `language_model` at `speed`, its compiled steps kept in `cache_dir` (on a CPU,
    its one-token step as a package there); None when there is no language model the loop runs or no
    speed asked for (transformers' generate)."""
    if language_model is None or speed is None:
        return None
    if speed.compile and cache_dir is not None:
        keep_compiled_steps_in(Path(cache_dir))
    return FastDecoder(language_model, speed, packages_folder(speed, cache_dir, language_model.device))


def packages_folder(speed: DecodeSpeed, cache_dir: Path | None, device: torch.device) -> Path | None:
    """Where compiled steps are kept as packages: on a CPU, where they are compiled and a cache
    directory is given (None: compiled at each start)."""
    if not speed.compile or cache_dir is None or device.type != "cpu":
        return None
    return Path(cache_dir) / "packages"


def describe(decoder: FastDecoder | None) -> str:
    """How a model decodes, in words for the user."""
    if decoder is None:
        return "transformers generate"
    return f"{decoder.speed.weights} weights, {'compiled' if decoder.speed.compile else 'eager'} static-cache step"


def convert_weights(
    language_model: torch.nn.Module, weights: DecodeWeights, kept: dict | None = None
) -> torch.nn.Module:
    """The language model with its weights in the chosen precision (in place); int8 weights that
    `kept` holds (an earlier start's packages: quantized_weights) are taken from there."""
    in_precision(language_model, weights)
    if weights == "int8":
        from torchao.quantization import Int8WeightOnlyConfig

        from .quantized_weights import quantize

        quantize(language_model, Int8WeightOnlyConfig(), kept)  # every nn.Linear, lm_head included
        _scales_in(language_model, torch.bfloat16)
    return language_model


def in_precision(language_model: torch.nn.Module, weights: DecodeWeights) -> torch.nn.Module:
    """The language model in the floating-point type its `weights` are made from (in place)."""
    return language_model.float() if weights == "float32" else language_model.to(torch.bfloat16)


def _scales_in(language_model: torch.nn.Module, dtype: torch.dtype) -> None:
    """Keep the int8 weights' scales in `dtype`, the activations': torchao casts them there at every
    call, and a graph exported with the cast lost Inductor's packed int8 GEMM (packaged_step)."""
    for module in language_model.modules():
        weight = getattr(module, "weight", None)
        if hasattr(weight, "qdata") and hasattr(weight, "scale"):
            weight.scale = weight.scale.to(dtype)


@dataclass(frozen=True)
class Prompt:
    """A prompt whose positions can be told apart from what a cache holds, so that a cache holding the
    same beginning (the earlier turns of a conversation, or just its system prompt) is prefilled from
    where the two part: a follow-up question reads only what is new."""

    length: int  # positions
    embed: Callable[[int], torch.Tensor]  # start -> the prompt's embeddings from position `start` on, [1, L - start, H]
    # [L] int64: each position's token id, image positions a (negative) digest of the prompt's images;
    # None: nothing to compare, so nothing is reused (and the cache is not kept for the next).
    key: torch.Tensor | None = None

    @classmethod
    def of(cls, embeddings: torch.Tensor) -> Prompt:
        return cls(embeddings.shape[1], lambda start: embeddings[:, start:])


@dataclass
class _Lane:
    """Where one line of replies keeps its state: static caches by size (`_bucket`), and what each
    holds position by position (Prompt.key, then the reply's tokens; None or absent: nothing to reuse)."""

    eager: bool  # steps without the compiled graphs
    caches: dict[int | tuple[int, int], StaticCache] = field(default_factory=dict)
    held: dict[int, torch.Tensor | None] = field(default_factory=dict)


@dataclass
class _Hooks:
    """What the engine plugs into a generation: its sampler, its stop check, its token stream."""

    logits_processor: LogitsProcessorList
    stopping_criteria: StoppingCriteriaList
    streamer: BaseStreamer | None

    def put(self, ids: torch.Tensor) -> None:
        if self.streamer is not None:
            self.streamer.put(ids)

    def end(self) -> None:
        if self.streamer is not None:
            self.streamer.end()


class _ReplyInProgress:
    """One reply's tokens so far, streamed through the engine's hooks, and whether it wants more."""

    def __init__(self, hooks: _Hooks, max_new_tokens: int, device: torch.device):
        self.hooks = hooks
        self.max_new_tokens = max_new_tokens
        self.generated = torch.empty((1, 0), dtype=torch.long, device=device)
        self.active = True
        hooks.put(self.generated)  # as generate does: the (here empty) prompt ids come first

    def take(self, logits: torch.Tensor, eos_token_ids: list[int]) -> int:
        """Choose the next token from this reply's logits [1, V] and stream it; at its end (end of
        turn, a stop, its budget) the reply is whole and its stream is told so."""
        scores = logits.float()
        # Each processor directly: the list's own call inspects every processor's signature at every
        # token (a measurable share of a compiled step), for keyword arguments the engine's processors
        # never take.
        for processor in self.hooks.logits_processor:
            scores = processor(self.generated, scores)
        token = scores.argmax(dim=-1, keepdim=True)
        self.generated = torch.cat([self.generated, token], dim=-1)
        self.hooks.put(token[0])
        ended = int(token) in eos_token_ids or bool(self.hooks.stopping_criteria(self.generated, scores).all())
        if ended or self.generated.shape[1] == self.max_new_tokens:
            self.active = False
            self.hooks.end()
        return int(token)


class FastDecoder:
    """Drives one causal LM for the engine's single worker thread; a background thread compiles."""

    def __init__(self, language_model: torch.nn.Module, speed: DecodeSpeed, packages: Path | None = None):
        # Uncompiled, int8's kernels are slow at any batch size and bf16's are not (`python -m
        # bench.batch_step` times both): an eager int8 decoder keeps a bf16 copy of the LM for batches
        # (twice the int8 weights' memory). Compiled, int8 batches well.
        self.batch_model = language_model
        if speed.batch > 1 and speed.weights == "int8" and not speed.compile:
            self.batch_model = copy.deepcopy(language_model.to(torch.bfloat16))
        self.speed = speed
        self._packages = packages  # where the steps are kept as packages (None: torch.compile at each start)
        # Named by the weights before they are quantized: a later start takes its int8 weights from them.
        self._step_packages = self._packages_of(in_precision(language_model, speed.weights))
        kept = self._kept_weights()
        self.language_model = convert_weights(language_model, speed.weights, kept)
        if kept:  # its other weights (embeddings, norms) on the packages' copy too, before the checkpoint's is copied
            self._step_packages.lend_to(self.language_model, STEP_MODEL_NAME)
        if speed.compile:
            # The compiled step attends over the filled positions only (decode_attention); for other
            # attention kinds, plain attention over the whole cache, which Inductor fuses far better
            # than it runs SDPA's kernel there.
            suits = decode_attention.suits(language_model.config)
            self.language_model.set_attn_implementation(decode_attention.NAME if suits else "eager")
        # Eager runs (prompts, steps before or without the compile) multiply few rows by int8 weights
        # with ATen's int8 kernel rather than widening every weight first (int8_rows).
        self._eager_kernels = few_rows_int8 if speed.weights == "int8" else contextlib.nullcontext
        self.dtype = language_model.get_input_embeddings().weight.dtype
        self.device = language_model.get_input_embeddings().weight.device
        self.context_tokens = language_model.config.max_position_embeddings
        self._lane = _Lane(eager=not speed.compile)
        # While the warm-up compiles, replies are decoded beside it with the eager steps, in caches
        # of their own (dropped once it is done): slower, but at once rather than after the compile.
        self._beside_compile = _Lane(eager=True)
        self._warming = threading.Event()
        self.reused = 0  # positions of the last reply's prompt that were not prefilled again
        self._positions = torch.arange(self.context_tokens, device=self.device)
        self._step = self._compiled(self._one_token) if speed.compile else self._one_token
        # Compiled, a batch always has `speed.batch` rows (idle ones fill it): one graph for any batch.
        self._rows_step = self._compiled(self._rows_one_token) if speed.compile else self._rows_one_token
        # The compile thread and the engine's worker take turns; re-entrant, as a prompt's embeddings
        # (vision and all, in the model's turn) are made inside a reply's.
        self._lock = threading.RLock()
        # Replies beside the warm-up (and their vision work) take this one; exporting a step for its
        # package takes it too: torch.export patches every module's call, in all threads, while it traces.
        self._beside_lock = threading.RLock()

    @staticmethod
    def _compiled(one_token_step):
        # Guards on the model's modules (hundreds of parameters, checked at every call) cost a large
        # share of a step; the model is never changed once compiled (its weights are frozen into the graph).
        # Without them nothing tells two decoders' graphs apart (the step's code is the same), so
        # each decoder keeps its own (isolate_recompiles): another model's frozen weights would
        # answer otherwise.
        compiled = None  # made at the first call, the warm-up's: importing Inductor is a second of the start

        def step(*args):
            nonlocal compiled
            if compiled is None:
                compiled = torch.compile(
                    one_token_step,
                    fullgraph=True,
                    isolate_recompiles=True,
                    options={"guard_filter_fn": torch.compiler.skip_guard_on_all_nn_modules_unsafe},
                )
            with torch._inductor.config.patch(INDUCTOR_SETTINGS):
                return compiled(*args)

        return step

    def _packages_of(self, language_model: torch.nn.Module) -> StepPackages | None:
        """The folder of this model's step packages (a digest of its weights: a fraction of a second)."""
        if self._packages is None:
            return None
        return StepPackages.open(
            self._packages, language_model, INDUCTOR_SETTINGS, PACKAGED_CODE, self.speed.weights, "decode steps"
        )

    def _kept_weights(self) -> dict:
        """The int8 weights that the packages of an earlier start keep, by name: none of them is
        quantized again."""
        if self._step_packages is None or self.speed.weights != "int8":
            return {}
        steps = [("_step", 1)] + ([("_rows_step", self.speed.batch)] if self.speed.batch > 1 else [])
        names = [_package_name(attribute, rows) for attribute, rows in steps]
        return self._step_packages.kept_weights(names, STEP_MODEL_NAME)

    def warm_up(self, before: Callable[[], None] | None = None) -> threading.Thread | None:
        """Compile the one-token step, then the batch step, in the background (minutes each the first
        time, much less once Inductor's disk cache has them), after `before` (the model's own warm-up,
        e.g. its vision tower's compile). A reply asked meanwhile does not wait for them: it is decoded
        with the eager steps beside the compile, slower (the two share the cores) but at once.
        Returns the thread (None: nothing to compile)."""
        if not self.speed.compile:
            return None
        self._warming.set()
        thread = threading.Thread(target=self._compile, args=(before,), name="decode-compile", daemon=True)
        thread.start()
        return thread

    def load_packages(self) -> bool:
        """Take the steps from packages built by an earlier start, now (a second or two), so that the
        first question is decoded by them rather than beside the warm-up; whether they are."""
        if not self.speed.compile or self._packages is None:
            return False
        with torch.inference_mode(), self._lock:
            return self._use_packages(self._example_embeddings(), build=False)

    def _example_embeddings(self) -> torch.Tensor:
        """A four-token prompt's embeddings: what the steps are compiled or exported over."""
        return self.language_model.get_input_embeddings()(torch.tensor([[0, 1, 2, 3]], device=self.device))

    @property
    def warming(self) -> bool:
        """Whether the warm-up is compiling (replies are decoded eagerly beside it)."""
        return self._warming.is_set()

    def turn(self) -> contextlib.AbstractContextManager:
        """Model work outside the decoder (a VLM's vision tower) takes turns with the replies; while
        the warm-up compiles, it goes on beside it, as replies do."""
        return self._beside_lock if self.warming else self._lock

    def _compile(self, before: Callable[[], None] | None = None) -> None:
        # The compile is Python, holding the GIL; a reply beside it (eager steps: a thousand calls into
        # PyTorch a token, each giving the GIL up and waiting to take it back) waited up to the switch
        # interval at each, and decoded at 0.24 tokens/s. A shorter interval while it lasts hands it back sooner.
        switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(WARM_UP_SWITCH_INTERVAL_S)
        _lower_this_threads_priority(WARM_UP_NICENESS)
        try:
            self._compile_steps(before)
        finally:
            sys.setswitchinterval(switch_interval)
            self._warming.clear()
            give_back_freed_memory()  # the compile's working set

    def _compile_steps(self, before: Callable[[], None] | None) -> None:
        use_model_threads()  # the compiled loops are written for this many threads
        with torch.inference_mode():
            embeddings = self._example_embeddings()
            packaged = False
            if self._packages is not None:
                with self._lock:
                    packaged = self._use_packages(embeddings, build=False)
                packaged = packaged or self._use_packages(embeddings, build=True)
            if not packaged:
                with self._lock:
                    self._run_the_models_own(before)
                    self._compile_here(embeddings)
                return
            # Replies take the packaged steps from here on, beside the rest of the warm-up (the
            # vision tower's), which then takes turns with them no more than they do.
            self._warming.clear()
            self._run_the_models_own(before)

    def _run_the_models_own(self, before: Callable[[], None] | None) -> None:
        if before is None:
            return
        try:
            before()
        except Exception as error:  # noqa: BLE001 - the model's own warm-up: its steps still compile
            log.warning("the model's warm-up failed, going on with the decode steps: %s", error)

    def _use_packages(self, embeddings: torch.Tensor, build: bool) -> bool:
        """The one-token step and (batching) the batch step from their packages, built first where
        `build` says (during the warm-up, while replies go beside it); whether both are."""
        if not isinstance(self._step, _ByCacheLength):
            example = functools.partial(self._step_example, embeddings)
            if not self._use_package("decode step", "_step", self._one_token, 1, example, build):
                return False
        batching = self.speed.batch > 1 and self._rows_step is not self._rows_one_token
        if batching and not isinstance(self._rows_step, _ByCacheLength):
            example = functools.partial(self._rows_example, embeddings)
            if not self._use_package(
                "batch step", "_rows_step", self._rows_one_token, self.speed.batch, example, build
            ):
                return False
        # The eager model (a prompt's prefill) on the packages' copy of the weights; not while it runs.
        with self.exclusively():
            self._step_packages.lend_to(self.language_model, STEP_MODEL_NAME)
        return True

    def _compile_here(self, embeddings: torch.Tensor) -> None:
        """torch.compile the steps that are not packaged yet, by running them."""
        if not isinstance(self._step, _ByCacheLength):
            hooks = _Hooks(LogitsProcessorList(), StoppingCriteriaList(), None)
            one_reply = functools.partial(self._decode, Prompt.of(embeddings), 3, hooks, [], self._lane)
            self._try_compile("decode step", "_step", self._one_token, one_reply)
        if self.speed.batch > 1 and self._rows_step is not self._rows_one_token:
            if isinstance(self._rows_step, _ByCacheLength):
                return
            requests = [
                GenerationRequest(None, 3, LogitsProcessorList(), StoppingCriteriaList(), None) for _ in range(2)
            ]
            batch = functools.partial(self._decode_batch, [embeddings, embeddings[:, :2]], requests, eos_token_ids=[])
            self._try_compile("batch step", "_rows_step", self._rows_one_token, batch)

    def _use_package(
        self, what: str, attribute: str, eager_step: Callable, rows: int, example: Callable[[], tuple], build: bool
    ) -> bool:
        """Take the step held in `attribute`, for the first bucket's cache and `rows` rows, from its
        package; without one, build it first where `build` says (exported here, compiled in a process
        of its own: minutes, but none of this process's GIL or memory; loaded in half a second after).
        False where there is none (then it is compiled here, as without packages). A bigger cache's
        step is compiled when first needed, as before."""
        if self._step_packages is None:
            return False
        started = time.perf_counter()
        try:
            packaged = self._step_packages.get(
                _package_name(attribute, rows),
                functools.partial(self._export, eager_step, example) if build else None,
                exclusively=self.exclusively,
            )
        except Exception as error:  # noqa: BLE001 - the compile in this process does what it would have
            log.warning("no packaged %s (%s); compiling it here instead", what, error)
            return False
        if packaged is None:
            return False
        setattr(self, attribute, _ByCacheLength(packaged, SMALLEST_CACHE, rows, otherwise=getattr(self, attribute)))
        log.info("packaged %s ready in %.1f s", what, time.perf_counter() - started)
        return True

    def _export(self, step: Callable, example: Callable[[], tuple]) -> torch.export.ExportedProgram:
        """`step` exported with the arguments `example` makes (in a fork of this process, or here
        with no model work beside it: StepPackages.get)."""
        return export_step(self.language_model, step, example())

    @property
    def packages(self) -> Path | None:
        """Where compiled code is kept as packages (None: compiled at each start)."""
        return self._packages

    @contextlib.contextmanager
    def exclusively(self):
        """No model work beside this block, replies' or their vision's, whether beside the warm-up or
        not: they wait (seconds, once per model) rather than run into torch.export's tracing, which
        patches every module's call in all threads."""
        with self._beside_lock, self._lock:
            yield

    def _step_example(self, embeddings: torch.Tensor) -> tuple:
        """Arguments of the one-token step over the first bucket's cache, a prompt prefilled into it."""
        cache = self._cache_for(self._lane, SMALLEST_CACHE)
        self._prefill(embeddings, cache)
        self._lane.held[SMALLEST_CACHE] = None  # the example's positions are no conversation's
        prompt = embeddings.shape[1]
        return (
            torch.tensor([[0]], device=self.device),
            self._positions[prompt : prompt + 1],
            cache,
            self._seen(prompt),
        )

    def _rows_example(self, embeddings: torch.Tensor) -> tuple:
        """Arguments of the batch step (`speed.batch` rows, as a compiled batch always has) over the
        first bucket's cache, the same prompt prefilled into every row."""
        rows, prompt = self.speed.batch, embeddings.shape[1]
        cache = self._cache_for(self._lane, SMALLEST_CACHE, batch=rows)
        mask = torch.zeros((rows, SMALLEST_CACHE), dtype=torch.long, device=self.device)
        mask[:, : prompt + 1] = 1
        with self._eager_kernels():
            self.batch_model(
                inputs_embeds=embeddings.expand(rows, -1, -1).to(self.dtype),
                attention_mask=mask,
                position_ids=self._positions[:prompt].expand(rows, -1),
                cache_position=self._positions[:prompt],
                cache=cache,
                use_cache=True,
                logits_to_keep=1,
            )
        tokens = torch.zeros((rows, 1), dtype=torch.long, device=self.device)
        positions = torch.full((rows, 1), prompt, device=self.device)
        return (tokens, positions, self._positions[prompt : prompt + 1].clone(), mask, cache, self._seen(prompt))

    def _try_compile(self, what: str, attribute: str, eager, run) -> None:
        """Compile the step held in `attribute` by running it (`run`); if that fails, the eager step
        from then on, which costs speed only."""
        started = time.perf_counter()
        try:
            run()
        except Exception as error:  # noqa: BLE001 - costs speed only: the eager step answers
            log.warning("compiling the %s failed, continuing without it: %s", what, error)
            setattr(self, attribute, eager)
        else:
            log.info("%s compiled in %.1f s", what, time.perf_counter() - started)

    @torch.inference_mode()
    def generate(
        self,
        prompt: Prompt | torch.Tensor,
        max_new_tokens: int,
        logits_processor: LogitsProcessorList,
        stopping_criteria: StoppingCriteriaList,
        streamer: BaseStreamer | None,
        eos_token_ids: list[int],
    ) -> torch.Tensor:
        """Greedy over the processors' scores, like `generate(do_sample=False)`; returns the new ids.
        `prompt`: a Prompt, whose beginning may already be in the cache, or its embeddings [1, L, H]."""
        prompt = prompt if isinstance(prompt, Prompt) else Prompt.of(prompt)
        hooks = _Hooks(logits_processor, stopping_criteria, streamer)
        if self.warming:  # the compile holds the lock: decode beside it
            with self._beside_lock:
                return self._decode(prompt, max_new_tokens, hooks, eos_token_ids, self._beside_compile)
        with self._lock:
            self._beside_compile.caches.clear()  # the warm-up is done: their memory is free again
            self._beside_compile.held.clear()
            return self._decode(prompt, max_new_tokens, hooks, eos_token_ids, self._lane)

    @torch.inference_mode()
    def generate_batch(
        self, prompts: list[torch.Tensor], requests: list[GenerationRequest], eos_token_ids: list[int]
    ) -> None:
        """Greedy replies to several prompts [1, L_i, H] at once, each as `generate` would give it
        alone (up to float rounding: a batch multiplies matrices of another shape). Prompts whose
        slots would not fit the context together are answered one after another."""
        budget = max(request.max_new_tokens for request in requests)
        fits = max(prompt.shape[1] for prompt in prompts) + budget <= self.context_tokens
        if len(prompts) == 1 or not fits or self.warming:
            for prompt, r in zip(prompts, requests):
                self.generate(
                    prompt, r.max_new_tokens, r.logits_processor, r.stopping_criteria, r.streamer, eos_token_ids
                )  # an embeddings tensor: a batch's prompts are not compared with what the caches hold
            return
        with self._lock:
            self._decode_batch(prompts, requests, eos_token_ids)

    def _decode_batch(
        self, prompts: list[torch.Tensor], requests: list[GenerationRequest], eos_token_ids: list[int]
    ) -> None:
        replies = [
            _ReplyInProgress(_Hooks(r.logits_processor, r.stopping_criteria, r.streamer), r.max_new_tokens, self.device)
            for r in requests
        ]
        budget = max(request.max_new_tokens for request in requests)
        rows = max(len(prompts), self.speed.batch) if self.speed.compile else len(prompts)
        embeddings, prompt_mask = self._left_padded(prompts, rows)
        width = prompt_mask.shape[1]
        cache = self._cache_for(self._lane, width + budget, batch=rows)
        # One mask over every slot of the cache (a fixed shape for the compiled step): the prompts'
        # tokens and, as they come, the new ones; the left padding stays hidden.
        mask = prompt_mask.new_zeros(rows, cache.get_max_length())
        mask[:, :width] = prompt_mask
        with self._eager_kernels():
            output = self.batch_model(
                inputs_embeds=embeddings,
                attention_mask=mask,
                position_ids=(prompt_mask.cumsum(-1) - 1).clamp(min=0),
                cache_position=self._positions[:width],
                cache=cache,
                use_cache=True,
                logits_to_keep=1,
            )
        logits = output.logits[:, -1]
        lengths = prompt_mask.sum(-1, keepdim=True)
        # An ended reply's row (and an idle one) still moves with the batch, fed this token; what it
        # computes is ignored.
        filler = eos_token_ids[0] if eos_token_ids else 0
        for step in range(budget):
            tokens = [
                reply.take(logits[i : i + 1], eos_token_ids) if reply.active else filler
                for i, reply in enumerate(replies)
            ]
            if not any(reply.active for reply in replies):
                return
            token_ids = torch.tensor(tokens + [filler] * (rows - len(tokens)), device=self.device)[:, None]
            slot = width + step
            mask[:, slot] = 1
            logits = self._next_rows_logits(token_ids, lengths + step, slot, mask, cache)

    def _next_rows_logits(
        self, tokens: torch.Tensor, positions: torch.Tensor, slot: int, mask: torch.Tensor, cache: StaticCache
    ):
        arguments = (tokens, positions, self._positions[slot : slot + 1].clone(), mask, cache, self._seen(slot))
        return self._run_step("_rows_step", self._rows_one_token, arguments, "batch step")

    def _rows_one_token(self, tokens, positions, slot, mask, cache, seen) -> torch.Tensor:
        output = self.batch_model(
            input_ids=tokens,
            attention_mask=mask,
            position_ids=positions,
            cache_position=slot,
            cache=cache,
            use_cache=True,
            seen_positions=seen,
        )
        return output.logits[:, -1]

    def _left_padded(self, prompts: list[torch.Tensor], rows: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompts [1, L_i, H] -> one batch [rows, max L, H] padded on the left, and its mask [rows, max L].
        Rows past the prompts are idle: one zero token, so that their attention has something to read."""
        width = max(prompt.shape[1] for prompt in prompts)
        batch = torch.zeros((rows, width, prompts[0].shape[-1]), dtype=self.dtype, device=self.device)
        mask = torch.zeros((rows, width), dtype=torch.long, device=self.device)
        mask[len(prompts) :, -1] = 1
        for i, prompt in enumerate(prompts):
            batch[i, width - prompt.shape[1] :] = prompt[0].to(self.dtype)
            mask[i, width - prompt.shape[1] :] = 1
        return batch, mask

    def _decode(
        self, prompt: Prompt, max_new_tokens: int, hooks: _Hooks, eos_token_ids: list[int], lane: _Lane
    ) -> torch.Tensor:
        end = prompt.length + max_new_tokens
        bucket = self._bucket(end)
        start = _reusable(lane.held.get(bucket), prompt.key)
        lane.held[bucket] = None  # until this reply's positions are all written
        cache = self._cache_for(lane, end, reset=start == 0)
        start = self.reused = start if _rewind(cache, start) else 0
        reply = _ReplyInProgress(hooks, max_new_tokens, self.device)
        logits = self._prefill(prompt.embed(start).to(self.dtype), cache, start)
        for position in range(prompt.length, end):
            token = reply.take(logits, eos_token_ids)
            if not reply.active:
                break
            token_ids = torch.tensor([[token]], device=self.device)
            logits = self._next_logits(token_ids, position, cache, lane.eager)
        if prompt.key is not None:  # the cache holds the prompt and every token but the last (never stepped)
            lane.held[bucket] = torch.cat([prompt.key, reply.generated[0, :-1].to(prompt.key.device)])
        return reply.generated

    def _next_logits(self, token: torch.Tensor, position: int, cache: StaticCache, eager: bool) -> torch.Tensor:
        arguments = (token, torch.tensor([position], device=self.device), cache, self._seen(position))
        if eager:
            with self._eager_kernels():
                return self._one_token(*arguments)
        return self._run_step("_step", self._one_token, arguments, "decode step")

    def _seen(self, position: int) -> torch.Tensor:
        """The positions a token at `position` attends to: it and all before it; one dynamic length
        for torch.compile, so that every length is one graph, not one each."""
        seen = self._positions[: position + 1]
        torch._dynamo.mark_dynamic(seen, 0)
        return seen

    def _run_step(self, attribute: str, eager, arguments: tuple, what: str) -> torch.Tensor:
        """The step held in `attribute`; if the compiled one fails (a bigger cache bucket is a new
        graph, which may not compile), the eager one from then on, which costs speed, not the reply:
        this position is written again, so the cache stays whole."""
        step = getattr(self, attribute)
        if step != eager:
            try:
                return step(*arguments)
            except Exception as error:  # noqa: BLE001 - costs speed only: the eager step answers
                log.warning("the compiled %s failed, continuing without it: %s", what, error)
                setattr(self, attribute, eager)
        with self._eager_kernels():
            return eager(*arguments)

    def _prefill(self, inputs_embeds: torch.Tensor, cache: StaticCache, start: int = 0) -> torch.Tensor:
        """The embeddings of positions `start`... into the cache; the last one's logits. Eager: a
        compiled step of 16 positions saved a fifth at most on a few new tokens and lost beyond 16
        (bench/results/prefill.md), which did not pay for its compile."""
        positions = torch.arange(start, start + inputs_embeds.shape[1], device=self.device)
        with self._eager_kernels():
            output = self.language_model(
                inputs_embeds=inputs_embeds,
                cache_position=positions,
                position_ids=positions[None],
                cache=cache,
                use_cache=True,
                logits_to_keep=1,
            )
        return output.logits[:, -1]

    def _one_token(
        self, token: torch.Tensor, position: torch.Tensor, cache: StaticCache, seen: torch.Tensor
    ) -> torch.Tensor:
        output = self.language_model(
            input_ids=token, cache_position=position, cache=cache, use_cache=True, seen_positions=seen
        )
        return output.logits[:, -1]

    def _bucket(self, tokens: int) -> int:
        """The cache size for `tokens`: powers of two from SMALLEST_CACHE, up to the context."""
        size = SMALLEST_CACHE
        while size < tokens:
            size *= 2
        return min(size, self.context_tokens)

    def _cache_for(self, lane: _Lane, tokens: int, batch: int = 1, reset: bool = True) -> StaticCache:
        size = self._bucket(tokens)
        key = size if batch == 1 else (size, batch)  # a cache's batch size is fixed when it is first filled
        if key not in lane.caches:
            lane.caches[key] = StaticCache(config=self.language_model.config, max_cache_len=size)  # placed on first use
        cache = lane.caches[key]
        if reset:
            cache.reset()
        return cache


class _ByCacheLength:
    """A packaged step where its call has the shapes it was built for (`rows` rows, a cache of
    `length` positions, not filled to its last slot: export's range); `otherwise` elsewhere."""

    def __init__(self, packaged: Callable, length: int, rows: int, otherwise: Callable):
        self.packaged, self.length, self.rows, self.otherwise = packaged, length, rows, otherwise

    def __call__(self, *arguments) -> torch.Tensor:
        cache = next(argument for argument in arguments if isinstance(argument, StaticCache))
        seen, rows = arguments[-1], arguments[0].shape[0]
        fits = cache.layers[0].max_cache_len == self.length and seen.shape[0] < self.length and rows == self.rows
        return (self.packaged if fits else self.otherwise)(*arguments)


def _package_name(attribute: str, rows: int) -> str:
    """The package of the step held in `attribute`, for `rows` rows and the first bucket's cache."""
    return f"{attribute.strip('_')}-{rows}x{SMALLEST_CACHE}"


def _lower_this_threads_priority(niceness: int) -> None:
    """Make the calling thread `niceness` nicer, where the system sets it per thread (Linux); elsewhere
    the whole process would slow, so nothing is changed."""
    if sys.platform != "linux":
        return
    thread = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, thread, min(19, os.getpriority(os.PRIO_PROCESS, thread) + niceness))
    except OSError as error:  # e.g. a sandbox that forbids it: the warm-up runs as before
        log.debug("could not lower the warm-up's priority: %s", error)


def _reusable(held: torch.Tensor | None, key: torch.Tensor | None) -> int:
    """Positions at the start of `key` that a cache holding `held` has already; one at least is left
    to prefill, whose logits give the first token."""
    if held is None or key is None:
        return 0
    length = min(held.shape[0], key.shape[0] - 1)
    parted = (held[:length] != key[:length]).nonzero()
    return int(parted[0]) if parted.numel() else length


def _rewind(cache: StaticCache, start: int) -> bool:
    """Make `cache` hold its first `start` positions only (the next write goes to `start`); False where
    it cannot (then it must be reset)."""
    if start == 0:
        return True
    held = int(cache.get_seq_length())
    if held > start:
        cache.crop(start - held)  # negative: positions to drop from the end
    return int(cache.get_seq_length()) == start
