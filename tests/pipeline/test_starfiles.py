"""STAR upkeep: contents follow filters and exclusions; RELION reads what we write."""

from __future__ import annotations

import shutil
import subprocess

import mrcfile
import pytest

from cryowarp.io.star import parse_relion_image_name, read_star
from cryowarp.pipeline.starfiles import write_star_files
from cryowarp.pipeline.store import ProjectStore


def _project(tmp_path, result_factory):
    store = ProjectStore(tmp_path)
    for i, (name, n, res) in enumerate([("mic_b", 3, 3.0), ("mic_a", 2, 3.2), ("mic_c", 4, 8.0)]):
        store.add_item(name, f"/movies/{name}.mrc")
        store.record_result(result_factory(tmp_path, name, n_particles=n, resolution_a=res, seed=i))
    return store


def test_star_files_follow_filter_and_selection(tmp_path, result_factory):
    store = _project(tmp_path, result_factory)
    paths = write_star_files(store)
    particles = read_star(paths["particles"])
    assert set(particles) == {"optics", "particles"}
    # mic_c fails the default 5 Å resolution filter: 3 + 2 particles remain, sorted by micrograph name
    p = particles["particles"]
    assert len(p) == 5
    assert list(p["rlnMicrographName"]) == ["items/mic_a/average.mrc"] * 2 + ["items/mic_b/average.mrc"] * 3
    assert list(p["rlnImageName"][:2]) == ["0000001@particles/mic_a.mrcs", "0000002@particles/mic_a.mrcs"]
    # local defocus 1.5 ± 0.05 µm → Å
    assert p["rlnDefocusU"].iloc[0] == pytest.approx(15500.0) and p["rlnDefocusV"].iloc[0] == pytest.approx(
        14500.0
    )
    optics = particles["optics"].iloc[0]
    assert (
        optics["rlnImageSize"] == 32 and optics["rlnImagePixelSize"] == 1.0 and optics["rlnVoltage"] == 300.0
    )
    mics = read_star(paths["micrographs"])["micrographs"]
    assert list(mics["rlnMicrographName"]) == ["items/mic_a/average.mrc", "items/mic_b/average.mrc"]

    store.set_manual("mic_c", "include")
    store.set_manual("mic_b", "exclude")
    paths = write_star_files(store)
    p = read_star(paths["particles"])["particles"]
    assert sorted(set(p["rlnMicrographName"])) == ["items/mic_a/average.mrc", "items/mic_c/average.mrc"]
    assert len(p) == 6
    good = read_star(paths["goodparticles"])["particles"]
    assert sorted(good["rlnImageName"]) == sorted(p["rlnImageName"])
    # every image name points at an existing slice of its stack
    for name in p["rlnImageName"]:
        index, stack = parse_relion_image_name(name)
        with mrcfile.mmap(tmp_path / stack, permissive=False) as m:
            assert index < m.data.shape[0]

    for name in ("mic_a", "mic_b", "mic_c"):
        store.set_manual(name, "exclude")
    assert write_star_files(store) == {}
    assert not (tmp_path / "particles.star").exists()


def test_goodparticles_grows_at_the_end(tmp_path, result_factory):
    store = ProjectStore(tmp_path)
    store.add_item("z_first", "/m/z.mrc")
    store.record_result(result_factory(tmp_path, "z_first", n_particles=2))
    before = list(read_star(write_star_files(store)["goodparticles"])["particles"]["rlnImageName"])
    store.add_item("a_second", "/m/a.mrc")
    store.record_result(result_factory(tmp_path, "a_second", n_particles=3, seed=1))
    after = list(read_star(write_star_files(store)["goodparticles"])["particles"]["rlnImageName"])
    assert after[: len(before)] == before and len(after) == 5


@pytest.mark.peers
def test_relion_reads_our_particles(tmp_path, result_factory):
    exe = shutil.which("relion_stack_create")
    if exe is None:
        pytest.skip("RELION not installed (apt-get install relion)")
    store = _project(tmp_path, result_factory)
    write_star_files(store)
    # relion_stack_create opens every image of the STAR: the RELION 3.1 tables, paths and stacks must be right
    run = subprocess.run(
        [exe, "--i", "particles.star", "--o", "relion_check"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    with mrcfile.open(tmp_path / "relion_check.mrcs") as m:
        assert m.data.shape == (5, 32, 32)
