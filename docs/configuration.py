"""Write docs/configuration.md from the settings model (tests/unit/test_settings.py checks it is current).

python docs/configuration.py
"""

from pathlib import Path

from assistant.settings import describe_settings

PAGE = Path(__file__).with_name("configuration.md")
INTRODUCTION = """# Configuration

Every setting has a default and can be set, from weakest to strongest, in a TOML file
(`~/.config/assistant/config.toml`, or the file given by `--config` / `ASSISTANT_CONFIG`), in an
`ASSISTANT_<NAME>` environment variable, or by a `--name` flag where the command has one (`assistant
serve --help` lists them). A wrong value is rejected with the setting's name, where it came from and
what is allowed. An empty environment variable unsets an optional setting.

```toml
profile = "cpu"
temperature = 0.2
max_new_tokens = 256
persona = "describer"
```

This page is written from the settings model (`assistant/settings.py`) by `python docs/configuration.py`.

"""


def page() -> str:
    return INTRODUCTION + describe_settings()


if __name__ == "__main__":
    PAGE.write_text(page(), encoding="utf-8")
    print(f"wrote {PAGE}")
