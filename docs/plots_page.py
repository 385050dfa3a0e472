"""Write .dvc/plots/page.html: the page `dvc plots show` / `dvc plots diff` fill with the plots,
carrying Vega, Vega-Lite and vega-embed inline so it renders with no network (DVC's own page
loads them from a CDN). .dvc/config names it (`plots.html_template`).

    python docs/plots_page.py     # needs `npm` (the npm registry); run it to change the versions

The libraries are BSD-3-Clause; their licenses are in .dvc/plots/vega/.
"""
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

LIBRARIES = {"vega": "6.4.0", "vega-lite": "6.5.0", "vega-embed": "7.3.0"}  # in loading order
ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / ".dvc" / "plots" / "page.html"
LICENSES = PAGE.parent / "vega"

TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
{refresh_tag}
<title>charrnn: DVC plots</title>
<!-- {versions}: inline (BSD-3-Clause, see .dvc/plots/vega/), so the page needs no network;
     written by docs/plots_page.py -->
{libraries}
<style>
body {{ font-family: system-ui, sans-serif; margin: 1rem; }}
body > div {{ display: inline-block; margin: 0 1rem 1rem 0; max-width: 100%; overflow-x: auto; }}
</style>
</head>
<body>
{plot_divs}
</body>
</html>
"""


def fetch(name: str, version: str, into: Path) -> tuple[str, str]:
    """The library's minified build and its license, from the npm registry (`npm pack` checks
    the tarball against the registry's integrity hash)."""
    subprocess.run(["npm", "pack", "--silent", f"{name}@{version}"], cwd=into, check=True, stdout=subprocess.DEVNULL)
    with tarfile.open(into / f"{name}-{version}.tgz") as tar:
        build = tar.extractfile(f"package/build/{name}.min.js").read().decode("utf-8")
        license = tar.extractfile("package/LICENSE").read().decode("utf-8")
    if "</script" in build or "{plot_divs}" in build:
        sys.exit(f"{name} {version} holds text that would end the page's script or fill DVC's placeholder")
    return build, license


def main() -> None:
    scripts = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, version in LIBRARIES.items():
            build, license = fetch(name, version, Path(tmp))
            scripts.append(f"<script>/* {name} {version} */\n{build}\n</script>")
            (LICENSES / f"LICENSE-{name}").write_text(license, encoding="utf-8")
    versions = ", ".join(f"{name} {version}" for name, version in LIBRARIES.items())
    # {refresh_tag} and {plot_divs} stay for DVC to fill: the template doubles the other braces
    page = TEMPLATE.format(refresh_tag="{refresh_tag}", plot_divs="{plot_divs}", versions=versions,
                           libraries="\n".join(scripts))
    PAGE.write_text(page, encoding="utf-8")
    print(f"{PAGE.relative_to(ROOT)}: {versions}, {len(page):,} bytes")


if __name__ == "__main__":
    main()
