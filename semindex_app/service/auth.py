"""Bearer tokens as a FastAPI dependency: the token is looked up with the service's async pool (one
read of semindex.api_tokens per request, so a revocation holds from the next request on) and turned
into a semindex.access.Caller, whose grant every search route applies to its scope."""

from __future__ import annotations

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from psycopg.rows import class_row

from semindex.access import Caller, TokenRow, caller_from, token_digest
from semindex.sql_files import statement

# auto_error=False: a missing token is answered in the route family's own error format, not FastAPI's.
bearer = HTTPBearer(auto_error=False, description="A token from `semindex tokens create` (owner or grant-bound)")


async def caller(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> Caller:
    token = credentials.credentials if credentials else None
    row = None
    if token:
        async with request.app.state.async_pool.connection() as conn:
            cursor = conn.cursor(row_factory=class_row(TokenRow))
            await cursor.execute(statement("access", "token_by_digest"), {"digest": token_digest(token)})
            row = await cursor.fetchone()
    who = caller_from(row, token)
    request.state.token_id = who.token_id
    return who
