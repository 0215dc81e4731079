"""benchmarks.prepare against a local HTTP server (127.0.0.1 only) serving archives in each source's format.

The server stands in for every source of ``sources.yaml``: the HTTP releases through ``SDLB_MIRROR`` (paths
``/<host>/<path>``), Google Drive through ``SDLB_DRIVE_URL`` (gdown, the client of the real path) and the
Hugging Face resolve API through ``HF_ENDPOINT``. The table's rows are used as they are, except that their
published digests and sizes are replaced by those of the small archives built here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import random
import socket
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from benchmarks import BENCHMARKS
from benchmarks.fixtures import write_fixture
from benchmarks.prepare import Offline, Table, load_table, plan, prepare, prepare_jobs
from benchmarks.prepare.fetch import LOCK_FILE
from benchmarks.prepare.table import source_url
from core.errors import UserError

N_CLASSES = {"cifar100": 4, "imagenet_r": 4, "imagenet_a": 4, "cub200": 4, "domainnet": 6}
HF_COMMIT = "0123456789abcdef0123456789abcdef01234567"


class Server:
    """A threaded HTTP server on 127.0.0.1: fixed routes, HEAD, Range (206), and one-shot truncated replies."""

    def __init__(self):
        self.routes: dict[str, bytes] = {}
        self.headers: dict[str, dict[str, str]] = {}
        self.truncate_once: set[str] = set()
        self.ignore_range = False  # a plain static server: every GET answers 200 with the whole file
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Range header)
        server = self

        class Handler(BaseHTTPRequestHandler):
            timeout = 10  # a stuck client cannot hold a thread past this

            def log_message(self, *args):
                pass

            def do_HEAD(self):
                self.reply(body=False)

            def do_GET(self):
                self.reply(body=True)

            def reply(self, body: bool):
                server.requests.append((self.command, self.path, self.headers.get("Range")))
                data = server.routes.get(self.path)
                if data is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                start = 0
                rng = self.headers.get("Range")
                if rng and rng.startswith("bytes=") and not server.ignore_range:
                    start = int(rng[len("bytes=") :].split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("ETag", f'"{hashlib.md5(data).hexdigest()}"')
                for key, value in server.headers.get(self.path, {}).items():
                    self.send_header(key, value)
                self.end_headers()
                if not body:
                    return
                if self.command == "GET" and self.path in server.truncate_once and start == 0:
                    server.truncate_once.discard(self.path)
                    self.wfile.write(data[: len(data) // 2])  # then drop the connection mid-file
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(data[start:])

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def path_of(self, source: str) -> str:
        return source_url(source)[len(self.url) :]

    def gets(self) -> list[tuple[str, str | None]]:
        return [(path, rng) for method, path, rng in self.requests if method == "GET"]

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def server(monkeypatch):
    srv = Server()
    monkeypatch.setenv("SDLB_MIRROR", srv.url)
    monkeypatch.setenv("SDLB_DRIVE_URL", srv.url + "/uc?id={id}")
    monkeypatch.setenv("HF_ENDPOINT", srv.url)
    yield srv
    srv.close()


# ----------------------------------------------------------------------------------------------------------------
# Archives in each source's format, built from the fixture writers


def _tar(files: dict[str, Path], mode: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:
        for arcname, path in sorted(files.items()):
            tf.add(path, arcname=arcname)
    return buf.getvalue()


def _zip(files: dict[str, Path]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for arcname, path in sorted(files.items()):
            zf.write(path, arcname)
    return buf.getvalue()


def _files(base: Path, prefix: str, skip: tuple[str, ...] = ()) -> dict[str, Path]:
    """Every file below ``base`` as ``prefix/<relative path>``, leaving out top-level folders in ``skip``."""
    return {
        f"{prefix}/{p.relative_to(base).as_posix()}": p
        for p in base.rglob("*")
        if p.is_file() and p.relative_to(base).parts[0] not in skip
    }


def build_archives(src: Path) -> dict[str, bytes]:
    """Item key -> the bytes its source serves, each in the table's format for that item."""
    for name, n in N_CLASSES.items():
        write_fixture(name, src, n_classes=n, per_class_train=2, per_class_test=1)
    out = {
        "cifar100": _tar(_files(src / "cifar-100-python", "cifar-100-python"), "w:gz"),
        # the pre-split zips: the top folder is not documented, so each test archive uses another one
        "imagenet_r_pilot": _zip(_files(src / "imagenet-r", "imagenet-r", skip=tuple(_wnids(src)))),
        "imagenet_a_pilot": _zip(_files(src / "imagenet-a", "ina")),
        "cub200_pilot": _zip(_files(src / "cub", "data/cub")),
        "imagenet_r_release": _tar(_files(src / "imagenet-r", "imagenet-r", skip=("train", "test")), "w"),
        "imagenet_r_coda_train": (src / "splits" / "imagenet-r_train.yaml").read_bytes(),
        "imagenet_r_coda_test": (src / "splits" / "imagenet-r_test.yaml").read_bytes(),
        "domainnet_coda_train": (src / "splits" / "domainnet_train.yaml").read_bytes(),
        "domainnet_coda_test": (src / "splits" / "domainnet_test.yaml").read_bytes(),
    }
    for domain in ("clipart", "infograph", "painting", "real", "sketch"):
        out[f"domainnet_{domain}"] = _zip(_files(src / "DomainNet" / domain, domain))
    return out


