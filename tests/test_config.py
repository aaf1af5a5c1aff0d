"""Settings: documented once, overridable by environment, unsafe defaults refused."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from newsletter.config import DEMO_SECRET_KEY, Settings, load_settings
from newsletter.errors import ConfigError
from tests.conftest import ROOT


def env_name(field: str) -> str:
    return "NEWSLETTER_FROM" if field == "from_address" else f"NEWSLETTER_{field.upper()}"


@pytest.mark.parametrize("field", sorted(Settings.model_fields))
def test_every_setting_is_documented_in_readme_and_example_config(field: str) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    example = (ROOT / "config" / "newsletter.toml").read_text(encoding="utf-8")
    assert f"`{env_name(field)}`" in readme, f"{env_name(field)} missing from README"
    assert re.search(rf"^# {field} =", example, re.MULTILINE), f"{field} missing from config"
    assert Settings.model_fields[field].description, f"{field} has no help string"


def test_environment_overrides_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "newsletter.toml"
    config.write_text('smtp_port = 2525\nfrom_address = "A <a@toml.example>"\n')
    monkeypatch.setenv("NEWSLETTER_CONFIG", str(config))
    assert load_settings().smtp_port == 2525
    monkeypatch.setenv("NEWSLETTER_SMTP_PORT", "2626")
    monkeypatch.setenv("NEWSLETTER_FROM", "B <b@env.example>")
    settings = load_settings()
    assert settings.smtp_port == 2626
    assert settings.envelope_from == "b@env.example"


def test_invalid_values_are_one_readable_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEWSLETTER_SMTP_PORT", "not-a-port")
    with pytest.raises(ConfigError, match="smtp_port") as caught:
        load_settings()
    assert "\n" not in str(caught.value)


def test_base_url_must_be_absolute_http() -> None:
    with pytest.raises(ConfigError, match="base_url"):
        load_settings(base_url="javascript:alert(1)")


def test_missing_config_file_named_by_environment_is_an_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("NEWSLETTER_CONFIG", str(tmp_path / "absent.toml"))
    with pytest.raises(ConfigError, match=r"absent\.toml"):
        load_settings()


def test_default_secret_key_is_refused_outside_the_demo() -> None:
    settings = load_settings()
    assert settings.secret_key.get_secret_value() == DEMO_SECRET_KEY
    with pytest.raises(ConfigError, match="NEWSLETTER_SECRET_KEY"):
        settings.require_real_secret()
    load_settings(secret_key="a-real-key-" + "y" * 30).require_real_secret()
