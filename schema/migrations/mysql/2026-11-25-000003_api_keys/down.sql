DROP TABLE revoked_tokens;
DROP TABLE api_keys;
