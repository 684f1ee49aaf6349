"""Cluster and KV routes of the HTTP control plane (the Rust Aspen's routes and JSON shapes).

Handlers only translate HTTP <-> `ClusterApi` calls; the cluster logic (worker calls, leader
forwarding) lives behind that seam. Every body goes through one strict decoder:

- `Content-Type` other than application/json -> 415 (as axum's `Json` extractor does);
- malformed JSON -> 400; a wrong shape -> 422 naming the field (`$.initial_members[0].id`);
- every error body is `{"error": "..."}`; each bad request is counted by reason in
  `aspen_http_bad_requests_total`, and changes nothing.

A bearer token (`http_token`) protects every mutating route (POST) when configured.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import msgspec
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram

from aspen import api_types as t
from aspen.addr import EndpointAddr
from aspen.raft import kv

T = TypeVar("T")

MAX_REQUEST_BODY_SIZE = 2 * 1024 * 1024  # axum's default body limit, which the Rust Aspen keeps

# The Rust Aspen's latency buckets (reference §2: le=0.001, 0.010, 0.100, 1.000), plus finer
# ones where a local cluster actually lives.
LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.010, 0.025, 0.050, 0.100, 0.250, 1.0, 2.5)


class ApiError(Exception):
    """An error with an HTTP status; the body is `{"error": message}`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ClusterApi(Protocol):
    """What the control plane needs from the node. Implementations raise ApiError with the
    reference's status codes: 400 invalid, 404 key not found, 412 not initialized, 502 failed
    (no leader reachable, timeout), 503 unavailable."""

    async def init(self, members: list[t.ClusterNode]) -> dict[str, Any]: ...

    async def add_learner(self, learner: t.ClusterNode) -> dict[str, Any]: ...

    async def change_membership(self, voters: list[int]) -> dict[str, Any]: ...

    async def promote_learner(self, request: t.PromoteLearnerRequest) -> dict[str, Any]: ...

    async def add_peer(self, node_id: int, addr: EndpointAddr) -> None: ...

    async def write(self, command: kv.KvCommand) -> kv.KvResult: ...

    async def read(self, query: kv.Get | kv.Scan, *, linearizable: bool) -> kv.GetResult | kv.ScanResult: ...

    async def raft_metrics(self) -> dict[str, Any]: ...

    async def leader(self) -> int | None: ...

    async def trigger_snapshot(self) -> dict[str, Any] | None: ...

    async def cluster_ticket(self) -> dict[str, Any]: ...


class ControlPlaneMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self._request_children: dict[tuple[str, int], Any] = {}
        self.bad_requests = Counter("aspen_http_bad_requests", "rejected HTTP requests by reason",
                                    ["reason"], registry=registry)
        self.requests = Counter("aspen_http_requests", "HTTP requests by route and status",
                                ["route", "status"], registry=registry)
        self.write_latency = Histogram("aspen_write_latency_seconds", "client write latency",
                                       buckets=LATENCY_BUCKETS_S, registry=registry)
        self.read_latency = Histogram("aspen_read_latency_seconds", "client read latency",
                                      buckets=LATENCY_BUCKETS_S, registry=registry)

    def count_request(self, route: str, status: int) -> None:
        # labels() hashes and locks on every call; the (route, status) set is small and fixed.
        key = (route, status)
        child = self._request_children.get(key)
        if child is None:
            child = self._request_children[key] = self.requests.labels(route, str(status))
        child.inc()


API_KEY: web.AppKey[ClusterApi] = web.AppKey("cluster_api")
METRICS_KEY: web.AppKey[ControlPlaneMetrics] = web.AppKey("cp_metrics")
TOKEN_KEY: web.AppKey[str | None] = web.AppKey("http_token")


def json_response(obj: object, status: int = 200) -> web.Response:
    """A JSON response encoded by msgspec (several times faster than the stdlib json aiohttp uses)."""
    return web.Response(body=msgspec.json.encode(obj), status=status, content_type="application/json")


def error_response(status: int, message: str) -> web.Response:
    return json_response({"error": message}, status=status)


