"""Gradio, imported without rewriting its type stubs: `from .gradio_import import gr`.

Each `import gradio` re-reads the source of every component class as it is defined, parses it and
rewrites the class's `.pyi` stub beside it in site-packages (gradio/component_meta.py,
`create_or_modify_pyi`): 1.3-1.5 s of a 2.5 s import on a 2-core CPU, at every start of the app, for
stubs that only type checkers read and that the installed wheel ships already. The stub writer is left
out of that one module while gradio is first imported; nothing else of gradio's changes.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys

STUB_WRITER_MODULE = "gradio.component_meta"


class _WithoutStubWriter(importlib.abc.MetaPathFinder):
    """Finds gradio.component_meta as usual, and once it has run, swaps its stub writer for nothing."""

    def find_spec(self, name, path, target=None):
        if name != STUB_WRITER_MODULE:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            if hasattr(module, "create_or_modify_pyi"):  # gradio's name for it (6.x)
                module.create_or_modify_pyi = _leave_the_stubs

        spec.loader.exec_module = exec_module
        return spec


def _leave_the_stubs(*args, **kwargs) -> None:
    return None


def _import_gradio():
    if "gradio" in sys.modules:  # imported already (a host program's): as it is
        return sys.modules["gradio"]
    finder = _WithoutStubWriter()
    sys.meta_path.insert(0, finder)
    try:
        import gradio
    finally:
        sys.meta_path.remove(finder)
    return gradio


gr = _import_gradio()
