"""Which thread does the model's math with every core: the engine's worker, and only it.

PyTorch's CPU kernels, and the C++ that torch.compile writes, run their loops on OpenMP thread teams,
one team per calling thread. GNU OpenMP counts the threads of every team alive in the process; when
they outnumber the cores it stops spinning between parallel loops and sleeps instead, and a decode
step runs hundreds of short loops: on a 2-core machine the starter's compiled step decoded at about
half its speed while the thread that loaded the model kept its own team. So the loading thread gives
its cores up before it loads (`reserve_for_model`), and the threads that run the model take them
(`use_model_threads`).
"""

from __future__ import annotations

import torch

_model_threads: int | None = None


def reserve_for_model() -> int:
    """Call first in the thread that loads the model (before any tensor work): it will compute on
    one core, and the engine's worker on all of them. Returns the worker's thread count."""
    global _model_threads
    if _model_threads is None:
        _model_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    return _model_threads


def model_threads() -> int:
    return _model_threads if _model_threads is not None else torch.get_num_threads()


def use_model_threads() -> None:
    """Call at the start of a thread that runs the model."""
    torch.set_num_threads(model_threads())


def run_in_model_thread(work, *args):
    """`work(*args)` in a fresh thread with every core, its result returned (its error raised); the
    thread ends with it, and so does its OpenMP team (benchmarks run baselines this way)."""
    import threading

    outcome: dict = {}

    def target():
        use_model_threads()
        try:
            outcome["result"] = work(*args)
        except BaseException as error:  # noqa: BLE001 - raised in the caller
            outcome["error"] = error

    thread = threading.Thread(target=target, name="model-work")
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]
