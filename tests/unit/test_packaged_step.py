"""The decode step compiled ahead of time into a package (models/packaged_step.py): it decodes as the
eager step, writes the cache in place as the eager step does, and a package loaded again from disk (a
later start) answers the same."""

import contextlib
import copy
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import torch
from PIL import Image as PILImage
from torchao.quantization import Int8Tensor, Int8WeightOnlyConfig, quantize_
from transformers import StaticCache

from assistant.conversation import Conversation, Image, Message
from assistant.engine import Engine
from assistant.models import fast_decode, forked, packaged_step
from assistant.models.fast_decode import INDUCTOR_SETTINGS, DecodeSpeed, FastDecoder, convert_weights
from assistant.models.fast_vision import vision_tower
from assistant.models.loader import ensure_tiny_model, load_pretrained
from assistant.models.packaged_step import PackagedStep, StepPackages, build_package, cache_tensors, export_step
from assistant.sampling import GenerationOptions

# Autotuning the GEMMs would time every choice for minutes; these tests check what the step computes.
SETTINGS = dict(INDUCTOR_SETTINGS, max_autotune=False)
PROMPT = [[1, 2, 3, 4]]
GREEDY = GenerationOptions(temperature=0.0, max_new_tokens=12)
QUESTIONS = [
    Conversation("be brief").add(
        Message.user("What colour is this photo?", [Image(PILImage.new("RGB", (40, 32), "red"))])
    ),
    Conversation().add(Message.user("Say something long.")),
]


@pytest.fixture(scope="module")
def decoder(cache_dir):
    directory = str(ensure_tiny_model("smolvlm", cache_dir))
    model = load_pretrained(directory, torch.device("cpu"), torch.float32, speed=DecodeSpeed("float32", True, 1))
    return model.decoder


def prefilled(decoder, length: int = 1024) -> StaticCache:
    cache = StaticCache(config=decoder.language_model.config, max_cache_len=length)
    with torch.inference_mode():
        decoder._prefill(decoder.language_model.get_input_embeddings()(torch.tensor(PROMPT)), cache)
    return cache


def steps(step, cache, positions) -> list[torch.Tensor]:
    with torch.inference_mode():
        return [
            step(torch.tensor([[position * 7 % 50]]), torch.tensor([position]), cache, torch.empty(position + 1))
            for position in positions
        ]


