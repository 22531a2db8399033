"""API keys and scopes: the authenticator, the start-up bind check, and the FastAPI guard
through a real HTTP server (uvicorn on loopback, ports 18100-18120)."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from typing import Annotated, Any

import httpx
import pytest
import uvicorn
from fastapi import Depends, FastAPI, Request

from genesis.config import ApiKeySettings, AuthSettings, Settings, load_settings
from genesis.errors import (
    AuthenticationError,
    ConfigError,
    PermissionDeniedError,
    RateLimitExceededError,
)
from genesis.server._auth import (
    AccessControl,
    Authenticator,
    Principal,
    access_log_fields,
    check_bind,
    hash_api_key,
    http_error_details,
    is_loopback,
    new_api_key,
    principal_of,
    requires,
)
from genesis.server._errors import add_error_handlers

OPS_KEY = new_api_key()
APP_KEY = new_api_key()
RUNNER_KEY = new_api_key()
KEYS = [
    {"id": "ops", "key": OPS_KEY, "scopes": ["query", "run", "admin"]},
    {"id": "app", "sha256": hash_api_key(APP_KEY), "scopes": ["query"]},
    {"id": "runner", "key": RUNNER_KEY, "scopes": ["run"]},
]


def _settings(keys: list[dict[str, Any]] | None = None, **overrides: Any) -> Settings:
    return load_settings(environ={}, overrides={"auth.keys": keys or [], **overrides})


def _auth(keys: list[dict[str, Any]] | None = None) -> Authenticator:
    return Authenticator.from_settings(_settings(keys))


# -- keys in configuration ----------------------------------------------------------------


def test_new_keys_are_long_random_and_recognisable() -> None:
    keys = {new_api_key() for _ in range(50)}
    assert len(keys) == 50
    assert all(k.startswith("gk_") and len(k) >= 40 for k in keys)


def test_a_plain_key_is_hashed_while_loading_and_never_kept() -> None:
    settings = _settings(KEYS)
    ops = settings.auth.keys[0]
    assert ops.sha256 == hash_api_key(OPS_KEY)
    dumped = repr(settings) + str(settings.model_dump())
    assert OPS_KEY not in dumped and RUNNER_KEY not in dumped
    assert "key" not in type(ops).model_fields


def test_a_key_from_the_environment_is_hashed(tmp_path: Any) -> None:
    (tmp_path / "dev.yaml").write_text(
        "auth:\n  keys:\n    - {id: ci, key: '${CI_KEY}', scopes: [query, run]}\n"
    )
    settings = load_settings("dev", config_dir=tmp_path, environ={"CI_KEY": OPS_KEY})
    assert settings.auth.keys[0].sha256 == hash_api_key(OPS_KEY)
    assert settings.auth.keys[0].scopes == ("query", "run")


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ({"id": "a", "key": "short-key"}, "at least 24 characters"),
        ({"id": "a", "key": None}, "at least 24 characters"),
        ({"id": "a", "key": OPS_KEY, "sha256": hash_api_key(OPS_KEY)}, "not both"),
        ({"id": "a", "sha256": "abc"}, "sha256"),
        ({"id": "a"}, "sha256"),
        ({"id": "a", "key": OPS_KEY, "scopes": []}, "at least one scope"),
        ({"id": "a", "key": OPS_KEY, "scopes": ["root"]}, "scopes"),
        ({"id": "bad id!", "key": OPS_KEY}, "id"),
    ],
)
def test_bad_key_entries_are_config_errors_that_never_echo_the_key(
    entry: dict[str, Any], problem: str
) -> None:
    with pytest.raises(ConfigError, match=problem) as info:
        _settings([entry])
    assert "auth.keys" in str(info.value)
    assert OPS_KEY not in str(info.value) and "short-key" not in str(info.value)


def test_duplicate_ids_or_keys_are_refused() -> None:
    with pytest.raises(ConfigError, match="unique"):
        _settings([{"id": "a", "key": OPS_KEY}, {"id": "a", "key": APP_KEY}])
    with pytest.raises(ConfigError, match="same key"):
        _settings([{"id": "a", "key": OPS_KEY}, {"id": "b", "sha256": hash_api_key(OPS_KEY)}])


def test_production_needs_its_keys_from_the_environment() -> None:
    env = {
        "GENESIS_REDIS_URL": "redis://127.0.0.1:6379/0",
        "GENESIS_QDRANT_URL": "http://127.0.0.1:6333",
        "GENESIS_VLLM_URL": "http://127.0.0.1:8001",
    }
    with pytest.raises(ConfigError, match="GENESIS_APP_KEY"):
        load_settings("production", environ=env)
    env |= {"GENESIS_APP_KEY": APP_KEY, "GENESIS_OPS_KEY": OPS_KEY}
    settings = load_settings("production", environ=env)
    assert [k.id for k in settings.auth.keys] == ["app", "ops"]
    check_bind(settings.server.host, settings)  # 0.0.0.0 with keys: allowed


# -- the authenticator ---------------------------------------------------------------------


def test_without_keys_a_caller_is_anonymous_with_the_query_scope_only() -> None:
    auth = _auth()
    principal = auth.authenticate(None, "127.0.0.1")
    assert principal == Principal(None, frozenset({"query"}), "127.0.0.1")
    assert principal.name == "anonymous" and principal.rate_key == "addr:127.0.0.1"
    auth.authorize(principal, "query")
    for scope in ("run", "admin"):
        with pytest.raises(AuthenticationError, match=f"the {scope} scope needs an API key"):
            auth.authorize(principal, scope)  # type: ignore[arg-type]
    with pytest.raises(AuthenticationError, match="none configured"):
        auth.authorize(principal, "run")
    keyed = _auth(KEYS)
    with pytest.raises(AuthenticationError, match="Authorization: Bearer"):
        keyed.authorize(Principal(None, frozenset({"query"})), "run")


def test_without_keys_a_presented_key_is_still_checked() -> None:
    with pytest.raises(AuthenticationError, match="not valid"):
        _auth().authenticate(f"Bearer {OPS_KEY}")


def test_with_keys_a_missing_key_is_refused() -> None:
    with pytest.raises(AuthenticationError, match="API key is required"):
        _auth(KEYS).authenticate(None)


@pytest.mark.parametrize("key", [OPS_KEY, APP_KEY, RUNNER_KEY])
def test_each_configured_key_is_recognised(key: str) -> None:
    principal = _auth(KEYS).authenticate(f"Bearer {key}", "10.0.0.7")
    expected = {OPS_KEY: "ops", APP_KEY: "app", RUNNER_KEY: "runner"}[key]
    assert principal.key_id == expected
    assert principal.rate_key == f"key:{expected}"
    assert principal.log_extra() == {"key_id": expected, "client": "10.0.0.7"}


@pytest.mark.parametrize(
    "header",
    [
        f"Basic {OPS_KEY}",
        f"Token {OPS_KEY}",
        OPS_KEY,
        "Bearer",
        "Bearer ",
        f"Bearer {OPS_KEY} extra",
        "Bearer " + "x" * 600,
    ],
)
def test_a_malformed_header_is_refused_without_quoting_it(header: str) -> None:
    with pytest.raises(AuthenticationError, match="malformed") as info:
        _auth(KEYS).authenticate(header)
    assert OPS_KEY not in str(info.value)


def test_scheme_is_case_insensitive_and_whitespace_tolerant() -> None:
    assert _auth(KEYS).authenticate(f"  bearer   {OPS_KEY} ").key_id == "ops"


@pytest.mark.parametrize("wrong", [OPS_KEY[:-1], OPS_KEY + "x", OPS_KEY.upper(), new_api_key()])
def test_a_wrong_key_is_refused(wrong: str) -> None:
    with pytest.raises(AuthenticationError, match="not valid") as info:
        _auth(KEYS).authenticate(f"Bearer {wrong}")
    assert wrong not in str(info.value)


def test_a_key_without_the_scope_is_forbidden_and_named_by_id() -> None:
    auth = _auth(KEYS)
    app = auth.authenticate(f"Bearer {APP_KEY}")
    with pytest.raises(PermissionDeniedError, match="'app' does not have the run scope") as info:
        auth.authorize(app, "run")
    assert info.value.scope == "run"
    runner = auth.authenticate(f"Bearer {RUNNER_KEY}")
    auth.authorize(runner, "run")
    with pytest.raises(PermissionDeniedError):
        auth.authorize(runner, "query")  # scopes are not a ladder: run does not imply query


def test_http_error_details() -> None:
    assert http_error_details(AuthenticationError("x")) == (
        401,
        {"WWW-Authenticate": 'Bearer realm="genesis"'},
    )
    status, headers = http_error_details(PermissionDeniedError("x", "admin")) or (0, {})
    assert status == 403 and 'scope="admin"' in headers["WWW-Authenticate"]
    assert http_error_details(RateLimitExceededError("x", 0.2)) == (429, {"Retry-After": "1"})
    assert http_error_details(RateLimitExceededError("x", 7.01)) == (429, {"Retry-After": "8"})
    assert http_error_details(ConfigError("x")) is None


def test_requires_refuses_an_unknown_scope() -> None:
    with pytest.raises(ValueError, match="unknown scope"):
        requires("root")  # type: ignore[arg-type]


# -- the start-up bind check ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("LOCALHOST", True),
        ("0.0.0.0", False),
        ("::", False),
        ("", False),
        ("10.1.2.3", False),
        ("example.com", False),
        ("localhost.example.com", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "genesis.internal"])
def test_a_public_bind_without_keys_refuses_to_start(host: str) -> None:
    with pytest.raises(ConfigError, match="auth.keys is empty") as info:
        check_bind(host, _settings())
    assert repr(host) in str(info.value)


def test_a_loopback_bind_without_keys_warns_that_it_is_anonymous(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    check_bind("127.0.0.1", _settings().auth)
    assert "serving anonymously on loopback 127.0.0.1, query scope only" in caplog.text
    assert [r.levelname for r in caplog.records] == ["WARNING"]


def test_a_bind_with_keys_logs_ids_never_keys(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    check_bind("0.0.0.0", AuthSettings(keys=[ApiKeySettings(id="ops", key=OPS_KEY)]))
    assert "ops" in caplog.text and OPS_KEY not in caplog.text


# -- through real HTTP ------------------------------------------------------------------------


def _test_app(settings: Settings) -> FastAPI:
    """An app with one route per scope and the server's own error handlers."""
    app = FastAPI()
    AccessControl.from_settings(settings).install(app)
    add_error_handlers(app)

    @app.post("/query")
    async def query(p: Annotated[Principal, Depends(requires("query"))]) -> dict[str, Any]:
        return {"key_id": p.key_id, "scopes": sorted(p.scopes)}

    @app.post("/run")
    async def run(p: Annotated[Principal, Depends(requires("run"))]) -> dict[str, Any]:
        return {"key_id": p.key_id}

    @app.post("/admin")
    async def admin(request: Request, _: Annotated[Any, Depends(requires("admin"))]) -> Any:
        principal = principal_of(request)  # what an access-log middleware reads
        return {"logged_as": principal.name if principal else None}

    @app.middleware("http")
    async def access_log(request: Request, call_next: Any) -> Any:
        response = await call_next(request)
        response.headers["X-Logged-As"] = access_log_fields(request)["key_id"]
        return response

    @app.get("/open")
    async def open_route(request: Request) -> dict[str, Any]:
        return {"principal": principal_of(request), "log": access_log_fields(request)}

    @app.get("/logged")
    async def logged(
        request: Request, _: Annotated[Any, Depends(requires("query"))]
    ) -> dict[str, str]:
        return access_log_fields(request)

    return app


