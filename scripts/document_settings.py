"""Regenerate config/newsletter.toml and the README's settings table from the Settings model.

Settings are declared once, in newsletter/config.py; run this after adding or changing one
(tests/test_config.py fails until every setting is documented).
"""

from __future__ import annotations

import json
from pathlib import Path

from newsletter.config import Settings

ROOT = Path(__file__).resolve().parent.parent
TABLE_START = "| variable | default | meaning |"
TABLE_END = "\n\n## Sources"


def env_name(field: str) -> str:
    return "NEWSLETTER_FROM" if field == "from_address" else f"NEWSLETTER_{field.upper()}"


def main() -> None:
    lines = [
        "# Newsletter settings. Each can be overridden by an environment variable",
        "# NEWSLETTER_<NAME> (upper case), e.g. NEWSLETTER_DATABASE_URL. Uncomment a line to",
        "# change it here.",
        "# `newsletter` reads ./config/newsletter.toml, or the file named by NEWSLETTER_CONFIG.",
        "",
    ]
    rows = [TABLE_START, "| --- | --- | --- |"]
    for name, field in Settings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        if name == "secret_key":
            toml_value, shown = (
                '"<set NEWSLETTER_SECRET_KEY>"',
                "demo key (refused outside the demo)",
            )
        elif isinstance(field.json_schema_extra, dict) and (
            extra := field.json_schema_extra.get("documented_default")
        ):
            # Chosen on the machine it runs on: the docs name the rule, not this machine's value.
            toml_value, shown = f"<{extra}>", str(extra)
        elif default is None:
            toml_value, shown = "", "unset"
        else:
            toml_value = repr(default) if isinstance(default, int | float) else json.dumps(default)
            shown = ",".join(default) if isinstance(default, list) else str(default)
        lines += [f"# {field.description}", f"# {name} = {toml_value}".rstrip(), ""]
        rows.append(f"| `{env_name(name)}` | `{shown}` | {field.description} |")
    (ROOT / "config" / "newsletter.toml").write_text("\n".join(lines).rstrip() + "\n")
    readme_path = ROOT / "README.md"
    readme = readme_path.read_text(encoding="utf-8")
    start, end = readme.index(TABLE_START), readme.index(TABLE_END)
    readme_path.write_text(readme[:start] + "\n".join(rows) + readme[end:], encoding="utf-8")


if __name__ == "__main__":
    main()
