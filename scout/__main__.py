"""``python -m scout "question"``: research one question and print the report.

The plan is approved automatically unless ``--review`` is given, in which case
the plan is shown and you answer approve, edit (type new queries) or reject.
Model usage goes to the usage log for ``python -m scout.costs --last-run``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import uuid
from typing import NoReturn

from scout.config import get_settings
from scout.errors import ConfigError, ScoutError

EXIT_OK, EXIT_FAILED, EXIT_REJECTED, EXIT_USAGE = 0, 1, 3, 64


class _Parser(argparse.ArgumentParser):
    """argparse exits 2 on a bad command line; here 2 is kept for alerts."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        print(f"error: {message}", file=sys.stderr)
        sys.exit(EXIT_USAGE)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = _Parser(
        prog="python -m scout", description="Research one question with Scout."
    )
    parser.add_argument("question", help="the question to research")
    parser.add_argument(
        "--review",
        action="store_true",
        help="show the plan and wait for approve / edit / reject before researching",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser.parse_args(argv)


def _ask(prompt: str) -> str:
    """One line from standard input; the prompt goes to stderr, away from the
    report. A closed input is an error, never a silent approval."""
    print(prompt, end="", file=sys.stderr, flush=True)
    line = sys.stdin.readline()
    if not line:
        raise ConfigError(
            "no answer on standard input, so the plan was not approved: "
            "answer approve, edit or reject, or run without --review"
        )
    return line.strip()


def _ask_decision(plan: dict[str, list[str]]) -> dict[str, object]:
    print("Plan:", file=sys.stderr)
    for query in plan["queries"]:
        print(f"  - {query}", file=sys.stderr)
    while True:
        answer = _ask("approve, edit or reject? [approve] ").lower() or "approve"
        if answer in ("a", "approve"):
            return {"action": "approve"}
        if answer in ("e", "edit"):
            queries = [
                q.strip() for q in _ask("queries, separated by ';': ").split(";")
            ]
            return {"action": "edit", "plan": {"queries": [q for q in queries if q]}}
        if answer in ("r", "reject"):
            return {"action": "reject", "reason": _ask("reason: ")}
        print(f"{answer!r} is not an answer here", file=sys.stderr)


def research(question: str, *, review: bool) -> int:
    from langgraph.checkpoint.memory import InMemorySaver

    from scout.agent import checked_question, make_context, run_question
    from scout.graph import build_graph
    from scout.models import describe_backend
    from scout.observability import UsageMeter, flush_traces

    # An empty question is refused before any model or corpus is set up.
    question = checked_question(question)
    settings = get_settings()
    print(describe_backend(settings), file=sys.stderr)
    context = make_context(settings, auto_approve=not review)
    graph = build_graph(InMemorySaver() if review else None)
    meter = UsageMeter(log_path=settings.usage_log)
    meter.start_log()
    thread_id = f"cli-{uuid.uuid4().hex[:12]}"

    try:
        run = run_question(
            question, thread_id=thread_id, context=context, graph=graph, meter=meter
        )
        while run.status == "awaiting_approval":
            decision = _ask_decision(run.state["__interrupt__"][0].value["plan"])
            run = run_question(
                question,
                thread_id=thread_id,
                context=context,
                graph=graph,
                meter=meter,
                resume=decision,
            )
    finally:
        flush_traces()

    if run.status == "rejected":
        print(f"plan rejected: {run.state.get('rejection')}", file=sys.stderr)
        return EXIT_REJECTED
    print(run.report)
    print(
        f"\n({len(run.sources)} sources read, {run.worker_turns} worker turns, "
        f"{run.seconds:.1f} s; usage in {settings.usage_log})",
        file=sys.stderr,
    )
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return research(args.question, review=args.review)
    except ScoutError as error:
        if args.debug:
            raise
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