def _wnids(src: Path) -> list[str]:
    return [p.name for p in (src / "imagenet-r").iterdir() if p.name not in ("train", "test")]


def _hashes_of(data: bytes, kinds) -> dict[str, str]:
    blob = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
    every = {"sha256": hashlib.sha256(data).hexdigest(), "md5": hashlib.md5(data).hexdigest(), "git_blob": blob}
    return {k: every[k] for k in kinds}


def table_for(archives: dict[str, bytes], unpublished: tuple[str, ...] = ()) -> Table:
    """The real table with its digests (same kinds) and sizes replaced by those of the test archives."""
    real = load_table()
    items = {}
    for key, spec in real.items.items():
        data = archives[key]
        hashes = {} if key in unpublished else _hashes_of(data, spec.hashes)
        items[key] = dataclasses.replace(spec, hashes=hashes, size=len(data) if spec.size else None)
    return Table(items, real.datasets)


@pytest.fixture(scope="module")
def archives(tmp_path_factory) -> dict[str, bytes]:
    return build_archives(tmp_path_factory.mktemp("src"))


def serve(server: Server, table: Table, archives: dict[str, bytes]) -> None:
    for key, spec in table.items.items():
        for source in spec.sources[:1]:  # mirrors stay unserved: a 404 there would show as a failed source
            server.routes[server.path_of(source)] = archives[key]


def configs(root: Path, names=("cifar100", "imagenet_r", "imagenet_r:coda", "imagenet_a", "cub200", "domainnet")):
    out = []
    for name in names:
        bench, _, split = name.partition(":")
        fields = {"root": str(root), "n_tasks": 2, **({"split": split} if split else {})}
        out.append((bench, BENCHMARKS.make_config(bench, fields)))
    return out


def leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.glob(".prepare-*"))


# ----------------------------------------------------------------------------------------------------------------
# Datasets


