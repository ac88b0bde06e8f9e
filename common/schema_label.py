"""Which column of a drafted schema is the label, and which of its values is positive.

Used by :func:`common.schema_draft.draft_schema`. The guess is the column named most
like a label (:data:`LABEL_NAMES`), never a worse-named one: when the best-named
column cannot be a label (rows without a value, one value, more than two), drafting
fails with a :class:`~common.errors.SchemaError` that names the column, says why and
what to do. A model trained silently on another column would predict the wrong thing
(new-user review, 2026-12-06: ``y`` with 40 blanks made ``default``, a feature of
UCI Bank Marketing, the label).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from fedcollab.common.errors import SchemaError
from fedcollab.common.schema import MISSING_TOKENS, BinaryValues

__all__ = [
    "LABEL_NAMES",
    "guess_label",
    "is_missing",
    "positive_and_negative",
    "spelled",
    "two_values",
]

#: Names a label column goes by, most label-like first (compared case-insensitively).
#: Generic outcome names come first: a column called ``y`` or ``target`` is the label
#: in practice. Business outcomes follow, the ones almost always yes/no before
#: ``revenue`` (often an amount). ``default`` is last: in credit data it is as often a
#: *feature* (UCI Bank Marketing's ``default``, "has credit in default?", beside the
#: label ``y``) as the label, so it is the guess only when nothing else is named like
#: one. Only the best-named column is ever the guess (see :func:`guess_label`).
LABEL_NAMES = (
    "label",
    "target",
    "y",
    "class",
    "outcome",
    "churn",
    "converted",
    "purchase",
    "purchased",
    "revenue",
    "default",
)
#: How many distinct values an error message quotes, and how much of each.
_SHOWN_VALUES = 6
_SHOWN_CHARS = 24
#: Spellings read as the positive value of a two-valued label (lower-case).
_POSITIVE = {"true", "1", "yes", "y", "t", "positive", "pos", "1.0"}


def is_missing(value: str) -> bool:
    """A value the loader reads as missing (:data:`common.schema.MISSING_TOKENS`)."""
    return value.lower() in MISSING_TOKENS


def two_values(values: list[str]) -> list[str] | None:
    """The two distinct values (lower-case, sorted) of a column with no missing value."""
    if any(is_missing(v) for v in values):
        return None
    distinct = sorted({v.lower() for v in values})
    return distinct if len(distinct) == 2 else None


def guess_label(
    path: Path,
    columns: dict[str, list[str]],
    *,
    exclude: set[str | None],
    one_class_ok: bool = False,
) -> tuple[str | None, list[str]]:
    """The best-named label column, and the other columns named like a label.

    The best-named column is the guess or an error, never skipped: when it is not
    two-valued in every row, a worse-named column (``default`` beside ``y`` in Bank
    Marketing) is almost certainly a feature, and a model trained on it would be
    wrong without a word. :class:`SchemaError` then says why and what to do.
    """
    ranked = sorted(
        (LABEL_NAMES.index(name.lower()), i, name)
        for i, name in enumerate(columns)
        if name not in exclude and name.lower() in LABEL_NAMES
    )
    if not ranked:
        return None, []
    best = ranked[0][2]
    error = _label_error(path, best, columns[best], guessed=True, one_class_ok=one_class_ok)
    if error is not None:
        raise error
    return best, [name for _, _, name in ranked[1:]]


def _shown(values: Sequence[str]) -> str:
    """Up to :data:`_SHOWN_VALUES` values, quoted and truncated, for a message."""
    quoted = [
        repr(v if len(v) <= _SHOWN_CHARS else v[: _SHOWN_CHARS - 3] + "...")
        for v in values[:_SHOWN_VALUES]
    ]
    more = len(values) - _SHOWN_VALUES
    return ", ".join(quoted) + (f", ... ({more:,} more)" if more > 0 else "")


def _label_error(
    path: Path, name: str, values: list[str], *, guessed: bool, one_class_ok: bool = False
) -> SchemaError | None:
    """Why ``name`` cannot be a two-valued label (as an error to raise), or None if it can
    (with ``one_class_ok``, also when every row holds the same value: the other one is
    given as --positive or --negative)."""
    present = [v for v in values if not is_missing(v)]
    n_missing = len(values) - len(present)
    distinct = {v.lower() for v in present}
    seen = _shown(sorted(set(present), key=lambda v: (v.lower(), v)))
    if n_missing == 0 and (len(distinct) == 2 or (one_class_ok and len(distinct) == 1)):
        return None
    if guessed:
        what = f"column {name!r} is named like the label but cannot be one"
        other = "pass --label COLUMN to choose the label column (--no-label if there is none)"
    else:
        what = f"--label {name!r} cannot be the label"
        other = "choose another --label COLUMN (--no-label if there is none)"
    problems = [f"{n_missing:,} of {len(values):,} rows have no value"] if n_missing else []
    hint = other
    if not distinct:
        problems = ["it is empty in every row"]
    elif len(distinct) == 1:
        problems.append(f"it holds only {seen} (a label has two values)")
        hint = f"check that {path.name} is the whole table; if this party's rows really "
        hint += "all have one class, name the other value: --positive VALUE (or --negative "
        hint += f"VALUE when {seen} is the positive one); or {other}"
    elif len(distinct) > 2:
        problems.append(
            f"it holds {len(distinct):,} distinct values ({seen}) where a label holds two "
            "(such as yes/no)"
        )
    else:
        problems[-1] += f" (the others hold {seen})"
        hint = f"fill in or drop the rows without a {name!r} value (every row needs a label), "
        hint += f"or {other}"
    return SchemaError(f"{path}: {what}: {'; '.join(problems)}", hint=hint)


def spelled(values: list[str], key: str) -> str:
    """The most frequent original spelling of ``key`` (compared lower-case)."""
    counts: dict[str, int] = {}
    for v in values:
        if v.lower() == key:
            counts[v] = counts.get(v, 0) + 1
    return max(sorted(counts), key=lambda v: (counts[v], v == v.lower()))


def positive_and_negative(
    path: Path,
    label: str,
    values: list[str],
    positive: str | None,
    notes: list[str],
    negative: str | None = None,
) -> BinaryValues | None:
    """The label's positive and negative spellings (None: the default true/false or 1/0).

    Two values in the file: ``positive`` (or ``negative``) chooses, else the one spelled
    like a positive (``yes``, ``true``, ...). One value in the file (a party whose rows
    all have one class): the other must be given, as ``positive`` or ``negative``."""
    one_class_ok = positive is not None or negative is not None
    error = _label_error(path, label, values, guessed=False, one_class_ok=one_class_ok)
    if error is not None:
        raise error
    distinct = sorted({v.lower() for v in values})
    given = [v.lower() for v in (positive, negative) if v is not None]
    if positive is not None and negative is not None and positive.lower() == negative.lower():
        raise SchemaError(
            f"--positive and --negative are both {positive!r}",
            hint="give the label's two different values",
        )
    if len(distinct) == 2 and any(v not in distinct for v in given):
        raise SchemaError(
            f"{' / '.join(repr(v) for v in (positive, negative) if v is not None)} is not a "
            f"value of {label!r} ({', '.join(distinct)})",
            hint="pass the label's values as they appear in the file",
        )
    if len(distinct) == 1 and distinct[0] not in given and len(given) == 2:
        raise SchemaError(
            f"{label!r} holds only {distinct[0]!r}, neither --positive {positive!r} nor "
            f"--negative {negative!r}",
            hint="one of the two must be the value in the file",
        )
    pos: str | None
    neg: str | None
    if positive is not None:
        pos = positive.lower()
        neg = (
            negative.lower()
            if negative is not None
            else next((v for v in distinct if v != pos), None)
        )
    elif negative is not None:
        neg = negative.lower()
        pos = next((v for v in distinct if v != neg), None)
    else:
        known = [v for v in distinct if v in _POSITIVE]
        if len(known) != 1:
            raise SchemaError(
                f"cannot tell which value of {label!r} is positive ({', '.join(distinct)})",
                hint=f"pass --positive VALUE (e.g. --positive {distinct[0]})",
            )
        pos = known[0]
        neg = next(v for v in distinct if v != pos)
    if pos is None or neg is None:
        only = distinct[0]
        flag = "--negative" if pos == only else "--positive"
        raise SchemaError(
            f"{label!r} holds only {only!r} in {path.name}: its other value is unknown",
            hint=f"pass {flag} VALUE too (the value this party's rows do not have)",
        )
    if (pos, neg) in (("true", "false"), ("1", "0")):
        return None  # the default spellings need no declaration
    true = spelled(values, pos) if pos in distinct else _given(pos, positive)
    false = spelled(values, neg) if neg in distinct else _given(neg, negative)
    n_pos = sum(v.lower() == pos for v in values)
    notes.append(
        f"label {label!r}: positive value {true!r} ({n_pos / len(values):.1%} of rows), "
        f"negative {false!r}"
        + (" (one class in this file: the other as given)" if len(distinct) == 1 else "")
    )
    return BinaryValues(true=(true,), false=(false,))


def _given(key: str, spelling: str | None) -> str:
    """A value absent from the file, spelled as the user gave it."""
    assert spelling is not None and spelling.lower() == key
    return spelling
