"""`make demo`: the whole course as one run on the synthetic hospitals, and its report.

Writes to ``--out`` (default ``demo_out/``): a gallery of the synthetic hospitals with masks,
intensity histograms and a shift summary (Markdown + CSV), then runs the course config
(``configs/course.yaml``: shift, probe / SupCon / fine-tune, masking, attention) under the
profile (``ci`` by default) into the same folder and writes ``report.md`` + ``report.html`` with
PNG figures; prints the headline and where the report is. Everything here is SYNTHETIC and says
so. Re-running skips every finished unit.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


#: the course config `make demo` runs
COURSE_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "course.yaml"


def run_demo(out: str | Path = "demo_out", profile: str | None = None, seed: int = 0,
             config: str | Path | None = None, overrides: dict | None = None,
             course: bool = True) -> dict:
    from cxrlab.profiles import get_profile
    from cxrlab.data.synthetic import ensure_synthetic_cache, hospital_table, synthetic_cache_matches
    from cxrlab.io import atomic_to_csv, atomic_write_text
    from cxrlab.data.plots import plot_gallery
    from cxrlab.shift.plots import plot_intensity_histograms
    from cxrlab.style import save_figure
    from cxrlab.shift import intensity_histograms, shift_summary

    prof = get_profile(profile)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    cache_dir = out / "synthetic_cache"
    request = dict(n_per_hospital=prof.n_per_hospital, image_size=prof.image_size, seed=seed)
    reused = synthetic_cache_matches(cache_dir, **request)
    # absent, unfinished, or drawn by another generator version: (re)drawn; else reused
    cache = ensure_synthetic_cache(cache_dir, **request)
    if reused:
        print(f"reusing {cache_dir} ({len(cache)} images)")
    else:
        print(f"wrote {len(cache)} synthetic images to {cache_dir} "
              f"in {time.perf_counter() - t0:.1f} s")
    files = {}
    fig = plot_gallery(cache, per_domain=6, seed=seed)
    files["gallery"] = save_figure(fig, out / "gallery.png", close=True)
    fig = plot_intensity_histograms(intensity_histograms(cache)).figure
    files["histograms"] = save_figure(fig, out / "intensity_histograms.png", close=True)
    summary = shift_summary(cache)
    files["summary_csv"] = atomic_to_csv(summary.round(4), out / "shift_summary.csv", index=True)
    table = hospital_table()
    text = "\n\n".join([
        "# Shift summary (SYNTHETIC hospitals)",
        f"Profile `{prof.name}`: {prof.n_per_hospital} images per hospital at "
        f"{prof.image_size} px, seed {seed}. These are phantoms, not patients.",
        "## How the hospitals differ (measured on the cache)",
        summary.round(3).to_markdown() if _has_tabulate() else summary.round(3).to_string(),
        "## Hospital parameters (what the generator was told)",
        table.to_markdown() if _has_tabulate() else table.to_string(),
    ])
    files["summary_md"] = atomic_write_text(out / "shift_summary.md", text + "\n")
    for k, v in files.items():
        print(f"{k:>12}: {v}")
    result = {"cache": cache, "summary": summary, "files": files}
    if course:
        from cxrlab.study.course_plan import run_course

        config = Path(config) if config is not None else COURSE_CONFIG
        res = run_course(config, out, prof, overrides=overrides)
        result.update(course=res, report=res["report"])
        print(f"{time.perf_counter() - t0:.0f} s in all; open {Path(out) / 'report.html'} in a "
              "browser (or read report.md)")
    return result


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m cxrlab.demo", description=__doc__)
    ap.add_argument("--out", default="demo_out")
    ap.add_argument("--profile", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--config", default=None, help="course config (default configs/course.yaml)")
    args = ap.parse_args(argv)
    from cxrlab.errors import CxrlabError

    try:
        run_demo(args.out, args.profile, args.seed, config=args.config)
    except CxrlabError as e:
        print(f"cxrlab demo: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cxrlab demo: interrupted; run `make demo` again to resume (finished units are "
              "kept)", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
