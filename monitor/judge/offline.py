"""The offline judge: a deterministic text-overlap grader, not an LLM."""

from __future__ import annotations

import logging
import math

from monitor.judge.base import Grading, GradingInput, MetricScore, to_scale
from monitor.judge.report import (
    ParsedReport,
    _ReadSources,
    _resolve,
    normalize_url,
    parse_report,
)
from monitor.judge.text import _PageIndex, _Sentence, content_stems, report_sentences

logger = logging.getLogger(__name__)

OFFLINE_JUDGE_MODEL = "offline/overlap-judge-1"
OFFLINE_JUDGE_VERSION = "offline-overlap-1"

_MIN_CLAIM_WORDS = 3
_KEY_POINT_SHARE = 0.6


class OfflineJudge:
    """A deterministic text-overlap grader: not an LLM, and named so in every run.

    It measures what word overlap can measure and nothing more:

    - grounding: for each claim sentence of the report (three or more content
      words), the largest share of its words found in two consecutive sentences
      of a page it cites, averaged over claim sentences. An uncited claim, or one
      citing a source the agent did not read, counts as 0. A claim whose cited
      pages have no stored text is skipped, since support cannot be measured.
    - coverage: the share of the golden key points for which one sentence of the
      report holds most (60%) of the key point's content words, after stemming.
    - citations: the share of ``[n]`` markers that resolve to a source the agent
      read; a report with no markers gets the lowest score.

    Each share maps to 1 + 4 * share. Paraphrase and synonyms are invisible to it
    and a fluent fabrication that reuses a page's words can fool it: use it to run
    the loop without a key and to catch gross regressions, not as a quality bar.
    """

    model = OFFLINE_JUDGE_MODEL
    version = OFFLINE_JUDGE_VERSION

    def grade(self, item: GradingInput) -> Grading:
        parsed = parse_report(item.report)
        sentences = report_sentences(parsed.body)
        read = _ReadSources(item.sources)
        scores = {
            "grounding": self._grounding(parsed, sentences, read, item.pages),
            "coverage": self._coverage(sentences, item.question.key_points),
            "citations": self._citations(parsed, read),
        }
        return Grading(scores, self.model, self.version)

    def _grounding(
        self,
        parsed: ParsedReport,
        sentences: list[_Sentence],
        read: _ReadSources,
        pages: dict[str, str],
    ) -> MetricScore:
        indexes = {normalize_url(url): _PageIndex(text) for url, text in pages.items()}
        if not read.urls:
            # The agent read nothing: that is the agent's failure, measured as
            # the lowest grounding, not a judge that could not grade.
            return MetricScore(
                "grounding",
                to_scale(0.0),
                "The agent read no page, so nothing in the report is grounded.",
            )
        if not indexes:
            return MetricScore("grounding", None, None, "no page text to check against")

        claims = [s for s in sentences if len(s.stems) >= _MIN_CLAIM_WORDS]
        supports: list[float] = []
        uncited = 0
        for claim in claims:
            urls = {_resolve(parsed, read, n) for n in claim.markers} - {None}
            if not claim.markers:
                uncited += 1
            found = [indexes[url] for url in urls if url in indexes]
            if claim.markers and urls and not found:
                continue  # cites read pages whose text was not kept
            supports.append(
                max((page.support(claim.stems) for page in found), default=0)
            )

        ratio = sum(supports) / len(supports) if supports else 0.0
        rationale = (
            f"Claim sentences average {ratio:.0%} word support from the pages they "
            f"cite; {uncited} of {len(claims)} claim sentences cite nothing."
        )
        return MetricScore("grounding", to_scale(ratio), rationale)

    def _coverage(
        self, sentences: list[_Sentence], key_points: tuple[str, ...]
    ) -> MetricScore:
        if not key_points:
            return MetricScore("coverage", None, None, "the question has no key points")

        missing = [
            point for point in key_points if not _key_point_found(point, sentences)
        ]
        found = len(key_points) - len(missing)
        rationale = f"{found} of {len(key_points)} key points found in the report"
        if missing:
            rationale += "; missing: " + "; ".join(_clip(p, 60) for p in missing[:2])
        return MetricScore(
            "coverage", to_scale(found / len(key_points)), rationale + "."
        )

    def _citations(self, parsed: ParsedReport, read: _ReadSources) -> MetricScore:
        total = len(parsed.markers)
        valid = sum(_resolve(parsed, read, n) is not None for n in parsed.markers)
        ratio = valid / total if total else 0.0
        rationale = (
            f"{valid} of {total} citation markers resolve to a source the agent read."
            if total
            else "The report has no citation markers."
        )
        return MetricScore("citations", to_scale(ratio), rationale)


def _key_point_found(point: str, sentences: list[_Sentence]) -> bool:
    wanted = content_stems(point)
    if not wanted:
        return False
    needed = math.ceil(_KEY_POINT_SHARE * len(wanted))
    return any(len(wanted & sentence.stems) >= needed for sentence in sentences)


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"
