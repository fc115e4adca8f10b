"""Settings: hashes ignore key order, changes outdate exactly the changed stage and downstream."""

from __future__ import annotations

import json

import pytest

from cryowarp.pipeline.settings import (
    STAGES,
    ProcessingSettings,
    UnknownSettingsWarning,
    downstream_of,
    load_settings,
    outdated_stages,
    save_settings,
    settings_hash,
    split_unknown_settings,
    stage_hashes,
)


def test_hash_ignores_key_order():
    a = {"pick": {"threshold": 0.7, "particle_diameter_a": 150.0}, "export": {"box_size_px": 64}}
    b = {"export": {"box_size_px": 64}, "pick": {"particle_diameter_a": 150.0, "threshold": 0.7}}
    assert settings_hash(a) == settings_hash(b)
    assert stage_hashes(ProcessingSettings.from_dict(a)) == stage_hashes(ProcessingSettings.from_dict(b))
    assert settings_hash(a) != settings_hash({**a, "export": {"box_size_px": 66}})


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"input": {"pixel_size_a": 1.1}}, ["motion", "ctf", "pick", "export"]),
        ({"input": {"gain_path": "/data/gain.mrc"}}, ["motion", "ctf", "pick", "export"]),
        ({"motion": {"bfactor_a2": -300.0}}, ["motion", "ctf", "pick", "export"]),
        ({"ctf": {"window": 256}}, ["ctf", "export"]),
        ({"ctf": {"voltage_kv": 200.0}}, ["ctf", "export"]),
        ({"pick": {"threshold": 0.6}}, ["pick", "export"]),
        ({"export": {"box_size_px": 256}}, ["export"]),
        ({"filter": {"resolution_max_a": 3.0}}, []),
    ],
)
def test_change_outdates_the_stage_and_downstream(changes, expected):
    old = ProcessingSettings()
    assert outdated_stages(old, old.updated(changes)) == expected


def test_downstream_of():
    assert downstream_of("motion") == STAGES
    assert downstream_of("pick") == ("pick", "export")
    with pytest.raises(ValueError, match="unknown stage 'gain'"):
        downstream_of("gain")


def test_save_load_round_trip(tmp_path):
    s = ProcessingSettings().updated(
        {
            "input": {"pixel_size_a": 0.834, "exposure_per_frame_e_per_a2": 1.25},
            "export": {"box_size_px": 200, "flip_phases": True},
        }
    )
    path = save_settings(tmp_path / "settings.json", s)
    assert load_settings(path) == s
    assert stage_hashes(load_settings(path)) == stage_hashes(s)


def test_partial_file_takes_defaults(tmp_path):
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"input": {"pixel_size_a": 1.0}}))
    s = load_settings(path)
    assert s.input.pixel_size_a == 1.0 and s.export.box_size_px == 128 and s.ctf.voltage_kv == 300.0


def test_bad_settings_files_are_named(tmp_path):
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{not json")
    with pytest.raises(ValueError, match=r"bad\.json: expected a JSON settings file"):
        load_settings(bad_json)
    unknown = tmp_path / "unknown.json"
    unknown.write_text(json.dumps({"pick": {"treshold": 0.5}}))
    with pytest.raises(ValueError, match=r"(?s)unknown\.json: invalid settings.*treshold"):
        load_settings(unknown)
    newer = tmp_path / "newer.json"
    newer.write_text(json.dumps({"version": 99}))
    with pytest.raises(ValueError, match="version 99 is newer"):
        load_settings(newer)


def test_odd_box_is_rejected():
    with pytest.raises(ValueError, match="box_size_px must be even"):
        ProcessingSettings().updated({"export": {"box_size_px": 129}})


def test_enabled_stages():
    assert ProcessingSettings().enabled_stages() == STAGES
    assert ProcessingSettings(do_export=False).enabled_stages() == ("motion", "ctf", "pick")
    assert ProcessingSettings(do_pick=False).enabled_stages() == ("motion", "ctf")


def test_unknown_keys_in_a_user_file_are_an_error_naming_key_and_file(tmp_path):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"ctf": {"voltage_kv": 200.0, "windw": 512}, "export": {"box_size_px": 64}}))
    with pytest.raises(ValueError, match=r"mine\.json: invalid settings — unknown setting 'ctf\.windw'"):
        load_settings(path)
    # the command line says the same and exits 2
    from typer.testing import CliRunner

    from cryowarp.cli.main import app

    result = CliRunner().invoke(
        app, ["process", str(tmp_path), "-p", str(tmp_path / "p"), "--settings", str(path), "--quiet"]
    )
    output = " ".join(result.output.split())
    assert result.exit_code == 2 and "mine.json" in output and "ctf.windw" in output, output


def test_unknown_keys_in_saved_settings_are_dropped_with_a_warning(tmp_path):
    path = save_settings(tmp_path / "settings.json", ProcessingSettings().updated({"pick": {"threshold": 0.6}}))
    data = json.loads(path.read_text())
    data["pick"]["future_knob"] = True
    data["tomo"] = {"tilt_axis_deg": 85.0}
    path.write_text(json.dumps(data))
    with pytest.warns(UnknownSettingsWarning, match=r"settings\.json.*pick\.future_knob, tomo"):
        settings = load_settings(path, unknown="warn")
    assert settings.pick.threshold == 0.6
    known, dropped = split_unknown_settings(data)
    assert dropped == ["pick.future_knob", "tomo"] and ProcessingSettings.from_dict(known) == settings
