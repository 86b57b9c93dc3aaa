"""Refusals in OpenAI's error shape: ``{"error": {"message", "type", "code", "param"}}``."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

ErrorBody = dict[str, dict[str, Any]]


def error_body(
    message: str,
    kind: str = "invalid_request_error",
    code: str | None = None,
    param: str | None = None,
) -> ErrorBody:
    """The JSON body of an OpenAI error response."""
    return {"error": {"message": message, "type": kind, "code": code, "param": param}}


class InvalidRequest(Exception):
    """A request body the fake refuses with a 400, naming the offending parameter."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code

    def body(self) -> ErrorBody:
        return error_body(self.message, code=self.code, param=self.param)

    @classmethod
    def from_validation(cls, exc: ValidationError, fields: frozenset[str]) -> InvalidRequest:
        """The most specific of pydantic's errors, its location spelled as OpenAI does
        (``messages[0].content``); ``fields`` are the models' field names, which tell
        them apart from the names pydantic gives to the members of a union."""
        errors = [(_param(error, fields), error) for error in exc.errors()]
        # A union reports one error per member; the member that got furthest names the spot.
        param, first = max(errors, key=lambda pair: pair[0].count(".") + pair[0].count("["))
        if first["type"] == "json_invalid":
            return cls(f"We could not parse the JSON body of your request: {first['msg']}.")
        if not param:
            return cls("The request body must be a JSON object.", code="invalid_type")
        if first["type"] == "missing":
            return cls(
                f"Missing required parameter: '{param}'.", param, "missing_required_parameter"
            )
        if first["type"] == "extra_forbidden":
            return cls(f"Unrecognized parameter: '{param}'.", param, "unknown_parameter")
        said = dict.fromkeys(_message(error) for where, error in errors if where == param)
        kind = "invalid_type" if first["type"].endswith("_type") else "invalid_value"
        return cls(f"Invalid value for '{param}': {'; or '.join(said)}.", param, kind)


def field_names(*models: type[BaseModel]) -> frozenset[str]:
    """Every field name of ``models`` (for ``InvalidRequest.from_validation``)."""
    return frozenset(name for model in models for name in model.model_fields)


def _param(error: ErrorDetails, fields: frozenset[str]) -> str:
    loc = error["loc"]
    if error["type"] == "extra_forbidden":
        fields = fields | {str(loc[-1])}  # the unknown name is the point
    param = ""
    for part in loc:
        if isinstance(part, int):
            param += f"[{part}]"
        elif part in fields:
            param += f".{part}" if param else part
    return param


def _message(error: ErrorDetails) -> str:
    # A validator's ValueError reads better without pydantic's "Value error, " prefix.
    if error["type"] == "value_error":
        return str(error["ctx"]["error"])
    return str(error["msg"])
