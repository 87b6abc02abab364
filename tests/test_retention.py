"""Retention on real files, a real object store and a real state file: old things go, things of an issue
in use stay, --dry-run deletes nothing. Ages are set with os.utime and written into names the way the
orchestrator writes them; the clock (`now`) is the one thing faked."""

import io
import json
import logging
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from git_fixtures import git
from lib.checks import Report, check_disk
from lib.config import Config
from lib.files import exclusive_lock
from lib.ledger import FileRunHistory, RedisRunHistory
from lib.models import ConfigError, IssueState
from lib.git_commands import BACKUP_PREFIX
from lib.repo_manager import RepoManager
from lib.retention import DAY, META_KEY, Pruner, in_use, prune, prune_if_due, usage_lines
from lib.state_manager import RedisStateStore, StateStore
from lib.transcripts import project_dir_name

PROJECT = Path(__file__).resolve().parent.parent
TOKEN = "ghp_retentionTest0123456789abcdef"
SESSION = "5b0f6a55-0000-4000-8000-{:012d}"


def session(n: int) -> str:
    return SESSION.format(n)


def make_config(tmp_path: Path, **changes) -> Config:
    data = {"github": {"token": TOKEN, "repo": "acme/api", "base_repo_path": str(tmp_path / "slots"),
                       "max_concurrent": 2},
            "state_file": "state/processing-state.json", "setup_timeout_seconds": 30}
    data.update(changes)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    path.chmod(0o600)
    return Config(path, env={})


def aged(path: Path, days: float, now: float = None) -> Path:
    """Set the mtime of `path` and of everything under it to `days` before `now`."""
    when = (now or time.time()) - days * DAY
    for inner in sorted(path.rglob("*"), reverse=True) if path.is_dir() else []:
        os.utime(inner, (when, when), follow_symlinks=False)
    os.utime(path, (when, when), follow_symlinks=False)
    return path


def stamp(days: float) -> str:
    """The local time `days` ago as repo_manager and object_store write it into names."""
    return time.strftime("%Y%m%d-%H%M%S", time.localtime(time.time() - days * DAY))


def issue_folder(config: Config, number: int, days: float) -> Path:
    folder = config.issue_dir("acme/api", number)
    (folder / "tmp" / "build").mkdir(parents=True)
    (folder / "1.stream.jsonl").write_text('{"type":"system","subtype":"init"}\n' * 50)
    (folder / "1.prompt.md").write_text("Fix it.\n")
    (folder / "runner.lock").write_text("")
    (folder / "tmp" / "build" / "out.o").write_bytes(b"\0" * 10000)
    return aged(folder, days)


def transcript(config: Config, claude_dir: Path, session_id: str, days: float, slot: int = 0) -> Path:
    folder = claude_dir / "projects" / project_dir_name(os.path.realpath(config.repositories[0].slot_path(slot)))
    (folder / session_id / "subagents").mkdir(parents=True)
    (folder / session_id / "subagents" / "agent-1.jsonl").write_text("{}\n")
    path = folder / f"{session_id}.jsonl"
    path.write_text('{"type":"user"}\n' * 20)
    aged(folder / session_id, days)
    return aged(path, days)


def entry(number: int, status: str, **fields) -> IssueState:
    return IssueState(issue_number=number, status=status, branch=f"issue-{number}",
                      start_time="2026-01-01T00:00:00+00:00", repo="acme/api", session_id=session(number), **fields)


@pytest.fixture
def install(tmp_path):
    """An install with issues of every lifecycle state, each with a log folder and a transcript 60 days old."""
    config = make_config(tmp_path)
    claude_dir = tmp_path / "claude-config"
    store = StateStore.for_config(config)
    entries = [entry(7, "running"), entry(8, "needs_input"), entry(9, "waiting"), entry(6, "preparing"),
               entry(10, "completed", following=True), entry(11, "completed"), entry(12, "failed")]
    for one in entries:
        store.put(one)
        issue_folder(config, one.issue_number, 60)
        transcript(config, claude_dir, one.session_id, 60)
    return config, claude_dir, store


# ------------------------------------------------------------------------------------------------
# Logs and transcripts: issues in use keep theirs
# ------------------------------------------------------------------------------------------------


