import os
import subprocess
import sys
from pathlib import Path

import pytest

from llmos.errors import IntegrityError, NotFound
from llmos.store.blobs import BlobStore, digest_of
from tests.waiting import BACKSTOP_S


@pytest.fixture
def blobs(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path / "blobs", tmp_path / "tmp")


def test_put_is_content_addressed_and_idempotent(blobs: BlobStore, tmp_path: Path) -> None:
    src = tmp_path / "f"
    src.write_bytes(b"hello" * 1000)
    d1, n1 = blobs.put_file(src)
    d2, n2 = blobs.put_bytes(b"hello" * 1000)
    assert d1 == d2 == digest_of(src) and n1 == n2 == 5000
    assert blobs.digests() == [d1]
    assert blobs.open_verified(d1).read_bytes() == src.read_bytes()
    assert list(blobs.tmp.iterdir()) == []


def test_tampered_blob_is_refused_on_read(blobs: BlobStore) -> None:
    digest, _ = blobs.put_bytes(b"weights")
    path = blobs.path(digest)
    path.chmod(0o644)
    path.write_bytes(b"weightz")
    assert not blobs.verify(digest)
    with pytest.raises(IntegrityError, match="corrupt"):
        blobs.open_verified(digest)


@pytest.mark.parametrize("bad", ["sha256:../../etc/passwd", "md5:abc", "sha256:" + "g" * 64, ""])
def test_malformed_digests_never_become_paths(blobs: BlobStore, bad: str) -> None:
    with pytest.raises(NotFound):
        blobs.path(bad)


def test_clean_tmp_removes_leftovers(blobs: BlobStore) -> None:
    (blobs.tmp / "blob-x.partial").write_bytes(b"half")
    (blobs.tmp / "gguf-dir").mkdir()
    assert blobs.clean_tmp() == 2
    assert list(blobs.tmp.iterdir()) == []


FULL_DISK = """
import resource, signal, sys
from pathlib import Path
from llmos.store.blobs import BlobStore
from llmos.errors import StoreFull
# A file-size limit makes every write past 64 KiB fail like a full disk (EFBIG).
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))
b = BlobStore(Path(sys.argv[1]) / "blobs", Path(sys.argv[1]) / "tmp")
try:
    b.put_bytes(b"x" * 1_000_000)
except StoreFull as e:
    print("STOREFULL", e)
"""


def test_full_disk_leaves_nothing_behind(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-c", FULL_DISK, str(tmp_path)], capture_output=True, text=True,
                         timeout=BACKSTOP_S)
    assert "STOREFULL" in out.stdout, out.stderr
    assert "nothing was kept" in out.stdout
    assert os.listdir(tmp_path / "tmp") == []
    assert os.listdir(tmp_path / "blobs" / "sha256") == []
