"""Where each section of the bundled Python reference lives on docs.python.org.

CPython ships the text of 79 documentation sections in ``pydoc_data.topics``,
keyed by their Sphinx label (``with``, ``typesseq``...). The local corpus gives
each section the URL of the page and anchor it was rendered from, so a report
cites a link a reader can open. Anchors are the section-title slugs Sphinx
generates; where a label shares its section with another label (``else`` and
``if``), the label's own anchor keeps the URLs distinct.

A label that is not in :data:`PYDOC_URLS` (a newer Python added it) gets
:func:`fallback_url`, the docs search page for that label, which always opens.
"""

from __future__ import annotations

import logging
from urllib.parse import quote

logger = logging.getLogger(__name__)

DOCS_ROOT = "https://docs.python.org/3/"

_REFERENCE = DOCS_ROOT + "reference/"
_COMPOUND = _REFERENCE + "compound_stmts.html"
_SIMPLE = _REFERENCE + "simple_stmts.html"
_EXPRESSIONS = _REFERENCE + "expressions.html"
_DATAMODEL = _REFERENCE + "datamodel.html"
_EXECMODEL = _REFERENCE + "executionmodel.html"
_LEXICAL = _REFERENCE + "lexical_analysis.html"
_STDTYPES = DOCS_ROOT + "library/stdtypes.html"

PYDOC_URLS: dict[str, str] = {
    # reference/compound_stmts
    "async": _COMPOUND + "#coroutines",
    "class": _COMPOUND + "#class-definitions",
    "compound": _COMPOUND + "#compound-statements",
    "else": _COMPOUND + "#else",
    "for": _COMPOUND + "#the-for-statement",
    "function": _COMPOUND + "#function-definitions",
    "if": _COMPOUND + "#the-if-statement",
    "try": _COMPOUND + "#the-try-statement",
    "while": _COMPOUND + "#the-while-statement",
    "with": _COMPOUND + "#the-with-statement",
    # reference/simple_stmts
    "assert": _SIMPLE + "#the-assert-statement",
    "assignment": _SIMPLE + "#assignment-statements",
    "augassign": _SIMPLE + "#augmented-assignment-statements",
    "break": _SIMPLE + "#the-break-statement",
    "continue": _SIMPLE + "#the-continue-statement",
    "del": _SIMPLE + "#the-del-statement",
    "global": _SIMPLE + "#the-global-statement",
    "import": _SIMPLE + "#the-import-statement",
    "nonlocal": _SIMPLE + "#the-nonlocal-statement",
    "pass": _SIMPLE + "#the-pass-statement",
    "raise": _SIMPLE + "#the-raise-statement",
    "return": _SIMPLE + "#the-return-statement",
    "yield": _SIMPLE + "#the-yield-statement",
    # reference/expressions
    "atom-identifiers": _EXPRESSIONS + "#identifiers-names",
    "atom-literals": _EXPRESSIONS + "#literals",
    "attribute-references": _EXPRESSIONS + "#attribute-references",
    "await": _EXPRESSIONS + "#await-expression",
    "binary": _EXPRESSIONS + "#binary-arithmetic-operations",
    "bitwise": _EXPRESSIONS + "#binary-bitwise-operations",
    "booleans": _EXPRESSIONS + "#boolean-operations",
    "calls": _EXPRESSIONS + "#calls",
    "comparisons": _EXPRESSIONS + "#comparisons",
    "conversions": _EXPRESSIONS + "#arithmetic-conversions",
    "dict": _EXPRESSIONS + "#dictionary-displays",
    "exprlists": _EXPRESSIONS + "#expression-lists",
    "in": _EXPRESSIONS + "#membership-test-operations",
    "lambda": _EXPRESSIONS + "#lambda",
    "lists": _EXPRESSIONS + "#list-displays",
    "operator-summary": _EXPRESSIONS + "#operator-precedence",
    "power": _EXPRESSIONS + "#the-power-operator",
    "shifting": _EXPRESSIONS + "#shifting-operations",
    "slicings": _EXPRESSIONS + "#slicings",
    "subscriptions": _EXPRESSIONS + "#subscriptions",
    "unary": _EXPRESSIONS + "#unary-arithmetic-and-bitwise-operations",
    # reference/datamodel
    "attribute-access": _DATAMODEL + "#customizing-attribute-access",
    "callable-types": _DATAMODEL + "#emulating-callable-objects",
    "context-managers": _DATAMODEL + "#with-statement-context-managers",
    "customization": _DATAMODEL + "#basic-customization",
    "numeric-types": _DATAMODEL + "#emulating-numeric-types",
    "objects": _DATAMODEL + "#objects-values-and-types",
    "sequence-types": _DATAMODEL + "#emulating-container-types",
    "specialnames": _DATAMODEL + "#special-method-names",
    "types": _DATAMODEL + "#the-standard-type-hierarchy",
    # reference/executionmodel
    "dynamic-features": _EXECMODEL + "#interaction-with-dynamic-features",
    "exceptions": _EXECMODEL + "#exceptions",
    "execmodel": _EXECMODEL + "#execution-model",
    "naming": _EXECMODEL + "#naming-and-binding",
    # reference/lexical_analysis
    "floating": _LEXICAL + "#floating-point-literals",
    "id-classes": _LEXICAL + "#reserved-classes-of-identifiers",
    "identifiers": _LEXICAL + "#identifiers",
    "imaginary": _LEXICAL + "#imaginary-literals",
    "integers": _LEXICAL + "#integer-literals",
    "numbers": _LEXICAL + "#numeric-literals",
    "strings": _LEXICAL + "#string-and-bytes-literals",
    # library/stdtypes
    "bltin-code-objects": _STDTYPES + "#code-objects",
    "bltin-ellipsis-object": _STDTYPES + "#the-ellipsis-object",
    "bltin-null-object": _STDTYPES + "#the-null-object",
    "bltin-type-objects": _STDTYPES + "#type-objects",
    "specialattrs": _STDTYPES + "#special-attributes",
    "string-methods": _STDTYPES + "#string-methods",
    "truth": _STDTYPES + "#truth-value-testing",
    "typesfunctions": _STDTYPES + "#functions",
    "typesmapping": _STDTYPES + "#mapping-types-dict",
    "typesmethods": _STDTYPES + "#methods",
    "typesmodules": _STDTYPES + "#modules",
    "typesseq": _STDTYPES + "#sequence-types-list-tuple-range",
    "typesseq-mutable": _STDTYPES + "#mutable-sequence-types",
    # other library pages
    "debugger": DOCS_ROOT + "library/pdb.html#module-pdb",
    "formatstrings": DOCS_ROOT + "library/string.html#format-string-syntax",
}

# Sections whose first line would repeat another section's title.
PYDOC_TITLES: dict[str, str] = {
    "else": 'The "if" statement: the "else" clause',
}


def fallback_url(label: str) -> str:
    """The docs search page for ``label``: opens on any Python version."""
    return f"{DOCS_ROOT}search.html?q={quote(label)}"


def pydoc_url(label: str) -> str:
    """The docs.python.org URL of the pydoc topic ``label``."""
    url = PYDOC_URLS.get(label)
    if url is None:
        logger.debug("pydoc topic %r has no mapped URL; using the search page", label)
        return fallback_url(label)
    return url


def pydoc_title(label: str, text: str) -> str:
    """A readable title: the mapped one, else the section's first line."""
    mapped = PYDOC_TITLES.get(label)
    if mapped is not None:
        return mapped
    first_line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return first_line or label