@pytest.mark.slow
def test_a_packaged_step_decodes_as_the_eager_step_and_survives_a_restart(decoder, tmp_path, monkeypatch):
    first = len(PROMPT[0])
    example = (torch.tensor([[5]]), torch.tensor([first]), prefilled(decoder), torch.empty(first + 1))
    program = export_step(decoder.language_model, decoder._one_token, example)
    path = build_package(program, tmp_path / "step.so", SETTINGS)
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == ["step.constants.json", "step.so", "step.weights.pt"], "whole, no scratch left"

    temporary = tmp_path / "tmp"
    temporary.mkdir()
    monkeypatch.setenv("TMPDIR", str(temporary))
    monkeypatch.setattr(tempfile, "tempdir", None)
    packaged = PackagedStep.load(path)
    assert not list(temporary.iterdir()), "loaded in place: nothing unpacked (300 MB and more a start otherwise)"
    eager_cache, packaged_cache = prefilled(decoder), prefilled(decoder)
    expected = steps(decoder._one_token, eager_cache, range(first, first + 8))
    answered = steps(packaged, packaged_cache, range(first, first + 8))
    for want, got in zip(expected, answered, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert [int(logits.argmax()) for logits in answered] == [int(logits.argmax()) for logits in expected]
    for want, got in zip(cache_tensors(eager_cache), cache_tensors(packaged_cache), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)  # written in place, as the eager step

    later = steps(PackagedStep.load(path), packaged_cache, [first + 8])  # loaded afresh: a later start
    torch.testing.assert_close(later[0], steps(decoder._one_token, eager_cache, [first + 8])[0], rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_packages_of_the_same_weights_share_one_copy_of_them_and_answer_as_each_alone(decoder, tmp_path, capfd):
    first = len(PROMPT[0])
    example = (torch.tensor([[5]]), torch.tensor([first]), prefilled(decoder), torch.empty(first + 1))
    program = export_step(decoder.language_model, decoder._one_token, example)
    one, other = (build_package(program, tmp_path / f"{name}.so", SETTINGS) for name in ("one", "other"))
    shared = packaged_step.SharedConstants()
    loaded_first, loaded_next = PackagedStep.load(one, shared), PackagedStep.load(other, shared)
    alone = PackagedStep.load(other)

    def addresses(step) -> set[int]:
        return {tensor.data_ptr() for tensor in constants(step).values()}

    assert addresses(loaded_first) and addresses(loaded_next) <= addresses(loaded_first), "no copy of its own"
    assert not addresses(alone) & addresses(loaded_first)
    assert "constant_folding" not in capfd.readouterr().err, "the runtime's warning on sharing is not shown"
    caches = [prefilled(decoder) for _ in range(3)]
    loaded = (loaded_first, loaded_next, alone)
    runs = [steps(step, cache, range(first, first + 6)) for step, cache in zip(loaded, caches, strict=True)]
    for shared_logits, own_logits in zip(runs[1], runs[2], strict=True):
        torch.testing.assert_close(shared_logits, own_logits, rtol=0, atol=0)
    for shared_logits, first_logits in zip(runs[1], runs[0], strict=True):
        torch.testing.assert_close(shared_logits, first_logits, rtol=0, atol=0)


@pytest.mark.slow
def test_a_package_sharing_some_weights_reads_only_the_others_and_answers_as_alone(decoder, tmp_path):
    first = len(PROMPT[0])
    example = (torch.tensor([[5]]), torch.tensor([first]), prefilled(decoder), torch.empty(first + 1))
    one = build_package(export_step(decoder.language_model, decoder._one_token, example), tmp_path / "one.so", SETTINGS)
    norm = decoder.language_model.model.norm.weight
    with torch.no_grad():  # another build's choices: one constant of its own, the rest as the first's
        norm.add_(0.5)
    try:  # (the exported program holds the model's own tensors; built as a build process does, with grad mode on)
        program = export_step(decoder.language_model, decoder._one_token, example)
        other = build_package(program, tmp_path / "other.so", SETTINGS)
    finally:
        with torch.no_grad():
            norm.sub_(0.5)
    shared = packaged_step.SharedConstants()
    loaded_first, loaded_next = PackagedStep.load(one, shared), PackagedStep.load(other, shared)

    first_addresses = {tensor.data_ptr() for tensor in constants(loaded_first).values()}
    own = [name for name, tensor in constants(loaded_next).items() if tensor.data_ptr() not in first_addresses]
    assert own == ["language_model.model.norm.weight"]
    positions = range(first, first + 4)
    answered = steps(loaded_next, prefilled(decoder), positions)
    alone = steps(PackagedStep.load(other), prefilled(decoder), positions)
    for got, want in zip(answered, alone, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def constants(step: PackagedStep) -> dict[str, torch.Tensor]:
    """A loaded package's constants, by their names in the model."""
    return step._runner.extract_constants_map(False)


@pytest.mark.slow
def test_loading_a_package_holds_its_weights_once_even_for_a_moment(tmp_path):
    """A package's weights are read into memory of the process once: not also mapped from its file
    beside the copy (the warm start's peak was the step packages' weights twice)."""
    layer = torch.nn.Linear(4096, 4096, bias=False)  # 64 MiB of weights
    program = torch.export.export(layer, (torch.ones(1, 4096),))
    library = build_package(program, tmp_path / "layer.so", {})
    assert library.stat().st_size < 16 << 20, "the library is code: its weights are in a file beside it"

    Path("/proc/self/clear_refs").write_text("5")  # the peak resident memory starts again from here
    before = _memory_kib("VmRSS")
    package = packaged_step.PackagedCall.load(library)
    grew = _memory_kib("VmHWM") - before
    assert 64 << 10 <= grew < 80 << 10, f"loading grew the process by {grew} KiB at its peak, for 64 MiB of weights"
    x = torch.randn(1, 4096)
    torch.testing.assert_close(package(x), layer(x), rtol=1e-4, atol=1e-4)


def _memory_kib(field: str) -> int:
    status = Path("/proc/self/status").read_text().splitlines()
    return next(int(line.split()[1]) for line in status if line.startswith(f"{field}:"))


def test_int8_weights_keep_their_scales_in_the_activations_type_and_answer_the_same():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.Linear(32, 16))
    with_float32_scales = copy.deepcopy(model).to(torch.bfloat16)
    quantize_(with_float32_scales, Int8WeightOnlyConfig())
    converted = convert_weights(model, "int8")
    assert {layer.weight.scale.dtype for layer in with_float32_scales} == {torch.float32}
    assert {layer.weight.scale.dtype for layer in converted} == {torch.bfloat16}
    inputs = torch.randn(3, 64, dtype=torch.bfloat16)
    with torch.inference_mode():
        torch.testing.assert_close(converted(inputs), with_float32_scales(inputs), rtol=0, atol=0)


def eager_and_packaged(cache_dir, packages, weights: str = "float32"):
    """The tiny model twice: eagerly decoded, and with a decoder whose warm-up packages its step in
    `packages` (its vision tower left eager: that compile is not what is tested here)."""
    directory = str(ensure_tiny_model("smolvlm", cache_dir))
    eager = load_pretrained(directory, torch.device("cpu"), torch.float32, speed=DecodeSpeed(weights, False, 1))
    return eager, packaged(cache_dir, packages, weights)


def packaged(cache_dir, packages, weights: str = "float32"):
    """The tiny model with a decoder whose steps are packaged in `packages` (eager_and_packaged)."""
    directory = str(ensure_tiny_model("smolvlm", cache_dir))
    # Loaded as the fast loop loads it (int8: the VLM in bfloat16), the steps not yet converted or compiled.
    loading = DecodeSpeed("float32" if weights == "float32" else "bfloat16", False, 1)
    model = load_pretrained(directory, torch.device("cpu"), torch.float32, speed=loading)
    model.decoder = FastDecoder(model.decoder.language_model, DecodeSpeed(weights, True, 1), packages)
    model._warm_vision = lambda: None
    return model


def answers(model) -> list[str]:
    engine = Engine(model)
    try:
        if engine.warming_up is not None:
            engine.warming_up.join(300)
        return [engine.reply(conversation, GREEDY).text() for conversation in QUESTIONS]
    finally:
        engine.close()


@pytest.mark.slow
def test_the_warm_up_builds_the_package_once_and_a_restart_only_loads_it(cache_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(fast_decode, "INDUCTOR_SETTINGS", SETTINGS)
    eager, model = eager_and_packaged(cache_dir, tmp_path)
    expected = answers(eager)
    assert answers(model) == expected
    assert isinstance(model.decoder._step, fast_decode._ByCacheLength), "the step came from the package"
    assert "compiled" not in model.details, "built by this start, not loaded"
    built = list(tmp_path.rglob("step-1x1024.so"))
    assert len(built) == 1 and not list(tmp_path.rglob("export-*")), "one package, and no leftovers"

    def build_again(*args):
        raise AssertionError("built again")

    monkeypatch.setattr(StepPackages, "_build_apart", build_again)
    _, restarted = eager_and_packaged(cache_dir, tmp_path)
    assert restarted.decoder.load_packages(), "built by the first start: loaded before any question"
    assert isinstance(restarted.decoder._step, fast_decode._ByCacheLength)
    assert answers(restarted) == expected
    assert "earlier start" in restarted.details["compiled"], "what the start prints: loaded, not compiling"


@pytest.mark.slow
def test_a_question_asked_while_a_step_is_exported_is_answered_beside_it_and_int8_steps_are_packaged(
    cache_dir, tmp_path, monkeypatch
):
    """torch.export traces for seconds, patching every module's call in all threads: in the app's
    process a reply beside it broke (HTTP 500), and then waited for it (a cold start's first answer
    after 24-27 s). It runs in a fork of the process: here the fork's export goes on only once the
    questions asked after it began are answered. And int8 weights could not be digested inside the
    warm-up's inference mode, so their steps were never packaged."""
    monkeypatch.setattr(fast_decode, "INDUCTOR_SETTINGS", SETTINGS)
    eager, model = eager_and_packaged(cache_dir, tmp_path / "packages", weights="int8")
    exporting, answered, waited = tmp_path / "exporting", tmp_path / "answered", tmp_path / "waited"
    real_export = fast_decode.export_step

    def export_once_answered(*arguments):  # in the fork
        exporting.write_text(str(os.getpid()))
        deadline = time.monotonic() + 120
        while not answered.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        waited.write_text("answered" if answered.exists() else "not answered")
        return real_export(*arguments)

    monkeypatch.setattr(fast_decode, "export_step", export_once_answered)
    engine = Engine(model)
    try:
        deadline = time.monotonic() + 120
        while not exporting.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert exporting.exists(), "the warm-up exports the step"
        replies = [engine.reply(conversation, GREEDY).text() for conversation in QUESTIONS]
        answered.touch()
        engine.warming_up.join(300)
    finally:
        engine.close()
    assert int(exporting.read_text()) != os.getpid(), "exported in another process"
    assert waited.read_text() == "answered", "the questions were answered while the export was under way"
    assert replies == answers(eager) and all(replies)
    assert isinstance(model.decoder._step, fast_decode._ByCacheLength), "the int8 step came from its package"
    language_model = model.decoder.language_model
    assert weight_bytes(language_model, lent=False) == 0, "the eager model runs on the package's copy of its weights"
    assert answers(model) == replies, "and answers as before (its prompts are prefilled eagerly)"
    with weights_quantized() as quantized:
        restarted = packaged(cache_dir, tmp_path / "packages", weights="int8")
    assert quantized == [], "a later start takes the int8 weights from the package, quantizing none again"
    language_model = restarted.decoder.language_model
    assert weight_bytes(language_model, lent=False) == 0, "on the package's weights from the load on, all of them"
    assert restarted.decoder.load_packages()
    assert answers(restarted) == replies


@pytest.mark.slow
def test_where_there_is_no_fork_a_question_asked_while_a_step_is_exported_waits_for_it(
    cache_dir, tmp_path, monkeypatch
):
    """Exported in the app's process (no fork: not Linux), no model work runs beside the export."""
    monkeypatch.setattr(fast_decode, "INDUCTOR_SETTINGS", SETTINGS)
    monkeypatch.setattr(forked, "FORK_WORKS", False)
    eager, model = eager_and_packaged(cache_dir, tmp_path)
    exporting, beside_the_export = threading.Event(), []
    real_export = fast_decode.export_step

    def slow_export(*arguments):
        exporting.set()
        time.sleep(1)  # a question is asked meanwhile
        try:
            return real_export(*arguments)
        finally:
            exporting.clear()

    def note(module, *_):
        if exporting.is_set() and threading.current_thread().name != "decode-compile":
            beside_the_export.append(type(module).__name__)

    for module in (model.decoder.language_model, vision_tower(model.model)):
        module.register_forward_pre_hook(note)
    monkeypatch.setattr(fast_decode, "export_step", slow_export)
    engine = Engine(model)
    try:
        assert exporting.wait(120), "the warm-up exports the step"
        replies = [engine.reply(conversation, GREEDY).text() for conversation in QUESTIONS]
        engine.warming_up.join(300)
    finally:
        engine.close()
    assert beside_the_export == [], "no model work ran beside the export"
    assert replies == answers(eager) and all(replies)
    assert isinstance(model.decoder._step, fast_decode._ByCacheLength), "the step came from its package"


@contextlib.contextmanager
def weights_quantized():
    """The shapes of the weights torchao quantizes inside the block (its one-row templates left out)."""
    quantized = []
    from_hp = Int8Tensor.from_hp.__func__

    def noted(cls, weight, *args, **kwargs):
        if weight.shape[0] > 1:
            quantized.append(tuple(weight.shape))
        return from_hp(cls, weight, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Int8Tensor, "from_hp", classmethod(noted))
        yield quantized


def weight_bytes(module: torch.nn.Module, lent: bool) -> int:
    """Bytes of `module`'s weights (a quantized weight's parts) that are (`lent`) or are not constants
    of a package loaded (the memory it lent them: SharedConstants.lend_to)."""
    package = getattr(module, "lent_weights_from", None)
    total = 0
    for parameter in module.parameters():
        parts = [getattr(parameter, name) for name in getattr(parameter, "tensor_data_names", ())] or [parameter.data]
        total += sum(part.nbytes for part in parts if (package is not None and package.holds(part)) == lent)
    return total


def test_a_package_that_cannot_be_built_leaves_the_step_compiled_here(cache_dir, tmp_path, monkeypatch, caplog):
    def fail(*args):
        raise RuntimeError("no compiler")

    monkeypatch.setattr(StepPackages, "_build_apart", fail)
    eager, model = eager_and_packaged(cache_dir, tmp_path)
    compiled = []
    monkeypatch.setattr(model.decoder, "_try_compile", lambda what, *args: compiled.append(what))
    assert answers(model) == answers(eager)
    assert "decode step" in compiled and "no packaged decode step (no compiler)" in caplog.text


def test_packages_are_told_apart_by_the_weights_they_were_built_from_and_the_recipe(cache_dir, tmp_path):
    """Named by the weights before quantization (a later start takes the int8 ones from the packages)
    and by how they are quantized."""
    directory = str(ensure_tiny_model("smolvlm", cache_dir))
    model = load_pretrained(directory, torch.device("cpu"), torch.float32, speed=DecodeSpeed("bfloat16", False, 1))
    language_model = model.decoder.language_model

    def folder(recipe="int8"):
        return StepPackages(tmp_path, language_model, SETTINGS, fast_decode.PACKAGED_CODE, recipe).folder

    before = folder()
    assert folder() == before, "the same model, the same packages"
    with torch.inference_mode():  # where the warm-up asks
        assert folder() == before
    assert folder("bfloat16") != before, "the same weights quantized otherwise"
    with torch.no_grad():
        language_model.model.layers[0].mlp.up_proj.weight[0, 0] += 1  # one weight
    assert folder() != before


def test_tidying_drops_what_ended_builds_left_and_all_but_the_folders_used_last(tmp_path, monkeypatch):
    monkeypatch.setattr(packaged_step, "KEEP_FOLDERS", 3)
    hour_ago = time.time() - packaged_step.STALE_S - 60
    models = [tmp_path / f"model-{number}" for number in range(5)]  # model-0 used last, model-4 first
    for age, folder in enumerate(models):
        (folder / "export-left").mkdir(parents=True)
        for path in (folder / packaged_step.USED, folder / "step-1x1024.so"):
            path.touch()
        for path in (folder / "export-left", folder / packaged_step.USED):
            os.utime(path, (hour_ago - age, hour_ago - age))
    building = models[0] / f"export-{os.getpid()}-now"
    building.mkdir()  # a build going on (this process's)
    packaged_step.tidy(tmp_path, keep=models[4])
    kept = sorted(folder.name for folder in tmp_path.iterdir())
    assert kept == ["model-0", "model-1", "model-4"], "the two used last, and the one in use now"
    assert building.is_dir() and not (models[0] / "export-left").exists()
    assert (models[4] / "step-1x1024.so").is_file()


def test_a_start_drops_what_a_build_stopped_midway_left(tmp_path, decoder):
    """Ctrl-C or a kill during the first start's build left its scratch (the exported program and the
    compiled archive, 0.5 GB at SmolVLM2-256M's size) for good: only a later build tidied, and a start
    that finds its packages builds nothing."""
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    left = tmp_path / "some-model" / f"export-{int(ended.stdout)}-x1"
    going_on = tmp_path / "some-model" / f"export-{os.getpid()}-x2"
    for scratch in (left, going_on):
        scratch.mkdir(parents=True)
        (scratch / "program.pt2").write_bytes(b"exported")
    StepPackages(tmp_path, decoder.language_model, SETTINGS, fast_decode.PACKAGED_CODE, "float32")
    assert not left.exists(), "the ended process's scratch is dropped at the start"
    assert (going_on / "program.pt2").is_file(), "a running build's is kept"


def test_a_build_ends_when_the_process_that_started_it_does(tmp_path):
    builder = "import os, time\nfrom assistant.models.forked import end_with\nend_with(os.getppid())\ntime.sleep(120)\n"
    starter = f"import subprocess, sys; print(subprocess.Popen([sys.executable, '-c', {builder!r}]).pid)"
    pid = int(subprocess.run([sys.executable, "-c", starter], capture_output=True, text=True, check=True).stdout)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and _running(pid):
        time.sleep(0.2)
    assert not _running(pid), "the build went on after its app ended"


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.mark.slow
def test_the_vision_tower_is_packaged_once_and_answers_as_the_eager_tower_for_any_number_of_views(
    cache_dir, tmp_path, monkeypatch
):
    directory = str(ensure_tiny_model("smolvlm", cache_dir))

    def loaded():
        """The tiny model without its view cache (each merge runs the tower), cutting photos in views."""
        speed = DecodeSpeed("int8", True, 1)
        model = load_pretrained(
            directory, torch.device("cpu"), torch.float32, speed=speed, cache_dir=tmp_path, image_cache_bytes=0
        )
        model.processor.image_processor.size = {"longest_edge": 96}  # `high` detail: up to 3 x 3 views + 1
        return model

    noise = PILImage.fromarray(torch.randint(0, 256, (200, 300, 3), dtype=torch.uint8).numpy())
    photo = Conversation().add(Message.user("What is this?", [Image(noise, detail="high")]))
    model = loaded()
    encoded = model.encode(photo)
    assert encoded.inputs["pixel_values"].shape[1] > 1, "a photo of several views"
    eager = model._merge(encoded)
    assert not model._package_vision(build=False), "none built yet"
    model._warm_vision()
    quickened = vision_tower(model.model).quickened
    assert quickened.packaged is not None and model._seconds_per_view > 0
    packaged = model._merge(encoded)
    agreement = torch.nn.functional.cosine_similarity(packaged.float(), eager.float(), dim=-1)
    assert agreement.min() > 0.99, f"features as the eager tower's (int8 both): {agreement.min():.4f}"
    assert quickened._compiled is None, "nothing compiled in this process"

    def build_again(*args):
        raise AssertionError("built again")

    monkeypatch.setattr(StepPackages, "_build_apart", build_again)
    with weights_quantized() as quantized:
        restarted = loaded()
    language_model = restarted.decoder.language_model  # not packaged in this test: quantized at each start
    expected = [tuple(layer.weight.shape) for layer in language_model.modules() if isinstance(layer, torch.nn.Linear)]
    assert sorted(quantized) == sorted(expected), "a later start takes the tower's int8 weights from its package"
    later, eager_runs = vision_tower(restarted.model).quickened, []
    eager_forward = later.eager
    later.eager = lambda *args, **kwargs: eager_runs.append(1) or eager_forward(*args, **kwargs)
    assert restarted._package_vision(build=False), "a later start loads it (before any question)"
    assert later.packaged is not None and not eager_runs, "running no view eagerly"
    assert weight_bytes(vision_tower(restarted.model), lent=False) == 0, "one copy: the eager tower's is the package's"
    later.packaged, packaged_tower = None, later.packaged  # a call the package does not fit: the eager tower
    torch.testing.assert_close(restarted._merge(encoded), eager, rtol=0, atol=0)
    later.packaged = packaged_tower
    merges = []
    merge = restarted._merge
    restarted._merge = lambda encoded: merges.append(1) or merge(encoded)
    restarted._warm_vision()
    assert restarted._seconds_per_view == model._seconds_per_view and not merges, "the view's time was kept"
    restarted._merge = merge
    torch.testing.assert_close(restarted._merge(restarted.encode(photo)), packaged, rtol=0, atol=0)
