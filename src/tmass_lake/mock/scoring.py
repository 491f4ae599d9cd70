"""Scoring the lake API against the mock truth: a mock lake builder and the scores.

``mock_lake(base, build)`` writes a mock Extended Mission (6x and calibration point tables,
their merged-source and link tables, Gaia DR3/AllWISE references) and has ``build`` make its
lake; it is idempotent (a ``READY`` marker). The ``score_*`` functions compare crossmatches and
light curves with ``truth/*.parquet``. Used by the tests and benchmarks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from tmass_lake.mock.generator import generate
from tmass_lake.mock.truth import HIGH_PM_MAS_YR

MOCK_TABLES = ("pt_src_6x2", "sixxf_info", "sixxf_link", "pt_src_c", "cf_info", "cf_link", "ext_src_c",
               "ecf_info", "ecf_link")
HIGH_PM = HIGH_PM_MAS_YR
"""Proper motion (mas/yr) above which the mock's stars are its injected high-proper-motion set."""


@dataclass
class MockLake:
    """A mock Extended Mission (``mock/``) and its lake (``lake/``) under one directory."""

    root: Path
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def mock(self) -> Path:
        return self.root / "mock"

    @property
    def lake(self) -> Path:
        return self.root / "lake"

    def reference(self, name: str = "gaia_dr3") -> Path:
        return self.mock / "reference" / name

    def truth(self, name: str) -> pd.DataFrame:
        """``truth/<name>.parquet`` (sources, detections, moving, gaia_map, allwise_map)."""
        if name not in self._cache:
            self._cache[name] = pd.read_parquet(self.mock / "truth" / f"{name}.parquet")
        return self._cache[name]


def mock_lake(base: str | Path, build: Callable[[MockLake], None], *, scale: float = 0.3, seed: int = 1,
              workers: int = 2, tables: tuple[str, ...] = MOCK_TABLES) -> MockLake:
    """Generate the mock under ``base/mock`` and have ``build(env)`` make ``base/lake``, once
    (reused when ``READY``)."""
    env = MockLake(Path(base))
    ready = env.root / "READY"
    if ready.exists():
        return env
    env.root.mkdir(parents=True, exist_ok=True)
    generate(str(env.mock), scale=scale, seed=seed, tables=list(tables), workers=workers, progress=False,
             overwrite=True)  # a run killed before READY left a mock of its own there
    build(env)
    ready.touch()
    return env


@dataclass(frozen=True)
class MatchScore:
    """Recall and purity of a crossmatch, overall and for the high-proper-motion stars."""

    detections: int
    with_counterpart: int
    recall: float
    purity: float
    fast: int
    fast_recall: float
    matches: int
    duplicates: int


def score_crossmatch(env: MockLake, table: str, result: pd.DataFrame, *, key: str = "cntr_2mass",
                     got: str = "source_id_gaia_dr3", reference: str = "gaia") -> MatchScore:
    """Score a computed crossmatch of ``table`` detections with the mock Gaia (or AllWISE).

    Recall: detections of truth stars present in the reference that are matched to their own
    counterpart. Purity: matched detections whose match is the right one (a detection without
    a counterpart that is matched counts as wrong).
    """
    det = env.truth("detections")
    det = det[det["table"] == table][["key", "truth_id"]]
    ref_map = env.truth(f"{reference}_map").rename(columns={"source_id": "ref", "cntr": "ref"})
    ref_map = ref_map.assign(ref=ref_map["ref"].astype("Int64"))  # before the merge adds missing values
    src = env.truth("sources")[["truth_id", "pmra", "pmdec"]]
    t = det.merge(ref_map, on="truth_id", how="left").merge(src, on="truth_id", how="left")
    r = pd.DataFrame({"key": result[key].to_numpy(dtype=np.int64),
                      "got": pd.array(result[got].to_numpy(), dtype="Int64")})
    dups = int(r["key"].duplicated().sum())
    m = t.merge(r.drop_duplicates("key"), on="key", how="left")
    has = m["ref"].notna().to_numpy()
    ok = (m["got"] == m["ref"]).fillna(False).to_numpy(dtype=bool)
    matched = m["got"].notna().to_numpy()
    fast = has & (np.hypot(m["pmra"], m["pmdec"]).fillna(0).to_numpy() > HIGH_PM)
    return MatchScore(
        detections=len(m), with_counterpart=int(has.sum()), recall=float(ok[has].mean()),
        purity=float(ok[matched].mean()) if matched.any() else 1.0, fast=int(fast.sum()),
        fast_recall=float(ok[fast].mean()) if fast.any() else float("nan"), matches=len(r),
        duplicates=dups,
    )


def light_curve_truth(env: MockLake, table: str, lc: pd.DataFrame, nested: str = "detections",
                      key: str = "cntr") -> pd.DataFrame:
    """The light-curve rows joined to the truth source of their detections (majority vote)."""
    lengths = np.asarray(lc[nested].array.list_lengths)
    flat = lc[nested].nest.to_flat()
    pairs = pd.DataFrame({"gcntr": np.repeat(lc["gcntr"].to_numpy(dtype=np.int64), lengths),
                          "key": flat[key].to_numpy(dtype=np.int64)})
    det = env.truth("detections")
    det = det[det["table"] == table][["key", "truth_id"]]
    tid = pairs.merge(det, on="key").groupby("gcntr")["truth_id"].agg(lambda x: x.mode().iloc[0])
    src = env.truth("sources")[["truth_id", "kind", "is_variable", "var_type", "var_amp_k", "pmra",
                                "pmdec", "k_m"]]
    src = src.rename(columns={"is_variable": "true_variable", "pmra": "true_pmra", "pmdec": "true_pmdec",
                              "k_m": "true_k"})
    base = pd.DataFrame({c: lc[c].to_numpy() for c in lc.columns if c != nested})
    out = base.merge(tid.rename("truth_id"), left_on="gcntr", right_index=True, how="left")
    out = out.merge(src, on="truth_id", how="left")
    out["true_variable"] = out["true_variable"].fillna(False).astype(bool)
    out["true_pm"] = np.hypot(out["true_pmra"], out["true_pmdec"])
    return out


@dataclass(frozen=True)
class StatsScore:
    """Variable recovery and false positives among constant stars; high-PM stars flagged."""

    stars: int
    variables: int
    recovered: float
    constants: int
    false_positive: float
    movers: int
    movers_flagged: float
    slow_flagged: int


def score_light_curves(truth: pd.DataFrame, min_epochs: int = 10) -> StatsScore:
    """Scores over truth stars with at least ``min_epochs`` detections."""
    stars = truth[(truth["kind"] == "star") & (truth["n_epochs"] >= min_epochs)]
    var = stars[stars["true_variable"]]
    const = stars[~stars["true_variable"]]
    movers = stars[stars["true_pm"] > HIGH_PM]
    slow = stars[stars["true_pm"] < 50.0]
    return StatsScore(
        stars=len(stars), variables=len(var), recovered=float(var["is_variable"].mean()) if len(var) else 1.0,
        constants=len(const), false_positive=float(const["is_variable"].mean()) if len(const) else 0.0,
        movers=len(movers), movers_flagged=float(movers["is_moving"].mean()) if len(movers) else 1.0,
        slow_flagged=int(slow["is_moving"].sum()),
    )
