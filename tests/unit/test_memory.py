"""Freed memory goes back to the system (models/memory.py), where glibc keeps it otherwise."""

import ctypes
import ctypes.util
import mmap
import os
import sys

import pytest
import torch

from assistant.models.memory import give_back_freed_memory

MiB = 2**20


def resident_mib() -> float:
    with open("/proc/self/status") as status:
        fields = dict(line.split(":", 1) for line in status)
    return int(fields["RssAnon"].split()[0]) / 1024


@pytest.mark.skipif(sys.platform != "linux" or ctypes.util.find_library("c") is None, reason="glibc's malloc")
def test_memory_freed_by_torch_and_kept_by_malloc_is_given_back():
    # Freeing one large block raises glibc's threshold for blocks of their own: the megabyte tensors
    # after it come from the heap, which keeps them once freed (as loading a model leaves it).
    torch.empty(64 * MiB, dtype=torch.uint8).fill_(1)  # freed at once
    tensors = [torch.empty(MiB, dtype=torch.uint8).fill_(1) for _ in range(300)]
    last = tensors.pop()  # the heap's top stays in use, so only a trim gives the rest back
    del tensors
    kept = resident_mib()
    assert give_back_freed_memory()
    assert resident_mib() < kept - 200, f"{kept:.0f} MiB resident before, {resident_mib():.0f} after"
    del last


def mapped(path) -> bool:
    with open("/proc/self/maps") as maps:
        return any(line.rstrip().endswith(str(path)) for line in maps)


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/self/maps")
def test_weights_left_in_the_checkpoints_mapping_get_memory_of_their_own_and_the_mapping_closes(tmp_path):
    from transformers import AutoModelForCausalLM, LlamaConfig

    from assistant.models.memory import own_mapped_weights

    config = LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        tie_word_embeddings=True,
    )  # fmt: skip
    AutoModelForCausalLM.from_config(config).to(torch.bfloat16).save_pretrained(tmp_path)
    model = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.bfloat16)
    checkpoint = (tmp_path / "model.safetensors").resolve()
    assert mapped(checkpoint), "transformers leaves unconverted weights in the file's mapping"
    tokens = torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        before = model(tokens).logits

    assert own_mapped_weights(model) > 0
    assert not mapped(checkpoint)
    assert model.lm_head.weight is model.get_input_embeddings().weight, "tied weights stay tied"
    with torch.no_grad():
        torch.testing.assert_close(model(tokens).logits, before, rtol=0, atol=0)
    assert own_mapped_weights(model) == 0, "nothing left to copy"


def resident_in_mapping_mib(path) -> float:
    resident, inside = 0, False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            fields = line.split()
            if "-" in fields[0] and len(fields[0]) > 8 and ":" not in fields[0]:
                inside = len(fields) > 5 and fields[5] == str(path)
            elif inside and fields[0] == "Rss:":
                resident += int(fields[1])
    return resident / 1024


@pytest.mark.skipif(sys.platform != "linux", reason="Linux's madvise")
def test_pages_of_a_mapped_file_read_once_are_dropped_and_read_again_when_needed(tmp_path):

    from assistant.models.memory import page_out_files

    path = tmp_path / "weights.wrapper.so"
    with open(path, "wb") as file:
        file.write(bytes(range(256)) * (64 * MiB // 256))
        os.fsync(file.fileno())  # written back, as a library built by an earlier start is
    with open(path, "rb") as file, mmap.mmap(file.fileno(), 0, prot=mmap.PROT_READ) as mapping:
        checksum = sum(mapping[offset] for offset in range(0, len(mapping), 4096))  # every page read
        assert resident_in_mapping_mib(path) > 60
        assert page_out_files(str(path).__eq__) >= 64 * MiB
        assert resident_in_mapping_mib(path) < 8, "the pages were dropped"
        assert cached_mib(path) > 60, "from this process only: the next start reads them from memory, not the disk"
        assert sum(mapping[offset] for offset in range(0, len(mapping), 4096)) == checksum, "and read back"


@pytest.mark.skipif(sys.platform != "linux", reason="Linux's madvise")
def test_pages_written_to_in_a_file_mapping_are_kept(tmp_path):
    """A library's relocated data: copied on write, read-only since. Dropped, it would be read back
    from the file as it was before the write."""
    from assistant.models.memory import page_out_files

    path = tmp_path / "library.so"
    path.write_bytes(bytes(16 * MiB))
    size = 16 * MiB
    with open(path, "rb") as file:
        address = LIBC.mmap(None, size, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_PRIVATE, file.fileno(), 0)
    try:
        ctypes.memmove(address, b"moved", 5)
        assert LIBC.mprotect(ctypes.c_void_p(address), ctypes.c_size_t(size), mmap.PROT_READ) == 0
        page_out_files(str(path).__eq__)
        assert ctypes.string_at(address, 5) == b"moved"
    finally:
        LIBC.munmap(ctypes.c_void_p(address), ctypes.c_size_t(size))


def cached_mib(path) -> float:
    """MiB of `path` in the system's page cache (mincore over a mapping of it of our own)."""
    size = path.stat().st_size
    with open(path, "rb") as file:
        address = LIBC.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, file.fileno(), 0)
    try:
        pages = (ctypes.c_ubyte * ((size + mmap.PAGESIZE - 1) // mmap.PAGESIZE))()
        assert LIBC.mincore(ctypes.c_void_p(address), ctypes.c_size_t(size), pages) == 0
        return sum(page & 1 for page in pages) * mmap.PAGESIZE / MiB
    finally:
        LIBC.munmap(ctypes.c_void_p(address), ctypes.c_size_t(size))


def _libc():
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    return libc


LIBC = _libc() if sys.platform == "linux" else None


def test_a_cpu_run_gives_back_the_pages_of_the_gpu_libraries_only(monkeypatch):
    from assistant.models import memory

    chosen = []
    monkeypatch.setattr(memory, "page_out_files", lambda matches: chosen.append(matches) or 0)
    memory.page_out_gpu_libraries()
    (matches,) = chosen
    site = "/venv/lib/python3.11/site-packages"
    for gpu in (
        f"{site}/nvidia/cu13/lib/libcublasLt.so.13",
        f"{site}/torch/lib/libtorch_cuda.so",
        f"{site}/triton/_C/libtriton.so",
        f"{site}/nvidia/cudnn/lib/libcudnn.so.9",
    ):
        assert matches(gpu), gpu
    for cpu in (
        f"{site}/torch/lib/libtorch_cpu.so",
        f"{site}/torch/lib/libtorch_python.so",
        "/usr/lib/x86_64-linux-gnu/libc.so.6",
        f"{site}/ctranslate2.libs/libctranslate2.so.4",
    ):
        assert not matches(cpu), cpu
