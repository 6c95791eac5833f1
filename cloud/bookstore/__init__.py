"""The bookstore: a real CRUD API for books behind the sample backend, plus a cart per backend."""

from cloud.bookstore.carts import CartStore
from cloud.bookstore.model import Problem, isbn_is_valid, make_isbn13, validate_book
from cloud.bookstore.repository import BookRepository, Page, SqliteBookRepository, open_repository
from cloud.bookstore.routes import CART_COOKIE, CART_KEY, NAME_KEY, REPO_KEY, add_bookstore_routes

__all__ = [
    "CART_COOKIE",
    "CART_KEY",
    "NAME_KEY",
    "REPO_KEY",
    "BookRepository",
    "CartStore",
    "Page",
    "Problem",
    "SqliteBookRepository",
    "add_bookstore_routes",
    "isbn_is_valid",
    "make_isbn13",
    "open_repository",
    "validate_book",
]
