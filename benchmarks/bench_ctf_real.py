"""CTF on the two real EPU micrographs, side by side with torch-ctf-estimation and ASPIRE.

Run (takes the lock for the timed part; peers from ../shared/peers, venv ~/.cache/cwbench/peers/venv)::

    flock /tmp/cryowarp-heavy.lock .venv/bin/python benchmarks/bench_ctf_real.py [--repeats 3]

Writes docs/benchmarks/ctf_real.md, the two PNGs per micrograph that the CTF issue asks for
(2D spectrum with the fitted CTF on one half; 1D spectrum with fit, background and resolution mark) and
one PNG of the per-shell ring agreement of every tool.

Real data have no ground truth, so besides the fitted values every tool's (U, V, angle) is scored with
one **tool-neutral ring-agreement score**, written here from the textbook CTF and not from any tool's
code: the mean power spectrum of 512² tiles (50 % overlap, Hann-windowed) minus a smooth 2D background
(the spectrum box-filtered over 1/8 of its width), correlated (Pearson) with CTF² − ⟨CTF²⟩ for the
tool's parameters, in the 30–5 Å band and in shells. Higher is better; a wrong defocus or angle puts
the simulated rings out of phase with the observed ones. CTFFIND uses a score of this kind.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from _peers import run_ctf_peer  # noqa: E402
from scipy import ndimage  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "mrcfile"
OUT_DIR = REPO / "docs" / "benchmarks"
FILES = ("epu2.9_example.mrc", "fei-extended.mrc")
CS_MM, AMP_CONTRAST = 2.7, 0.07  # EPU headers carry no Cs; 2.7 mm (Krios) for every tool
BAND_A = (30.0, 5.0)
SHELLS_A = (30.0, 15.0, 10.0, 8.0, 6.0, 5.0, 4.0)
TILE = 512


def electron_wavelength_a(voltage_kv: float) -> float:
    """Relativistic electron wavelength in Å."""
    v = voltage_kv * 1e3
    return 12.2643 / np.sqrt(v * (1 + 0.97845e-6 * v))


def mean_power_spectrum(image: np.ndarray, tile: int = TILE) -> np.ndarray:
    """Mean |FFT|² of Hann-windowed tiles at 50 % overlap, DC at the centre (tile × tile)."""
    window = np.outer(np.hanning(tile), np.hanning(tile))
    acc = np.zeros((tile, tile))
    n = 0
    for y in range(0, image.shape[0] - tile + 1, tile // 2):
        for x in range(0, image.shape[1] - tile + 1, tile // 2):
            t = image[y : y + tile, x : x + tile]
            acc += np.abs(np.fft.fft2((t - t.mean()) * window)) ** 2
            n += 1
    return np.fft.fftshift(acc / n)


def frequency_grid(tile: int, pixel_a: float) -> tuple[np.ndarray, np.ndarray]:
    """|k| (1/Å) and azimuth (rad, from +x towards +y) of the centred tile × tile spectrum."""
    k = (np.arange(tile) - tile // 2) / (tile * pixel_a)
    ky, kx = np.meshgrid(k, k, indexing="ij")
    return np.hypot(kx, ky), np.arctan2(ky, kx)


def ctf_squared(k: np.ndarray, azimuth: np.ndarray, u_a: float, v_a: float, angle_deg: float, voltage_kv: float):
    """CTF² for defocus U/V (Å, underfocus positive) at astigmatism angle (deg), textbook χ."""
    lam = electron_wavelength_a(voltage_kv)
    defocus = 0.5 * (u_a + v_a + (u_a - v_a) * np.cos(2 * (azimuth - np.deg2rad(angle_deg))))
    chi = np.pi * lam * defocus * k**2 - 0.5 * np.pi * CS_MM * 1e7 * lam**3 * k**4
    return np.sin(chi + np.arcsin(AMP_CONTRAST)) ** 2


def ring_agreement(spectrum: np.ndarray, pixel_a: float, voltage_kv: float, u_a, v_a, angle_deg) -> dict:
    """Pearson correlation of background-subtracted power with CTF² over the band and per shell."""
    k, az = frequency_grid(spectrum.shape[0], pixel_a)
    flat = spectrum - ndimage.uniform_filter(spectrum, size=spectrum.shape[0] // 8, mode="reflect")
    model = ctf_squared(k, az, u_a, v_a, angle_deg, voltage_kv)

    def corr(lo_a: float, hi_a: float) -> float:
        sel = (k >= 1 / lo_a) & (k < 1 / hi_a) & (k < 0.5 / pixel_a)
        if sel.sum() < 50:
            return float("nan")
        return float(np.corrcoef(flat[sel], model[sel])[0, 1])

    shells = {f"{a:.0f}–{b:.0f}": corr(a, b) for a, b in zip(SHELLS_A[:-1], SHELLS_A[1:], strict=True)}
    return {"band": corr(*BAND_A), "shells": shells}


def strip_gradient(
    image: np.ndarray,
    pixel_a: float,
    voltage_kv: float,
    u_a: float,
    v_a: float,
    angle_deg: float,
    n_strips: int = 6,
    search_a: float = 600.0,
    step_a: float = 10.0,
) -> tuple[tuple[float, float], tuple[float, float]]:
    """Independent check of a fitted plane: d(defocus)/dx and d(defocus)/dy in Å per Å.

    The image is cut into ``n_strips`` strips along each axis; in each strip the single defocus offset
    (same astigmatism) that maximises the ring-agreement score is found by a scan, and a straight line
    through the strip centres gives the slope. Returns (slope x, slope y) and their standard errors (from
    the scatter of the strips about the line).
    """
    offsets = np.arange(-search_a, search_a + step_a / 2, step_a)
    slopes, errors = [], []
    for axis in (1, 0):  # x, then y
        size = image.shape[axis]
        centres, best = [], []
        for s in range(n_strips):
            lo, hi = s * size // n_strips, (s + 1) * size // n_strips
            strip = image[:, lo:hi] if axis == 1 else image[lo:hi, :]
            spectrum = mean_power_spectrum(strip)
            scores = [ring_agreement(spectrum, pixel_a, voltage_kv, u_a + d, v_a + d, angle_deg)["band"] for d in offsets]
            centres.append((lo + hi) / 2 * pixel_a)
            best.append(offsets[int(np.argmax(scores))])
        coef, cov = np.polyfit(centres, best, 1, cov=True)
        slopes.append(float(coef[0]))
        errors.append(float(np.sqrt(cov[0, 0])))
    return (slopes[0], slopes[1]), (errors[0], errors[1])


def grid_gradient(grid_um: np.ndarray, shape_yx: tuple[int, int], pixel_a: float) -> tuple[float, float]:
    """Least-squares plane through a (rows = y, columns = x) defocus grid whose nodes span the image edge to edge."""
    ny, nx = grid_um.shape
    yy, xx = np.meshgrid(np.linspace(0, shape_yx[0] * pixel_a, ny), np.linspace(0, shape_yx[1] * pixel_a, nx), indexing="ij")
    design = np.stack([xx.ravel(), yy.ravel(), np.ones(xx.size)], axis=1)
    gx, gy, _ = np.linalg.lstsq(design, grid_um.ravel() * 1e4, rcond=None)[0]
    return float(gx), float(gy)


def plane_controls() -> list[str]:
    """The plane check on white-noise synthetics with a known small plane (bench_ctf's generator, 1 Å/px)."""
    import math
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from bench_ctf import synth_counts, tilt_gradient_um_per_px

    from cryowarp.ctf import CTFSettings, fit_ctf_detailed

    lines = [
        "",
        "Control on synthetic data with a known plane (white-noise weak-phase object through the tilted CTF, "
        "4096² at 1 Å/px, 40 e/Å², `bench_ctf.synth_counts`; the same two methods):",
        "",
        "| case | true d/dx | true d/dy | true incl. ° | ours d/dx, d/dy (incl. °) | strips d/dx, d/dy (incl. °) |",
        "|---|---|---|---|---|---|",
    ]
    for defocus, tilt, axis, seed in ((1.06, 8.0, 90.0, 2), (2.7, 5.7, 163.0, 3)):
        params = dict(
            defocus_um=defocus,
            defocus_delta_um=0.02,
            astigmatism_angle_deg=120.0,
            phase_shift_deg=0.0,
            specimen_tilt_deg=tilt,
            tilt_axis_deg=axis,
        )
        image = synth_counts(params, 4096, seed)[0]
        m = fit_ctf_detailed(image, 1.0, CTFSettings(defocus_min_um=0.3, defocus_max_um=5.0)).model
        true = [g * 1e4 for g in tilt_gradient_um_per_px(params)]  # µm/px → Å/Å at 1 Å/px
        strips, _ = strip_gradient(
            image.numpy().astype(np.float64), 1.0, 300.0, m.defocus_u_um * 1e4, m.defocus_v_um * 1e4, m.astigmatism_angle_deg
        )

        def fmt(g) -> str:
            return f"{g[0]:+.3f}, {g[1]:+.3f} ({math.degrees(math.atan(math.hypot(*g))):.1f})"

        lines.append(
            f"| {defocus} µm, {tilt}° about {axis:.0f}° | {true[0]:+.3f} | {true[1]:+.3f} | {tilt} | "
            f"{fmt(m.plane.gradient_a_per_a_xy)} | {fmt(strips)} |"
        )
    return lines


def run_peer(script: str, path: Path, pixel_a: float, voltage_kv: float, extra: list[str] | None = None) -> dict | None:
    """One peer wrapper on one micrograph, one thread; the peer's own wall time is kept."""
    extra = [*(extra or []), *(["--defocus-range", "0.3", "5", "--threads", "1"] if "tce" in script else [])]
    r = run_ctf_peer(
        script, path, pixel_a=pixel_a, voltage_kv=voltage_kv, cs_mm=CS_MM, amplitude_contrast=AMP_CONTRAST, extra=extra
    )
    if r is None or "error" in r:
        if r is not None:
            print(f"{script} failed on {path.name}: {r['error']}")
        return None
    keep = {k: r["result"][k] for k in ("defocus_u_A", "defocus_v_A", "astig_angle_deg")}
    return {**keep, "wall_s": r["wall_s"], "grid_um": r["result"].get("raw", {}).get("defocus_grid_um")}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per tool and micrograph")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-peers", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)

    from cryowarp.cli.ctf import plot_power_spectrum_2d, plot_spectrum_1d
    from cryowarp.ctf import CTFSettings, fit_ctf_detailed
    from cryowarp.io.mrc import fei_metadata, read_mrc

    rows, curves = [], {}
    for name in FILES:
        path = DATA / name
        meta = fei_metadata(path)
        image, pixel = read_mrc(path, as_tensor=True)
        pixel = float(pixel or meta["pixel_size_a"])
        voltage = float(meta.get("voltage_kv", 300.0))
        settings = CTFSettings(
            voltage_kv=voltage, cs_mm=CS_MM, amplitude_contrast=AMP_CONTRAST, defocus_min_um=0.3, defocus_max_um=5.0
        )
        walls = []
        for _ in range(a.repeats):
            t0 = time.perf_counter()
            fit = fit_ctf_detailed(image, pixel, settings)
            walls.append(time.perf_counter() - t0)
        m = fit.model
        stem = path.stem.replace(".", "_")
        plot_power_spectrum_2d(fit, OUT_DIR / f"ctf_{stem}_ps.png", title=name)
        plot_spectrum_1d(m, OUT_DIR / f"ctf_{stem}_ps1d.png", title=name)
        tools = {
            "cryowarp": {
                "defocus_u_A": m.defocus_u_um * 1e4,
                "defocus_v_A": m.defocus_v_um * 1e4,
                "astig_angle_deg": m.astigmatism_angle_deg,
                "walls": walls,
            }
        }
        if not a.no_peers:
            for label, script in (("torch-ctf-estimation", "run_tce_ctf.py"), ("ASPIRE", "run_aspire_ctf.py")):
                runs = [run_peer(script, path, pixel, voltage) for _ in range(a.repeats)]
                runs = [r for r in runs if r]
                if runs:
                    tools[label] = {**runs[0], "walls": [r["wall_s"] for r in runs]}
        image_np = image.numpy().astype(np.float64)
        spectrum = mean_power_spectrum(image_np)
        planes = {"cryowarp (plane of the fitted grid)": (tuple(m.plane.gradient_a_per_a_xy), None)}
        planes["ring score in 6 strips (independent)"] = strip_gradient(
            image_np, pixel, voltage, m.defocus_u_um * 1e4, m.defocus_v_um * 1e4, m.astigmatism_angle_deg
        )
        tce_grid = None if a.no_peers else run_peer("run_tce_ctf.py", path, pixel, voltage, ["--grid", "1", "3", "3"])
        if tce_grid and tce_grid["grid_um"]:
            planes["torch-ctf-estimation 3 × 3 grid"] = (
                grid_gradient(np.asarray(tce_grid["grid_um"])[0, 0], image_np.shape, pixel),
                None,
            )
        for t in tools.values():
            t["score"] = ring_agreement(spectrum, pixel, voltage, t["defocus_u_A"], t["defocus_v_A"], t["astig_angle_deg"])
        curves[name] = tools
        rows.append({"name": name, "pixel": pixel, "meta": meta, "model": m, "tools": tools, "planes": planes})

    lines = [
        "# CTF on real EPU micrographs (`../shared/data/mrcfile/`), side by side",
        "",
        "Command: `flock /tmp/cryowarp-heavy.lock .venv/bin/python benchmarks/bench_ctf_real.py "
        f"--repeats {a.repeats} --threads {a.threads}` (2 vCPU, no GPU; every tool on one thread; "
        f"time = median of {a.repeats} runs, each tool's own fit time without process start).",
        "",
        'There is no ground truth for real data. The EPU header\'s "Defocus" is what EPU aimed for, not a '
        "measurement (fei-extended stores it negative for underfocus). So every tool's (U, V, angle) is also "
        "scored with one tool-neutral **ring-agreement score**: the Pearson correlation between the "
        "background-subtracted mean power spectrum of 512² tiles and CTF² − ⟨CTF²⟩ from the textbook χ "
        f"(Cs {CS_MM} mm, amplitude contrast {AMP_CONTRAST}), over {BAND_A[0]:.0f}–{BAND_A[1]:.0f} Å and per shell. "
        "It is written in the benchmark, independent of every tool's code. Higher is better.",
        "",
        "| micrograph | px Å | EPU target µm | tool | U / V µm | angle ° | mean D µm | ring score 30–5 Å | time s "
        "| ratio to ours |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ours_t = statistics.median(r["tools"]["cryowarp"]["walls"])
        for label, t in r["tools"].items():
            med = statistics.median(t["walls"])
            lines.append(
                f"| {r['name']} | {r['pixel']:.4f} | {r['meta'].get('defocus_um', float('nan')):.3f} | {label} | "
                f"{t['defocus_u_A'] / 1e4:.3f} / {t['defocus_v_A'] / 1e4:.3f} | {t['astig_angle_deg']:.0f} | "
                f"{(t['defocus_u_A'] + t['defocus_v_A']) / 2e4:.3f} | {t['score']['band']:.3f} | {med:.1f} | "
                f"{med / ours_t:.2f}× |"
            )
    lines += ["", "Ring score per shell (Å):", ""]
    shell_names = list(next(iter(curves.values()))["cryowarp"]["score"]["shells"])
    lines += ["| micrograph | tool | " + " | ".join(shell_names) + " |", "|---|---|" + "---|" * len(shell_names)]
    for name, tools in curves.items():
        for label, t in tools.items():
            vals = " | ".join("–" if np.isnan(v) else f"{v:.3f}" for v in t["score"]["shells"].values())
            lines.append(f"| {name} | {label} | {vals} |")
    lines += ["", "Ours, in addition (the resolution estimate, plane and figure of merit that the peers do not give):", ""]
    lines += ["| micrograph | resolution Å | FOM | plane inclination ° | axis ° |", "|---|---|---|---|---|"]
    for r in rows:
        m = r["model"]
        lines.append(
            f"| {r['name']} | {m.resolution_a:.1f} | {m.figure_of_merit:.3f} | "
            f"{m.plane.inclination_deg:.1f} | {m.plane.axis_deg:.0f} |"
        )
    lines += [
        "",
        "**Is the fitted specimen plane real?** Both stages were at 0° (EPU header), but ice is often a wedge. "
        "An independent check: cut the image into 6 strips along x and along y, find in each strip the single "
        "defocus offset (our astigmatism kept) that maximises the ring score (scan ±600 Å in 10 Å steps), and "
        "fit a line through the strip centres (± = standard error of the slope from the strips' scatter). "
        "torch-ctf-estimation can also fit a 3 × 3 defocus grid "
        "(`--grid 1 3 3`); a plane is fitted through it assuming its nodes span the image edge to edge.",
        "",
        "| micrograph | method | d(defocus)/dx | d(defocus)/dy | inclination ° | defocus change across the image Å |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        extent = max(r["model"].image_shape_yx) * r["pixel"]
        for label, ((gx, gy), err) in r["planes"].items():
            g = float(np.hypot(gx, gy))
            ex, ey = (f" ± {e:.3f}" for e in err) if err else ("", "")
            lines.append(
                f"| {r['name']} | {label} | {gx:+.3f}{ex} | {gy:+.3f}{ey} | {np.degrees(np.arctan(g)):.1f} | {g * extent:.0f} |"
            )
    lines += plane_controls()
    lines += [""]
    for r in rows:
        stem = Path(r["name"]).stem.replace(".", "_")
        lines += [f"![{r['name']} 2D spectrum](ctf_{stem}_ps.png) ![{r['name']} 1D spectrum](ctf_{stem}_ps1d.png)", ""]

    fig, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 3.6), squeeze=False)
    for ax, (name, tools) in zip(axes[0], curves.items(), strict=True):
        for label, t in tools.items():
            ax.plot(range(len(shell_names)), list(t["score"]["shells"].values()), marker="o", label=label)
        ax.set_xticks(range(len(shell_names)), shell_names, fontsize=8)
        ax.set(title=name, xlabel="shell (Å)", ylabel="ring agreement")
        ax.axhline(0, color="0.7", lw=0.8)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(OUT_DIR / "ctf_real_rings.png", dpi=90)
    lines += ["![ring agreement per shell](ctf_real_rings.png)", ""]
    (OUT_DIR / "ctf_real.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
