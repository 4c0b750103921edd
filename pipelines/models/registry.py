"""The model registry: a stage per version of a model, in ``<model_dir>/registry.json``.

``<model_dir>/<version>/`` stays the artifact (model.pt, meta.json, weights.npz, metrics.json); the registry adds
what happens to it. Stages:

* ``production``: decides. Exactly one version, once the registry has any.
* ``shadow``: scored beside production, decides nothing. At most one.
* ``candidate``: registered, waiting. Any number.
* ``archived``: retired (a former production, or set aside). Any number.

Rules (each refusal raises :class:`RegistryError` with the reason):

* A version must be a folder of ``model_dir`` (pipelines/modelpath.py: no path tricks) holding ``meta.json``;
  anything else is an unknown version.
* ``promote V`` and ``shadow V`` need ``V``'s feature list to equal the job's (pipelines.features.FEATURE_NAMES,
  same names, same order): the job builds its columns from that list, so any other model would be fed the wrong
  features. ``promote`` archives the previous production and pushes ``V`` on the production history.
* ``rollback`` pops the production history: the current production is archived and the previous one decides again.
* ``candidate V`` / ``archive V`` refuse the production version (promote another one, or roll back, first).
* ``ab V FRACTION`` starts an A/B experiment: the candidate ``V`` (with the job's features) decides for the customers
  :func:`ab_arm` puts in its arm (a stable hash of the customer id with a random salt drawn per experiment), the
  production version for the rest. ``ab off`` ends it, as does promoting, shadowing or archiving ``V``; promoting
  another version keeps it (the new production is the control arm).

The file is written atomically (a temporary file in the same folder, fsync, ``os.replace``) under an exclusive
``fcntl`` lock on ``<model_dir>/.registry.lock``, so concurrent commands serialise and a reader (the running job)
sees the old file or the new one, never half of one. Every change also appends a line to
``<model_dir>/registry-history.jsonl`` (time, user, action, revision, each version's stage before and after).

Without a registry file the production version is the one ``LATEST`` names (what the job used before the registry
existed); the first change writes the file with that version as production. See docs/architecture.md, "Models".
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import json
import os
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Sequence

from pipelines.modelpath import ModelPathError, contained

STAGES = ("production", "shadow", "candidate", "archived")
REGISTRY_FILE = "registry.json"
HISTORY_FILE = "registry-history.jsonl"
LOCK_FILE = ".registry.lock"
FORMAT = 1


class RegistryError(ValueError):
    """A registry change that the stage rules refuse, or a registry file that cannot be read."""


def registry_path(model_dir: str | Path) -> Path:
    return Path(model_dir) / REGISTRY_FILE


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name (a container without a passwd entry)
        return "?"


def read_latest(model_dir: str | Path) -> str | None:
    try:
        v = (Path(model_dir) / "LATEST").read_text().strip()
    except FileNotFoundError:
        return None
    return v or None


def version_info(model_dir: str | Path, version: str) -> dict[str, Any]:
    """What the registry records about one artifact: features, training data hash, git commit, headline metrics.

    Raises RegistryError when ``version`` is not a version folder of ``model_dir`` with a readable meta.json."""
    try:
        path = contained(model_dir, version)
    except ModelPathError as exc:
        raise RegistryError(f"unknown version {version!r}: {exc}") from None
    meta_file = path / "meta.json"
    if not meta_file.is_file():
        known = ", ".join(list_artifacts(model_dir)) or "none"
        raise RegistryError(f"unknown version {version!r}: no {meta_file} (versions in {model_dir}: {known})")
    try:
        meta = json.loads(meta_file.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise RegistryError(f"{meta_file}: cannot read: {exc}") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("features"), list):
        raise RegistryError(f"{meta_file}: no feature list")
    metrics: dict[str, Any] = {}
    mfile = path / "metrics.json"
    if mfile.is_file():
        try:
            m = json.loads(mfile.read_text())
            mlp = (m.get("models") or {}).get("mlp") or {}
            metrics = {k: mlp[k] for k in ("auc_roc", "average_precision", "card_precision_at_100") if k in mlp}
            metrics["test_rows"] = (m.get("rows") or {}).get("test")
        except (OSError, json.JSONDecodeError, AttributeError):
            metrics = {}
    return {"features": [str(f) for f in meta["features"]], "data_sha256": meta.get("data_sha256"),
            "git_commit": meta.get("git_commit"), "git_dirty": meta.get("git_dirty"),
            "created_at": meta.get("created_at"), "metrics": metrics}


def list_artifacts(model_dir: str | Path) -> list[str]:
    """The version folders of ``model_dir`` (those with a meta.json), sorted by name."""
    base = Path(model_dir)
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir()
                  if p.is_dir() and not p.name.startswith(".") and (p / "meta.json").is_file())


def feature_mismatch(have: Sequence[str], want: Sequence[str]) -> str | None:
    """None when the lists are equal, else a short, readable description of the difference."""
    have, want = list(have), list(want)
    if have == want:
        return None
    missing = [f for f in want if f not in have]
    extra = [f for f in have if f not in want]
    parts = []
    if missing:
        parts.append(f"missing {missing}")
    if extra:
        parts.append(f"not computed by the job {extra}")
    if not parts:
        i = next(i for i, (a, b) in enumerate(zip(have, want)) if a != b)
        parts.append(f"same names in another order (position {i}: {have[i]!r}, the job has {want[i]!r})")
    return f"{len(have)} features against the job's {len(want)}: " + "; ".join(parts)


def job_features() -> list[str]:
    from pipelines.features import FEATURE_NAMES

    return list(FEATURE_NAMES)


@dataclass
class State:
    """The registry file's content."""

    revision: int
    versions: dict[str, dict[str, Any]]
    production_history: list[str]
    updated_at: str | None = None
    # The A/B experiment: {"version": the candidate, "fraction": of customers it decides for, "salt": of the hash}.
    ab: dict[str, Any] | None = None

    @property
    def production(self) -> str | None:
        return self.production_history[-1] if self.production_history else None

    @property
    def shadow(self) -> str | None:
        return next((v for v, e in self.versions.items() if e["stage"] == "shadow"), None)

    def stage(self, version: str) -> str | None:
        e = self.versions.get(version)
        return e["stage"] if e else None

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "revision": self.revision, "updated_at": self.updated_at,
                "production": self.production, "shadow": self.shadow, "ab": self.ab,
                "production_history": self.production_history, "versions": self.versions}

    @classmethod
    def from_json(cls, data: Any, source: str) -> "State":
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise RegistryError(f"{source}: not a registry file of format {FORMAT}")
        versions = data.get("versions")
        hist = data.get("production_history")
        if not isinstance(versions, dict) or not isinstance(hist, list):
            raise RegistryError(f"{source}: needs 'versions' (an object) and 'production_history' (a list)")
        for v, e in versions.items():
            if not isinstance(e, dict) or e.get("stage") not in STAGES:
                raise RegistryError(f"{source}: version {v!r} has no valid stage (one of {', '.join(STAGES)})")
        prods = [v for v, e in versions.items() if e["stage"] == "production"]
        if len(prods) > 1 or (prods and (not hist or hist[-1] != prods[0])):
            raise RegistryError(f"{source}: production must be one version, the last of production_history "
                                f"(production: {prods}, history: {hist[-3:]})")
        ab = data.get("ab")
        if ab is not None:
            ok = (isinstance(ab, dict) and ab.get("version") in versions and isinstance(ab.get("salt"), int)
                  and isinstance(ab.get("fraction"), (int, float)) and 0 < ab["fraction"] < 1)
            if not ok:
                raise RegistryError(f"{source}: 'ab' must name a registered version, a fraction in (0, 1) and an "
                                    f"integer salt, not {ab!r}")
        return cls(int(data.get("revision", 0)), versions, [str(v) for v in hist], data.get("updated_at"), ab)


