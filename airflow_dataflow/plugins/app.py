"""The plugin's FastAPI app: the webhook receiver and the Dataflow view, mounted at ``/dataflow``."""

from __future__ import annotations

import json

from fastapi import FastAPI

from airflow_dataflow.ui.app import router
from airflow_dataflow.webhooks.receiver import Receiver, create_app


def dataflow_app(receiver: Receiver | None = None) -> FastAPI:
    app = create_app(receiver)
    app.include_router(router())
    return app


def openapi_document() -> str:
    """The app's OpenAPI document as committed in ``docs/openapi.json``."""
    return json.dumps(dataflow_app().openapi(), indent=2, sort_keys=True) + "\n"


def write_openapi(path: str = "docs/openapi.json") -> None:
    """Regenerate the committed document (``make openapi``)."""
    with open(path, "w", encoding="utf-8") as out:
        out.write(openapi_document())
