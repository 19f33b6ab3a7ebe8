"""Download registry: where each known dataset file comes from and how to check it.

A key is the file's path relative to the data root ($RECSYS_DATA_DIR), as
``events.resolve_path`` looks it up. Files are fetched only when absent, by ``pooch``
(``pooch.retrieve``: a progress bar on a terminal, the bytes verified against the pinned
sha256 before they are moved into place from a temporary file in the same folder; an
archive's member extracted by ``pooch.Unzip``), so an interrupted or corrupt download never
leaves a file that looks complete.

Upstream files are plain text; the shared copies under /work/shared/datasets are the same
bytes gzipped. A download is saved under the plain name (``Beauty.txt``) and
``resolve_path`` accepts either ``Beauty.txt.gz`` or ``Beauty.txt``.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pooch

from recsys.errors import DatasetNotFoundError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Remote:
    url: str
    sha256: str  # of the bytes fetched from url (the archive, when member is set)
    member: str | None = None  # zip member to extract and save under the key
    terms: str = ""  # shown before downloading: the data's license / terms of use


_S3REC = "https://raw.githubusercontent.com/RUCAIBox/CIKM2020-S3Rec/2a81540ae18615d88ef88227b0c066e5b74781e5/data"
_SASREC = "https://raw.githubusercontent.com/kang205/SASRec/e3738967fddab206d6eeb4fda433e7a7034dd8b1/data"
_BERT4REC = "https://raw.githubusercontent.com/FeiSun/BERT4Rec/615eaf2004abecda487a38d5b0c72f3dcfcae5b3/data"
_AMAZON_TERMS = (
    "Amazon review data (McAuley et al., UCSD), research use; cite He & McAuley (WWW 2016) "
    "and McAuley et al. (SIGIR 2015)"
)
_MOVIELENS_TERMS = (
    "MovieLens (GroupLens) terms: research use only, no commercial use, no endorsement, "
    "acknowledge in publications (Harper & Konstan 2015), and do not redistribute. "
    "Downloading means you accept them: https://files.grouplens.org/datasets/movielens/ml-1m-README.txt"
)

REGISTRY: dict[str, Remote] = {
    # S3-Rec / ICLRec sequences (sha256 of the uncompressed upstream file, see the README).
    "s3rec-preprocessed/Beauty.txt": Remote(
        f"{_S3REC}/Beauty.txt",
        "226cce9c3105299ca0db9615d7d3fb32b3175e90da43100ae352599f0f0107b8", terms=_AMAZON_TERMS),
    "s3rec-preprocessed/Sports_and_Outdoors.txt": Remote(
        f"{_S3REC}/Sports_and_Outdoors.txt",
        "2a095e0648872beb9982408958290f5d655db5be2911c3756b5446de9f0b8de2", terms=_AMAZON_TERMS),
    "s3rec-preprocessed/Toys_and_Games.txt": Remote(
        f"{_S3REC}/Toys_and_Games.txt",
        "176c680c688d497598c4a89a03b402c0fe78d795e5db335c2e78dd5f2d778a3f", terms=_AMAZON_TERMS),
    "s3rec-preprocessed/Yelp.txt": Remote(
        f"{_S3REC}/Yelp.txt",
        "724b219106b81dd2349027da997334ddb6da9fe2f152ad6e0d97a93170f7caed",
        terms="Yelp Open Dataset terms: non-commercial, academic use only"),
    "s3rec-preprocessed/LastFM.txt": Remote(
        f"{_S3REC}/LastFM.txt",
        "9ded486adb5b0fe9dc761950afa0a9a05e93ff018992e0c52bf11afec529f802",
        terms="HetRec 2011 Last.fm data, research use"),
    # SASRec and BERT4Rec `user item` files.
    "sasrec-preprocessed/Video.txt": Remote(
        f"{_SASREC}/Video.txt",
        "b7376fe24430743f411dc7f567285657b2adb3f74361cc7ba0aee94f3024b651", terms=_AMAZON_TERMS),
    "ml-1m/ml-1m.sasrec.txt": Remote(
        f"{_SASREC}/ml-1m.txt",
        "b725f3acb3986fe3130bffd1e77a74d182a1f51799567a236dbd60270f95b0a2", terms=_MOVIELENS_TERMS),
    "bert4rec-preprocessed/beauty.txt": Remote(
        f"{_BERT4REC}/beauty.txt",
        "f480b7a7403852342ffd8f9809bb30697dd669be31813d0e204b698fec86ef49", terms=_AMAZON_TERMS),
    # Raw logs, extracted from their archives. The ml-1m.zip hash is the widely pinned one
    # (its md5 matches GroupLens' published c4d9eecfca2ab87c1945afe126590906).
    "ml-1m/ratings.dat": Remote(
        "https://files.grouplens.org/datasets/movielens/ml-1m.zip",
        "a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20",
        member="ml-1m/ratings.dat", terms=_MOVIELENS_TERMS),
    "amazon-2014-5core/Musical_Instruments.json": Remote(
        "https://raw.githubusercontent.com/recohut/coldstart-recsys/"
        "da72950ca514faee94f010a2cb6e99a373044ec1/data/DaRE/Musical_Instruments.zip",
        "27679efc609cb9ad12a6f6c4a23044a083f85994986ed69b9a654871f2d1466b",
        member="Musical_Instruments.json", terms=_AMAZON_TERMS),
}


def fetch(url: str, dest: Path) -> None:
    """Stream url into dest: the one network call (pooch's HTTP downloader, with a progress
    bar when stderr is a terminal). ``file://`` URLs are copied with urllib: tests use them,
    or replace this function, and never reach the network."""
    if url.startswith("file:"):
        with urllib.request.urlopen(url, timeout=60) as response, open(dest, "wb") as out:
            shutil.copyfileobj(response, out, length=1 << 20)
        return
    downloader = pooch.HTTPDownloader(progressbar=sys.stderr.isatty(), timeout=60,
                                      headers={"User-Agent": "recsys-data/1"})
    downloader(url, str(dest), None)


def download(key: str, root: Path) -> Path:
    """root / key, fetched from the registry if absent. Raises DatasetNotFoundError if the
    fetch fails or the sha256 does not match; nothing is left behind in either case."""
    remote = REGISTRY[key]
    target = Path(root) / key
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    if remote.terms:
        log.warning("downloading %s from %s. %s", key, remote.url, remote.terms)
    # Everything is fetched into a temporary folder beside the target, so the final rename
    # is atomic (same filesystem) and an archive is not kept.
    with tempfile.TemporaryDirectory(prefix=f".{target.name}.", dir=target.parent) as tmp:
        unzip = None if remote.member is None else pooch.Unzip(members=[remote.member], extract_dir=tmp)
        try:
            fetched = pooch.retrieve(remote.url, known_hash=f"sha256:{remote.sha256}", fname="download",
                                     path=tmp, processor=unzip,
                                     downloader=lambda url, output, _pooch: fetch(url, Path(output)))
        except ValueError as exc:  # pooch: the bytes' hash is not the pinned one
            raise DatasetNotFoundError(
                f"{target}: sha256 mismatch for {remote.url}: expected {remote.sha256}; the download was "
                f"discarded ({exc})"
            ) from exc
        except OSError as exc:  # URLError, HTTPError and requests' errors are OSErrors
            raise DatasetNotFoundError(f"{target}: download from {remote.url} failed: {exc}") from exc
        except zipfile.BadZipFile as exc:
            raise DatasetNotFoundError(f"{remote.url}: cannot extract {remote.member!r}: {exc}") from exc
        source = Path(fetched) if remote.member is None else Path(tmp) / remote.member
        if not source.is_file():
            raise DatasetNotFoundError(f"{remote.url}: cannot extract {remote.member!r}: not in the archive")
        os.replace(source, target)
    return target