def test_the_files_of_running_waiting_and_followed_issues_survive_and_finished_ones_go(install):
    config, claude_dir, store = install
    fresh = issue_folder(config, 13, 5)  # finished recently: younger than 30 days
    store.put(entry(13, "completed"))

    report = prune(config, store, claude_config_dir=claude_dir)

    assert report.errors == []
    gone = sorted(Path(item.path).name for item in report.removed)
    assert gone == sorted(["issue-11", "issue-12", f"{session(11)}.jsonl", f"{session(12)}.jsonl"])
    for number in (6, 7, 8, 9, 10):
        assert (config.issue_dir("acme/api", number) / "1.stream.jsonl").is_file()
        assert any(claude_dir.rglob(f"{session(number)}.jsonl"))
    assert not config.issue_dir("acme/api", 11).exists() and not list(claude_dir.rglob(f"{session(11)}*"))
    assert fresh.is_dir()
    kept = {Path(item.path).name: item.reason for item in report.kept}
    assert kept["issue-7"] == "acme/api#7 running" and kept[f"{session(8)}.jsonl"] == "acme/api#8 needs_input"
    assert kept["issue-9"] == "acme/api#9 waiting" and kept["issue-10"] == "acme/api#10 followed"
    assert next(i for i in report.removed if i.path.endswith("issue-11")).bytes > 10000  # the agent's tmp/ too


def test_a_dry_run_deletes_nothing_and_lists_what_would_go(install):
    config, claude_dir, store = install
    before = sorted(str(p) for p in config.folder.rglob("*"))

    report = prune(config, store, dry_run=True, claude_config_dir=claude_dir)

    assert sorted(str(p) for p in config.folder.rglob("*")) == before
    assert len(report.removed) == 4 and report.dry_run
    assert report.to_text().startswith("Dry run, nothing deleted: would remove 4 item(s),")
    assert META_KEY not in store.load_state().meta  # a dry run is no prune: the tick's day is not used up


def test_a_folder_whose_runner_lock_is_held_stays_though_the_state_says_finished(install):
    config, claude_dir, store = install
    with exclusive_lock(config.issue_dir("acme/api", 11) / "runner.lock", wait=False) as mine:
        assert mine
        report = prune(config, store, claude_config_dir=claude_dir)
    assert config.issue_dir("acme/api", 11).is_dir()
    assert ("issue-11", "a runner holds its runner.lock") in [(Path(i.path).name, i.reason) for i in report.kept]


def test_only_the_slots_project_folders_are_read_and_a_sessions_own_folder_goes_with_it(install, tmp_path):
    config, claude_dir, store = install
    elsewhere = claude_dir / "projects" / "-home-someone-own-project"
    elsewhere.mkdir(parents=True)
    own = elsewhere / f"{session(99)}.jsonl"
    own.write_text("{}\n")
    aged(own, 400)
    ours = next(claude_dir.rglob(f"{session(11)}.jsonl")).parent
    memory = ours / "memory"
    memory.mkdir()
    aged(memory, 400)
    unknown = ours / "notes.jsonl"
    unknown.write_text("x")
    aged(unknown, 400)

    prune(config, store, claude_config_dir=claude_dir)

    assert own.is_file() and memory.is_dir() and unknown.is_file()
    assert not (ours / session(11)).exists()  # its subagents folder went with the transcript


def test_several_repositories_lay_out_logs_by_owner_and_name(tmp_path):
    config = make_config(tmp_path, github={"token": TOKEN, "base_repo_path": str(tmp_path / "slots")},
                         repositories=[{"repo": "acme/api"}, {"repo": "acme/web"}])
    store = StateStore.for_config(config)
    store.put(entry(7, "running"))  # acme/api#7 runs; acme/web#7 finished long ago
    api, web = config.issue_dir("acme/api", 7), config.issue_dir("acme/web", 7)
    for folder in (api, web):
        folder.mkdir(parents=True)
        (folder / "1.stream.jsonl").write_text("{}\n")
        aged(folder, 60)
    old_layout = config.log_dir / "issue-3"  # of the days when the config had one repository
    old_layout.mkdir()
    aged(old_layout, 60)

    report = prune(config, store, claude_config_dir=tmp_path / "claude")

    assert api.is_dir() and not web.exists() and not old_layout.exists()
    assert [Path(i.path).relative_to(config.log_dir).as_posix() for i in report.kept] == ["acme/api/issue-7"]


def test_a_claim_that_comes_after_the_listing_is_seen_before_anything_is_deleted(install):
    """The state is read again right before deleting: what became in use meanwhile stays."""
    config, claude_dir, store = install
    pruner = Pruner(config, store, claude_config_dir=claude_dir)
    listed = list(pruner.found("logs"))
    store.update(("acme/api", 11), status="pending")  # a tick claims #11 again
    assert any(found.item.path.endswith("issue-11") for found in listed)

    report = pruner.prune()

    assert config.issue_dir("acme/api", 11).is_dir()
    assert "acme/api#11 pending" in [item.reason for item in report.kept]


