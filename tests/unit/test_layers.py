"""Who may import whom, read from the source with `ast` (nothing is run):

faces (ui/, api/, cli.py, and exposure.py: who may reach them)  ->  core, events, errors, settings (and each other)
everything else            ->  never a face, never Gradio (the core knows nothing of its pages)
events                     ->  nothing that needs torch
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "assistant"
FACES = ("assistant.ui", "assistant.api", "assistant.cli", "assistant.exposure")
FACES_MAY_IMPORT = ("assistant.core", "assistant.events", "assistant.errors", "assistant.settings", *FACES)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Every module `path` imports, relative imports resolved; `from x import y` counts as x.y when y is
    a module, else as x."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.add(candidate if _is_module(candidate) else base)
    return found


def _is_module(name: str) -> bool:
    relative = Path(*name.split(".")[1:])
    return name.startswith("assistant.") and (
        (PACKAGE / relative).with_suffix(".py").is_file() or (PACKAGE / relative / "__init__.py").is_file()
    )


def within(name: str, prefixes) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


SOURCES = sorted(PACKAGE.rglob("*.py"))
FACE_SOURCES = [path for path in SOURCES if within(module_name(path), FACES)]


def test_the_faces_are_found():
    names = {module_name(path) for path in FACE_SOURCES}
    assert {"assistant.cli", "assistant.api", "assistant.ui.handlers", "assistant.ui.layout"} <= names, names


@pytest.mark.parametrize("path", FACE_SOURCES, ids=module_name)
def test_a_face_uses_the_core_events_errors_and_settings_only(path):
    reaching = sorted(
        name for name in imported_modules(path) if within(name, ("assistant",)) and not within(name, FACES_MAY_IMPORT)
    )
    assert reaching == [], f"{module_name(path)} reaches past the core into {reaching}; re-export from assistant.core"


@pytest.mark.parametrize("path", [path for path in SOURCES if path not in FACE_SOURCES], ids=module_name)
def test_the_core_knows_nothing_of_the_faces_or_gradio(path):
    imports = imported_modules(path)
    assert not [name for name in imports if within(name, (*FACES, "gradio", "fastapi", "starlette"))], (
        f"{module_name(path)} imports {sorted(imports)}: only the faces may know of pages, routes and the CLI"
    )


def test_the_events_need_no_torch():
    code = "import sys, assistant.events; print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]", f"importing assistant.events loaded {loaded}"