def test_prepare_every_dataset_then_nothing(server, archives, tmp_path):
    table = table_for(archives)
    serve(server, table, archives)
    root = tmp_path / "data"
    items = plan(configs(root), table=table)
    assert {i.key for i in items} == set(table.items)

    report = prepare(items, quiet=True, retries=0, log=lambda s: None)

    for name, n in N_CLASSES.items():
        assert report[name if name != "imagenet_r" else "imagenet_r:pilot"]["n_classes"] == n
    assert report["imagenet_r:coda"]["n_classes"] == N_CLASSES["imagenet_r"]
    for rel in (
        "cifar-100-python/meta",
        "imagenet-r/train",
        "imagenet-r/test",
        "imagenet-a/train",
        "cub/test",
        "DomainNet/clipart",
        "DomainNet/sketch",
        "splits/imagenet-r_train.yaml",
        "splits/domainnet_test.yaml",
    ):
        assert (root / rel).exists(), rel
    wnid = _wnids(root)[0]
    assert list((root / "imagenet-r" / wnid).iterdir())  # the release sits next to the PILOT folders
    # the readers the runner uses accept every layout
    for bench, cfg in configs(root):
        BENCHMARKS.get(bench).obj(cfg, 1993)
    lock = json.loads((root / LOCK_FILE).read_text())
    assert lock["cifar100"]["sha256"] == hashlib.sha256(archives["cifar100"]).hexdigest()
    assert lock["cifar100"]["checked"] == ["md5"] and lock["domainnet_coda_test"]["checked"] == ["git_blob"]
    assert not leftovers(root) and not list((root / ".downloads").iterdir())  # archives deleted once extracted

    n_gets = len(server.gets())
    stamp = (root / LOCK_FILE).stat().st_mtime_ns
    lines: list[str] = []
    prepare(plan(configs(root), table=table), quiet=True, log=lines.append)
    assert len(server.gets()) == n_gets and (root / LOCK_FILE).stat().st_mtime_ns == stamp
    assert all("nothing to do" in line for line in lines if "ok," not in line)


def _broken_cifar_download(server: Server, archives: dict[str, bytes], tmp_path: Path):
    """CIFAR-100 served from a large archive (incompressible padding, so that gdown writes whole 512 KB chunks
    before the connection drops) whose first GET breaks off halfway; (its server path, the planned items, its size)."""
    src = tmp_path / "src"
    write_fixture("cifar100", src, n_classes=N_CLASSES["cifar100"], per_class_train=2, per_class_test=1)
    (src / "cifar-100-python" / "padding.bin").write_bytes(random.Random(0).randbytes(3 << 20))
    archives = {**archives, "cifar100": _tar(_files(src / "cifar-100-python", "cifar-100-python"), "w:gz")}
    table = table_for(archives)
    serve(server, table, archives)
    path = server.path_of(table.items["cifar100"].sources[0])
    server.truncate_once.add(path)
    return path, plan(configs(tmp_path / "data", ["cifar100"]), table=table), len(archives["cifar100"])


def test_resumes_a_broken_download(server, archives, tmp_path):
    path, items, size = _broken_cifar_download(server, archives, tmp_path)

    with pytest.raises(UserError, match="run again to resume"):
        prepare(items, quiet=True, retries=0, log=lambda s: None)
    parts = list((tmp_path / "data" / ".downloads").glob("*.part"))
    assert len(parts) == 1
    kept = parts[0].stat().st_size
    assert 0 < kept < size

    report = prepare(items, quiet=True, retries=0, log=lambda s: None)
    assert report["cifar100"]["n_train"] == 2 * N_CLASSES["cifar100"]
    assert (path, f"bytes={kept}-") in server.gets()  # the second call asked only for the rest


def test_a_server_that_ignores_range_gets_the_file_fetched_whole(server, archives, tmp_path):
    path, items, _ = _broken_cifar_download(server, archives, tmp_path)
    with pytest.raises(UserError, match="run again to resume"):
        prepare(items, quiet=True, retries=0, log=lambda s: None)
    assert len(list((tmp_path / "data" / ".downloads").glob("*.part"))) == 1

    server.ignore_range = True  # the resume is refused: the .part goes and the file comes whole
    lines: list[str] = []
    report = prepare(items, quiet=True, retries=0, log=lines.append)
    assert report["cifar100"]["n_train"] == 2 * N_CLASSES["cifar100"]
    assert any("cannot resume a partial download; fetching it whole" in line for line in lines)
    assert [rng for p, rng in server.gets() if p == path][-1] is None  # the last request asked for the whole file
    assert not list((tmp_path / "data" / ".downloads").glob("*.part"))


