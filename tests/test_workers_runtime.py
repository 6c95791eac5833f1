"""The runtime wires the store and the AWS workers to a real Gateway from a config file."""

from __future__ import annotations

from pathlib import Path

from cloud.aws import AwsClients, AwsSettings, run_instances
from cloud.store import SqliteStore
from engine.config import Config
from engine.gateway import Gateway
from tests.cloud_support import Backend, backends, moto_endpoint, moto_server, wait_for  # noqa: F401
from workers.runtime import attach


def config_text(tmp_path: Path, backend: Backend, moto: str) -> str:
    return f"""
[[listeners]]
name = "web"
port = 0

[admin]
enabled = false

[[servers]]
name = "local"
host = "127.0.0.1"
port = {backend.port}

[store]
path = "{tmp_path / 'state.db'}"
sync_interval = 0.2

[aws]
enabled = true
endpoint_url = "{moto}"
poll_interval = 0.2
tag_value = "web"
discovery = true
"""


async def test_attach_runs_workers_with_the_gateway_and_state_survives_restart(
    tmp_path: Path, backends: list[Backend], moto_endpoint: str  # noqa: F811
) -> None:
    path = tmp_path / "lbtui.toml"
    path.write_text(config_text(tmp_path, backends[0], moto_endpoint))
    aws = AwsClients(AwsSettings(endpoint_url=moto_endpoint))
    [inst] = await run_instances(aws, image_id="ami-12c6146b", instance_type="t3.micro", count=1,
                                 tags={"lbtui:pool": "web", "lbtui:address": f"127.0.0.1:{backends[1].port}"})
    await aws.close()

    gateway = Gateway(Config.load(path), stop_grace=1)
    await gateway.start()
    try:
        node = await attach(gateway)
        assert set(gateway.components) >= {"store-sync", "strategist", "discovery"}
        await wait_for(lambda: gateway.lb.get_server(inst.instance_id) is not None, 5, "discovery")
        await wait_for(lambda: node.workers["store-sync"].status()["pending"] == 0, 5, "sync")
        gateway.lb.set_weight("local", 7)
        await wait_for(lambda: node.workers["store-sync"].status()["pending"] == 0, 5, "sync")
        status = gateway.status()["components"]
        assert status["store-sync"]["connected"] and status["discovery"]["servers"] == 1
    finally:
        await gateway.stop()
    assert not node.started

    store = SqliteStore(tmp_path / "state.db")
    await store.connect()
    stored = {r["name"]: r for r in await store.list_servers()}
    await store.close()
    assert stored["local"]["weight"] == 7
    assert stored[inst.instance_id]["instance_id"] == inst.instance_id
