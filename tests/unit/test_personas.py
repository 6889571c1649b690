import pytest

from assistant.errors import PersonaError
from assistant.personas import available_personas, load_persona
from assistant.settings import PROJECT_ROOT

PROMPTS = PROJECT_ROOT / "prompts"


def test_default_persona_is_a_helpful_concise_assistant():
    persona = load_persona("default", PROMPTS)
    assert persona.name == "Assistant"
    assert "helpful" in persona.system_prompt and "concise" in persona.system_prompt
    assert "---" not in persona.system_prompt, "the header must not leak into the system prompt"


def test_every_shipped_persona_has_a_name_description_and_prompt():
    personas = available_personas(PROMPTS)
    assert {"default", "describer", "tutor"} <= set(personas)
    for key, persona in personas.items():
        assert persona.name and persona.description and len(persona.system_prompt) > 40, key


def test_unknown_persona_lists_the_ones_that_exist():
    with pytest.raises(PersonaError, match="unknown persona 'pirate'; the personas are: default, describer, tutor"):
        load_persona("pirate", PROMPTS)


@pytest.mark.parametrize(
    "text, reason",
    [
        ("You are a pirate.", "starts with a '---' header"),
        ("---\nname: Pirate\n---\nArr.", "lacks description"),
        ("---\nname: Pirate\ndescription: talks like a pirate\n---\n\n", "system prompt after the header is empty"),
        ("---\nname Pirate\ndescription: x\n---\nArr.", "is not 'key: value'"),
    ],
)
def test_malformed_persona_files_say_what_is_wrong(tmp_path, text, reason):
    (tmp_path / "pirate.md").write_text(text)
    with pytest.raises(PersonaError, match=reason):
        load_persona("pirate", tmp_path)
