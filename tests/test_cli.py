"""The `newsletter` command as an operator runs it: a real process, a real SQLite file, a real
SMTP server on loopback, and two days of papers the code has never seen."""

from __future__ import annotations

import csv
import email
import email.message
import email.policy
import io
import json
import re
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from newsletter.capture import CapturedMessage, CaptureServer, free_port
from newsletter.config import DEMO_SECRET_KEY
from tests.cli_env import BASE_URL, environment

DAY_ONE = date(2026, 11, 2)
DAY_TWO = date(2026, 11, 3)
PAPER_LINK = re.compile(r"https://huggingface\.co/papers/(\d{4}\.\d{5})")
SINGLE_HEADERS = ("From", "To", "Date", "Subject", "Message-ID")


# -- two days of papers in the Hugging Face API's shape ---------------------------------------


def hf_item(
    arxiv_id: str,
    title: str,
    summary: str,
    listed_on: date,
    upvotes: int,
    authors: tuple[str, ...] = ("Ana Example", "Bo Sample"),
    **optional: Any,
) -> dict[str, Any]:
    seed = int(arxiv_id.replace(".", ""))
    return {
        "paper": {
            "id": arxiv_id,
            "authors": [
                {"_id": f"{seed * 100 + i:024x}", "name": name, "hidden": False}
                for i, name in enumerate(authors)
            ],
            "publishedAt": "2026-10-30T17:00:00.000Z",
            "title": title,
            "summary": summary,
            "upvotes": upvotes,
            "discussionId": f"{seed:024x}",
            **optional,
        },
        "publishedAt": f"{listed_on}T06:00:00.000Z",
        "title": title,
        "numComments": upvotes % 4,
    }


HOSTILE_TITLE = "<script>alert('x')</script> Compilers\r\nBcc: victim@evil.test"
ENCODED_WORD_TITLE = "=?UTF-8?Q?a=0ABcc:_x@evil.test?= quantization of <img src=x onerror=alert(1)>"

# id -> (title, summary); listing and upvotes per day come below.
PAPERS: dict[str, tuple[str, str]] = {
    "2611.01001": (
        "A Retargetable Compiler for Sparse Tensor Programs",
        "We present a compiler that lowers sparse tensor algebra to several backends.",
    ),
    "2611.01002": (
        "Post-Training Quantization of Vision Transformers to 3 Bits",
        "Quantization of ViTs to three bits with a calibration set of 128 images.",
    ),
    "2611.01003": (
        "Quantization-Aware Compiler Passes for Edge NPUs",
        "Compiler passes that keep activations in int8 across fused operators on NPUs.",
    ),
    "2611.01004": (
        "Scaling Laws for Protein Language Models",
        "We fit scaling laws to protein language models from 8M to 15B parameters.",
    ),
    "2611.01005": (
        "Diffusion Policies for Robot Manipulation",
        "Diffusion policies learn dexterous grasps from forty demonstrations.",
    ),
    "2611.01006": (
        HOSTILE_TITLE,
        "A compiler <b onmouseover=alert(1)>paper</b>\r\nSubject: you won\r\n\r\nnew body",
    ),
    "2611.01007": (
        ENCODED_WORD_TITLE,
        'Low-bit weights; see <a href="javascript:alert(1)">demo</a>.',
    ),
    "2611.02001": (
        "An MLIR-based Compiler for Photonic Accelerators",
        "A compiler that maps matrix multiplications onto photonic meshes.",
    ),
    "2611.02002": (
        "Mixed-Precision Quantization Search with Reinforcement Learning",
        "An agent picks per-layer bit widths for quantization under a latency budget.",
    ),
    "2611.02003": (
        "Long-Context Retrieval Benchmarks",
        "Twelve retrieval tasks whose answers hide in million-token contexts.",
    ),
    "2611.02004": (
        "A Study of Tokenizers",
        "We compare tokenizers on forty languages.",
    ),
}
DAY_LISTS: dict[date, dict[str, int]] = {  # id -> upvotes on that day
    DAY_ONE: {
        "2611.01001": 40,
        "2611.01002": 35,
        "2611.01003": 30,
        "2611.01004": 28,
        "2611.01005": 20,
        "2611.01006": 6,
        "2611.01007": 5,
    },
    DAY_TWO: {  # three papers listed again, with new upvotes
        "2611.02001": 45,
        "2611.01003": 41,
        "2611.02002": 33,
        "2611.01004": 31,
        "2611.02003": 25,
        "2611.02004": 10,
        "2611.01006": 9,
    },
}
SHARED = {"2611.01003", "2611.01004", "2611.01006"}

