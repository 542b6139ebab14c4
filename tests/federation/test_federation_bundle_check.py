"""Uploaded bundles are checked before anything is inflated (federation/bundle_check.py): zip
bombs of every kind are refused quickly with a clear ModelError and without inflating them, and a
good bundle still passes with its manifest and signer."""
from __future__ import annotations

import time
import tracemalloc

import pytest

from federation.bundle_check import BundleLimits, check_bundle
from federation.errors import Forbidden
from federation.testing import make_bundle
from hostile_zips import MIB, overlapping_bomb, signed_bomb, stored, write_zip, zeros_deflated
from streamql.errors import ModelError
from streamql.models import keygen

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    base = tmp_path_factory.mktemp("keys")
    return keygen(base / "release"), keygen(base / "mallory")


def refused(data: bytes, trusted, **options) -> tuple[str, float, int]:
    """check_bundle's refusal: (message, seconds, peak bytes traced)."""
    tracemalloc.start()
    started = time.monotonic()
    try:
        with pytest.raises(ModelError) as caught:
            check_bundle(data, trusted, **options)
        return caught.value.message, time.monotonic() - started, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_good_signed_bundle_passes_with_its_manifest_and_signer(tmp_path, keys):
    (private, public), _ = keys
    data = make_bundle(tmp_path, "vib", "1.2.0", private_key=private, padding=3 * MIB)
    checked = check_bundle(data, [public])
    assert (checked.name, checked.version) == ("vib", "1.2.0")
    assert checked.verified_by == checked.signed_by[0] and checked.manifest["models"][0]["name"] == "vib"
    unsigned = make_bundle(tmp_path / "u", "vib", "1.3.0")
    assert check_bundle(unsigned, [], allow_unsigned=True).verified_by is None
    with pytest.raises(Forbidden):
        check_bundle(unsigned, [])


def test_a_bomb_unsigned_or_signed_by_a_stranger_is_refused_before_it_is_inflated(keys):
    (_, public), (mallory, _) = keys
    # the directory and the index declare 1000 bytes: only the signature check stands between
    # this upload and a gigabyte of zeros, and it comes first
    for private, expected in ((None, "not signed"), (mallory, "not trusted")):
        data = signed_bomb(private, inflated_mib=1024, declared=1000)
        assert len(data) < 1.1 * MIB
        message, seconds, peak = refused(data, [public])
        assert expected in message and seconds < 2.0 and peak < 8 * MIB, (message, seconds, peak)


def test_a_bomb_declaring_its_real_size_is_refused_from_the_directory(keys):
    (private, public), _ = keys
    message, seconds, peak = refused(signed_bomb(private, inflated_mib=1024), [public])
    assert "unpacks to" in message and seconds < 2.0 and peak < 8 * MIB
    data = signed_bomb(private, inflated_mib=200)  # under the size caps, over the ratio
    message, seconds, peak = refused(data, [public])
    assert "zip bomb" in message and "to 1" in message and seconds < 2.0, message


def test_a_trusted_signer_lying_about_sizes_gets_no_more_than_it_declared(keys):
    (private, public), _ = keys
    data = signed_bomb(private, inflated_mib=1024, declared=1000)
    message, seconds, peak = refused(data, [public])
    assert ("inflates to more" in message or "damaged" in message) and seconds < 2.0 and peak < 8 * MIB, message


def test_overlapping_members_too_many_members_and_zip64_are_refused(keys):
    (_, public), _ = keys
    message, seconds, _ = refused(overlapping_bomb(copies=200), [public], limits=BundleLimits(max_unpacked_bytes=1 << 40))
    assert "overlap" in message and seconds < 2.0, message
    message, _, _ = refused(overlapping_bomb(copies=2000), [public])
    assert "2000 files" in message
    many = write_zip([stored(f"f{i}", b"x") for i in range(50)])
    assert "50 files" in refused(many, [public], limits=BundleLimits(max_members=10))[0]
    zip64 = bytearray(write_zip([stored("a", b"x")]))
    zip64[-12:-8] = b"\xff\xff\xff\xff"  # the directory size of a zip64 archive
    assert "zip64" in refused(bytes(zip64), [public])[0]


def test_other_compression_methods_encryption_and_unsafe_names_are_refused(keys):
    (_, public), _ = keys
    bz = write_zip([{"name": "a", "data": b"BZh9", "size": 10, "method": 12}])
    assert "compression method 12" in refused(bz, [public])[0]
    for name in ("../etc/passwd", "/abs", "a/./b", "a\\b"):
        assert "unsafe path" in refused(write_zip([stored(name, b"x")]), [public])[0]
    lying_stored = write_zip([{"name": "a", "data": b"x", "size": 10 * MIB, "method": 0}])
    assert "two sizes" in refused(lying_stored, [public])[0]
    encrypted = write_zip([{**stored("a", b"x"), "flags": 1}])
    assert "encrypted" in refused(encrypted, [public])[0]
    plain = write_zip([{"name": "z", "data": zeros_deflated(1), "size": MIB, "method": 8}])
    assert "no streamql-bundle.json" in refused(plain, [public])[0]
    assert "not a zip archive" in refused(b"PK\x03\x04 nonsense", [public])[0]
