"""``monitor baseline``: pin, show or clear what the regression rule compares
against. Without a pin, a version is compared with the previous version's
newest MONITOR_BASELINE_RUNS passes."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

EXIT_OK = 0

app = typer.Typer(
    no_args_is_help=True,
    help="Pin, show or clear the baseline of the regression rule.",
)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON.")]
KeyOption = Annotated[
    str | None,
    typer.Option(
        "--version-key",
        help="prompt_version, model or git_sha (default MONITOR_VERSION_KEY).",
    ),
]


@app.command("set")
def set_baseline(
    reference: Annotated[
        str, typer.Argument(help="A run id, or a version of the version key.")
    ],
    version_key: KeyOption = None,
    runs: Annotated[
        int | None,
        typer.Option(min=1, help="Runs pinned (default MONITOR_BASELINE_RUNS)."),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Pin a run (with the passes of its version before it) or a version."""
    raise typer.Exit(
        set_command(reference, key=version_key, runs=runs, as_json=as_json)
    )


@app.command("show")
def show_baseline(version_key: KeyOption = None, as_json: JsonFlag = False) -> None:
    """The pinned baseline, and the one the rule would use for the newest pass."""
    raise typer.Exit(show_command(key=version_key, as_json=as_json))


@app.command("clear")
def clear_baseline(version_key: KeyOption = None) -> None:
    """Remove the pin: versions are compared with the previous version again."""
    raise typer.Exit(clear_command(key=version_key))


def _key(key: str | None) -> str:
    from monitor.alerts.baselines import VERSION_KEYS
    from monitor.settings import get_monitor_settings

    chosen = key or get_monitor_settings().version_key
    if chosen not in VERSION_KEYS:
        raise typer.BadParameter(
            f"{chosen!r}: use one of {', '.join(VERSION_KEYS)}",
            param_hint="--version-key",
        )
    return chosen


def set_command(
    reference: str, *, key: str | None, runs: int | None, as_json: bool
) -> int:
    from monitor.alerts.baselines import pin_baseline
    from monitor.settings import get_monitor_settings
    from monitor.store.db import open_database, session_factory

    settings = get_monitor_settings()
    chosen = _key(key)
    engine = open_database(settings, create=False)
    with session_factory(engine).begin() as session:
        pin = pin_baseline(session, reference, chosen, runs or settings.baseline_runs)
        shown = _pin_json(pin)

    if as_json:
        print(json.dumps(shown, indent=2))
    else:
        print(
            f"Pinned baseline {chosen}={pin.version}: {len(pin.run_ids)} run(s) "
            f"({', '.join(map(str, pin.run_ids))})"
        )
    return EXIT_OK


def show_command(*, key: str | None, as_json: bool) -> int:
    from monitor.alerts.baselines import active_pin, choose_baseline
    from monitor.alerts.evidence import passes
    from monitor.settings import get_monitor_settings
    from monitor.store.db import open_database, session_factory

    settings = get_monitor_settings()
    chosen = _key(key)
    engine = open_database(settings, create=False)
    with session_factory(engine)() as session:
        pin = active_pin(session, chosen)
        newest = passes(session, limit=1)
        choice = (
            choose_baseline(session, newest[0], chosen, settings.baseline_runs)
            if newest
            else None
        )
        shown: dict[str, Any] = {
            "version_key": chosen,
            "pinned": _pin_json(pin) if pin else None,
            "newest_pass": newest[0].id if newest else None,
            "in_use": None
            if choice is None
            else {
                "version": choice.version,
                "pinned": choice.pinned,
                "runs": [run.id for run in choice.runs],
            },
        }

    if as_json:
        print(json.dumps(shown, indent=2))
        return EXIT_OK
    _print_show(shown)
    return EXIT_OK


def _print_show(shown: dict[str, Any]) -> None:
    key, pin, in_use = shown["version_key"], shown["pinned"], shown["in_use"]
    if pin:
        print(
            f"Pinned for {key}: {pin['version']} since {pin['created_at']}, "
            f"runs {', '.join(pin['run_ids'])}"
        )
    else:
        print(f"No pinned baseline for {key}.")
    if in_use is None:
        print(
            "The regression rule has no baseline for the newest pass yet "
            "(no earlier version with comparable passes)."
        )
        return
    source = "the pin" if in_use["pinned"] else "the previous version"
    print(
        f"For the newest pass {shown['newest_pass']} the rule uses {source}: "
        f"{key}={in_use['version']}, runs {', '.join(in_use['runs'])}"
    )


def clear_command(*, key: str | None) -> int:
    from monitor.alerts.baselines import clear_pins
    from monitor.settings import get_monitor_settings
    from monitor.store.db import open_database, session_factory

    chosen = _key(key)
    engine = open_database(get_monitor_settings(), create=False)
    with session_factory(engine).begin() as session:
        cleared = clear_pins(session, chosen)
        versions = [pin.version for pin in cleared]

    if versions:
        print(f"Cleared the pinned baseline for {chosen} ({', '.join(versions)}).")
    else:
        print(f"No pinned baseline for {chosen}; nothing to clear.")
    return EXIT_OK


def _pin_json(pin: Any) -> dict[str, Any]:
    return {
        "id": pin.id,
        "version_key": pin.version_key,
        "version": pin.version,
        "run_ids": [str(run_id) for run_id in pin.run_ids],
        "created_at": pin.created_at.isoformat(),
        "active": pin.active,
    }
