"""One work chunk of a family: truth sources, their detections, and every table row built from
them (point and extended working databases, merged information and link tables), written as
IRSA bulk files, plus truth and reference-catalogue parts.

Merged groups follow IRSA's proportions per product (:class:`~tmass_lake.mock.families.Proportion`):
:func:`repeat_rows` adds second extractions in a scan, :func:`single_sources` single-apparition
sources, and :func:`membership` makes the groups (a source seen at least twice) and, where IRSA's
links exceed its detections, second groups sharing a window of a source's detections.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from tmass_lake.mock import geometry as geo
from tmass_lake.mock import truth as tr
from tmass_lake.mock.bulkfmt import chunk_suffix, format_table, gzip_bytes
from tmass_lake.mock.columns import choose_strings, fixed_strings, make_table
from tmass_lake.mock.families import SATELLITE_SHARE, FamilyPlan, FamilySpec, Proportion, get_schema
from tmass_lake.mock.references import allwise_part, gaia_part
from tmass_lake.schema import TableSchema
from tmass_lake.storage import filesystem, join, write_bytes, write_parquet

CNTR_STRIDE = 10_000_000  # cntr = chunk * stride + n (10-digit %10d keys, up to 999 chunks)
EXT_KEY_STRIDE = 1_000_000  # ext_key %9d
HALF_WIDTH_ARCSEC = 255.0
OVERLAP_ARCSEC = 20.0
ZP_FLOOR = 0.015
MOVING_CLASSES = ("ast", "com", "pla")


@dataclass
class ChunkResult:
    """What a worker reports back for one chunk."""

    family: str
    chunk: int
    files: dict[str, dict | None] = field(default_factory=dict)  # table -> {name, rows, bytes}; None: no rows
    scan_counts: np.ndarray | None = None  # point rows per scan (index = scan_key - 1)
    assoc: pa.Table | None = None
    parts: dict[str, str] = field(default_factory=dict)  # truth/reference part paths
    parts_rows: dict[str, int] = field(default_factory=dict)
    membership: dict[str, dict[str, int]] = field(default_factory=dict)  # "pt"/"ext" counts


def write_bulk(out: str, table: str, idx: int, data: bytes, rows: int, level: int,
               storage_options: dict | None) -> dict | None:
    """Gzip ``data`` and write ``irsa/<table>/<table>_<suffix>.gz``; return its manifest entry.

    No rows, no file (None): IRSA ships no empty bulk files, and readers refuse them.
    """
    if rows == 0:
        return None
    name = f"{table}_{chunk_suffix(idx)}.gz"
    z = gzip_bytes(data, level)
    fs, root = filesystem(out, storage_options)
    write_bytes(fs, join(root, "irsa", table, name), z)
    return {"name": name, "rows": rows, "bytes": len(z)}


def write_part(out: str, rel: str, table: pa.Table, storage_options: dict | None) -> str:
    """Write the truth or reference part ``out/rel`` (Parquet, lz4); returns ``rel``."""
    fs, root = filesystem(out, storage_options)
    write_parquet(table, fs, join(root, rel), compression="lz4")
    return rel


# --------------------------------------------------------------------------------------------
# photometry and astrometry of detections


def photometry(rng: np.random.Generator, mag_true: np.ndarray, m10: np.ndarray,
               forced_nondet: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Observed magnitudes and documented error columns, noise drawn from the printed errors.

    ``msigcom`` (rounded to its documented 3 decimals) is the sigma of the injected Gaussian
    noise, so chi2/dof of a constant star about its true magnitude is ~1.
    """
    snr = 10.0 * 10 ** (-0.4 * (mag_true - m10))
    det = snr >= 3.0
    if forced_nondet is not None:
        det &= ~forced_nondet
    cmsig = np.round(1.0857 / np.maximum(snr, 1e-3), 3)
    msigcom = np.round(np.sqrt(cmsig**2 + ZP_FLOOR**2), 3)
    m_obs = np.where(det, mag_true + rng.standard_normal(mag_true.shape) * msigcom, m10 + 1.3)
    return {"m": m_obs, "cmsig": cmsig, "msigcom": msigcom, "snr": snr, "det": det}


def _qual_codes(snr: np.ndarray, det: np.ndarray) -> np.ndarray:
    q = np.where(snr >= 10, ord("A"), np.where(snr >= 7, ord("B"), np.where(snr >= 5, ord("C"),
                                                                          ord("D"))))
    return np.where(det, q, ord("U")).astype(np.uint8)