class _Server:
    """uvicorn in a thread on the first free port of 18100-18120."""

    def __init__(self, app: FastAPI) -> None:
        self.sock = _bind_in_range(18100, 18120)
        self.port = self.sock.getsockname()[1]
        config = uvicorn.Config(app, log_level="info", lifespan="off", ws="none", http="h11")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("test server did not start")
            time.sleep(0.01)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc_info: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


def _bind_in_range(first: int, last: int) -> socket.socket:
    for port in range(first, last + 1):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            sock.close()
            continue
        return sock
    raise RuntimeError(f"no free port in {first}-{last}")


@pytest.fixture(scope="module")
def keyed_url() -> Iterator[str]:
    settings = _settings(KEYS, **{"auth.rate_limits.enabled": False})
    with _Server(_test_app(settings)) as url:
        yield url


@pytest.fixture(scope="module")
def open_url() -> Iterator[str]:
    settings = _settings([], **{"auth.rate_limits.enabled": False})
    with _Server(_test_app(settings)) as url:
        yield url


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _assert_error(response: httpx.Response, status: int, kind: str) -> None:
    assert response.status_code == status, response.text
    assert set(response.json()) == {"error"}
    assert response.json()["error"]["type"] == kind


@pytest.mark.integration
@pytest.mark.parametrize("path", ["/query", "/run", "/admin"])
@pytest.mark.parametrize(
    "headers",
    [
        {},
        _bearer("gk_wrong-key-of-the-right-shape-123456"),
        {"Authorization": "Basic Zm9vOmJhcg=="},
    ],
)
def test_every_guarded_route_refuses_a_missing_or_wrong_key(
    keyed_url: str, path: str, headers: dict[str, str]
) -> None:
    response = httpx.post(keyed_url + path, headers=headers)
    _assert_error(response, 401, "AuthenticationError")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.integration