# Worked out by hand from the titles and abstracts above. The "compilers" topic matches the
# compiler papers ("compiler", "tensor program", "mlir") and nothing else here.
EXPECTED: dict[str, dict[date, set[str]]] = {
    "comp@example.org": {  # --keyword compiler
        DAY_ONE: {"2611.01001", "2611.01003", "2611.01006"},
        DAY_TWO: {"2611.02001"},
    },
    "both@example.org": {  # --topic compilers --keyword quantization
        DAY_ONE: {"2611.01001", "2611.01002", "2611.01003", "2611.01006", "2611.01007"},
        DAY_TWO: {"2611.02001", "2611.02002"},
    },
    "quant@example.org": {  # imported: keyword quantization
        DAY_ONE: {"2611.01002", "2611.01003", "2611.01007"},
        DAY_TWO: {"2611.02002"},
    },
    "top@example.org": {  # imported: no interests, the day's top papers
        DAY_ONE: set(DAY_LISTS[DAY_ONE]),
        DAY_TWO: {"2611.02001", "2611.02002", "2611.02003", "2611.02004"},
    },
    "npu@example.org": {  # --keyword npu: its one paper comes back on day two
        DAY_ONE: {"2611.01003"},
        DAY_TWO: set(),
    },
    "none@example.org": {DAY_ONE: set(), DAY_TWO: set()},  # --keyword photosynthesis
}
SKIPS = {
    DAY_ONE: {"no_matching_papers": 1},
    DAY_TWO: {"nothing_new": 1, "no_matching_papers": 1},
}

IMPORT_CSV = (
    "email,topics,keywords\n"
    "top@example.org,,\n"
    "not-an-email,,compiler\n"
    "bad-topic@example.org,no-such-topic,\n"
    "QUANT@example.org,,quantization\n"
    "npu@example.org,,npu\n"
    'none@example.org,,"photosynthesis;  PHOTOSYNTHESIS "\n'
    "gone@example.org,databases,\n"
)


# -- running the command ----------------------------------------------------------------------


Command = tuple[list[str], dict[str, str]]  # arguments, environment


