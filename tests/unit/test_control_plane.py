"""HTTP control plane: the Rust Aspen's shapes accepted verbatim; bad input gets the documented
status, a message naming the field, a counter, and changes nothing."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from aspen import api_types as t
from aspen.addr import EndpointAddr
from aspen.control_plane import ROUTES, ApiError, KvService, add_routes, openapi_document
from aspen.fast_http import FastHttpServer
from aspen.raft import kv


class FakeCluster:
    """A single-node in-memory ClusterApi: enough to exercise the HTTP layer alone."""

    def __init__(self) -> None:
        self.sm = kv.KvStateMachine()
        self.index = 0
        self.initialized = False
        self.peers: dict[int, EndpointAddr] = {}
        self.calls = 0

    def _state(self) -> dict[str, Any]:
        return {"nodes": [{"id": 1, "addr": "", "raft_addr": None}], "members": [1], "learners": []}

    async def init(self, members: list[t.ClusterNode]) -> dict[str, Any]:
        if self.initialized:
            raise ApiError(502, "already initialized")
        self.initialized = True
        return self._state()

    async def add_learner(self, learner: t.ClusterNode) -> dict[str, Any]:
        if not self.initialized:
            raise ApiError(412, "cluster not initialized")
        return self._state()

    async def change_membership(self, voters: list[int]) -> dict[str, Any]:
        return self._state()

    async def promote_learner(self, request: t.PromoteLearnerRequest) -> dict[str, Any]:
        return {"success": True}

    async def add_peer(self, node_id: int, addr: EndpointAddr) -> None:
        self.peers[node_id] = addr

    async def write(self, command: kv.KvCommand) -> kv.KvResult:
        self.calls += 1
        self.index += 1
        return self.sm.apply(self.index, kv.encode_command(command))

    async def read(self, query: kv.Get | kv.Scan, *, linearizable: bool) -> kv.GetResult | kv.ScanResult:
        return self.sm.read(query)

    async def raft_metrics(self) -> dict[str, Any]:
        return {"node_id": 1}

    async def leader(self) -> int | None:
        return 1

    async def trigger_snapshot(self) -> dict[str, Any] | None:
        return {"term": 1, "index": self.index}

    async def cluster_ticket(self) -> dict[str, Any]:
        raise ApiError(501, "tickets come with gossip")


Check = Callable[[Any, FakeCluster, CollectorRegistry], Awaitable[None]]


class FrontClient:
    """The calls the checks make on aiohttp's TestClient, against a FastHttpServer front."""

    def __init__(self, session: aiohttp.ClientSession, port: int) -> None:
        self._session = session
        self._base = f"http://127.0.0.1:{port}"

    async def post(self, path: str, **kwargs: Any) -> aiohttp.ClientResponse:
        return await self._session.post(self._base + path, **kwargs)

    async def get(self, path: str, **kwargs: Any) -> aiohttp.ClientResponse:
        return await self._session.get(self._base + path, **kwargs)


