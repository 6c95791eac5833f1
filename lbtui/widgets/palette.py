"""Server colours: mid-tone hues that read on dark and light backgrounds alike.

A server keeps its colour for the life of the app (assigned on first sight), so when a
server joins or leaves, the others' arcs on the ring do not change colour.
"""

from __future__ import annotations

COLOURS = (
    "#3b82f6",  # blue
    "#e4572e",  # vermilion
    "#17a398",  # teal
    "#c2469d",  # magenta
    "#d99a00",  # amber
    "#6a4c93",  # violet
    "#4c956c",  # green
    "#b5651d",  # brown
    "#1f8fbf",  # cyan
    "#d1495b",  # rose
    "#7a9a01",  # olive
    "#8d6cab",  # lavender
)


class ColourBook:
    """Gives each server name a stable colour."""

    __slots__ = ("_assigned",)

    def __init__(self) -> None:
        self._assigned: dict[str, str] = {}

    def colour(self, name: str) -> str:
        colour = self._assigned.get(name)
        if colour is None:
            colour = COLOURS[len(self._assigned) % len(COLOURS)]
            self._assigned[name] = colour
        return colour