def test_in_use_names_each_holder_once_with_why():
    from lib.state_manager import State

    state = State()
    for one in (entry(7, "fixing"), entry(10, "merged"), entry(11, "closed", following=True)):
        state.add(one)
    held = in_use(state)
    assert held[("issue", "acme/api", 7)] == "acme/api#7 fixing" and held[("session", session(7))] == "acme/api#7 fixing"
    assert ("issue", "acme/api", 10) not in held and held[("issue", None, 11)] == "acme/api#11 followed"


# ------------------------------------------------------------------------------------------------
# Things set aside, and orchestrator.log
# ------------------------------------------------------------------------------------------------


def test_damaged_copies_full_clone_leftovers_and_old_logs_go_by_the_time_in_their_names(tmp_path):
    config = make_config(tmp_path, retention={"logs_days": None, "full_clones_days": 14})
    slots = config.repositories[0].base_repo_path
    goes = [f"api_1.damaged-{stamp(40)}", f"api_0.damaged-{stamp(31)}-2", f"api_0.full-clone-{stamp(20)}"]
    stays = [f"api.store.git.damaged-{stamp(10)}", f"api_1.full-clone-{stamp(5)}",
             f"other_0.damaged-{stamp(90)}"]  # the last: not a slot of this config, never looked at
    for name in goes + stays:
        (slots / name / "src").mkdir(parents=True)
        (slots / name / "src" / "work.py").write_text("print('kept a while')\n")
        (slots / name / "src").chmod(0o555)  # as a build might leave it
    state_dir = config.state_file.parent
    state_dir.mkdir(parents=True)
    old_utc = (datetime.now(timezone.utc) - timedelta(days=40)).strftime("%Y%m%dT%H%M%SZ")
    corrupt = state_dir / f"processing-state.json.corrupt-{old_utc}"
    corrupt.write_text("{not json")
    logs = config.folder / "orchestrator.log"
    two_days_ago = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(time.time() - 2 * DAY))
    logs.write_text(f"{two_days_ago} INFO [lib.orchestrator] Tick done: 0 launched, 0 errors\n")
    rotated_old = config.folder / "orchestrator.log.20260101-101500"  # its age is its last write's
    rotated_old.write_text("old\n")
    aged(rotated_old, 40)
    rotated_new = config.folder / "orchestrator.log.20260102-101500"
    rotated_new.write_text("recent\n")
    aged(rotated_new, 3)

    report = prune(config, claude_config_dir=tmp_path / "claude")

    assert report.errors == []
    assert sorted(Path(i.path).name for i in report.removed) == sorted(goes + [corrupt.name, rotated_old.name])
    assert sorted(path.name for path in slots.iterdir()) == sorted(stays)
    assert rotated_new.is_file() and not corrupt.exists()
    assert report.rotated and (config.folder / report.rotated).read_text().endswith("0 errors\n")
    assert not logs.exists()  # the next line logged creates it anew


def test_a_folder_a_process_works_in_stays(tmp_path):
    config = make_config(tmp_path)
    aside = config.repositories[0].base_repo_path / f"api_0.full-clone-{stamp(40)}"
    aside.mkdir(parents=True)
    sleeper = subprocess.Popen(["sleep", "30"], cwd=aside)
    try:
        report = prune(config, claude_config_dir=tmp_path / "claude")
    finally:
        sleeper.kill()
        sleeper.wait()
    assert aside.is_dir() and [item.reason for item in report.kept] == ["a process works in it"]


def test_a_log_that_began_today_is_not_rotated_and_null_keeps_it_for_ever(tmp_path):
    config = make_config(tmp_path)
    log = config.folder / "orchestrator.log"
    log.write_text(time.strftime("%Y-%m-%d %H:%M:%S") + " INFO [x] started\n")
    assert prune(config, claude_config_dir=tmp_path / "c").rotated is None
    forever = make_config(tmp_path, retention={"orchestrator_log_days": None})
    assert prune(forever, now=time.time() + 5 * DAY, claude_config_dir=tmp_path / "c").rotated is None
    assert log.is_file()


# ------------------------------------------------------------------------------------------------
# Backup refs in a real object store
# ------------------------------------------------------------------------------------------------


