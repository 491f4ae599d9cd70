"""Every value read from a file is type- and range-checked before any table is built: pipeline TOML,
schema YAML, resume records, manifests and ``--storage-option`` JSON. Each malformed file is one
line naming the file, the key and what is allowed (exit 2, no traceback), and nothing is written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import TABLE, run_cli

from tmass_lake.convert.pipelines import load_pipeline, load_pipelines
from tmass_lake.convert.reduce import PARTITION_RECORD
from tmass_lake.errors import UserError
from tmass_lake.schema import SchemaFileError, load_schema, schema_dir


def one_line(result) -> str:
    assert result.returncode == 2, result.text
    assert "Traceback" not in result.text
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tmass-lake: error: "), result.stderr
    return lines[0]


def pipeline_file(tmp_path: Path, table_lines: str, defaults: str = "") -> Path:
    path = tmp_path / "mine.toml"
    path.write_text(f'[pipeline]\nname = "mine"\n\n[defaults]\n{defaults}\n\n[[table]]\nname = "{TABLE}"\n'
                    f"{table_lines}\n")
    return path


BAD_PARAMETERS = [
    ("pixel_threshold = true", "pixel_threshold must be an integer, not true"),
    ("pixel_threshold = 2.5", "pixel_threshold must be an integer"),
    ('pixel_threshold = "1000"', "pixel_threshold must be an integer"),
    ("margin_arcsec = nan", "margin_arcsec must be a finite number, not nan"),
    ("margin_arcsec = inf", "margin_arcsec must be a finite number, not inf"),
    ("margin_arcsec = -inf", "margin_arcsec must be a finite number"),
    ("margin_arcsec = 1e6", "margin_arcsec must be a number of arcseconds > 0 and <= 3600"),
    ("compression_level = 1000", "compression_level must be a zstd level from 1 to 22, not 1000"),
    ("compression_level = 0", "compression_level must be a zstd level from 1 to 22"),
    ("allow_duplicate_content = 1", "allow_duplicate_content must be true or false"),
    ("format = 5", "input_format must be a string"),
    ("run_bytes = -1", "run_bytes must be positive"),
    ("tap_timeout = nan", "tap_timeout must be a finite number"),
]


@pytest.mark.parametrize(("line", "message"), BAD_PARAMETERS)
def test_a_bad_parameter_value_in_a_pipeline_is_refused_naming_file_table_and_key(line, message, tmp_path):
    path = pipeline_file(tmp_path, line)
    with pytest.raises(UserError) as e:
        load_pipeline(path)
    text = str(e.value)
    assert text.startswith(f"{path} [[table]] {TABLE}: ") and message in text and "\n" not in text


@pytest.mark.parametrize(("doc", "message"), [
    ('pipeline = 5\n', "[pipeline]: must be a table"),
    ('[pipeline]\nname = "m"\ndescription = 3\n', "description must be a string"),
    ('defaults = "x"\n', "[defaults]: must be a table"),
    ('table = "pt_src_6x2"\n', "[[table]]: must be an array of tables"),
    (f'[[table]]\nname = "{TABLE}"\ninput = 5\n', "input must be a string or a non-empty list of strings"),
    (f'[[table]]\nname = "{TABLE}"\ninput = []\n', "input must be a string or a non-empty list of strings"),
    (f'[[table]]\nname = "{TABLE}"\nindexes = "cntr"\n', "indexes must be a list of strings"),
    (f'[[table]]\nname = "{TABLE}"\nschema = ["a"]\n', "schema must be a string"),
    ('[[table]]\nname = 7\n', "is not a table name"),
    (f'[[table]]\nname = "{TABLE}"\n[[derived]]\nname = "d"\nsource = ["{TABLE}"]\n', "is not a table name"),
    (f'[[table]]\nname = "{TABLE}"\n[[derived]]\nname = "d"\nsource = "{TABLE}"\n'
     'where = {column = "cc_flg", equals = nan}\n', "where.equals must be"),
    (f'[[table]]\nname = "{TABLE}"\n[[derived]]\nname = "d"\nsource = "{TABLE}"\n'
     'where = {column = 1, equals = "0"}\n', "where.column must be a string"),
])
def test_a_malformed_pipeline_file_is_one_line_naming_it(doc, message, tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(doc)
    with pytest.raises(UserError) as e:
        load_pipeline(path)
    assert str(e.value).startswith(str(path)) and message in str(e.value), str(e.value)


@pytest.mark.parametrize(("equals", "allowed"), [('"1"', None), ("1", "give a string"),
                                                ("true", "give a string"), ("1.5", "give a string")])
def test_a_derived_catalog_value_its_column_cannot_hold_is_refused_before_building(equals, allowed, tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text(f'[pipeline]\nname = "mine"\n\n[[table]]\nname = "{TABLE}"\n\n[[derived]]\n'
                    f'name = "mine_cat"\nsource = "{TABLE}"\nwhere = {{column = "cat", equals = {equals}}}\n')
    if allowed is None:
        assert [d.equals for p in load_pipelines(str(path)) for d in p.derived] == ["1"]
        return
    with pytest.raises(UserError) as e:
        load_pipelines(str(path))
    text = str(e.value)
    assert text.startswith(f"{path} [[derived]] mine_cat: where.equals = ") and allowed in text


def test_the_command_line_refuses_a_bad_pipeline_before_building_anything(tmp_path, tiny_inputs):
    path = pipeline_file(tmp_path, "pixel_threshold = true")
    out = tmp_path / "lake"
    line = one_line(run_cli("build", str(path), "--input", str(tiny_inputs[0].parent.parent.parent),
                            "--output", str(out), "--workers", "1"))
    assert str(path) in line and "pixel_threshold must be an integer, not true" in line
    assert not out.exists()


def test_the_shipped_pipelines_and_schemas_pass_the_checks():
    for name in ("6x", "calibration", "survey", "scans", "deepcal", "associations"):
        load_pipeline(Path(__file__).resolve().parents[1] / "pipelines" / f"{name}.toml")
    for path in schema_dir().iterdir():
        if path.name.endswith(".yaml"):
            load_schema(str(path))


SCHEMA = (Path(__file__).resolve().parents[1] / "schemas" / f"{TABLE}.yaml").read_text()


@pytest.mark.parametrize(("text", "message"), [
    ("table: pt_src_6x2\ncolumns: [\n", "YAML error"),
    ("- table: pt_src_6x2\n- columns: []\n", "expected a mapping of keys"),
    ("!!python/object/apply:os.system ['touch /tmp/pwned-by-schema']\n", "YAML error"),
    ("table: pt_src_6x2\ntitle: x\nkind: x\nlayout_status: x\ncolumns: 5\n", "columns must be a list"),
    ("table: pt_src_6x2\ntitle: x\nkind: x\nlayout_status: x\ncolumns: [5]\n",
     "columns[0] must be a mapping"),
    ("table: pt_src_6x2\ntitle: x\nkind: x\nlayout_status: x\ncolumns:\n- {name: ra, arrow: float64, "
     "nullable: maybe}\n", "nullable must be true or false"),
    ("table: pt_src_6x2\ntitle: x\nkind: x\nlayout_status: x\ncolumns:\n- {name: ra, arrow: float65}\n",
     "unknown arrow type 'float65'"),
    ("table: pt_src_6x2\ntitle: x\nkind: x\nlayout_status: x\nrows: true\ncolumns: []\n",
     "rows must be an integer"),
    ("title: x\n", "no 'table' key"),
    (SCHEMA.replace("key_column: cntr", "key_column: [cntr]"), "key_column must be a string"),
])
def test_a_malformed_schema_file_is_one_line_naming_it(text, message, tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(text)
    with pytest.raises(SchemaFileError) as e:
        load_schema(str(path))
    assert str(e.value).startswith(str(path)) and message in str(e.value) and "\n" not in str(e.value)
    assert not Path("/tmp/pwned-by-schema").exists()
    line = one_line(run_cli("inspect", str(tmp_path), "--table", str(path)))
    assert str(path) in line


@pytest.mark.parametrize(("record", "message"), [
    ({"order": 3, "pixel": 5, "rows": -1, "bytes": 1, "margin_rows": 0, "margin_bytes": 0}, "'rows' is -1"),
    ({"order": 3, "pixel": 768, "rows": 1, "bytes": 1, "margin_rows": 0, "margin_bytes": 0}, "not a pixel"),
    ({"order": 30, "pixel": 5, "rows": 1, "bytes": 1, "margin_rows": 0, "margin_bytes": 0}, "HEALPix order"),
    ({"order": 3, "pixel": 5, "rows": True, "bytes": 1, "margin_rows": 0, "margin_bytes": 0}, "not int"),
    ({"order": 3, "pixel": 5, "rows": 1.5, "bytes": 1, "margin_rows": 0, "margin_bytes": 0}, "not int"),
])
def test_a_resume_record_out_of_range_is_refused(record, message):
    with pytest.raises(ValueError, match=message):
        PARTITION_RECORD(record)
    good = record | {"order": 3, "pixel": 5, "rows": 1}
    assert PARTITION_RECORD(good) == good


def manifest(tables: dict, **top) -> dict:
    return {"pipelines": {}, "tools": {}, "tables": tables,
            "totals": {"tables": len(tables), "rows": 10, "rows_quarantined": 0, "bytes": 1}} | top


@pytest.mark.parametrize(("change", "message"), [
    ({"path": "../../../etc"}, "leads outside the lake"),
    ({"path": "/etc"}, "leads outside the lake"),
    ({"rows": True}, "rows must be an integer >= 0"),
    ({"rows": -3}, "rows must be an integer >= 0"),
    ({"partitions": "7"}, "partitions must be an integer >= 0"),
    ({"lines_read": None}, "lines_read must be an integer >= 0"),
    ({"schema": "pt_src_6x2"}, "schema must be a mapping"),
])
def test_a_malformed_manifest_is_one_line_naming_file_and_key(change, message, tmp_path):
    entry = {"name": TABLE, "path": TABLE, "type": "collection", "rows": 10, "rows_quarantined": 0,
             "partitions": 1, "lines_read": 10, "schema": {"name": TABLE}}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest({TABLE: entry | change})))
    for command in ("info", "verify"):
        line = one_line(run_cli(command, str(tmp_path)))
        assert "manifest.json: " in line and TABLE in line and message in line, line
    (tmp_path / "manifest.json").write_text(json.dumps([1, 2]))
    assert "not a tmass-lake manifest" in one_line(run_cli("info", str(tmp_path)))
    (tmp_path / "manifest.json").write_text(json.dumps(manifest({}, totals=[])))
    assert "manifest.json: totals must be a mapping" in one_line(run_cli("info", str(tmp_path)))
    (tmp_path / "manifest.json").write_text(json.dumps(manifest({}, totals={"tables": True})))
    assert "manifest.json: totals.tables must be an integer >= 0" in one_line(run_cli("info", str(tmp_path)))


@pytest.mark.parametrize(("option", "message"), [
    ("client_kwargs={bad", "--storage-option client_kwargs: not valid JSON"),
    ("anon=NaN", "--storage-option anon: not valid JSON"),
    ("a b=1", "a key is a name"),
    ("=1", "expected KEY=VALUE"),
])
def test_a_malformed_storage_option_is_one_line(option, message, tmp_path):
    line = one_line(run_cli("info", str(tmp_path), "--storage-option", option))
    assert message in line
