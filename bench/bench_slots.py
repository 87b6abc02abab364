#!/usr/bin/env python3
"""What the slots of one repository cost: time to prepare them, and disk, against full clones.

    ./venv/bin/python bench/bench_slots.py [--commits 5000] [--megabytes 50] [--files 2000] [--slots 4] [--cache DIR]

Generates a repository with `git fast-import` (`--commits` commits, about `--megabytes` MB of packed
history, a working tree of `--files` files and `--tree-megabytes` MB, default a fifth of the
history; blobs are part base64 of random bytes, part text, so the pack really is that big) and
keeps the bare repository under `--cache` (default: a folder in the system temp dir), so a re-run
skips the generation. Serves a copy of it over git's smart-HTTP protocol: a small HTTP server on
127.0.0.1 that runs `git http-backend` as CGI for each request (fetch and push both work). Then
prints, one line per figure:

* full clones: the time of `--slots` plain `git clone` of the URL one after another, the disk of
  all of them and of one;
* shared store: the time until the orchestrator's RepoManager has prepared `--slots` slots from
  nothing (one `prepare_slot` after another), the disk of base_repo_path (store and every slot),
  and that divided by the disk of one full clone (ratio);
* warm slot: one more `prepare_slot` of slot 0 for a new issue with the store up to date (median
  of 5);
* what the server sent for each, and that a push through it works.

git runs isolated from the user's configuration (GIT_CONFIG_GLOBAL is a file in the temporary
folder, GIT_CONFIG_NOSYSTEM=1) with a bench identity. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import base64
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Dict, List, Optional, Tuple
from urllib.parse import unquote

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))

#: Bump when the generator changes, so an old cached repository is not taken for a new one.
GENERATOR_VERSION = 2
BRANCH = "main"
REPO = "bench/widgets"
TOKEN = "ghp_benchToken0123456789"
IDENTITY = {"GIT_AUTHOR_NAME": "Bench Author", "GIT_AUTHOR_EMAIL": "author@bench.invalid",
            "GIT_COMMITTER_NAME": "Bench Committer", "GIT_COMMITTER_EMAIL": "committer@bench.invalid"}
MB = 1024 * 1024


# --- the generated repository ------------------------------------------------------------------

WORDS = ("def class return import self value result config slot branch commit fetch push worktree"
         " store index tree blob object issue runner token setup check state queue label tick"
         " repository orchestrator session monitor logger error warning timeout process signal"
         " path file folder lock update prune clean reset merge rebase status remote origin").split()


class Content:
    """File contents: about half the lines base64 of random bytes (incompressible but for base64's
    quarter), half text lines from a pool (compressible)."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.pool = [(" " * (4 * rng.randrange(3)) + " ".join(rng.choice(WORDS) for _ in range(rng.randrange(3, 11)))
                      + f"  # {rng.randrange(10 ** 6)}\n").encode() for _ in range(4000)]

    def make(self, size: int) -> bytes:
        rng, pool = self.rng, self.pool
        parts: List[bytes] = []
        total = 0
        while total < size:
            if rng.random() < 0.5:
                line = base64.b64encode(rng.randbytes(45)) + b"\n"
            else:
                line = pool[rng.randrange(len(pool))]
            parts.append(line)
            total += len(line)
        return b"".join(parts)[:max(size - 1, 0)] + b"\n"

    def ratio(self) -> float:
        """Compressed / raw size of such content with git's default zlib level."""
        sample = b"".join(self.make(6000) for _ in range(40))
        return len(zlib.compress(sample, 6)) / len(sample)


def file_sizes(rng: random.Random, files: int, total: int) -> List[int]:
    """Sizes with a long tail (most files small, a few large) that add up to about `total`."""
    weights = [rng.lognormvariate(0, 1.0) for _ in range(files)]
    scale = total / sum(weights)
    return [max(16, int(w * scale)) for w in weights]


