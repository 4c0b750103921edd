"""pipelines/models: the stage rules of the model registry, its command line, and the job's side of it
(udfs/scoring.py ProductionScorer: a promotion swaps the scorer between batches; a version with another feature list
is refused and the serving one stays)."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import REGISTRY

from pipelines.config import load_config
from pipelines.features import FEATURE_NAMES
from pipelines.models import Registry, RegistryError, production_version, read_state
from pipelines.models.__main__ import main as cli
from pipelines.models.registry import HISTORY_FILE, feature_mismatch
from udfs import scoring as S

D = len(FEATURE_NAMES)


def _artifact(base: Path, version: str, seed: int, features=FEATURE_NAMES, metrics: dict | None = None) -> None:
    d = len(features)
    S.write_mlp_artifact(base / version, S.random_mlp_weights(d, (8,), seed=seed), features, [True] * d,
                         [1.0] * d, [2.0] * d, 10.0, version=version)
    meta = json.loads((base / version / "meta.json").read_text())
    meta.update(data_sha256=f"{seed:064x}", git_commit=f"{seed:040x}", git_dirty=False)
    (base / version / "meta.json").write_text(json.dumps(meta))
    if metrics is not None:
        (base / version / "metrics.json").write_text(json.dumps({"rows": {"test": 100},
                                                                  "models": {"mlp": metrics}}))


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("artifacts")
    for i, v in enumerate(("v1", "v2", "v3"), start=1):
        _artifact(base, v, seed=i, metrics={"auc_roc": 0.9, "average_precision": 0.7 + i / 100,
                                            "card_precision_at_100": 0.5})
    _artifact(base, "odd", seed=9, features=[*FEATURE_NAMES[:-1], "is_full_moon"])
    _artifact(base, "swapped", seed=8, features=[FEATURE_NAMES[1], FEATURE_NAMES[0], *FEATURE_NAMES[2:]])
    return base


@pytest.fixture
def models(tmp_path, artifacts) -> Path:
    """A model dir with v1, v2, v3 (the job's features), 'odd' and 'swapped' (other feature lists); LATEST v1."""
    base = tmp_path / "fraud"
    base.mkdir()
    for p in artifacts.iterdir():
        shutil.copytree(p, base / p.name)
    (base / "LATEST").write_text("v1\n")
    return base


def _stages(base: Path) -> dict[str, str]:
    return {v: e["stage"] for v, e in read_state(base).versions.items()}


# ------------------------------------------------------------------------------------------------- stage rules


def test_without_a_registry_file_latest_is_production(models):
    assert production_version(models) == "v1"
    rows = {r["version"]: r for r in Registry(models).rows()}
    assert rows["v1"]["stage"] == "production" and rows["v2"]["stage"] == "unregistered"
    assert rows["v2"]["metrics"]["average_precision"] == pytest.approx(0.72)
    assert not (models / "registry.json").exists(), "reading writes nothing"


def test_promote_keeps_exactly_one_production_and_records_the_version(models):
    reg = Registry(models)
    reg.promote("v2")
    assert _stages(models) == {"v1": "archived", "v2": "production"}
    reg.promote("v3")
    assert _stages(models) == {"v1": "archived", "v2": "archived", "v3": "production"}
    state = read_state(models)
    assert state.production == "v3" and state.production_history == ["v1", "v2", "v3"] and state.revision == 2
    e = state.versions["v3"]
    assert e["features"] == FEATURE_NAMES and e["data_sha256"] == f"{3:064x}" and e["git_commit"] == f"{3:040x}"
    assert e["metrics"]["average_precision"] == pytest.approx(0.73)
    assert production_version(models) == "v3"
    lines = [json.loads(x) for x in (models / HISTORY_FILE).read_text().splitlines()]
    assert [(x["action"], x["version"], x["production"]) for x in lines] == [("promote", "v2", "v2"),
                                                                           ("promote", "v3", "v3")]
    assert lines[1]["changes"] == {"v2": ["production", "archived"], "v3": [None, "production"]}
    with pytest.raises(RegistryError, match="already production"):
        reg.promote("v3")


def test_rollback_returns_to_the_previous_production(models):
    reg = Registry(models)
    with pytest.raises(RegistryError, match="nothing to roll back"):
        reg.rollback()
    reg.promote("v2")
    reg.promote("v3")
    assert reg.rollback().production == "v2"
    assert _stages(models)["v3"] == "archived" and _stages(models)["v2"] == "production"
    assert reg.rollback().production == "v1"
    assert [v for v, s in _stages(models).items() if s == "production"] == ["v1"]
    with pytest.raises(RegistryError, match="nothing to roll back"):
        reg.rollback()


@pytest.mark.parametrize("version", ["v9", "../v1", "/etc", "", "."])
def test_unknown_version_is_refused(models, version):
    reg = Registry(models)
    for change in (reg.promote, reg.shadow, reg.candidate, reg.archive):
        with pytest.raises(RegistryError, match="unknown version"):
            change(version)
    assert not (models / "registry.json").exists(), "a refused change writes nothing"


def test_feature_list_mismatch_is_refused_with_a_clear_error(models):
    reg = Registry(models)
    with pytest.raises(RegistryError) as exc:
        reg.promote("odd")
    msg = str(exc.value)
    assert "'odd' is refused: its feature list does not match the job's" in msg
    assert "missing ['is_night']" in msg and "not computed by the job ['is_full_moon']" in msg
    with pytest.raises(RegistryError, match=r"another order \(position 0"):
        reg.shadow("swapped")
    assert production_version(models) == "v1" and not (models / "registry.json").exists()
    reg.candidate("odd")  # registering is fine; it cannot decide
    assert _stages(models) == {"v1": "production", "odd": "candidate"}


def test_shadow_candidate_archive_rules(models):
    reg = Registry(models)
    with pytest.raises(RegistryError, match="production; it cannot also be the shadow"):
        reg.shadow("v1")
    reg.shadow("v2")
    reg.shadow("v3")  # one shadow: v2 goes back to candidate
    assert _stages(models) == {"v1": "production", "v2": "candidate", "v3": "shadow"}
    assert read_state(models).shadow == "v3"
    for change in (reg.archive, reg.candidate):
        with pytest.raises(RegistryError, match="is production"):
            change("v1")
    reg.promote("v3")  # the shadow becomes production: no shadow left
    assert read_state(models).shadow is None and _stages(models)["v3"] == "production"
    reg.archive("v2")
    assert _stages(models)["v2"] == "archived"


def test_a_hand_edited_registry_with_two_productions_is_an_error(models):
    Registry(models).promote("v2")
    data = json.loads((models / "registry.json").read_text())
    data["versions"]["v1"]["stage"] = "production"
    (models / "registry.json").write_text(json.dumps(data))
    with pytest.raises(RegistryError, match="production must be one version"):
        production_version(models)


def test_feature_mismatch_text():
    assert feature_mismatch(["a", "b"], ["a", "b"]) is None
    assert feature_mismatch(["a"], ["a", "b"]) == "1 features against the job's 2: missing ['b']"


# --------------------------------------------------------------------------------------------------- the CLI


def test_cli_list_promote_rollback_and_refusal(models, capsys):
    assert cli(["--model-dir", str(models), "promote", "v2"]) == 0
    assert "production v2" in capsys.readouterr().out
    assert cli(["--model-dir", str(models), "list"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^v2\s+production\s+0\.9000\s+0\.7200", out, re.M), out
    assert re.search(r"^v1\s+archived", out, re.M) and re.search(r"^v3\s+unregistered", out, re.M), out
    assert cli(["--model-dir", str(models), "promote", "odd"]) == 2
    assert "refused: version 'odd' is refused: its feature list" in capsys.readouterr().err
    assert cli(["--model-dir", str(models), "rollback"]) == 0
    assert "production v1" in capsys.readouterr().out and production_version(models) == "v1"
    assert cli(["--model-dir", str(models), "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["version"]: r["stage"] for r in rows}["v1"] == "production"


# -------------------------------------------------------------------------------- the job's side: hot swap


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _count(result: str) -> float:
    return REGISTRY.get_sample_value("streamscore_model_swaps_total", {"model": "fraud", "result": result}) or 0.0


@pytest.mark.parametrize("background", [False, True])
def test_production_scorer_swaps_between_batches(models, background):
    cfg = load_config(environ={}).with_overrides({"fraud": {"model_dir": str(models), "registry_poll_ms": 500}})
    clock = Clock()
    ps = S.ProductionScorer(cfg, kind="reference", background=background, clock=clock)
    assert ps.current().version == "v1" and ps.features == FEATURE_NAMES
    cols = [np.full(4, 1.0, np.float32) for _ in FEATURE_NAMES]
    v1_scores = ps.current().score(cols)
    swapped = _count("swapped")

    Registry(models).promote("v2")
    assert ps.current().version == "v1", "not looked at before registry_poll_ms"
    clock.t = 0.6
    ps.current()
    ps.wait(30)
    s = ps.current()
    assert s.version == "v2" and ps.serving == "v2" and _count("swapped") == swapped + 1
    assert not np.allclose(s.score(cols), v1_scores), "the versions score differently"

    # A version whose features are not the job's (written by a registry that knows other features) is refused.
    refused = _count("refused")
    Registry(models, features=[*FEATURE_NAMES[:-1], "is_full_moon"]).promote("odd")
    clock.t = 1.2
    ps.current()
    ps.wait(30)
    assert ps.current().version == "v2", "the serving version goes on"
    assert _count("refused") == refused + 1
    assert ps.refused[-1][0] == "odd" and "feature list does not match the job's" in ps.refused[-1][1]
    clock.t = 1.8
    assert ps.current().version == "v2" and _count("refused") == refused + 1, "refused once, not at every look"

    Registry(models).rollback()  # odd -> v2: already serving, nothing to load
    clock.t = 2.4
    ps.current()
    ps.wait(30)
    assert ps.current().version == "v2" and _count("swapped") == swapped + 1


def test_production_scorer_follows_the_shadow(models):
    """The shadow is handed out with production by the same current(); a shadow with other features is refused
    (no shadow), and promoting the shadow leaves none."""
    cfg = load_config(environ={}).with_overrides({"fraud": {"model_dir": str(models), "registry_poll_ms": 500}})
    Registry(models).shadow("v2")
    clock = Clock()
    ps = S.ProductionScorer(cfg, kind="reference", background=False, clock=clock)
    assert ps.current().version == "v1" and ps.shadow_scorer.version == "v2", "a shadow at the start is loaded"

    Registry(models).shadow("v3")
    clock.t = 0.6
    ps.current()  # looks at the registry; the next batch gets what it loaded
    assert ps.current().version == "v1" and ps.shadow_scorer.version == "v3" and ps.shadow_serving == "v3"

    refused = _count("refused")
    Registry(models, features=[*FEATURE_NAMES[:-1], "is_full_moon"]).shadow("odd")
    clock.t = 1.2
    ps.current()  # looks at the registry; the next batch gets what it loaded
    assert ps.current().version == "v1" and ps.shadow_scorer is None and ps.shadow_serving is None
    assert _count("refused") == refused + 1 and "as the shadow" in ps.refused[-1][1]

    Registry(models).shadow("v2")
    Registry(models).promote("v2")  # the shadow becomes production: no shadow left
    clock.t = 1.8
    ps.current()
    assert ps.current().version == "v2" and ps.shadow_scorer is None


def test_production_scorer_pinned_version_never_swaps(models):
    cfg = load_config(environ={}).with_overrides({"fraud": {"model_dir": str(models), "model_version": "v3",
                                                            "registry_poll_ms": 1}})
    clock = Clock()
    ps = S.ProductionScorer(cfg, kind="reference", background=False, clock=clock)
    Registry(models).promote("v2")
    clock.t = 5
    assert ps.current().version == "v3"


def test_load_scorer_follows_the_registry(models):
    cfg = load_config(environ={}).with_overrides({"fraud": {"model_dir": str(models)}})
    assert S.load_scorer(cfg, kind="reference").version == "v1"
    Registry(models).promote("v3")
    assert S.load_scorer(cfg, kind="reference").version == "v3"
    with pytest.raises(S.FeatureMismatchError, match="'odd' is refused"):
        S.load_scorer(cfg, kind="reference", version="odd", features=FEATURE_NAMES)


def test_training_records_the_code_commit():
    from pipelines.train.fraud import code_commit

    commit, dirty = code_commit()
    assert re.fullmatch(r"[0-9a-f]{40}", commit or "") and isinstance(dirty, bool)
    assert code_commit(Path("/")) == (None, None)


def test_ab_arm_is_stable_and_holds_its_fraction():
    from pipelines.models import ab_arm

    ids = np.arange(200_000, dtype=np.int64) * 7 + 3
    for fraction in (0.1, 0.3, 0.5):
        arm = ab_arm(ids, 12345, fraction)
        sigma = math.sqrt(fraction * (1 - fraction) / ids.size)
        assert abs(arm.mean() - fraction) < 5 * sigma, (fraction, arm.mean())
        assert (ab_arm(ids[::-1], 12345, fraction) == arm[::-1]).all(), "an id's arm does not depend on the batch"
    a, b = ab_arm(ids, 1, 0.5), ab_arm(ids, 2, 0.5)
    assert 0.45 < (a != b).mean() < 0.55, "another salt reshuffles the customers"
    assert not ab_arm(ids, 1, 0.0).any() and ab_arm(ids, 1, 1.0).all()


def test_registry_ab_experiment(models):
    reg = Registry(models)
    with pytest.raises(RegistryError, match="fraction"):
        reg.ab("v2", 1.5)
    with pytest.raises(RegistryError, match="production"):
        reg.ab("v1", 0.2)
    with pytest.raises(RegistryError, match="feature list"):
        Registry(models).ab("odd", 0.2)
    state = reg.ab("v2", 0.25)
    assert state.ab["version"] == "v2" and state.ab["fraction"] == 0.25 and state.stage("v2") == "candidate"
    assert read_state(models).ab == state.ab
    reg.promote("v3")  # another promotion keeps the experiment: v3 is the control arm
    assert read_state(models).ab == state.ab
    reg.promote("v2")  # promoting the candidate ends it
    assert read_state(models).ab is None
    reg.ab("v3", 0.5)
    reg.ab_off()
    assert read_state(models).ab is None
    with pytest.raises(RegistryError, match="no A/B"):
        reg.ab_off()


def test_production_scorer_follows_the_ab_experiment(models):
    cfg = load_config(environ={}).with_overrides({"fraud": {"model_dir": str(models), "registry_poll_ms": 500}})
    clock = Clock()
    ps = S.ProductionScorer(cfg, kind="reference", background=False, clock=clock)
    assert ps.ab is None
    Registry(models).ab("v2", 0.3)
    clock.t = 0.6
    ps.current()
    assert ps.current().version == "v1" and ps.ab[0].version == "v2" and ps.ab[1] == 0.3
    Registry(models).ab_off()
    clock.t = 1.2
    ps.current()
    assert ps.current().version == "v1" and ps.ab is None