@pytest.mark.parametrize(
    ("key", "path", "status"),
    [
        (APP_KEY, "/query", 200),
        (APP_KEY, "/run", 403),
        (APP_KEY, "/admin", 403),
        (RUNNER_KEY, "/query", 403),
        (RUNNER_KEY, "/run", 200),
        (RUNNER_KEY, "/admin", 403),
        (OPS_KEY, "/query", 200),
        (OPS_KEY, "/run", 200),
        (OPS_KEY, "/admin", 200),
    ],
)
def test_scopes_through_http(keyed_url: str, key: str, path: str, status: int) -> None:
    response = httpx.post(keyed_url + path, headers=_bearer(key))
    if status == 403:
        _assert_error(response, 403, "PermissionDeniedError")
        assert f'scope="{path[1:]}"' in response.headers["WWW-Authenticate"]
    else:
        assert response.status_code == 200, response.text


@pytest.mark.integration
def test_the_principal_reaches_the_route_and_the_request_state(keyed_url: str) -> None:
    assert httpx.post(keyed_url + "/query", headers=_bearer(APP_KEY)).json() == {
        "key_id": "app",
        "scopes": ["query"],
    }
    assert httpx.post(keyed_url + "/admin", headers=_bearer(OPS_KEY)).json() == {"logged_as": "ops"}
    assert httpx.get(keyed_url + "/open").json() == {
        "principal": None,
        "log": {"key_id": "-", "client": "127.0.0.1"},
    }
    logged = httpx.get(keyed_url + "/logged", headers=_bearer(APP_KEY)).json()
    assert logged == {"key_id": "app", "client": "127.0.0.1"}