def file_paths(rng: random.Random, files: int) -> List[str]:
    folders = max(1, files // 50)
    names = []
    for index in range(files):
        folder = rng.randrange(folders)
        names.append(f"src/pkg_{folder:03d}/module_{index:05d}.{rng.choice(('py', 'txt', 'md', 'json'))}")
    return names


def generate(target: Path, commits: int, megabytes: float, files: int, tree_megabytes: float) -> None:
    """A bare repository at `target`, made with one `git fast-import` stream and repacked with bitmaps."""
    rng = random.Random(f"bench-slots-{commits}-{megabytes}-{files}-{tree_megabytes}")
    content = Content(rng)
    ratio = content.ratio()
    paths = file_paths(rng, files)
    sizes = file_sizes(rng, files, int(tree_megabytes * MB))
    # The first commit adds the whole tree; every later one rewrites files (fresh content, same size)
    # until the history's new bytes, compressed, add up to `megabytes`; commit and tree objects
    # take roughly 1.3 KB per commit in the pack.
    budget_packed = megabytes * MB - sum(sizes) * ratio - commits * 1300
    per_commit = max(0.0, budget_packed / ratio / max(commits - 1, 1))
    subprocess.run(["git", "init", "--quiet", "--bare", f"--initial-branch={BRANCH}", str(target)], check=True)
    importer = subprocess.Popen(["git", "fast-import", "--quiet", "--done"], cwd=target,
                                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    out = importer.stdin
    assert out is not None
    when = 1_600_000_000
    owed = 0.0
    for number in range(commits):
        if number == 0:
            changed = list(range(files))
            message = f"Initial import of {files} files\n".encode()
        else:
            owed += per_commit
            changed = []
            while not changed or owed > 0:
                index = rng.randrange(files)
                changed.append(index)
                owed -= sizes[index]
                if len(changed) > 50:
                    break
            message = (f"Change {number}: rework {len(changed)} module(s)\n\n"
                       f"Touches {', '.join(paths[i] for i in changed[:3])}.\n").encode()
        when += rng.randrange(60, 7200)
        out.write(f"commit refs/heads/{BRANCH}\n"
                  f"author Bench Author <author@bench.invalid> {when} +0000\n"
                  f"committer Bench Committer <committer@bench.invalid> {when} +0000\n"
                  f"data {len(message)}\n".encode() + message + b"\n")
        for index in changed:
            blob = content.make(sizes[index])
            out.write(f"M 100644 inline {paths[index]}\ndata {len(blob)}\n".encode() + blob + b"\n")
        out.write(b"\n")
    out.write(b"done\n")
    out.close()
    if importer.wait() != 0:
        raise SystemExit("git fast-import failed")
    subprocess.run(["git", "repack", "-a", "-d", "-b", "-q"], cwd=target, check=True)
    subprocess.run(["git", "pack-refs", "--all"], cwd=target, check=True)


def cached_repository(cache: Path, commits: int, megabytes: float, files: int,
                      tree_megabytes: float) -> Tuple[Path, Optional[float]]:
    """The generated bare repository for these sizes, made when absent; returns it and the time its
    generation took (None when it came from the cache)."""
    name = f"widgets-v{GENERATOR_VERSION}-c{commits}-m{megabytes:g}-f{files}-t{tree_megabytes:g}.git"
    target = cache / name
    if (target / "packed-refs").is_file():
        return target, None
    cache.mkdir(parents=True, exist_ok=True)
    partial = cache / f"{name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    started = time.perf_counter()
    try:
        generate(partial, commits, megabytes, files, tree_megabytes)
        try:
            partial.rename(target)
        except OSError:  # another run made it meanwhile
            if not (target / "packed-refs").is_file():
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return target, time.perf_counter() - started


def served_copy(source: Path, root: Path) -> Path:
    """`<root>/repo.git`: a copy of the cached repository (pack files hard-linked when possible) that
    the server may change (pushes), with receive-pack enabled."""
    target = root / "repo.git"

    def copy(src, dst):
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)
        return dst

    shutil.copytree(source, target, copy_function=copy)
    for key, value in (("http.receivepack", "true"), ("uploadpack.allowFilter", "true"),
                       ("uploadpack.allowReachableSHA1InWant", "true")):
        subprocess.run(["git", "config", key, value], cwd=target, check=True)
    return target


def describe(repository: Path) -> Dict[str, float]:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=repository, check=True, capture_output=True, text=True).stdout

    packed = sum(p.stat().st_size for p in (repository / "objects" / "pack").glob("*.pack"))
    sizes = [int(line.split()[3]) for line in git("ls-tree", "-r", "-l", "HEAD").splitlines()]
    return {"commits": int(git("rev-list", "--count", "HEAD")), "packed_mb": packed / MB,
            "files": len(sizes), "tree_mb": sum(sizes) / MB}