def decode_json(metrics: ControlPlaneMetrics, content_type: str, raw: bytes, typ: type[T]) -> T:
    """A request body as `typ`, or ApiError 415/400/422 (counted by reason). `content_type` is
    the media type alone, lower case ('application/octet-stream' when the header is absent)."""
    if content_type != "application/json":
        metrics.bad_requests.labels("content_type").inc()
        raise ApiError(415, f"Content-Type must be application/json, got {content_type or 'none'!r}")
    try:
        return msgspec.json.decode(raw, type=typ)  # one pass: parse and validate together
    except msgspec.ValidationError as exc:  # well-formed JSON of the wrong shape
        metrics.bad_requests.labels("wrong_shape").inc()
        raise ApiError(422, f"invalid request body: {exc}") from None
    except msgspec.DecodeError as exc:
        metrics.bad_requests.labels("malformed_json").inc()
        raise ApiError(400, f"malformed JSON: {exc}") from None


async def decode_body(request: web.Request, typ: type[T]) -> T:
    """The request body as `typ`, or ApiError 415/400/422 (counted by reason)."""
    content_type = request.content_type
    raw = await request.read() if content_type == "application/json" else b""  # a refused body stays unread
    return decode_json(request.app[METRICS_KEY], content_type, raw, typ)


def check_token(metrics: ControlPlaneMetrics, token: str | None, method: str, authorization: str) -> None:
    """ApiError 401 unless the request is read-only or carries the configured bearer token."""
    if token is not None and method not in ("GET", "HEAD", "OPTIONS"):
        # surrogateescape: header bytes that are not UTF-8 compare as the bytes they were.
        if not authorization.startswith("Bearer ") or \
                not hmac.compare_digest(authorization[7:].encode("utf-8", "surrogateescape"), token.encode()):
            metrics.bad_requests.labels("unauthorized").inc()
            raise ApiError(401, "missing or wrong bearer token")


def to_kv_command(body: t.WriteCommandBody) -> kv.KvCommand:
    variants = [name for name in ("Set", "SetMulti", "Delete", "CompareAndSwap") if getattr(body, name) is not None]
    if len(variants) != 1:
        raise ApiError(422, "invalid request body: `command` must hold exactly one of Set, SetMulti, Delete, "
                            f"CompareAndSwap (got {', '.join(variants) or 'none'}) - at `$.command`")
    if body.Set is not None:
        return kv.Set(body.Set.key, body.Set.value)
    if body.SetMulti is not None:
        return kv.SetMulti([(k, v) for k, v in body.SetMulti.pairs])
    if body.Delete is not None:
        return kv.Delete(body.Delete.key)
    assert body.CompareAndSwap is not None
    cas = body.CompareAndSwap
    return kv.CompareAndSwap(cas.key, cas.expected, cas.new)


