"""The API's answer object says whether the knowledge base answered (OpenAPI tells the truth)."""

from __future__ import annotations

from pathlib import Path

import pytest

from genesis.app import Genesis
from genesis.server import create_app


# server/_sessions.py (not this feature) registers two GET routes with one operation id.
@pytest.mark.filterwarnings("ignore:Duplicate Operation ID")
def test_openapi_answer_carries_abstained_and_see_also(tmp_path: Path) -> None:
    app = create_app(Genesis.from_config("dev", environ={}, overrides={"home": str(tmp_path)}))
    schemas = app.openapi()["components"]["schemas"]
    answer = schemas["RAGAnswer"]["properties"]
    assert answer["abstained"]["type"] == "boolean"
    assert answer["see_also"]["items"]["$ref"].endswith("/Source")
    ask = app.openapi()["paths"]["/v1/ask"]["post"]["responses"]["200"]
    assert ask["content"]["application/json"]["schema"]["$ref"].endswith("/AskResult")
