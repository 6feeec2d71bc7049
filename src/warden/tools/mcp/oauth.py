"""OAuth 2.1 for HTTP MCP servers, built on the ``mcp`` SDK's providers (`mcp.client.auth`):
protected-resource and authorization-server discovery, dynamic or pre-registration, PKCE,
scope selection and step-up, and refresh are the SDK's. Warden adds what a server-side runtime
needs: tokens kept in memory only, secrets read from the environment when a token is needed,
and an authorization-code redirect followed headlessly (no browser, nothing listening)."""

from __future__ import annotations

import logging
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx2
from mcp.client.auth import AuthorizationCodeResult, OAuthClientProvider, OAuthFlowError
from mcp.client.auth.extensions.client_credentials import ClientCredentialsOAuthProvider
from mcp.client.auth.oauth2 import OAuthContext
from mcp.client.auth.utils import union_scopes
from mcp.shared.auth import OAuthClientInformationFull, OAuthClientMetadata, OAuthToken
from pydantic import AnyUrl

from warden.config import MCPServerConfig
from warden.errors import WardenError

log = logging.getLogger("warden.mcp")

AUTHORIZE_TIMEOUT = 30.0
MAX_AUTHORIZE_REDIRECTS = 5


class MCPAuthError(WardenError):
    """OAuth for an MCP server is misconfigured (e.g. its secret's variable is unset)."""

    code = "mcp_auth"
    http_status = 502


class MemoryTokenStorage:
    """The SDK's `TokenStorage`, in memory: tokens and a dynamic registration last as long as
    the process (a restart authorises again). Nothing here is ever logged."""

    def __init__(self, client_info: OAuthClientInformationFull | None = None) -> None:
        self._tokens: OAuthToken | None = None
        self._client_info = client_info

    async def get_tokens(self) -> OAuthToken | None:
        return self._tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self._tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self._client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self._client_info = client_info

    def __repr__(self) -> str:
        return f"MemoryTokenStorage(tokens={'set' if self._tokens else 'none'})"


class HeadlessAuthorization:
    """The authorization-code grant's redirect and callback without a browser: GET the
    authorization URL and read ``code``, ``state`` and ``iss`` from the authorization server's
    redirect to ``redirect_uri``. Works with authorization servers that approve the client
    without a person; a login or consent page is an error, not something to fill in."""

    def __init__(self, server: str, redirect_uri: str) -> None:
        self.server = server
        self.redirect_uri = redirect_uri
        self._result: AuthorizationCodeResult | None = None

    def _is_redirect_uri(self, location: str) -> bool:
        want, got = urlsplit(self.redirect_uri), urlsplit(location)
        return (want.scheme, want.netloc.lower(), want.path or "/") == (
            got.scheme,
            got.netloc.lower(),
            got.path or "/",
        )

    async def redirect(self, authorization_url: str) -> None:
        self._result = None
        url = authorization_url
        async with httpx2.AsyncClient(timeout=AUTHORIZE_TIMEOUT, follow_redirects=False) as http:
            for _ in range(MAX_AUTHORIZE_REDIRECTS + 1):
                response = await http.get(url)
                location = response.headers.get("location")
                if response.status_code not in (301, 302, 303, 307, 308) or not location:
                    raise OAuthFlowError(
                        f"MCP server {self.server!r}: the authorization endpoint answered HTTP "
                        f"{response.status_code} instead of redirecting; Warden authorises without a "
                        "browser, so the client must be approved without user interaction "
                        "(or use grant client_credentials)"
                    )
                location = urljoin(url, location)
                if self._is_redirect_uri(location):
                    self._result = self._parse(location)
                    return
                url = location
        raise OAuthFlowError(f"MCP server {self.server!r}: too many redirects during authorization")

    def _parse(self, location: str) -> AuthorizationCodeResult:
        query = parse_qs(urlsplit(location).query)

        def one(key: str) -> str | None:
            values = query.get(key)
            return values[0] if values else None

        code = one("code")
        if code is None:
            error = one("error") or "no code"
            detail = one("error_description")
            raise OAuthFlowError(
                f"MCP server {self.server!r}: authorization refused: {error}{f' ({detail})' if detail else ''}"
            )
        return AuthorizationCodeResult(code=code, state=one("state"), iss=one("iss"))

    async def callback(self) -> AuthorizationCodeResult:
        result, self._result = self._result, None
        if result is None:
            raise OAuthFlowError(f"MCP server {self.server!r}: no authorization code was received")
        return result


def _add_configured_scopes(context: OAuthContext, scope: str | None) -> None:
    """The SDK replaces the requested scope with what the server's challenge or metadata
    select on every authorization; the configured scopes are asked for as well."""
    context.client_metadata.scope = union_scopes(context.client_metadata.scope, scope)


class AuthorizationCodeProvider(OAuthClientProvider):
    extra_scope: str | None = None

    async def _perform_authorization(self) -> httpx2.Request:
        _add_configured_scopes(self.context, self.extra_scope)
        return await super()._perform_authorization()


class ClientCredentialsProvider(ClientCredentialsOAuthProvider):
    extra_scope: str | None = None

    async def _perform_authorization(self) -> httpx2.Request:
        _add_configured_scopes(self.context, self.extra_scope)
        return await super()._perform_authorization()


def build_auth(config: MCPServerConfig) -> httpx2.Auth | None:
    """The ``httpx2.Auth`` for a server's ``oauth`` section (None without one). One per server:
    it holds the tokens, so connections and reconnections share them."""
    oauth = config.oauth
    if oauth is None:
        return None
    assert config.url is not None
    scope = " ".join(oauth.scopes) or None
    secret = oauth.client_secret()
    if oauth.client_secret_env and secret is None:
        raise MCPAuthError(
            f"MCP server {config.name!r}: the environment variable {oauth.client_secret_env} "
            "(its OAuth client secret) is not set"
        )
    if oauth.grant == "client_credentials":
        assert oauth.client_id is not None and secret is not None
        method = oauth.auth_method
        assert method != "none"
        credentials = ClientCredentialsProvider(
            server_url=config.url,
            storage=MemoryTokenStorage(),
            client_id=oauth.client_id,
            client_secret=secret,
            token_endpoint_auth_method=method,
            scope=scope,
            issuer=oauth.issuer,
        )
        credentials.extra_scope = scope
        return credentials
    redirect_uri = AnyUrl(oauth.redirect_uri)
    registered = None
    if oauth.client_id is not None:
        registered = OAuthClientInformationFull(
            client_id=oauth.client_id,
            client_secret=secret,
            redirect_uris=[redirect_uri],
            token_endpoint_auth_method=oauth.auth_method,
            issuer=oauth.issuer,
        )
    headless = HeadlessAuthorization(config.name, oauth.redirect_uri)
    provider = AuthorizationCodeProvider(
        server_url=config.url,
        client_metadata=OAuthClientMetadata(
            client_name=oauth.client_name,
            redirect_uris=[redirect_uri],
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
            scope=scope,
        ),
        storage=MemoryTokenStorage(registered),
        redirect_handler=headless.redirect,
        callback_handler=headless.callback,
        client_metadata_url=oauth.client_metadata_url,
    )
    provider.extra_scope = scope
    return provider