# --- git's smart HTTP, served by git http-backend -------------------------------------------------

class GitHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, project_root: Path, log_path: Path):
        super().__init__(("127.0.0.1", 0), GitCGIHandler)
        self.project_root = project_root
        self.log_path = log_path
        self.lock = threading.Lock()
        self.requests = 0
        self.bytes_sent = 0
        self.thread = threading.Thread(target=self.serve_forever, name="git-http", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/repo.git"

    def counters(self) -> Tuple[int, int]:
        with self.lock:
            return self.requests, self.bytes_sent

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.shutdown()
        self.server_close()
        self.thread.join(timeout=10)


class GitCGIHandler(BaseHTTPRequestHandler):
    """Runs `git http-backend` for each request, the request body streamed to it and its response
    (CGI headers, then the body) streamed back; the connection closes after each response."""

    protocol_version = "HTTP/1.1"  # so that `Expect: 100-continue` is answered
    server: GitHTTPServer

    def log_message(self, format, *args):  # noqa: A002 (the base class's name)
        pass

    def do_GET(self):
        self.run_backend()

    def do_POST(self):
        self.run_backend()

    def run_backend(self) -> None:
        self.close_connection = True
        path, _, query = self.path.partition("?")
        env = dict(os.environ)
        env.update(GIT_PROJECT_ROOT=str(self.server.project_root), GIT_HTTP_EXPORT_ALL="1",
                   PATH_INFO=unquote(path), QUERY_STRING=query, REQUEST_METHOD=self.command,
                   CONTENT_TYPE=self.headers.get("Content-Type", ""), REMOTE_ADDR=self.client_address[0],
                   GATEWAY_INTERFACE="CGI/1.1", SERVER_PROTOCOL=self.request_version, SCRIPT_NAME="",
                   SERVER_NAME="127.0.0.1", SERVER_PORT=str(self.server.server_address[1]))
        env.pop("CONTENT_LENGTH", None)
        for name, value in self.headers.items():
            key = "HTTP_" + name.upper().replace("-", "_")
            if key not in ("HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH"):
                env[key] = value
        if self.headers.get("Git-Protocol"):
            env["GIT_PROTOCOL"] = self.headers["Git-Protocol"]  # protocol v2, as Apache's SetEnvIf does
        chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
        length = None if chunked else self.headers.get("Content-Length")
        if length is not None:
            env["CONTENT_LENGTH"] = length  # else http-backend reads the body to its end
        with open(self.server.log_path, "ab") as errors:
            backend = subprocess.Popen(["git", "http-backend"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       stderr=errors, env=env)
        feeder = threading.Thread(target=self.feed, args=(backend.stdin, chunked, int(length or 0)), daemon=True)
        feeder.start()
        sent = 0
        try:
            status, headers = self.cgi_headers(backend.stdout)
            code, _, reason = status.partition(" ")
            self.send_response(int(code), reason or None)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Connection", "close")
            self.end_headers()
            while True:
                data = backend.stdout.read1(256 * 1024)
                if not data:
                    break
                self.wfile.write(data)
                sent += len(data)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            backend.stdout.close()
            feeder.join(timeout=60)
            backend.wait()
            with self.server.lock:
                self.server.requests += 1
                self.server.bytes_sent += sent

    def feed(self, stdin, chunked: bool, length: int) -> None:
        """Copy the request body (Content-Length bytes, or chunked) to http-backend's stdin."""
        try:
            if chunked:
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass  # trailers
                        break
                    stdin.write(self.rfile.read(size))
                    self.rfile.readline()  # the CRLF after the chunk
            else:
                while length > 0:
                    data = self.rfile.read(min(length, 256 * 1024))
                    if not data:
                        break
                    stdin.write(data)
                    length -= len(data)
        except (BrokenPipeError, ConnectionResetError, ValueError):
            pass
        finally:
            try:
                stdin.close()
            except BrokenPipeError:
                pass

    @staticmethod
    def cgi_headers(stdout) -> Tuple[str, List[Tuple[str, str]]]:
        status, headers = "200 OK", []
        while True:
            line = stdout.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "status":
                status = value.strip()
            else:
                headers.append((name.strip(), value.strip()))
        return status, headers


# --- measuring ---------------------------------------------------------------------------------

def disk_kb(path: Path) -> int:
    """`du -sk`: what the folder takes on disk (a hard-linked file counts once)."""
    done = subprocess.run(["du", "-sk", str(path)], check=True, capture_output=True, text=True)
    return int(done.stdout.split()[0])


def isolate_git(tmp: Path) -> None:
    """No ~/.gitconfig, no /etc/gitconfig, a bench identity; 127.0.0.1 never through a proxy."""
    gitconfig = tmp / "gitconfig"
    gitconfig.write_text("[user]\n\tname = Bench User\n\temail = user@bench.invalid\n"
                         "[init]\n\tdefaultBranch = main\n")
    for name in [n for n in os.environ if n.startswith("GIT_") and n not in ("GIT_SSL_CAINFO", "GIT_EXEC_PATH")]:
        del os.environ[name]
    os.environ.update(IDENTITY, GIT_CONFIG_GLOBAL=str(gitconfig), GIT_CONFIG_NOSYSTEM="1",
                      GIT_TERMINAL_PROMPT="0")
    for name in ("no_proxy", "NO_PROXY"):
        os.environ[name] = ",".join(filter(None, [os.environ.get(name), "127.0.0.1", "localhost"]))


def mb(kb: int) -> str:
    return f"{kb} KB ({kb / 1024:.1f} MB)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commits", type=int, default=5000)
    parser.add_argument("--megabytes", type=float, default=50.0, help="packed history, about")
    parser.add_argument("--files", type=int, default=2000, help="files in the working tree")
    parser.add_argument("--tree-megabytes", type=float, default=None,
                        help="working tree size (default: a fifth of --megabytes)")
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "orchestrator-bench-slots",
                        help="where the generated repository is kept between runs")
    args = parser.parse_args()
    if args.commits < 1 or args.files < 1 or args.slots < 1:
        parser.error("--commits, --files and --slots must be at least 1")
    tree_megabytes = args.tree_megabytes if args.tree_megabytes is not None else args.megabytes / 5

    from lib.config import Config
    from lib.repo_manager import RepoManager

    with tempfile.TemporaryDirectory(prefix="bench-slots-") as tmp_name:
        tmp = Path(tmp_name)
        isolate_git(tmp)
        print(subprocess.run(["git", "--version"], check=True, capture_output=True, text=True).stdout.strip())
        source, generation = cached_repository(args.cache.resolve(), args.commits, args.megabytes, args.files,
                                               tree_megabytes)
        facts = describe(source)
        print(f"repository: {facts['commits']} commits, {facts['packed_mb']:.1f} MB packed history,"
              f" working tree {facts['files']} files / {facts['tree_mb']:.1f} MB")
        print(f"generation: {generation:.1f} s (cached in {source})" if generation is not None
              else f"generation: 0 s (taken from the cache {source})")
        (tmp / "served").mkdir()
        served_copy(source, tmp / "served")
        with GitHTTPServer(tmp / "served", tmp / "http-backend.log") as server:
            url = server.url
            done = subprocess.run(["git", "ls-remote", url, f"refs/heads/{BRANCH}"], capture_output=True, text=True)
            if done.returncode != 0 or not done.stdout.strip():
                print(f"the server does not answer at {url}: {done.stderr.strip()}")
                return 1
            print(f"server: {url} (git http-backend as CGI)")

            # Full clones, one after another.
            full = tmp / "full"
            full.mkdir()
            before = server.counters()
            times = []
            for index in range(args.slots):
                started = time.perf_counter()
                subprocess.run(["git", "clone", "--quiet", url, str(full / f"widgets_{index}")], check=True)
                times.append(time.perf_counter() - started)
            requests, sent = (b - a for a, b in zip(before, server.counters()))
            one_full = disk_kb(full / "widgets_0")
            print(f"full clones: {args.slots} x git clone in {sum(times):.2f} s"
                  f" ({', '.join(f'{t:.2f}' for t in times)} s)")
            print(f"full clones: disk of all {args.slots}: {mb(disk_kb(full))}")
            print(f"full clones: disk of one: {mb(one_full)}")
            print(f"full clones: server sent {sent / MB:.1f} MB in {requests} requests")

            # The orchestrator's slots, from nothing.
            config = Config.from_dict({
                "github": {"repo": REPO, "base_repo_path": str(tmp / "slots"), "token": TOKEN,
                           "max_concurrent": args.slots},
                "claude": {"kill_grace_seconds": 1}, "setup_timeout_seconds": 600}, tmp)
            manager = RepoManager(config)
            logs = tmp / "logs"
            before = server.counters()
            times = []
            for index in range(args.slots):
                started = time.perf_counter()
                manager.prepare_slot(index, 1000 + index, base_branch=BRANCH, clone_url=url,
                                     setup_log=logs / f"setup-{index}.log")
                times.append(time.perf_counter() - started)
            requests, sent = (b - a for a, b in zip(before, server.counters()))
            shared = disk_kb(config.base_repo_path)
            print(f"shared store: {args.slots} slots prepared from nothing in {sum(times):.2f} s"
                  f" ({', '.join(f'{t:.2f}' for t in times)} s)")
            print(f"shared store: disk of base_repo_path (store and {args.slots} slots): {mb(shared)}")
            print(f"shared store: ratio {shared / one_full:.2f} (disk of base_repo_path / disk of one full clone;"
                  f" {args.slots} full clones: {disk_kb(full) / one_full:.2f})")
            print(f"shared store: server sent {sent / MB:.1f} MB in {requests} requests")

            # One more issue in a slot that exists, nothing new on origin.
            before = server.counters()
            times = []
            for run in range(5):
                started = time.perf_counter()
                manager.prepare_slot(0, 2000 + run, base_branch=BRANCH, clone_url=url,
                                     setup_log=logs / "setup-0.log")
                times.append(time.perf_counter() - started)
            requests, sent = (b - a for a, b in zip(before, server.counters()))
            print(f"warm slot: prepare_slot in {statistics.median(times):.3f} s (median of 5;"
                  f" min {min(times):.3f} s, max {max(times):.3f} s)")
            print(f"warm slot: server sent {sent / 1024:.1f} KB in {requests} requests for the 5")

            # A push through the server (from a full clone, so it does not depend on RepoManager's API).
            clone = full / "widgets_0"
            (clone / "BENCH_PUSH.txt").write_text("pushed by bench_slots\n")
            subprocess.run(["git", "add", "BENCH_PUSH.txt"], cwd=clone, check=True)
            subprocess.run(["git", "commit", "--quiet", "-m", "bench: push check"], cwd=clone, check=True)
            started = time.perf_counter()
            pushed = subprocess.run(["git", "push", "--quiet", url, "HEAD:refs/heads/bench-push-check"], cwd=clone,
                                    capture_output=True, text=True)
            took = time.perf_counter() - started
            head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=clone, capture_output=True, text=True).stdout
            remote = subprocess.run(["git", "ls-remote", url, "refs/heads/bench-push-check"],
                                    capture_output=True, text=True).stdout
            ok = pushed.returncode == 0 and remote.split()[:1] == head.split()[:1]
            print(f"push through the server: {'ok' if ok else 'FAILED ' + pushed.stderr.strip()} ({took:.2f} s)")
            if not ok:
                return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
