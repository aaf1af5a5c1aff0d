"""The CLI's own-words options: `subscribers add --about --exclude`, import's `about` and
`exclude` columns, and export showing them; bad input is one clear line and loses nothing."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from tests.test_cli import environment, newsletter, ok, one_line_error

ABOUT = "I build compilers for sparse tensor programs, and care about MLIR."


def test_add_import_and_export_carry_the_readers_own_words(tmp_path: Path) -> None:
    env = environment(tmp_path, 1)
    ok(newsletter("init", env=env))
    out = ok(
        newsletter(
            "subscribers",
            "add",
            "ada@example.org",
            "--about",
            ABOUT,
            "--exclude",
            "Quantum",
            env=env,
        )
    )
    assert out.startswith("subscribed ada@example.org (about: I build compilers")
    ok(newsletter("subscribers", "add", "kay@example.org", "--keyword", "video", env=env))
    (tmp_path / "in.csv").write_text(
        "email,topics,keywords,about,exclude\n"
        'bo@example.org,,,"Robot learning from demonstrations, in my own words.",survey;quantum\n'
        f"too-long@example.org,,,{'x' * 601},\n"
        "cy@example.org,,agents,,\n",
        encoding="utf-8",
    )
    imported = newsletter("subscribers", "import", str(tmp_path / "in.csv"), env=env)
    assert ok(imported) == "imported 2 subscribers, skipped 1 rows\n"
    assert "in.csv:3: skipped: 'what do you work on' is 601 characters; at most 600" in (
        imported.stderr
    )
    exported = ok(newsletter("subscribers", "export", env=env))
    rows = {row["email"]: row for row in csv.DictReader(io.StringIO(exported))}
    assert rows["ada@example.org"]["about"] == ABOUT
    assert rows["ada@example.org"]["exclude"] == "Quantum"  # shown as typed
    assert rows["bo@example.org"]["exclude"] == "survey;quantum"
    assert rows["kay@example.org"]["about"] == "" and rows["cy@example.org"]["keywords"] == "agents"
    assert "too-long@example.org" not in rows

    # The export imports into a fresh database as the same subscribers.
    (tmp_path / "export.csv").write_text(exported, encoding="utf-8")
    fresh = {**env, "NEWSLETTER_DATABASE_URL": f"sqlite:///{tmp_path / 'fresh.db'}"}
    ok(newsletter("init", env=fresh))
    ok(newsletter("subscribers", "import", str(tmp_path / "export.csv"), env=fresh))
    assert ok(newsletter("subscribers", "export", env=fresh)) == exported


def test_an_over_long_about_is_one_clear_line_and_adds_nobody(tmp_path: Path) -> None:
    env = environment(tmp_path, 1)
    ok(newsletter("init", env=env))
    failed = newsletter("subscribers", "add", "ada@example.org", "--about", "y" * 700, env=env)
    assert "at most 600" in one_line_error(failed)
    assert "ada@example.org" not in ok(newsletter("subscribers", "export", env=env))
