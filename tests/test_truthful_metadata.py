"""Truthful metadata: every UCD the lake writes is valid for astropy's checker (IVOA UCD1+
controlled vocabulary: the first word a primary one, the others secondary ones), in every schema
file and every column the writer or the light-curve statistics add; obs_description in the
archive's words."""

from __future__ import annotations

from astropy.io.votable.ucd import check_ucd, parse_ucd

from tmass_lake.convert.writer import WRITER_COLUMNS, observation_properties
from tmass_lake.lake.stats import STAT_COLUMNS
from tmass_lake.schema import list_tables, load_schema


def invalid(ucd: str) -> str | None:
    """Why astropy rejects ``ucd`` (``None``: valid)."""
    if check_ucd(ucd, check_controlled_vocabulary=True):
        return None
    try:
        parse_ucd(ucd, check_controlled_vocabulary=True)
    except ValueError as e:
        return str(e)
    return "rejected"


def test_every_ucd_is_valid():
    ucds = {f"{t}.{c.name}": c.ucd for t in list_tables() for c in load_schema(t).columns if c.ucd}
    ucds |= {f"writer.{k}": v["ucd"] for k, v in (WRITER_COLUMNS | STAT_COLUMNS).items() if v.get("ucd")}
    assert len(ucds) > 1000
    bad = {name: (ucd, why) for name, ucd in ucds.items() if (why := invalid(ucd))}
    assert not bad, bad


def test_checker_rejects_a_secondary_word_first():
    assert invalid("instr.obsty") and invalid("obs.sequence") and not invalid("meta.id;instr.obsty")


def test_obs_description_is_in_the_archives_words():
    """No working note on how the layout was looked for; what is documented and what inferred."""
    for table in list_tables():
        schema = load_schema(table)
        text = observation_properties(schema)["obs_description"]
        assert schema.title in text and "IRSA" in text, table
        assert "stored corpus" not in text and "not retrievable" not in text and "Replace" not in text, table
        documented = sum(c.provenance.startswith("documented") for c in schema.columns)
        assert f"{documented} of {len(schema.columns)} columns documented" in text, table
