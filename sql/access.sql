-- Bearer tokens of the HTTP service (semindex.access). Only a token's SHA-256 is stored.

-- name: insert_token
INSERT INTO semindex.api_tokens (token_sha256, label, owner, grant_scope, expires_at)
VALUES (%(digest)s, %(label)s, %(owner)s, %(grant_scope)s, %(expires_at)s)
RETURNING token_id, label, owner, grant_scope, created_at, expires_at, revoked_at;

-- name: tokens
SELECT token_id, label, owner, grant_scope, created_at, expires_at, revoked_at
FROM semindex.api_tokens ORDER BY token_id;

-- name: revoke_token
UPDATE semindex.api_tokens SET revoked_at = coalesce(revoked_at, now())
WHERE token_id = %(token_id)s
RETURNING token_id, label, owner, grant_scope, created_at, expires_at, revoked_at;

-- name: token_by_digest
-- The server's lookup, on every request (read-only: the service runs as the reader role).
SELECT token_id, label, owner, grant_scope, created_at, expires_at, revoked_at, now() AS checked_at
FROM semindex.api_tokens WHERE token_sha256 = %(digest)s;
