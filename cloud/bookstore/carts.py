"""Shopping carts kept in one backend's memory, keyed by the client's cart cookie.

Deliberately not shared between backends: a client whose requests drift to another server
sees an empty cart, which is exactly what sticky sessions exist to prevent.
"""

from __future__ import annotations

from collections import OrderedDict

MAX_CARTS = 10_000
MAX_LINES = 100


class CartStore:
    """Bounded (least recently used carts are forgotten first) map of cart id -> lines."""

    __slots__ = ("_carts", "max_carts")

    def __init__(self, max_carts: int = MAX_CARTS) -> None:
        self._carts: OrderedDict[str, dict[str, int]] = OrderedDict()
        self.max_carts = max_carts

    def __len__(self) -> int:
        return len(self._carts)

    def lines(self, cart_id: str) -> dict[str, int]:
        cart = self._carts.get(cart_id)
        if cart is None:
            return {}
        self._carts.move_to_end(cart_id)
        return dict(cart)

    def add(self, cart_id: str, book_id: str, quantity: int) -> dict[str, int]:
        """Add ``quantity`` of a book; returns the cart. Raises ValueError when full."""
        cart = self._carts.get(cart_id)
        if cart is None:
            cart = self._carts[cart_id] = {}
            while len(self._carts) > self.max_carts:
                self._carts.popitem(last=False)
        if book_id not in cart and len(cart) >= MAX_LINES:
            raise ValueError(f"a cart holds at most {MAX_LINES} different books")
        cart[book_id] = cart.get(book_id, 0) + quantity
        self._carts.move_to_end(cart_id)
        return dict(cart)

    def remove(self, cart_id: str, book_id: str) -> bool:
        cart = self._carts.get(cart_id)
        return cart is not None and cart.pop(book_id, None) is not None

    def clear(self, cart_id: str) -> None:
        self._carts.pop(cart_id, None)
