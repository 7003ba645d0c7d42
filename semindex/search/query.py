"""The lexical query language, parsed by a parser no input can crash.

Web-search syntax, read the way a search engine's users expect:

  budget deficit          plain words are OR-ed and ranked (BM25 puts records holding every word first)
  "world cup"             a quoted phrase must appear, words in that order
  "world cup" OR euro     OR between terms: either may match (a phrase joined by OR is no longer required)
  -cricket  -"test match" a leading minus excludes a word or a phrase

Anything else is text: punctuation runs, lone or repeated dashes and quotes, symbols. A dash starts
an exclusion only when a word or a quote follows it directly; an unclosed quote runs to the end. What
becomes a lexeme is PostgreSQL's own text-search parser's business (semindex.search_tsquery in
sql/schema.sql builds the match query from these parts without parsing operators), so nothing here
can produce a query PostgreSQL refuses.

Bounds (InvalidInput names the problem): at most MAX_QUERY_CHARS characters, at most MAX_TERMS terms;
a query with no word left to search for is refused by lexical search.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from semindex.errors import InvalidInput

MAX_QUERY_CHARS = 4000
MAX_TERMS = 64

# A quoted phrase (to the closing quote, or the end), or a run of non-space characters.
_TOKEN = re.compile(r'(-*)"([^"]*)"?|(\S+)')
_WORD_CHARACTER = re.compile(r"\w")


@dataclass(frozen=True)
class ParsedQuery:
    words: tuple[str, ...] = ()  # optional, ranked
    phrases: tuple[str, ...] = ()  # optional phrases (joined by OR), ranked
    required: tuple[str, ...] = ()  # phrases that must appear, ranked
    excluded: tuple[str, ...] = ()  # words and phrases that must not appear

    @property
    def positive(self) -> tuple[str, ...]:
        """Every text that ranks: words, then phrases."""
        return (*self.words, *self.phrases, *self.required)

    @property
    def searchable(self) -> bool:
        return bool(self.positive)

    @property
    def text(self) -> str:
        """The ranked text, for the statistics lookup (its lexemes are the query's terms)."""
        return " ".join(self.positive)


def _has_word(text: str) -> bool:
    return bool(_WORD_CHARACTER.search(text))


def parse_query(text: str) -> ParsedQuery:
    """The query's parts; InvalidInput when it is too long or has too many terms."""
    if not isinstance(text, str):
        raise InvalidInput(f"the query must be text, got {type(text).__name__}")
    if len(text) > MAX_QUERY_CHARS:
        raise InvalidInput(f"the query is {len(text)} characters long; at most {MAX_QUERY_CHARS} are searched")
    # (kind, text, excluded) in order; kind is "word" or "phrase"; "or" marks an OR between terms.
    tokens: list[tuple[str, str, bool]] = []
    for match in _TOKEN.finditer(text):
        dashes, phrase, bare = match.groups()
        if bare is not None:
            if bare in ("OR", "or", "|"):
                tokens.append(("or", bare, False))
                continue
            excluded = bare.startswith("-") and _has_word(bare.lstrip("-")[:1])
            word = bare.lstrip("-") if excluded else bare
            if _has_word(word):
                tokens.append(("word", word, excluded))
        elif _has_word(phrase):
            tokens.append(("phrase", " ".join(phrase.split()), bool(dashes)))
    words, phrases, required, excluded = [], [], [], []
    for index, (kind, value, negated) in enumerate(tokens):
        if kind == "or":
            continue
        if negated:
            excluded.append(value)
        elif kind == "word":
            words.append(value)
        else:
            joined = any(tokens[i][0] == "or" for i in (index - 1, index + 1) if 0 <= i < len(tokens))
            (phrases if joined else required).append(value)
    parsed = ParsedQuery(*(tuple(dict.fromkeys(part)) for part in (words, phrases, required, excluded)))
    terms = len(parsed.positive) + len(parsed.excluded)
    if terms > MAX_TERMS:
        raise InvalidInput(f"the query has {terms} distinct terms; at most {MAX_TERMS} are searched")
    return parsed
