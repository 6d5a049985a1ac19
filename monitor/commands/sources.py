"""``monitor sources snapshot``: freeze the pages a pass reads.

The URLs are the reference URLs of the golden subset, the pages the newest
completed pass read, and any given with ``--url``. Every URL is fetched with the
web source's fetcher (timeout, size cap, user agent from ``SCOUT_*``); pages that
cannot be used are stored with their reason, so the snapshot records what the
web said at that moment. ``SCOUT_SOURCES=snapshot`` replays passes on it.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from monitor.snapshots import SnapshotTaken

logger = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILED = 0, 1

app = typer.Typer(
    no_args_is_help=True,
    help="Source snapshots: freeze pages, to tell source drift from model drift.",
)


@app.command("snapshot")
def snapshot(
    golden: Annotated[
        Path | None, typer.Option(help="Golden set file (TOML) whose URLs to take.")
    ] = None,
    subset: Annotated[
        int | None, typer.Option(min=1, help="Questions of the golden set used.")
    ] = None,
    url: Annotated[
        list[str] | None, typer.Option("--url", help="Also take this URL (repeat).")
    ] = None,
    use_golden: Annotated[
        bool,
        typer.Option("--golden-urls/--no-golden-urls", help="Take golden references."),
    ] = True,
    last_pass: Annotated[
        bool,
        typer.Option("--last-pass/--no-last-pass", help="Take the last pass's pages."),
    ] = True,
    note: Annotated[str | None, typer.Option(help="A note kept with it.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Fetch the golden reference URLs and the last pass's pages, and store them."""
    code = snapshot_command(
        golden=golden,
        subset=subset,
        urls=url or [],
        use_golden=use_golden,
        last_pass=last_pass,
        note=note,
        as_json=as_json,
    )
    raise typer.Exit(code)


def snapshot_command(
    *,
    golden: Path | None,
    subset: int | None,
    urls: list[str],
    use_golden: bool,
    last_pass: bool,
    note: str | None,
    as_json: bool,
) -> int:
    from monitor.golden import load_golden
    from monitor.settings import get_monitor_settings
    from monitor.snapshots import snapshot_urls, take_snapshot
    from monitor.store.db import open_database, session_factory
    from scout.sources.web import PageFetcher

    logging.basicConfig(
        level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    settings = get_monitor_settings()
    questions = []
    if use_golden:
        golden_set = load_golden(golden or settings.golden_file)
        questions = golden_set.subset(subset or settings.subset_size)

    engine = open_database(settings, create=True)
    sessions = session_factory(engine)
    with sessions() as session:
        targets = snapshot_urls(
            session, questions, last_pass_pages=last_pass, extra=urls
        )

    fetcher = PageFetcher.from_settings()
    try:
        taken = take_snapshot(sessions, targets, fetcher.fetch, note=note)
    finally:
        fetcher.close()

    if as_json:
        print(json.dumps(snapshot_json(taken), indent=2))
    else:
        print_snapshot(taken)
    if not taken.stored:
        print(
            f"error: snapshot {taken.snapshot_id} holds no page: every URL was "
            "skipped (reasons above); SCOUT_SOURCES=snapshot keeps replaying the "
            "newest snapshot that has pages",
            file=sys.stderr,
        )
        return EXIT_FAILED
    return EXIT_OK


def snapshot_json(taken: SnapshotTaken) -> dict[str, Any]:
    return {
        "snapshot_id": taken.snapshot_id,
        "created_at": taken.created_at.isoformat(),
        "stored": taken.stored,
        "skipped": taken.skipped,
        "pages": [
            {
                "url": page.url,
                "final_url": page.final_url,
                "status": page.status,
                "reason": page.reason,
                "http_status": page.http_status,
                "content_type": page.content_type,
                "title": page.title,
                "content_hash": page.content_hash,
                "boilerplate_share": page.boilerplate_share,
            }
            for page in taken.pages
        ],
    }


def print_snapshot(taken: SnapshotTaken) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"snapshot {taken.snapshot_id}, {taken.created_at:%Y-%m-%d %H:%M} UTC"
    )
    for column in ("status", "http", "boilerplate", "url", "title or reason"):
        table.add_column(column, overflow="fold")
    for page in taken.pages:
        share = page.boilerplate_share
        table.add_row(
            page.status,
            "-" if page.http_status is None else str(page.http_status),
            "-" if share is None else f"{share:.0%}",
            page.url,
            page.title if page.ok else page.reason or "",
        )
    Console(highlight=False).print(table)
    print(
        f"snapshot {taken.snapshot_id}: {taken.stored} pages stored, "
        f"{taken.skipped} skipped; replay with SCOUT_SOURCES=snapshot"
    )