def test_backup_refs_go_by_their_age_and_whether_origin_has_their_commits(tmp_path, origin_repo):
    config = make_config(tmp_path)
    repos = RepoManager(config)
    slot = repos.prepare_slot(0, 5, base_branch="trunk", clone_url=str(origin_repo),
                              setup_log=tmp_path / "setup.log").path
    store = repos.store_path
    on_origin = git(store, "rev-parse", "refs/remotes/origin/trunk")
    (slot / "only-here.txt").write_text("work no one pushed\n")
    git(slot, "add", "only-here.txt")
    git(slot, "commit", "--quiet", "-m", "unpushed")
    unpushed = git(slot, "rev-parse", "HEAD")
    days_3, hours, days_100 = stamp(3), stamp(0.1), stamp(100)
    goes = {f"issue-5-{days_3}": on_origin,  # redundant, older than a day
            f"detached-{days_100}": unpushed}  # the only copy, but older than backups_days
    stays = {f"issue-5-{hours}": on_origin,  # redundant but hours old: a reader may still look for it
             f"detached-{days_3}": unpushed,  # the only copy, younger than backups_days
             f"api_0-full-clone-{days_100}/heads/issue-7": unpushed,  # old, but #7 runs
             "kept-by-hand": unpushed}  # no time in its name: never guessed at
    for name, sha in {**goes, **stays}.items():
        git(store, "update-ref", BACKUP_PREFIX + name, sha)
    StateStore.for_config(config).put(entry(7, "running"))

    dry = prune(config, dry_run=True, claude_config_dir=tmp_path / "claude")
    report = prune(config, claude_config_dir=tmp_path / "claude")

    left = git(store, "for-each-ref", "--format=%(refname)", BACKUP_PREFIX).split()
    assert sorted(left) == sorted(BACKUP_PREFIX + name for name in stays)
    assert sorted(i.ref for i in report.removed) == sorted(BACKUP_PREFIX + name for name in goes)
    assert [i.ref for i in dry.removed] == [i.ref for i in report.removed]
    assert [i.reason for i in report.kept] == ["acme/api#7 running"]
    assert git(store, "cat-file", "-t", unpushed) == "commit"  # the objects stay: nothing runs gc


def test_a_backup_the_slot_manager_made_is_pruned_once_past_its_retention(tmp_path, origin_repo):
    config = make_config(tmp_path)
    repos = RepoManager(config)
    slot = repos.prepare_slot(0, 5, base_branch="trunk", clone_url=str(origin_repo),
                              setup_log=tmp_path / "setup.log").path
    git(slot, "checkout", "--quiet", "--detach")
    (slot / "lost.txt").write_text("a detached commit\n")
    git(slot, "add", "lost.txt")
    git(slot, "commit", "--quiet", "-m", "detached work")
    notes = repos.prepare_slot(0, 6, base_branch="trunk", clone_url=str(origin_repo),
                               setup_log=tmp_path / "setup.log").warnings
    backup = git(repos.store_path, "for-each-ref", "--format=%(refname)", BACKUP_PREFIX).split()
    assert len(backup) == 1 and any(backup[0] in note for note in notes)

    assert prune(config, now=time.time() + 30 * DAY, claude_config_dir=tmp_path / "c").removed == []
    report = prune(config, now=time.time() + 91 * DAY, claude_config_dir=tmp_path / "c")
    assert [item.ref for item in report.removed] == backup


# ------------------------------------------------------------------------------------------------
# The run history
# ------------------------------------------------------------------------------------------------


def history_line(days_ago: float, issue: int) -> str:
    at = (datetime.now(timezone.utc) - timedelta(days=days_ago)).isoformat(timespec="seconds")
    return json.dumps({"at": at, "type": "outcome", "repo": "acme/api", "issue": issue, "status": "completed"})


def test_history_records_older_than_their_retention_are_dropped_in_both_files(tmp_path):
    config = make_config(tmp_path, retention={"history_days": 30})
    path = config.state_file.parent / "run-history.jsonl"
    path.parent.mkdir(parents=True)
    path.with_name("run-history.jsonl.1").write_text(history_line(90, 1) + "\n" + history_line(60, 2) + "\n")
    path.write_text("\n".join([history_line(45, 3), "torn{", history_line(20, 4), history_line(1, 5)]) + "\n")
    path.chmod(0o600)
    history = FileRunHistory(path)

    dry = prune(config, dry_run=True, claude_config_dir=tmp_path / "c")
    assert [(i.kind, i.records) for i in dry.removed] == [("history", 3)] and len(history.read()) == 5

    prune(config, claude_config_dir=tmp_path / "c")

    assert [record["issue"] for record in history.read()] == [4, 5]
    assert not path.with_name("run-history.jsonl.1").exists()
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    history.append({"type": "outcome", "issue": 6})
    assert [record["issue"] for record in history.read()] == [4, 5, 6]


