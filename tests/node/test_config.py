"""Node configuration: TOML file, environment on top, and a production mode that fails closed."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.config import MAX_PUBLIC_URL, load_settings
from node.errors import ConfigError
from node.keystore import DEV_PASSPHRASE
from node.models import Tag
from node.services.public import COMMITMENT_PREFIX_HEX
from node.tags import qr_payload


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "node.toml"
    path.write_text(text)
    return path


def test_file_then_environment_then_arguments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write(
        tmp_path,
        'name = "north"\nport = 9001\nanchor_interval = 2.5\n'
        '[peers]\n"0x70997970C51812dc3A010C7d01b50e0d17dc79C8" = "http://127.0.0.1:9002"\n',
    )
    settings = load_settings(config)
    assert (settings.name, settings.port, settings.anchor_interval) == ("north", 9001, 2.5)
    assert settings.peers == {"0x70997970C51812dc3A010C7d01b50e0d17dc79C8": "http://127.0.0.1:9002"}
    assert settings.mode == "production"  # the default fails closed
    monkeypatch.setenv("ARCHIVECHAIN_PORT", "9100")
    assert load_settings(config).port == 9100  # the environment wins over the file
    assert load_settings(config, port=9200).port == 9200  # explicit arguments win over both


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("colour = 1\n", "colour"),  # unknown keys are refused, not ignored
        ("port = 70000\n", "port"),
        ("sqlite_cache_mib = 0\n", "sqlite_cache_mib"),
        ("retention_years = { INPATIENT = 30 }\n", "retention_years"),
        ("port = \n", "invalid configuration"),  # TOML syntax
        # the cold tier on the hot tier's IPFS daemon: a move would unpin the only copy
        (
            'blob_store = "ipfs"\nipfs_api = "/ip4/127.0.0.1/tcp/5001/http"\n'
            'cold_ipfs_api = "http://localhost:5001"\n',
            "cold_ipfs_api names the hot tier's IPFS daemon",
        ),
        (
            'blob_store = "ipfs"\nipfs_api = "/dns/ipfs.lan/tcp/5001/http"\n'
            'cold_ipfs_api = "/dns/IPFS.lan/tcp/5001"\n',
            "cold_ipfs_api names the hot tier's IPFS daemon",
        ),
    ],
)
def test_malformed_configuration_is_refused(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(write(tmp_path, text))


def test_tiers_on_two_ipfs_daemons_are_accepted(tmp_path: Path) -> None:
    """Another port, another host, or a local hot tier: separate stores, accepted."""
    for text in (
        'blob_store = "ipfs"\nipfs_api = "/ip4/127.0.0.1/tcp/5001/http"\n'
        'cold_ipfs_api = "/ip4/127.0.0.1/tcp/5002/http"\n',
        'blob_store = "ipfs"\nipfs_api = "/ip4/10.0.0.8/tcp/5001/http"\n'
        'cold_ipfs_api = "/ip4/10.0.0.9/tcp/5001/http"\n',
        'cold_ipfs_api = "/ip4/127.0.0.1/tcp/5001/http"\n',  # hot tier local, ipfs_api unused
    ):
        assert load_settings(write(tmp_path, text)).cold_ipfs_api is not None


def test_a_public_url_too_long_for_a_qr_label_is_refused(tmp_path: Path) -> None:
    """``tags.label`` holds a QR label's text; PostgreSQL refuses a longer one, so a public URL
    that makes it longer is refused at start (a tag bind would have failed with a 500)."""
    longest = "https://archive.example.org/" + "p" * (MAX_PUBLIC_URL - 28)
    assert len(longest) == MAX_PUBLIC_URL
    label = qr_payload(longest, "0" * 26, "f" * COMMITMENT_PREFIX_HEX)
    assert len(label) == Tag.__table__.c.label.type.length
    assert load_settings(write(tmp_path, f'public_url = "{longest}"\n')).public_url == longest
    with pytest.raises(ConfigError, match="public_url"):
        load_settings(write(tmp_path, f'public_url = "{longest}q"\n'))
    with pytest.raises(ConfigError, match="host"):  # the default public URL is made from it
        load_settings(write(tmp_path, f'host = "{"h" * 200}.example.org"\n'))


def test_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(tmp_path / "absent.toml")


def test_production_refuses_missing_or_insecure_passphrases(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no keystore passphrase"):
        load_settings(data_dir=tmp_path).passphrase()
    for weak in ("", "short", DEV_PASSPHRASE):
        with pytest.raises(ConfigError, match="insecure"):
            load_settings(data_dir=tmp_path, keystore_passphrase=weak).passphrase()
    strong = "correct horse battery staple 2026"
    assert load_settings(keystore_passphrase=strong).passphrase() == strong
    secret_file = tmp_path / "pass"
    secret_file.write_text(strong + "\n")
    assert load_settings(keystore_passphrase_file=secret_file).passphrase() == strong
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(keystore_passphrase_file=tmp_path / "nope").passphrase()


def test_dev_mode_uses_the_documented_dev_passphrase(tmp_path: Path) -> None:
    assert load_settings(mode="dev", data_dir=tmp_path).passphrase() == DEV_PASSPHRASE
