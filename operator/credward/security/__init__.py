"""The credward security service: OAuth2 client-credentials grant, signed JWTs, JWKS, introspection, revocation."""
