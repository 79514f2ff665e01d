"""Device passwords encrypted at rest with Fernet (AES-128-CBC + HMAC-SHA256).

SECRET_KEY holds one Fernet key, or several separated by commas to rotate keys: the first
encrypts, any of them decrypts (`rainforest secret-key` prints a new one).
"""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from app.errors import ConfigError, CredentialError


def new_key() -> str:
    """A fresh SECRET_KEY value."""
    return Fernet.generate_key().decode()


class Vault:
    """Encrypts and decrypts device passwords; never logs or returns plaintext by itself."""

    def __init__(self, secret_key: str) -> None:
        parts = [k.strip() for k in secret_key.split(",") if k.strip()]
        if not parts:
            raise ConfigError(
                "SECRET_KEY is not set: put one in .env (make one with `rainforest secret-key`)."
            )
        try:
            self._fernet = MultiFernet([Fernet(k.encode()) for k in parts])
        except (ValueError, TypeError):
            raise ConfigError(
                "SECRET_KEY is not a valid Fernet key (44 url-safe base64 characters); "
                "make one with `rainforest secret-key`."
            ) from None
        self._cache: dict[str, str] = {}

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def decrypt(self, token: str) -> str:
        """Plaintext for a stored token; cached because pingers resync the fleet every minute."""
        cached = self._cache.get(token)
        if cached is not None:
            return cached
        try:
            plaintext = self._fernet.decrypt(token.encode()).decode()
        except InvalidToken:
            raise CredentialError(
                "a stored device password does not decrypt with SECRET_KEY "
                "(was the key changed without keeping the old one in the list?)"
            ) from None
        if len(self._cache) > 100_000:
            self._cache.clear()
        self._cache[token] = plaintext
        return plaintext
