"""Image recipes: the mirror comes from the machine's apt sources and names change only with the recipe."""

from __future__ import annotations

import pytest

from devenv import images

DEB822 = """Types: deb
URIs: http://mirror.example.test/debian
Suites: bookworm bookworm-updates
Components: main contrib
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.example.test/debian-security
Suites: bookworm-security
Components: main

Types: deb-src
URIs: http://src.example.test/debian
Suites: bookworm
Components: main

Enabled: no
Types: deb
URIs: http://disabled.example.test/debian
Suites: bookworm
Components: main
"""


@pytest.fixture
def sources(tmp_path, monkeypatch):
    listing = tmp_path / "sources.list"
    folder = tmp_path / "sources.list.d"
    folder.mkdir()

    def use(one_line: str = "", deb822: str = "") -> None:
        listing.write_text(one_line)
        (folder / "debian.sources").write_text(deb822)
        (folder / "other.list.disabled").write_text("deb http://ignored.example.test/x bookworm main\n")
        monkeypatch.setattr(images, "SOURCES_LIST", listing)
        monkeypatch.setattr(images, "SOURCES_DIR", folder)
        monkeypatch.delenv("PENGUINMAILS_DEBIAN_MIRROR", raising=False)

    return use


def test_mirror_comes_from_deb822_sources_skipping_disabled_and_src(sources):
    sources(deb822=DEB822)
    assert images.debian_mirror() == "http://mirror.example.test/debian"
    assert images.rootfs_sources_list().splitlines() == [
        "deb http://mirror.example.test/debian bookworm main",
        "deb http://mirror.example.test/debian bookworm-updates main",
        "deb http://mirror.example.test/debian-security bookworm-security main",
    ]


def test_mirror_comes_from_one_line_sources_with_options(sources):
    sources(
        one_line="# comment\ndeb [arch=amd64 signed-by=/k.gpg] http://one.example.test/debian bookworm main\n"
        "deb http://other.example.test/ubuntu jammy main\n"
    )
    assert images.debian_mirror() == "http://one.example.test/debian"


def test_environment_overrides_the_mirror(sources, monkeypatch):
    sources(deb822=DEB822)
    monkeypatch.setenv("PENGUINMAILS_DEBIAN_MIRROR", "http://override.example.test/debian")
    assert images.debian_mirror() == "http://override.example.test/debian"


def test_missing_debian_source_is_a_clear_error(sources):
    sources(one_line="deb http://other.example.test/ubuntu jammy main\n")
    with pytest.raises(images.ImageBuildError, match="PENGUINMAILS_DEBIAN_MIRROR"):
        images.debian_mirror()


def test_image_names_are_stable_and_follow_every_recipe_change(sources, monkeypatch):
    sources(deb822=DEB822)
    first = [image.name for image in images.plan("mailhost")]
    assert first == [image.name for image in images.plan("mailhost")]
    assert [name.rsplit(":", 1)[0] for name in first] == [
        "localhost/penguinmails-debian",
        "localhost/penguinmails-host",
        "localhost/penguinmails-mailhost",
    ]
    # The base recipe changes: base and mailhost get new names, the rootfs keeps its own.
    monkeypatch.setattr(images, "BASE_PACKAGES", (*images.BASE_PACKAGES, "less"))
    second = [image.name for image in images.plan("mailhost")]
    assert second[0] == first[0] and second[1] != first[1] and second[2] != first[2]
    # A salt renames the whole chain (cold benchmarks build beside the images in use).
    salted = [image.name for image in images.plan("mailhost", salt="bench")]
    assert not set(salted) & set(second)


def test_mailhost_recipe_preseeds_postfix_and_starts_no_service(sources):
    sources(deb822=DEB822)
    recipe = images.plan("mailhost")[-1].containerfile
    assert "postfix/main_mailer_type select Internet Site" in recipe
    assert "policy-rc.d" in recipe and "rm -f /usr/sbin/policy-rc.d" in recipe
    for package in ("postfix", "dovecot-imapd", "dovecot-lmtpd", "spamd", "spamass-milter", "opendkim-tools"):
        assert package in recipe


def test_unknown_kind_is_refused(sources):
    sources(deb822=DEB822)
    with pytest.raises(images.ImageBuildError, match="'desktop' is unknown"):
        images.plan("desktop")