def newsletter(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return together({"only": (list(args), env)})["only"]


def together(commands: dict[str, Command]) -> dict[str, subprocess.CompletedProcess[str]]:
    """Run independent commands side by side (each is ~0.5 s of interpreter start-up)."""
    started = {
        name: subprocess.Popen(
            [sys.executable, "-m", "newsletter.cli", *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, (args, env) in commands.items()
    }
    results = {}
    for name, process in started.items():
        stdout, stderr = process.communicate(timeout=60)
        results[name] = subprocess.CompletedProcess(
            process.args, process.returncode, stdout, stderr
        )
    return results


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"{result.args}: {result.stderr}"
    return result.stdout


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The failure shape every operator error must have: exit 1, one line, no traceback."""
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def database_dump(path: Path) -> list[str]:
    with sqlite3.connect(path) as connection:
        return list(connection.iterdump())


def parsed(message: CapturedMessage) -> email.message.EmailMessage:
    return message.parsed()


def body(message: email.message.EmailMessage, subtype: str) -> str:
    part = message.get_body(preferencelist=(subtype,))
    assert part is not None
    content = part.get_content()
    assert isinstance(content, str)
    return content


def papers_in(message: CapturedMessage) -> list[str]:
    return PAPER_LINK.findall(body(parsed(message), "plain"))


# -- one operator's two days, run once for the tests below ------------------------------------


@dataclass
class Run:
    tmp: Path
    env: dict[str, str]
    out: dict[str, subprocess.CompletedProcess[str]] = field(default_factory=dict)
    mail: dict[date, list[CapturedMessage]] = field(default_factory=dict)
    dump_before_dry_run: list[str] = field(default_factory=list)
    dump_after_dry_run: list[str] = field(default_factory=list)
    mail_during_dry_run: int = -1
    mail_from_dead_relay_run: int = -1
    mail_from_rerun: int = -1

    def step(self, name: str, *args: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
        return self.wave({name: args}, **extra_env)[name]

    def wave(
        self, steps: dict[str, tuple[str, ...]], **extra_env: str
    ) -> dict[str, subprocess.CompletedProcess[str]]:
        env = {**self.env, **extra_env}
        results = together({name: (list(args), env) for name, args in steps.items()})
        self.out.update(results)
        return results


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    tmp = tmp_path_factory.mktemp("cli")

    def fetch_args(day: date) -> tuple[str, ...]:
        return ("fetch", "--date", str(day), "--source", str(tmp / f"{day}.json"))

    for day, listing in DAY_LISTS.items():
        items = [hf_item(i, *PAPERS[i], day, upvotes) for i, upvotes in listing.items()]
        (tmp / f"{day}.json").write_text(json.dumps(items), encoding="utf-8")
    (tmp / "subscribers.csv").write_text(IMPORT_CSV, encoding="utf-8")
    (tmp / "preview").mkdir()

    with CaptureServer() as server:
        r = Run(tmp, environment(tmp, server.port))
        ok(r.step("init", "init"))
        r.wave(
            {
                "topics": ("topics",),
                "add comp": ("subscribers", "add", "comp@example.org", "--keyword", "compiler"),
                "add both": (
                    *("subscribers", "add", "Both@Example.org", "--topic", "compilers"),
                    *("--keyword", "Quantization"),
                ),
                "add unknown topic": (
                    *("subscribers", "add", "x@example.org", "--topic", "astrology"),
                ),
                "add bad email": ("subscribers", "add", "not an@address"),
                "import": ("subscribers", "import", str(tmp / "subscribers.csv")),
            }
        )
        r.wave(
            {
                "remove": ("subscribers", "remove", "gone@example.org"),
                "remove missing": ("subscribers", "remove", "never@example.org"),
                f"fetch {DAY_ONE}": fetch_args(DAY_ONE),
            }
        )
        # Not beside the first: two fetches of overlapping days race on new paper rows.
        r.step(f"fetch {DAY_TWO}", *fetch_args(DAY_TWO))
        for day in DAY_LISTS:
            ok(r.out[f"fetch {day}"])

        # Read-only commands run beside the dry run: the database must not change at all.
        r.dump_before_dry_run = database_dump(tmp / "newsletter.db")
        r.wave(
            {
                "list": ("subscribers", "list"),
                "export": ("subscribers", "export"),
                "dry run": ("send", "--dry-run", "--date", str(DAY_ONE)),
            }
        )
        r.mail_during_dry_run = len(server.messages)
        r.dump_after_dry_run = database_dump(tmp / "newsletter.db")

        r.step(
            "send dead relay", "send", "--date", str(DAY_ONE), NEWSLETTER_SMTP_PORT=str(free_port())
        )
        r.mail_from_dead_relay_run = len(server.messages)
        r.step("status after dead relay", "status", "--date", str(DAY_ONE))

        r.step(f"send {DAY_ONE}", "send", "--date", str(DAY_ONE))
        r.mail[DAY_ONE] = server.messages
        r.step(f"resend {DAY_ONE}", "send", "--date", str(DAY_ONE))
        r.mail_from_rerun = len(server.messages) - len(r.mail[DAY_ONE])

        r.step(f"send {DAY_TWO}", "send", "--date", str(DAY_TWO))
        r.mail[DAY_TWO] = server.messages[len(r.mail[DAY_ONE]) :]
        r.wave(
            {
                f"status {DAY_TWO}": ("status", "--date", str(DAY_TWO)),
                f"failures {DAY_TWO}": ("failures", "--date", str(DAY_TWO)),
                f"failures --skipped {DAY_TWO}": ("failures", "--skipped", "--date", str(DAY_TWO)),
                "preview": (
                    *("preview", "both@example.org", "--date", str(DAY_TWO)),
                    *("--output", str(tmp / "preview" / "both.html")),
                ),
            }
        )
        yield r


# -- setup commands ---------------------------------------------------------------------------


def test_init_creates_the_database(run: Run) -> None:
    assert "database ready" in run.out["init"].stdout
    assert (run.tmp / "newsletter.db").is_file()


def test_topics_lists_every_slug_with_its_name(run: Run) -> None:
    lines = ok(run.out["topics"]).splitlines()
    slugs = [line.split()[0] for line in lines]

    assert {"compilers", "quantization-compression", "databases"} <= set(slugs)
    assert any(line.startswith("compilers ") and "Compilers" in line for line in lines)
    assert len(slugs) == len(set(slugs))


def test_subscribers_add_normalises_and_echoes_interests(run: Run) -> None:
    assert run.out["add comp"].stdout.strip() == 'subscribed comp@example.org ("compiler")'
    assert run.out["add both"].stdout.strip() == (
        'subscribed both@example.org (compilers, "Quantization")'
    )


def test_subscribers_add_refuses_unknown_topic_and_bad_address_in_one_line(run: Run) -> None:
    topic_error = one_line_error(run.out["add unknown topic"])
    address_error = one_line_error(run.out["add bad email"])

    assert "unknown topic 'astrology'" in topic_error and "compilers" in topic_error
    assert "not an@address" in address_error
    listed = run.out["list"].stdout
    assert "x@example.org" not in listed and "not an" not in listed


def test_import_keeps_good_rows_and_reports_bad_ones_by_line(run: Run) -> None:
    result = run.out["import"]
    warnings = result.stderr.strip().splitlines()

    assert ok(result).strip() == "imported 5 subscribers, skipped 2 rows"
    assert len(warnings) == 2
    assert warnings[0].startswith("warning: ") and "subscribers.csv:3:" in warnings[0]
    assert "not-an-email" in warnings[0]
    assert "subscribers.csv:4:" in warnings[1] and "no-such-topic" in warnings[1]
    assert "Traceback" not in result.stderr


def test_remove_deletes_and_refuses_an_unknown_address(run: Run) -> None:
    assert ok(run.out["remove"]).strip() == "removed gone@example.org"
    assert "no subscriber never@example.org" in one_line_error(run.out["remove missing"])


def test_list_shows_everyone_with_status_and_interests(run: Run) -> None:
    rows = {line.split("\t")[0]: line.split("\t")[1:] for line in ok(run.out["list"]).splitlines()}

    assert set(rows) == set(EXPECTED)
    assert rows["both@example.org"] == ["active", 'compilers, "Quantization"']
    assert rows["top@example.org"] == ["active", "top papers"]
    assert rows["quant@example.org"] == ["active", '"quantization"']
    assert rows["none@example.org"] == ["active", '"photosynthesis"']


def test_export_round_trips_through_import(run: Run, tmp_path: Path) -> None:
    exported = ok(run.out["export"])
    rows = list(csv.DictReader(io.StringIO(exported)))
    assert {row["email"] for row in rows} == set(EXPECTED)
    assert next(r for r in rows if r["email"] == "both@example.org")["topics"] == "compilers"

    (tmp_path / "export.csv").write_text(exported, encoding="utf-8")
    fresh = {**run.env, "NEWSLETTER_DATABASE_URL": f"sqlite:///{tmp_path / 'fresh.db'}"}
    ok(newsletter("init", env=fresh))
    assert ok(newsletter("subscribers", "import", str(tmp_path / "export.csv"), env=fresh)) == (
        f"imported {len(EXPECTED)} subscribers\n"
    )
    assert ok(newsletter("subscribers", "export", env=fresh)) == exported


# -- the two days -----------------------------------------------------------------------------


def test_fetch_stores_each_listed_paper(run: Run) -> None:
    for day, listing in DAY_LISTS.items():
        n = len(listing)
        assert run.out[f"fetch {day}"].stdout.strip() == (
            f"{day}: stored {n} papers from {run.tmp / f'{day}.json'} ({n} new to the day, "
            f"0 listed already); the day now lists {n} papers"
        )


@pytest.mark.parametrize("day", list(DAY_LISTS))
def test_each_subscriber_gets_exactly_the_papers_matching_their_interests(
    run: Run, day: date
) -> None:
    received = {m.recipients[0]: set(papers_in(m)) for m in run.mail[day]}
    expected = {who: papers[day] for who, papers in EXPECTED.items() if papers[day]}

    assert received == expected
    assert len(run.mail[day]) == len(expected), "at most one digest per subscriber per day"
    for message in run.mail[day]:
        ids = papers_in(message)
        assert len(ids) == len(set(ids)), "a paper listed twice in one digest"


def test_no_paper_reaches_a_subscriber_twice_across_days(run: Run) -> None:
    history: dict[str, list[str]] = {}
    for day in DAY_LISTS:
        for message in run.mail[day]:
            history.setdefault(message.recipients[0], []).extend(papers_in(message))

    for who, ids in history.items():
        assert len(ids) == len(set(ids)), who
    assert SHARED & set(history["top@example.org"]) == SHARED  # shared ones came, once


def test_subscribers_with_nothing_new_get_no_mail_and_status_says_why(run: Run) -> None:
    recipients = {m.recipients[0] for m in run.mail[DAY_TWO]}
    assert "npu@example.org" not in recipients and "none@example.org" not in recipients

    status = ok(run.out[f"status {DAY_TWO}"])
    for reason, count in SKIPS[DAY_TWO].items():
        assert f"  skipped ({reason}): {count}" in status
    sent = sum(1 for papers in EXPECTED.values() if papers[DAY_TWO])
    assert f"  sent: {sent}" in status
    total = sum(len(papers[DAY_TWO]) for papers in EXPECTED.values())
    assert status.startswith(f"{DAY_TWO}: {len(EXPECTED)} deliveries planned, {total} papers sent")

    # Skips are decisions, not failures: counted with their reason, listed on request.
    failures = ok(run.out[f"failures {DAY_TWO}"]).splitlines()
    assert failures[0] == f"{DAY_TWO}: no failures; {sent} digests sent"
    assert sorted(failures[1:]) == [
        "skipped (no_matching_papers): 1 — nothing listed that day matched their topics or "
        "keywords",
        "skipped (nothing_new): 1 — every matching paper was sent to them before",
    ]
    listed = ok(run.out[f"failures --skipped {DAY_TWO}"]).splitlines()
    assert sorted(listed[3:]) == [
        "none@example.org\tskipped\tno_matching_papers",
        "npu@example.org\tskipped\tnothing_new",
    ]


def test_running_a_day_again_sends_nothing(run: Run) -> None:
    assert run.mail_from_rerun == 0
    output = ok(run.out[f"resend {DAY_ONE}"])
    assert f"{DAY_ONE}: queued 0 digests, {len(EXPECTED)} already planned earlier" in output
    assert "sent: 0" in output


def test_every_digest_carries_the_required_headers(run: Run) -> None:
    message_ids: set[str] = set()
    for message in run.mail[DAY_ONE] + run.mail[DAY_TWO]:
        raw_head = message.data.split(b"\r\n\r\n", 1)[0]
        parsed_message = parsed(message)
        for name in SINGLE_HEADERS:
            assert len(parsed_message.get_all(name) or []) == 1, name
        assert parsed_message.get_content_type() == "multipart/alternative"
        assert [p.get_content_type() for p in parsed_message.iter_parts()] == [
            "text/plain",
            "text/html",
        ]
        assert parsed_message["To"].addresses[0].addr_spec == message.recipients[0]
        assert message.sender == "digest@papers.example.org"
        assert parsed_message["List-Id"] == "Trending Papers <daily.papers.example.org>"
        unsubscribe = str(parsed_message["List-Unsubscribe"])
        assert re.fullmatch(rf"<{re.escape(BASE_URL)}/unsubscribe/\d+/[\w-]+>", unsubscribe)
        assert parsed_message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        message_ids.add(str(parsed_message["Message-ID"]))
        assert re.search(rb"(?im)^bcc:", raw_head) is None
        assert b"evil.test" not in raw_head and b"<script" not in raw_head
        assert re.search(rb"(?<!\r)\n", message.data) is None
        assert max(len(line) for line in message.data.split(b"\r\n")) <= 998
    assert len(message_ids) == len(run.mail[DAY_ONE]) + len(run.mail[DAY_TWO])


def test_hostile_feed_text_arrives_escaped(run: Run) -> None:
    comp = next(m for m in run.mail[DAY_ONE] if m.recipients[0] == "comp@example.org")
    html = body(parsed(comp), "html")
    text = body(parsed(comp), "plain")

    assert "<script" not in html.lower()
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; Compilers Bcc: victim@evil.test" in html
    assert "&lt;b onmouseover=alert(1)&gt;paper&lt;/b&gt;" in html
    assert not re.search(r"<b\s", html)
    assert "Compilers Bcc: victim@evil.test" in text  # one line in the text part as well
    quant = next(m for m in run.mail[DAY_ONE] if m.recipients[0] == "quant@example.org")
    quant_html = body(parsed(quant), "html")
    assert "&lt;img src=x onerror=alert(1)&gt;" in quant_html
    assert not re.search(r"<img\b", quant_html, re.I)
    assert 'href="javascript:' not in quant_html.lower()


def test_dry_run_sends_nothing_and_writes_nothing(run: Run) -> None:
    output = ok(run.out["dry run"])

    assert f"{DAY_ONE}: would queue 5 digests" in output
    for reason, count in SKIPS[DAY_ONE].items():
        assert f"  skipped ({reason}): {count}" in output
    assert run.mail_during_dry_run == 0
    assert run.dump_after_dry_run == run.dump_before_dry_run


def test_dead_relay_fails_in_one_line_and_keeps_the_digests_queued(run: Run) -> None:
    result = run.out["send dead relay"]

    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "SMTP" in lines[0]
    assert run.mail_from_dead_relay_run == 0
    status = ok(run.out["status after dead relay"])
    assert "  queued: 5" in status and "sent" not in status.split("\n", 1)[1]
    # The next run, with the relay back, delivered every one of them.
    assert "sent: 5 in" in ok(run.out[f"send {DAY_ONE}"])
    assert len(run.mail[DAY_ONE]) == 5


def test_preview_writes_the_html_and_text_a_subscriber_gets(run: Run) -> None:
    result = run.out["preview"]
    html_file = run.tmp / "preview" / "both.html"

    assert result.returncode == 0, result.stderr
    assert f"wrote {html_file} and {html_file.with_suffix('.txt')}" in result.stdout
    html = html_file.read_text(encoding="utf-8")
    text = html_file.with_suffix(".txt").read_text(encoding="utf-8")
    expected = EXPECTED["both@example.org"][DAY_TWO]
    assert set(PAPER_LINK.findall(text)) == expected
    assert set(PAPER_LINK.findall(html)) == expected
    sent = next(m for m in run.mail[DAY_TWO] if m.recipients[0] == "both@example.org")
    assert html == body(parsed(sent), "html").replace("\r\n", "\n")


# -- failures an operator meets ---------------------------------------------------------------


UNUSABLE_DATABASES = [
    "postgresql://nobody@127.0.0.1:1/x",  # nothing listening
    "sqlite:////proc/x/y.db",  # a folder that cannot be created
    "sqlite:////proc/y.db",  # a folder that cannot be written
    "not a url at all",
]


def test_unusable_database_is_one_clear_line_each(tmp_path: Path) -> None:
    results = together(
        {
            url: (["subscribers", "list"], environment(tmp_path, 1, NEWSLETTER_DATABASE_URL=url))
            for url in UNUSABLE_DATABASES
        }
    )

    for url, result in results.items():
        line = one_line_error(result)
        assert "database" in line, url
    assert "127.0.0.1:1" in one_line_error(results[UNUSABLE_DATABASES[0]])
    assert "/proc/x" in one_line_error(results[UNUSABLE_DATABASES[1]])


def test_default_secret_key_is_refused_outside_the_demo(tmp_path: Path) -> None:
    env = environment(tmp_path, 1)
    del env["NEWSLETTER_SECRET_KEY"]
    results = together(
        {
            "unset": (["init"], env),
            "explicit": (["init"], {**env, "NEWSLETTER_SECRET_KEY": DEMO_SECRET_KEY}),
        }
    )

    for result in results.values():
        line = one_line_error(result)
        assert "NEWSLETTER_SECRET_KEY" in line and "demo default" in line
    assert not (tmp_path / "newsletter.db").exists()


def test_demo_runs_offline_and_writes_the_mail(tmp_path: Path) -> None:
    env = environment(tmp_path, 1)
    del env["NEWSLETTER_SECRET_KEY"]  # the demo alone may use the published key
    workdir = tmp_path / "demo"

    output = ok(newsletter("demo", "--workdir", str(workdir), env=env))

    assert "papers repeated to anyone: 0" in output
    assert re.search(r"^subscriber\s+2026-02-11\s+2026-02-12\s+2026-02-13", output, re.M)
    assert re.search(r"^ada@example\.org\s+\d+", output, re.M)
    emls = list((workdir / "mail").rglob("*.eml"))
    htmls = list((workdir / "mail").rglob("*.html"))
    count = int(re.search(r"(\d+) messages captured", output).group(1))  # type: ignore[union-attr]
    assert count > 0 and len(emls) == count and len(htmls) == count
