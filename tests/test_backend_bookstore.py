"""The bookstore's CRUD, validation and carts, through the balancer and the proxy."""

from __future__ import annotations

import aiohttp

from cloud.bookstore import CART_COOKIE, isbn_is_valid, make_isbn13
from lbtui.traffic.cluster import Cluster

TIMEOUT = aiohttp.ClientTimeout(total=10)


async def test_crud_search_pages_and_validation_through_the_balancer() -> None:
    # One backend behind the proxy: every write must be readable back through it.
    async with Cluster(1, "round_robin", backend_options={"seed_books": 45}) as cluster, aiohttp.ClientSession(
        timeout=TIMEOUT
    ) as http:
        url = cluster.url
        async with http.get(f"{url}/books?per_page=20&page=3") as resp:
            page = await resp.json()
        assert resp.status == 200 and page["total"] == 45 and page["pages"] == 3 and len(page["items"]) == 5
        async with http.get(f"{url}/books?q=author+07") as resp:
            found = await resp.json()
        assert found["total"] == 1 and found["items"][0]["author"] == "Author 07"
        async with http.get(f"{url}/books?per_page=500") as resp:
            assert resp.status == 422 and (await resp.json())["reasons"][0]["field"] == "per_page"

        book = {"title": "Dune", "author": "Frank Herbert", "year": 1965, "isbn": "978-0-441-17271-9", "price": 9.99}
        async with http.post(f"{url}/books", json=book) as resp:
            created = await resp.json()
            assert resp.status == 201 and resp.headers["Location"] == f"/books/{created['id']}"
        assert created["isbn"] == "9780441172719" and created["stock"] == 0
        async with http.post(f"{url}/books", json=book) as resp:
            assert resp.status == 409  # same ISBN twice
        async with http.post(f"{url}/books", json={"title": " ", "year": 1.5, "price": "free"}) as resp:
            body = await resp.json()
        assert resp.status == 422
        assert {r["field"] for r in body["reasons"]} == {"title", "author", "year", "price"}
        async with http.post(f"{url}/books", data=b"{not json", headers={"Content-Type": "application/json"}) as resp:
            assert resp.status == 400

        book_url = f"{url}/books/{created['id']}"
        async with http.patch(book_url, json={"stock": 3}) as resp:
            assert resp.status == 200 and (await resp.json())["stock"] == 3
        async with http.put(book_url, json={"title": "Dune Messiah", "author": "Frank Herbert"}) as resp:
            replaced = await resp.json()
        assert replaced["title"] == "Dune Messiah" and replaced["isbn"] is None and replaced["stock"] == 0
        async with http.put(book_url, json={"title": "No author"}) as resp:
            assert resp.status == 422
        async with http.delete(book_url) as resp:
            assert resp.status == 204
        async with http.get(book_url) as resp:
            assert resp.status == 404 and resp.headers["X-Served-By"] == "web1"
        async with http.delete(book_url) as resp:
            assert resp.status == 404


async def test_carts_live_on_one_backend_so_stickiness_matters() -> None:
    async with Cluster(2, "round_robin", lb_options={"sticky": True}, backend_options={"seed_books": 3}) as cluster:
        # unsafe=True: aiohttp otherwise ignores cookies set by an IP-address host.
        async with aiohttp.ClientSession(timeout=TIMEOUT, cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
            for _ in range(4):
                async with browser.post(f"{cluster.url}/cart/items", json={"book_id": "seed000001"}) as resp:
                    assert resp.status == 201
            async with browser.get(f"{cluster.url}/cart") as resp:
                cart = await resp.json()
            assert cart["total_items"] == 4 and resp.headers["X-Served-By"] == cart["server"]
            async with browser.post(f"{cluster.url}/cart/items", json={"book_id": "nope"}) as resp:
                assert resp.status == 404
            async with browser.post(f"{cluster.url}/cart/items", json={"book_id": "seed000001", "quantity": 0}) as resp:
                assert resp.status == 422
    # Without stickiness, round robin alternates the backends: each holds its own cart for
    # the same cart cookie, and neither sees all of the client's adds.
    totals = set()
    async with Cluster(2, "round_robin", backend_options={"seed_books": 3}) as cluster:
        async with aiohttp.ClientSession(timeout=TIMEOUT, cookie_jar=aiohttp.DummyCookieJar()) as client:
            headers = {"Cookie": f"{CART_COOKIE}=abc123"}
            for _ in range(4):
                async with client.post(f"{cluster.url}/cart/items", json={"book_id": "seed000002"}, headers=headers) as resp:
                    cart = await resp.json()
                    totals.add((cart["server"], cart["total_items"]))
    assert {server for server, _ in totals} == {"web1", "web2"}
    assert max(total for _, total in totals) == 2  # each backend saw half of the adds


def test_isbn_helpers_agree() -> None:
    assert all(isbn_is_valid(make_isbn13(n)) for n in range(0, 5000, 7))
    assert isbn_is_valid("0-306-40615-2") and not isbn_is_valid("0-306-40615-3")
