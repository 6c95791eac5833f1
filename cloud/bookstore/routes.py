"""The bookstore's HTTP API: books CRUD with search and pages, and a per-backend cart.

Errors are JSON: 400 for a body that is not JSON, 404 for an unknown book, 409 for a
duplicate ISBN, 422 with ``reasons`` (field and reason each) for invalid input.
"""

from __future__ import annotations

import secrets
from typing import Any

from aiohttp import web

from cloud.bookstore.carts import CartStore
from cloud.bookstore.model import Problem, validate_book, validate_page
from cloud.bookstore.repository import BookRepository, DuplicateIsbn

NAME_KEY: web.AppKey[str] = web.AppKey("name", str)
REPO_KEY: web.AppKey[BookRepository] = web.AppKey("repository", object)  # type: ignore[arg-type]
CART_KEY: web.AppKey[CartStore] = web.AppKey("carts", CartStore)
CART_COOKIE = "lbtui_cart"


def _server(request: web.Request) -> str:
    return request.app.get(NAME_KEY, "")


def _invalid(problems: list[Problem]) -> web.Response:
    return web.json_response(
        {"error": "validation failed", "reasons": [p.to_dict() for p in problems]}, status=422
    )


async def _json_body(request: web.Request) -> Any:
    try:
        return await request.json()
    except ValueError:
        raise web.HTTPBadRequest(
            text='{"error": "body must be JSON"}', content_type="application/json"
        ) from None


def _not_found(book_id: str) -> web.Response:
    return web.json_response({"error": f"no book with id {book_id!r}"}, status=404)


def _conflict() -> web.Response:
    return web.json_response({"error": "another book already has this isbn"}, status=409)


async def list_books(request: web.Request) -> web.Response:
    params, problems = validate_page(request.query)
    if problems:
        return _invalid(problems)
    page = await request.app[REPO_KEY].list(params["q"], params["page"], params["per_page"])
    pages = (page.total + params["per_page"] - 1) // params["per_page"]
    return web.json_response(
        {
            "items": page.items,
            "total": page.total,
            "page": params["page"],
            "per_page": params["per_page"],
            "pages": pages,
            "server": _server(request),
        }
    )


async def create_book(request: web.Request) -> web.Response:
    fields, problems = validate_book(await _json_body(request))
    if problems:
        return _invalid(problems)
    try:
        book = await request.app[REPO_KEY].create(fields)
    except DuplicateIsbn:
        return _conflict()
    return web.json_response(book, status=201, headers={"Location": f"/books/{book['id']}"})


async def get_book(request: web.Request) -> web.Response:
    book_id = request.match_info["book_id"]
    book = await request.app[REPO_KEY].get(book_id)
    return web.json_response(book) if book else _not_found(book_id)


async def _update(request: web.Request, *, partial: bool) -> web.Response:
    book_id = request.match_info["book_id"]
    fields, problems = validate_book(await _json_body(request), partial=partial)
    if problems:
        return _invalid(problems)
    if not fields:
        book = await request.app[REPO_KEY].get(book_id)
        return web.json_response(book) if book else _not_found(book_id)
    try:
        book = await request.app[REPO_KEY].update(book_id, fields)
    except DuplicateIsbn:
        return _conflict()
    return web.json_response(book) if book else _not_found(book_id)


async def replace_book(request: web.Request) -> web.Response:
    return await _update(request, partial=False)


async def patch_book(request: web.Request) -> web.Response:
    return await _update(request, partial=True)


async def delete_book(request: web.Request) -> web.Response:
    book_id = request.match_info["book_id"]
    if await request.app[REPO_KEY].delete(book_id):
        return web.Response(status=204)
    return _not_found(book_id)


def _cart_id(request: web.Request) -> tuple[str, bool]:
    """The client's cart id from its cookie, or a new one (True: set the cookie)."""
    cart_id = request.cookies.get(CART_COOKIE, "")
    if cart_id and len(cart_id) <= 64 and cart_id.isalnum():
        return cart_id, False
    return secrets.token_hex(8), True


def _cart_response(request: web.Request, cart_id: str, new: bool, lines: dict[str, int], status: int = 200) -> web.Response:
    response = web.json_response(
        {
            "cart_id": cart_id,
            "server": _server(request),
            "items": [{"book_id": b, "quantity": q} for b, q in lines.items()],
            "total_items": sum(lines.values()),
        },
        status=status,
    )
    if new:
        response.set_cookie(CART_COOKIE, cart_id, httponly=True, samesite="Lax", path="/")
    return response


async def get_cart(request: web.Request) -> web.Response:
    cart_id, new = _cart_id(request)
    return _cart_response(request, cart_id, new, request.app[CART_KEY].lines(cart_id))


async def add_to_cart(request: web.Request) -> web.Response:
    data = await _json_body(request)
    problems: list[Problem] = []
    if not isinstance(data, dict):
        return _invalid([Problem("", "expected a JSON object")])
    book_id = data.get("book_id")
    quantity = data.get("quantity", 1)
    if not isinstance(book_id, str) or not book_id:
        problems.append(Problem("book_id", "is required and must be a string"))
    if isinstance(quantity, bool) or not isinstance(quantity, int) or not 1 <= quantity <= 1000:
        problems.append(Problem("quantity", "must be a whole number from 1 to 1000"))
    if problems:
        return _invalid(problems)
    assert isinstance(book_id, str)
    if await request.app[REPO_KEY].get(book_id) is None:
        return _not_found(book_id)
    cart_id, new = _cart_id(request)
    try:
        lines = request.app[CART_KEY].add(cart_id, book_id, quantity)
    except ValueError as exc:
        return _invalid([Problem("book_id", str(exc))])
    return _cart_response(request, cart_id, new, lines, status=201)


async def remove_from_cart(request: web.Request) -> web.Response:
    cart_id, _ = _cart_id(request)
    book_id = request.match_info["book_id"]
    if not request.app[CART_KEY].remove(cart_id, book_id):
        return web.json_response({"error": f"book {book_id!r} is not in this cart"}, status=404)
    return web.Response(status=204)


async def clear_cart(request: web.Request) -> web.Response:
    cart_id, _ = _cart_id(request)
    request.app[CART_KEY].clear(cart_id)
    return web.Response(status=204)


def add_bookstore_routes(app: web.Application) -> None:
    app.router.add_get("/books", list_books)
    app.router.add_post("/books", create_book)
    app.router.add_get("/books/{book_id}", get_book)
    app.router.add_put("/books/{book_id}", replace_book)
    app.router.add_patch("/books/{book_id}", patch_book)
    app.router.add_delete("/books/{book_id}", delete_book)
    app.router.add_get("/cart", get_cart)
    app.router.add_post("/cart/items", add_to_cart)
    app.router.add_delete("/cart/items/{book_id}", remove_from_cart)
    app.router.add_delete("/cart", clear_cart)
