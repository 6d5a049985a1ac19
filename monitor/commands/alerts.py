"""``monitor alerts``: what is firing, what fired lately, and whether notices
get through (``monitor alerts test``)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

EXIT_OK, EXIT_FAILED = 0, 1

app = typer.Typer(
    help="Alerts: open and recent ones, and a test notice through every sink."
)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON.")]
LastOption = Annotated[
    int, typer.Option("--last", "-n", min=0, help="Resolved alerts shown.")
]


@app.callback(invoke_without_command=True)
def alerts(ctx: typer.Context) -> None:
    """Open and recent alerts (`monitor alerts list`), or a test notice."""
    if ctx.invoked_subcommand is None:
        raise typer.Exit(list_command(last=20, as_json=False))


@app.command("list")
def list_alerts(last: LastOption = 20, as_json: JsonFlag = False) -> None:
    """Every open alert, then the most recent resolved ones, with delivery state."""
    raise typer.Exit(list_command(last=last, as_json=as_json))


@app.command("test")
def test_alerts() -> None:
    """Send a test notice through every configured sink and report each result."""
    raise typer.Exit(test_command())


def list_command(*, last: int, as_json: bool) -> int:
    from monitor.alerts.lifecycle import alert_json, recent_alerts
    from monitor.settings import get_monitor_settings
    from monitor.store.db import open_database, session_factory

    engine = open_database(get_monitor_settings(), create=False)
    with session_factory(engine)() as session:
        rows = recent_alerts(session, last)

    if as_json:
        print(
            json.dumps(
                [
                    {
                        **alert_json(row.alert),
                        "deliveries": row.deliveries,
                        "last_error": row.last_error,
                    }
                    for row in rows
                ],
                indent=2,
            )
        )
        return EXIT_OK
    _print_table(rows)
    return EXIT_OK


def _print_table(rows: list[Any]) -> None:
    """Two lines per alert: state, check and delivery; then the alert itself."""
    if not rows:
        print("No alerts yet.")
        return
    firing = sum(row.alert.state == "firing" for row in rows)
    print(f"{firing} firing, {len(rows) - firing} recently resolved")
    for row in rows:
        alert = row.alert
        until = (
            f" until {alert.resolved_at:%Y-%m-%d %H:%M}" if alert.resolved_at else ""
        )
        notices = "; ".join(
            f"{sink} " + ", ".join(f"{n} {state}" for state, n in states.items())
            for sink, states in row.deliveries.items()
        )
        if row.last_error:
            notices += f" (last error: {row.last_error})"
        print(
            f"\n{alert.state.upper():<8} #{alert.id} {alert.fingerprint} since "
            f"{alert.created_at:%Y-%m-%d %H:%M}{until} UTC; notices: {notices or '-'}"
        )
        print(f"  {alert.message}")


def test_command() -> int:
    from monitor.alerts.lifecycle import send_test_notice
    from monitor.alerts.options import alert_options
    from monitor.settings import get_monitor_settings
    from monitor.store.db import open_database

    options = alert_options()
    engine = open_database(get_monitor_settings(), create=True)
    results = send_test_notice(engine, options)
    for sink, error in results:
        if error is None:
            print(f"{sink}: delivered")
        else:
            print(
                f"{sink}: FAILED: {error} (a test notice is not retried: fix the "
                "sink and run `monitor alerts test` again)"
            )
    if options.webhook_url is None:
        print("webhook: not configured (set MONITOR_WEBHOOK_URL to add it)")
    return EXIT_OK if all(error is None for _, error in results) else EXIT_FAILED
