"""What a book is, and the reasons a submitted one is refused (the API's 422 body)."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

FIELDS = ("title", "author", "year", "isbn", "price", "stock")
REQUIRED = ("title", "author")
MAX_TEXT = 200


@dataclass(slots=True, frozen=True)
class Problem:
    """One reason a request was refused, named by field so a client can show it."""

    field: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"field": self.field, "reason": self.reason}


def isbn_is_valid(isbn: str) -> bool:
    """ISBN-10 or ISBN-13 with a correct check digit (hyphens and spaces ignored)."""
    digits = isbn.replace("-", "").replace(" ", "")
    if len(digits) == 13 and digits.isdigit():
        total = sum(int(d) * (1 if i % 2 == 0 else 3) for i, d in enumerate(digits))
        return total % 10 == 0
    if len(digits) == 10 and digits[:9].isdigit() and (digits[9].isdigit() or digits[9] in "xX"):
        values = [int(d) for d in digits[:9]] + [10 if digits[9] in "xX" else int(digits[9])]
        return sum((10 - i) * v for i, v in enumerate(values)) % 11 == 0
    return False


def make_isbn13(n: int) -> str:
    """A valid ISBN-13 for the number ``n`` (for seeding and load generation)."""
    body = f"978{n % 10**9:09d}"
    total = sum(int(d) * (1 if i % 2 == 0 else 3) for i, d in enumerate(body))
    return body + str((10 - total % 10) % 10)


def _text(data: dict[str, Any], field: str, problems: list[Problem]) -> str | None:
    value = data[field]
    if not isinstance(value, str):
        problems.append(Problem(field, "must be a string"))
        return None
    value = value.strip()
    if not value:
        problems.append(Problem(field, "must not be empty"))
    elif len(value) > MAX_TEXT:
        problems.append(Problem(field, f"must be at most {MAX_TEXT} characters"))
    return value


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def validate_book(data: Any, *, partial: bool = False) -> tuple[dict[str, Any], list[Problem]]:
    """Check a submitted book; return the cleaned fields and every problem found.

    ``partial`` is PATCH: only the fields present are checked and nothing is required.
    All problems are reported at once, so a client fixes its form in one round trip.
    """
    if not isinstance(data, dict):
        return {}, [Problem("", "expected a JSON object")]
    problems: list[Problem] = []
    clean: dict[str, Any] = {}
    for field in sorted(set(data) - set(FIELDS)):
        problems.append(Problem(field, "unknown field"))
    if not partial:
        for field in REQUIRED:
            if field not in data:
                problems.append(Problem(field, "is required"))
    for field in ("title", "author"):
        if field in data:
            clean[field] = _text(data, field, problems)
    if "year" in data and data["year"] is not None:
        year = data["year"]
        this_year = datetime.date.today().year
        if not _integer(year) or not -3000 <= year <= this_year + 1:
            problems.append(Problem("year", f"must be a whole number from -3000 to {this_year + 1}"))
        else:
            clean["year"] = year
    elif "year" in data:
        clean["year"] = None
    if "isbn" in data and data["isbn"] is not None:
        isbn = data["isbn"]
        if not isinstance(isbn, str) or not isbn_is_valid(isbn):
            problems.append(Problem("isbn", "must be a valid ISBN-10 or ISBN-13"))
        else:
            clean["isbn"] = isbn.replace("-", "").replace(" ", "").upper()
    elif "isbn" in data:
        clean["isbn"] = None
    if "price" in data:
        price = data["price"]
        if isinstance(price, bool) or not isinstance(price, (int, float)) or not 0 <= price <= 1_000_000:
            problems.append(Problem("price", "must be a number from 0 to 1000000"))
        else:
            clean["price"] = round(float(price), 2)
    if "stock" in data:
        stock = data["stock"]
        if not _integer(stock) or not 0 <= stock <= 10_000_000:
            problems.append(Problem("stock", "must be a whole number from 0 to 10000000"))
        else:
            clean["stock"] = stock
    if not partial:
        clean.setdefault("year", None)
        clean.setdefault("isbn", None)
        clean.setdefault("price", 0.0)
        clean.setdefault("stock", 0)
    return clean, problems


def validate_page(query: Any) -> tuple[dict[str, Any], list[Problem]]:
    """Check ``page``, ``per_page`` and ``q`` of a list request."""
    problems: list[Problem] = []
    out: dict[str, Any] = {"q": (query.get("q") or "").strip()[:MAX_TEXT]}
    for field, default, high in (("page", 1, 1_000_000), ("per_page", 20, 100)):
        raw = query.get(field)
        if raw is None or raw == "":
            out[field] = default
            continue
        try:
            value = int(raw)
        except ValueError:
            value = 0
        if not 1 <= value <= high:
            problems.append(Problem(field, f"must be a whole number from 1 to {high}"))
        out[field] = value
    return out, problems
