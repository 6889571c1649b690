import runpy
from pathlib import Path

import pytest

from assistant.errors import SettingsError
from assistant.settings import Settings, load_settings


def test_defaults_are_safe_and_sane():
    settings = load_settings(env={})
    assert settings.host == "127.0.0.1", "the server must listen on loopback unless the user opens it"
    assert settings.port == 7860
    assert settings.trust_remote_code is False
    assert settings.profile == "auto"
    assert settings.persona == "default"


def test_layers_override_in_order(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text('port = 8000\ntemperature = 0.2\nmax_new_tokens = 64\npersona = "tutor"\n')
    env = {"ASSISTANT_PORT": "9000", "ASSISTANT_TEMPERATURE": "0.5"}
    settings = load_settings(cli={"port": "9100"}, env=env, config_file=config)
    assert settings.port == 9100, "a CLI flag beats the environment"
    assert settings.temperature == 0.5, "the environment beats the config file"
    assert settings.max_new_tokens == 64, "the config file beats the defaults"
    assert settings.persona == "tutor"
    assert settings.top_p == 0.9, "untouched settings keep their defaults"


def test_config_file_from_environment(tmp_path):
    config = tmp_path / "assistant.toml"
    config.write_text("seed = 7\n")
    assert load_settings(env={"ASSISTANT_CONFIG": str(config)}).seed == 7


def test_empty_environment_variable_unsets_an_optional_setting(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text("seed = 7\n")
    assert load_settings(env={"ASSISTANT_SEED": ""}, config_file=config).seed is None


@pytest.mark.parametrize(
    "source, expected",
    [
        ({"cli": {"port": "70000"}}, ["'port'", "--port", "65535"]),
        ({"env": {"ASSISTANT_DTYPE": "int3"}}, ["'dtype'", "ASSISTANT_DTYPE", "'float32'", "'bfloat16'"]),
        ({"env": {"ASSISTANT_TEMPERATURE": "hot"}}, ["'temperature'", "ASSISTANT_TEMPERATURE", "number"]),
        ({"cli": {"profile": "huge"}}, ["'profile'", "tiny", "cpu", "gpu", "auto"]),
        ({"cli": {"device": "tpu"}}, ["'device'", "--device"]),
    ],
)
def test_wrong_values_name_the_setting_source_and_what_is_allowed(source, expected):
    with pytest.raises(SettingsError) as caught:
        load_settings(cli=source.get("cli"), env=source.get("env", {}))
    for fragment in expected:
        assert fragment in str(caught.value), f"{fragment!r} missing from: {caught.value}"


def test_wrong_value_in_config_file_names_the_file(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text("top_p = 1.5\n")
    with pytest.raises(SettingsError, match=r"'top_p' from config file .*config.toml.*less than or equal to 1"):
        load_settings(env={}, config_file=config)


def test_unknown_key_in_config_file_lists_the_settings(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text("temprature = 0.1\n")
    with pytest.raises(SettingsError, match="unknown setting.*temprature.*temperature"):
        load_settings(env={}, config_file=config)


def test_broken_toml_and_missing_file_are_clear(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text("port = \n")
    with pytest.raises(SettingsError, match="not valid TOML"):
        load_settings(env={}, config_file=config)
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings(env={}, config_file=tmp_path / "missing.toml")


def test_every_setting_is_described():
    undescribed = [name for name, field in Settings.model_fields.items() if not field.description]
    assert undescribed == [], "give each a docstring under its field: it is what docs/configuration.md says"


def test_the_configuration_page_is_current():
    script = Path(__file__).parents[2] / "docs" / "configuration.py"
    written = script.with_name("configuration.md").read_text(encoding="utf-8")
    assert written == runpy.run_path(str(script))["page"](), (
        "docs/configuration.md is stale: python docs/configuration.py"
    )
    assert all(f"`{name}`" in written for name in Settings.model_fields)