def test_hash_mismatch_leaves_nothing(server, archives, tmp_path):
    table = table_for(archives)
    serve(server, table, archives)
    bad = bytearray(archives["imagenet_a_pilot"])
    bad[len(bad) // 2] ^= 0xFF
    server.routes[server.path_of(table.items["imagenet_a_pilot"].sources[0])] = bytes(bad)

    with pytest.raises(UserError) as err:
        prepare(plan(configs(tmp_path, ["imagenet_a"]), table=table), quiet=True, retries=0, log=lambda s: None)
    message = str(err.value)
    assert "\n" not in message and "md5 of ina.zip" in message and "nothing was extracted" in message
    assert not (tmp_path / "imagenet-a").exists() and not leftovers(tmp_path)
    assert not list((tmp_path / ".downloads").iterdir())


@pytest.mark.parametrize("fmt", ["zip", "tar", "tar.gz", "tgz"])
def test_corrupt_archive_leaves_nothing(server, archives, tmp_path, fmt):
    # no published digest (lock-file path), so only extraction can notice the damage
    table = table_for(archives, unpublished=("cub200_pilot",))
    spec = dataclasses.replace(table.items["cub200_pilot"], format=fmt)
    table = Table({**table.items, "cub200_pilot": spec}, table.datasets)
    serve(server, table, archives)
    good = (
        archives["cub200_pilot"]
        if fmt == "zip"
        else _tar(_files_from_zip(archives["cub200_pilot"], tmp_path), "w" if fmt == "tar" else "w:gz")
    )
    server.routes[server.path_of(spec.sources[0])] = good[: len(good) * 2 // 3]

    with pytest.raises(UserError, match=f"not a valid {fmt} archive") as err:
        prepare(plan(configs(tmp_path / "data", ["cub200"]), table=table), quiet=True, retries=0, log=lambda s: None)
    assert "\n" not in str(err.value)
    root = tmp_path / "data"
    assert not (root / "cub").exists() and not leftovers(root) and not list((root / ".downloads").iterdir())


def _files_from_zip(data: bytes, tmp: Path) -> dict[str, Path]:
    out = tmp / "unzipped"
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        zf.extractall(out)
    return {p.relative_to(out).as_posix(): p for p in out.rglob("*") if p.is_file()}


def test_lock_file_pins_the_first_download(server, archives, tmp_path):
    table = table_for(archives, unpublished=("imagenet_r_pilot",))
    serve(server, table, archives)
    items = plan(configs(tmp_path, ["imagenet_r"]), table=table)
    prepare(items, quiet=True, retries=0, log=lambda s: None)
    first = json.loads((tmp_path / LOCK_FILE).read_text())["imagenet_r_pilot"]
    assert first["sha256"] == hashlib.sha256(archives["imagenet_r_pilot"]).hexdigest()
    assert first["checked"] == ["lock file only"]

    # the data go missing and the source now serves another (valid) archive: the lock refuses it
    import shutil

    shutil.rmtree(tmp_path / "imagenet-r")
    other = _zip(_files_from_zip(archives["imagenet_r_pilot"], tmp_path) | {"extra.txt": tmp_path / LOCK_FILE})
    server.routes[server.path_of(table.items["imagenet_r_pilot"].sources[0])] = other
    with pytest.raises(UserError, match=f"expected {first['sha256']} \\({LOCK_FILE}, first download\\)"):
        prepare(items, quiet=True, retries=0, log=lambda s: None)
    assert not (tmp_path / "imagenet-r").exists()


def test_offline_lists_what_to_copy_where(archives, tmp_path, monkeypatch):
    with socket.socket() as s:  # a port nothing listens on: connections are refused at once
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    monkeypatch.setenv("SDLB_MIRROR", closed)
    monkeypatch.setenv("SDLB_DRIVE_URL", closed + "/uc?id={id}")
    table = table_for(archives)
    items = plan(configs(tmp_path, ["cifar100", "imagenet_a"]), table=table)

    with pytest.raises(Offline) as err:
        prepare(items, quiet=True, retries=0, log=lambda s: None)
    lines = err.value.lines
    assert len(lines) == 2
    assert lines[0].startswith("cifar100: copy cifar-100-python.tar.gz (https://www.cs.toronto.edu/")
    assert f"to {tmp_path / '.downloads' / 'ina.zip'}" in lines[1] and "1SG4TbiL8" not in lines[1]
    assert not (tmp_path / "cifar-100-python").exists()

    # doing what the lines say is enough, still without network
    (tmp_path / ".downloads").mkdir()
    (tmp_path / ".downloads" / "cifar-100-python.tar.gz").write_bytes(archives["cifar100"])
    (tmp_path / ".downloads" / "ina.zip").write_bytes(archives["imagenet_a_pilot"])
    report = prepare(items, offline=True, quiet=True, log=lambda s: None)
    assert set(report) == {"cifar100", "imagenet_a"}


def test_not_found_names_the_command(tmp_path):
    for bench, cfg in configs(tmp_path):
        with pytest.raises(UserError) as err:
            cfg.validate_paths()
        name = bench if bench != "imagenet_r" or cfg.split == "pilot" else "imagenet_r:coda"
        assert f"python -m benchmarks.prepare {name} --data-root {tmp_path}" in str(err.value)


# ----------------------------------------------------------------------------------------------------------------
# Weights and the runner


def test_weights_through_the_resolve_api(server, tmp_path, monkeypatch):
    from huggingface_hub import constants

    from benchmarks.backbones import BackboneConfig
    from benchmarks.prepare.weights import prepare_weights, weight_items

    tag = "vit_base_patch16_224.augreg2_in21k_ft_in1k"
    blob = b"not really safetensors, but bytes with a sha256" * 100
    digest = hashlib.sha256(blob).hexdigest()
    path = f"/timm/{tag}/resolve/main/model.safetensors"
    server.routes[path] = blob
    server.headers[path] = {"X-Repo-Commit": HF_COMMIT, "X-Linked-Etag": f'"{digest}"', "ETag": f'"{digest}"'}
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    cfg = BackboneConfig(tag=tag)
    with pytest.raises(UserError):
        cfg.validate_paths()  # not in the (empty) cache yet

    report = prepare_weights(weight_items([cfg, cfg]), log=lambda s: None)
    assert report[tag]["sha256"] == digest and report[tag]["source"] == f"hf://timm/{tag}"
    cfg.validate_paths()  # timm's offline loading now finds it
    n = len(server.requests)
    assert prepare_weights(weight_items([cfg]), log=lambda s: None)[tag]["sha256"] == digest
    assert len(server.requests) == n  # cached: no request

    local = tmp_path / "w.safetensors"
    local.write_bytes(b"local weights")
    report = prepare_weights(weight_items([dataclasses.replace(cfg, weights=str(local))]), log=lambda s: None)
    assert report[tag] == {
        "source": "local file",
        "path": str(local),
        "sha256": hashlib.sha256(b"local weights").hexdigest(),
    }


def test_committed_backbones_resolve_to_their_files_with_the_documented_sha256():
    """Every small ViT of ours (benchmarks.backbones.LOCAL_BACKBONES) loads its committed file, whose sha256 is the
    one benchmarks/weights/README.md gives, and builds as timm's architecture with the weights loaded."""
    from benchmarks.backbones import LOCAL_BACKBONES, BackboneConfig, build_backbone, local_weights, sha256_of

    readme = (Path(__file__).resolve().parent.parent / "benchmarks" / "weights" / "README.md").read_text()
    assert len(LOCAL_BACKBONES) == 2 and LOCAL_BACKBONES["vit_fmnist_p7_28.fmnist_half_even"] == (0, 2, 4, 6, 8)
    models = []
    for tag in LOCAL_BACKBONES:
        cfg = BackboneConfig(tag=tag)
        assert cfg.resolved_weights() == local_weights(tag) and local_weights(tag).name == f"{tag}.pth"
        assert f"`{tag}.pth`" in readme and f"sha256: `{sha256_of(str(local_weights(tag)))}`" in readme
        model, provenance = build_backbone(cfg)
        assert provenance["weights_sha256"] == sha256_of(str(local_weights(tag)))
        models.append(model.state_dict()["patch_embed.proj.weight"])
    assert not torch.equal(*models)  # two pretrainings, two sets of weights


def test_prepare_jobs_records_sha256(server, archives, tmp_path, monkeypatch):
    import benchmarks.prepare as prep

    table = table_for(archives)
    serve(server, table, archives)
    monkeypatch.setattr(prep, "plan", lambda pairs: plan(pairs, table=table))
    record = prepare_jobs(configs(tmp_path / "data", ["cifar100"]) * 3, [], tmp_path / "results", log=lambda s: None)
    saved = json.loads((tmp_path / "results" / "prepared.json").read_text())
    assert saved == record
    assert saved["datasets"]["cifar100"]["items"]["cifar100"]["sha256"] == digests_of(archives["cifar100"])


def digests_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_run_suite_prepare_dry_run_fetches_nothing(tmp_path, monkeypatch, capsys):
    import run_suite

    monkeypatch.setenv("SDLB_MIRROR", "http://127.0.0.1:9")  # nothing may be fetched; this would refuse it
    code = run_suite.main(
        [
            "--suite",
            "paper_tables",
            "--prepare",
            "--dry-run",
            "--data-root",
            str(tmp_path / "d"),
            "--methods",
            "simple_cil",
            "--seeds",
            "1993",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "--prepare: 11 dataset files and 1 backbone weights" in out
    assert "https://drive.google.com/file/d/1SG4TbiL8_DooekztyCVK8mPmfhMo8fkR" in out
    assert "1.3 GB  http://csr.bu.edu/ftp/visda/2019/multi-source/groundtruth/clipart.zip" in out
    assert f"-> {tmp_path / 'd' / 'imagenet-r'}/{{train,test}}" in out
    assert "huggingface.co/timm/vit_base_patch16_224.augreg2_in21k_ft_in1k" in out
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("extra", [[], ["--dry-run"]])
def test_a_data_root_that_cannot_be_a_folder_is_one_line_before_anything(tmp_path, capsys, extra):
    import run_suite
    from benchmarks.prepare.__main__ import main as prepare_main

    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    for root in (blocker, blocker / "sub"):
        assert prepare_main(["cifar100", "--data-root", str(root), *extra]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"--data-root {root}: {blocker} is not a folder" in err, err
        code = run_suite.main(["--suite", "paper_tables", "--prepare", "--data-root", str(root), "--methods",
                               "simple_cil", "--seeds", "1993", "--benchmarks", "cifar100_10", *extra])
        assert code == 2 and "is not a folder; give another --data-root" in capsys.readouterr().err
    assert sorted(tmp_path.iterdir()) == [blocker] and blocker.read_text() == "x"
    # without --prepare a missing data root says so, and how to fill it
    missing = tmp_path / "none"
    assert run_suite.main(["--suite", "paper_tables", "--dry-run", "--data-root", str(missing)]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_an_unknown_pretrained_tag_is_one_line(tmp_path, capsys):
    from benchmarks.prepare.__main__ import main as prepare_main

    assert prepare_main(["cifar100", "--data-root", str(tmp_path), "--dry-run", "--backbone",
                         "vit_base_patch16_224.no_such_tag"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'vit_base_patch16_224.no_such_tag'" in err and "full timm tag" in err, err