def test_the_redis_history_drops_its_old_records_atomically(redis_server):
    history = RedisRunHistory(RedisStateStore(redis_server.url, namespace="retention-test"))
    for days, issue in ((400, 1), (380, 2), (10, 3)):
        history.store.client.rpush(history.key, history_line(days, issue))
    cutoff = datetime.now(timezone.utc) - timedelta(days=365)

    assert history.drop_before(cutoff, dry_run=True)[0] == 2 and len(history.read()) == 3
    records, dropped = history.drop_before(cutoff)

    assert records == 2 and dropped == len(history_line(400, 1)) + len(history_line(380, 2))
    assert [record["issue"] for record in history.read()] == [3]
    assert history.drop_before(datetime.now(timezone.utc) + timedelta(days=1)) == (1, len(history_line(10, 3)))
    assert history.store.client.exists(history.key) == 0


# ------------------------------------------------------------------------------------------------
# Once a day in the tick; the command; --check; the settings
# ------------------------------------------------------------------------------------------------


def test_the_tick_prunes_at_most_once_a_day_per_host(install, caplog, monkeypatch):
    config, claude_dir, store = install
    monkeypatch.setenv("CLAUDE_CONFIG_DIR", str(claude_dir))  # the tick's transcripts are its environment's
    caplog.set_level(logging.INFO)
    now = time.time()
    first = prune_if_due(config, store, now=now)
    issue_folder(config, 14, 60)
    store.put(entry(14, "failed"))
    again = prune_if_due(config, store, now=now + DAY - 60)
    next_day = prune_if_due(config, store, now=now + DAY + 60)

    assert len(first.removed) == 4 and again is None and [Path(i.path).name for i in next_day.removed] == ["issue-14"]
    assert list(store.load_state().meta[META_KEY]) == [config.executor.host]
    assert "Retention: removed 4 item(s)" in caplog.text


def test_a_prune_that_fails_is_a_warning_and_the_tick_goes_on(install, caplog):
    config, claude_dir, store = install
    config.state_file.write_text("{ corrupt")

    assert prune_if_due(config, store) is None
    assert "Retention: the prune failed: The state file" in caplog.text
    assert config.issue_dir("acme/api", 11).is_dir()  # nothing was deleted on a state it could not read


def monitor(*args, env=None):
    return subprocess.run([sys.executable, str(PROJECT / "claude_monitor.py"), *args], capture_output=True,
                          text=True, timeout=60, env={**os.environ, **(env or {})})


