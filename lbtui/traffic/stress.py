"""The ``stress`` scenario: the bookstore under mixed CRUD through a fully armed balancer.

TLS on the listener, sticky cookies, a per-client rate limit, per-server limits and
active health checks are all on. Each backend keeps its own SQLite file, so only
stickiness lets a client read back its own writes: a client deletes only books it
created and checks that its cart holds everything it added. A broken pin shows up as a
404 or a short cart, counted as a check failure.
"""

from __future__ import annotations

import json
import os
import random
from collections import defaultdict
from typing import Any

from cloud.bookstore import make_isbn13
from lbtui.traffic.cluster import Cluster
from lbtui.traffic.patterns import Pattern, Pick
from lbtui.traffic.scenarios import Narrator, ScenarioReport, _spread
from lbtui.traffic.simulator import RequestSpec, run_simulation

SEED_BOOKS = 200


class Shopper:
    """Per-client memory of what it wrote, so its later reads can be checked."""

    def __init__(self) -> None:
        self.created: dict[int, list[str]] = defaultdict(list)
        self.cart_confirmed: dict[int, int] = defaultdict(int)
        self.isbn = 10_000

    def request(self, pick: Pick, rng: random.Random) -> RequestSpec:
        client, roll = pick.client, rng.random()
        seed_id = f"seed{rng.randrange(SEED_BOOKS):06d}"
        if roll < 0.40:
            return RequestSpec("GET", f"/books/{seed_id}", expect=_status(200))
        if roll < 0.55:
            page = rng.randint(1, 5)
            return RequestSpec("GET", f"/books?q=Author+{rng.randrange(97):02d}&page={page}&per_page=10", expect=_status(200))
        if roll < 0.65:
            self.isbn += 1
            book = {"title": f"Stress {self.isbn}", "author": "Load Test", "isbn": make_isbn13(self.isbn), "price": 9.5}
            return RequestSpec("POST", "/books", json=book, expect=self._created(client))
        if roll < 0.68:
            return RequestSpec("POST", "/books", json={"title": "", "price": -1}, expect=_status(422))
        if roll < 0.73:
            return RequestSpec("PATCH", f"/books/{seed_id}", json={"price": round(rng.uniform(1, 90), 2)}, expect=_status(200))
        if roll < 0.78 and self.created[client]:
            book_id = self.created[client].pop()
            return RequestSpec("DELETE", f"/books/{book_id}", expect=_status(204))
        if roll < 0.90:
            return RequestSpec("POST", "/cart/items", json={"book_id": seed_id, "quantity": 1}, expect=self._added(client))
        floor = self.cart_confirmed[client]
        return RequestSpec("GET", "/cart", expect=self._cart_holds(floor))

    def _created(self, client: int):
        def check(status: int, body: bytes) -> str | None:
            if status == 429:
                return None
            if status != 201:
                return f"POST /books answered {status}"
            self.created[client].append(json.loads(body)["id"])
            return None

        return check

    def _added(self, client: int):
        def check(status: int, body: bytes) -> str | None:
            if status == 429:
                return None
            if status != 201:
                return f"POST /cart/items answered {status}"
            self.cart_confirmed[client] += 1
            return None

        return check

    @staticmethod
    def _cart_holds(floor: int):
        def check(status: int, body: bytes) -> str | None:
            if status == 429:
                return None
            if status != 200:
                return f"GET /cart answered {status}"
            if json.loads(body)["total_items"] < floor:
                return "cart lost items (session not sticky)"
            return None

        return check


def _status(expected: int):
    def check(status: int, body: bytes) -> str | None:
        if status in (expected, 429):
            return None
        return f"expected {expected}, got {status}"

    return check


class EachClientFirst(Pattern):
    """One request per client, in client order: every client gets its cookies first."""

    keyed = False

    def __init__(self, clients: int) -> None:
        super().__init__(0, clients)
        self._next = 0

    def pick(self, rng: random.Random) -> Pick:
        client, self._next = self._next % self.clients, self._next + 1
        return Pick(None, client)