def astrometry(rng: np.random.Generator, ra: np.ndarray, dec: np.ndarray, sigma: np.ndarray,
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Noisy positions with an error ellipse (err_maj, err_min arcsec; err_ang deg E of N)."""
    n = len(ra)
    err_maj = np.round(sigma * rng.uniform(1.0, 1.35, n), 2)
    err_min = np.minimum(np.round(sigma * rng.uniform(0.8, 1.0, n), 2), err_maj)
    err_maj, err_min = np.maximum(err_maj, 0.01), np.maximum(err_min, 0.01)
    ang = rng.integers(0, 180, n)
    a = rng.standard_normal(n) * err_maj
    b = rng.standard_normal(n) * err_min
    pa_ = np.radians(ang)
    dn = a * np.cos(pa_) - b * np.sin(pa_)
    de = a * np.sin(pa_) + b * np.cos(pa_)
    dec2 = np.clip(dec + dn / 3600.0, -90.0, 90.0)
    ra2 = (ra + de / 3600.0 / np.maximum(np.cos(np.radians(dec)), 1e-6)) % 360.0
    return ra2, dec2, err_maj, err_min, ang


# --------------------------------------------------------------------------------------------
# candidate (source, scan) pairs


def _expand(ptr: np.ndarray, members: np.ndarray, keys: np.ndarray,
            ) -> tuple[np.ndarray, np.ndarray]:
    """For each entry i with CSR key keys[i], list (i, member) pairs."""
    cnt = ptr[keys + 1] - ptr[keys]
    owner = np.repeat(np.arange(len(keys)), cnt)
    start = np.repeat(ptr[keys], cnt)
    offs = np.arange(cnt.sum()) - np.repeat(np.cumsum(cnt) - cnt, cnt)
    return owner, members[start + offs]


def _neighbour_tiles(tiles: geo.Tiles) -> tuple[np.ndarray, np.ndarray]:
    key = (tiles.unit * 1000 + tiles.band) * 1_000_000 + tiles.strip
    order = np.argsort(key)
    return key[order], order


def _lookup_tile(sorted_keys: np.ndarray, order: np.ndarray, key: np.ndarray) -> np.ndarray:
    pos = np.clip(np.searchsorted(sorted_keys, key), 0, len(sorted_keys) - 1)
    return np.where(sorted_keys[pos] == key, order[pos], -1)


def candidate_pairs(plan: FamilyPlan, src: tr.Sources, idx: np.ndarray,
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(source, scan, duplicate-flag) pairs of scans covering sources ``idx``."""
    tiles, scans = plan.tiles, plan.scans
    o, s = _expand(scans.tile_ptr, scans.tile_scans, src.tile[idx])
    owners, scan_l, dup = [idx[o]], [s], [np.zeros(len(o), dtype=bool)]
    if plan.spec.name in ("survey", "6x"):
        t = src.tile[idx]
        x = geo.wrap_delta(src.ra[idx], tiles.ra[t]) * np.cos(np.radians(src.dec[idx])) * 3600
        half = tiles.width[t] * 1800.0
        near = np.abs(x) > half - OVERLAP_ARCSEC
        if near.any():
            keys, order = _neighbour_tiles(tiles)
            nb_key = ((tiles.unit[t] * 1000 + tiles.band[t]) * 1_000_000 + tiles.strip[t]
                      + np.sign(x).astype(np.int64))
            nb = _lookup_tile(keys, order, nb_key[near])
            ok = nb >= 0
            if ok.any():
                o2, s2 = _expand(scans.tile_ptr, scans.tile_scans, nb[ok])
                owners.append(idx[near][ok][o2])
                scan_l.append(s2)
                dup.append(np.ones(len(o2), dtype=bool))
    return np.concatenate(owners), np.concatenate(scan_l), np.concatenate(dup)


def _scan_frac(plan: FamilyPlan, scan: np.ndarray, dec: np.ndarray) -> np.ndarray:
    """Fraction of the scan length covered when the scan reaches ``dec``."""
    t = plan.scans.tile[scan]
    lo, hi = plan.tiles.dec_min[t], plan.tiles.dec_max[t]
    f = np.clip((dec - lo) / (hi - lo), 0.0, 1.0)
    return np.where(plan.scans.direction[scan] > 0, f, 1.0 - f)


def _epoch(plan: FamilyPlan, scan: np.ndarray, dec: np.ndarray) -> np.ndarray:
    return plan.scans.jd_start[scan] + _scan_frac(plan, scan, dec) * plan.scans.duration[scan]


def _scan_geometry(plan: FamilyPlan, scan: np.ndarray, ra: np.ndarray, dec: np.ndarray,
                   ) -> dict[str, np.ndarray]:
    sc, tiles = plan.scans, plan.tiles
    t = sc.tile[scan]
    cosd = np.maximum(np.cos(np.radians(dec)), 1e-6)
    ra_c = tiles.ra[t] + sc.ra_off[scan] / np.maximum(np.cos(np.radians(tiles.dec_c[t])), 1e-6)
    x = geo.wrap_delta(ra, ra_c) * cosd * 3600.0
    dn = (tiles.dec_max[t] - dec) * 3600.0
    ds = (dec - tiles.dec_min[t]) * 3600.0
    frac = _scan_frac(plan, scan, dec)
    coadd = np.minimum((frac * sc.n_coadd[scan]).astype(np.int64) + 1, sc.n_coadd[scan])
    return {
        "x_scan": x,
        "dist_edge_ns": np.maximum(np.minimum(dn, ds), 0).astype(np.int64),
        "dist_edge_ew": np.maximum(HALF_WIDTH_ARCSEC - np.abs(x), 0).astype(np.int64),
        "edge_n": dn < ds,
        "edge_e": x > 0,
        "coadd": coadd,
        "coadd_key": sc.coadd_base[scan] + coadd,
        "scan_key": scan + 1,
        "hemis": sc.hemis[scan],
        "scan_no": sc.scan_no[scan],
        "y_coadd": (frac * sc.n_coadd[scan] % 1.0) * geo.COADD_STEP_DEG * 3600.0,
    }


def _edge_flag(edge_n: np.ndarray, edge_e: np.ndarray) -> pa.Array:
    codes = edge_n.astype(int) * 2 + edge_e.astype(int)
    return choose_strings(codes, ["sw", "se", "nw", "ne"])


def _hemis_arr(h: np.ndarray) -> pa.Array:
    return choose_strings(h.astype(int), ["n", "s"])


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


# --------------------------------------------------------------------------------------------
# groups and merged tables


@dataclass
class Membership:
    """Merged groups of a chunk's rows: each row's own gcntr and every (group, row) link.

    A group's ``gcntr`` is the key of its seed row (its earliest member). A row in several groups
    carries the lowest of their gcntr (its source's first group) in the working database; the
    link table lists every group it belongs to. Rows in no group carry a null gcntr.
    """

    row_gcntr: np.ndarray  # per row: its lowest gcntr (0 where unlinked)
    linked: np.ndarray  # per row: in at least one group
    link_group: np.ndarray  # per link: index into group_gcntr
    link_row: np.ndarray  # per link: row index
    group_gcntr: np.ndarray  # per group, ascending

    @property
    def unlinked(self) -> int:
        return int((~self.linked).sum())


def _ranks(source: np.ndarray, key: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows ordered by source then key, first position of each row's source run, run length)."""
    order = np.lexsort((key, source))
    s = source[order]
    new = np.ones(len(s), dtype=bool)
    new[1:] = s[1:] != s[:-1]
    start = np.maximum.accumulate(np.where(new, np.arange(len(s)), 0))
    count = np.diff(np.append(np.flatnonzero(new), len(s)))[np.cumsum(new) - 1]
    return order, start, count


def linked_rows(source: np.ndarray) -> np.ndarray:
    """Rows whose source has at least two rows (a merged group needs two extractions)."""
    _, inv, cnt = np.unique(source, return_inverse=True, return_counts=True)
    return cnt[inv] >= 2


def repeat_rows(source: np.ndarray, p: Proportion, rng: np.random.Generator) -> np.ndarray:
    """Rows of real sources (``source >= 0``) to extract a second time in the same scan.

    IRSA: a group's napp can exceed the scans covering it because it can hold several
    extractions of one scan. Where IRSA has no unlinked detections (links >= detections) every
    source seen once gets a second extraction; where the groups' links per group fall short of
    ``p``'s by more than 5 %, random rows of grouped sources are repeated until they reach it.
    """
    uniq, first, inv, cnt = np.unique(source, return_index=True, return_inverse=True,
                                      return_counts=True)
    real = uniq >= 0
    picks = [first[real & (cnt == 1)]] if p.unlinked_fraction == 0 else []
    grouped = real & ((cnt >= 2) | ((cnt == 1) & (p.unlinked_fraction == 0)))
    links = int(cnt[grouped].sum()) + sum(len(x) for x in picks)
    need = round(p.detections_per_source() * int(grouped.sum()) - links)
    if need > 0.05 * links:
        pool = np.flatnonzero(grouped[inv] & (cnt[inv] >= 2))
        picks.append(np.sort(rng.choice(pool, min(need, len(pool)), replace=False)))
    return np.concatenate(picks).astype(np.int64) if picks else np.zeros(0, np.int64)


def single_count(p: Proportion, rows: int, unlinked: int) -> int:
    """Single-apparition rows to add so that the unlinked share of all rows is ``p``'s."""
    u = p.unlinked_fraction
    return max(0, round((u * rows - unlinked) / (1.0 - u))) if u > 0 else 0


def membership(source: np.ndarray, key: np.ndarray, p: Proportion, rng: np.random.Generator,
               ) -> Membership:
    """Groups of the rows: one per source seen at least twice, plus second groups where ``p``'s
    links exceed its detections.

    ``source`` names the object each row measures (unique per row for one-off rows), ``key``
    increases with time. A second group of a source takes the rows of a window of its epochs
    (a :data:`SATELLITE_SHARE` of them, never its first), as WAX's 1.5" circles do when they
    overlap; it is added to sources in random order until the links reach ``p``'s links per
    detection (or no source of at least three rows is left).
    """
    n = len(key)
    order, start, count = _ranks(source, key)
    rank = np.arange(n) - start
    grouped = count >= 2
    first = grouped & (rank == 0)
    row_gcntr = np.zeros(n, np.int64)
    row_gcntr[order] = np.where(grouped, key[order][start], 0)
    linked = row_gcntr != 0
    extra = max(0, round(p.links_per_detection * n - int(linked.sum())))
    sat_rows, sat_seed = np.zeros(0, np.int64), np.zeros(0, np.int64)
    runs = np.flatnonzero(first & (count >= 3))  # positions (in order) of eligible sources
    if extra >= 2 and len(runs):
        runs = runs[rng.permutation(len(runs))]
        size = count[runs]
        m = np.clip(np.round(rng.uniform(*SATELLITE_SHARE, len(runs)) * size), 2, size - 1)
        m = m.astype(np.int64)
        cum = np.cumsum(m)
        k = int(np.searchsorted(cum, extra))  # sources [0, k) fit; source k takes the rest
        rest = extra - (int(cum[k - 1]) if k else 0)
        if k < len(runs) and rest >= 2:
            m[k] = min(rest, size[k] - 1)
            k += 1
        runs, size, m = runs[:k], size[:k], m[:k]
        i0 = 1 + (rng.random(len(runs)) * (size - m)).astype(np.int64)  # never the first row
        owner = np.repeat(np.arange(len(runs)), m)
        offs = np.arange(int(m.sum())) - np.repeat(np.cumsum(m) - m, m)
        sat_rows = order[runs[owner] + i0[owner] + offs]
        sat_seed = key[order[runs + i0]][owner]
    prim_rows = np.flatnonzero(linked)
    gcntr_of_link = np.concatenate([row_gcntr[prim_rows], sat_seed])
    group_gcntr, link_group = np.unique(gcntr_of_link, return_inverse=True)
    return Membership(row_gcntr, linked, link_group, np.concatenate([prim_rows, sat_rows]),
                      group_gcntr)


def merged_values(inv: np.ndarray, gcntr: np.ndarray, ra: np.ndarray, dec: np.ndarray,
                  jd: np.ndarray, mags: list[tuple[np.ndarray, np.ndarray]],
                  spos_row: np.ndarray) -> dict[str, object]:
    """Merged-source information columns from the member rows as written (one row per group)."""
    ng = int(inv.max()) + 1 if len(inv) else 0
    napp = np.bincount(inv, minlength=ng)
    first = np.full(ng, -1, dtype=np.int64)
    first[inv[::-1]] = np.arange(len(inv))[::-1]
    ra0 = ra[first][inv]
    dra = geo.wrap_delta(ra, ra0)
    mra = np.bincount(inv, dra, ng) / napp
    mdec = np.bincount(inv, dec, ng) / napp
    cosd = np.cos(np.radians(mdec))
    rra = (dra - mra[inv]) * cosd[inv] * 3600.0
    rdec = (dec - mdec[inv]) * 3600.0
    single = napp < 2
    sig_ra = np.sqrt(np.bincount(inv, rra**2, ng) / np.maximum(napp - 1, 1))
    sig_dec = np.sqrt(np.bincount(inv, rdec**2, ng) / np.maximum(napp - 1, 1))
    out: dict[str, object] = {
        "gcntr": gcntr[first], "ra": (ra[first] + mra) % 360.0, "dec": mdec,
        "sig_ra": (sig_ra, single), "sig_dec": (sig_dec, single), "napp": napp,
        "spos": np.maximum.reduceat(spos_row[np.argsort(inv, kind="stable")],
                                    np.concatenate([[0], np.cumsum(napp)[:-1]]))
        if ng else np.zeros(0, np.int64),
        "jdate_min": np.minimum.reduceat(jd[np.argsort(inv, kind="stable")],
                                         np.concatenate([[0], np.cumsum(napp)[:-1]]))
        if ng else np.zeros(0),
    }
    order = np.argsort(inv, kind="stable")
    starts = np.concatenate([[0], np.cumsum(napp)[:-1]]) if ng else np.zeros(0, np.int64)
    out["jdate_max"] = np.maximum.reduceat(jd[order], starts) if ng else np.zeros(0)
    for b, (m, s) in zip("jhk", mags, strict=True):
        ok = ~np.isnan(s)
        w = np.where(ok, 1.0 / np.where(ok, s, 1.0) ** 2, 0.0)
        nd = np.bincount(inv, ok.astype(float), ng)
        sw = np.bincount(inv, w, ng)
        mm = np.bincount(inv, np.where(ok, m, 0.0) * w, ng) / np.where(sw > 0, sw, 1.0)
        m1 = np.bincount(inv, np.where(ok, m, 0.0), ng) / np.maximum(nd, 1)
        m2 = np.bincount(inv, np.where(ok, m, 0.0) ** 2, ng) / np.maximum(nd, 1)
        rms = np.sqrt(np.maximum(m2 - m1**2, 0.0))
        none = nd == 0
        out[f"{b}_m"] = (mm, none)
        out[f"{b}_msig"] = (1.0 / np.sqrt(np.where(sw > 0, sw, 1.0)), none)
        out[f"{b}_rms"] = (rms, none | (nd < 2))
        out[f"{b}_ndet"] = (nd.astype(np.int64), none)
    return out


def _sorted_link(gcntr: np.ndarray, key: np.ndarray, ngrp: np.ndarray) -> tuple[np.ndarray, ...]:
    o = np.lexsort((key, gcntr))
    return gcntr[o], key[o], ngrp[o]


# --------------------------------------------------------------------------------------------
# the chunk


def chunk_sources(plan: FamilyPlan, items: list[tuple[int, int, int]]) -> tr.Sources:
    """Truth sources of a chunk's work items (each item seeded on its own)."""
    parts = []
    spec = plan.spec
    for t, n, part in items:
        rng = np.random.default_rng([plan.seed, spec.code, 1, t, part])
        tl = plan.tiles
        ra, dec = geo.uniform_in_box(rng, n, np.full(n, tl.ra[t]), np.full(n, tl.width[t]),
                                     np.full(n, tl.dec_min[t]), np.full(n, tl.dec_max[t]),
                                     spec.seed_margin_arcsec / 3600.0)
        _, b = geo.radec_to_galactic(ra, dec)
        gfrac = spec.galaxy_frac * 2.0 / geo.galactic_density(b)
        base = ((spec.code * 1_000_000 + t) * 100 + part) * 1_000_000 + 1
        parts.append(tr.make_sources(rng, n, ra, dec, np.full(n, t), spec.k_range, gfrac, base))
    if not parts:
        return tr.make_sources(np.random.default_rng(0), 0, np.zeros(0), np.zeros(0),
                               np.zeros(0, np.int64), (10, 11), 0.0, 0)
    src = tr.Sources.concat(parts)
    if len(src) and not (src.kind == tr.KIND_GALAXY).any():
        src.kind[0] = tr.KIND_GALAXY  # every chunk carries at least one galaxy
        src.pmra[0] = src.pmdec[0] = src.parallax[0] = 0.0
        src.var_type[0], src.var_amp_k[0], src.var_period_d[0] = tr.VAR_NONE, 0.0, 0.0
    pm = np.hypot(src.pmra, src.pmdec)
    stars = np.flatnonzero(src.kind == tr.KIND_STAR)
    if len(stars) and not (pm[stars] > tr.HIGH_PM_MAS_YR).any():  # ... and one high-PM star
        i = stars[0]
        f = 1000.0 / max(pm[i], 1e-3)  # 1"/yr in the star's own direction
        src.pmra[i], src.pmdec[i], src.parallax[i] = src.pmra[i] * f, src.pmdec[i] * f, \
            min(src.parallax[i] * f, 800.0)
    return src


@dataclass
class Rows:
    """Point-detection rows of a chunk before formatting."""

    src: np.ndarray  # index into the chunk's sources, -1 for spurious/moving
    truth_id: np.ndarray
    kind: np.ndarray
    scan: np.ndarray
    jd: np.ndarray
    ra_true: np.ndarray
    dec_true: np.ndarray
    mag_true: np.ndarray  # (n, 3)
    forced_nondet: np.ndarray  # (n, 3)
    dup: np.ndarray
    spos: np.ndarray
    moving: np.ndarray  # index into the moving list, -1 otherwise

    @staticmethod
    def concat(parts: list[Rows]) -> Rows:
        return Rows(*[np.concatenate([getattr(p, f) for p in parts])
                      for f in Rows.__dataclass_fields__])

    def take(self, idx: np.ndarray) -> Rows:
        return Rows(*[getattr(self, f)[idx] for f in Rows.__dataclass_fields__])


def _real_rows(plan: FamilyPlan, src: tr.Sources, rng: np.random.Generator) -> Rows:
    spec = plan.spec
    m10 = np.array(spec.m10)
    stars = np.flatnonzero(src.kind == tr.KIND_STAR)
    s, scan, dup = candidate_pairs(plan, src, stars)
    spos = np.bincount(s, minlength=len(src))
    if spec.name == "survey":  # reject table: 1-3 of the covering scans per source
        key = rng.random(len(s))
        o = np.lexsort((key, s))
        s, scan, dup = s[o], scan[o], dup[o]
        first = np.searchsorted(s, s)
        rank = np.arange(len(s)) - first
        kmax = rng.integers(1, 4, len(src))
        keep = rank < np.minimum(kmax[s], spos[s])
        s, scan, dup = s[keep], scan[keep], dup[keep]
    snr_best = (10.0 * 10 ** (-0.4 * (src.mag[s] - m10))).max(axis=1)
    keep = rng.random(len(s)) < _sigmoid((snr_best - 5.0) / 1.2)
    s, scan, dup = s[keep], scan[keep], dup[keep]
    return _star_rows(plan, src, s, scan, dup, spos[s])


def _star_rows(plan: FamilyPlan, src: tr.Sources, s: np.ndarray, scan: np.ndarray, dup: np.ndarray,
               spos: np.ndarray) -> Rows:
    """Detections of stars ``s`` in scans ``scan``: epoch, true position and magnitudes."""
    jd = _epoch(plan, scan, src.dec[s])
    ra_t, dec_t = tr.position_at(src, s, jd)
    dm = tr.light_curve(src.var_type[s], src.var_amp_k[s], src.var_period_d[s], src.var_t0[s],
                        jd)
    mag = src.mag[s] + dm[:, None] * tr.VAR_BAND_SCALE[None, :]
    n = len(s)
    return Rows(s, src.truth_id[s], np.full(n, tr.KIND_STAR, np.int8), scan, jd, ra_t, dec_t,
                mag, np.zeros((n, 3), bool), dup, spos, np.full(n, -1))


SINGLE_TILE_SLOT = 990_000
"""Truth ids of single-apparition sources use this tile slot plus the chunk (< 1000 chunks)."""


def single_sources(plan: FamilyPlan, items: list[tuple[int, int, int]], n: int, ci: int,
                   galaxies: bool) -> tr.Sources:
    """``n`` single-apparition sources of a chunk: faint stars (SNR 3-6 in K in one scan) or
    faint galaxies (K 13.6-14.2) near the limit, each to be detected exactly once."""
    spec = plan.spec
    rng = np.random.default_rng([plan.seed, spec.code, 9, ci, int(galaxies)])
    tl = plan.tiles
    t_items = np.array([it[0] for it in items], np.int64)
    w = np.array([it[1] for it in items], float)
    t = rng.choice(t_items, n, p=w / w.sum()) if n and w.sum() > 0 else np.zeros(0, np.int64)
    ra, dec = geo.uniform_in_box(rng, n, tl.ra[t], tl.width[t], tl.dec_min[t], tl.dec_max[t],
                                 spec.seed_margin_arcsec / 3600.0)
    base = ((spec.code * 1_000_000 + SINGLE_TILE_SLOT + ci) * 100 + int(galaxies)) * 1_000_000 + 1
    k10 = spec.m10[2]
    src = tr.make_sources(rng, n, ra, dec, t, (k10 + 0.5, k10 + 1.2), float(galaxies), base)
    if galaxies:
        src.mag += (rng.uniform(13.6, 14.2, n) - src.mag[:, 2])[:, None]
    return src


def _one_scan(plan: FamilyPlan, tile: np.ndarray, rng: np.random.Generator,
              ) -> tuple[np.ndarray, np.ndarray]:
    """(a random scan of each tile, the number of scans of the tile)."""
    sc = plan.scans
    cnt = sc.tile_ptr[tile + 1] - sc.tile_ptr[tile]
    return sc.tile_scans[sc.tile_ptr[tile] + (rng.random(len(tile)) * cnt).astype(np.int64)], cnt


def _chunk_scans(plan: FamilyPlan, items: list[tuple[int, int, int]]) -> np.ndarray:
    t = np.unique([it[0] for it in items]).astype(np.int64)
    if len(t) == 0:
        return np.zeros(0, np.int64)
    return _expand(plan.scans.tile_ptr, plan.scans.tile_scans, t)[1]


def _spurious_rows(plan: FamilyPlan, scans: np.ndarray, n: int, rng: np.random.Generator,
                   ) -> Rows:
    tl, sc = plan.tiles, plan.scans
    scan = rng.choice(scans, n) if len(scans) else np.zeros(0, np.int64)
    t = sc.tile[scan]
    ra, dec = geo.uniform_in_box(rng, n, tl.ra[t], tl.width[t], tl.dec_min[t], tl.dec_max[t],
                                 2.0 / 3600.0)
    jd = _epoch(plan, scan, dec)
    m10 = np.array(plan.spec.m10)
    band = rng.integers(0, 3, n)
    mag = np.repeat(m10[None, :] + 2.5, n, axis=0)
    mag[np.arange(n), band] = m10[band] + rng.uniform(0.3, 1.2, n)
    forced = np.ones((n, 3), bool)
    forced[np.arange(n), band] = False
    return Rows(np.full(n, -1), np.full(n, -1, np.int64), np.full(n, tr.KIND_SPURIOUS, np.int8),
                scan, jd, ra, dec, mag, forced, np.zeros(n, bool), np.ones(n, np.int64),
                np.full(n, -1))


@dataclass
class Movers:
    """Solar-system objects seen in a chunk."""

    truth_id: np.ndarray
    cls: np.ndarray  # 0 ast, 1 com, 2 pla
    name: list[str]
    v_mag: np.ndarray
    r_helio: np.ndarray
    delta: np.ndarray


def _ecliptic_weights(plan: FamilyPlan, scans: np.ndarray) -> np.ndarray | None:
    """Probabilities of the chunk's scans to see a solar-system object: a Gaussian in the
    ecliptic latitude of each scan's tile (normalised, so a footprint far from the ecliptic still
    gets its few objects, in its scans nearest to it)."""
    if len(scans) == 0:
        return None
    t = plan.scans.tile[scans]
    beta = geo.ecliptic_latitude(plan.tiles.ra[t], plan.tiles.dec_c[t])
    w = np.exp(-0.5 * (beta / geo.ECLIPTIC_SIGMA_DEG) ** 2) + 1e-300
    return w / w.sum()


def _moving_rows(plan: FamilyPlan, scans: np.ndarray, n_obj: int, gchunk: int,
                 rng: np.random.Generator, every_class: bool = False) -> tuple[Rows, Movers]:
    """Solar-system objects (asteroids, comets, planets/satellites), one row per appearance;
    ``every_class`` makes the first three objects one of each class."""
    sc, tl = plan.scans, plan.tiles
    cls = rng.choice(3, n_obj, p=[0.8, 0.12, 0.08])
    if every_class and n_obj >= 3:
        cls[:3] = [0, 1, 2]
    tid = ((plan.spec.code * 1_000_000 + 999_999) * 100 + gchunk % 100) * 1_000_000 + \
        np.arange(n_obj) + 1 + (gchunk // 100) * 10_000
    names = []
    for i in range(n_obj):  # a handful of objects per chunk
        num = 10_000 + plan.spec.code * 100_000 + gchunk * 1000 + i
        names.append([f"({num}) Mock{num}", f"P/{1990 + i % 10}-M{gchunk}{i}",
                      f"MOCKSAT-{plan.spec.code}{gchunk:03d}{i:02d}"][cls[i]])
    v = np.where(cls == 2, rng.uniform(9.0, 13.0, n_obj), rng.uniform(13.0, 17.0, n_obj))
    rh = np.where(cls == 2, rng.uniform(5.0, 10.0, n_obj), rng.uniform(1.8, 4.0, n_obj))
    movers = Movers(tid, cls, names, v, rh, np.maximum(rh - 1.0 + rng.normal(0, 0.1, n_obj),
                                                       0.3))
    parts: list[Rows] = []
    near = _ecliptic_weights(plan, scans)
    for i in range(n_obj):
        k = int(rng.integers(3, 7))
        if plan.spec.name in ("cal", "sc"):  # consecutive scans of one visit: moves in between
            start = int(rng.choice(scans, p=near)) if len(scans) else 0
            start -= (start - int(sc.tile_ptr[sc.tile[start]])) % 6
            obj_scans = np.arange(start, start + min(k, 6))
        else:
            obj_scans = rng.choice(scans, min(k, len(scans)), replace=False, p=near)
        m = len(obj_scans)
        t = sc.tile[obj_scans]
        ra, dec = geo.uniform_in_box(rng, 1, tl.ra[t[:1]], tl.width[t[:1]] * 0.5,
                                     tl.dec_min[t[:1]], tl.dec_max[t[:1]], 0.1)
        ra_all, dec_all = geo.uniform_in_box(rng, m, tl.ra[t], tl.width[t] * 0.9, tl.dec_min[t],
                                             tl.dec_max[t], 0.05)
        jd = sc.jd_start[obj_scans] + 0.5 * sc.duration[obj_scans]
        if plan.spec.name in ("cal", "sc"):
            rate = rng.uniform(0.05, 0.4)  # deg/day
            ang = rng.uniform(0, 2 * np.pi)
            dt = jd - jd[0]
            dec_all = dec[0] + rate * dt * np.cos(ang)
            ra_all = ra[0] + rate * dt * np.sin(ang) / np.cos(np.radians(dec[0]))
        kmag = v[i] - 1.8 + rng.normal(0, 0.05, m)
        mag = np.stack([kmag + 0.4, kmag + 0.1, kmag], axis=1)
        parts.append(Rows(np.full(m, -1), np.full(m, tid[i]), np.full(m, tr.KIND_MOVING, np.int8),
                          obj_scans, jd, ra_all % 360.0, dec_all, mag, np.zeros((m, 3), bool),
                          np.zeros(m, bool), np.ones(m, np.int64), np.full(m, i)))
    if not parts:
        return _spurious_rows(plan, scans, 0, rng), movers
    return Rows.concat(parts), movers


def _optical(rng: np.random.Generator, mag: np.ndarray, real: np.ndarray) -> dict[str, object]:
    n = len(mag)
    k, jk = mag[:, 2], mag[:, 0] - mag[:, 2]
    has = real & (k < 13.5) & (rng.random(n) < 0.85)
    tycho = has & (k < 7.5)
    code = np.where(tycho, 2, np.where(has, 1, 0))
    vr = k + 1.2 + 2.0 * jk + rng.normal(0, 0.2, n)
    none = ~has
    return {
        "a": choose_strings(code, ["0", "U", "T"]),
        "dist_opt": (rng.uniform(0.05, 1.5, n), none),
        "phi_opt": (rng.integers(0, 360, n), none),
        "b_m_opt": (vr + 0.8 + 0.3 * jk, none),
        "vr_m_opt": (vr, none),
        "nopt_mchs": has.astype(np.int64),
    }


def point_table(plan: FamilyPlan, schema: TableSchema, rows: Rows, cntr: np.ndarray,
                inv: np.ndarray, mem: Membership, rng: np.random.Generator,
                ) -> tuple[pa.Table, dict[str, np.ndarray]]:
    """The point working-database table of a chunk (rows already in cntr order).

    ``inv`` numbers the source of each row. A ``cat`` column (6x) is ``1`` on the best (highest
    SNR) detection of every real source; ``gcntr`` is the row's lowest group (null: no group).
    """
    spec = plan.spec
    n = len(cntr)
    m10 = np.array(spec.m10)
    ph = photometry(rng, rows.mag_true, m10[None, :], rows.forced_nondet)
    k_for_ast = np.where(ph["det"][:, 2], rows.mag_true[:, 2], rows.mag_true.min(axis=1))
    sigma = tr.astrom_sigma(k_for_ast, m10[2])
    ra, dec, emaj, emin, eang = astrometry(rng, rows.ra_true, rows.dec_true, sigma)
    ra, dec = np.round(ra, 6) % 360.0, np.round(dec, 6)
    glon, glat = geo.radec_to_galactic(ra, dec)
    g = _scan_geometry(plan, rows.scan, ra, dec)
    det, snr = ph["det"], ph["snr"]
    snr_best = np.where(det, snr, 0).max(axis=1)
    real = rows.kind == tr.KIND_STAR
    rel = np.where(snr_best >= 10, 0, np.where(snr_best >= 7, 1, np.where(snr_best >= 5, 2, 3)))
    rel = np.where(rows.kind == tr.KIND_SPURIOUS, rng.integers(3, 6, n), rel)
    qual = _qual_codes(snr, det)
    rd = np.where(det, np.where(rows.mag_true < 9.0, ord("1"), ord("2")), ord("0"))
    nfr = np.where(det, np.clip(np.round(6 * np.minimum(snr / 10.0, 1.0)), 1, 6), 0)
    ndet = np.empty((n, 6), np.uint8)
    ndet[:, 0::2] = (48 + nfr).astype(np.uint8)
    ndet[:, 1::2] = ord("6")
    perm = rng.permutation(n) if n else np.zeros(0, np.int64)
    pxcntr = cntr[perm] if n else cntr
    v: dict[str, object] = {
        "ra": ra, "dec": dec, "err_maj": emaj, "err_min": emin, "err_ang": eang,
        "ph_qual": fixed_strings(qual), "rd_flg": fixed_strings(rd.astype(np.uint8)),
        "bl_flg": fixed_strings(np.where(det, ord("1"), ord("0")).astype(np.uint8)),
        "cc_flg": fixed_strings(np.full((n, 3), ord("0"), np.uint8)),
        "ndet": fixed_strings(ndet),
        "prox": np.round(rng.exponential(25.0, n) + 1.5, 1),
        "pxpa": (rng.integers(0, 360, n), None), "pxcntr": pxcntr,
        "gal_contam": np.zeros(n, np.int64),
        "mp_flg": (rows.kind == tr.KIND_MOVING).astype(np.int64),
        "cntr": cntr, "hemis": _hemis_arr(g["hemis"]), "date": geo.jd_to_days1970(rows.jd),
        "scan": g["scan_no"], "glon": glon, "glat": glat, "x_scan": g["x_scan"],
        "jdate": rows.jd, "dist_edge_ns": g["dist_edge_ns"], "dist_edge_ew": g["dist_edge_ew"],
        "dist_edge_flg": _edge_flag(g["edge_n"], g["edge_e"]),
        "dup_src": rows.dup.astype(np.int64), "use_src": (~rows.dup).astype(np.int64),
        "ext_key": (np.zeros(n, np.int64), np.ones(n, bool)),
        "scan_key": g["scan_key"], "coadd_key": g["coadd_key"], "coadd": g["coadd"],
        "rel": choose_strings(rel, ["A", "B", "C", "D", "E", "F"]),
        "gcntr": (mem.row_gcntr, ~mem.linked),
    }
    if "cat" in schema.names:
        cat = _best_flag(inv, snr_best, real)
        v["cat"] = choose_strings(cat.astype(int), ["0", "1"])
    v.update(_optical(rng, rows.mag_true, real))
    mags: dict[str, np.ndarray] = {}
    for i, b in enumerate("jhk"):
        nd = ~det[:, i]
        v[f"{b}_m"] = (ph["m"][:, i], None)
        v[f"{b}_cmsig"] = (ph["cmsig"][:, i], nd)
        v[f"{b}_msigcom"] = (ph["msigcom"][:, i], nd)
        v[f"{b}_snr"] = (snr[:, i], nd)
        v[f"{b}_psfchi"] = (np.abs(rng.normal(1.0, 0.25, n)), nd)
        sig_ap = np.round(ph["msigcom"][:, i] * 1.3, 3)
        v[f"{b}_m_stdap"] = (ph["m"][:, i] + 0.01 + rng.standard_normal(n) * sig_ap, nd)
        v[f"{b}_msig_stdap"] = (sig_ap, nd)
        mags[f"{b}_m"] = np.round(ph["m"][:, i], 3)
        mags[f"{b}_sig"] = np.where(nd, np.nan, ph["msigcom"][:, i])
    table = make_table(schema, n, v, rng, rows.mag_true)
    info = {"ra": table.column("ra").to_numpy() if "ra" in table.column_names else ra,
            "dec": table.column("dec").to_numpy() if "dec" in table.column_names else dec,
            "snr_best": snr_best, **mags}
    return table, info


def ext_rows(plan: FamilyPlan, src: tr.Sources, rng: np.random.Generator,
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Extended detections of the chunk's galaxies: (source, scan, jd, spos)."""
    gal = np.flatnonzero(src.kind == tr.KIND_GALAXY)
    s, scan, _ = candidate_pairs(plan, src, gal)
    spos = np.bincount(s, minlength=len(src))
    p = _sigmoid((14.0 - src.mag[s, 2]) / 0.25) * plan.galaxy_detect
    keep = rng.random(len(s)) < p
    s, scan = s[keep], scan[keep]
    if len(gal) and not len(s):  # keep at least one extended detection in the chunk
        s, scan = gal[:1], _expand(plan.scans.tile_ptr, plan.scans.tile_scans,
                                   src.tile[gal[:1]])[1][:1]
    return s, scan, _epoch(plan, scan, src.dec[s]), spos[s]


def ext_table(plan: FamilyPlan, schema: TableSchema, src: tr.Sources, s: np.ndarray,
              scan: np.ndarray, jd: np.ndarray, key: np.ndarray, inv: np.ndarray,
              mem: Membership, rng: np.random.Generator,
              ) -> tuple[pa.Table, dict[str, np.ndarray]]:
    """The extended working-database table (389/390-column XSC-like layout)."""
    n = len(s)
    m10 = np.array(plan.spec.m10) - 1.0
    mag_true = src.mag[s] + 0.0
    ph = photometry(rng, mag_true, m10[None, :])
    ra, dec, *_ = astrometry(rng, src.ra[s], src.dec[s], np.full(n, 0.25))
    ra, dec = np.round(ra, 6) % 360.0, np.round(dec, 6)
    glon, glat = geo.radec_to_galactic(ra, dec)
    g = _scan_geometry(plan, scan, ra, dec)
    det = ph["det"]
    snr_best = np.where(det, ph["snr"], 0).max(axis=1)
    rel = np.where(snr_best >= 10, 0, np.where(snr_best >= 7, 1, np.where(snr_best >= 5, 2, 3)))
    r = np.round(np.exp(rng.normal(np.log(9.0), 0.4, n)) * 10 ** (-0.1 * (mag_true[:, 2] - 12)), 1)
    v: dict[str, object] = {
        "jdate": jd, "ra": ra, "dec": dec,
        "sup_ra": (ra + rng.normal(0, 0.3, n) / 3600.0) % 360.0,
        "sup_dec": dec + rng.normal(0, 0.3, n) / 3600.0,
        "glon": glon, "glat": glat, "density": rng.uniform(0.0, 2.0, n), "r_k20fe": r,
        "e_score": rng.uniform(1.0, 1.4, n), "g_score": rng.uniform(1.0, 1.4, n),
        "vc": np.ones(n, np.int64), "cc_flg": choose_strings(np.zeros(n, int), ["0"]),
        "dup_src": np.zeros(n, np.int64), "use_src": np.ones(n, np.int64),
        "prox": rng.exponential(40.0, n) + 5.0, "pxpa": rng.integers(0, 360, n),
        "pxcntr": key[rng.permutation(n)] if n else key,
        "dist_edge_ns": g["dist_edge_ns"], "dist_edge_ew": g["dist_edge_ew"],
        "dist_edge_flg": _edge_flag(g["edge_n"], g["edge_e"]),
        "pts_key": (np.zeros(n, np.int64), np.ones(n, bool)),
        "mp_key": (np.zeros(n, np.int64), np.ones(n, bool)),
        "night_key": (np.floor(jd) - np.floor(geo.JD_START)).astype(np.int64) + 1,
        "scan_key": g["scan_key"], "coadd_key": g["coadd_key"],
        "hemis": _hemis_arr(g["hemis"]), "date": geo.jd_to_days1970(jd), "scan": g["scan_no"],
        "coadd": g["coadd"], "id": np.arange(n, dtype=np.int64) % 999_999 + 1,
        "x_coadd": g["x_scan"] + 256.0, "y_coadd": g["y_coadd"],
        "ext_key": key, "rel": choose_strings(rel, ["A", "B", "C", "D"]),
        "gcntr": (mem.row_gcntr, ~mem.linked),
    }
    if "cat" in schema.names:
        cat = _best_flag(inv, snr_best, np.ones(n, bool))
        v["cat"] = choose_strings(cat.astype(int), ["0", "1"])
    mags: dict[str, np.ndarray] = {}
    for i, b in enumerate("jhk"):
        nd = ~det[:, i]
        v[f"{b}_m_k20fe"] = (ph["m"][:, i], nd)
        v[f"{b}_msig_k20fe"] = (ph["msigcom"][:, i], nd)
        v[f"{b}_flg_k20fe"] = (np.zeros(n, np.int64), nd)
        mags[f"{b}_m"] = np.where(nd, np.nan, np.round(ph["m"][:, i], 3))
        mags[f"{b}_sig"] = np.where(nd, np.nan, ph["msigcom"][:, i])
    table = make_table(schema, n, v, rng, mag_true)
    return table, {"ra": ra, "dec": dec, "snr_best": snr_best, **mags}


def _best_flag(inv: np.ndarray, score: np.ndarray, eligible: np.ndarray) -> np.ndarray:
    """True on exactly one row (highest score) of every group with an eligible row."""
    o = np.lexsort((-score, inv))
    first = np.ones(len(o), dtype=bool)
    first[1:] = inv[o][1:] != inv[o][:-1]
    out = np.zeros(len(inv), dtype=bool)
    out[o[first]] = True
    return out & eligible


def _row_source(rows: Rows) -> np.ndarray:
    """The object each row measures: a star's truth id; a unique negative id for one-off rows
    (spurious, moving objects: each of their detections stands alone)."""
    return np.where(rows.kind == tr.KIND_STAR, rows.truth_id, -1 - np.arange(len(rows.kind)))


def _source_index(source: np.ndarray) -> np.ndarray:
    return np.unique(source, return_inverse=True)[1]


def run_chunk(plan: FamilyPlan, ci: int, gchunk: int, out: str, want: set[str],
              storage_options: dict | None = None, level: int = 1) -> ChunkResult:
    """Generate and write one chunk of a family (all its tables and truth parts)."""
    spec = plan.spec
    rng = np.random.default_rng([plan.seed, spec.code, 2, ci])
    srng = np.random.default_rng([plan.seed, spec.code, 10, ci])  # single-apparition scans
    items = plan.chunks[ci]
    src = chunk_sources(plan, items)
    res = ChunkResult(spec.name, ci)
    tabs = plan.tables
    scans = _chunk_scans(plan, items)
    real = _real_rows(plan, src, rng)
    n_sp = int(round(spec.spurious_frac * len(real.src)))
    spur = _spurious_rows(plan, scans, max(n_sp, 1 if len(scans) else 0), rng)
    n_mov = int(rng.poisson(spec.moving_per_100k * len(real.src) / 1e5))
    if ci == 0:
        n_mov = max(n_mov, 3)
    mov, movers = _moving_rows(plan, scans, n_mov if len(scans) else 0, gchunk, rng,
                               every_class=ci == 0)
    natural = Rows.concat([real, spur, mov])
    # second extractions in a scan and single-apparition stars: IRSA's links/group, unlinked share
    rep = repeat_rows(_row_source(natural), plan.proportions["pt"], srng)
    natural = Rows.concat([natural, natural.take(rep)])
    nat = _row_source(natural)
    n1 = single_count(plan.proportions["pt"], len(nat), int((~linked_rows(nat)).sum()))
    ssrc = single_sources(plan, items, n1, ci, galaxies=False)
    sscan, scount = _one_scan(plan, ssrc.tile, srng)
    single = _star_rows(plan, ssrc, np.arange(n1), sscan, np.zeros(n1, bool), scount)
    single.src += len(src)
    src = tr.Sources.concat([src, ssrc])
    rows = Rows.concat([natural, single])
    rows = rows.take(np.lexsort((rows.ra_true, rows.jd)))
    n = len(rows.src)
    if n >= CNTR_STRIDE:
        raise ValueError("chunk too large for the cntr stride; lower rows_per_file")
    cntr = ci * CNTR_STRIDE + 1 + np.arange(n, dtype=np.int64)
    source = _row_source(rows)
    mem = membership(source, cntr, plan.proportions["pt"],
                     np.random.default_rng([plan.seed, spec.code, 11, ci]))
    pt_schema = get_schema(tabs["pt"])
    pt, pinfo = point_table(plan, pt_schema, rows, cntr, _source_index(source), mem, rng)
    _write_family_tables(res, plan, "pt", pt, pt_schema, mem, cntr, rows.jd, pinfo, rows.spos,
                         out, want, storage_options, level, ci)
    res.scan_counts = np.bincount(rows.scan, minlength=len(plan.scans)).astype(np.int64)
    res.membership["pt"] = _membership_counts(n, mem)
    # extended sources, with single-apparition galaxies likewise
    es, escan, ejd, espos = ext_rows(plan, src, rng)
    rep = repeat_rows(src.truth_id[es], plan.proportions["ext"], srng)
    es, escan, ejd, espos = (np.concatenate([a, a[rep]]) for a in (es, escan, ejd, espos))
    nat = src.truth_id[es]
    n1 = single_count(plan.proportions["ext"], len(nat), int((~linked_rows(nat)).sum()))
    gsrc = single_sources(plan, items, n1, ci, galaxies=True)
    gscan, gcount = _one_scan(plan, gsrc.tile, srng)
    es = np.concatenate([es, len(src) + np.arange(n1)])
    escan = np.concatenate([escan, gscan])
    ejd = np.concatenate([ejd, _epoch(plan, gscan, gsrc.dec)])
    espos = np.concatenate([espos, gcount])
    src = tr.Sources.concat([src, gsrc])
    eo = np.lexsort((src.ra[es], ejd))
    es, escan, ejd, espos = es[eo], escan[eo], ejd[eo], espos[eo]
    ekey = ci * EXT_KEY_STRIDE + 1 + np.arange(len(es), dtype=np.int64)
    esource = src.truth_id[es]
    emem = membership(esource, ekey, plan.proportions["ext"],
                      np.random.default_rng([plan.seed, spec.code, 12, ci]))
    ext_schema = get_schema(tabs["ext"])
    et, einfo = ext_table(plan, ext_schema, src, es, escan, ejd, ekey, _source_index(esource), emem,
                          rng)
    _write_family_tables(res, plan, "ext", et, ext_schema, emem, ekey, ejd, einfo, espos, out, want,
                         storage_options, level, ci)
    res.membership["ext"] = _membership_counts(len(es), emem)
    # associations, truth and reference parts
    res.assoc = _assoc_rows(plan, ci, rows, pt, movers)
    tag = f"{spec.name}_{ci:04d}"
    pdir = "truth/_parts"
    det_all = pa.concat_tables([
        _det_table(tabs["pt"], cntr, np.where(rows.kind == tr.KIND_SPURIOUS, -1, rows.truth_id),
                   rows.jd, rows.mag_true[:, 2]),
        _det_table(tabs["ext"], ekey, src.truth_id[es], ejd, src.mag[es, 2])])
    res.parts["detections"] = write_part(out, f"{pdir}/detections_{tag}.parquet", det_all, storage_options)
    res.parts["sources"] = write_part(out, f"{pdir}/sources_{tag}.parquet", _sources_table(spec, src, rows),
                                      storage_options)
    res.parts["moving"] = write_part(out, f"{pdir}/moving_{tag}.parquet",
                                     _moving_table(plan, rows, movers, cntr), storage_options)
    ref_rng = np.random.default_rng([plan.seed, spec.code, 3, ci])
    extra_area = (plan.tiles, np.unique([it[0] for it in items]).astype(np.int64))
    gaia, gmap = gaia_part(src, gchunk, ref_rng, extra_area)
    wise, wmap = allwise_part(src, gchunk, ref_rng)
    for name, t in (("gaia", gaia), ("gaia_map", gmap), ("allwise", wise),
                    ("allwise_map", wmap)):
        res.parts[name] = write_part(out, f"{pdir}/{name}_{tag}.parquet", t, storage_options)
        res.parts_rows[name] = t.num_rows
    return res


DET_SCHEMA = pa.schema([("table", pa.dictionary(pa.int32(), pa.string())),
                        ("key", pa.int64()), ("truth_id", pa.int64()), ("jdate", pa.float64()),
                        ("k_true", pa.float64())])


def _det_table(name: str, key: np.ndarray, truth_id: np.ndarray, jd: np.ndarray,
               k_true: np.ndarray) -> pa.Table:
    """Truth rows of detections: table, key, truth_id (-1 spurious), jdate, true K."""
    table = pa.DictionaryArray.from_arrays(pa.array(np.zeros(len(key), np.int32)),
                                           pa.array([name]))
    return pa.Table.from_arrays([table, pa.array(key, pa.int64()), pa.array(truth_id, pa.int64()),
                                 pa.array(jd, pa.float64()), pa.array(k_true, pa.float64())],
                                schema=DET_SCHEMA)


def _membership_counts(n: int, mem: Membership) -> dict[str, int]:
    """Rows, groups, links, unlinked and multiply-linked rows of a chunk's product."""
    per_row = np.bincount(mem.link_row, minlength=n)
    return {"detections": n, "groups": len(mem.group_gcntr), "links": len(mem.link_row),
            "unlinked": mem.unlinked, "multiply_linked": int((per_row > 1).sum()),
            "extra_links": int(np.maximum(per_row - 1, 0).sum())}


def _write_family_tables(res: ChunkResult, plan: FamilyPlan, prefix: str, det: pa.Table,
                         schema: TableSchema, mem: Membership, key: np.ndarray, jd: np.ndarray,
                         info: dict[str, np.ndarray], spos: np.ndarray, out: str, want: set[str],
                         storage_options: dict | None, level: int, ci: int) -> None:
    tabs = plan.tables
    rng = np.random.default_rng([plan.seed, plan.spec.code, 4, ci, 0 if prefix == "pt" else 1])
    if schema.table in want:
        res.files[schema.table] = write_bulk(out, schema.table, ci, format_table(det, schema),
                                             det.num_rows, level, storage_options)
    info_name = tabs.get(f"{prefix}_info")
    if info_name and info_name in want:  # statistics over every link of a group
        s = get_schema(info_name)
        r = mem.link_row
        mv = merged_values(mem.link_group, mem.group_gcntr[mem.link_group], info["ra"][r],
                           info["dec"][r], jd[r], [(info[f"{b}_m"][r], info[f"{b}_sig"][r])
                                                   for b in "jhk"], spos[r])
        ng = len(mem.group_gcntr)  # groups are numbered in gcntr order already
        t = make_table(s, ng, mv, rng)
        res.files[info_name] = write_bulk(out, info_name, ci, format_table(t, s), ng, level,
                                          storage_options)
    link_name = tabs.get(f"{prefix}_link")
    if link_name and link_name in want:
        s = get_schema(link_name)
        groups_of_row = np.bincount(mem.link_row, minlength=len(key))  # ngrp (Expl. Suppl. A6.3c)
        g, k, ngrp = _sorted_link(mem.group_gcntr[mem.link_group], key[mem.link_row],
                                  groups_of_row[mem.link_row].astype(np.int32))
        member = next(c for c in s.names if c not in ("gcntr", "ngrp"))  # holds cntr or ext_key values
        t = make_table(s, len(g), {"gcntr": g, member: k, "ngrp": ngrp}, rng)
        res.files[link_name] = write_bulk(out, link_name, ci, format_table(t, s), len(g), level,
                                          storage_options)


def _assoc_rows(plan: FamilyPlan, ci: int, rows: Rows, pt: pa.Table, movers: Movers,
                ) -> pa.Table:
    """Association-list rows of the chunk's moving-object detections (with predictions)."""
    m = np.flatnonzero(rows.kind == tr.KIND_MOVING)
    rng = np.random.default_rng([plan.seed, plan.spec.code, 5, ci])
    obj = rows.moving[m]
    ra = pt.column("ra").to_numpy()[m]
    dec = pt.column("dec").to_numpy()[m]
    ra_p = (rows.ra_true[m] + rng.normal(0, 0.8, len(m)) / 3600.0 /
            np.cos(np.radians(rows.dec_true[m]))) % 360.0
    dec_p = rows.dec_true[m] + rng.normal(0, 0.8, len(m)) / 3600.0
    dist = np.hypot(geo.wrap_delta(ra, ra_p) * np.cos(np.radians(dec)), dec - dec_p) * 3600.0

    def col(name: str) -> np.ndarray:
        c = pt.column(name)
        return c.to_numpy(zero_copy_only=False)[m] if name in pt.column_names else None

    return pa.table({
        "class": pa.array(movers.cls[obj].astype(np.int8)),
        "object": pa.array([movers.name[i] for i in obj], pa.string()),
        "dataset": pa.array([plan.spec.dataset] * len(m), pa.string()),
        "cntr": pt.column("cntr").to_numpy()[m], "ra": ra, "dec": dec,
        "jdate": rows.jd[m], "ra_pred": ra_p, "dec_pred": dec_p, "dist": dist,
        "v_pred": movers.v_mag[obj], "r_helio": movers.r_helio[obj],
        "delta": movers.delta[obj],
        "j_m": col("j_m"), "h_m": col("h_m"), "k_m": col("k_m"),
        "rel": pt.column("rel").take(pa.array(m)) if len(m) else pa.array([], pa.string()),
    })


def _dict_col(codes: np.ndarray, names: list[str]) -> pa.Array:
    """Dictionary-encoded strings (decoded to plain strings when the truth files are merged)."""
    return pa.DictionaryArray.from_arrays(pa.array(codes.astype(np.int32)),
                                          pa.array(names, pa.string())).cast(pa.string())


def _sources_table(spec: FamilySpec, src: tr.Sources, rows: Rows) -> pa.Table:
    """Every truth source of the chunk (detected or not) plus its moving objects."""
    s = src
    mv = np.flatnonzero(rows.kind == tr.KIND_MOVING)
    first = np.unique(rows.moving[mv], return_index=True)[1]
    mrow = mv[first]
    n_m = len(mrow)
    cat = np.concatenate
    return pa.table({
        "truth_id": cat([s.truth_id, rows.truth_id[mrow]]),
        "family": _dict_col(np.zeros(len(s) + n_m, np.int32), [spec.name]),
        "kind": _dict_col(cat([s.kind, np.full(n_m, tr.KIND_MOVING)]), list(tr.KIND_NAMES)),
        "ra": cat([s.ra, rows.ra_true[mrow]]), "dec": cat([s.dec, rows.dec_true[mrow]]),
        "pmra": cat([s.pmra, np.zeros(n_m)]), "pmdec": cat([s.pmdec, np.zeros(n_m)]),
        "parallax": cat([s.parallax, np.zeros(n_m)]),
        "j_m": cat([s.mag[:, 0], rows.mag_true[mrow, 0]]),
        "h_m": cat([s.mag[:, 1], rows.mag_true[mrow, 1]]),
        "k_m": cat([s.mag[:, 2], rows.mag_true[mrow, 2]]),
        "is_variable": cat([s.var_type > 0, np.zeros(n_m, bool)]),
        "var_type": _dict_col(cat([s.var_type, np.zeros(n_m, np.int8)]), list(tr.VAR_NAMES)),
        "var_amp_k": cat([s.var_amp_k, np.zeros(n_m)]),
        "var_period_d": cat([s.var_period_d, np.zeros(n_m)]),
        "var_t0_jd": cat([s.var_t0, np.zeros(n_m)]),
        "tile": cat([s.tile, np.full(n_m, -1)]),
    })


def _moving_table(plan: FamilyPlan, rows: Rows, movers: Movers, cntr: np.ndarray) -> pa.Table:
    """Truth of the moving-object detections (true position at each epoch)."""
    mv = np.flatnonzero(rows.kind == tr.KIND_MOVING)
    obj = rows.moving[mv]
    return pa.table({
        "truth_id": rows.truth_id[mv],
        "object": pa.array([movers.name[i] for i in obj], pa.string()),
        "class": pa.array([MOVING_CLASSES[c] for c in movers.cls[obj]], pa.string()),
        "table": pa.array([plan.tables["pt"]] * len(mv), pa.string()),
        "cntr": cntr[mv], "jdate": rows.jd[mv], "ra": rows.ra_true[mv],
        "dec": rows.dec_true[mv], "k_m": rows.mag_true[mv, 2],
    })
