"""A local stand-in for the Hugging Face Hub, for round-trip tests without the internet.

It speaks the part of the Hub's HTTP API that ``huggingface_hub`` 2.x uses to create a model or Space
repo, commit files (regular files inline, LFS files through the basic LFS transfer) and download them
again (``hf_hub_download``, ``snapshot_download``, timm's ``hf-hub:`` loader). ``{type}`` is ``models``
or ``spaces``, ``{prefix}`` is empty for a model and ``spaces/`` for a Space, as on the Hub:

- ``GET  /api/whoami-v2``
- ``GET  /api/agent-harnesses`` (the registry huggingface_hub's user-agent header reads; empty here)
- ``POST /api/repos/create`` (``"type": "space"`` needs an ``sdk``)
- ``POST /api/validate-yaml``
- ``POST /api/{type}/{repo}/preupload/{rev}``
- ``POST /{prefix}{repo}.git/info/lfs/objects/batch``, ``PUT`` to the returned (pre-signed) href, and
  ``POST /{prefix}{repo}.git/info/lfs/objects/verify``
- ``POST /api/{type}/{repo}/commit/{rev}`` (NDJSON: header, file, lfsFile, deletedFile, deletedFolder)
- ``POST /api/{type}/{repo}/branch/{branch}``
- ``GET  /api/{type}/{repo}`` and ``/api/{type}/{repo}/revision/{rev}`` (``sha``, ``siblings``, card data)
- ``GET  /api/{type}/{repo}/tree/{rev}[/{path}]`` and ``POST /api/{type}/{repo}/paths-info/{rev}``
- ``GET|HEAD /{prefix}{repo}/resolve/{rev}/{path}`` with ``X-Repo-Commit``, ``ETag``, ``X-Linked-Etag``,
  ``X-Linked-Size``, ``Content-Length``; 404s carry ``X-Error-Code`` (RepoNotFound, RevisionNotFound,
  EntryNotFound) as the Hub does.

Repos are kept under the path of their page, :attr:`FakeHub.repos` ``["owner/model"]`` and
``["spaces/owner/space"]``, so the URLs the server hands out (repo, commit, LFS verify) are the Hub's.

Writes need ``Authorization: Bearer <token>``; reads of public repos do not. Every request (method, path,
headers, body) is recorded so tests can check what left the client. Content is stored by SHA-256 under
a temporary folder; repos, branches and commits live in memory. Unknown endpoints answer 404 and are
listed in :attr:`FakeHub.unhandled`, so a test notices when the client starts calling something new.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".pkl", ".h5", ".onnx", ".msgpack", ".npz", ".zip")
LFS_MIN_SIZE = 10 * 1024 * 1024  # larger files go to LFS whatever their name, as on the Hub
SPACE_SDKS = ("gradio", "docker", "static", "streamlit")
SPACES = "spaces/"
GITATTRIBUTES = "".join(f"*{suffix} filter=lfs diff=lfs merge=lfs -text\n" for suffix in LFS_SUFFIXES).encode()


def git_oid(data: bytes) -> str:
    """The git blob id of ``data`` (what the Hub reports as a regular file's oid and ETag)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


@dataclass(frozen=True)
class Entry:
    """One file of a commit."""

    sha256: str
    size: int
    lfs: bool

    def oid(self, data: bytes | None = None) -> str:
        """Git blob id: of the pointer for LFS files, of the content for regular ones."""
        return git_oid(lfs_pointer(self.sha256, self.size) if self.lfs else data or b"")


@dataclass
class Commit:
    oid: str
    parent: str | None
    summary: str
    files: dict[str, Entry]
    date: str


@dataclass
class Repo:
    repo_id: str  # the page's path: "owner/name" for a model, "spaces/owner/name" for a Space
    private: bool
    sdk: str | None = None  # a Space's, as created
    branches: dict[str, str] = field(default_factory=dict)
    commits: dict[str, Commit] = field(default_factory=dict)

    def resolve(self, revision: str) -> Commit | None:
        oid = self.branches.get(revision, revision)
        return self.commits.get(oid)


@dataclass(frozen=True)
class Request:
    """A request as the server received it (header names lower-cased)."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class HubError(Exception):
    """An error answer: HTTP status, Hub error code header, message."""

    def __init__(
        self, status: int, message: str, code: str | None = None, headers: dict | None = None, body: dict | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}
        self.body = {"error": message, **(body or {})}


class FakeHub:
    """The server. Use as a context manager; :attr:`url` is the endpoint to put in ``HF_ENDPOINT``."""

    def __init__(self, root: Path, token: str, user: str = "test-user") -> None:
        self.root = Path(root)
        self.objects = self.root / "objects"
        self.objects.mkdir(parents=True, exist_ok=True)
        self.token = token
        self.user = user
        self.repos: dict[str, Repo] = {}
        self.requests: list[Request] = []
        self.unhandled: list[str] = []
        self._lock = threading.RLock()
        self._signature = secrets.token_hex(8)  # stands in for the signing of pre-signed upload URLs
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> FakeHub:
        hub = self

        class Handler(_Handler):
            server_hub = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-hub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the server first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # ------------------------------------------------------------------ inspection helpers for tests

    def add_model(self, repo_id: str, files: dict[str, bytes]) -> str:
        """Publish a public model repo holding ``files`` on ``main`` (as someone else's upload would, so the
        owner need not be :attr:`user`); returns the commit id. LFS as the Hub decides it, by name and size."""
        with self._lock:
            repo = Repo(repo_id, private=False)
            first = self._new_commit(repo, None, "initial commit", {".gitattributes": self._entry(GITATTRIBUTES)})
            entries = dict(first.files)
            for path, data in files.items():
                entries[path] = self._entry(data, lfs=path.endswith(LFS_SUFFIXES) or len(data) >= LFS_MIN_SIZE)
            commit = self._new_commit(repo, first.oid, "add files", entries)
            repo.branches["main"] = commit.oid
            self.repos[repo_id] = repo
        return commit.oid

    def commit_files(self, repo_id: str, files: dict[str, bytes], summary: str = "edit on the Hub") -> str:
        """Commit ``files`` on top of ``main`` of an existing repo (as an edit in the Hub's web page would);
        returns the commit id."""
        with self._lock:
            repo = self.repos[repo_id]
            head = self.commit(repo, "main")
            entries = dict(head.files) | {path: self._entry(data) for path, data in files.items()}
            commit = self._new_commit(repo, head.oid, summary, entries)
            repo.branches["main"] = commit.oid
        return commit.oid

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        """The content of every file of a repo at a revision."""
        commit = self.repos[repo_id].resolve(revision)
        assert commit is not None, f"{repo_id} has no revision {revision}"
        return {path: self._read(entry.sha256) for path, entry in commit.files.items()}

    def stored_blobs(self) -> list[bytes]:
        """Every object the server ever stored (committed or only uploaded)."""
        return [p.read_bytes() for p in sorted(self.objects.iterdir())]

    def requests_to(self, fragment: str, method: str | None = None) -> list[Request]:
        return [r for r in self.requests if fragment in r.path and (method is None or r.method == method)]

    # ------------------------------------------------------------------ storage

    def _store(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        path = self.objects / digest
        if not path.exists():
            tmp = path.with_suffix(f".{secrets.token_hex(4)}.tmp")
            tmp.write_bytes(data)
            tmp.replace(path)
        return digest

    def _has(self, sha256: str) -> bool:
        return (self.objects / sha256).is_file()

    def _read(self, sha256: str) -> bytes:
        return (self.objects / sha256).read_bytes()

    def _new_commit(self, repo: Repo, parent: str | None, summary: str, files: dict[str, Entry]) -> Commit:
        listing = json.dumps({p: (e.sha256, e.lfs) for p, e in sorted(files.items())})
        oid = hashlib.sha1(f"{parent}\n{summary}\n{listing}\n{len(repo.commits)}".encode()).hexdigest()
        commit = Commit(oid, parent, summary, dict(files), time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()))
        repo.commits[oid] = commit
        return commit

    # ------------------------------------------------------------------ auth and lookups

    def authenticated(self, headers: dict[str, str]) -> bool:
        return headers.get("authorization") == f"Bearer {self.token}"

    def require_auth(self, headers: dict[str, str]) -> None:
        if "authorization" not in headers:
            raise HubError(401, "Authorization header is required for this operation")
        if not self.authenticated(headers):
            # The Hub's wording: huggingface_hub reads it to tell a bad token from a missing repo.
            raise HubError(401, "Invalid credentials in Authorization header", headers={"X-Error-Message": _BAD_TOKEN})

    def repo(self, repo_id: str, headers: dict[str, str], *, write: bool = False) -> Repo:
        if write:
            self.require_auth(headers)
        repo = self.repos.get(repo_id)
        if repo is None or (repo.private and not self.authenticated(headers)):
            raise HubError(404 if repo is None else 401, "Repository not found", "RepoNotFound")
        if write and repo_id.removeprefix(SPACES).split("/")[0] != self.user:
            raise HubError(403, "You don't have the rights to write to this repository")
        return repo

    def commit(self, repo: Repo, revision: str) -> Commit:
        commit = repo.resolve(revision)
        if commit is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return commit

    # ------------------------------------------------------------------ endpoints

    def whoami(self, headers: dict[str, str]) -> dict:
        self.require_auth(headers)
        return {
            "type": "user",
            "id": "0" * 24,
            "name": self.user,
            "fullname": "Test User",
            "orgs": [],
            "auth": {"type": "access_token", "accessToken": {"displayName": "tests", "role": "write"}},
        }

    def create_repo(self, headers: dict[str, str], payload: dict) -> tuple[int, dict]:
        self.require_auth(headers)
        kind = payload.get("type") or "model"
        if kind not in ("model", "space"):
            raise HubError(400, "this test server only hosts model and Space repos")
        if kind == "space" and payload.get("sdk") not in SPACE_SDKS:
            raise HubError(400, f"a Space needs an sdk, one of {', '.join(SPACE_SDKS)}")
        namespace = payload.get("organization") or self.user
        repo_id = f"{SPACES if kind == 'space' else ''}{namespace}/{payload['name']}"
        url = f"{self.base_url}/{repo_id}"
        if namespace != self.user:
            raise HubError(403, f"You don't have the rights to create a {kind} under the namespace {namespace}")
        with self._lock:
            if repo_id in self.repos:
                # huggingface_hub reads the url from this answer when exist_ok=True.
                raise HubError(409, f"You already created this {kind} repo", body={"url": url})
            private = payload.get("visibility") == "private" or bool(payload.get("private"))
            repo = Repo(repo_id, private=private, sdk=payload.get("sdk") if kind == "space" else None)
            first = self._new_commit(repo, None, "initial commit", {".gitattributes": self._entry(GITATTRIBUTES)})
            repo.branches["main"] = first.oid
            self.repos[repo_id] = repo
        return 200, {"url": url, "name": repo_id, "id": secrets.token_hex(12)}

    def _entry(self, data: bytes, lfs: bool = False) -> Entry:
        return Entry(self._store(data), len(data), lfs)

    @staticmethod
    def validate_yaml(payload: dict) -> tuple[int, dict]:
        text = payload.get("content", "")
        if text.startswith("---"):
            block = text.split("---", 2)[1] if text.count("---") >= 2 else ""
            try:
                data = yaml.safe_load(block)
            except yaml.YAMLError as err:
                return 400, {"errors": [{"message": f"Invalid YAML: {err}"}], "warnings": []}
            if data is not None and not isinstance(data, dict):
                return 400, {"errors": [{"message": "metadata must be a mapping"}], "warnings": []}
        return 200, {"errors": [], "warnings": []}

    def preupload(self, repo_id: str, revision: str, headers: dict[str, str], payload: dict) -> dict:
        repo = self.repo(repo_id, headers, write=True)
        commit = self.commit(repo, revision)
        out = []
        for item in payload.get("files", []):
            path, size = item["path"], int(item["size"])
            lfs = path.endswith(LFS_SUFFIXES) or size >= LFS_MIN_SIZE
            existing = commit.files.get(path)
            oid = None
            if existing is not None:
                oid = existing.sha256 if existing.lfs else existing.oid(self._read(existing.sha256))
            out.append({"path": path, "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid})
        return {"files": out, "commitOid": commit.oid}

    def lfs_batch(self, repo_id: str, headers: dict[str, str], payload: dict) -> dict:
        self.repo(repo_id, headers, write=True)
        if payload.get("operation") != "upload":
            raise HubError(400, "only uploads are supported")
        objects = []
        for obj in payload.get("objects", []):
            oid, size = obj["oid"], int(obj["size"])
            entry: dict = {"oid": oid, "size": size, "authenticated": True}
            if not self._has(oid):
                href = f"{self.base_url}/_lfs-storage/{oid}?size={size}&signature={self._signature}"
                verify = f"{self.base_url}/{repo_id}.git/info/lfs/objects/verify"
                entry["actions"] = {"upload": {"href": href}, "verify": {"href": verify}}
            objects.append(entry)
        return {"transfer": "basic", "objects": objects, "hash_algo": "sha256"}

    def lfs_put(self, oid: str, query: dict, body: bytes) -> None:
        # A pre-signed storage URL: the signature, not a token, authorises the upload.
        if query.get("signature") != [self._signature]:
            raise HubError(403, "bad signature")
        if hashlib.sha256(body).hexdigest() != oid or len(body) != int(query.get("size", ["-1"])[0]):
            raise HubError(400, "content does not match the oid and size of the batch request")
        self._store(body)

    def lfs_verify(self, repo_id: str, headers: dict[str, str], payload: dict) -> dict:
        self.repo(repo_id, headers, write=True)
        oid = payload.get("oid", "")
        if not self._has(oid) or len(self._read(oid)) != int(payload.get("size", -1)):
            raise HubError(404, f"object {oid} not found")
        return {"oid": oid, "size": payload["size"]}

    def create_commit(self, repo_id: str, revision: str, headers: dict, query: dict, body: bytes) -> dict:
        repo = self.repo(repo_id, headers, write=True)
        if query.get("create_pr"):
            raise HubError(400, "pull requests are not supported by the test server")
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "the commit payload must start with a header line")
        header = lines[0]["value"]
        with self._lock:
            head = self.commit(repo, revision)
            if revision not in repo.branches:
                raise HubError(400, f"can only commit to a branch, not {revision}")
            if header.get("parentCommit") not in (None, head.oid):
                raise HubError(412, "A commit has happened since the parent commit")
            files = dict(head.files)
            for line in lines[1:]:
                key, value = line["key"], line["value"]
                if key == "file":
                    if value.get("encoding") != "base64":
                        raise HubError(400, "regular files must be base64-encoded")
                    files[value["path"]] = self._entry(base64.b64decode(value["content"]))
                elif key == "lfsFile":
                    oid = value["oid"]
                    if value.get("algo", "sha256") != "sha256" or not self._has(oid):
                        raise HubError(422, f"LFS object {oid} of {value['path']} was never uploaded")
                    files[value["path"]] = Entry(oid, len(self._read(oid)), lfs=True)
                elif key == "deletedFile":
                    if files.pop(value["path"], None) is None:
                        raise HubError(404, "A file with this name doesn't exist", "EntryNotFound")
                elif key == "deletedFolder":
                    prefix = value["path"].rstrip("/") + "/"
                    files = {p: e for p, e in files.items() if not p.startswith(prefix)}
                else:
                    raise HubError(400, f"unknown commit operation {key!r}")
            commit = self._new_commit(repo, head.oid, header.get("summary", ""), files)
            repo.branches[revision] = commit.oid
        return {
            "success": True,
            "commitOid": commit.oid,
            "commitUrl": f"{self.base_url}/{repo_id}/commit/{commit.oid}",
            "commitMessage": header.get("summary", ""),
            "hookOutput": "",
            "pullRequestUrl": None,
        }

    def create_branch(self, repo_id: str, branch: str, headers: dict, payload: dict) -> dict:
        repo = self.repo(repo_id, headers, write=True)
        with self._lock:
            if branch in repo.branches:
                raise HubError(409, f"Reference refs/heads/{branch} already exists")
            start = self.commit(repo, payload.get("startingPoint") or "main")
            repo.branches[branch] = start.oid
        return {}

    def model_info(self, repo_id: str, revision: str, headers: dict, query: dict) -> dict:
        repo = self.repo(repo_id, headers)
        commit = self.commit(repo, revision)
        siblings = []
        for path, entry in sorted(commit.files.items()):
            sibling: dict = {"rfilename": path}
            if query.get("blobs"):
                sibling.update(self._blob_info(entry))
            siblings.append(sibling)
        card = {}
        if "README.md" in commit.files:
            text = self._read(commit.files["README.md"].sha256).decode("utf-8", "replace")
            if text.startswith("---") and text.count("---") >= 2:
                card = yaml.safe_load(text.split("---", 2)[1]) or {}
        name = repo_id.removeprefix(SPACES)
        extra = {"modelId": name} if name == repo_id else {"sdk": card.get("sdk") or repo.sdk, "runtime": None}
        return {
            "_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24],
            "id": name,
            **extra,
            "author": name.split("/")[0],
            "sha": commit.oid,
            "lastModified": commit.date,
            "createdAt": repo.commits[repo.branches["main"]].date,
            "private": repo.private,
            "gated": False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "library_name": card.get("library_name"),
            "pipeline_tag": card.get("pipeline_tag"),
            "tags": list(card.get("tags") or []),
            "cardData": card or None,
            "siblings": siblings,
        }

    def _blob_info(self, entry: Entry) -> dict:
        info: dict = {"blobId": entry.oid(None if entry.lfs else self._read(entry.sha256)), "size": entry.size}
        if entry.lfs:
            info["lfs"] = {"sha256": entry.sha256, "size": entry.size, "pointerSize": len(lfs_pointer(entry.sha256, 0))}
        return info

    def _path_info(self, path: str, entry: Entry) -> dict:
        oid = entry.oid(None if entry.lfs else self._read(entry.sha256))
        info: dict = {"type": "file", "oid": oid, "size": entry.size, "path": path}
        if entry.lfs:
            info["lfs"] = {
                "oid": entry.sha256,
                "size": entry.size,
                "pointerSize": len(lfs_pointer(entry.sha256, entry.size)),
            }
        return info

    def tree(self, repo_id: str, revision: str, prefix: str, headers: dict, query: dict) -> list[dict]:
        commit = self.commit(self.repo(repo_id, headers), revision)
        recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
        base = prefix.strip("/") + "/" if prefix.strip("/") else ""
        out, folders = [], set()
        for path, entry in sorted(commit.files.items()):
            if not path.startswith(base):
                continue
            rest = path[len(base) :]
            parts = rest.split("/")
            for depth in range(1, len(parts)):
                folder = base + "/".join(parts[:depth])
                if (recursive or depth == 1) and folder not in folders:
                    folders.add(folder)
                    out.append({"type": "directory", "oid": git_oid(folder.encode()), "size": 0, "path": folder})
            if recursive or len(parts) == 1:
                out.append(self._path_info(path, entry))
        if base and not out:
            raise HubError(404, f"{prefix} does not exist", "EntryNotFound")
        return out

    def paths_info(self, repo_id: str, revision: str, headers: dict, form: dict) -> list[dict]:
        commit = self.commit(self.repo(repo_id, headers), revision)
        out = []
        for path in form.get("paths", []):
            if path in commit.files:
                out.append(self._path_info(path, commit.files[path]))
            elif any(p.startswith(path.rstrip("/") + "/") for p in commit.files):
                out.append({"type": "directory", "oid": git_oid(path.encode()), "size": 0, "path": path})
        return out

    def resolve(self, repo_id: str, revision: str, path: str, headers: dict) -> tuple[bytes, dict]:
        repo = self.repo(repo_id, headers)
        commit = self.commit(repo, revision)
        entry = commit.files.get(path)
        if entry is None:
            raise HubError(404, "Entry not found", "EntryNotFound", {"X-Repo-Commit": commit.oid})
        data = self._read(entry.sha256)
        out = {"X-Repo-Commit": commit.oid, "Content-Type": "application/octet-stream"}
        if entry.lfs:
            # The Hub redirects LFS files to its CDN and puts the real ETag/size on X-Linked-*: serving
            # them here directly with the same headers gives the client the same metadata.
            out.update(
                {"ETag": f'"{entry.sha256}"', "X-Linked-Etag": f'"{entry.sha256}"', "X-Linked-Size": str(len(data))}
            )
        else:
            out["ETag"] = f'"{git_oid(data)}"'
        return data, out

    @property
    def base_url(self) -> str:
        return self.url


_BAD_TOKEN = "Invalid credentials in Authorization header"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_hub: FakeHub

    def log_message(self, format: str, *args) -> None:
        pass  # tests read FakeHub.requests instead of stderr noise

    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _dispatch(self) -> None:
        hub = self.server_hub
        body = self._read_body()
        headers = {k.lower(): v for k, v in self.headers.items()}
        with hub._lock:
            hub.requests.append(Request(self.command, self.path, headers, body))
        split = urlsplit(self.path)
        query = parse_qs(split.query)
        try:
            status, payload, extra = self._route(hub, split.path, query, headers, body)
        except HubError as err:
            extra = dict(err.headers)
            if err.code:
                extra["X-Error-Code"] = err.code
            extra.setdefault("X-Error-Message", err.message)
            status, payload = err.status, err.body
        except (KeyError, ValueError, TypeError) as err:
            status, payload, extra = 400, {"error": f"bad request: {err!r}"}, {}
        self._send(status, payload, extra)

    def _route(self, hub: FakeHub, path: str, query: dict, headers: dict, body: bytes) -> tuple[int, object, dict]:
        method = self.command
        segments = [unquote(s) for s in path.strip("/").split("/")]

        def payload() -> dict:
            return json.loads(body or b"{}")

        if method == "GET" and path == "/api/whoami-v2":
            return 200, hub.whoami(headers), {}
        if method == "GET" and path == "/api/agent-harnesses":
            return 200, {"standardEnvVars": [], "harnesses": {}}, {}
        if method == "POST" and path == "/api/repos/create":
            status, out = hub.create_repo(headers, payload())
            return status, out, {}
        if method == "POST" and path == "/api/validate-yaml":
            status, out = hub.validate_yaml(payload())
            return status, out, {}
        if method == "PUT" and segments[0] == "_lfs-storage" and len(segments) == 2:
            hub.lfs_put(segments[1], query, body)
            return 200, b"", {"ETag": f'"{segments[1]}"'}
        if segments[0] == "api" and segments[1:2] in (["models"], ["spaces"]) and len(segments) >= 4:
            prefix = SPACES if segments[1] == "spaces" else ""
            repo_id = f"{prefix}{segments[2]}/{segments[3]}"
            action, rest = (segments[4], segments[5:]) if len(segments) > 4 else (None, [])
            if method == "GET" and action is None:
                return 200, hub.model_info(repo_id, "main", headers, query), {}
            if method == "GET" and action == "revision" and len(rest) == 1:
                return 200, hub.model_info(repo_id, rest[0], headers, query), {}
            if method == "GET" and action == "tree" and rest:
                return 200, hub.tree(repo_id, rest[0], "/".join(rest[1:]), headers, query), {}
            if method == "POST" and action == "paths-info" and len(rest) == 1:
                form = parse_qs(body.decode())
                return 200, hub.paths_info(repo_id, rest[0], headers, form), {}
            if method == "POST" and action == "preupload" and len(rest) == 1:
                return 200, hub.preupload(repo_id, rest[0], headers, payload()), {}
            if method == "POST" and action == "commit" and len(rest) == 1:
                return 200, hub.create_commit(repo_id, rest[0], headers, query, body), {}
            if method == "POST" and action == "branch" and len(rest) == 1:
                return 200, hub.create_branch(repo_id, rest[0], headers, payload()), {}
        # A Space's git and file URLs carry the spaces/ prefix; a model's have none.
        prefix, segments = (SPACES, segments[1:]) if segments[0] == "spaces" else ("", segments)
        if len(segments) == 6 and segments[1].endswith(".git") and segments[2:5] == ["info", "lfs", "objects"]:
            repo_id = f"{prefix}{segments[0]}/{segments[1].removesuffix('.git')}"
            if method == "POST" and segments[5] == "batch":
                return 200, hub.lfs_batch(repo_id, headers, payload()), {"Content-Type": "application/vnd.git-lfs+json"}
            if method == "POST" and segments[5] == "verify":
                return 200, hub.lfs_verify(repo_id, headers, payload()), {}
        if method in ("GET", "HEAD") and len(segments) >= 5 and segments[2] == "resolve":
            repo_id = f"{prefix}{segments[0]}/{segments[1]}"
            data, extra = hub.resolve(repo_id, segments[3], "/".join(segments[4:]), headers)
            return 200, data, extra
        with hub._lock:
            hub.unhandled.append(f"{method} {self.path}")
        raise HubError(404, f"no such endpoint on the test server: {method} {path}")

    def _send(self, status: int, payload: object, extra: dict) -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        if not isinstance(payload, bytes) and "Content-Type" not in extra:
            self.send_header("Content-Type", "application/json")
        for key, value in extra.items():
            # Header values are latin-1 on the wire; a quoted odd revision name must not kill the handler.
            self.send_header(key, str(value).encode("latin-1", "replace").decode("latin-1"))
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
