"""A Hugging Face hub on 127.0.0.1 for the bake tests: the part of the hub's HTTP API that huggingface_hub's
`model_info`, `snapshot_download` and `hf_hub_download` use, served from files on this machine.

What it answers (as the hub does, checked against huggingface_hub 2.4's client code):

* `GET /api/models/{repo}/revision/{rev}`: the commit (`sha`) a branch or commit names and the file listing
  (`siblings`).
* `GET /api/models/{repo}/tree/{rev}[/{folder}]?recursive=…`: the tree, each file with its size and git blob id,
  and for a large (LFS) file its sha256 and size (`lfs`), as `snapshot_download` lists a commit.
* `HEAD|GET /{repo}/resolve/{rev}/{file}`: a small file directly (ETag = its git blob id, `X-Repo-Commit`); a large
  one as the hub does it: a 302 to a storage host (a second server on another port, so another origin) with
  `X-Linked-Etag` (the sha256), `X-Linked-Size` and `X-Repo-Commit`; the storage host serves the bytes. The client
  must send the token to the hub and not to the storage host; both servers record each request to show it.
* `GET /api/agent-harnesses` (public; the client asks once a day for the list it names AI agents by in its
  user agent): an empty list.
* Errors with the hub's `X-Error-Code` header (RepoNotFound, RevisionNotFound, EntryNotFound; 401 without the token
  when one is required), which the client turns into its own exceptions.

A repo is a mapping of file name -> bytes or a path (large files are streamed from disk, never read whole), and the
bytes served may differ from those listed (`served_instead`): a mirror serving other bytes than it lists.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

LFS_THRESHOLD = 10 * 1024  # larger files go through LFS (the hub's own limit is 10 MB; smaller keeps tests small)
LFS_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".h5", ".msgpack", ".pt")


def _sha256(data: bytes | Path, known: str | None = None) -> str:
    if known:
        return known
    if isinstance(data, bytes):
        return hashlib.sha256(data).hexdigest()
    h = hashlib.sha256()
    with open(data, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _size(data: bytes | Path) -> int:
    return len(data) if isinstance(data, bytes) else data.stat().st_size


@dataclass
class HubFile:
    name: str
    data: bytes | Path  # what is served
    size: int
    sha256: str  # of what is *listed* (the publisher's bytes); a mirror may serve other bytes (see Repo)
    lfs: bool

    @property
    def git_oid(self) -> str:
        """The git blob id: of the bytes for a small file, of the LFS pointer for a large one."""
        if self.lfs:
            pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\nsize {self.size}\n"
            body = pointer.encode()
        else:
            body = self.data if isinstance(self.data, bytes) else self.data.read_bytes()
        return hashlib.sha1(b"blob %d\0" % len(body) + body).hexdigest()


@dataclass
class Repo:
    """One model repo at one commit. `files`: name -> bytes or a path; `sha256`: known hashes (skips hashing large
    files again); `served_instead`: name -> other bytes served under that name (the listing is unchanged)."""

    repo_id: str
    commit: str
    files: dict[str, bytes | Path]
    branches: tuple[str, ...] = ("main",)
    sha256: dict[str, str] = field(default_factory=dict)
    served_instead: dict[str, bytes] = field(default_factory=dict)

    def __post_init__(self):
        self.entries = {}
        for name, data in sorted(self.files.items()):
            size = _size(data)
            lfs = size > LFS_THRESHOLD or name.endswith(LFS_SUFFIXES)
            self.entries[name] = HubFile(name, data, size, _sha256(data, self.sha256.get(name)), lfs)


class LocalHub:
    """Start with `with LocalHub(repos, token=…) as hub:`; `hub.endpoint` is the HF_ENDPOINT to use."""

    def __init__(self, repos: list[Repo], token: str | None = None):
        self.repos = {r.repo_id: r for r in repos}
        self.token = token
        self.requests: list[dict] = []  # {"host": "hub"|"storage", "method", "path", "auth": header or None}
        self._lock = threading.Lock()
        # the storage host's objects: one per repo and sha256 (two repos may hold the same file)
        self._blobs = {f"{r.repo_id}/{f.sha256}": (r, f) for r in repos for f in r.entries.values() if f.lfs}
        self.hub = ThreadingHTTPServer(("127.0.0.1", 0), self._handler("hub"))
        self.storage = ThreadingHTTPServer(("127.0.0.1", 0), self._handler("storage"))
        self.endpoint = f"http://127.0.0.1:{self.hub.server_address[1]}"
        self.storage_url = f"http://127.0.0.1:{self.storage.server_address[1]}"
        self._threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in (self.hub, self.storage)]

    def __enter__(self) -> "LocalHub":
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        for s in (self.hub, self.storage):
            s.shutdown()
            s.server_close()

    def auth_seen(self, host: str) -> set[str | None]:
        """The Authorization headers `host` ("hub" or "storage") received on requests about the repos."""
        return {r["auth"] for r in self.requests if r["host"] == host and r["path"] != "/api/agent-harnesses"}

    def downloaded(self) -> dict[str, list[str]]:
        """repo id -> the files whose bytes were sent by a GET (directly, or by the storage host after a redirect)."""
        out: dict[str, list[str]] = {}
        for r in self.requests:
            if r["method"] == "GET" and r.get("file") and r["status"] == 200:
                out.setdefault(r["repo"], []).append(r["file"])
        return {k: sorted(v) for k, v in out.items()}

    # -- the handler ----------------------------------------------------------------------------------------

    def _handler(self, host: str):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet: the test reads hub.requests instead
                pass

            def do_HEAD(self):
                self._route(body=False)

            def do_GET(self):
                self._route(body=True)

            def _route(self, body: bool):
                self.record = {"host": host, "method": self.command, "path": self.path,
                               "auth": self.headers.get("Authorization"), "status": None}
                with hub._lock:
                    hub.requests.append(self.record)
                url = urlsplit(self.path)
                parts = [unquote(p) for p in url.path.split("/")[1:]]
                if host == "storage":
                    return self._storage(parts, body)
                if parts == ["api", "agent-harnesses"]:  # the client's user-agent registry: public, none here
                    return self._send(200, b'{"standardEnvVars": [], "harnesses": {}}',
                                      {"Content-Type": "application/json"}, body)
                if hub.token and self.headers.get("Authorization") != f"Bearer {hub.token}":
                    return self._error(401, "GatedRepo", "Access to this model is restricted: log in with a token")
                if parts[:2] == ["api", "models"] and len(parts) >= 6 and parts[4] in ("revision", "tree"):
                    return self._api(parts[2] + "/" + parts[3], parts[4], parts[5], "/".join(parts[6:]),
                                     parse_qs(url.query), body)
                if len(parts) >= 5 and parts[2] == "resolve":
                    return self._resolve(parts[0] + "/" + parts[1], parts[3], "/".join(parts[4:]), body)
                return self._error(404, None, f"no route for {url.path}")

            def _repo(self, repo_id: str, rev: str) -> Repo | None:
                repo = hub.repos.get(repo_id)
                if repo is None:
                    self._error(404, "RepoNotFound", f"Repository {repo_id} not found")
                elif rev != repo.commit and rev not in repo.branches:
                    self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
                    repo = None
                return repo

            def _api(self, repo_id, kind, rev, folder, query, body):
                repo = self._repo(repo_id, rev)
                if repo is None:
                    return
                if kind == "revision":
                    payload = {"id": repo_id, "modelId": repo_id, "sha": repo.commit, "private": False,
                               "siblings": [{"rfilename": n} for n in repo.entries]}
                else:
                    recursive = query.get("recursive", ["False"])[0].lower() == "true"
                    payload = self._tree(repo, folder.strip("/"), recursive)
                self._send(200, json.dumps(payload).encode(), {"Content-Type": "application/json"}, body)

            def _tree(self, repo: Repo, folder: str, recursive: bool) -> list[dict]:
                prefix = f"{folder}/" if folder else ""
                out, dirs = [], set()
                for f in repo.entries.values():
                    if not f.name.startswith(prefix):
                        continue
                    rest = f.name[len(prefix):].split("/")
                    for i in range(1, len(rest)):  # the folders on the way
                        if i == 1 or recursive:
                            dirs.add(prefix + "/".join(rest[:i]))
                    if len(rest) > 1 and not recursive:
                        continue
                    entry = {"type": "file", "oid": f.git_oid, "size": f.size, "path": f.name}
                    if f.lfs:
                        entry["lfs"] = {"oid": f.sha256, "size": f.size, "pointerSize": 134}
                    out.append(entry)
                out += [{"type": "directory", "oid": hashlib.sha1(d.encode()).hexdigest(), "size": 0, "path": d}
                        for d in sorted(dirs)]
                return out

            def _resolve(self, repo_id, rev, name, body):
                repo = self._repo(repo_id, rev)
                if repo is None:
                    return
                f = repo.entries.get(name)
                self.record.update(repo=repo_id, file=name)
                if f is None:
                    return self._error(404, "EntryNotFound", f"{name} does not exist at {rev}",
                                       {"X-Repo-Commit": repo.commit})
                headers = {"X-Repo-Commit": repo.commit}
                if f.lfs:  # the hub answers with a redirect to its storage host, carrying the file's metadata
                    headers.update({"Location": f"{hub.storage_url}/lfs/{repo_id}/{f.sha256}",
                                    "X-Linked-Etag": f'"{f.sha256}"', "X-Linked-Size": str(f.size),
                                    "ETag": f'"{f.git_oid}"'})
                    self.record.update(file=None)  # the bytes come from the storage host
                    return self._send(302, b"", headers, body)
                headers["ETag"] = f'"{f.git_oid}"'
                self._file(repo, f, headers, body)

            def _storage(self, parts, body):
                obj = "/".join(parts[1:])
                if parts[0] != "lfs" or obj not in hub._blobs:
                    return self._error(404, None, "no such object")
                repo, f = hub._blobs[obj]
                self.record.update(repo=repo.repo_id, file=f.name)
                self._file(repo, f, {"ETag": f'"{f.sha256}"'}, body)

            def _file(self, repo: Repo, f: HubFile, headers: dict, body: bool):
                data = repo.served_instead.get(f.name, f.data)
                start = 0
                rng = self.headers.get("Range", "")
                if rng.startswith("bytes=") and rng.endswith("-"):  # a resumed download
                    start = int(rng[len("bytes="):-1])
                size = _size(data)
                headers["Content-Type"] = "application/octet-stream"
                if start:
                    headers["Content-Range"] = f"bytes {start}-{size - 1}/{size}"
                self.record["status"] = 206 if start else 200
                self.send_response(self.record["status"])
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(size - start))
                self.end_headers()
                if not body:
                    return
                if isinstance(data, bytes):
                    self.wfile.write(data[start:])
                else:
                    with open(data, "rb") as src:
                        src.seek(start)
                        shutil.copyfileobj(src, self.wfile, 1 << 20)

            def _error(self, status, code, message, headers=None):
                h = dict(headers or {})
                if code:
                    h["X-Error-Code"] = code
                h["X-Error-Message"] = message
                self._send(status, json.dumps({"error": message}).encode(), h | {"Content-Type": "application/json"},
                           self.command != "HEAD")

            def _send(self, status, payload, headers, body):
                self.record["status"] = status
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if body:
                    self.wfile.write(payload)

        return Handler


def placeholder(name: str, size: int = 64) -> bytes:
    """Bytes for a file of a real repo that no stand-in builds (other formats, single-file checkpoints, README):
    never a valid weights file, so a loader that read one would fail loudly."""
    seed = hashlib.sha256(f"placeholder {name}".encode()).digest()
    return (seed * (size // len(seed) + 1))[:size]

