"""``python -m scout.costs --last-run``: what each node of the last run cost.

Reads the usage log that ``python -m scout`` writes (one JSON usage row per model
call; it holds the last run only) and prints calls, tokens, an illustrative cost
and seconds per node, most expensive first. Costs are recomputed from the token
counts with today's prices, so ``SCOUT_MODEL_PRICES`` applies to old logs too.
A count the server did not report is shown as ``?``, never as 0, and a total that
leaves some out says ``≥``. Works from the local log alone, with no account.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from rich.console import Console
from rich.table import Table
from rich.text import Text

from scout.config import get_settings
from scout.errors import ConfigError, ScoutError
from scout.observability import UsageRow, estimate_cost

logger = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILED, EXIT_OVER_BUDGET = 0, 1, 2

PRICES_NOTE = (
    "Prices are illustrative (US$ per million tokens, from MODEL_PRICES in "
    "scout/config.py); set SCOUT_MODEL_PRICES='{\"model\": [in, out]}' to use yours."
)


@dataclass
class Amount:
    """A sum over calls, some of which may not have reported the quantity."""

    known: float = 0.0
    unknown_calls: int = 0
    calls: int = 0

    def add(self, value: float | None) -> None:
        self.calls += 1
        if value is None:
            self.unknown_calls += 1
        else:
            self.known += value

    @property
    def value(self) -> float | None:
        """The sum, or ``None`` when no call reported it."""
        return None if self.calls and self.unknown_calls == self.calls else self.known

    def show(self, fmt: str) -> str:
        if self.value is None:
            return "?"
        prefix = "≥" if self.unknown_calls else ""
        return prefix + format(self.known, fmt)

    def as_json(self, as_int: bool) -> dict[str, Any]:
        value = self.value
        if value is not None and as_int:
            value = int(value)
        return {"value": value, "unknown_calls": self.unknown_calls}


@dataclass
class NodeCost:
    """The calls of one node (or of the whole run, for the TOTAL row)."""

    node: str
    calls: int = 0
    input_tokens: Amount = field(default_factory=Amount)
    output_tokens: Amount = field(default_factory=Amount)
    cost: Amount = field(default_factory=Amount)
    seconds: float = 0.0

    def add(self, row: UsageRow) -> None:
        self.calls += 1
        self.input_tokens.add(row.input_tokens)
        self.output_tokens.add(row.output_tokens)
        self.cost.add(estimate_cost(row.model, row.input_tokens, row.output_tokens))
        self.seconds += row.seconds

    @property
    def known_tokens(self) -> int:
        return int(self.input_tokens.known + self.output_tokens.known)

    def sort_key(self) -> tuple[float, int]:
        cost = self.cost.value
        return (-1.0 if cost is None else cost, self.known_tokens)

    def as_json(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "calls": self.calls,
            "input_tokens": self.input_tokens.as_json(as_int=True),
            "output_tokens": self.output_tokens.as_json(as_int=True),
            "cost_usd": self.cost.as_json(as_int=False),
            "seconds": round(self.seconds, 4),
        }


@dataclass
class CostReport:
    log: Path
    nodes: list[NodeCost]
    total: NodeCost
    unpriced_models: list[str]

    def as_json(self) -> dict[str, Any]:
        return {
            "log": str(self.log),
            "nodes": [node.as_json() for node in self.nodes],
            "total": self.total.as_json(),
            "unpriced_models": self.unpriced_models,
            "prices_note": PRICES_NOTE,
        }


def read_usage_log(path: Path) -> list[UsageRow]:
    """The rows of the usage log at ``path``; :class:`ConfigError` names the file
    and line of the first row that is not a usage row."""
    if not path.is_file():
        raise ConfigError(
            f'no usage log at {path}: run `python -m scout "question"` first'
        )
    rows = []
    with path.open(encoding="utf-8") as log:
        for number, line in enumerate(log, start=1):
            if line.strip():
                rows.append(_parse_row(line, path, number))
    return rows


def _parse_row(line: str, path: Path, number: int) -> UsageRow:
    try:
        data = json.loads(line)
        if not isinstance(data, dict):
            raise ValueError("expected a JSON object")
        return UsageRow(
            node=_typed(data, "node", str),
            model=_typed(data, "model", str),
            input_tokens=_optional_int(data, "input_tokens"),
            output_tokens=_optional_int(data, "output_tokens"),
            seconds=float(_typed(data, "seconds", (int, float))),
            cost=None,
        )
    except ValueError as error:
        raise ConfigError(
            f"{path}:{number}: not a usage row ({error}); "
            "delete the log and run `python -m scout` again"
        ) from None


def _typed(data: dict[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, kind):
        raise ValueError(f"{key!r} is {value!r}")
    return value


def _optional_int(data: dict[str, Any], key: str) -> int | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{key!r} is {value!r}")
    return value


def summarize(rows: Iterable[UsageRow], log: Path) -> CostReport:
    """Group ``rows`` by node, most expensive first (cost, then tokens)."""
    by_node: dict[str, NodeCost] = {}
    total = NodeCost("TOTAL")
    unpriced: set[str] = set()
    for row in rows:
        by_node.setdefault(row.node, NodeCost(row.node)).add(row)
        total.add(row)
        if get_settings().price_of(row.model) is None:
            unpriced.add(row.model)

    nodes = sorted(by_node.values(), key=NodeCost.sort_key, reverse=True)
    return CostReport(log, nodes, total, sorted(unpriced))


def render(report: CostReport, console: Console) -> None:
    table = Table(title=Text(f"Model usage by node ({report.log})"))
    for header in ("node", "calls", "in tok", "out tok", "est. $", "sec"):
        table.add_column(header, justify="left" if header == "node" else "right")
    for node in report.nodes:
        table.add_row(*map(Text, _cells(node)))
    table.add_section()
    table.add_row(*map(Text, _cells(report.total)))

    console.print(table)
    notes = [PRICES_NOTE]
    notes += [
        f"? no price for model {model}: add it to SCOUT_MODEL_PRICES"
        for model in report.unpriced_models
    ]
    for note in notes:
        console.print(note, soft_wrap=True, markup=False, highlight=False)


def _cells(node: NodeCost) -> tuple[str, ...]:
    return (
        node.node,
        str(node.calls),
        node.input_tokens.show(",.0f"),
        node.output_tokens.show(",.0f"),
        node.cost.show(".6f"),
        f"{node.seconds:.2f}",
    )


def budget_problem(report: CostReport, max_tokens: int) -> str | None:
    """One line when the run's known tokens exceed ``max_tokens``, else ``None``."""
    tokens = report.total.known_tokens
    if tokens <= max_tokens:
        return None
    at_least = "at least " if _has_unknown_tokens(report.total) else ""
    return (
        f"over budget: the run used {at_least}{tokens:,} tokens, "
        f"more than --max-tokens {max_tokens:,}"
    )