def read_state(model_dir: str | Path) -> State | None:
    """The registry file's state, None when there is no file."""
    path = registry_path(model_dir)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RegistryError(f"{path}: not valid JSON: {exc}") from None
    return State.from_json(data, str(path))


def production_version(model_dir: str | Path) -> str | None:
    """The version that decides: the registry's production, or LATEST's when there is no registry file."""
    state = read_state(model_dir)
    if state is None:
        return read_latest(model_dir)
    return state.production


class Registry:
    """Reads and changes the stages of the versions in one model directory."""

    def __init__(self, model_dir: str | Path, features: Sequence[str] | None = None) -> None:
        self.model_dir = Path(model_dir)
        self._features = list(features) if features is not None else None

    @property
    def features(self) -> list[str]:
        if self._features is None:
            self._features = job_features()
        return self._features

    # ------------------------------------------------------------------------------------------------ reading
    def state(self) -> State:
        """The registry's state; without a file, LATEST's version as production (not yet written)."""
        state = read_state(self.model_dir)
        if state is not None:
            return state
        state = State(0, {}, [])
        latest = read_latest(self.model_dir)
        if latest is not None and latest in list_artifacts(self.model_dir):
            state.versions[latest] = {"stage": "production", "since": None, "registered_at": None,
                                      "registered_from": "LATEST", **version_info(self.model_dir, latest)}
            state.production_history.append(latest)
        return state

    def rows(self) -> list[dict[str, Any]]:
        """One row per version folder or registered version: version, stage ("unregistered" when the registry
        does not know it), metrics, data hash, commit, whether the artifact is still there."""
        state = self.state()
        artifacts = set(list_artifacts(self.model_dir))
        out = []
        order = {s: i for i, s in enumerate((*STAGES, "unregistered"))}
        for v in sorted(artifacts | set(state.versions)):
            e = state.versions.get(v)
            info = e if e else (version_info(self.model_dir, v) if v in artifacts else {})
            out.append({"version": v, "stage": e["stage"] if e else "unregistered",
                        "since": (e or {}).get("since"), "metrics": info.get("metrics") or {},
                        "data_sha256": info.get("data_sha256"), "git_commit": info.get("git_commit"),
                        "features": len(info.get("features") or []), "artifact": v in artifacts})
        return sorted(out, key=lambda r: (order[r["stage"]], r["version"]))

    # ------------------------------------------------------------------------------------------------ changes
    @contextlib.contextmanager
    def _change(self, action: str, version: str | None) -> Iterator[State]:
        """Locks, yields the state to change, then writes it atomically and appends the history line."""
        self.model_dir.mkdir(parents=True, exist_ok=True)
        with open(self.model_dir / LOCK_FILE, "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                state = self.state()
                before = {v: e["stage"] for v, e in state.versions.items()}
                yield state
                if state.ab is not None and state.stage(state.ab["version"]) != "candidate":
                    state.ab = None  # its candidate was promoted, made the shadow or archived: the A/B ends
                state.revision += 1
                state.updated_at = _now()
                self._write(state)
                after = {v: e["stage"] for v, e in state.versions.items()}
                changes = {v: [before.get(v), s] for v, s in after.items() if before.get(v) != s}
                line = {"at": state.updated_at, "user": _user(), "action": action, "version": version,
                        "revision": state.revision, "production": state.production, "changes": changes,
                        "ab": state.ab}
                with open(self.model_dir / HISTORY_FILE, "a") as fh:
                    fh.write(json.dumps(line, sort_keys=True) + "\n")
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _write(self, state: State) -> None:
        fd, tmp = tempfile.mkstemp(prefix=".registry.", suffix=".tmp", dir=self.model_dir)
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump(state.to_json(), fh, indent=2)
                fh.write("\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, registry_path(self.model_dir))
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        dfd = os.open(self.model_dir, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    def _entry(self, state: State, version: str, check_features: bool) -> dict[str, Any]:
        """The version's registry entry (registered now if new), after checking its artifact."""
        info = version_info(self.model_dir, version)
        if check_features:
            why = feature_mismatch(info["features"], self.features)
            if why:
                raise RegistryError(f"version {version!r} is refused: its feature list does not match the job's "
                                    f"({why})")
        e = state.versions.get(version)
        if e is None:
            e = state.versions[version] = {"stage": "candidate", "since": _now(), "registered_at": _now(), **info}
        else:
            e.update(info)
        return e

    @staticmethod
    def _set(e: dict[str, Any], stage: str) -> None:
        e["stage"] = stage
        e["since"] = _now()

    def promote(self, version: str) -> State:
        """``version`` becomes production; the previous production is archived."""
        with self._change("promote", version) as state:
            if state.production == version:
                raise RegistryError(f"version {version!r} is already production")
            e = self._entry(state, version, check_features=True)
            old = state.production
            if old is not None and old in state.versions:
                self._set(state.versions[old], "archived")
            self._set(e, "production")
            state.production_history.append(version)
        return state

    def shadow(self, version: str) -> State:
        """``version`` becomes the shadow; a previous shadow goes back to candidate."""
        with self._change("shadow", version) as state:
            if state.production == version:
                raise RegistryError(f"version {version!r} is production; it cannot also be the shadow")
            e = self._entry(state, version, check_features=True)
            old = state.shadow
            if old is not None and old != version:
                self._set(state.versions[old], "candidate")
            self._set(e, "shadow")
        return state

    def ab(self, version: str, fraction: float) -> State:
        """An A/B experiment: ``version`` (a candidate, with the job's features) decides for ``fraction`` of the
        customers, chosen by a stable hash of the customer id with a new random salt (:func:`ab_arm`); production
        decides for the rest. It ends with :meth:`ab_off`, or when its version is promoted, made the shadow or
        archived; a promotion of another version keeps it (the new production is the control arm)."""
        import math
        import secrets

        if not (isinstance(fraction, (int, float)) and math.isfinite(fraction) and 0 < fraction < 1):
            raise RegistryError(f"the A/B fraction must be in (0, 1), not {fraction!r}")
        with self._change("ab", version) as state:
            if state.stage(version) in ("production", "shadow"):
                raise RegistryError(f"version {version!r} is {state.stage(version)}; an A/B candidate must be a "
                                    f"candidate")
            e = self._entry(state, version, check_features=True)
            self._set(e, "candidate")
            state.ab = {"version": version, "fraction": float(fraction), "salt": secrets.randbits(62)}
        return state

    def ab_off(self) -> State:
        """Ends the A/B experiment: production decides for every customer again."""
        with self._change("ab-off", None) as state:
            if state.ab is None:
                raise RegistryError("no A/B experiment is running")
            state.ab = None
        return state

    def candidate(self, version: str) -> State:
        """Registers ``version`` (or moves it back) as a candidate."""
        return self._demote("candidate", version, "candidate")

    def archive(self, version: str) -> State:
        """``version`` is archived (it stays on disk)."""
        return self._demote("archive", version, "archived")

    def _demote(self, op: str, version: str, stage: str) -> State:
        """``version`` (an artifact on disk: _entry checks it) takes a stage that decides nothing; never the
        production version."""
        with self._change(op, version) as state:
            if state.production == version:
                raise RegistryError(f"version {version!r} is production; promote another version or roll back "
                                    f"first")
            self._set(self._entry(state, version, check_features=False), stage)
        return state

    def rollback(self) -> State:
        """The previous production decides again; the current one is archived."""
        with self._change("rollback", None) as state:
            hist = state.production_history
            if len(hist) < 2:
                raise RegistryError(f"nothing to roll back to: production history is {hist or 'empty'}")
            current, previous = hist[-1], hist[-2]
            e = self._entry(state, previous, check_features=True)
            hist.pop()
            if current in state.versions:
                self._set(state.versions[current], "archived")
            self._set(e, "production")
        return state


def ab_arm(customer_ids, salt: int, fraction: float):
    """True where a customer is in the A/B candidate arm: the splitmix64 finaliser of (customer id XOR salt), as a
    uniform number in [0, 1), below ``fraction``. The same customer and salt always give the same arm."""
    import numpy as np

    with np.errstate(over="ignore"):
        z = np.asarray(customer_ids, dtype=np.int64).astype(np.uint64) ^ np.uint64(salt)
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53)) < fraction
