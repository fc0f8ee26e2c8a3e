"""The one path rule of credward: a permission's path grants itself and everything below it.

The WLCG and SciTokens token profiles give scope paths *prefix* semantics
(``storage.read:/store`` authorizes ``/store/artifacts/x``), and standard
validators read a ``*`` literally. So credward keeps wildcards out of tokens:

* a path is a tuple of parts, each of letters, digits, ``.``, ``_``, ``~`` or
  ``-``, never ``.`` or ``..`` (so a part can hold no ``/``, space or ``%``
  and rendering ``/a/b`` is injective);
* a trailing ``*`` part is accepted and means the same as leaving it off:
  ``[store, artifacts, "*"]`` is ``/store/artifacts``; ``["*"]`` alone is ``/``;
* a ``*`` anywhere else is refused: a prefix cannot say "any one part, then more".

The CRD (CEL), the admin API (credward.api), the scope renderer and the
validator all apply this module's rule.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from credward.errors import PathError

__all__ = [
    "MAX_PARTS",
    "MAX_PART_LENGTH",
    "MID_WILDCARD",
    "PART_RE",
    "WILDCARD",
    "Path",
    "PathError",
    "check_part",
    "covers",
    "normalize",
    "parse",
    "render",
    "render_given",
]

WILDCARD = "*"
MAX_PARTS = 16
MAX_PART_LENGTH = 64
PART_RE = re.compile(r"[A-Za-z0-9._~-]{1,64}")

Path = tuple[str, ...]


# The CRD's CEL rule on RoleBinding.spec.permissions[].path says the same words.
MID_WILDCARD = (
    "'*' may only be the last part of a path, as in [store, artifacts, '*']: a path already grants itself "
    "and everything below it, and token scopes cannot carry a wildcard in the middle; list each path you mean, "
    "e.g. [store, a, out] and [store, b, out], or grant their common prefix, e.g. [store]"
)


def check_part(part: str) -> str:
    """One literal path part, or :class:`PathError`."""
    if not PART_RE.fullmatch(part):
        raise PathError(
            f"path part {part[:MAX_PART_LENGTH]!r} must be 1-{MAX_PART_LENGTH} letters, digits, '.', '_', '~' or '-'"
        )
    if part in (".", ".."):
        raise PathError("path parts must not be '.' or '..'")
    return part


def normalize(parts: Iterable[str]) -> Path:
    """The canonical form of a permission path: a trailing ``*`` dropped, anything else checked.

    Idempotent: the root is ``()`` once normalized, and ``()`` stays the root.
    (Where users write paths, the CRD and :class:`credward.api.models.Permission`
    also want at least one part, so the root is written ``["*"]`` there.)
    Raises :class:`PathError` for a ``*`` that is not the last part, or a part
    outside the allowed characters.
    """
    given = tuple(parts)
    if not given:
        return given
    if len(given) > MAX_PARTS:
        raise PathError(f"a path has at most {MAX_PARTS} parts")
    body = given[:-1] if given[-1] == WILDCARD else given
    if WILDCARD in body:
        raise PathError(f"path {render_given(given)}: {MID_WILDCARD}")
    return tuple(check_part(p) for p in body)


def render_given(parts: tuple[str, ...]) -> str:
    """A path as the user wrote it, for messages: ``/a/*/b`` (parts cut to their allowed length)."""
    return "/" + "/".join(p[:MAX_PART_LENGTH] for p in parts[:MAX_PARTS])


def render(path: Path) -> str:
    """``/a/b`` for ``(a, b)``; ``/`` for the root."""
    return "/" + "/".join(path)


def parse(text: str) -> Path:
    """A path from its rendered form (as found in a token scope or a request), checked.

    ``/a/b/`` and ``/a//b`` are refused rather than guessed at; ``/`` is the root.
    """
    if not text.startswith("/"):
        raise PathError(f"path {text[:80]!r} must be absolute (start with '/')")
    if text == "/":
        return ()
    parts = text[1:].split("/")
    if len(parts) > MAX_PARTS:
        raise PathError(f"a path has at most {MAX_PARTS} parts")
    return tuple(check_part(p) for p in parts)


def covers(held: Path, wanted: Path) -> bool:
    """True if a grant on ``held`` authorizes ``wanted``: ``held`` is a prefix of it, part by part."""
    return len(held) <= len(wanted) and wanted[: len(held)] == held