def _has_unknown_tokens(node: NodeCost) -> bool:
    return bool(node.input_tokens.unknown_calls or node.output_tokens.unknown_calls)


class _Parser(argparse.ArgumentParser):
    """Exit 1 on a bad command line: exit code 2 means over budget here."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_FAILED, f"error: {message}\n")


def _token_budget(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 0")
    return value


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = _Parser(
        prog="python -m scout.costs",
        description="Per-node model usage and illustrative cost of the last run.",
    )
    parser.add_argument(
        "--last-run",
        action="store_true",
        help="report the last run (the default: the log holds only the last run)",
    )
    parser.add_argument(
        "--log", type=Path, help="usage log to read (default: SCOUT_USAGE_LOG)"
    )
    parser.add_argument(
        "--max-tokens",
        type=_token_budget,
        metavar="N",
        help="exit 2 when the run used more than N tokens (input + output)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    try:
        log = args.log if args.log is not None else get_settings().usage_log
        report = summarize(read_usage_log(log), log)
    except ScoutError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILED

    if args.json:
        print(json.dumps(report.as_json(), indent=2, ensure_ascii=False))
    else:
        render(report, Console())

    problem = (
        None if args.max_tokens is None else budget_problem(report, args.max_tokens)
    )
    if problem is not None:
        print(problem, file=sys.stderr)
        return EXIT_OVER_BUDGET
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
