"""The built-in authorization server (authlib): client-credentials grant, JWT access tokens.

For deployments without an identity provider (`--auth oauth2` without
`--oauth-issuer`). Clients registered with `dicomweb clients add` authenticate at the
token endpoint with HTTP Basic or form parameters (RFC 6749 2.3.1) and receive an
RFC 9068 JWT access token signed with the key ring's newest key. Tokens are not
stored: the server verifies them like any issuer's, through its own keys.

authlib's AuthorizationServer is framework-neutral and synchronous; this module gives
it requests as plain values, and the HTTP endpoint runs it in a worker thread
(client lookup reads a file; signing is an RSA private-key operation).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from authlib.oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import ClientMixin, OAuth2Payload, OAuth2Request
from authlib.oauth2.rfc6749.errors import InvalidRequestError, InvalidScopeError, OAuth2Error
from authlib.oauth2.rfc6749.grants import ClientCredentialsGrant
from authlib.oauth2.rfc9068 import JWTBearerTokenGenerator
from joserfc.jwk import KeySet

from dicomweb.auth.clients import Client, ClientRegistry
from dicomweb.auth.keys import ALGORITHM, KeyRing

AUTH_METHODS = ["client_secret_basic", "client_secret_post"]


@dataclass(frozen=True, slots=True)
class TokenRequest:
    """A token endpoint request as values: what the HTTP endpoint read."""

    method: str
    url: str
    # Looked up by authlib as "Authorization": a case-insensitive mapping.
    headers: Mapping[str, str]
    form: Sequence[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class TokenResponse:
    status: int
    body: dict[str, Any]
    headers: list[tuple[str, str]]


class _Payload(OAuth2Payload):  # type: ignore[misc]
    def __init__(self, form: Sequence[tuple[str, str]]) -> None:
        self._datalist: dict[str, list[str]] = defaultdict(list)
        for name, value in form:
            self._datalist[name].append(value)
        self._data = {name: values[0] for name, values in self._datalist.items()}

    @property
    def data(self) -> dict[str, str]:
        return self._data

    @property
    def datalist(self) -> dict[str, list[str]]:
        return self._datalist


class _Request(OAuth2Request):  # type: ignore[misc]
    def __init__(self, request: TokenRequest) -> None:
        super().__init__(request.method, request.url, headers=request.headers)
        self.payload = _Payload(request.form)

    @property
    def form(self) -> dict[str, str]:
        data: dict[str, str] = self.payload.data
        return data

    @property
    def args(self) -> dict[str, str]:
        return {}


class _Client(ClientMixin):  # type: ignore[misc]
    """A registered client as authlib sees it."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def get_client_id(self) -> str:
        return self.client.client_id

    def get_default_redirect_uri(self) -> None:
        return None

    def get_allowed_scope(self, scope: str | None) -> str:
        registered = self.client.scopes
        if not scope:
            return " ".join(registered)
        requested = scope.split()
        refused = [s for s in requested if s not in registered]
        if refused:
            raise InvalidScopeError(
                description=f"the client is not registered for {' '.join(refused)}"
            )
        return " ".join(dict.fromkeys(requested))

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return False

    def check_client_secret(self, client_secret: str) -> bool:
        return self.client.check_secret(client_secret)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return endpoint == "token" and method in AUTH_METHODS

    def check_response_type(self, response_type: str) -> bool:
        return False

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == "client_credentials"


class _ClientCredentials(ClientCredentialsGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = AUTH_METHODS


class _TokenGenerator(JWTBearerTokenGenerator):  # type: ignore[misc]
    def __init__(self, issuer: str, audience: str, keys: KeyRing, lifetime: int, study_claim: str):
        super().__init__(issuer, alg=ALGORITHM, expires_generator=lifetime)
        self.audience = audience
        self.keys = keys
        self.study_claim = study_claim

    def get_jwks(self) -> KeySet:
        # Only the newest key: the token's kid header names it.
        return KeySet([self.keys.signing_key().key])

    def get_audiences(self, client: _Client, user: object, scope: str) -> str:
        return self.audience

    def get_extra_claims(
        self, client: _Client, grant_type: str, user: object, scope: str
    ) -> dict[str, Any]:
        claims: dict[str, Any] = {"client_name": client.client.name}
        if client.client.studies and self.study_claim:
            claims[self.study_claim] = list(client.client.studies)
        return claims


class BuiltinIssuer(AuthorizationServer):  # type: ignore[misc]
    """The token endpoint's logic: authenticate the client, issue a signed JWT."""

    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        clients: ClientRegistry,
        keys: KeyRing,
        scopes: Sequence[str],
        lifetime: int,
        study_claim: str,
    ) -> None:
        super().__init__(scopes_supported=list(scopes))
        self.issuer = issuer
        self.clients = clients
        self.keys = keys
        self.register_grant(_ClientCredentials)
        self.register_token_generator(
            "default", _TokenGenerator(issuer, audience, keys, lifetime, study_claim)
        )

    def issue(self, request: TokenRequest) -> TokenResponse:
        """Answer a token request (RFC 6749 4.4.2 and 4.4.3, 5.1, 5.2)."""
        try:
            repeated = [k for k, v in _Payload(request.form).datalist.items() if len(v) > 1]
            if repeated:
                # RFC 6749 3.2: parameters must not be included more than once.
                raise InvalidRequestError(description=f"repeated parameter: {repeated[0]}")
            response: TokenResponse = self.create_token_response(_Request(request))
        except OAuth2Error as error:
            status, body, headers = error()
            return TokenResponse(status, body, list(headers))
        return response

    # authlib's framework hooks

    def query_client(self, client_id: str) -> _Client | None:
        client = self.clients.find(client_id)
        return None if client is None else _Client(client)

    def save_token(self, token: dict[str, Any], request: OAuth2Request) -> None:
        """Nothing to save: the token is a signed JWT, verified by its signature."""

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        """No listeners."""

    def create_oauth2_request(self, request: _Request) -> _Request:
        return request

    def create_json_request(self, request: object) -> object:
        raise NotImplementedError("the built-in server has no JSON endpoints")

    def handle_response(
        self, status: int, body: dict[str, Any], headers: list[tuple[str, str]]
    ) -> TokenResponse:
        return TokenResponse(status, body, list(headers))
