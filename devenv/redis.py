"""Local Redis 7 for the queue: loopback only, an admin password, append-only file, no eviction."""

from __future__ import annotations

import shutil
import subprocess

from devenv.base import Service
from modules.errors import DevenvError

REDIS_PORT = 6390


class RedisService(Service):
    name = "redis"
    port = REDIS_PORT

    def _config(self, password: str) -> str:
        return "\n".join(
            [
                f"bind {self.host}",
                f"port {self.port}",
                "protected-mode yes",
                "daemonize yes",
                f"pidfile {self.pid_file}",
                f"dir {self.dir}",
                f"logfile {self.dir / 'redis.log'}",
                "appendonly yes",
                "maxmemory 512mb",
                "maxmemory-policy noeviction",
                f"aclfile {self.dir / 'users.acl'}",
                "",
            ]
        )

    def _start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise DevenvError("redis-server is not installed (run `make bootstrap`)")
        password = self.secret("admin.password")
        config = self._config(password)
        acl = self.dir / "users.acl"
        if not acl.exists():
            # The default user is the admin; the stack adds its own least-privilege users beside it.
            acl.write_text(f"user default on >{password} ~* &* +@all\n")
            acl.chmod(0o600)
        conf = self.dir / "redis.conf"
        conf.write_text(config)
        conf.chmod(0o600)
        subprocess.run([binary, str(conf)], check=True, capture_output=True)

    def env(self) -> dict[str, str]:
        return {
            "PENGUINMAILS_REDIS_HOST": self.host,
            "PENGUINMAILS_REDIS_PORT": str(self.port),
            "PENGUINMAILS_REDIS_ADMIN_PASSWORD": self.secret("admin.password"),
        }
