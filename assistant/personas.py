"""Personas: system prompts kept as Markdown files in prompts/, each with a small header.

---
name: Concise
description: Short, direct answers.
---
You are ...
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import PersonaError

HEADER_FENCE = "---"


@dataclass(frozen=True)
class Persona:
    key: str  # the file name without .md: what --persona takes
    name: str
    description: str
    system_prompt: str


def available_personas(prompts_dir: Path) -> dict[str, Persona]:
    """All personas in `prompts_dir`, by key, in name order."""
    return {path.stem: _parse(path) for path in sorted(Path(prompts_dir).glob("*.md"))}


def load_persona(key: str, prompts_dir: Path) -> Persona:
    personas = available_personas(prompts_dir)
    if key not in personas:
        known = ", ".join(personas) or f"none: {prompts_dir} has no .md files"
        raise PersonaError(f"unknown persona {key!r}; the personas are: {known}")
    return personas[key]


def _parse(path: Path) -> Persona:
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    if not lines or lines[0].strip() != HEADER_FENCE or HEADER_FENCE not in (line.strip() for line in lines[1:]):
        raise PersonaError(f"{path.name}: a persona starts with a '---' header holding name and description")
    end = next(i for i, line in enumerate(lines[1:], start=1) if line.strip() == HEADER_FENCE)
    header = dict(_header_field(path, line) for line in lines[1:end] if line.strip())
    missing = {"name", "description"} - set(header)
    if missing:
        raise PersonaError(f"{path.name}: the header lacks {', '.join(sorted(missing))}")
    body = "\n".join(lines[end + 1 :]).strip()
    if not body:
        raise PersonaError(f"{path.name}: the system prompt after the header is empty")
    return Persona(path.stem, header["name"], header["description"], body)


def _header_field(path: Path, line: str) -> tuple[str, str]:
    key, sep, value = line.partition(":")
    if not sep:
        raise PersonaError(f"{path.name}: header line {line!r} is not 'key: value'")
    return key.strip().lower(), value.strip()