@contextlib.asynccontextmanager
async def front_server(app: web.Application, kv: KvService | None,
                       registry: CollectorRegistry) -> AsyncIterator[tuple[FastHttpServer, int]]:
    """`app` served the way a node serves it: aspen.fast_http in front of aiohttp."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    assert runner.server is not None
    front = FastHttpServer(runner.server, kv, registry)
    try:
        yield front, await front.start("127.0.0.1", 0)
    finally:
        await front.stop()
        await runner.cleanup()


# Every check runs against aiohttp alone and against the node's front (fast path + aiohttp):
# the KV routes must answer the same either way.
@pytest.fixture(params=["aiohttp", "fast_front"])
def run(request: pytest.FixtureRequest) -> Callable[..., None]:
    def run_check(check: Check, token: str | None = None) -> None:
        async def main() -> None:
            app = web.Application()
            fake = FakeCluster()
            registry = CollectorRegistry()
            kv = add_routes(app, fake, registry, token)
            if request.param == "aiohttp":
                async with TestClient(TestServer(app)) as client:
                    await check(client, fake, registry)
                return
            async with front_server(app, kv, registry) as (_, port), aiohttp.ClientSession() as session:
                await check(FrontClient(session, port), fake, registry)

        asyncio.run(main())
    return run_check


def bad_count(registry: CollectorRegistry, reason: str) -> float:
    return registry.get_sample_value("aspen_http_bad_requests_total", {"reason": reason}) or 0.0


def test_rust_aspen_bodies_are_accepted_verbatim(run: Callable[..., None]) -> None:
    async def check(client: Any, fake: FakeCluster, registry: CollectorRegistry) -> None:
        r = await client.post("/init", json={"initial_members": [
            {"id": 1, "addr": "127.0.0.1:21001"}, {"id": 2, "addr": "x", "raft_addr": None, "iroh_endpoint": "y"}]})
        assert r.status == 200 and (await r.json())["members"] == [1]
        r = await client.post("/write", json={"command": {"Set": {"key": "foo", "value": "bar"}}})
        assert r.status == 200 and await r.json() == {"command": {"Set": {"key": "foo", "value": "bar"}}}
        r = await client.post("/write", json={"command": {"SetMulti": {"pairs": [["k1", "v1"], ["k2", "v2"]]}}})
        assert r.status == 200
        r = await client.post("/read", json={"key": "k2"})
        assert await r.json() == {"key": "k2", "value": "v2"}
        r = await client.post("/write", json={"command": {"CompareAndSwap": {"key": "foo", "expected": "nope",
                                                                             "new": "z"}}})
        assert (await r.json())["succeeded"] is False and (await r.json())["current"] == "bar"
        r = await client.post("/write", json={"command": {"Delete": {"key": "foo"}}})
        assert r.status == 200
        r = await client.post("/read", json={"key": "foo"})
        assert r.status == 404 and await r.json() == {"error": "key 'foo' not found"}
        r = await client.post("/scan", json={"prefix": "k", "limit": 1})
        assert await r.json() == {"pairs": [["k1", "v1"]], "next_after": "k1"}
        r = await client.post("/add-peer", json={"node_id": 2, "endpoint_addr": {
            "id": "ab" * 32, "addrs": [{"Ip": "127.0.0.1:5"}]}})
        assert r.status == 200 and fake.peers[2].direct_addrs[0].port == 5

    run(check)


@pytest.mark.parametrize(("path", "body", "content_type", "status", "fragment", "reason"), [
    ("/write", b'{"command": {"Set": {"key": "a", "value": "b"}}}', "text/plain", 415, "application/json",
     "content_type"),
    ("/write", b'{"command": ', "application/json", 400, "malformed JSON", "malformed_json"),
    ("/write", b'{"command": {"Set": {"key": "a"}}}', "application/json", 422, "$.command.Set", "wrong_shape"),
    ("/write", b'{"command": {"Set": {"key": 5, "value": "b"}}}', "application/json", 422, "$.command.Set.key",
     "wrong_shape"),
    ("/write", b'{"command": {"Frobnicate": {}}}', "application/json", 422, "Frobnicate", "wrong_shape"),
    ("/write", b'{"command": {}}', "application/json", 422, "exactly one", None),
    ("/write", b'{"command": {"Set": {"key": "", "value": "b"}}}', "application/json", 422, "$.command.Set.key",
     "wrong_shape"),
    ("/init", b'{"initial_members": [{"id": "one"}]}', "application/json", 422, "$.initial_members[0].id",
     "wrong_shape"),
    ("/init", b'{"initial_members": [{"id": 0}]}', "application/json", 422, "$.initial_members[0].id", "wrong_shape"),
    ("/init", b'{"initial_members": []}', "application/json", 400, "must not be empty", None),
    ("/change-membership", b'{"members": "1,2"}', "application/json", 422, "$.members", "wrong_shape"),
    ("/add-peer", b'{"node_id": 2, "endpoint_addr": {"id": "zz"}}', "application/json", 422, "endpoint_addr",
     "wrong_shape"),
    ("/read", b'[]', "application/json", 422, "object", "wrong_shape"),
    ("/scan", b'{"limit": 0}', "application/json", 422, "$.limit", "wrong_shape"),
])
def test_bad_inputs_get_documented_errors_and_change_nothing(path: str, body: bytes, content_type: str, status: int,
                                                             fragment: str, reason: str | None,
                                                             run: Callable[..., None]) -> None:
    async def check(client: Any, fake: FakeCluster, registry: CollectorRegistry) -> None:
        before = bad_count(registry, reason) if reason else 0.0
        r = await client.post(path, data=body, headers={"Content-Type": content_type})
        assert r.status == status
        payload = await r.json()
        assert set(payload) == {"error"} and fragment in payload["error"]
        assert fake.calls == 0 and len(fake.sm) == 0 and not fake.peers
        if reason:
            assert bad_count(registry, reason) == before + 1

    run(check)


def test_oversized_value_is_refused_before_reaching_raft(run: Callable[..., None]) -> None:
    async def check(client: Any, fake: FakeCluster, registry: CollectorRegistry) -> None:
        big = "x" * (kv.MAX_VALUE_SIZE + 1)
        body = json.dumps({"command": {"Set": {"key": "k", "value": big}}}).encode()
        r = await client.post("/write", data=io.BytesIO(body), headers={"Content-Type": "application/json"})
        assert r.status in (413, 422)
        assert "error" in await r.json()
        assert fake.calls == 0

    run(check)


def test_bearer_token_protects_mutating_routes_only(run: Callable[..., None]) -> None:
    async def check(client: Any, fake: FakeCluster, registry: CollectorRegistry) -> None:
        body = {"command": {"Set": {"key": "a", "value": "b"}}}
        r = await client.post("/write", json=body)
        assert r.status == 401 and fake.calls == 0
        r = await client.post("/write", json=body, headers={"Authorization": "Bearer wrong"})
        assert r.status == 401 and fake.calls == 0
        assert bad_count(registry, "unauthorized") == 2
        r = await client.post("/write", json=body, headers={"Authorization": "Bearer s3cret"})
        assert r.status == 200 and fake.calls == 1
        r = await client.get("/leader")
        assert r.status == 200 and await r.json() == {"leader": 1}

    run(check, token="s3cret")


def test_api_errors_keep_reference_status_codes(run: Callable[..., None]) -> None:
    async def check(client: Any, fake: FakeCluster, registry: CollectorRegistry) -> None:
        r = await client.post("/add-learner", json={"learner": {"id": 4, "addr": "a", "raft_addr": "b"}})
        assert r.status == 412 and await r.json() == {"error": "cluster not initialized"}
        r = await client.get("/cluster-ticket")
        assert r.status == 501

    run(check)


def test_openapi_describes_every_route() -> None:
    doc = openapi_document()
    for method, path, _, typ, _ in ROUTES:
        op = doc["paths"][path][method.lower()]
        assert ("requestBody" in op) == (typ is not None)
    for path in ("/health", "/metrics", "/node-info", "/openapi.json"):
        assert path in doc["paths"]
    init_schema = doc["paths"]["/init"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert init_schema == {"$ref": "#/components/schemas/InitRequest"}
    assert "ClusterNode" in doc["components"]["schemas"]
