"""simulate_session: movies appear complete, share one detector, and are read back by cryowarp.io."""

from __future__ import annotations

import json

import pytest
import torch

from cryowarp.io.movies import read_movie
from cryowarp.sim import MovieSimSettings, read_session, simulate_session


def test_session_writes_complete_movies_with_one_gain(tmp_path):
    s = MovieSimSettings(
        shape_yx=(96, 128),
        n_frames=4,
        particle_models=(),
        protein_kinds=("globule",),
        protein_masses_kda=(80.0,),
        gain_sd=0.2,
        exposure_per_frame_e_per_a2=4.0,
    )
    seen = []
    paths = simulate_session(
        tmp_path,
        3,
        s,
        seed=11,
        defocus_range_um=(1.0, 2.0),
        progress=lambda done, total, path: seen.append((done, path.name)),
    )
    assert [p.name for p in paths] == ["movie_0000.tif", "movie_0001.tif", "movie_0002.tif"]
    assert seen == [(1, "movie_0000.tif"), (2, "movie_0001.tif"), (3, "movie_0002.tif")]
    assert not (tmp_path / ".incoming").exists()  # nothing half-written is left behind
    record = read_session(tmp_path)
    defoci = [m["defocus_um"] for m in record["movies"]]
    assert all(1.0 <= d <= 2.0 for d in defoci) and len(set(defoci)) == 3
    for i in range(len(paths)):
        truth = json.loads((tmp_path / "truth" / f"movie_{i:04d}_truth.json").read_text())
        assert truth["defocus_um"] == pytest.approx(defoci[i])
        assert truth["seed"] == 11 + i
    # the real reader applies the session's gain: the corrected frames no longer show the gain pattern
    movie = read_movie(paths[0], gain=tmp_path / "gain.mrc", pixel_size_a=1.0)
    raw = read_movie(paths[0], pixel_size_a=1.0)
    assert movie.frames.shape == (4, 96, 128)
    inv_gain = 1.0 / read_movie(tmp_path / "gain.mrc", pixel_size_a=1.0).frames[0]
    corr = lambda a, b: float(torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1])  # noqa: E731
    assert corr(raw.frames.sum(0), inv_gain) > 0.4  # ≈ 0.6 expected: 20 % gain s.d., ~16 counts per pixel
    assert abs(corr(movie.frames.sum(0), inv_gain)) < 0.1


def test_session_refuses_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="movie_format: expected 'tiff' or 'mrc', found 'eer'"):
        simulate_session(tmp_path, 1, movie_format="eer")
    with pytest.raises(ValueError, match="n_movies: expected ≥ 0, found -1"):
        simulate_session(tmp_path, -1)


def test_contamination_every_nth_movie_leaves_the_other_draws_unchanged(tmp_path):
    s = MovieSimSettings(shape_yx=(256, 256), n_frames=2, particle_models=(), protein_kinds=("globule",),
                         protein_masses_kda=(80.0,), pixel_size_a=4.0)
    plain = simulate_session(tmp_path / "a", 3, s, seed=5)
    dirty = simulate_session(tmp_path / "b", 3, s, seed=5, contamination_every=2)
    rec_a, rec_b = read_session(tmp_path / "a"), read_session(tmp_path / "b")
    assert [m["n_contamination_blobs"] for m in rec_a["movies"]] == [0, 0, 0]
    assert [m["n_contamination_blobs"] for m in rec_b["movies"]][::2] == [0, 0]
    assert rec_b["movies"][1]["n_contamination_blobs"] in (1, 2)
    assert [m["defocus_um"] for m in rec_a["movies"]] == [m["defocus_um"] for m in rec_b["movies"]]
    frames = [read_movie(p, gain=p.parent / "gain.mrc", pixel_size_a=4.0).frames.sum(0) for p in (plain[1], dirty[1])]
    # the ice absorbs: in 8×8-px block means the contaminated movie has a region darker than any of the
    # clean one (measured 24.3 against 29.5 counts; median 28.5 and 32.0)
    smooth = [torch.nn.functional.avg_pool2d(f[None, None], 8)[0, 0] for f in frames]
    assert float(smooth[1].min()) < 0.9 * float(smooth[0].min())
    assert torch.equal(read_movie(plain[0], pixel_size_a=4.0).frames, read_movie(dirty[0], pixel_size_a=4.0).frames)