def test_the_prune_command_dry_run_then_for_real_and_its_exit_codes(install):
    config, claude_dir, store = install
    env = {"CLAUDE_CONFIG_DIR": str(claude_dir)}

    dry = monitor("prune", "--dry-run", "--config", str(config.path), "--format", "json", env=env)
    assert dry.returncode == 0, dry.stderr
    listed = json.loads(dry.stdout)
    assert listed["dry_run"] and len(listed["removed"]) == 4 and config.issue_dir("acme/api", 11).is_dir()
    assert {item["reason"] for item in listed["kept"]} >= {"acme/api#7 running", "acme/api#10 followed"}

    with exclusive_lock(config.lock_file, wait=False):
        held = monitor("prune", "--config", str(config.path), env=env)
    assert held.returncode == 1 and "A tick is running" in held.stderr and config.issue_dir("acme/api", 11).is_dir()

    done = monitor("prune", "--config", str(config.path), env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Pruned: removed 4 item(s)") and "acme/api#7 running" in done.stdout
    assert not config.issue_dir("acme/api", 11).exists()

    wrong = monitor("prune", "--repo", "acme/api", "--config", str(config.path), env=env)
    assert wrong.returncode == 2 and "--repo does not apply" in wrong.stderr


def test_check_shows_the_disk_each_kind_uses_one_line_each(install, monkeypatch):
    config, claude_dir, _ = install
    out = io.StringIO()
    monkeypatch.setenv("CLAUDE_CONFIG_DIR", str(claude_dir))
    check_disk(config, Report(out))
    lines = out.getvalue().splitlines()
    assert [line.split(":")[0] for line in lines] == [f"  ok  disk {kind}" for kind in (
        "logs", "transcripts", "history", "backups", "damaged", "full_clones", "orchestrator_log")]
    assert "in 7 issue folders, kept 30 days" in lines[0] and "in 7 transcripts, kept 30 days" in lines[1]
    assert lines[2].endswith("0 B in 0 files, kept 365 days")


def test_check_runs_the_disk_lines_as_part_of_check(tmp_path):
    config = make_config(tmp_path, retention={"transcripts_days": None})
    issue_folder(config, 3, 1)
    env = {key: value for key, value in os.environ.items() if key not in ("GITHUB_TOKEN", "GH_TOKEN")}
    done = subprocess.run([sys.executable, str(PROJECT / "run_orchestrator.py"), "--check", "--config",
                           str(config.path)], capture_output=True, text=True, timeout=120,
                          env={**env, "PATH": "/usr/bin:/bin"})
    assert "  ok  disk logs: " in done.stdout and "in 1 issue folders, kept 30 days" in done.stdout
    assert "  ok  disk transcripts: 0 B in 0 transcripts, kept for ever" in done.stdout


def test_usage_in_the_celery_mode_leaves_the_history_to_redis(tmp_path):
    config = make_config(tmp_path, executor={"type": "celery", "broker_url": "redis://127.0.0.1:1/0"})
    lines = dict((kind, text) for kind, _, text in usage_lines(config))
    assert lines["history"] == "in the shared state's Redis, kept 365 days"


def test_bad_retention_settings_are_one_line_each(tmp_path):
    with pytest.raises(ConfigError) as raised:
        make_config(tmp_path, retention={"logs_days": 0, "backups_days": "90", "history_days": True,
                                         "transcripts_days": -1, "keep_logs": 3})
    assert raised.value.errors == [
        "retention.logs_days: must be a number of days > 0, or null to keep for ever, got 0",
        "retention.transcripts_days: must be a number of days > 0, or null to keep for ever, got -1",
        "retention.history_days: must be a number of days > 0, or null to keep for ever, got true",
        "retention.backups_days: must be a number of days > 0, or null to keep for ever, got '90'"]
    assert raised.value.warnings == ["retention.keep_logs: unknown key, ignored (a typo?)"]
    with pytest.raises(ConfigError) as raised:
        make_config(tmp_path, retention=[1])
    assert raised.value.errors == ["retention: must be an object, got a list"]
    config = make_config(tmp_path, retention={"logs_days": 0.5, "backups_days": None})
    assert (config.retention.logs_days, config.retention.backups_days, config.retention.damaged_days) == (0.5, None, 30)


def test_a_real_tick_prunes_once_a_day_and_never_what_it_just_claimed(world):
    """Through run_orchestrator.py: the first tick prunes (after its claims), the next one does not."""
    forgotten = world.log_dir / "issue-99"  # a finished run the state no longer keeps
    forgotten.mkdir(parents=True)
    (forgotten / "1.stream.jsonl").write_text("{}\n")
    aged(forgotten, 60)
    number = world.add_issue("Add a greeting")
    earlier = world.log_dir / f"issue-{number}"  # as an attempt of long ago would have left it
    earlier.mkdir()
    (earlier / "0.stream.jsonl").write_text("{}\n")
    aged(earlier, 60)

    assert world.tick().returncode == 0
    assert not forgotten.exists()
    assert (earlier / "0.stream.jsonl").is_file() and (earlier / "1.stream.jsonl").is_file()
    assert list(world.state()["_meta"][META_KEY]) == [Config(world.config_path, env={}).executor.host]

    forgotten.mkdir()
    aged(forgotten, 60)
    assert world.tick().returncode == 0
    assert forgotten.is_dir()  # the day's prune is done


def test_prune_on_a_corrupt_state_deletes_nothing_and_leaves_the_state_where_it_is(install):
    config, claude_dir, _ = install
    config.state_file.write_text("{ corrupt")

    done = monitor("prune", "--config", str(config.path), env={"CLAUDE_CONFIG_DIR": str(claude_dir)})

    assert done.returncode == 2 and done.stderr.startswith("error: The state file") and done.stdout == ""
    assert config.state_file.read_text() == "{ corrupt"  # the tick, not the monitor, moves it aside
    assert config.issue_dir("acme/api", 11).is_dir()


def test_format_bytes():
    from lib.retention import format_bytes

    assert [format_bytes(n) for n in (0, 1023, 1536, 5 * 1024 ** 2, 3 * 1024 ** 4)] == [
        "0 B", "1023 B", "1.5 KB", "5.0 MB", "3072.0 GB"]