@pytest.mark.integration
@pytest.mark.parametrize(
    ("headers", "status", "logged_as"),
    [
        (_bearer(APP_KEY), 403, "app"),  # a refused scope is still logged with its key id
        (_bearer(OPS_KEY), 200, "ops"),
        (_bearer("gk_wrong-key-of-the-right-shape-123456"), 401, "-"),
        ({}, 401, "-"),
    ],
)
def test_a_middleware_access_log_sees_the_key_id(
    keyed_url: str, headers: dict[str, str], status: int, logged_as: str
) -> None:
    response = httpx.post(keyed_url + "/admin", headers=headers)
    assert response.status_code == status
    assert response.headers["X-Logged-As"] == logged_as


@pytest.mark.integration
def test_two_authorization_headers_are_refused(keyed_url: str) -> None:
    headers = [("Authorization", f"Bearer {APP_KEY}"), ("Authorization", f"Bearer {OPS_KEY}")]
    response = httpx.post(keyed_url + "/admin", headers=headers)
    _assert_error(response, 401, "AuthenticationError")


@pytest.mark.integration
def test_without_keys_query_is_anonymous_and_run_admin_need_a_key(open_url: str) -> None:
    response = httpx.post(open_url + "/query")
    assert response.json() == {"key_id": None, "scopes": ["query"]}
    for path in ("/run", "/admin"):
        response = httpx.post(open_url + path)
        _assert_error(response, 401, "AuthenticationError")
        assert "needs an API key" in response.json()["error"]["message"]
    wrong = httpx.post(open_url + "/query", headers=_bearer(OPS_KEY))
    _assert_error(wrong, 401, "AuthenticationError")