@web.middleware
async def errors_and_auth(request: web.Request,
                          handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    metrics = request.app[METRICS_KEY]
    route = request.match_info.route.resource.canonical if request.match_info.route.resource else "unknown"
    try:
        check_token(metrics, request.app[TOKEN_KEY], request.method, request.headers.get("Authorization", ""))
        response = await handler(request)
    except ApiError as exc:
        response = error_response(exc.status, exc.message)
    except web.HTTPException as exc:
        if exc.status == 413:
            metrics.bad_requests.labels("too_large").inc()
        response = error_response(exc.status, exc.reason)
    metrics.count_request(route, response.status)
    return response


def _api(request: web.Request) -> ClusterApi:
    return request.app[API_KEY]


async def init(request: web.Request) -> web.Response:
    body = await decode_body(request, t.InitRequest)
    if not body.initial_members:
        raise ApiError(400, "initial_members must not be empty")
    return json_response(await _api(request).init(body.initial_members))


async def add_learner(request: web.Request) -> web.Response:
    body = await decode_body(request, t.AddLearnerRequest)
    return json_response(await _api(request).add_learner(body.learner))


async def change_membership(request: web.Request) -> web.Response:
    body = await decode_body(request, t.ChangeMembershipRequest)
    if not body.members:
        raise ApiError(400, "members must not be empty")
    return json_response(await _api(request).change_membership(body.members))


async def promote_learner(request: web.Request) -> web.Response:
    body = await decode_body(request, t.PromoteLearnerRequest)
    return json_response(await _api(request).promote_learner(body))


async def add_peer(request: web.Request) -> web.Response:
    body = await decode_body(request, t.AddPeerRequest)
    try:
        addr = EndpointAddr.from_json(body.endpoint_addr)
    except ValueError as exc:
        request.app[METRICS_KEY].bad_requests.labels("wrong_shape").inc()
        raise ApiError(422, f"invalid request body: {exc} - at `$.endpoint_addr`") from None
    await _api(request).add_peer(body.node_id, addr)
    return web.Response(status=200)


def _result_json(command_json: Any, result: kv.KvResult) -> dict[str, Any]:
    out: dict[str, Any] = {"command": command_json}
    match result:
        case kv.CasResult(succeeded=ok, current=current):
            out["succeeded"] = ok
            out["current"] = current
        case kv.Rejected(reason=reason):
            raise ApiError(400, f"rejected: {reason}")
        case _:
            pass
    return out


async def write_json(api: ClusterApi, metrics: ControlPlaneMetrics, body: t.WriteRequest) -> dict[str, Any]:
    command = to_kv_command(body.command)
    try:
        kv.validate_command(command)
    except Exception as exc:  # LimitExceeded / ValueError from the state machine's own checks
        metrics.bad_requests.labels("limit").inc()
        raise ApiError(400, str(exc)) from None
    started = time.perf_counter()
    result = await api.write(command)
    metrics.write_latency.observe(time.perf_counter() - started)
    return _result_json(msgspec.to_builtins(body.command), result)


async def read_json(api: ClusterApi, metrics: ControlPlaneMetrics, body: t.ReadRequest) -> dict[str, Any]:
    started = time.perf_counter()
    result = await api.read(kv.Get(body.key), linearizable=body.consistency == "linearizable")
    metrics.read_latency.observe(time.perf_counter() - started)
    assert isinstance(result, kv.GetResult)
    if result.value is None:
        raise ApiError(404, f"key '{body.key}' not found")
    return {"key": body.key, "value": result.value}


async def scan_json(api: ClusterApi, metrics: ControlPlaneMetrics, body: t.ScanRequest) -> dict[str, Any]:
    result = await api.read(kv.Scan(body.prefix, body.limit, body.after),
                            linearizable=body.consistency == "linearizable")
    assert isinstance(result, kv.ScanResult)
    return {"pairs": [[k, v] for k, v in result.pairs], "next_after": result.next_after}


class KvRoute(Protocol):
    """One KV route's logic, independent of the HTTP server in front of it: aiohttp's handlers
    and the lean path in aspen.fast_http call the same function with the decoded body."""

    def __call__(self, api: ClusterApi, metrics: ControlPlaneMetrics, body: Any) -> Awaitable[dict[str, Any]]: ...


# The KV routes: POST, a JSON body of the given type. They carry nearly all of a cluster's
# requests, so aspen.fast_http serves them without aiohttp's per-request machinery.
KV_ROUTES: dict[str, tuple[type, KvRoute]] = {
    "/write": (t.WriteRequest, write_json),
    "/read": (t.ReadRequest, read_json),
    "/scan": (t.ScanRequest, scan_json),
}


class KvService:
    """What serving the KV routes needs: the cluster, the metrics and the bearer token."""

    def __init__(self, api: ClusterApi, metrics: ControlPlaneMetrics, token: str | None) -> None:
        self.api = api
        self.metrics = metrics
        self.token = token


def _kv_handler(path: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    typ, route = KV_ROUTES[path]

    async def handler(request: web.Request) -> web.Response:
        body: Any = await decode_body(request, typ)
        return json_response(await route(_api(request), request.app[METRICS_KEY], body))

    handler.__name__ = path.strip("/")
    return handler


async def raft_metrics(request: web.Request) -> web.Response:
    return json_response(await _api(request).raft_metrics())


async def leader(request: web.Request) -> web.Response:
    return json_response({"leader": await _api(request).leader()})


async def trigger_snapshot(request: web.Request) -> web.Response:
    return json_response({"snapshot": await _api(request).trigger_snapshot()})


async def cluster_ticket(request: web.Request) -> web.Response:
    return json_response(await _api(request).cluster_ticket())


ROUTES: list[tuple[str, str, Callable[[web.Request], Awaitable[web.Response]], type | None, str]] = [
    ("POST", "/init", init, t.InitRequest, "initialise the cluster with its first voters"),
    ("POST", "/add-learner", add_learner, t.AddLearnerRequest, "add a non-voting member"),
    ("POST", "/change-membership", change_membership, t.ChangeMembershipRequest, "set the voters"),
    ("POST", "/admin/promote-learner", promote_learner, t.PromoteLearnerRequest, "make a learner a voter"),
    ("POST", "/add-peer", add_peer, t.AddPeerRequest, "tell this node how to reach a node id"),
    ("POST", "/write", _kv_handler("/write"), t.WriteRequest, "Set, SetMulti, Delete or CompareAndSwap (any node; forwarded)"),
    ("POST", "/read", _kv_handler("/read"), t.ReadRequest, "read a key (linearizable unless consistency=stale)"),
    ("POST", "/scan", _kv_handler("/scan"), t.ScanRequest, "keys by prefix, in order, paginated with `after`"),
    ("GET", "/raft-metrics", raft_metrics, None, "Raft state of this node"),
    ("GET", "/leader", leader, None, "the current leader's node id"),
    ("POST", "/trigger-snapshot", trigger_snapshot, None, "take a snapshot now; reports it"),
    ("GET", "/cluster-ticket", cluster_ticket, None, "a ticket other nodes can join with"),
]


def add_routes(app: web.Application, api: ClusterApi, registry: CollectorRegistry,
               token: str | None) -> KvService:
    """Add the cluster and KV routes to `app`; returns what aspen.fast_http needs to serve the
    KV routes itself."""
    metrics = ControlPlaneMetrics(registry)
    app[API_KEY] = api
    app[METRICS_KEY] = metrics
    app[TOKEN_KEY] = token
    app.middlewares.append(errors_and_auth)
    for method, path, handler, _, _ in ROUTES:
        app.router.add_route(method, path, handler)
    app.router.add_get("/openapi.json", openapi)
    return KvService(api, metrics, token)


EXTRA_ROUTES_DOC = [
    ("GET", "/health", "health of this node and its Raft worker (503 when unhealthy)"),
    ("GET", "/metrics", "Prometheus metrics"),
    ("GET", "/node-info", "node id and EndpointAddr"),
    ("GET", "/openapi.json", "this document"),
]


def openapi_document() -> dict[str, Any]:
    """An OpenAPI 3.1 description of every route, with request schemas from the Structs."""
    types = [typ for *_, typ, _ in ROUTES if typ is not None]
    schemas, components = msgspec.json.schema_components(types, ref_template="#/components/schemas/{name}")
    paths: dict[str, Any] = {}
    error = {"description": "error", "content": {"application/json": {"schema": {
        "type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]}}}}
    schema_iter = iter(schemas)
    for method, path, _, typ, summary in ROUTES:
        op: dict[str, Any] = {"summary": summary, "responses": {
            "200": {"description": "success", "content": {"application/json": {}}},
            "400": error, "401": error, "404": error, "412": error, "415": error, "422": error, "502": error}}
        if typ is not None:
            op["requestBody"] = {"required": True, "content": {"application/json": {"schema": next(schema_iter)}}}
        paths.setdefault(path, {})[method.lower()] = op
    for method, path, summary in EXTRA_ROUTES_DOC:
        paths.setdefault(path, {})[method.lower()] = {"summary": summary,
                                                      "responses": {"200": {"description": "success"}}}
    return {"openapi": "3.1.0", "info": {"title": "Aspen control plane", "version": "1"}, "paths": paths,
            "components": {"schemas": components,
                           "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}}}


async def openapi(request: web.Request) -> web.Response:
    return json_response(openapi_document())