async def run_stress(
    *, backends: int = 3, clients: int = 40, rps: float = 400, duration: float = 5.0,
    client_limit_per_min: int | None = None, say: Any = None,
) -> ScenarioReport:
    report = ScenarioReport("stress")
    out = Narrator(report, say)
    planned = int(rps * duration)
    # Each simulated client sends from its own 127.1.x.y address. The per-client limit is
    # set to let about 90% of a client's requests through, to show 429s with Retry-After.
    limit = client_limit_per_min or max(2, int((planned / clients + 1) * 0.9))
    lb_options = {"sticky": True, "sticky_method": "cookie", "rate_limit": 5000, "client_rate_limit": limit}
    out(f"stress: bookstore on {backends} backends (own SQLite file each, {SEED_BOOKS} seeded books), {clients}"
        f" clients, {rps:g} req/s for {duration:g}s; TLS, sticky cookies, per-client limit {limit}/min,"
        " per-server limit 5000/s, health checks every 0.5s")
    cluster = Cluster(0, "round_robin", lb_options=lb_options, tls=True, health_interval=0.5)
    cluster.backend_options = {"seed_books": SEED_BOOKS}
    async with cluster:
        for _ in range(backends):  # a SQLite file per backend, as separate machines would have
            name = cluster.next_name()
            await cluster.add_backend(name, db=os.path.join(cluster.workdir, f"{name}.sqlite"))
        shopper = Shopper()
        jars: dict[int, dict[str, str]] = {}
        warm = await run_simulation(
            cluster.url + "/cart", rps=1000, duration=10, pattern=EachClientFirst(clients), max_requests=clients,
            concurrency=1, ca_file=cluster.ca_file, cookies=jars, client_ips=True,
        )
        main = await run_simulation(
            cluster.url + "/", rps=rps, duration=duration, pattern=Pattern(0, clients), request_factory=shopper.request,
            concurrency=128, ca_file=cluster.ca_file, cookies=jars, seed=11, client_ips=True,
        )
        stats = cluster.lb.stats()
        limited = main.statuses.get(429, 0)
        other_4xx = sum(n for code, n in main.statuses.items() if 400 <= code < 500 and code not in (422, 429))
        out(f"  warm-up: {warm.completed} clients got their sticky and cart cookies ({warm.failed} failed)")
        out(f"  load: {main.completed:,} requests over TLS, {main.failed} failed, p50 {main.percentile_ms(50):.1f} ms,"
            f" p99 {main.percentile_ms(99):.1f} ms; statuses {dict(sorted(main.statuses.items()))}")
        out(f"  spread: {_spread(main.servers)}; clients that changed server: {main.clients_changed}")
        out(f"  rate limit: {limited} requests answered 429 with Retry-After")
        out(f"  consistency: {sum(main.check_failures.values())} failed checks"
            f" {dict(main.check_failures) if main.check_failures else ''}".rstrip())
        out(f"  health: {stats['healthy']} of {stats['total']} backends up")
        report.figures = {
            "requests": main.completed,
            "failed": main.failed,
            "statuses": {str(k): v for k, v in sorted(main.statuses.items())},
            "rate_limited": limited,
            "check_failures": dict(main.check_failures),
            "clients_changed_server": main.clients_changed,
            "servers": dict(main.servers),
            "p99_ms": round(main.percentile_ms(99), 2),
            "healthy": stats["healthy"],
        }
        out.check("no request failed (no transport error, no 5xx)", main.failed == 0 and warm.failed == 0)
        out.check("every client stayed on its server", main.clients_changed == 0)
        out.check("every read-your-writes check held", not main.check_failures and other_4xx == 0)
        out.check("the per-client rate limit answered 429", limited > 0)
        out.check("all backends stayed healthy", stats["healthy"] == stats["total"])
    return report
