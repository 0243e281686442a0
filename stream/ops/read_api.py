"""The read API on the metrics port, when `SEGSTREAM_API__ENABLED` is on:

- `GET /v1/users/{id}`: 200 with the user's view as JSON (`stream.client.UserView.to_dict`),
  404 `{"error": "unknown user"}` for an unknown or erased user, 400 for an empty id or one
  longer than ids may be. The id is percent-decoded, so any id can be asked for
  (`/v1/users/a%2Fb` is the user `a/b`);
- `GET /v1/users?id=a&id=b`: 200 `{"users": {"a": {...}, "b": null}}`, at most `MAX_BATCH` ids;
- `GET /v1/rules/{item}` and `GET /v1/rules?top=N`: 200 `{"item": ..., "rules": [...]}`, the
  cross-sell rules of an item (none: `[]`) or the best over every item, best first;
- 503 `{"error": "unavailable"}` while Redis does not answer; 404 elsewhere under `/v1/`.

This room is the lowest of the service: it gets a lookup from the one that starts the server,
and knows nothing of Redis or of the client behind it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final
from urllib.parse import parse_qs, unquote

import orjson

from features.events import MAX_ID_LENGTH
from stream.errors import SegstreamError

logger = logging.getLogger(__name__)

# Views of the asked ids, keyed by id as asked (None: unknown or erased). Raises a
# SegstreamError when the store cannot answer now.
UserLookup = Callable[[Sequence[str]], Mapping[str, dict[str, Any] | None]]

# Cross-sell rules: of one item (str), or the top over every item (None), at most so many.
RulesLookup = Callable[[str | None, int], list[dict[str, Any]]]

ROOT: Final = "/v1/"
USERS: Final = "/v1/users"
RULES: Final = "/v1/rules"
MAX_BATCH: Final = 100
TOP_RULES: Final = 10


def answer(lookup: UserLookup, target: str, rules: RulesLookup | None = None) -> tuple[int, bytes]:
    """Status and JSON body for a request target (path and query) under `/v1/`."""
    path, _, query = target.partition("?")
    try:
        if path.startswith(USERS + "/"):
            return _one(lookup, path.removeprefix(USERS + "/"))
        if path == USERS:
            return _many(lookup, query)
        if rules is not None and (path == RULES or path.startswith(RULES + "/")):
            return _rules(rules, path.removeprefix(RULES).removeprefix("/"), query)
    except SegstreamError as exc:
        logger.warning("read API unavailable: %s", exc)
        return _error(503, "unavailable")
    except Exception:  # a bug must not cost the caller its connection without an answer
        logger.exception("read API failed")
        return _error(500, "internal error")
    return _error(404, "not found: try /v1/users/{id}, /v1/users?id=... or /v1/rules/{item}")


def _one(lookup: UserLookup, quoted: str) -> tuple[int, bytes]:
    try:
        user = unquote(quoted, errors="strict")
    except UnicodeDecodeError:
        return _error(400, "ids must be percent-encoded UTF-8")
    if problem := _problem(user):
        return _error(400, problem)
    view = lookup([user]).get(user)
    if view is None:
        return _error(404, "unknown user")
    return 200, orjson.dumps(view)


def _many(lookup: UserLookup, query: str) -> tuple[int, bytes]:
    try:
        users = parse_qs(query, keep_blank_values=True, errors="strict").get("id", [])
    except UnicodeDecodeError:
        return _error(400, "ids must be percent-encoded UTF-8")
    if not users:
        return _error(400, "no id: ask /v1/users/{id} or /v1/users?id=a&id=b")
    if len(users) > MAX_BATCH:
        return _error(400, f"{len(users)} ids, at most {MAX_BATCH} a request")
    for user in users:
        if problem := _problem(user):
            return _error(400, problem)
    found = lookup(users)
    return 200, orjson.dumps({"users": {user: found.get(user) for user in users}})


def _rules(rules: RulesLookup, quoted: str, query: str) -> tuple[int, bytes]:
    try:
        item = unquote(quoted, errors="strict")
        asked = parse_qs(query, errors="strict").get("top", [str(TOP_RULES)])[-1]
    except UnicodeDecodeError:
        return _error(400, "items must be percent-encoded UTF-8")
    if not asked.isdigit() or not 1 <= int(asked) <= MAX_BATCH:
        return _error(400, f"top must be a whole number from 1 to {MAX_BATCH}")
    if len(item) > MAX_ID_LENGTH:
        return _error(400, f"item longer than {MAX_ID_LENGTH} characters")
    found = rules(item or None, int(asked))
    return 200, orjson.dumps({"item": item or None, "rules": found})


def _problem(user: str) -> str:
    """Why an id cannot be one the service stores ("" when it can)."""
    if not user:
        return "empty user id"
    if len(user) > MAX_ID_LENGTH:
        return f"user id longer than {MAX_ID_LENGTH} characters"
    return ""


def _error(status: int, message: str) -> tuple[int, bytes]:
    return status, orjson.dumps({"error": message})