@pytest.mark.integration
def test_keys_never_reach_the_logs(keyed_url: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    for key in (OPS_KEY, APP_KEY, "gk_presented-but-wrong-1234567890"):
        for path in ("/query", "/run", "/admin"):
            httpx.post(keyed_url + path, headers=_bearer(key))
    assert caplog.records  # uvicorn's access log and httpx's request log were captured
    assert OPS_KEY not in caplog.text and APP_KEY not in caplog.text
    assert "gk_presented-but-wrong" not in caplog.text


@pytest.mark.integration
def test_openapi_declares_the_bearer_scheme_on_guarded_routes(keyed_url: str) -> None:
    spec = httpx.get(keyed_url + "/openapi.json").json()
    scheme = spec["components"]["securitySchemes"]["GenesisApiKey"]
    assert scheme["type"] == "http" and scheme["scheme"] == "bearer"
    for path in ("/query", "/run", "/admin"):
        assert spec["paths"][path]["post"]["security"] == [{"GenesisApiKey": []}]
    assert "security" not in spec["paths"]["/open"]["get"]


@pytest.mark.integration
def test_a_rate_limited_key_gets_429_with_retry_after() -> None:
    settings = _settings(
        KEYS,
        **{"auth.rate_limits.query": {"rate_per_s": 0.01, "burst": 2}},
    )
    with _Server(_test_app(settings)) as url:
        codes = [httpx.post(url + "/query", headers=_bearer(APP_KEY)).status_code for _ in range(3)]
        refused = httpx.post(url + "/query", headers=_bearer(APP_KEY))
        other = httpx.post(url + "/query", headers=_bearer(OPS_KEY))
    assert codes == [200, 200, 429]
    _assert_error(refused, 429, "RateLimitExceededError")
    assert 90 <= int(refused.headers["Retry-After"]) <= 100  # one token at 0.01/s
    assert other.status_code == 200  # buckets are per key


# -- genesis keys ------------------------------------------------------------------------------


def test_keys_new_makes_a_key_that_its_printed_entry_accepts(tmp_path: Any) -> None:
    import json

    from typer.testing import CliRunner

    from genesis.cli import app as cli

    result = CliRunner().invoke(cli, ["keys", "new", "--id", "ci", "-s", "run", "--json"])
    assert result.exit_code == 0, result.output
    made = json.loads(result.stdout)
    assert made["sha256"] == hash_api_key(made["key"]) and made["scopes"] == ["run"]
    plain = CliRunner().invoke(cli, ["keys", "new", "--id", "ci", "-s", "run"])
    entry = next(line for line in plain.stdout.splitlines() if line.startswith("entry: "))
    (tmp_path / "dev.yaml").write_text("auth:\n  keys:\n    " + entry.removeprefix("entry: "))
    key = next(line for line in plain.stdout.splitlines() if line.startswith("key: "))
    auth = Authenticator.from_settings(load_settings(config_dir=tmp_path, environ={}))
    principal = auth.authenticate("Bearer " + key.removeprefix("key:").strip())
    assert principal.key_id == "ci" and principal.scopes == {"run"}


def test_keys_hash_reads_the_key_from_stdin() -> None:
    from typer.testing import CliRunner

    from genesis.cli import app as cli

    result = CliRunner().invoke(cli, ["keys", "hash"], input=OPS_KEY + "\n")
    assert result.exit_code == 0 and result.stdout.strip() == hash_api_key(OPS_KEY)
    assert CliRunner().invoke(cli, ["keys", "hash"], input="").exit_code == 2
    bad = CliRunner().invoke(cli, ["keys", "new", "-s", "root"])
    assert bad.exit_code == 2 and "--scope" in bad.output
