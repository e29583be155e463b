"""The devenv services are idempotent: start twice keeps one process, stop stops it, data survives."""

from __future__ import annotations

import redis

from devenv.redis import RedisService


def test_redis_service_start_is_idempotent_and_restart_keeps_credentials(tmp_path):
    service = RedisService(root=tmp_path, port=6499)
    try:
        first = service.start()
        pid = service.pid()
        assert first.running and pid
        assert service.start().running and service.pid() == pid  # no second server

        password = service.env()["PENGUINMAILS_REDIS_ADMIN_PASSWORD"]
        client = redis.Redis(port=6499, password=password)
        client.set("k", "v")
        # Loopback only, and the admin password is required.
        assert service.status().address == "127.0.0.1:6499"
        try:
            redis.Redis(port=6499).get("k")
            raise AssertionError("unauthenticated access was allowed")
        except redis.exceptions.AuthenticationError:
            pass

        assert service.stop().running is False
        assert service.pid() is None
        service.start()
        assert service.pid() != pid
        assert redis.Redis(port=6499, password=password).get("k") == b"v"  # append-only file kept it
    finally:
        service.stop()
