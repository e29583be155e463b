"""The MTA-STS policy host of a converged native mail host: nginx runs a valid configuration on 443 only."""

from __future__ import annotations


def test_mta_sts_nginx_runs_with_a_valid_configuration(host):
    assert host.process.filter(comm="nginx")
    assert host.run("nginx -t -q").rc == 0


def test_mta_sts_nginx_listens_on_https_only(host):
    assert host.socket("tcp://0.0.0.0:443").is_listening
    assert not host.socket("tcp://0.0.0.0:80").is_listening


def test_mta_sts_serves_nothing_but_the_policies(host):
    assert not host.file("/etc/nginx/sites-enabled/default").exists
    config = host.run("nginx -T").stdout
    assert "server_tokens off;" in config and "ssl_reject_handshake on;" in config
    assert "autoindex on" not in config
