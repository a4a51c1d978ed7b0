"""Security: OAuth2 bearer tokens, scopes, signed links, the edge, and the audit log.

policy.py     the one table: route (method, path pattern) -> permission
grant.py      Grant: what a request may do; limit_query() for searches
tokens.py     JWT validation (authlib's JOSE layer, joserfc)
jwks.py       an external issuer's keys: discovery, cache, refresh on rotation
keys.py       the built-in issuer's signing keys and their rotation
clients.py    clients registered with the built-in issuer
issuer.py     the built-in authorization server (authlib), client credentials
links.py      HMAC-signed, expiring links to one study
endpoints.py  /.well-known/*, /oauth/*, /api/links
edge.py       size limits, slow clients, security headers
protocol.py   uvicorn protocol: deadline and limits for request heads
middleware.py the ASGI middleware that applies all of it
audit.py      one JSON line per request and per DIMSE operation
security.py   Security: the parts above built from the settings
"""
