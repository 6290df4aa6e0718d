"""Describes the end-user session to drf-spectacular (OpenAPI)."""

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class EndUserSessionScheme(OpenApiAuthenticationExtension):  # type: ignore[no-untyped-call]
    target_class = "web.auth.EndUserSessionAuthentication"
    name = "endUserSession"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {"type": "apiKey", "in": "cookie", "name": "sessionid"}
